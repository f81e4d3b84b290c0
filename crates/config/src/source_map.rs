//! Where each key and value of a YAML document sits in its text.
//!
//! The typed parse (serde into `RackConfig`) keeps no positions, so errors found after it,
//! in validation, would not know their line; and serde-saphyr's own errors know their line
//! and column but not the key path. A second, untyped parse of the same text into this
//! tree of `Spanned` nodes bridges both ways: key path → position, position → key path.
//!
//! It is best effort by design: if the untyped parse fails (it accepts anything the typed one
//! does, so this only happens for text that failed anyway), the map is empty and errors simply
//! go without a line or without a key path.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, Spanned};

use crate::path::{KeyPath, Seg};

/// A 1-based line and (character) column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Pos {
    pub(crate) line: usize,
    pub(crate) column: usize,
}

impl Pos {
    /// `None` for serde-saphyr's "unknown" location (line 0).
    pub(crate) fn from_location(location: &Location) -> Option<Pos> {
        let line = usize::try_from(location.line()).ok()?;
        let column = usize::try_from(location.column()).ok()?;
        (line > 0).then_some(Pos { line, column })
    }
}

#[derive(Debug, Default)]
pub(crate) struct SourceMap {
    root: Option<Spanned<Node>>,
}

#[derive(Debug)]
enum Node {
    Map(Vec<Entry>),
    Seq(Vec<Spanned<Node>>),
    Scalar,
}

#[derive(Debug)]
struct Entry {
    key: String,
    key_at: Option<Pos>,
    value: Spanned<Node>,
}

impl SourceMap {
    /// Maps `text`; an empty map if it does not parse.
    pub(crate) fn new(text: &str) -> SourceMap {
        // Pass non-finite floats through: the untyped parse must not reject `.nan` where the
        // typed one accepts it (validation then reports it, with its line). Keep repeated keys
        // too, so that a duplicate-key error can be located.
        let options = serde_saphyr::options! {
            non_finite_float_policy: serde_saphyr::NonFiniteFloatPolicy::PassThrough,
            duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
            with_snippet: false,
        };
        SourceMap {
            root: serde_saphyr::from_str_with_options(text, options).ok(),
        }
    }

    /// The position of the value at `path`: the key's position for a mapping entry, the
    /// item's for a list element. When the path leads somewhere that is not in the text (a
    /// defaulted key), the position of the deepest ancestor that is.
    pub(crate) fn position_of(&self, path: &KeyPath) -> Option<Pos> {
        let root = self.root.as_ref()?;
        let mut best = Pos::from_location(&root.referenced);
        let mut node = &root.value;
        for seg in path.segs() {
            let next = match (seg, node) {
                (Seg::Key(key), Node::Map(entries)) => entries
                    .iter()
                    .find(|e| &e.key == key)
                    .map(|e| (e.key_at, &e.value)),
                (Seg::Index(index), Node::Seq(items)) => items
                    .get(*index)
                    .map(|item| (Pos::from_location(&item.referenced), item)),
                _ => None,
            };
            let Some((at, value)) = next else { break };
            best = at.or(best);
            node = &value.value;
        }
        best
    }

    /// The path of the deepest key or list item at or before `pos`: the key an error at
    /// `pos` is about. The flag tells whether `pos` is exactly where that last key is
    /// written, which is also where its mapping starts (block mappings start at their first
    /// key) and where serde-saphyr puts some errors about the mapping as a whole.
    pub(crate) fn path_at(&self, pos: Pos) -> Option<(KeyPath, bool)> {
        let root = self.root.as_ref()?;
        let mut path = KeyPath::root();
        let mut at_key = false;
        let mut node = &root.value;
        loop {
            match node {
                Node::Map(entries) => {
                    let Some((entry, key_at)) = entries
                        .iter()
                        .rev()
                        .find_map(|e| e.key_at.filter(|at| *at <= pos).map(|at| (e, at)))
                    else {
                        break;
                    };
                    path = path.key(&entry.key);
                    match Pos::from_location(&entry.value.referenced) {
                        Some(at) if at <= pos => node = &entry.value.value,
                        _ => {
                            at_key = key_at == pos;
                            break;
                        }
                    }
                }
                Node::Seq(items) => {
                    let Some((index, item)) = items.iter().enumerate().rev().find(|(_, item)| {
                        Pos::from_location(&item.referenced).is_some_and(|at| at <= pos)
                    }) else {
                        break;
                    };
                    path = path.index(index);
                    node = &item.value;
                }
                Node::Scalar => break,
            }
        }
        (!path.is_root()).then_some((path, at_key))
    }
}

/// A mapping key's text. Deserialized as a string, never inferred: the key `n` must stay
/// `"n"` rather than become the YAML 1.1 boolean false.
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Key)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<Key>>()? {
            let value = map.next_value::<Spanned<Node>>()?;
            entries.push(Entry {
                key: key.value.0,
                key_at: Pos::from_location(&key.referenced),
                value,
            });
        }
        Ok(Node::Map(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Node, A::Error> {
        // Tagged values (`!foo bar`) may arrive as enums; their position is all we need.
        let (IgnoredAny, variant) = data.variant::<IgnoredAny>()?;
        de::VariantAccess::newtype_variant::<IgnoredAny>(variant)?;
        Ok(Node::Scalar)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
name: x
nodes:
  - name: a
    ip: 10.0.0.1
  - name: b
    ip: 10.0.0.2
n: .nan
";

    #[test]
    fn path_to_position() {
        let map = SourceMap::new(TEXT);
        let path = KeyPath::root().key("nodes").index(1).key("ip");
        assert_eq!(map.position_of(&path), Some(Pos { line: 6, column: 5 }));
        // A key that is not in the text falls back to its item.
        let path = KeyPath::root().key("nodes").index(1).key("port");
        assert_eq!(map.position_of(&path), Some(Pos { line: 5, column: 5 }));
        let path = KeyPath::root().key("n");
        assert_eq!(map.position_of(&path), Some(Pos { line: 7, column: 1 }));
    }

    #[test]
    fn position_to_path() {
        let map = SourceMap::new(TEXT);
        let at = |line, column| {
            map.path_at(Pos { line, column })
                .map(|(path, at_key)| (path.to_string(), at_key))
        };
        assert_eq!(at(6, 9), Some(("nodes[1].ip".to_string(), false)));
        assert_eq!(at(5, 5), Some(("nodes[1].name".to_string(), true)));
        assert_eq!(at(5, 7), Some(("nodes[1].name".to_string(), false)));
        assert_eq!(at(1, 1), Some(("name".to_string(), true)));
    }

    #[test]
    fn unparsable_text_gives_an_empty_map() {
        let map = SourceMap::new("a: [");
        assert_eq!(map.position_of(&KeyPath::root().key("a")), None);
        assert_eq!(map.path_at(Pos { line: 1, column: 1 }), None);
    }
}

//! Where each of the controller's records lives in etcd (docs/design/ha-controller.md §4.1):
//! keys made and parsed, pure (no I/O). Its user is the etcd store (a later commit).
//!
//! Under a prefix `P` (default `/torc-controller/<rack name>/`, outside statesync's `/torc/`):
//! `P format`, `P config`, `P <table>/<key>` for each [`Table`], `P meta/<name>` (the counters;
//! `meta/writer` is the epoch of each fenced transaction's writer), `P election/<lease id in 16
//! hex digits>`, `P members/<name>`.
//!
//! A name inside a key (a record's key, a counter's, a member's, the rack's in the default
//! prefix) is percent-encoded: `/`, `%` and every byte outside `!`..=`~` become `%XX` (upper-case
//! hex). Typed names never hold these today; the layout does not rely on that.
//!
//! Invariants: `parse(key(k)) == k` for every key; every key made is printable ASCII without
//! spaces; `parse` accepts only what `key` makes (one spelling per key: a lower-case or needless
//! escape is refused), and refuses anything else with an error naming the key.

use std::fmt::Write as _;

use super::Table;

/// The default prefix's first segment: `/torc-controller/<rack>/`.
const DEFAULT_ROOT: &str = "/torc-controller/";

/// A key under the prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// The stored format (`"1"`).
    Format,
    /// The SHA-256 of the rack config the leader runs.
    Config,
    /// A counter (`generation`, `rack_network_shut`, `writer`, ...).
    Meta(String),
    /// A record of a table.
    Record(Table, String),
    /// A campaigner's key, named by its lease.
    Election(i64),
    /// A controller's member record.
    Member(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "etcd prefix {prefix:?}: {why} (a prefix starts and ends with '/' and holds printable ASCII without spaces)"
    )]
    Prefix { prefix: String, why: &'static str },
    #[error("etcd key {key:?} is not under the prefix {prefix:?}")]
    Outside { key: String, prefix: String },
    #[error("etcd key {key:?} under the controller's prefix: {why}")]
    Unknown { key: String, why: String },
}

/// The keys of one rack's controller state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    prefix: String,
}

impl Layout {
    /// The layout under `prefix` (`--etcd-prefix`).
    pub fn new(prefix: &str) -> Result<Layout, LayoutError> {
        let bad = |why| LayoutError::Prefix {
            prefix: prefix.to_string(),
            why,
        };
        if !prefix.starts_with('/') || !prefix.ends_with('/') || prefix.len() < 2 {
            return Err(bad("not between slashes"));
        }
        if prefix.bytes().any(needs_escape_in_prefix) {
            return Err(bad("a space, a control or a non-ASCII character"));
        }
        if prefix.contains("//") {
            return Err(bad("an empty segment"));
        }
        Ok(Layout {
            prefix: prefix.to_string(),
        })
    }

    /// The default layout of a rack: `/torc-controller/<rack name, encoded>/`.
    pub fn for_rack(rack_name: &str) -> Result<Layout, LayoutError> {
        Layout::new(&format!("{DEFAULT_ROOT}{}/", encode(rack_name)))
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The end of the range that holds every key of the prefix (etcd's prefix range end: the
    /// prefix with its last byte plus one; the last byte is `/`, so there is no carry).
    pub fn range_end(&self) -> String {
        let mut end = self.prefix[..self.prefix.len() - 1].to_string();
        end.push('0'); // '/' + 1
        end
    }

    /// The prefix of the campaigners' keys (`P election/`), the election's prefix.
    pub fn election_prefix(&self) -> String {
        format!("{}election/", self.prefix)
    }

    /// The etcd key of `key`.
    pub fn key(&self, key: &Key) -> String {
        let mut out = self.prefix.clone();
        match key {
            Key::Format => out.push_str("format"),
            Key::Config => out.push_str("config"),
            Key::Meta(name) => {
                out.push_str("meta/");
                out.push_str(&encode(name));
            }
            Key::Record(table, name) => {
                out.push_str(table.name());
                out.push('/');
                out.push_str(&encode(name));
            }
            Key::Election(lease) => {
                let _ = write!(out, "election/{lease:016x}");
            }
            Key::Member(name) => {
                out.push_str("members/");
                out.push_str(&encode(name));
            }
        }
        out
    }

    /// The key an etcd key names, or why it names none.
    pub fn parse(&self, raw: &[u8]) -> Result<Key, LayoutError> {
        let shown = String::from_utf8_lossy(raw).into_owned();
        let rest =
            raw.strip_prefix(self.prefix.as_bytes())
                .ok_or_else(|| LayoutError::Outside {
                    key: shown.clone(),
                    prefix: self.prefix.clone(),
                })?;
        let unknown = |why: String| LayoutError::Unknown {
            key: shown.clone(),
            why,
        };
        let rest = std::str::from_utf8(rest).map_err(|_| unknown("not ASCII".into()))?;
        match rest {
            "format" => return Ok(Key::Format),
            "config" => return Ok(Key::Config),
            _ => {}
        }
        let (kind, name) = rest
            .split_once('/')
            .ok_or_else(|| unknown(format!("no key is named {rest:?}")))?;
        let decoded = || decode(name).map_err(&unknown);
        match kind {
            "meta" => Ok(Key::Meta(decoded()?)),
            "members" => Ok(Key::Member(decoded()?)),
            "election" => {
                let canonical = name.len() == 16
                    && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
                match u64::from_str_radix(name, 16) {
                    Ok(id) if canonical => Ok(Key::Election(id as i64)),
                    _ => Err(unknown(format!(
                        "election key {name:?} is not a lease id in 16 lower-case hex digits"
                    ))),
                }
            }
            table => match Table::ALL.into_iter().find(|t| t.name() == table) {
                Some(table) => Ok(Key::Record(table, decoded()?)),
                None => Err(unknown(format!("no table is named {table:?}"))),
            },
        }
    }
}

/// Whether a prefix may not hold `b` (a prefix is the operator's: `/` and `%` are its own).
fn needs_escape_in_prefix(b: u8) -> bool {
    !(b'!'..=b'~').contains(&b)
}

/// Whether a name inside a key must spell `b` as `%XX`.
fn needs_escape(b: u8) -> bool {
    b == b'/' || b == b'%' || needs_escape_in_prefix(b)
}

fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if needs_escape(b) {
            let _ = write!(out, "%{b:02X}");
        } else {
            out.push(char::from(b));
        }
    }
    out
}

fn decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            if needs_escape(b) {
                return Err(format!("{text:?} holds {:?} unescaped", char::from(b)));
            }
            out.push(b);
            i += 1;
            continue;
        }
        let hex = bytes.get(i + 1..i + 3).unwrap_or_default();
        let upper = hex.len() == 2 && hex.iter().all(|h| matches!(h, b'0'..=b'9' | b'A'..=b'F'));
        let value = std::str::from_utf8(hex)
            .ok()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match value {
            Some(v) if upper && needs_escape(v) => out.push(v),
            _ => {
                return Err(format!(
                    "{text:?} holds an escape that is not one the controller writes (%XX, upper-case, of a byte that needs it)"
                ));
            }
        }
        i += 3;
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} decodes to bytes that are not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout::new("/torc-controller/rack1/").unwrap()
    }

    #[test]
    fn keys_as_the_design_lays_them_out() {
        let l = layout();
        let cases = [
            (Key::Format, "/torc-controller/rack1/format"),
            (Key::Config, "/torc-controller/rack1/config"),
            (
                Key::Meta("generation".into()),
                "/torc-controller/rack1/meta/generation",
            ),
            (
                Key::Meta("writer".into()),
                "/torc-controller/rack1/meta/writer",
            ),
            (
                Key::Record(Table::Tasks, "web.000000000001".into()),
                "/torc-controller/rack1/tasks/web.000000000001",
            ),
            (
                Key::Record(Table::Nodes, "a/b 100%".into()),
                "/torc-controller/rack1/nodes/a%2Fb%20100%25",
            ),
            (
                Key::Record(Table::Secrets, "é".into()),
                "/torc-controller/rack1/secrets/%C3%A9",
            ),
            (
                Key::Election(0x694d_7e1a_2b3c_0001),
                "/torc-controller/rack1/election/694d7e1a2b3c0001",
            ),
            (
                Key::Election(-1),
                "/torc-controller/rack1/election/ffffffffffffffff",
            ),
            (
                Key::Member("ctl-a".into()),
                "/torc-controller/rack1/members/ctl-a",
            ),
        ];
        for (key, text) in cases {
            assert_eq!(l.key(&key), text);
            assert_eq!(l.parse(text.as_bytes()), Ok(key), "{text}");
        }
        for table in Table::ALL {
            let key = Key::Record(table, "x".into());
            assert_eq!(l.parse(l.key(&key).as_bytes()), Ok(key));
        }
        assert_eq!(
            Layout::for_rack("rack 1").unwrap().prefix(),
            "/torc-controller/rack%201/"
        );
        assert!(Layout::for_rack("").is_err(), "an empty rack name");
        assert_eq!(l.range_end(), "/torc-controller/rack10");
        assert!(l.key(&Key::Format).as_str() < l.range_end().as_str());
    }

    #[test]
    fn keys_that_the_controller_does_not_write_are_refused_naming_the_key() {
        let l = layout();
        let refused = [
            ("/torc/machines/a", "not under the prefix"),
            ("/torc-controller/rack2/format", "not under the prefix"),
            ("/torc-controller/rack1/", "no key is named"),
            ("/torc-controller/rack1/formats", "no key is named"),
            (
                "/torc-controller/rack1/jobs/a",
                "no table is named \"jobs\"",
            ),
            ("/torc-controller/rack1/tasks/a/b", "unescaped"),
            ("/torc-controller/rack1/tasks/a b", "unescaped"),
            (
                "/torc-controller/rack1/tasks/a%2f",
                "not one the controller writes",
            ),
            (
                "/torc-controller/rack1/tasks/%41",
                "not one the controller writes",
            ),
            (
                "/torc-controller/rack1/tasks/a%2",
                "not one the controller writes",
            ),
            ("/torc-controller/rack1/tasks/%FF", "not UTF-8"),
            ("/torc-controller/rack1/election/1", "16 lower-case hex"),
            (
                "/torc-controller/rack1/election/694D7E1A2B3C0001",
                "16 lower-case hex",
            ),
            (
                "/torc-controller/rack1/election/+94d7e1a2b3c0001",
                "16 lower-case hex",
            ),
        ];
        for (key, why) in refused {
            let err = l.parse(key.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(why), "{key}: {err}");
            assert!(err.contains(key), "{key}: {err}");
        }
        let err = l.parse(b"/torc-controller/rack1/tasks/\xff").unwrap_err();
        assert!(err.to_string().contains("not ASCII"), "{err}");
    }

    #[test]
    fn prefixes_are_checked() {
        for (prefix, why) in [
            ("torc/", "not between slashes"),
            ("/torc", "not between slashes"),
            ("/", "not between slashes"),
            ("/a b/", "a space"),
            ("/a//b/", "an empty segment"),
        ] {
            let err = Layout::new(prefix).unwrap_err().to_string();
            assert!(err.contains(why) && err.contains(prefix), "{prefix}: {err}");
        }
        assert!(Layout::new("/x/rack-%/").is_ok());
    }

    /// Names drawn from a mix of plain and troublesome characters, from a fixed seed: every
    /// key made is printable ASCII, and parses back to what made it.
    #[test]
    fn every_key_made_parses_back() {
        const CHARS: &[char] = &[
            'a', 'Z', '0', '.', '-', '_', '/', '%', ' ', '~', '!', '\u{0}', '\u{7f}', 'é', '€',
            '😀', '2', 'F',
        ];
        let l = layout();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2000 {
            let len = (next() % 8) as usize;
            let name: String = (0..len)
                .map(|_| CHARS[(next() % CHARS.len() as u64) as usize])
                .collect();
            let table = Table::ALL[(next() % Table::ALL.len() as u64) as usize];
            for key in [
                Key::Record(table, name.clone()),
                Key::Meta(name.clone()),
                Key::Member(name.clone()),
                Key::Election(next() as i64),
            ] {
                let text = l.key(&key);
                assert!(text.bytes().all(|b| (b'!'..=b'~').contains(&b)), "{text}");
                assert_eq!(l.parse(text.as_bytes()), Ok(key), "{text}");
            }
        }
    }
}

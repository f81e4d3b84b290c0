//! Names as the catalog keys them: lowercased wire format (length-prefixed labels ending with
//! the root's zero byte), so lookups compare bytes, case-insensitively as DNS wants.

use hickory_proto::rr::Name;

/// A lowercased wire-format name: length-prefixed labels ending with the root's zero byte.
pub(crate) type Key = Box<[u8]>;

/// The key of `name`.
pub(crate) fn key_of(name: &Name) -> Key {
    let mut key = Vec::with_capacity(name.len() + 2);
    for label in name.iter() {
        key.push(label.len() as u8);
        key.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    key.push(0);
    key.into_boxed_slice()
}

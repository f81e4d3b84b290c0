//! URL query strings and `application/x-www-form-urlencoded` bodies, for the HTTP handlers and
//! the credentials in a URL ([`crate::auth`]). A leaf: it uses no other module of the crate.
//! Any input decodes: a bad `%` escape is kept as text, never an error.

use std::collections::HashMap;

/// Decodes `application/x-www-form-urlencoded` pairs (also used for URL queries). A key given
/// twice keeps its first value, as Go's `Values.Get` does.
pub fn parse_form(s: &str) -> HashMap<String, String> {
    fn dec(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => {
                    out.push(b' ');
                    i += 1;
                }
                b'%' if i + 2 < b.len() => {
                    let h = std::str::from_utf8(&b[i + 1..i + 3])
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok());
                    match h {
                        Some(v) => {
                            out.push(v);
                            i += 3;
                        }
                        None => {
                            out.push(b'%');
                            i += 1;
                        }
                    }
                }
                c => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    let mut m = HashMap::new();
    for pair in s.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        m.entry(dec(k)).or_insert_with(|| dec(v));
    }
    m
}

//! Closed sets of words (`type: master`, `sla: singleton_each_node`, a node type in a task's
//! constraints): one macro makes each an enum that serde checks, with the word's spelling,
//! `Display`, `FromStr`, and an [`UnknownValue`] naming the allowed words on bad input. The
//! rack config's words are made with it too.

/// A word that is not one of a closed set (a node type, an SLA, ...). Its message names the
/// words that are allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {text:?}, expected {}", one_of(expected))]
pub struct UnknownValue {
    /// What the word should have been, e.g. `node type`.
    pub what: &'static str,
    pub text: String,
    pub expected: &'static [&'static str],
}

/// `` `a` ``, `` `a` or `b` ``, `` `a`, `b` or `c` ``.
fn one_of(words: &[&str]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| format!("`{w}`")).collect();
    match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => "nothing".to_string(),
    }
}

/// `words! { /// doc  pub enum Name as "what" { /// doc  Variant = "word", ... } }`; the
/// crate that uses it depends on `serde`.
#[macro_export]
macro_rules! words {
    (
        $(#[$meta:meta])*
        pub enum $name:ident as $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $word:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The word as written in the config.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $word, )+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::UnknownValue;
            // The error type is named, not `Self::Err`: a word may be a variant named `Error`.
            fn from_str(text: &str) -> Result<Self, $crate::UnknownValue> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|w| w.as_str() == text)
                    .ok_or_else(|| $crate::UnknownValue {
                        what: $what,
                        text: text.to_string(),
                        expected: &[$($word),+],
                    })
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::UnknownValue;
            fn try_from(text: String) -> Result<Self, $crate::UnknownValue> {
                text.parse()
            }
        }

        impl From<$name> for String {
            fn from(word: $name) -> String {
                word.as_str().to_string()
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeType;

    #[test]
    fn unknown_values_name_the_allowed_ones() {
        let err = |expected| UnknownValue {
            what: "kind",
            text: "x".into(),
            expected,
        };
        assert_eq!(err(&["a"]).to_string(), "unknown kind \"x\", expected `a`");
        assert_eq!(
            err(&["a", "b"]).to_string(),
            "unknown kind \"x\", expected `a` or `b`"
        );
        assert_eq!(
            err(&["a", "b", "c"]).to_string(),
            "unknown kind \"x\", expected `a`, `b` or `c`"
        );
    }

    #[test]
    fn serde_checks_a_word() {
        let t: NodeType = serde_json::from_str("\"slave\"").unwrap();
        assert_eq!(t, NodeType::Slave);
        assert_eq!(
            serde_json::to_string(&NodeType::Master).unwrap(),
            "\"master\""
        );
        let e = serde_json::from_str::<NodeType>("\"switch\"").unwrap_err();
        assert!(
            e.to_string()
                .contains("unknown node type \"switch\", expected `master` or `slave`"),
            "{e}"
        );
    }
}

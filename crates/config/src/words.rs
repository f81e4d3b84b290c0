//! Closed sets of words in the config (`type: master`, `sla: singleton_each_node`): one macro
//! makes each an enum that serde checks, with the word's spelling, `Display`, `FromStr`, and an
//! [`UnknownValue`](crate::UnknownValue) naming the allowed words on bad input.

/// `words! { /// doc  pub enum Name as "what" { /// doc  Variant = "word", ... } }`
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
            type Err = $crate::error::UnknownValue;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|w| w.as_str() == text)
                    .ok_or_else(|| $crate::error::UnknownValue {
                        what: $what,
                        text: text.to_string(),
                        expected: &[$($word),+],
                    })
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::error::UnknownValue;
            fn try_from(text: String) -> Result<Self, Self::Error> {
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

pub(crate) use words;

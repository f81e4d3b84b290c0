//! Typed names. Each validates its text once, at the edge, and is cheap to clone after.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a piece of text is not a valid name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {text:?}: {reason}")]
pub struct NameError {
    pub kind: &'static str,
    pub text: String,
    pub reason: NameProblem,
}

/// The rule a name breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameProblem {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most 63 characters")]
    LabelTooLong,
    #[error("may only contain lowercase letters, digits and '-' (it becomes a DNS label)")]
    LabelCharacter,
    #[error("must start and end with a letter or digit")]
    LabelEdge,
    #[error("must be 1 to 128 characters")]
    IdLength,
    #[error("may only contain letters, digits, '-', '_' and '.'")]
    IdCharacter,
    #[error("must not start with '.' or contain '..'")]
    IdDots,
}

/// A DNS-label-like name: 1..=63 chars of `[a-z0-9-]`, starting and ending with a letter or
/// digit. Node and service names end up in DNS (`<node>.<domain>`, `<svc>.service.torc`), so
/// they must be valid labels from the start rather than mangled later.
fn check_label(kind: &'static str, text: &str) -> Result<(), NameError> {
    let err = |reason| NameError {
        kind,
        text: text.to_string(),
        reason,
    };
    if text.is_empty() {
        return Err(err(NameProblem::Empty));
    }
    if text.len() > 63 {
        return Err(err(NameProblem::LabelTooLong));
    }
    if !text
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(err(NameProblem::LabelCharacter));
    }
    if text.starts_with('-') || text.ends_with('-') {
        return Err(err(NameProblem::LabelEdge));
    }
    Ok(())
}

/// A task id: `<name>.<suffix>` where the suffix makes it unique for the life of the rack.
fn check_task_id(kind: &'static str, text: &str) -> Result<(), NameError> {
    let err = |reason| NameError {
        kind,
        text: text.to_string(),
        reason,
    };
    if text.is_empty() || text.len() > 128 {
        return Err(err(NameProblem::IdLength));
    }
    if !text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(err(NameProblem::IdCharacter));
    }
    if text.starts_with('.') || text.contains("..") {
        return Err(err(NameProblem::IdDots));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal, $check:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            pub fn new(text: impl Into<String>) -> Result<Self, NameError> {
                let text = text.into();
                $check($kind, &text)?;
                Ok(Self(text))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $ty {
            type Error = NameError;
            fn try_from(text: String) -> Result<Self, NameError> {
                Self::new(text)
            }
        }

        impl From<$ty> for String {
            fn from(name: $ty) -> String {
                name.0
            }
        }

        impl FromStr for $ty {
            type Err = NameError;
            fn from_str(text: &str) -> Result<Self, NameError> {
                Self::new(text)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// The name of a node in the rack (`wedge`, `bladerunner1`).
    NodeName,
    "node name",
    check_label
);
name_type!(
    /// The name of a rack secret (`kv-root`): a DNS label, so it is also a safe file name.
    SecretName,
    "secret name",
    check_label
);
name_type!(
    /// The name of a service or task (`dns`, `pcp-wedge`, `dns-sl1`): a DNS label.
    ServiceName,
    "service name",
    check_label
);
name_type!(
    /// The name of a framework (scheduler); `torc` is the built-in one.
    FrameworkName,
    "framework name",
    check_label
);
name_type!(
    /// A task id, unique for the life of the rack: `<name>.<suffix>`. Never reused, unlike the
    /// original, whose task id was the bare service name.
    TaskId,
    "task id",
    check_task_id
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(NodeName::new("bladerunner1").is_ok());
        assert!(NodeName::new("pcp-wedge").is_ok());
        for bad in ["", "-a", "a-", "Wedge", "a_b", "a.b", &"x".repeat(64)] {
            assert!(NodeName::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn task_ids() {
        assert!(TaskId::new("dns.0a1b2c").is_ok());
        assert!(TaskId::new("../etc").is_err());
        assert_eq!(
            TaskId::new("a/b").unwrap_err().reason,
            NameProblem::IdCharacter
        );
    }

    #[test]
    fn serde_validates() {
        let err = serde_json::from_str::<NodeName>("\"Bad Name\"").unwrap_err();
        assert!(err.to_string().contains("invalid node name"), "{err}");
        let ok: NodeName = serde_json::from_str("\"wedge\"").unwrap();
        assert_eq!(serde_json::to_string(&ok).unwrap(), "\"wedge\"");
    }
}

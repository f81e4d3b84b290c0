//! containerd's identifiers, checked before they are sent: a namespace and a container id
//! follow containerd's `identifiers.Validate` (letters and digits in parts joined by one `.`,
//! `_` or `-`, at most 76 characters), so a bad one is refused here naming the rule rather
//! than by containerd after a round trip. A torc task id (`dns.0a1b2c`) is a valid container
//! id.

use std::fmt;

/// containerd's limit on an identifier's length.
pub const MAX_IDENTIFIER: usize = 76;

/// Why a string is not a containerd identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {text:?} is not a containerd identifier: {reason}")]
pub struct IdError {
    /// `namespace` or `container id`.
    pub what: &'static str,
    pub text: String,
    pub reason: &'static str,
}

fn check(what: &'static str, text: &str) -> Result<(), IdError> {
    let fail = |reason| {
        Err(IdError {
            what,
            text: text.to_string(),
            reason,
        })
    };
    if text.is_empty() {
        return fail("it is empty");
    }
    if text.len() > MAX_IDENTIFIER {
        return fail("it is longer than 76 characters");
    }
    let mut previous_separator = true;
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            previous_separator = false;
        } else if matches!(c, '.' | '_' | '-') {
            if previous_separator {
                return fail("'.', '_' and '-' must each stand between letters or digits");
            }
            previous_separator = true;
        } else {
            return fail("only ASCII letters, digits, '.', '_' and '-' are allowed");
        }
    }
    if previous_separator {
        return fail("'.', '_' and '-' must each stand between letters or digits");
    }
    Ok(())
}

macro_rules! identifier {
    ($(#[$doc:meta])* $ty:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $ty(String);

        impl $ty {
            pub fn new(text: impl Into<String>) -> Result<$ty, IdError> {
                let text = text.into();
                check($what, &text)?;
                Ok($ty(text))
            }

            pub fn as_str(&self) -> &str {
                &self.0
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

        impl std::str::FromStr for $ty {
            type Err = IdError;
            fn from_str(text: &str) -> Result<$ty, IdError> {
                $ty::new(text)
            }
        }
    };
}

identifier!(
    /// A containerd namespace (`torc` on a real node, `torc-<slug>-<node>` on a local rack):
    /// every call of a [`Client`](crate::Client) carries one.
    Namespace,
    "namespace"
);
identifier!(
    /// A container's id, which torc makes its task id.
    ContainerId,
    "container id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerds_rule() {
        for good in [
            "torc",
            "torc-1a2b3c-bladerunner1",
            "dns.0a1b2c",
            "a_b",
            "A9",
        ] {
            assert!(ContainerId::new(good).is_ok(), "{good:?} refused");
        }
        for bad in ["", "-a", "a-", "a..b", "a/b", "a b", "é", &"x".repeat(77)] {
            assert!(Namespace::new(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            Namespace::new("a/b").unwrap_err().to_string(),
            "namespace \"a/b\" is not a containerd identifier: only ASCII letters, digits, '.', \
             '_' and '-' are allowed"
        );
        assert!(Namespace::new("x".repeat(76)).is_ok());
    }
}

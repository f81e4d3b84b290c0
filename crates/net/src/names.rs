//! Checked names: a rack's namespace prefix (`torc-<slug>-`), a namespace name carrying one,
//! and a network interface name. Each is validated when made, so a bad name is refused with a
//! reason before anything touches the kernel.

use std::fmt;

use crate::Error;

/// Every namespace torc names starts with this.
const TORC: &str = "torc-";
/// A slug is short: it is repeated in every namespace name of its rack.
const MAX_SLUG: usize = 16;
/// A namespace name is a file name under `/run/netns` (NAME_MAX is 255); node names are far
/// shorter, and `ip netns list` stays readable.
const MAX_NETNS_NAME: usize = 128;
/// The kernel's IFNAMSIZ (16) less the terminating NUL.
const MAX_IFNAME: usize = 15;

/// The prefix of every namespace of one rack: `torc-<slug>-`, where the slug is 1 to 16
/// lower-case letters and digits (6 hex digits in practice). Sweeping a prefix removes that
/// rack's namespaces and no one else's: `torc-ab-` is not a prefix of `torc-abc-x`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetnsPrefix(String);

impl NetnsPrefix {
    /// The prefix of the rack whose slug is `slug`.
    pub fn new(slug: &str) -> Result<NetnsPrefix, Error> {
        check_slug(slug)?;
        Ok(NetnsPrefix(format!("{TORC}{slug}-")))
    }

    /// A prefix with a random 6-hex-digit slug, for racks that need not be found again (a test
    /// rack); `torc up` derives its slug from its state directory instead.
    pub fn random() -> NetnsPrefix {
        let slug = format!("{:06x}", torc_types::random_u64() & 0xff_ffff);
        NetnsPrefix(format!("{TORC}{slug}-"))
    }

    /// The slug, without `torc-` and the trailing `-`.
    pub fn slug(&self) -> &str {
        &self.0[TORC.len()..self.0.len() - 1]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name of this rack's namespace `suffix` (a node name: `wedge`, `bladerunner1`).
    pub fn name(&self, suffix: &str) -> Result<NetnsName, Error> {
        NetnsName::parse(&format!("{}{suffix}", self.0))
    }
}

impl fmt::Display for NetnsPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_slug(slug: &str) -> Result<(), Error> {
    if slug.is_empty() || slug.len() > MAX_SLUG {
        return Err(Error::invalid(
            "rack slug",
            slug,
            format!("must be 1 to {MAX_SLUG} characters"),
        ));
    }
    if !slug
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(Error::invalid(
            "rack slug",
            slug,
            "only lower-case letters and digits are allowed",
        ));
    }
    Ok(())
}

/// The name of a namespace torc creates: `torc-<slug>-<suffix>` (`torc-3fa9c2-wedge`), a file
/// under `/run/netns` as `ip netns` names them. The suffix is letters, digits, `-`, `_` and
/// `.`, and does not start with `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetnsName(String);

impl NetnsName {
    pub fn parse(name: &str) -> Result<NetnsName, Error> {
        let bad = |reason: &str| Error::invalid("namespace name", name, reason);
        if name.len() > MAX_NETNS_NAME {
            return Err(bad(&format!("longer than {MAX_NETNS_NAME} characters")));
        }
        let rest = name
            .strip_prefix(TORC)
            .ok_or_else(|| bad("does not start with `torc-`"))?;
        let (slug, suffix) = rest
            .split_once('-')
            .ok_or_else(|| bad("has no `-` after the rack's slug"))?;
        check_slug(slug).map_err(|_| bad("the rack's slug is not 1 to 16 letters and digits"))?;
        if suffix.is_empty() {
            return Err(bad("nothing follows the rack prefix"));
        }
        if suffix.starts_with('.') {
            return Err(bad("the part after the rack prefix starts with `.`"));
        }
        if !suffix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(bad(
                "only letters, digits, `-`, `_` and `.` may follow the rack prefix",
            ));
        }
        Ok(NetnsName(name.to_string()))
    }

    /// The rack prefix this name carries.
    pub fn prefix(&self) -> NetnsPrefix {
        let rest = &self.0[TORC.len()..];
        let slug_len = rest.find('-').unwrap_or(rest.len());
        NetnsPrefix(self.0[..TORC.len() + slug_len + 1].to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NetnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A network interface name as the kernel accepts it (`dev_valid_name`): 1 to 15 bytes, not
/// `.` or `..`, without `/`, `:` or white space. Checked here so that a name one character too
/// long is refused with that reason instead of the kernel's bare `EINVAL`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IfName(String);

impl IfName {
    pub fn new(name: &str) -> Result<IfName, Error> {
        let bad = |reason: String| Error::invalid("interface name", name, reason);
        if name.is_empty() {
            return Err(bad("is empty".into()));
        }
        if name.len() > MAX_IFNAME {
            return Err(bad(format!(
                "is {} bytes long; the kernel allows at most {MAX_IFNAME}",
                name.len()
            )));
        }
        if name == "." || name == ".." {
            return Err(bad("cannot be `.` or `..`".into()));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
        {
            return Err(bad(
                "only printable ASCII without `/`, `:` or spaces is allowed".into(),
            ));
        }
        Ok(IfName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let p = NetnsPrefix::new("3fa9c2").unwrap();
        assert_eq!(p.as_str(), "torc-3fa9c2-");
        assert_eq!(p.slug(), "3fa9c2");
        assert_eq!(p.name("wedge").unwrap().as_str(), "torc-3fa9c2-wedge");
        for bad in ["", "ABC", "a-b", "a/b", "0123456789abcdef0"] {
            assert!(NetnsPrefix::new(bad).is_err(), "{bad:?}");
        }
        let r = NetnsPrefix::random();
        assert_eq!(r.slug().len(), 6);
        assert!(NetnsPrefix::new(r.slug()).is_ok());
    }

    #[test]
    fn namespace_names() {
        let n = NetnsName::parse("torc-3fa9c2-bladerunner1").unwrap();
        assert_eq!(n.prefix().as_str(), "torc-3fa9c2-");
        assert_eq!(
            NetnsName::parse("torc-ab-node-a.b_c").unwrap().prefix(),
            NetnsPrefix::new("ab").unwrap()
        );
        for (bad, why) in [
            ("wedge", "does not start with `torc-`"),
            ("torc-abc", "has no `-` after"),
            ("torc-abc-", "nothing follows"),
            ("torc--x", "slug"),
            ("torc-ABC-x", "slug"),
            ("torc-abc-.x", "starts with `.`"),
            ("torc-abc-a/b", "only letters"),
            ("torc-abc-a b", "only letters"),
        ] {
            let e = NetnsName::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
            assert!(e.contains(bad), "{bad:?}: {e}");
        }
        let long = format!("torc-abc-{}", "x".repeat(200));
        assert!(NetnsName::parse(&long).is_err());
    }

    #[test]
    fn interface_names() {
        assert_eq!(IfName::new("swp1").unwrap().as_str(), "swp1");
        assert!(IfName::new("tk0123456789abc").is_ok());
        let e = IfName::new("tk0123456789abcd").unwrap_err().to_string();
        assert_eq!(
            e,
            "bad interface name \"tk0123456789abcd\": is 16 bytes long; the kernel allows at most 15"
        );
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "é"] {
            assert!(IfName::new(bad).is_err(), "{bad:?}");
        }
    }
}

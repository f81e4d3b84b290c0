//! Image references, read and normalised as Docker and containerd read them
//! (`github.com/distribution/reference`): `busybox` is `docker.io/library/busybox:latest`,
//! `torc/busybox:1` is `docker.io/torc/busybox:1`, `127.0.0.1:5000/x:1` stays as written, and
//! `@sha256:…` digests are kept. This is the one normaliser: the config, the API and the CLI
//! check references with it, and the agent hands the normalised text to the registry client
//! and to containerd, so every part of torc names an image the same way.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Docker Hub, the registry of a reference that names none.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// Docker Hub's old name, read as [`DEFAULT_REGISTRY`].
const LEGACY_DEFAULT_REGISTRY: &str = "index.docker.io";
/// Docker Hub's namespace of official images: `busybox` is `library/busybox`.
const OFFICIAL_NAMESPACE: &str = "library/";
/// The tag of a reference that names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";
/// distribution/reference's `NameTotalLengthMax`: registry and repository together.
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A registry's address: a host name, an IPv4 address or a bracketed IPv6 address, and an
/// optional port (`registry.example.com`, `127.0.0.1:5000`, `[::1]:5000`). `index.docker.io`
/// is read as `docker.io`, as Docker does, so that credentials given for either apply to
/// both.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RegistryHost(String);

/// A registry address that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid registry {text:?}: expected a host name or address with an optional :port, \
     e.g. registry.example.com or 127.0.0.1:5000"
)]
pub struct RegistryHostError {
    pub text: String,
}

impl RegistryHost {
    pub fn new(text: impl Into<String>) -> Result<RegistryHost, RegistryHostError> {
        let text = text.into();
        if !is_registry(&text) {
            return Err(RegistryHostError { text });
        }
        if text == LEGACY_DEFAULT_REGISTRY {
            return Ok(RegistryHost(DEFAULT_REGISTRY.to_string()));
        }
        Ok(RegistryHost(text))
    }

    /// Docker Hub.
    pub fn docker_hub() -> RegistryHost {
        RegistryHost(DEFAULT_REGISTRY.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host without its port (an IPv6 address keeps its brackets).
    pub fn host(&self) -> &str {
        split_port(&self.0).0
    }

    pub fn port(&self) -> Option<u16> {
        split_port(&self.0).1.and_then(|p| p.parse().ok())
    }

    /// `localhost`, `127.0.0.0/8` or `[::1]`: registries Docker and containerd reach over
    /// plain HTTP without being told.
    pub fn is_loopback(&self) -> bool {
        let host = self.host();
        if host == "localhost" {
            return true;
        }
        if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            return v6.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback());
        }
        host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
    }
}

/// `host` and the digits after its port colon, if any.
fn split_port(text: &str) -> (&str, Option<&str>) {
    let host_end = if text.starts_with('[') {
        text.find(']').map_or(text.len(), |i| i + 1)
    } else {
        text.find(':').unwrap_or(text.len())
    };
    let (host, rest) = text.split_at(host_end);
    (host, rest.strip_prefix(':'))
}

/// distribution/reference's `domainAndPort`: a host (name, IPv4, or IPv6 in brackets), then
/// optionally `:` and a port.
fn is_registry(text: &str) -> bool {
    let (host, port) = split_port(text);
    let port_ok = port.is_none_or(|p| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
    });
    let host_ok = match host.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .is_some_and(|v6| v6.parse::<Ipv6Addr>().is_ok()),
        None => {
            !host.is_empty()
                && host.len() <= 253
                && host.split('.').all(|label| {
                    !label.is_empty()
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                })
        }
    };
    host_ok && port_ok
}

impl fmt::Display for RegistryHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for RegistryHost {
    type Err = RegistryHostError;
    fn from_str(text: &str) -> Result<Self, RegistryHostError> {
        RegistryHost::new(text)
    }
}

impl TryFrom<String> for RegistryHost {
    type Error = RegistryHostError;
    fn try_from(text: String) -> Result<Self, RegistryHostError> {
        RegistryHost::new(text)
    }
}

impl From<RegistryHost> for String {
    fn from(host: RegistryHost) -> String {
        host.0
    }
}

/// A normalised image reference: `REGISTRY/REPOSITORY[:TAG][@DIGEST]`, with the registry and
/// (without a digest) the tag always present. Written and read as its normalised text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageRef {
    /// The whole normalised reference, as `Display` shows it.
    text: String,
    registry: RegistryHost,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

/// Text that is not an image reference, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {text:?}: {problem}")]
pub struct ImageRefError {
    pub text: String,
    pub problem: ImageRefProblem,
}

/// The rule an image reference breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefProblem {
    #[error("it is empty")]
    Empty,
    #[error("{0:?} is not allowed in a reference ([REGISTRY/]REPOSITORY[:TAG][@DIGEST])")]
    Character(char),
    #[error("it names no repository")]
    NoRepository,
    #[error("the repository name {0:?} must be lowercase")]
    Uppercase(String),
    #[error(
        "registry {0:?} is not a host name or address with an optional :port, e.g. \
         registry.example.com:5000"
    )]
    Registry(String),
    #[error(
        "repository path component {0:?} must be lowercase letters and digits, separated by \
         '.', '_', '__' or '-'"
    )]
    Component(String),
    #[error("the name is {0} characters long; at most {MAX_NAME_LEN} are allowed")]
    TooLong(usize),
    #[error(
        "tag {0:?} must be 1 to {MAX_TAG_LEN} letters, digits, '_', '.' or '-', not starting \
         with '.' or '-'"
    )]
    Tag(String),
    #[error("digest {0:?} must be sha256:<64 lowercase hex digits> (or sha384, sha512)")]
    Digest(String),
    #[error("a 64-digit hex string is an image id, not a name; use REPOSITORY@sha256:<digest>")]
    ImageId,
}

impl ImageRef {
    /// Reads and normalises `text`.
    pub fn parse(text: &str) -> Result<ImageRef, ImageRefError> {
        let err = |problem| ImageRefError {
            text: text.to_string(),
            problem,
        };
        if text.is_empty() {
            return Err(err(ImageRefProblem::Empty));
        }
        if let Some(c) = text
            .chars()
            .find(|c| !(c.is_ascii_graphic()) || matches!(c, '"' | '\'' | '\\' | '$'))
        {
            return Err(err(ImageRefProblem::Character(c)));
        }
        if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err(ImageRefProblem::ImageId));
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest)),
            None => (text, None),
        };
        if let Some(digest) = digest
            && !is_digest(digest)
        {
            return Err(err(ImageRefProblem::Digest(digest.to_string())));
        }
        // A tag follows the last ':' that comes after the last '/': a ':' before it is a
        // registry's port.
        let (name, tag) = match rest.rfind(':') {
            Some(i) if rest[i..].find('/').is_none() => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(tag) = tag
            && !is_tag(tag)
        {
            return Err(err(ImageRefProblem::Tag(tag.to_string())));
        }
        if name.is_empty() {
            return Err(err(ImageRefProblem::NoRepository));
        }
        let (registry, repository) = split_registry(name);
        let registry = match registry {
            None => RegistryHost::docker_hub(),
            Some(r) => {
                RegistryHost::new(r).map_err(|_| err(ImageRefProblem::Registry(r.to_string())))?
            }
        };
        if repository.is_empty() {
            return Err(err(ImageRefProblem::NoRepository));
        }
        if repository.to_ascii_lowercase() != repository {
            return Err(err(ImageRefProblem::Uppercase(repository.to_string())));
        }
        if let Some(bad) = repository.split('/').find(|c| !is_path_component(c)) {
            return Err(err(ImageRefProblem::Component(bad.to_string())));
        }
        let repository = if registry.as_str() == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("{OFFICIAL_NAMESPACE}{repository}")
        } else {
            repository.to_string()
        };
        let name_len = registry.as_str().len() + 1 + repository.len();
        if name_len > MAX_NAME_LEN {
            return Err(err(ImageRefProblem::TooLong(name_len)));
        }
        let tag = match (tag, digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (tag, _) => tag.map(str::to_string),
        };
        let mut full = format!("{registry}/{repository}");
        if let Some(tag) = &tag {
            full.push(':');
            full.push_str(tag);
        }
        if let Some(digest) = digest {
            full.push('@');
            full.push_str(digest);
        }
        Ok(ImageRef {
            text: full,
            registry,
            repository,
            tag,
            digest: digest.map(str::to_string),
        })
    }

    /// The normalised reference, e.g. `docker.io/library/busybox:latest`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn registry(&self) -> &RegistryHost {
        &self.registry
    }

    /// The repository within its registry, e.g. `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// Registry and repository, without tag or digest: `docker.io/library/busybox`.
    pub fn name(&self) -> &str {
        let end = self.registry.as_str().len() + 1 + self.repository.len();
        &self.text[..end]
    }

    /// The tag: as written, or `latest` when the reference names neither tag nor digest.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest (`sha256:…`), when the reference pins one.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }
}

/// distribution/reference's `splitDockerDomain`: the first component names a registry when
/// it has a `.` or a `:`, is `localhost`, or has an uppercase letter (a repository cannot).
fn split_registry(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_ascii_lowercase() != first =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// `[\w][\w.-]{0,127}`.
fn is_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    tag.len() <= MAX_TAG_LEN
        && tag.bytes().next().is_some_and(word)
        && tag.bytes().all(|b| word(b) || b == b'.' || b == b'-')
}

/// The digests containerd verifies: the algorithm and its exact length of lowercase hex.
fn is_digest(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return false;
    };
    let len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == len
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for ImageRef {
    type Err = ImageRefError;
    fn from_str(text: &str) -> Result<Self, ImageRefError> {
        ImageRef::parse(text)
    }
}

impl TryFrom<String> for ImageRef {
    type Error = ImageRefError;
    fn try_from(text: String) -> Result<Self, ImageRefError> {
        ImageRef::parse(&text)
    }
}

impl From<ImageRef> for String {
    fn from(image: ImageRef) -> String {
        image.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "sha256:c629a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e";

    fn norm(text: &str) -> String {
        ImageRef::parse(text)
            .unwrap_or_else(|e| panic!("{e}"))
            .to_string()
    }

    fn problem(text: &str) -> ImageRefProblem {
        ImageRef::parse(text).unwrap_err().problem
    }

    #[test]
    fn normalises_as_docker_does() {
        for (written, normal) in [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("torc/busybox:1", "docker.io/torc/busybox:1"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            (
                "index.docker.io/busybox",
                "docker.io/library/busybox:latest",
            ),
            ("index.docker.io/a/b", "docker.io/a/b:latest"),
            ("127.0.0.1:5000/x:1", "127.0.0.1:5000/x:1"),
            ("localhost/x", "localhost/x:latest"),
            ("localhost:5000/a/b/c", "localhost:5000/a/b/c:latest"),
            (
                "registry.example.com/team/app",
                "registry.example.com/team/app:latest",
            ),
            ("[::1]:5000/x:v2", "[::1]:5000/x:v2"),
            ("Registry/x", "Registry/x:latest"),
            ("x/a.b_c__d-e--f", "docker.io/x/a.b_c__d-e--f:latest"),
            (
                "attinnovate/charmander-pcp",
                "docker.io/attinnovate/charmander-pcp:latest",
            ),
        ] {
            assert_eq!(norm(written), normal, "{written}");
            // Normal forms are fixed points.
            assert_eq!(norm(normal), normal, "{normal}");
        }
    }

    #[test]
    fn digests() {
        let r = ImageRef::parse(&format!("busybox@{SHA}")).unwrap();
        assert_eq!(r.as_str(), format!("docker.io/library/busybox@{SHA}"));
        assert_eq!((r.tag(), r.digest()), (None, Some(SHA)));
        let r = ImageRef::parse(&format!("localhost:5000/x:1@{SHA}")).unwrap();
        assert_eq!(r.as_str(), format!("localhost:5000/x:1@{SHA}"));
        assert_eq!((r.tag(), r.digest()), (Some("1"), Some(SHA)));
        for bad in [
            "x@sha256:abc",
            "x@md5:0123456789abcdef0123456789abcdef",
            "x@sha256",
            &format!("x@{}", SHA.to_uppercase().replace("SHA", "sha")),
        ] {
            assert!(matches!(problem(bad), ImageRefProblem::Digest(_)), "{bad}");
        }
    }

    #[test]
    fn parts() {
        let r = ImageRef::parse("127.0.0.1:5000/torc/busybox:1").unwrap();
        assert_eq!(r.registry().as_str(), "127.0.0.1:5000");
        assert_eq!(r.registry().host(), "127.0.0.1");
        assert_eq!(r.registry().port(), Some(5000));
        assert_eq!(r.repository(), "torc/busybox");
        assert_eq!(r.name(), "127.0.0.1:5000/torc/busybox");
        assert_eq!(r.tag(), Some("1"));
        let hub = ImageRef::parse("busybox").unwrap();
        assert_eq!(hub.registry(), &RegistryHost::docker_hub());
        assert_eq!(hub.name(), "docker.io/library/busybox");
        assert_eq!(hub.registry().port(), None);
    }

    #[test]
    fn errors_name_the_problem() {
        let shown = |t: &str| ImageRef::parse(t).unwrap_err().to_string();
        assert_eq!(
            shown("Busybox"),
            "invalid image reference \"Busybox\": the repository name \"Busybox\" must be \
             lowercase"
        );
        assert_eq!(
            shown("busybox:"),
            "invalid image reference \"busybox:\": tag \"\" must be 1 to 128 letters, digits, \
             '_', '.' or '-', not starting with '.' or '-'"
        );
        assert_eq!(shown(""), "invalid image reference \"\": it is empty");
        assert_eq!(problem("busy box"), ImageRefProblem::Character(' '));
        assert_eq!(problem("x\n"), ImageRefProblem::Character('\n'));
        assert_eq!(problem("ünï"), ImageRefProblem::Character('ü'));
        assert_eq!(problem(":1"), ImageRefProblem::NoRepository);
        assert_eq!(problem("localhost:5000/"), ImageRefProblem::NoRepository);
        assert_eq!(problem("x:.1"), ImageRefProblem::Tag(".1".into()));
        assert_eq!(
            problem(&format!("x:{}", "a".repeat(129))),
            ImageRefProblem::Tag("a".repeat(129))
        );
        assert_eq!(problem("a//b"), ImageRefProblem::Component(String::new()));
        assert_eq!(problem("a/-b"), ImageRefProblem::Component("-b".into()));
        assert_eq!(problem("a/b."), ImageRefProblem::Component("b.".into()));
        assert_eq!(
            problem("a/b___c"),
            ImageRefProblem::Component("b___c".into())
        );
        assert_eq!(problem("a/b.-c"), ImageRefProblem::Component("b.-c".into()));
        assert_eq!(
            problem("bad_host.com:99999/x"),
            ImageRefProblem::Registry("bad_host.com:99999".into())
        );
        assert_eq!(
            problem("-x.com/y"),
            ImageRefProblem::Registry("-x.com".into())
        );
        assert_eq!(
            problem("[zz]:1/y"),
            ImageRefProblem::Registry("[zz]:1".into())
        );
        assert_eq!(problem(&"a".repeat(64)), ImageRefProblem::ImageId);
        let long = format!("r.io/{}", "a".repeat(251));
        assert_eq!(problem(&long), ImageRefProblem::TooLong(256));
        assert!(ImageRef::parse(&format!("r.io/{}", "a".repeat(250))).is_ok());
    }

    #[test]
    fn serde_uses_the_normal_form() {
        let r: ImageRef = serde_json::from_str("\"busybox\"").unwrap();
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            "\"docker.io/library/busybox:latest\""
        );
        let err = serde_json::from_str::<ImageRef>("\"A b\"").unwrap_err();
        assert!(err.to_string().contains("invalid image reference"), "{err}");
    }

    #[test]
    fn registry_hosts() {
        let host = |t: &str| RegistryHost::new(t).unwrap();
        assert_eq!(host("index.docker.io").as_str(), "docker.io");
        for loopback in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.9.9.9",
            "[::1]:5",
        ] {
            assert!(host(loopback).is_loopback(), "{loopback}");
        }
        for remote in [
            "docker.io",
            "10.0.0.1:5000",
            "localhost.example.com",
            "[::2]",
        ] {
            assert!(!host(remote).is_loopback(), "{remote}");
        }
        assert_eq!(host("[::1]:5000").host(), "[::1]");
        for bad in [
            "",
            "a b",
            "x:",
            "x:y",
            "x:1:2",
            "a..b",
            "[::1",
            "host/path",
            "a:-1",
        ] {
            let err = RegistryHost::new(bad).unwrap_err();
            assert!(
                err.to_string().contains("expected a host name"),
                "{bad}: {err}"
            );
        }
    }
}

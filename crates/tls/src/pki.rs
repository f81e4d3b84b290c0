//! The rack's certificate authority: one self-signed CA per rack, kept in a directory, and the
//! certificates it issues (controller, agents, kv, tsdb, tasks that ask for one).
//!
//! On disk (created by [`Ca::create`], `torc ca init` or `torc up`):
//! - `ca.pem`: the CA certificate, which every client and server of the rack trusts (0644);
//! - `ca.key`: its private key (0600), which only the controller reads;
//! - `ca.name`: the CA's subject common name, so that a loaded CA signs with the same issuer
//!   name its certificate carries.
//!
//! The directory is created 0700. Keys are ECDSA P-256 (aws-lc-rs), seeded by the OS.
//!
//! Invariants: `create` never overwrites an existing CA; every file is written whole
//! (temporary file, fsync, rename, fsync of the directory) with its final mode from the start,
//! so a crash leaves either no file or a complete one and a key is never readable by others,
//! not even for a moment.

use std::net::IpAddr;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
    SignatureAlgorithm,
};

use crate::error::TlsError;
use crate::files::write_file;

/// How long the CA itself is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A loaded rack CA.
pub struct Ca {
    dir: PathBuf,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("dir", &self.dir).finish()
    }
}

/// What a certificate is for, and the names it carries.
#[derive(Debug, Clone)]
pub struct CertRequest {
    /// The subject's common name (e.g. `node bladerunner1`); informational.
    pub common_name: String,
    /// DNS names it is valid for.
    pub dns_names: Vec<String>,
    /// IP addresses it is valid for.
    pub ips: Vec<IpAddr>,
    pub validity: Duration,
}

/// A certificate and, when the CA generated it, its key (both PEM).
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: Option<String>,
}

/// A P-256 public key in its uncompressed form (65 bytes, `04 || x || y`), as a node sends it
/// with its registration: the node keeps the private half.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPublicKey(Vec<u8>);

impl RawPublicKey {
    /// Checks the shape of a raw P-256 key.
    pub fn p256(bytes: Vec<u8>) -> Option<RawPublicKey> {
        (bytes.len() == 65 && bytes[0] == 4).then_some(RawPublicKey(bytes))
    }
}

impl PublicKeyData for RawPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

/// The raw public key (hex) of a P-256 private key in PEM: what a node sends to be certified.
pub fn public_key_hex(key_pem: &str) -> Result<String, TlsError> {
    let key = KeyPair::from_pem(key_pem)?;
    Ok(key
        .public_key_raw()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// A fresh P-256 key pair: `(private key PEM, raw public key)`.
pub fn generate_key() -> Result<(String, RawPublicKey), TlsError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let raw = RawPublicKey(key.public_key_raw().to_vec());
    Ok((key.serialize_pem(), raw))
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "torc");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn offset(t: SystemTime) -> time::OffsetDateTime {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn random_serial() -> Result<SerialNumber, TlsError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| TlsError::Random(e.to_string()))?;
    // Positive and non-zero, as RFC 5280 wants.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

impl Ca {
    /// Creates a new CA in `dir` (created 0700 if missing). Refuses when `dir` already holds
    /// one.
    pub fn create(dir: &Path, rack: &str) -> Result<Ca, TlsError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| TlsError::Write {
                path: dir.into(),
                error: source,
            })?;
        let cert_path = dir.join("ca.pem");
        if cert_path.exists() {
            return Err(TlsError::Write {
                path: cert_path,
                error: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "a rack CA already exists here; remove the directory to start over",
                ),
            });
        }
        let mut id = [0u8; 4];
        getrandom::fill(&mut id).map_err(|e| TlsError::Random(e.to_string()))?;
        let name = format!(
            "torc rack CA {rack} {:02x}{:02x}{:02x}{:02x}",
            id[0], id[1], id[2], id[3]
        );
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = ca_params(&name);
        let now = SystemTime::now();
        params.not_before = offset(now - Duration::from_secs(3600));
        params.not_after = offset(now + CA_VALIDITY);
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key)?;
        write_file(&dir.join("ca.key"), key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&dir.join("ca.name"), name.as_bytes(), 0o644)?;
        write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
        Ok(Ca {
            dir: dir.into(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(ca_params(&name), key),
        })
    }

    /// Loads the CA in `dir`.
    pub fn load(dir: &Path) -> Result<Ca, TlsError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| TlsError::Read {
                path,
                error: source,
            })
        };
        let cert_pem = read("ca.pem")?;
        crate::parse_certs(&cert_pem, &dir.join("ca.pem").display().to_string())?;
        let key =
            KeyPair::from_pem(&crate::files::read_secret(&dir.join("ca.key"))?).map_err(|_| {
                TlsError::NoKey {
                    path: dir.join("ca.key"),
                }
            })?;
        let name = read("ca.name")?.trim().to_string();
        Ok(Ca {
            dir: dir.into(),
            cert_pem,
            issuer: Issuer::new(ca_params(&name), key),
        })
    }

    /// Where the CA lives.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate (PEM), what every party of the rack trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    fn params(&self, req: &CertRequest) -> Result<CertificateParams, TlsError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, req.common_name.as_str());
        dn.push(DnType::OrganizationName, "torc");
        params.distinguished_name = dn;
        for name in &req.dns_names {
            params.subject_alt_names.push(SanType::DnsName(
                name.clone().try_into().map_err(TlsError::Certificate)?,
            ));
        }
        for ip in &req.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Every torc party is both: a server to some, a client of others (mTLS).
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        // An hour of slack for clocks a little behind the controller's.
        params.not_before = offset(now - Duration::from_secs(3600));
        params.not_after = offset(now + req.validity);
        params.serial_number = Some(random_serial()?);
        Ok(params)
    }

    /// Issues a certificate and a fresh key for it.
    pub fn issue(&self, req: &CertRequest) -> Result<Issued, TlsError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = self.params(req)?.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: Some(key.serialize_pem()),
        })
    }

    /// Issues a certificate for a key someone else holds.
    pub fn issue_for(&self, req: &CertRequest, key: &RawPublicKey) -> Result<Issued, TlsError> {
        let cert = self.params(req)?.signed_by(key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: None,
        })
    }
}

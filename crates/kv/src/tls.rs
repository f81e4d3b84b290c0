//! TLS for the etcd API, as etcd 3.4 serves it: `--cert-file` and `--key-file` (then gRPC is
//! served over TLS only, as etcd does on `https://` client URLs), `--trusted-ca-file` and
//! `--client-cert-auth`.
//!
//! TLS is terminated by torc-tls's shared accept path ([`torc_tls::incoming`], tokio-rustls
//! over each accepted TCP stream) instead of tonic, because `authority::AuthorityFix` must see
//! the decrypted HTTP/2 bytes: TCP → TLS → `AuthorityFix` → HTTP/2 (see `crate::conn`). Each
//! handshake runs in its own task, bounded by a deadline, so a client that stalls
//! mid-handshake holds only its own socket and slot. ALPN offers `h2` only.
//!
//! Client certificates, as etcd 3.4 (`pkg/transport/listener.go`, `auth/store.go`):
//! - with a trusted CA, every client must present a certificate that chains to it, or the
//!   handshake fails (etcd requires one whenever `--trusted-ca-file` is given, with or without
//!   `--client-cert-auth`);
//! - with `--client-cert-auth`, a request that carries no token is made by the user the
//!   certificate's subject common name names (etcd's `AuthInfoFromTLS`: the last CN attribute,
//!   as Go reads it; a certificate without one names the empty user, whom nothing is allowed).
//!   A token, when present, wins, and a request marked as forwarded by etcd's gRPC gateway
//!   (`grpcgateway-accept` metadata) is anonymous. Without `--client-cert-auth` the
//!   certificate only opens the connection. Each connection's name reaches the services in
//!   its `conn::Peer` request extension; `auth_service` applies the rule.
//!
//! Not copied from etcd: `--client-cert-auth` without a trusted CA (etcd then checks client
//! certificates against the system's roots) is refused at start; plain and TLS connections on
//! one port (etcd's `http://` and `https://` URLs on one address) are not offered; a key file
//! others can read is refused.
//!
//! Invariants: no request is served on a connection before its handshake finished and, when a
//! trusted CA is set, rustls verified the client's chain to it; the common name is read only
//! from that verified certificate; bytes of a certificate never cause a panic.

use std::path::Path;
use std::sync::Arc;

use torc_tls::{CertificateDer, ClientAuth, Identity, ServerConfig};

use crate::error::Error;

/// How `torc kv` serves TLS: its certificate and key, and what it asks of clients.
#[derive(Clone, Debug)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    client_cert_auth: bool,
}

impl ServerTls {
    /// TLS presenting `identity`. With `trusted_ca`, clients must present a certificate chaining
    /// to it; `client_cert_auth` (which needs `trusted_ca`) also makes a certificate's common
    /// name the user of requests without a token.
    pub fn new(
        identity: Identity,
        trusted_ca: Option<Vec<CertificateDer<'static>>>,
        client_cert_auth: bool,
    ) -> Result<ServerTls, Error> {
        if client_cert_auth && trusted_ca.is_none() {
            return Err(Error::ClientCertAuthWithoutCa);
        }
        let client_auth = match trusted_ca {
            Some(roots) => ClientAuth::Required(roots),
            None => ClientAuth::None,
        };
        let mut config = torc_tls::server_config(identity, client_auth)?;
        // gRPC is HTTP/2; etcd's server offers only `h2` too.
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
            client_cert_auth,
        })
    }

    /// From etcd's flags: `--cert-file`, `--key-file`, `--trusted-ca-file`,
    /// `--client-cert-auth`. The key file must be readable by its owner only.
    pub fn from_files(
        cert_file: &Path,
        key_file: &Path,
        trusted_ca_file: Option<&Path>,
        client_cert_auth: bool,
    ) -> Result<ServerTls, Error> {
        // Refused when others can read it, as every torc key.
        let key = torc_tls::files::read_secret(key_file)?;
        let identity = Identity {
            chain: torc_tls::load_certs(cert_file)?,
            key: torc_tls::parse_key(&key, &key_file.display().to_string())?,
        };
        let trusted_ca = trusted_ca_file.map(torc_tls::load_certs).transpose()?;
        ServerTls::new(identity, trusted_ca, client_cert_auth)
    }

    /// Whether certificates name users (`--client-cert-auth`).
    pub fn client_cert_auth(&self) -> bool {
        self.client_cert_auth
    }

    /// The rustls configuration the accept path terminates TLS with.
    pub(crate) fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config)
    }
}

// ---- the subject's common name ----

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_OID: u8 = 0x06;
/// id-at-commonName, 2.5.4.3.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// The subject common name of a certificate as Go's `crypto/x509` reads it (what etcd's
/// `AuthInfoFromTLS` uses): the value of the last CN attribute, `""` when there is none.
/// `None` when the certificate or its subject does not parse, or a CN is of a string type Go
/// does not read.
pub(crate) fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    subject_common_name(cert.subject())
}

/// The common name in a DER `Name`'s contents (its RDNs, without the outer SEQUENCE).
fn subject_common_name(mut rdns: &[u8]) -> Option<String> {
    let mut cn = String::new();
    while !rdns.is_empty() {
        let (rdn, rest) = der_take(rdns, TAG_SET)?;
        rdns = rest;
        let mut attributes = rdn;
        while !attributes.is_empty() {
            let (attribute, rest) = der_take(attributes, TAG_SEQUENCE)?;
            attributes = rest;
            let (oid, value) = der_take(attribute, TAG_OID)?;
            if oid == OID_COMMON_NAME {
                let (&tag, _) = value.split_first()?;
                let (bytes, _) = der_take(value, tag)?;
                cn = der_string(tag, bytes)?;
            }
        }
    }
    Some(cn)
}

/// Splits one DER element with tag `tag` off `input`: its contents and what follows.
fn der_take(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (digits, rest) = rest.split_at_checked(n)?;
        let len = digits
            .iter()
            .fold(0usize, |acc, &d| (acc << 8) | usize::from(d));
        (len, rest)
    };
    rest.split_at_checked(len)
}

/// An ASN.1 string value, for the types Go's `parseASN1String` reads.
fn der_string(tag: u8, bytes: &[u8]) -> Option<String> {
    const UTF8_STRING: u8 = 0x0c;
    const NUMERIC_STRING: u8 = 0x12;
    const PRINTABLE_STRING: u8 = 0x13;
    const T61_STRING: u8 = 0x14;
    const IA5_STRING: u8 = 0x16;
    const BMP_STRING: u8 = 0x1e;
    match tag {
        UTF8_STRING | NUMERIC_STRING | PRINTABLE_STRING | T61_STRING | IA5_STRING => {
            String::from_utf8(bytes.to_vec()).ok()
        }
        BMP_STRING => {
            if !bytes.len().is_multiple_of(2) {
                return None;
            }
            let units = bytes
                .chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if contents.len() < 0x80 {
            out.push(contents.len() as u8);
        } else {
            out.push(0x82);
            out.extend_from_slice(&(contents.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(contents);
        out
    }

    /// One RDN holding the given (OID, string tag, value) attributes.
    fn rdn(attributes: &[(&[u8], u8, &[u8])]) -> Vec<u8> {
        let mut set = Vec::new();
        for (oid, tag, value) in attributes {
            let mut attr = tlv(TAG_OID, oid);
            attr.extend(tlv(*tag, value));
            set.extend(tlv(TAG_SEQUENCE, &attr));
        }
        tlv(TAG_SET, &set)
    }

    const O: &[u8] = &[0x55, 0x04, 0x0a];

    #[test]
    fn common_names_read_as_go_reads_them() {
        let name = [
            rdn(&[(O, 0x0c, b"torc")]),
            rdn(&[(OID_COMMON_NAME, 0x0c, b"alice")]),
        ]
        .concat();
        assert_eq!(subject_common_name(&name).as_deref(), Some("alice"));
        // The last CN wins, also inside one multi-valued RDN.
        let name = [
            rdn(&[(OID_COMMON_NAME, 0x13, b"first")]),
            rdn(&[(OID_COMMON_NAME, 0x16, b"second"), (O, 0x0c, b"x")]),
        ]
        .concat();
        assert_eq!(subject_common_name(&name).as_deref(), Some("second"));
        // BMPString is UTF-16BE.
        let bmp: Vec<u8> = "rööt".encode_utf16().flat_map(u16::to_be_bytes).collect();
        let name = rdn(&[(OID_COMMON_NAME, 0x1e, &bmp)]);
        assert_eq!(subject_common_name(&name).as_deref(), Some("rööt"));
        // No CN: the empty name; an empty subject too.
        assert_eq!(
            subject_common_name(&rdn(&[(O, 0x0c, b"torc")])).as_deref(),
            Some("")
        );
        assert_eq!(subject_common_name(&[]).as_deref(), Some(""));
        // Long-form lengths.
        let long = "u".repeat(300);
        let name = rdn(&[(OID_COMMON_NAME, 0x0c, long.as_bytes())]);
        assert_eq!(subject_common_name(&name), Some(long));
    }

    #[test]
    fn malformed_subjects_name_no_one_and_never_panic() {
        let good = rdn(&[(OID_COMMON_NAME, 0x0c, b"alice")]);
        // Every truncation fails cleanly.
        for end in 1..good.len() {
            assert_eq!(subject_common_name(&good[..end]), None, "cut at {end}");
        }
        // A string type Go does not read (UniversalString), invalid UTF-8, odd BMP.
        assert_eq!(
            subject_common_name(&rdn(&[(OID_COMMON_NAME, 0x1c, b"abcd")])),
            None
        );
        assert_eq!(
            subject_common_name(&rdn(&[(OID_COMMON_NAME, 0x0c, &[0xff])])),
            None
        );
        assert_eq!(
            subject_common_name(&rdn(&[(OID_COMMON_NAME, 0x1e, b"abc")])),
            None
        );
        // Lengths past the input, indefinite and oversized length forms, wrong tags.
        assert_eq!(subject_common_name(&[TAG_SET, 0x05, 0x30]), None);
        assert_eq!(subject_common_name(&[TAG_SET, 0x80]), None);
        assert_eq!(subject_common_name(&[TAG_SET, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(subject_common_name(&[TAG_SEQUENCE, 0x00]), None);
        // Arbitrary bytes.
        let mut x: u32 = 1;
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..16)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = subject_common_name(&bytes);
        }
    }

    #[test]
    fn certificates_issued_by_the_rack_ca_carry_their_common_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = torc_tls::pki::Ca::create(&dir.path().join("ca"), "test").expect("ca");
        for name in ["alice", ""] {
            let issued = ca
                .issue(&torc_tls::pki::CertRequest {
                    common_name: name.into(),
                    dns_names: vec!["localhost".into()],
                    ips: Vec::new(),
                    validity: std::time::Duration::from_secs(3600),
                })
                .expect("issue");
            let certs = torc_tls::parse_certs(&issued.cert_pem, "issued").expect("pem");
            assert_eq!(common_name(&certs[0]).as_deref(), Some(name));
        }
        assert_eq!(common_name(&CertificateDer::from(vec![1, 2, 3])), None);
    }
}

//! The rack's names as one generation-numbered document (`GET /api/v1/dns`): what the
//! controller builds and serves, and what the DNS server (`torc dns`, the `torc-dns` crate)
//! follows and answers from.
//!
//! A snapshot replaces everything the previous one said (CONVENTIONS habit 6): a node or service
//! absent from it is gone, so its names answer NXDOMAIN from then on. A snapshot is numbered
//! `(epoch, generation)`: the epoch is the leader's, higher at every controller start and for
//! every new leader; the generation starts at 1 and grows with every change within an epoch.
//! Receivers order snapshots as [`crate::order::Follower`] says: one of a higher epoch is taken
//! whatever its generation (a new leader counts from 1 again), one of their own epoch only if
//! its generation is newer (so retries are harmless), and one of a lower epoch (a deposed
//! leader's late answer) is refused until the held epoch has been silent for a grace, after
//! which it is a new store's and is taken. 0 is the state before any snapshot.
//!
//! Only the shape is checked here (unknown fields and record types are refused when read); that
//! the names are DNS names, the records parse and lie in the server's zones is checked by the
//! DNS server when it applies a snapshot (`torc_dns::SnapshotError`), so that a bad snapshot
//! changes nothing.

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

/// Everything the DNS server answers for, besides the static zone files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSnapshot {
    /// The leader epoch that numbered it (0: a snapshot from before epochs, or one written by
    /// hand).
    #[serde(default)]
    pub epoch: u64,
    /// Strictly increasing within an epoch; a snapshot not newer than the current one of the
    /// same epoch is ignored.
    pub generation: u64,
    /// The node domain, e.g. `homer.ave`.
    pub node_domain: String,
    /// TTL of node records (A, PTR) and of the synthesized SOA of node and reverse zones.
    #[serde(default = "default_node_ttl")]
    pub node_ttl: u32,
    /// Address of this DNS server: answered for the apex and for `ns.<node_domain>`, the
    /// nameserver of every zone the snapshot creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nameserver_ip: Option<Ipv4Addr>,
    /// The rack's nodes: `<name>.<node_domain>` A `<ip>`, and the matching PTR.
    #[serde(default)]
    pub nodes: Vec<NodeEntry>,
    /// The service domain, e.g. `service.torc`.
    #[serde(default = "default_service_domain")]
    pub service_domain: String,
    /// Running services.
    #[serde(default)]
    pub services: Vec<ServiceEntry>,
    /// Extra records, written as in a zone file (absolute names).
    #[serde(default)]
    pub records: Vec<RecordEntry>,
}

impl DnsSnapshot {
    pub fn stamp(&self) -> crate::order::Stamp {
        crate::order::Stamp {
            epoch: self.epoch,
            generation: self.generation,
        }
    }
}

/// One node of the rack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// A single label, e.g. `bladerunner1`.
    pub name: String,
    pub ip: Ipv4Addr,
}

/// One service and its instances.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceEntry {
    /// A single label, e.g. `influxdb`: answered as `influxdb.<service_domain>` (A) and
    /// `_influxdb._tcp.<service_domain>` (SRV).
    pub name: String,
    /// TTL of the service's records; short, because instances move.
    #[serde(default = "default_service_ttl")]
    pub ttl: u32,
    pub instances: Vec<InstanceEntry>,
}

/// One running instance of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceEntry {
    /// The SRV target, an absolute name such as `bladerunner1.homer.ave`. When it lies in one of
    /// the server's zones and has no address there, it is given `ip`.
    pub target: String,
    pub ip: IpAddr,
    pub port: u16,
    /// Only healthy instances are answered; the controller may also just leave others out.
    #[serde(default = "yes")]
    pub healthy: bool,
}

/// An extra record in zone-file syntax, e.g.
/// `{"name": "wedge.homer.ave", "type": "CNAME", "data": "ns.homer.ave."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: RecordKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    /// The record data as in a zone file; names in it must be absolute.
    pub data: String,
}

/// The types a snapshot's extra record may have: those a zone file may hold. Written in upper
/// case (`"CNAME"`); read in any case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RecordKind {
    A,
    Aaaa,
    Cname,
    Mx,
    Ns,
    Txt,
    Srv,
    Ptr,
    Soa,
}

impl RecordKind {
    pub const ALL: [RecordKind; 9] = [
        RecordKind::A,
        RecordKind::Aaaa,
        RecordKind::Cname,
        RecordKind::Mx,
        RecordKind::Ns,
        RecordKind::Txt,
        RecordKind::Srv,
        RecordKind::Ptr,
        RecordKind::Soa,
    ];

    /// The type's name in a zone file.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::A => "A",
            RecordKind::Aaaa => "AAAA",
            RecordKind::Cname => "CNAME",
            RecordKind::Mx => "MX",
            RecordKind::Ns => "NS",
            RecordKind::Txt => "TXT",
            RecordKind::Srv => "SRV",
            RecordKind::Ptr => "PTR",
            RecordKind::Soa => "SOA",
        }
    }
}

impl std::fmt::Display for RecordKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record type a snapshot may not hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "record type {} is not supported (A, AAAA, CNAME, MX, NS, TXT, SRV, PTR, SOA)",
    shown(text)
)]
pub struct UnknownRecordKind {
    pub text: String,
}

impl std::str::FromStr for RecordKind {
    type Err = UnknownRecordKind;
    fn from_str(text: &str) -> Result<Self, UnknownRecordKind> {
        RecordKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| UnknownRecordKind {
                text: text.to_owned(),
            })
    }
}

impl TryFrom<String> for RecordKind {
    type Error = UnknownRecordKind;
    fn try_from(text: String) -> Result<Self, UnknownRecordKind> {
        text.parse()
    }
}

impl From<RecordKind> for String {
    fn from(kind: RecordKind) -> String {
        kind.as_str().to_owned()
    }
}

fn default_node_ttl() -> u32 {
    60
}

fn default_service_ttl() -> u32 {
    5
}

fn default_service_domain() -> String {
    "service.torc".to_owned()
}

fn yes() -> bool {
    true
}

/// `text` quoted for an error message, cut to 60 characters: a 300-byte name does not help.
/// (The DNS server shows names in its errors the same way.)
pub fn shown(text: &str) -> String {
    match text.char_indices().nth(60) {
        Some((at, _)) => format!("{:?}… ({} bytes)", &text[..at], text.len()),
        None => format!("{text:?}"),
    }
}

/// `text` cut to 60 characters for an error message, unquoted.
pub fn cut(text: &str) -> String {
    match text.char_indices().nth(60) {
        Some((at, _)) => format!("{}… ({} bytes)", &text[..at], text.len()),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_fields() {
        let s: DnsSnapshot = serde_json::from_str(
            r#"{"generation": 1, "node_domain": "homer.ave",
                "services": [{"name": "web", "instances": [{"target": "a.homer.ave", "ip": "10.0.0.1", "port": 80}]}]}"#,
        )
        .unwrap();
        assert_eq!(s.service_domain, "service.torc");
        assert_eq!(s.node_ttl, 60);
        assert_eq!(s.services[0].ttl, 5);
        assert!(s.services[0].instances[0].healthy);
        let unknown = serde_json::from_str::<DnsSnapshot>(
            r#"{"generation": 1, "node_domain": "a", "nodez": []}"#,
        );
        assert!(unknown.unwrap_err().to_string().contains("nodez"));
    }

    #[test]
    fn record_types_are_checked_when_read() {
        let record = |rtype: &str| {
            serde_json::from_str::<RecordEntry>(&format!(
                r#"{{"name": "w.a", "type": "{rtype}", "data": "x.a."}}"#
            ))
        };
        assert_eq!(record("cname").unwrap().rtype, RecordKind::Cname);
        let err = record("HINFO").unwrap_err().to_string();
        assert!(
            err.starts_with(
                "record type \"HINFO\" is not supported (A, AAAA, CNAME, MX, NS, TXT, SRV, PTR, SOA)"
            ),
            "{err}"
        );
        let written = serde_json::to_value(record("Aaaa").unwrap()).unwrap();
        assert_eq!(written["type"], "AAAA");
    }
}

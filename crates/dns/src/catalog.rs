//! The catalog: every zone the server is authoritative for, built whole from the static zone
//! files plus one snapshot, and never changed after it is built.
//!
//! Readers hold an `Arc<Catalog>`; a new snapshot builds a new catalog and swaps the `Arc` (see
//! `server.rs`), so a reader sees one generation or the next, never a mix.
//!
//! Invariants of a built catalog:
//! - every name is stored under its lowercased wire form (its key), in exactly one zone: the
//!   deepest zone whose apex is a suffix of it;
//! - every zone has an SOA at its apex, and every ancestor of a stored name up to its apex exists
//!   (as an empty non-terminal if it holds no records), so "no such name" (NXDOMAIN) and "no data
//!   of this type" (NODATA) are told apart correctly;
//! - a name holding a CNAME holds nothing else;
//! - an RRset holds no duplicate records.
//!
//! Not supported (documented, not half-done): wildcards, delegations below an apex (an NS record
//! there is served as plain data), DNSSEC.

use std::{collections::HashMap, net::IpAddr};

use hickory_proto::{
    op::ResponseCode,
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, AAAA, NS, PTR, SOA, SRV},
    },
};

use torc_api::dns::DnsSnapshot;

use crate::{
    key::{Key, key_of},
    snapshot::SnapshotError,
    zonefile::{BadName, MAX_LABEL, NameFault, StaticZone, absolute, parse_record},
};

/// How many CNAMEs are followed before giving up (a loop, or a silly chain).
const MAX_CNAME_CHAIN: usize = 8;

/// The key of the parent name, `None` for the root.
fn parent(key: &[u8]) -> Option<&[u8]> {
    let len = usize::from(*key.first()?);
    if len == 0 { None } else { key.get(1 + len..) }
}

#[derive(Debug)]
struct RrSet {
    rtype: RecordType,
    records: Vec<Record>,
}

#[derive(Debug)]
pub(crate) struct Zone {
    apex_key: Key,
    soa: Record,
    nodes: HashMap<Key, Vec<RrSet>>,
}

impl Zone {
    fn new(soa: Record) -> Self {
        let apex_key = key_of(&soa.name);
        let mut zone = Self {
            apex_key,
            soa: soa.clone(),
            nodes: HashMap::new(),
        };
        zone.insert(soa);
        zone
    }

    /// Adds a record (the caller checked it lies in this zone), and its empty ancestors.
    fn insert(&mut self, record: Record) {
        let key = key_of(&record.name);
        let mut up = parent(&key);
        while let Some(p) = up {
            if p.len() < self.apex_key.len() || self.nodes.contains_key(p) {
                break;
            }
            self.nodes.insert(p.into(), Vec::new());
            up = parent(p);
        }
        let node = self.nodes.entry(key).or_default();
        let rtype = record.record_type();
        match node.iter_mut().find(|s| s.rtype == rtype) {
            Some(set) if set.records.iter().any(|r| r.data == record.data) => {}
            Some(set) => set.records.push(record),
            None => node.push(RrSet {
                rtype,
                records: vec![record],
            }),
        }
    }

    /// The SOA for a negative answer: its TTL is the lesser of its own and its minimum field
    /// (RFC 2308 §3), which is how long resolvers may cache the "no".
    fn negative_soa(&self) -> Record {
        let mut soa = self.soa.clone();
        if let RData::SOA(data) = &soa.data {
            soa.ttl = soa.ttl.min(data.minimum);
        }
        soa
    }

    fn has_address(&self, key: &[u8]) -> bool {
        self.nodes.get(key).is_some_and(|node| {
            node.iter()
                .any(|s| matches!(s.rtype, RecordType::A | RecordType::AAAA))
        })
    }
}

/// An authoritative answer, before encoding.
#[derive(Debug)]
pub(crate) struct Resolution {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additional: Vec<Record>,
}

/// All zones of one generation.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    epoch: u64,
    generation: u64,
    zones: Vec<Zone>,
    by_apex: HashMap<Key, usize>,
}

impl Catalog {
    /// The catalog before any snapshot: the static zones alone, generation 0.
    pub(crate) fn from_static(static_zones: &[StaticZone]) -> Self {
        let mut catalog = Self::default();
        catalog.add_static(static_zones);
        catalog
    }

    /// The catalog for `snapshot` on top of the static zones.
    pub(crate) fn build(
        static_zones: &[StaticZone],
        snapshot: &DnsSnapshot,
    ) -> Result<Self, SnapshotError> {
        let mut catalog = Self {
            epoch: snapshot.epoch,
            generation: snapshot.generation,
            ..Self::default()
        };
        catalog.add_static(static_zones);
        // The SOA serial is 32 bits; the generation wraps into it (RFC 1982 arithmetic is
        // what secondaries use anyway).
        let serial = snapshot.generation as u32;

        let node_domain = domain(&snapshot.node_domain)?;
        let ns_name = child(&node_domain, "ns")?;
        let node_ttl = snapshot.node_ttl;
        let node_zone = catalog.zone_or_new(&node_domain, &ns_name, serial, node_ttl);
        if let Some(ip) = snapshot.nameserver_ip {
            let a = RData::A(A(ip));
            catalog.zones[node_zone].insert(Record::from_rdata(
                node_domain.clone(),
                node_ttl,
                a.clone(),
            ));
            catalog.zones[node_zone].insert(Record::from_rdata(ns_name.clone(), node_ttl, a));
        }
        for node in &snapshot.nodes {
            let name = child(&node_domain, &node.name)?;
            catalog.insert(Record::from_rdata(
                name.clone(),
                node_ttl,
                RData::A(A(node.ip)),
            ))?;
            let [a, b, c, d] = node.ip.octets();
            let reverse = absolute(&format!("{d}.{c}.{b}.{a}.in-addr.arpa"))?;
            if catalog.zone_of(&key_of(&reverse)).is_none() {
                let apex = absolute(&format!("{c}.{b}.{a}.in-addr.arpa"))?;
                catalog.zone_or_new(&apex, &ns_name, serial, node_ttl);
            }
            catalog.insert(Record::from_rdata(reverse, node_ttl, RData::PTR(PTR(name))))?;
        }

        let service_domain = domain(&snapshot.service_domain)?;
        let min_ttl = snapshot.services.iter().map(|s| s.ttl).min().unwrap_or(5);
        catalog.zone_or_new(&service_domain, &ns_name, serial, min_ttl);
        let mut targets: Vec<(Name, IpAddr, u32)> = Vec::new();
        for service in &snapshot.services {
            let name = child(&service_domain, &service.name)?;
            let srv_name = child(&service_domain, "_tcp")?;
            let srv_name = child(&srv_name, &format!("_{}", service.name))?;
            for instance in service.instances.iter().filter(|i| i.healthy) {
                let address = match instance.ip {
                    IpAddr::V4(ip) => RData::A(A(ip)),
                    IpAddr::V6(ip) => RData::AAAA(AAAA(ip)),
                };
                catalog.insert(Record::from_rdata(name.clone(), service.ttl, address))?;
                let target = domain(&instance.target)?;
                let srv = SRV::new(1, 1, instance.port, target.clone());
                catalog.insert(Record::from_rdata(
                    srv_name.clone(),
                    service.ttl,
                    RData::SRV(srv),
                ))?;
                targets.push((target, instance.ip, service.ttl));
            }
        }

        for entry in &snapshot.records {
            let record = parse_record(
                &entry.name,
                entry.ttl.unwrap_or(node_ttl),
                entry.rtype.as_str(),
                &entry.data,
            )
            .map_err(|problem| SnapshotError::Record {
                name: entry.name.clone(),
                rtype: entry.rtype,
                problem: Box::new(problem),
            })?;
            catalog.insert(record)?;
        }

        // SRV targets in our zones must resolve: give the ones without an address the
        // instance's address. Decided before adding any, so two instances on one target both count.
        let bare: Vec<_> = targets
            .into_iter()
            .filter(|(target, _, _)| {
                let key = key_of(target);
                catalog.zone_of(&key).is_some_and(|z| !z.has_address(&key))
            })
            .collect();
        for (target, ip, ttl) in bare {
            let address = match ip {
                IpAddr::V4(ip) => RData::A(A(ip)),
                IpAddr::V6(ip) => RData::AAAA(AAAA(ip)),
            };
            catalog.insert(Record::from_rdata(target, ttl, address))?;
        }

        for zone in &catalog.zones {
            for set in zone.nodes.values() {
                if set.len() > 1 && set.iter().any(|s| s.rtype == RecordType::CNAME) {
                    let name = set[0].records[0].name.to_string();
                    return Err(SnapshotError::CnameAndOtherData { name });
                }
            }
        }
        Ok(catalog)
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Names held in all zones, empty non-terminals included.
    pub(crate) fn name_count(&self) -> usize {
        self.zones.iter().map(|zone| zone.nodes.len()).sum()
    }

    /// Static zones were validated when parsed, so adding them cannot fail.
    fn add_static(&mut self, static_zones: &[StaticZone]) {
        for zone in static_zones {
            let Some(soa) = zone
                .records
                .iter()
                .find(|r| r.record_type() == RecordType::SOA)
            else {
                continue;
            };
            let index = self.add_zone(Zone::new(soa.clone()));
            for record in &zone.records {
                self.zones[index].insert(record.clone());
            }
        }
    }

    fn add_zone(&mut self, zone: Zone) -> usize {
        if let Some(&index) = self.by_apex.get(&zone.apex_key) {
            return index;
        }
        self.by_apex.insert(zone.apex_key.clone(), self.zones.len());
        self.zones.push(zone);
        self.zones.len() - 1
    }

    /// The zone at `apex`, created with a synthesized SOA and NS when it does not exist.
    fn zone_or_new(&mut self, apex: &Name, ns: &Name, serial: u32, ttl: u32) -> usize {
        if let Some(&index) = self.by_apex.get(&key_of(apex)) {
            return index;
        }
        let rname = apex
            .prepend_label("hostmaster")
            .unwrap_or_else(|_| apex.clone());
        let soa = SOA::new(ns.clone(), rname, serial, 3600, 600, 86_400, ttl);
        let index = self.add_zone(Zone::new(Record::from_rdata(
            apex.clone(),
            ttl,
            RData::SOA(soa),
        )));
        self.zones[index].insert(Record::from_rdata(
            apex.clone(),
            ttl,
            RData::NS(NS(ns.clone())),
        ));
        index
    }

    /// Adds a record to the deepest zone holding its name.
    fn insert(&mut self, record: Record) -> Result<(), SnapshotError> {
        let index =
            self.zone_index(&key_of(&record.name))
                .ok_or_else(|| SnapshotError::OutOfZone {
                    name: record.name.to_string(),
                })?;
        self.zones[index].insert(record);
        Ok(())
    }

    fn zone_index(&self, key: &[u8]) -> Option<usize> {
        let mut name = Some(key);
        while let Some(n) = name {
            if let Some(&index) = self.by_apex.get(n) {
                return Some(index);
            }
            name = parent(n);
        }
        None
    }

    /// The deepest zone holding `key`, if the server is authoritative for it.
    pub(crate) fn zone_of(&self, key: &[u8]) -> Option<&Zone> {
        self.zone_index(key).map(|i| &self.zones[i])
    }

    /// Looks a name up; `None` when it is in none of our zones (forward or refuse it).
    /// `qtype` ANY answers every RRset at the name, or with `minimal_any` only the first one in
    /// the zone's order (RFC 8482 §4.1; see `engine.rs` for when).
    pub(crate) fn resolve(
        &self,
        key: &[u8],
        qtype: RecordType,
        minimal_any: bool,
    ) -> Option<Resolution> {
        let mut zone = self.zone_of(key)?;
        let mut res = Resolution {
            rcode: ResponseCode::NoError,
            answers: Vec::new(),
            authority: Vec::new(),
            additional: Vec::new(),
        };
        let mut name: Key = key.into();
        for _ in 0..MAX_CNAME_CHAIN {
            let Some(node) = zone.nodes.get(&name) else {
                res.rcode = ResponseCode::NXDomain;
                res.authority.push(zone.negative_soa());
                return Some(res);
            };
            if qtype == RecordType::ANY && !node.is_empty() {
                let sets = if minimal_any { &node[..1] } else { &node[..] };
                res.answers
                    .extend(sets.iter().flat_map(|s| s.records.iter().cloned()));
                return Some(res);
            }
            if let Some(set) = node.iter().find(|s| s.rtype == qtype) {
                res.answers.extend(set.records.iter().cloned());
                self.add_additional(&mut res);
                return Some(res);
            }
            let cname = node.iter().find(|s| s.rtype == RecordType::CNAME);
            let Some(cname) = cname.and_then(|s| s.records.first()) else {
                res.authority.push(zone.negative_soa());
                return Some(res);
            };
            res.answers.push(cname.clone());
            let RData::CNAME(target) = &cname.data else {
                return Some(res);
            };
            name = key_of(&target.0);
            match self.zone_of(&name) {
                Some(z) => zone = z,
                // Outside our zones: the client's resolver follows the CNAME.
                None => return Some(res),
            }
        }
        Some(res)
    }

    /// Adds the addresses of SRV, MX and NS targets that we hold, so clients need no second query.
    fn add_additional(&self, res: &mut Resolution) {
        let targets: Vec<Key> = res
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => Some(key_of(&srv.target)),
                RData::MX(mx) => Some(key_of(&mx.exchange)),
                RData::NS(ns) => Some(key_of(&ns.0)),
                _ => None,
            })
            .collect();
        for target in targets {
            let Some(node) = self.zone_of(&target).and_then(|z| z.nodes.get(&target)) else {
                continue;
            };
            for set in node {
                if matches!(set.rtype, RecordType::A | RecordType::AAAA) {
                    for record in &set.records {
                        if !res.additional.contains(record) {
                            res.additional.push(record.clone());
                        }
                    }
                }
            }
        }
    }
}

/// A domain from a snapshot, made absolute and lowercased.
fn domain(text: &str) -> Result<Name, SnapshotError> {
    Ok(absolute(text)?)
}

/// `label.parent`, where `label` must be one plain label (a node or service name).
fn child(parent: &Name, label: &str) -> Result<Name, SnapshotError> {
    let err = |fault| BadName {
        text: label.to_owned(),
        fault,
    };
    if label.is_empty() || label.len() > MAX_LABEL {
        return Err(err(NameFault::LabelLength { len: label.len() }).into());
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(err(NameFault::LabelCharacters).into());
    }
    Ok(parent
        .prepend_label(label.to_ascii_lowercase())
        .map_err(|e| err(NameFault::Proto(Box::new(e))))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(json: &str) -> DnsSnapshot {
        serde_json::from_str(json).unwrap()
    }

    fn key(name: &str) -> Key {
        key_of(&absolute(name).unwrap())
    }

    #[test]
    fn nxdomain_nodata_and_empty_non_terminals() {
        let s = snapshot(
            r#"{"generation": 3, "node_domain": "homer.ave", "nodes": [{"name": "b1", "ip": "10.0.0.1"}],
                "services": [{"name": "web", "instances": [{"target": "b1.homer.ave", "ip": "10.0.0.1", "port": 80}]}]}"#,
        );
        let c = Catalog::build(&[], &s).unwrap();
        let a = c
            .resolve(&key("B1.homer.ave"), RecordType::A, false)
            .unwrap();
        assert_eq!(a.answers.len(), 1);
        let nodata = c
            .resolve(&key("b1.homer.ave"), RecordType::MX, false)
            .unwrap();
        assert_eq!(
            (nodata.rcode, nodata.answers.len(), nodata.authority.len()),
            (ResponseCode::NoError, 0, 1)
        );
        let nx = c
            .resolve(&key("b2.homer.ave"), RecordType::A, false)
            .unwrap();
        assert_eq!(nx.rcode, ResponseCode::NXDomain);
        let ent = c
            .resolve(&key("_tcp.service.torc"), RecordType::A, false)
            .unwrap();
        assert_eq!(ent.rcode, ResponseCode::NoError);
        let srv = c
            .resolve(&key("_web._tcp.service.torc"), RecordType::SRV, false)
            .unwrap();
        assert_eq!((srv.answers.len(), srv.additional.len()), (1, 1));
        let ptr = c
            .resolve(&key("1.0.0.10.in-addr.arpa"), RecordType::PTR, false)
            .unwrap();
        assert_eq!(ptr.answers[0].data.to_string(), "b1.homer.ave.");
        assert!(
            c.resolve(&key("example.com"), RecordType::A, false)
                .is_none()
        );
    }

    #[test]
    fn bad_snapshots_are_rejected() {
        let cases = [
            (
                r#"{"generation": 1, "node_domain": "a", "nodes": [{"name": "x.y", "ip": "10.0.0.1"}]}"#,
                "bad name \"x.y\"",
            ),
            (
                r#"{"generation": 1, "node_domain": "a", "records": [{"name": "w.elsewhere", "type": "A", "data": "1.1.1.1"}]}"#,
                "w.elsewhere. is in none",
            ),
            (
                r#"{"generation": 1, "node_domain": "a", "records": [{"name": "w.a", "type": "A", "data": "1.1.1"}]}"#,
                "record w.a A: bad IPv4",
            ),
            (
                r#"{"generation": 1, "node_domain": "a", "nodes": [{"name": "w", "ip": "10.0.0.1"}], "records": [{"name": "w.a", "type": "CNAME", "data": "x.a"}]}"#,
                "w.a. has a CNAME",
            ),
            (
                &format!(
                    r#"{{"generation": 1, "node_domain": "a", "nodes": [{{"name": "{}", "ip": "10.0.0.1"}}]}}"#,
                    "n".repeat(64)
                ),
                "bad name \"nnnn",
            ),
            (
                &format!(
                    r#"{{"generation": 1, "node_domain": "{}.x"}}"#,
                    "d".repeat(64)
                ),
                "bad name \"dddd",
            ),
            (
                &format!(
                    r#"{{"generation": 1, "node_domain": "a", "records": [{{"name": "{}.a", "type": "A", "data": "1.1.1.1"}}]}}"#,
                    vec!["r".repeat(60); 5].join(".")
                ),
                "record rrrr",
            ),
        ];
        for (json, want) in cases {
            let err = Catalog::build(&[], &snapshot(json))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(want), "got {err:?}, want {want:?}");
            assert!(err.len() < 400, "long names are cut: {err}");
        }
        // The limits, named.
        let long_node = format!(
            r#"{{"generation": 1, "node_domain": "a", "nodes": [{{"name": "{}", "ip": "10.0.0.1"}}]}}"#,
            "n".repeat(64)
        );
        let err = Catalog::build(&[], &snapshot(&long_node)).unwrap_err();
        assert!(
            err.to_string().contains("1 to 63 bytes long, not 64"),
            "{err}"
        );
        let long_domain = format!(
            r#"{{"generation": 1, "node_domain": "{}.x"}}"#,
            "d".repeat(64)
        );
        let err = Catalog::build(&[], &snapshot(&long_domain)).unwrap_err();
        assert!(
            err.to_string().contains("label 1 is 64 bytes long"),
            "{err}"
        );
    }
}

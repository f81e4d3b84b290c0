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
//! Wildcards (RFC 4592) are answered as bind9 answers them, by [`Zone::find`]: a name the zone
//! does not hold, whose closest encloser (its deepest ancestor the zone holds, empty
//! non-terminals included) has a `*` child, is answered from that child (the source of
//! synthesis) with the question's name as the records' owner, lowercased; NODATA when the
//! wildcard lacks the type; a wildcard CNAME is synthesized and chased like any other, and so are
//! wildcard matches met while chasing one or while adding SRV, MX and NS targets' addresses. A
//! name that exists, even as an empty non-terminal, is never answered from a wildcard, nor is a
//! name below it, unless it has its own `*` child; a `*` label that is not leftmost is an
//! ordinary label; a query for the wildcard's own name answers its records as they are. A zone
//! nested in another (the deepest zone holds a name) is a zone cut: the parent's wildcards never
//! answer names at or below the child's apex. The search runs only on the NXDOMAIN path of a
//! zone holding a wildcard (a flag per zone), and records are renamed after being copied, so a
//! name that exists, or a missing name in a zone without wildcards, costs what it cost before
//! but a branch.
//!
//! Not supported (documented, not half-done): delegations below an apex (an NS record there is
//! served as plain data), DNSSEC.

use std::{collections::HashMap, net::IpAddr};

use hickory_proto::{
    op::ResponseCode,
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, AAAA, NS, PTR, SOA, SRV},
    },
    serialize::binary::BinDecodable,
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
    /// Some name's first label is `*`: only then can a missing name be synthesized.
    has_wildcard: bool,
}

/// The RRsets answering a name: held at the name, or synthesized from a wildcard.
struct Found<'a> {
    sets: &'a [RrSet],
    /// The owner the records take when they come from a wildcard: the name asked for. (Boxed:
    /// a `Name` is large, and moving it on every lookup showed in the cost of names that exist.)
    synthesized_as: Option<Box<Name>>,
}

impl Found<'_> {
    /// Gives `records`, copied from these sets, the name asked for as owner. (Copied first and
    /// renamed after, so a name that exists is copied exactly as before wildcards.)
    fn own(&self, records: &mut [Record]) {
        if let Some(owner) = &self.synthesized_as {
            for record in records {
                record.name = Name::clone(owner);
            }
        }
    }
}

impl Zone {
    fn new(soa: Record) -> Self {
        let apex_key = key_of(&soa.name);
        let mut zone = Self {
            apex_key,
            soa: soa.clone(),
            nodes: HashMap::new(),
            has_wildcard: false,
        };
        zone.insert(soa);
        zone
    }

    /// The RRsets for `key` (a name in this zone): its own if the zone holds it, else the
    /// wildcard's. `None`: no such name (NXDOMAIN).
    #[inline]
    fn find(&self, key: &[u8]) -> Option<Found<'_>> {
        match self.nodes.get(key) {
            Some(sets) => Some(Found {
                sets,
                synthesized_as: None,
            }),
            None if self.has_wildcard => self.synthesize(key),
            None => None,
        }
    }

    /// The wildcard answering `key`, a name the zone does not hold (RFC 4592 §3.3.1): the
    /// closest encloser is the deepest ancestor held, and only its `*` child, the source of
    /// synthesis, can answer.
    #[cold]
    fn synthesize(&self, key: &[u8]) -> Option<Found<'_>> {
        // Every ancestor of a held name up to the apex is held, so this stops at the apex.
        let mut up = parent(key);
        let encloser = loop {
            let p = up.filter(|p| p.len() >= self.apex_key.len())?;
            if self.nodes.contains_key(p) {
                break p;
            }
            up = parent(p);
        };
        // `*.` + the encloser, on the stack: the encloser is a proper suffix of a name of at
        // most 255 bytes, so this fits.
        let mut source = [0u8; 2 + crate::zonefile::MAX_NAME];
        let len = encloser.len() + 2;
        let source = source.get_mut(..len)?;
        source[..2].copy_from_slice(&[1, b'*']);
        source[2..].copy_from_slice(encloser);
        let sets = self.nodes.get(&*source)?;
        // A key is a valid wire name (read from a query or made from a `Name`), so decoding it
        // cannot fail; if it did, NXDOMAIN is the answer that claims least.
        let owner = Name::from_bytes(key).ok()?;
        Some(Found {
            sets,
            synthesized_as: Some(Box::new(owner)),
        })
    }

    /// Adds a record (the caller checked it lies in this zone), and its empty ancestors.
    fn insert(&mut self, record: Record) {
        let key = key_of(&record.name);
        self.has_wildcard |= key.starts_with(&[1, b'*']);
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

    /// True if `key` has an address of its own (not a wildcard's: an SRV target synthesized
    /// from one still gets the instance's address).
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
            let Some(found) = zone.find(&name) else {
                res.rcode = ResponseCode::NXDomain;
                res.authority.push(zone.negative_soa());
                return Some(res);
            };
            let node = found.sets;
            let start = res.answers.len();
            if qtype == RecordType::ANY && !node.is_empty() {
                let sets = if minimal_any { &node[..1] } else { node };
                res.answers
                    .extend(sets.iter().flat_map(|s| s.records.iter().cloned()));
                found.own(&mut res.answers[start..]);
                return Some(res);
            }
            if let Some(set) = node.iter().find(|s| s.rtype == qtype) {
                res.answers.extend(set.records.iter().cloned());
                found.own(&mut res.answers[start..]);
                self.add_additional(&mut res);
                return Some(res);
            }
            let cname = node.iter().find(|s| s.rtype == RecordType::CNAME);
            let Some(mut cname) = cname.and_then(|s| s.records.first()).cloned() else {
                res.authority.push(zone.negative_soa());
                return Some(res);
            };
            found.own(std::slice::from_mut(&mut cname));
            let RData::CNAME(target) = &cname.data else {
                res.answers.push(cname);
                return Some(res);
            };
            name = key_of(&target.0);
            res.answers.push(cname);
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
            let Some(found) = self.zone_of(&target).and_then(|z| z.find(&target)) else {
                continue;
            };
            for set in found.sets {
                if matches!(set.rtype, RecordType::A | RecordType::AAAA) {
                    for record in &set.records {
                        let mut record = record.clone();
                        found.own(std::slice::from_mut(&mut record));
                        if !res.additional.contains(&record) {
                            res.additional.push(record);
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

    /// A catalog of static zones given as zone-file text, `(origin, text)`.
    fn zones(texts: &[(&str, &str)]) -> Catalog {
        let zones: Vec<StaticZone> = texts
            .iter()
            .map(|(origin, text)| StaticZone::parse(text, origin, Some(origin)).unwrap())
            .collect();
        Catalog::from_static(&zones)
    }

    /// An answer as text: rcode, then each section's records (`owner type data`), in order.
    fn ask(c: &Catalog, name: &str, qtype: RecordType) -> String {
        let res = c.resolve(&key(name), qtype, false).expect("ours");
        let show = |records: &[Record]| {
            records
                .iter()
                .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "{:?} [{}] [{}] [{}]",
            res.rcode,
            show(&res.answers),
            show(&res.authority).replace(" 1 3600 900 604800 120", ""),
            show(&res.additional)
        )
    }

    const DYN: &str = "$ORIGIN d.test.\n$TTL 60\n@ SOA ns h 1 3600 900 604800 120\n\
        *.dyn A 10.0.0.1\n*.dyn MX 10 mx\nmx A 10.0.0.2\nfixed.dyn TXT fixed\n\
        host.ent.dyn A 10.0.0.3\nsub.*.dyn TXT star\n*.cn CNAME t.dyn\n\
        *.loop CNAME x.loop\nto CNAME y.dyn\n";
    const SOA: &str = "d.test. SOA ns.d.test. h.d.test.";

    #[test]
    fn wildcards_synthesize_missing_names_with_the_name_asked_for() {
        let c = zones(&[("d.test", DYN)]);
        assert!(c.zones[0].has_wildcard);
        let a = "NoError [a.b.dyn.d.test. A 10.0.0.1] [] []";
        assert_eq!(ask(&c, "a.b.dyn.d.test", RecordType::A), a);
        assert_eq!(ask(&c, "A.B.Dyn.D.Test", RecordType::A), a);
        assert_eq!(
            ask(&c, "x.dyn.d.test", RecordType::MX),
            "NoError [x.dyn.d.test. MX 10 mx.d.test.] [] [mx.d.test. A 10.0.0.2]"
        );
        // The type the wildcard lacks: NODATA.
        let nodata = format!("NoError [] [{SOA}] []");
        assert_eq!(ask(&c, "x.dyn.d.test", RecordType::AAAA), nodata);
        // ANY: every RRset of the wildcard, under the name asked for.
        let any = c
            .resolve(&key("x.dyn.d.test"), RecordType::ANY, false)
            .unwrap();
        assert_eq!(any.answers.len(), 2);
        assert!(
            any.answers
                .iter()
                .all(|r| r.name.to_string() == "x.dyn.d.test.")
        );
        // The wildcard's own name answers as itself.
        assert_eq!(
            ask(&c, "*.dyn.d.test", RecordType::A),
            "NoError [*.dyn.d.test. A 10.0.0.1] [] []"
        );
    }

    #[test]
    fn existing_names_and_empty_non_terminals_block_wildcards() {
        let c = zones(&[("d.test", DYN)]);
        let nodata = format!("NoError [] [{SOA}] []");
        let nxdomain = format!("NXDomain [] [{SOA}] []");
        // Exists without the type: its own NODATA, not the wildcard's A.
        assert_eq!(ask(&c, "fixed.dyn.d.test", RecordType::A), nodata);
        // Below an existing name, or an empty non-terminal: no `*` child there.
        assert_eq!(ask(&c, "x.fixed.dyn.d.test", RecordType::A), nxdomain);
        assert_eq!(ask(&c, "ent.dyn.d.test", RecordType::A), nodata);
        assert_eq!(ask(&c, "x.ent.dyn.d.test", RecordType::A), nxdomain);
        assert_eq!(ask(&c, "dyn.d.test", RecordType::A), nodata);
        // Not under the wildcard's parent at all.
        assert_eq!(ask(&c, "x.other.d.test", RecordType::A), nxdomain);
        // `*` not leftmost is a label like any other; under the wildcard's own name the closest
        // encloser is that name, which has no `*` child.
        assert_eq!(
            ask(&c, "sub.*.dyn.d.test", RecordType::TXT),
            "NoError [sub.*.dyn.d.test. TXT star] [] []"
        );
        assert_eq!(ask(&c, "foo.*.dyn.d.test", RecordType::A), nxdomain);
        assert_eq!(ask(&c, "x.sub.*.dyn.d.test", RecordType::A), nxdomain);
    }

    #[test]
    fn wildcard_cnames_are_synthesized_and_chased() {
        let c = zones(&[("d.test", DYN)]);
        assert_eq!(
            ask(&c, "a.cn.d.test", RecordType::A),
            "NoError [a.cn.d.test. CNAME t.dyn.d.test., t.dyn.d.test. A 10.0.0.1] [] []"
        );
        assert_eq!(
            ask(&c, "to.d.test", RecordType::A),
            "NoError [to.d.test. CNAME y.dyn.d.test., y.dyn.d.test. A 10.0.0.1] [] []"
        );
        // A loop through a wildcard ends at the chain limit.
        let looped = c
            .resolve(&key("a.loop.d.test"), RecordType::A, false)
            .unwrap();
        assert_eq!(looped.answers.len(), MAX_CNAME_CHAIN);
    }

    #[test]
    fn the_apex_wildcard_and_a_zone_cut() {
        let parent = "$ORIGIN p.test.\n$TTL 60\n@ SOA ns h 1 3600 900 604800 120\n* A 10.0.0.9\n";
        let child =
            "$ORIGIN c.p.test.\n$TTL 60\n@ SOA ns h 1 3600 900 604800 120\nwww A 10.0.0.8\n";
        let c = zones(&[("p.test", parent), ("c.p.test", child)]);
        assert_eq!(
            ask(&c, "a.b.p.test", RecordType::A),
            "NoError [a.b.p.test. A 10.0.0.9] [] []"
        );
        // The apex exists: its own NODATA.
        assert!(ask(&c, "p.test", RecordType::A).starts_with("NoError [] [p.test. SOA"));
        // At and below the child's apex the parent's wildcard does not answer.
        assert!(ask(&c, "x.c.p.test", RecordType::A).starts_with("NXDomain [] [c.p.test. SOA"));
        assert!(ask(&c, "c.p.test", RecordType::A).starts_with("NoError [] [c.p.test. SOA"));
        // A zone without wildcards skips the search.
        assert!(!c.zones[1].has_wildcard);
    }

    #[test]
    fn snapshot_records_can_be_wildcards() {
        let s = snapshot(
            r#"{"generation": 1, "node_domain": "homer.ave", "nodes": [{"name": "b1", "ip": "10.0.0.1"}],
                "records": [{"name": "*.lab.homer.ave", "type": "CNAME", "data": "b1.homer.ave"}]}"#,
        );
        let c = Catalog::build(&[], &s).unwrap();
        let res = c
            .resolve(&key("gpu7.lab.homer.ave"), RecordType::A, false)
            .unwrap();
        let answers: Vec<String> = res.answers.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            answers,
            [
                "gpu7.lab.homer.ave. 60 IN CNAME b1.homer.ave.",
                "b1.homer.ave. 60 IN A 10.0.0.1"
            ]
        );
        let nx = c
            .resolve(&key("b2.homer.ave"), RecordType::A, false)
            .unwrap();
        assert_eq!(nx.rcode, ResponseCode::NXDomain);
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

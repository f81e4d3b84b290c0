//! The DNS load generator (the original's `normalload`): N simulated users, each waiting a
//! normally distributed delay between queries, sending a fixed query mix to the DNS servers it
//! finds through the rack's service domain (SRV `_dns-slN._tcp.service.torc`), spread evenly
//! over the servers that answer a health probe. Servers that stop answering are dropped and
//! re-added when they answer again. It prints a JSON line of figures every few seconds.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use serde::Serialize;

/// The original's twelve queries.
const MIX: [(&str, RecordType); 12] = [
    ("homer.ave.", RecordType::MX),
    ("homer.ave.", RecordType::NS),
    ("homer.ave.", RecordType::A),
    ("server.homer.ave.", RecordType::A),
    ("host1.homer.ave.", RecordType::A),
    ("host3.homer.ave.", RecordType::A),
    ("host3.homer.ave.", RecordType::A),
    ("server.homer.ave.", RecordType::A),
    ("host2.homer.ave.", RecordType::CNAME),
    ("mail.homer.ave.", RecordType::CNAME),
    ("www.homer.ave.", RecordType::CNAME),
    ("host2015.homer.ave.", RecordType::AAAA),
];

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub users: usize,
    pub mean: Duration,
    pub dev: Duration,
    /// The rack's DNS server, to find the servers under test.
    pub rack_dns: SocketAddr,
    /// Service names tried: `<prefix>1` .. `<prefix><max>`.
    pub prefix: String,
    pub max_servers: usize,
    pub service_domain: String,
    pub report_every: Duration,
    pub duration: Option<Duration>,
}

/// A tiny xorshift generator: the load does not need cryptographic randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A normal sample (Box-Muller).
    fn normal(&mut self, mean: f64, dev: f64) -> f64 {
        let (u1, u2) = (self.unit().max(1e-12), self.unit());
        mean + dev * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

fn query_bytes(id: u16, name: &str, rtype: RecordType) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(
        Name::from_ascii(name).expect("a valid name"),
        rtype,
    ));
    m.to_vec().expect("a query encodes")
}

/// Why a query got no usable answer.
#[derive(Debug, thiserror::Error)]
enum AskError {
    #[error("{0}")]
    Socket(#[from] std::io::Error),
    #[error("timeout")]
    Timeout,
    #[error("{0}")]
    Decode(#[from] hickory_proto::serialize::binary::DecodeError),
}

/// One query over UDP; the answer's message, or why not.
async fn ask(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    timeout: Duration,
) -> Result<Message, AskError> {
    let socket = tokio::net::UdpSocket::bind(if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
    .await?;
    let id = (Instant::now().elapsed().subsec_nanos() & 0xffff) as u16 ^ (name.len() as u16);
    socket
        .send_to(&query_bytes(id, name, rtype), server)
        .await?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(timeout, socket.recv(&mut buf))
        .await
        .map_err(|_| AskError::Timeout)??;
    Ok(Message::from_vec(&buf[..n])?)
}

/// The servers found in the service domain: name → address.
async fn discover(cfg: &LoadConfig) -> BTreeMap<String, SocketAddr> {
    let mut out = BTreeMap::new();
    for i in 1..=cfg.max_servers {
        let name = format!("{}{i}", cfg.prefix);
        let srv = format!("_{name}._tcp.{}.", cfg.service_domain);
        let Ok(answer) = ask(cfg.rack_dns, &srv, RecordType::SRV, Duration::from_secs(1)).await
        else {
            continue;
        };
        let addresses: BTreeMap<String, std::net::IpAddr> = answer
            .additionals
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some((r.name.to_ascii().to_lowercase(), std::net::IpAddr::V4(a.0))),
                _ => None,
            })
            .collect();
        for r in &answer.answers {
            if let RData::SRV(s) = &r.data {
                let target = s.target.to_ascii().to_lowercase();
                let ip = match addresses.get(&target) {
                    Some(ip) => Some(*ip),
                    None => ask(cfg.rack_dns, &target, RecordType::A, Duration::from_secs(1))
                        .await
                        .ok()
                        .and_then(|m| {
                            m.answers.iter().find_map(|a| match &a.data {
                                RData::A(a) => Some(std::net::IpAddr::V4(a.0)),
                                _ => None,
                            })
                        }),
                };
                if let Some(ip) = ip {
                    out.insert(name.clone(), SocketAddr::new(ip, s.port));
                }
            }
        }
    }
    out
}

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    errors: AtomicU64,
    per_server: Mutex<BTreeMap<String, u64>>,
    latencies_us: Mutex<Vec<u64>>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub at: u64,
    pub servers: Vec<String>,
    pub qps: f64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub per_server_qps: BTreeMap<String, f64>,
}

/// Runs the load until `duration` (or forever), printing a `Report` line every `report_every`.
pub async fn run(cfg: LoadConfig) {
    let healthy: Arc<RwLock<Vec<(String, SocketAddr)>>> = Arc::default();
    let counters = Arc::new(Counters::default());
    let next = Arc::new(AtomicUsize::new(0));

    // Discovery and health probes every 2 s.
    {
        let (cfg, healthy) = (cfg.clone(), Arc::clone(&healthy));
        tokio::spawn(async move {
            loop {
                let found = discover(&cfg).await;
                let mut up = Vec::new();
                for (name, addr) in found {
                    if ask(addr, "homer.ave.", RecordType::SOA, Duration::from_secs(1))
                        .await
                        .is_ok()
                    {
                        up.push((name, addr));
                    }
                }
                *healthy.write().unwrap_or_else(|e| e.into_inner()) = up;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
    }

    for u in 0..cfg.users {
        let (cfg, healthy, counters, next) = (
            cfg.clone(),
            Arc::clone(&healthy),
            Arc::clone(&counters),
            Arc::clone(&next),
        );
        tokio::spawn(async move {
            let seed =
                torc_types::now_millis() ^ (u as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut rng = Rng(seed | 1);
            let mean = cfg.mean.as_secs_f64() * 1000.0;
            let dev = cfg.dev.as_secs_f64() * 1000.0;
            // Users start spread over one mean delay, not all at once.
            tokio::time::sleep(Duration::from_millis((rng.unit() * mean) as u64)).await;
            loop {
                let wait = rng.normal(mean, dev).max(1.0);
                tokio::time::sleep(Duration::from_millis(wait as u64)).await;
                let target = {
                    let h = healthy.read().unwrap_or_else(|e| e.into_inner());
                    if h.is_empty() {
                        None
                    } else {
                        Some(h[next.fetch_add(1, Ordering::Relaxed) % h.len()].clone())
                    }
                };
                let Some((name, addr)) = target else { continue };
                let (q, t) = MIX[(rng.next() % MIX.len() as u64) as usize];
                let start = Instant::now();
                match ask(addr, q, t, Duration::from_secs(2)).await {
                    Ok(_) => {
                        counters.ok.fetch_add(1, Ordering::Relaxed);
                        counters
                            .latencies_us
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(start.elapsed().as_micros() as u64);
                        *counters
                            .per_server
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .entry(name)
                            .or_default() += 1;
                    }
                    Err(_) => {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }

    let started = Instant::now();
    let mut last = Instant::now();
    loop {
        tokio::time::sleep(cfg.report_every).await;
        let secs = last.elapsed().as_secs_f64();
        last = Instant::now();
        let ok = counters.ok.swap(0, Ordering::Relaxed);
        let errors = counters.errors.swap(0, Ordering::Relaxed);
        let mut lat = std::mem::take(
            &mut *counters
                .latencies_us
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        lat.sort_unstable();
        let pct = |p: f64| {
            lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
                .map_or(0.0, |v| *v as f64 / 1000.0)
        };
        let per = std::mem::take(
            &mut *counters
                .per_server
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        let report = Report {
            at: torc_types::now_millis(),
            servers: healthy
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(n, a)| format!("{n}={a}"))
                .collect(),
            qps: ok as f64 / secs,
            errors,
            p50_ms: pct(0.5),
            p99_ms: pct(0.99),
            per_server_qps: per.into_iter().map(|(k, v)| (k, v as f64 / secs)).collect(),
        };
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
        if cfg.duration.is_some_and(|d| started.elapsed() >= d) {
            return;
        }
    }
}

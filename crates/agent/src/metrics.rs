//! The agent's metrics (the seed's PCP agent): host CPU, memory, load, disk I/O, file systems,
//! network interfaces, and each task's CPU and memory, sampled on a timer and served as JSON and
//! as Prometheus text.
//!
//! Rates come from the difference between two samples divided by the time between them (the
//! original datacollector divided by nothing, and added one second to avoid dividing by zero).
//! A counter that went backwards (a reset) gives no rate for that interval rather than a
//! negative one.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use torc_api::{
    CpuMetrics, DiskMetrics, FsMetrics, InterfaceMetrics, MemoryMetrics, NodeMetrics, TaskMetrics,
};
use torc_procfs as procfs;
use torc_types::{NodeName, ServiceName, TaskId, now_millis};

/// Samples kept for the history endpoint.
pub const HISTORY: usize = 120;

/// A task to measure: its id, name, whether it is metered, and where its runtime says its
/// usage is (for a process task, the tree under its shim).
pub struct TaskProbe {
    pub id: TaskId,
    pub name: ServiceName,
    pub metered: bool,
    pub probe: crate::runtime::Probe,
}

struct Raw {
    at: Instant,
    cpu: procfs::CpuTimes,
    disks: Vec<procfs::DiskStat>,
    nets: Vec<procfs::NetDev>,
    /// Task id → (user, system) ticks of its whole process tree.
    tasks: HashMap<TaskId, (u64, u64)>,
}

pub struct Sampler {
    node: NodeName,
    ticks_per_s: f64,
    page_size: u64,
    prev: Option<Raw>,
    pub history: VecDeque<NodeMetrics>,
    /// Where containers' cgroups are (read once).
    cgroups: crate::container::Hierarchies,
    /// The data dir's file system, as the agent's upkeep last measured it.
    pub data_dir: Option<torc_api::DiskUsage>,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A rate per second from two cumulative counters; `None` across a counter reset.
fn rate(now: u64, before: u64, secs: f64) -> f64 {
    if now < before || secs <= 0.0 {
        0.0
    } else {
        (now - before) as f64 / secs
    }
}

impl Sampler {
    pub fn new(node: NodeName) -> Sampler {
        let conf = |var| nix::unistd::sysconf(var).ok().flatten().unwrap_or(0);
        let (ticks, page) = (
            conf(nix::unistd::SysconfVar::CLK_TCK),
            conf(nix::unistd::SysconfVar::PAGE_SIZE),
        );
        Sampler {
            node,
            ticks_per_s: if ticks > 0 { ticks as f64 } else { 100.0 },
            page_size: if page > 0 { page as u64 } else { 4096 },
            prev: None,
            history: VecDeque::with_capacity(HISTORY),
            cgroups: crate::container::Hierarchies::detect(),
            data_dir: None,
        }
    }

    pub fn latest(&self) -> Option<&NodeMetrics> {
        self.history.back()
    }

    /// The processes under a task's shim `pid` (the shim itself, torc's overhead, excluded):
    /// summed (user, system) ticks, resident bytes, and how many there are.
    fn tree(&self, pid: u32) -> Option<((u64, u64), u64, usize)> {
        procfs::parse_pid_stat(&read(&format!("/proc/{pid}/stat")))?;
        let mut stack = vec![pid];
        let (mut user, mut system, mut rss, mut count) = (0, 0, 0, 0);
        while let Some(p) = stack.pop() {
            if p != pid {
                let Some(st) = procfs::parse_pid_stat(&read(&format!("/proc/{p}/stat"))) else {
                    continue;
                };
                user += st.utime + st.cutime;
                system += st.stime + st.cstime;
                rss += st.rss_pages * self.page_size;
                count += 1;
            }
            if let Ok(threads) = std::fs::read_dir(format!("/proc/{p}/task")) {
                for t in threads.flatten() {
                    let children = read(&format!("{}/children", t.path().display()));
                    stack.extend(procfs::parse_children(&children));
                }
            }
        }
        Some(((user, system), rss, count))
    }

    /// Takes a sample. The first one only seeds the counters and returns `None`.
    pub fn sample(&mut self, tasks: &[TaskProbe], fs_dirs: &[String]) -> Option<NodeMetrics> {
        let at = Instant::now();
        let (cpu, cores) = procfs::parse_stat(&read("/proc/stat"))?;
        let mem = procfs::parse_meminfo(&read("/proc/meminfo"));
        let load = procfs::parse_loadavg(&read("/proc/loadavg")).unwrap_or_default();
        let disks = procfs::parse_diskstats(&read("/proc/diskstats"));
        let nets = procfs::parse_net_dev(&read("/proc/net/dev"));
        let mut task_ticks = HashMap::new();
        let mut task_mem = HashMap::new();
        for t in tasks {
            let usage = match &t.probe {
                crate::runtime::Probe::Tree(pid) => self.tree(*pid),
                crate::runtime::Probe::Cgroup(path) => self.cgroups.usage(path, self.ticks_per_s),
            };
            if let Some((ticks, rss, n)) = usage {
                task_ticks.insert(t.id.clone(), ticks);
                task_mem.insert(t.id.clone(), (rss, n));
            }
        }
        let raw = Raw {
            at,
            cpu,
            disks,
            nets,
            tasks: task_ticks,
        };
        let prev = self.prev.replace(raw)?;
        let raw = self.prev.as_ref().expect("just stored");
        let secs = raw.at.duration_since(prev.at).as_secs_f64();
        let dt = raw.cpu.total().saturating_sub(prev.cpu.total()).max(1) as f64;
        let pct = |now: u64, before: u64| now.saturating_sub(before) as f64 * 100.0 / dt;
        let cpu = CpuMetrics {
            cores,
            user_percent: pct(raw.cpu.user + raw.cpu.nice, prev.cpu.user + prev.cpu.nice),
            system_percent: pct(
                raw.cpu.system + raw.cpu.irq + raw.cpu.softirq,
                prev.cpu.system + prev.cpu.irq + prev.cpu.softirq,
            ),
            idle_percent: pct(raw.cpu.idle, prev.cpu.idle),
            iowait_percent: pct(raw.cpu.iowait, prev.cpu.iowait),
        };
        let memory = MemoryMetrics {
            total_bytes: mem.total,
            used_bytes: mem.total.saturating_sub(mem.available),
            available_bytes: mem.available,
            cached_bytes: mem.cached + mem.buffers,
            swap_used_bytes: mem.swap_total.saturating_sub(mem.swap_free),
        };
        let disks = raw
            .disks
            .iter()
            .filter_map(|d| {
                let p = prev.disks.iter().find(|x| x.device == d.device)?;
                Some(DiskMetrics {
                    device: d.device.clone(),
                    read_bytes_per_s: rate(d.read_sectors, p.read_sectors, secs) * 512.0,
                    write_bytes_per_s: rate(d.write_sectors, p.write_sectors, secs) * 512.0,
                    reads_per_s: rate(d.reads, p.reads, secs),
                    writes_per_s: rate(d.writes, p.writes, secs),
                })
            })
            .collect();
        let interfaces = raw
            .nets
            .iter()
            .filter_map(|n| {
                let p = prev.nets.iter().find(|x| x.name == n.name)?;
                Some(InterfaceMetrics {
                    name: n.name.clone(),
                    rx_bytes_per_s: rate(n.rx_bytes, p.rx_bytes, secs),
                    tx_bytes_per_s: rate(n.tx_bytes, p.tx_bytes, secs),
                    rx_packets_per_s: rate(n.rx_packets, p.rx_packets, secs),
                    tx_packets_per_s: rate(n.tx_packets, p.tx_packets, secs),
                    rx_drops_per_s: rate(n.rx_drops, p.rx_drops, secs),
                    tx_drops_per_s: rate(n.tx_drops, p.tx_drops, secs),
                    rx_errors_per_s: rate(n.rx_errors, p.rx_errors, secs),
                    tx_errors_per_s: rate(n.tx_errors, p.tx_errors, secs),
                    rx_bytes: n.rx_bytes,
                    tx_bytes: n.tx_bytes,
                    rx_drops: n.rx_drops,
                    tx_drops: n.tx_drops,
                })
            })
            .collect();
        let filesystems = filesystems(fs_dirs);
        let core_pct = |now: u64, before: u64| {
            if now < before || secs <= 0.0 {
                0.0
            } else {
                (now - before) as f64 / self.ticks_per_s / secs * 100.0
            }
        };
        let tasks = tasks
            .iter()
            .filter_map(|t| {
                let (user, system) = *raw.tasks.get(&t.id)?;
                let (pu, ps) = prev.tasks.get(&t.id).copied().unwrap_or((user, system));
                let (rss, n) = task_mem.get(&t.id).copied().unwrap_or((0, 0));
                Some(TaskMetrics {
                    id: t.id.clone(),
                    name: t.name.clone(),
                    metered: t.metered,
                    cpu_user_percent: core_pct(user, pu),
                    cpu_system_percent: core_pct(system, ps),
                    memory_bytes: rss,
                    processes: n,
                })
            })
            .collect();
        let m = NodeMetrics {
            node: self.node.clone(),
            at: now_millis(),
            interval_ms: (secs * 1000.0) as u64,
            cpu,
            memory,
            load,
            disks,
            filesystems,
            interfaces,
            tasks,
            data_dir: self.data_dir.clone(),
        };
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(m.clone());
        Some(m)
    }
}

/// Usage of the disk file systems; when none is mounted (e.g. an overlay root), of the file
/// systems holding the `fallback` directories.
fn filesystems(fallback: &[String]) -> Vec<FsMetrics> {
    let mut mounts: Vec<(String, String)> = procfs::parse_mounts(&read("/proc/mounts"))
        .into_iter()
        .map(|m| (m.mount_point, m.device))
        .collect();
    if mounts.is_empty() {
        mounts.extend(fallback.iter().map(|d| (d.clone(), String::new())));
    }
    mounts
        .into_iter()
        .filter_map(|(mount_point, device)| {
            let s = nix::sys::statvfs::statvfs(mount_point.as_str()).ok()?;
            let frag = s.fragment_size() as u64;
            let total = s.blocks() as u64 * frag;
            let free = s.blocks_free() as u64 * frag;
            let avail = s.blocks_available() as u64 * frag;
            Some(FsMetrics {
                mount_point,
                device,
                total_bytes: total,
                used_bytes: total.saturating_sub(free),
                available_bytes: avail,
            })
        })
        .collect()
}

/// Renders a sample in the Prometheus text format (`torc_prom`: escaping, HELP and TYPE), every
/// series labelled with the node.
pub fn prometheus(m: &NodeMetrics) -> String {
    type Row = (Vec<(&'static str, String)>, f64);
    let mut text = torc_prom::Text::new();
    let node = m.node.as_str();
    let mut gauge = |name: &str, help: &str, rows: Vec<Row>| {
        let mut family = text.family(name, torc_prom::Kind::Gauge, help);
        for (labels, v) in rows {
            let mut all = vec![("node", node)];
            all.extend(labels.iter().map(|(k, v)| (*k, v.as_str())));
            family.sample(&all, v);
        }
    };
    let one = |k: &'static str, v: &str| vec![(k, v.to_string())];
    gauge(
        "torc_node_cpu_percent",
        "Share of the node's CPU capacity by mode.",
        vec![
            (one("mode", "user"), m.cpu.user_percent),
            (one("mode", "system"), m.cpu.system_percent),
            (one("mode", "idle"), m.cpu.idle_percent),
            (one("mode", "iowait"), m.cpu.iowait_percent),
        ],
    );
    gauge(
        "torc_node_memory_bytes",
        "Memory by kind.",
        vec![
            (one("kind", "total"), m.memory.total_bytes as f64),
            (one("kind", "used"), m.memory.used_bytes as f64),
            (one("kind", "available"), m.memory.available_bytes as f64),
            (one("kind", "cached"), m.memory.cached_bytes as f64),
        ],
    );
    gauge(
        "torc_node_load",
        "Load average.",
        vec![
            (one("period", "1m"), m.load[0]),
            (one("period", "5m"), m.load[1]),
            (one("period", "15m"), m.load[2]),
        ],
    );
    if let Some(d) = &m.data_dir {
        gauge(
            "torc_node_data_dir_bytes",
            "The file system of the agent's data dir (sandboxes, service data), by kind.",
            vec![
                (one("kind", "total"), d.total_bytes as f64),
                (one("kind", "used"), d.used_bytes as f64),
                (one("kind", "free"), d.free_bytes as f64),
            ],
        );
        gauge(
            "torc_node_data_dir_low",
            "1 while the data dir's free space is below the rack's warning threshold.",
            vec![(Vec::new(), if d.low { 1.0 } else { 0.0 })],
        );
    }
    let per_if = |f: fn(&InterfaceMetrics) -> f64| -> Vec<Row> {
        (m.interfaces.iter())
            .map(|i| (one("interface", &i.name), f(i)))
            .collect()
    };
    gauge(
        "torc_node_network_receive_bytes_per_second",
        "Bytes received per second.",
        per_if(|i| i.rx_bytes_per_s),
    );
    gauge(
        "torc_node_network_transmit_bytes_per_second",
        "Bytes sent per second.",
        per_if(|i| i.tx_bytes_per_s),
    );
    gauge(
        "torc_node_network_receive_drops_per_second",
        "Received packets dropped per second.",
        per_if(|i| i.rx_drops_per_s),
    );
    gauge(
        "torc_node_network_transmit_drops_per_second",
        "Sent packets dropped per second.",
        per_if(|i| i.tx_drops_per_s),
    );
    let disk = |d: &str, direction: &str| {
        vec![
            ("device", d.to_string()),
            ("direction", direction.to_string()),
        ]
    };
    gauge(
        "torc_node_disk_bytes_per_second",
        "Disk I/O.",
        (m.disks.iter())
            .flat_map(|d| {
                [
                    (disk(&d.device, "read"), d.read_bytes_per_s),
                    (disk(&d.device, "write"), d.write_bytes_per_s),
                ]
            })
            .collect(),
    );
    gauge(
        "torc_node_filesystem_used_bytes",
        "File system usage.",
        (m.filesystems.iter())
            .map(|f| (one("mount", &f.mount_point), f.used_bytes as f64))
            .collect(),
    );
    let task =
        |t: &torc_api::TaskMetrics| vec![("task", t.id.to_string()), ("name", t.name.to_string())];
    gauge(
        "torc_task_cpu_percent",
        "A task's CPU use, percent of one core.",
        (m.tasks.iter())
            .flat_map(|t| {
                let with_mode = |mode: &str| {
                    let mut l = task(t);
                    l.push(("mode", mode.to_string()));
                    l
                };
                [
                    (with_mode("user"), t.cpu_user_percent),
                    (with_mode("system"), t.cpu_system_percent),
                ]
            })
            .collect(),
    );
    gauge(
        "torc_task_memory_bytes",
        "Resident memory of a task's processes.",
        (m.tasks.iter())
            .map(|t| (task(t), t.memory_bytes as f64))
            .collect(),
    );
    text.into_string()
}

//! Pure parsers for the Linux `/proc` files torc reads: what the agent samples (`/proc/stat`,
//! `/proc/meminfo`, `/proc/loadavg`, `/proc/diskstats`, `/proc/net/dev`, `/proc/mounts`,
//! `/proc/<pid>/stat` and `/proc/<pid>/task/<tid>/children`), and `/proc/<pid>/statm` (no
//! caller today). Routes are read over netlink (`torc-net`), not from `/proc/net/route`, which
//! lacks the protocol that says whose a route is. [`cgroup`] reads the cgroup v1 and v2 files
//! a container's memory, OOM kills, cpu time, throttling and processes are read from, and
//! where the hierarchies are mounted.
//!
//! No I/O: each function takes the file's text, so every parser is tested against captured
//! samples (`tests/data/`). Malformed lines are skipped, never a panic: the kernel's formats grow
//! columns over time, and a parser that insists on an exact shape breaks on the next kernel.
//! (A few small formats do not justify the `procfs` crate's dependency tree; this crate has
//! none.)

pub mod cgroup;

/// Aggregate CPU time from the first line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

impl CpuTimes {
    pub fn total(&self) -> u64 {
        self.user
            + self.nice
            + self.system
            + self.idle
            + self.iowait
            + self.irq
            + self.softirq
            + self.steal
    }
}

/// Parses `/proc/stat`: the aggregate `cpu` line and the number of `cpuN` lines.
pub fn parse_stat(text: &str) -> Option<(CpuTimes, usize)> {
    let mut total = None;
    let mut cores = 0;
    for line in text.lines() {
        let mut it = line.split_ascii_whitespace();
        match it.next() {
            Some("cpu") => {
                let v: Vec<u64> = it.map(|x| x.parse().unwrap_or(0)).collect();
                let get = |i: usize| v.get(i).copied().unwrap_or(0);
                total = Some(CpuTimes {
                    user: get(0),
                    nice: get(1),
                    system: get(2),
                    idle: get(3),
                    iowait: get(4),
                    irq: get(5),
                    softirq: get(6),
                    steal: get(7),
                });
            }
            Some(name) if name.starts_with("cpu") => cores += 1,
            _ => {}
        }
    }
    total.map(|t| (t, cores.max(1)))
}

/// The `/proc/meminfo` values torc reports, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemInfo {
    pub total: u64,
    pub free: u64,
    pub available: u64,
    pub buffers: u64,
    pub cached: u64,
    pub swap_total: u64,
    pub swap_free: u64,
}

pub fn parse_meminfo(text: &str) -> MemInfo {
    let mut m = MemInfo::default();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let kib: u64 = rest
            .split_ascii_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let bytes = kib * 1024;
        match key {
            "MemTotal" => m.total = bytes,
            "MemFree" => m.free = bytes,
            "MemAvailable" => m.available = bytes,
            "Buffers" => m.buffers = bytes,
            "Cached" => m.cached = bytes,
            "SwapTotal" => m.swap_total = bytes,
            "SwapFree" => m.swap_free = bytes,
            _ => {}
        }
    }
    m
}

/// The 1, 5 and 15 minute load averages.
pub fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut it = text.split_ascii_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// Cumulative I/O of one block device (`/proc/diskstats`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskStat {
    pub device: String,
    pub reads: u64,
    pub read_sectors: u64,
    pub writes: u64,
    pub write_sectors: u64,
}

/// Parses `/proc/diskstats`, keeping whole disks only: partitions (`vda1`, `nvme0n1p1`), loop,
/// ram and device-mapper devices are left out, so bytes are not counted twice.
pub fn parse_diskstats(text: &str) -> Vec<DiskStat> {
    let mut out: Vec<DiskStat> = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let name = f[2];
        if ["loop", "ram", "dm-", "zram", "sr"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            continue;
        }
        // A partition's name extends an earlier whole disk's name.
        if out
            .iter()
            .any(|d| name.len() > d.device.len() && name.starts_with(&d.device))
        {
            continue;
        }
        let n = |i: usize| f[i].parse::<u64>().unwrap_or(0);
        out.push(DiskStat {
            device: name.to_string(),
            reads: n(3),
            read_sectors: n(5),
            writes: n(7),
            write_sectors: n(9),
        });
    }
    out
}

/// Cumulative counters of one network interface (`/proc/net/dev`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetDev {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_drops: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_drops: u64,
}

pub fn parse_net_dev(text: &str) -> Vec<NetDev> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let v: Vec<u64> = rest
                .split_ascii_whitespace()
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            if v.len() < 12 {
                return None;
            }
            Some(NetDev {
                name: name.trim().to_string(),
                rx_bytes: v[0],
                rx_packets: v[1],
                rx_errors: v[2],
                rx_drops: v[3],
                tx_bytes: v[8],
                tx_packets: v[9],
                tx_errors: v[10],
                tx_drops: v[11],
            })
        })
        .collect()
}

/// A mounted file system worth reporting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub device: String,
    pub mount_point: String,
    pub fs_type: String,
}

/// Parses `/proc/mounts`, keeping disk-backed file systems (not proc, sysfs, tmpfs, ...), each
/// mount point once. Octal escapes (`\040` for a space) are decoded.
pub fn parse_mounts(text: &str) -> Vec<Mount> {
    const REAL: [&str; 8] = [
        "ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "zfs", "f2fs",
    ];
    let mut out: Vec<Mount> = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        if f.len() < 3 || !REAL.contains(&f[2]) {
            continue;
        }
        let mount_point = unescape(f[1]);
        if out.iter().any(|m| m.mount_point == mount_point) {
            continue;
        }
        out.push(Mount {
            device: unescape(f[0]),
            mount_point,
            fs_type: f[2].to_string(),
        });
    }
    out
}

/// Decodes the octal escapes (`\040`) the kernel writes in paths in `/proc/mounts` and
/// `mountinfo`.
pub(crate) fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The parts of `/proc/<pid>/stat` torc uses. Times are in clock ticks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidStat {
    pub pid: u32,
    pub comm: String,
    pub state: char,
    pub ppid: u32,
    pub utime: u64,
    pub stime: u64,
    /// CPU time of reaped children.
    pub cutime: u64,
    pub cstime: u64,
    /// Clock ticks after boot when the process started.
    pub start_time: u64,
    pub rss_pages: u64,
}

pub fn parse_pid_stat(text: &str) -> Option<PidStat> {
    // The command name may hold spaces and parentheses: it ends at the last ')'.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let comm = text.get(open + 1..close)?.to_string();
    let f: Vec<&str> = text.get(close + 1..)?.split_ascii_whitespace().collect();
    // f[0] is field 3 (state).
    let n = |field: usize| f.get(field - 3).and_then(|v| v.parse::<u64>().ok());
    Some(PidStat {
        pid,
        comm,
        state: f.first()?.chars().next()?,
        ppid: n(4)? as u32,
        utime: n(14)?,
        stime: n(15)?,
        cutime: n(16)?,
        cstime: n(17)?,
        start_time: n(22)?,
        rss_pages: n(24)?,
    })
}

/// Resident pages from `/proc/<pid>/statm` (its second field).
pub fn parse_statm_resident(text: &str) -> Option<u64> {
    text.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// Child pids from `/proc/<pid>/task/<tid>/children`: a list of pids separated by blanks
/// (also what a cgroup's `cgroup.procs` holds, one a line).
pub fn parse_children(text: &str) -> Vec<u32> {
    text.split_ascii_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

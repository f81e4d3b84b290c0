//! Pure parsers of the cgroup files a container's limits, OOMs and metrics are read from,
//! on both hierarchies: cgroup v1 (a mount per controller, as on this project's hybrid hosts,
//! where runc places containers) and cgroup v2 (one unified tree). Where to find a cgroup:
//! [`parse_cgroup_mounts`] (`/proc/self/mountinfo`) and [`parse_proc_cgroup`]
//! (`/proc/<pid>/cgroup`).
//!
//! | what | v1 | v2 |
//! |---|---|---|
//! | memory in use | `memory.usage_in_bytes` ([`parse_counter`]) | `memory.current` ([`parse_counter`]) |
//! | memory limit | `memory.limit_in_bytes` ([`parse_limit`]) | `memory.max` ([`parse_limit`]) |
//! | OOM kills | `memory.oom_control` ([`parse_oom_control`]) | `memory.events` ([`parse_memory_events`]) |
//! | cpu time | `cpuacct.usage` (ns, [`parse_counter`]), `cpuacct.stat` (ticks, [`parse_cpuacct_stat`]) | `cpu.stat` `usage_usec`, `user_usec`, `system_usec` ([`parse_cpu_stat`]) |
//! | throttling | `cpu.stat` ([`parse_cpu_stat`]) | `cpu.stat` ([`parse_cpu_stat`]) |
//! | processes | `pids.current` ([`parse_counter`]), `pids.max` ([`parse_limit`]), `cgroup.procs` ([`parse_cgroup_procs`]) | the same files |
//!
//! As for the rest of this crate: each takes the file's text, skips lines it cannot read,
//! and never panics.

/// A limit file's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// No limit: v2's `max`, or v1's "no limit" (the largest page count the kernel holds,
    /// e.g. `9223372036854771712` with 4 KiB pages).
    Max,
    Value(u64),
}

/// Values from here up mean "no limit" in a v1 `memory.limit_in_bytes`: the kernel writes
/// `PAGE_COUNTER_MAX` pages, a little under 2^63 bytes whatever the page size, and no machine
/// has 4 EiB of memory to limit.
const V1_NO_LIMIT: u64 = 1 << 62;

/// A file holding one number: `memory.usage_in_bytes`, `memory.current`, `cpuacct.usage`,
/// `pids.current`.
pub fn parse_counter(text: &str) -> Option<u64> {
    text.split_ascii_whitespace().next()?.parse().ok()
}

/// A limit: v2's `memory.max` and `pids.max` (`max` or a number), v1's `pids.max` (the same)
/// and `memory.limit_in_bytes` (a number, its "no limit" read as [`Limit::Max`]).
pub fn parse_limit(text: &str) -> Option<Limit> {
    match text.split_ascii_whitespace().next()? {
        "max" => Some(Limit::Max),
        n => {
            let n: u64 = n.parse().ok()?;
            Some(if n >= V1_NO_LIMIT {
                Limit::Max
            } else {
                Limit::Value(n)
            })
        }
    }
}

/// The `key value` lines of a flat-keyed file (`cpu.stat`, `memory.events`,
/// `memory.oom_control`, `cpuacct.stat`), skipping lines that are not that.
fn keyed(text: &str) -> impl Iterator<Item = (&str, u64)> {
    text.lines().filter_map(|line| {
        let mut it = line.split_ascii_whitespace();
        let (key, value) = (it.next()?, it.next()?);
        Some((key, value.parse().ok()?))
    })
}

/// v1 `memory.oom_control`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OomControl {
    /// Whether the cgroup is out of memory now (its tasks wait, when the OOM killer is off).
    pub under_oom: bool,
    /// Processes the kernel's OOM killer killed in this cgroup; `None` before Linux 4.13,
    /// whose file has no such line.
    pub oom_kill: Option<u64>,
}

/// v1 `memory.oom_control`: `oom_kill_disable 0`, `under_oom 0`, `oom_kill 1`.
pub fn parse_oom_control(text: &str) -> OomControl {
    let mut out = OomControl::default();
    for (key, value) in keyed(text) {
        match key {
            "under_oom" => out.under_oom = value != 0,
            "oom_kill" => out.oom_kill = Some(value),
            _ => {}
        }
    }
    out
}

/// v2 `memory.events`: how often the cgroup hit each memory boundary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryEvents {
    /// Reclaimed below `memory.low`.
    pub low: u64,
    /// Throttled over `memory.high`.
    pub high: u64,
    /// About to go over `memory.max`.
    pub max: u64,
    /// Allocations that failed at `memory.max` (the OOM killer was asked).
    pub oom: u64,
    /// Processes the OOM killer killed.
    pub oom_kill: u64,
}

/// v2 `memory.events` (and `memory.events.local`); keys it does not know are skipped.
pub fn parse_memory_events(text: &str) -> MemoryEvents {
    let mut out = MemoryEvents::default();
    for (key, value) in keyed(text) {
        match key {
            "low" => out.low = value,
            "high" => out.high = value,
            "max" => out.max = value,
            "oom" => out.oom = value,
            "oom_kill" => out.oom_kill = value,
            _ => {}
        }
    }
    out
}

/// `cpu.stat`, either hierarchy's. v1's (cpu controller) has only the throttling counters;
/// v2's also has the cgroup's cpu time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuStat {
    /// v2: all cpu time, in µs.
    pub usage_usec: Option<u64>,
    pub user_usec: Option<u64>,
    pub system_usec: Option<u64>,
    /// Quota periods in which the cgroup ran, and those in which it hit its quota.
    pub nr_periods: u64,
    pub nr_throttled: u64,
    /// Time spent throttled, in µs (v1 counts ns: converted).
    pub throttled_usec: u64,
}

/// `cpu.stat`: v1 `nr_periods`, `nr_throttled`, `throttled_time` (ns); v2 `usage_usec`,
/// `user_usec`, `system_usec`, `nr_periods`, `nr_throttled`, `throttled_usec`.
pub fn parse_cpu_stat(text: &str) -> CpuStat {
    let mut out = CpuStat::default();
    for (key, value) in keyed(text) {
        match key {
            "usage_usec" => out.usage_usec = Some(value),
            "user_usec" => out.user_usec = Some(value),
            "system_usec" => out.system_usec = Some(value),
            "nr_periods" => out.nr_periods = value,
            "nr_throttled" => out.nr_throttled = value,
            "throttled_usec" => out.throttled_usec = value,
            "throttled_time" => out.throttled_usec = value / 1_000,
            _ => {}
        }
    }
    out
}

/// v1 `cpuacct.stat`: user and system time in clock ticks (`USER_HZ`), the original's
/// `cgroup.cpuacct.stat.user/system`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuAcctStat {
    pub user: u64,
    pub system: u64,
}

/// v1 `cpuacct.stat`: `user N`, `system N`; `None` unless both are there.
pub fn parse_cpuacct_stat(text: &str) -> Option<CpuAcctStat> {
    let (mut user, mut system) = (None, None);
    for (key, value) in keyed(text) {
        match key {
            "user" => user = Some(value),
            "system" => system = Some(value),
            _ => {}
        }
    }
    Some(CpuAcctStat {
        user: user?,
        system: system?,
    })
}

/// `cgroup.procs` (v1 and v2): the pids in the cgroup, one a line.
pub fn parse_cgroup_procs(text: &str) -> Vec<u32> {
    crate::parse_children(text)
}

/// A mounted cgroup hierarchy, from `/proc/<pid>/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// Where it is mounted, e.g. `/sys/fs/cgroup/memory`.
    pub mount_point: String,
    /// The cgroup of the hierarchy that is mounted there (`/` unless a container sees a
    /// subtree).
    pub root: String,
    /// `None` for the v2 (unified) hierarchy; for v1, the controllers it carries (`cpu`,
    /// `cpuacct`, ...) and `name=<x>` for a named one.
    pub controllers: Option<Vec<String>>,
}

impl CgroupMount {
    pub fn is_v2(&self) -> bool {
        self.controllers.is_none()
    }

    /// Whether this v1 hierarchy carries `controller`.
    pub fn has_controller(&self, controller: &str) -> bool {
        (self.controllers.iter().flatten()).any(|c| c == controller)
    }
}

/// v1 controllers (Linux 6.x): what tells them from other super options in mountinfo.
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "blkio",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// The cgroup hierarchies in `/proc/<pid>/mountinfo` (`ID PARENT MAJ:MIN ROOT MOUNT_POINT
/// OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS`), in file order. Octal escapes in
/// paths (`\040`) are decoded.
pub fn parse_cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(root), Some(mount_point)) = (fields.get(3), fields.get(4)) else {
            continue;
        };
        if dash < 6 {
            continue;
        }
        let (Some(fs_type), Some(super_options)) = (fields.get(dash + 1), fields.get(dash + 3))
        else {
            continue;
        };
        let controllers = match *fs_type {
            "cgroup2" => None,
            "cgroup" => Some(
                super_options
                    .split(',')
                    .filter(|o| V1_CONTROLLERS.contains(o) || o.starts_with("name="))
                    .map(str::to_string)
                    .collect(),
            ),
            _ => continue,
        };
        out.push(CgroupMount {
            mount_point: crate::unescape(mount_point),
            root: crate::unescape(root),
            controllers,
        });
    }
    out
}

/// A line of `/proc/<pid>/cgroup`: `HIERARCHY-ID:CONTROLLERS:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcCgroup {
    /// 0 for the v2 hierarchy.
    pub hierarchy: u32,
    /// Empty for the v2 hierarchy; `name=systemd` for a named v1 one.
    pub controllers: Vec<String>,
    /// The cgroup, relative to the hierarchy's root, e.g. `/torc/torc/web.1a2b`.
    pub path: String,
}

/// `/proc/<pid>/cgroup`: the process's cgroup in each hierarchy. A path may hold `:`.
pub fn parse_proc_cgroup(text: &str) -> Vec<ProcCgroup> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let hierarchy = parts.next()?.parse().ok()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            if !path.starts_with('/') {
                return None;
            }
            Some(ProcCgroup {
                hierarchy,
                controllers: (controllers.split(','))
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
                path: path.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_lines_are_skipped() {
        assert_eq!(parse_counter(""), None);
        assert_eq!(parse_counter("-1\n"), None);
        assert_eq!(parse_limit("maximum\n"), None);
        assert_eq!(parse_limit("12 extra\n"), Some(Limit::Value(12)));
        let stat = parse_cpu_stat("nr_periods\nnr_throttled x\n\nnr_periods 5 7\nbogus 1\n");
        assert_eq!(
            stat,
            CpuStat {
                nr_periods: 5,
                ..Default::default()
            }
        );
        assert_eq!(
            parse_oom_control("oom_kill -1\nunder_oom 1\n").oom_kill,
            None
        );
        assert_eq!(parse_cpuacct_stat("user 1\n"), None);
        assert_eq!(parse_memory_events("oom_kill\n"), MemoryEvents::default());
        assert!(parse_cgroup_mounts("1 2 3\n - cgroup\n1 2 3 / /x rw - cgroup").is_empty());
        assert!(parse_proc_cgroup("x::/\n1:cpu\n2:cpu:relative\n").is_empty());
    }
}

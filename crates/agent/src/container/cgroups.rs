//! Where a container's cgroup is on this node, and what it says: its out-of-memory kills, its
//! processes, its cpu time and memory (design §6, "Metrics"). runc creates the cgroup at the
//! path the spec names (`/torc/<namespace>/<task id>`) in every hierarchy: one per controller
//! on cgroup v1 (this project's hybrid hosts: `cpu` and `cpuacct` may be separate mounts), one
//! tree on v2. The hierarchies are found once, from `/proc/self/mountinfo`.

use std::path::{Path, PathBuf};

use torc_procfs::cgroup::{self as parse, CgroupMount};

/// The mount points of the hierarchies a container's files are read from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hierarchies {
    /// v1 controllers' mount points.
    memory: Option<PathBuf>,
    cpuacct: Option<PathBuf>,
    cpu: Option<PathBuf>,
    pids: Option<PathBuf>,
    /// The v2 tree, when it carries controllers (a pure v2 host, not a hybrid one's
    /// controller-less `unified` mount).
    unified: Option<PathBuf>,
    /// Any v2 mount (a hybrid host's `unified`): where `cgroup.procs` is when no v1 `pids`.
    any_v2: Option<PathBuf>,
}

/// How a node's cgroups are laid out, in words (for the engine's note).
pub fn describe(h: &Hierarchies) -> &'static str {
    match (h.memory.is_some(), h.unified.is_some()) {
        (true, _) if h.any_v2.is_some() => "cgroup v1 (hybrid)",
        (true, _) => "cgroup v1",
        (false, true) => "cgroup v2",
        (false, false) => "no cgroup memory controller",
    }
}

impl Hierarchies {
    /// From `/proc/self/mountinfo`.
    pub fn detect() -> Hierarchies {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Hierarchies::from_mounts(&parse::parse_cgroup_mounts(&text))
    }

    pub fn from_mounts(mounts: &[CgroupMount]) -> Hierarchies {
        let v1 = |c: &str| {
            mounts
                .iter()
                .find(|m| m.has_controller(c))
                .map(|m| PathBuf::from(&m.mount_point))
        };
        let v2: Vec<&CgroupMount> = mounts.iter().filter(|m| m.is_v2()).collect();
        let unified = v2
            .iter()
            .find(|m| {
                Path::new(&m.mount_point)
                    .join("cgroup.controllers")
                    .exists()
                    && std::fs::read_to_string(Path::new(&m.mount_point).join("cgroup.controllers"))
                        .is_ok_and(|t| t.split_whitespace().any(|c| c == "memory"))
            })
            .map(|m| PathBuf::from(&m.mount_point));
        Hierarchies {
            memory: v1("memory"),
            cpuacct: v1("cpuacct"),
            cpu: v1("cpu"),
            pids: v1("pids"),
            unified,
            any_v2: v2.first().map(|m| PathBuf::from(&m.mount_point)),
        }
    }

    fn at(base: &Option<PathBuf>, cgroup: &Path, file: &str) -> Option<PathBuf> {
        let relative = cgroup.strip_prefix("/").unwrap_or(cgroup);
        Some(base.as_ref()?.join(relative).join(file))
    }

    /// How many processes the kernel's OOM killer killed in the cgroup (`None`: unreadable,
    /// e.g. the cgroup is gone).
    pub fn oom_kills(&self, cgroup: &Path) -> Option<u64> {
        if let Some(file) = Self::at(&self.memory, cgroup, "memory.oom_control") {
            return parse::parse_oom_control(&std::fs::read_to_string(file).ok()?).oom_kill;
        }
        let file = Self::at(&self.unified, cgroup, "memory.events")?;
        Some(parse::parse_memory_events(&std::fs::read_to_string(file).ok()?).oom_kill)
    }

    /// The processes in the cgroup.
    pub fn procs(&self, cgroup: &Path) -> Vec<u32> {
        let file = Self::at(&self.pids, cgroup, "cgroup.procs")
            .or_else(|| Self::at(&self.memory, cgroup, "cgroup.procs"))
            .or_else(|| Self::at(&self.unified, cgroup, "cgroup.procs"))
            .or_else(|| Self::at(&self.any_v2, cgroup, "cgroup.procs"));
        file.and_then(|f| std::fs::read_to_string(f).ok())
            .map(|t| parse::parse_cgroup_procs(&t))
            .unwrap_or_default()
    }

    /// Memory in use, in bytes.
    pub fn memory(&self, cgroup: &Path) -> Option<u64> {
        let file = Self::at(&self.memory, cgroup, "memory.usage_in_bytes")
            .or_else(|| Self::at(&self.unified, cgroup, "memory.current"))?;
        parse::parse_counter(&std::fs::read_to_string(file).ok()?)
    }

    /// User and system cpu time, in clock ticks (`USER_HZ`, as `/proc/PID/stat` counts).
    pub fn cpu_ticks(&self, cgroup: &Path, ticks_per_s: f64) -> Option<(u64, u64)> {
        if let Some(file) = Self::at(&self.cpuacct, cgroup, "cpuacct.stat") {
            let stat = parse::parse_cpuacct_stat(&std::fs::read_to_string(file).ok()?)?;
            return Some((stat.user, stat.system));
        }
        let file = Self::at(&self.unified, cgroup, "cpu.stat")?;
        let stat = parse::parse_cpu_stat(&std::fs::read_to_string(file).ok()?);
        let ticks = |usec: Option<u64>| (usec.unwrap_or(0) as f64 * ticks_per_s / 1e6) as u64;
        Some((ticks(stat.user_usec), ticks(stat.system_usec)))
    }

    /// The cpu controller's throttling counters (`nr_periods`, `nr_throttled`).
    pub fn throttling(&self, cgroup: &Path) -> Option<(u64, u64)> {
        let file = Self::at(&self.cpu, cgroup, "cpu.stat")
            .or_else(|| Self::at(&self.unified, cgroup, "cpu.stat"))?;
        let stat = parse::parse_cpu_stat(&std::fs::read_to_string(file).ok()?);
        Some((stat.nr_periods, stat.nr_throttled))
    }

    /// A container's usage for the metrics sampler: (user, system) ticks, memory bytes,
    /// processes. `None` once the cgroup is gone.
    pub fn usage(&self, cgroup: &Path, ticks_per_s: f64) -> Option<((u64, u64), u64, usize)> {
        let ticks = self.cpu_ticks(cgroup, ticks_per_s)?;
        Some((
            ticks,
            self.memory(cgroup).unwrap_or(0),
            self.procs(cgroup).len(),
        ))
    }

    /// Whether the memory controller accounts for swap (`memory.swap` can then be set).
    pub fn swap_accounted(&self) -> bool {
        match (&self.memory, &self.unified) {
            (Some(m), _) => m.join("memory.memsw.limit_in_bytes").exists(),
            (None, Some(_)) => true,
            (None, None) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_and_v2_hosts_are_told_apart() {
        let hybrid = "\
30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
31 25 0:27 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
32 25 0:28 / /sys/fs/cgroup/cpu rw,nosuid - cgroup cgroup rw,cpu
33 25 0:29 / /sys/fs/cgroup/cpuacct rw,nosuid - cgroup cgroup rw,cpuacct
34 25 0:30 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
";
        let h = Hierarchies::from_mounts(&parse::parse_cgroup_mounts(hybrid));
        assert_eq!(describe(&h), "cgroup v1 (hybrid)");
        let c = Path::new("/torc/ns/web.000001");
        assert_eq!(
            Hierarchies::at(&h.memory, c, "memory.oom_control").unwrap(),
            Path::new("/sys/fs/cgroup/memory/torc/ns/web.000001/memory.oom_control")
        );
        assert_eq!(
            Hierarchies::at(&h.cpuacct, c, "cpuacct.stat").unwrap(),
            Path::new("/sys/fs/cgroup/cpuacct/torc/ns/web.000001/cpuacct.stat")
        );
        let none = Hierarchies::from_mounts(&[]);
        assert_eq!(describe(&none), "no cgroup memory controller");
        assert_eq!(none.oom_kills(c), None);
        assert!(none.procs(c).is_empty());
    }
}

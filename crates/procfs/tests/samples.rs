//! The parsers against captured `/proc` files (`tests/data/`).

use torc_procfs::*;

fn data(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn stat() {
    let (cpu, cores) = parse_stat(&data("stat")).unwrap();
    assert_eq!(cores, 2);
    assert_eq!(
        (cpu.user, cpu.system, cpu.idle, cpu.iowait),
        (113643, 17045, 312227, 874)
    );
    assert!(parse_stat("garbage").is_none());
}

#[test]
fn meminfo() {
    let m = parse_meminfo(&data("meminfo"));
    assert!(m.total > 0 && m.available > 0 && m.available <= m.total);
    assert_eq!(parse_meminfo("MemTotal: x kB\nnonsense").total, 0);
}

#[test]
fn loadavg() {
    assert!(parse_loadavg(&data("loadavg")).is_some());
    assert_eq!(
        parse_loadavg("0.50 1.00 2.5 1/100 42"),
        Some([0.5, 1.0, 2.5])
    );
    assert_eq!(parse_loadavg("0.5"), None);
}

#[test]
fn diskstats_keep_whole_disks() {
    let d = parse_diskstats(&data("diskstats"));
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(
        d[0],
        DiskStat {
            device: "vda".into(),
            reads: 5000,
            read_sectors: 400000,
            writes: 2000,
            write_sectors: 160000
        }
    );
}

#[test]
fn net_dev() {
    let n = parse_net_dev(&data("net_dev"));
    let eth0 = n.iter().find(|i| i.name == "eth0").unwrap();
    assert_eq!(
        (
            eth0.rx_bytes,
            eth0.tx_bytes,
            eth0.rx_packets,
            eth0.tx_packets
        ),
        (114751724, 403945, 5590, 3662)
    );
    assert!(n.iter().any(|i| i.name == "lo"));
    assert!(parse_net_dev("eth9: 1 2 3").is_empty());
}

#[test]
fn mounts() {
    let m = parse_mounts(&data("mounts"));
    let points: Vec<&str> = m.iter().map(|m| m.mount_point.as_str()).collect();
    assert_eq!(points, ["/", "/var/lib/torc", "/mnt/with space"]);
}

#[test]
fn pid_stat_with_an_odd_name() {
    let s = parse_pid_stat(&data("pid_stat")).unwrap();
    assert_eq!(s.pid, 4242);
    assert_eq!(s.comm, "my (odd) name");
    assert_eq!(s.state, 'S');
    assert_eq!(
        (s.ppid, s.utime, s.stime, s.cutime, s.cstime),
        (1, 250, 75, 3, 2)
    );
    assert_eq!((s.start_time, s.rss_pages), (1000, 1234));
    assert_eq!(parse_statm_resident(&data("pid_statm")), Some(1234));
    assert!(parse_pid_stat("12 (x").is_none());
    assert!(parse_pid_stat("").is_none());
}

#[test]
fn children() {
    assert_eq!(parse_children("12 13 \n"), [12, 13]);
    assert!(parse_children("").is_empty());
}

mod cgroup {
    //! The cgroup parsers against v1 files captured on a hybrid host and v2 files in the
    //! kernel documentation's formats (`tests/data/cgroup-README.md` says which is which).

    use super::data;
    use torc_procfs::cgroup::*;

    #[test]
    fn v1_memory() {
        assert_eq!(
            parse_limit(&data("cgroup-v1/memory.limit_in_bytes")),
            Some(Limit::Value(64 << 20))
        );
        // The root's "no limit", 9223372036854771712 with 4 KiB pages.
        assert_eq!(
            parse_limit(&data("cgroup-v1/memory.limit_in_bytes.root")),
            Some(Limit::Max)
        );
        assert_eq!(
            parse_counter(&data("cgroup-v1/memory.usage_in_bytes.root")),
            Some(15_777_529_856)
        );
        let before = parse_oom_control(&data("cgroup-v1/memory.oom_control"));
        assert_eq!(
            before,
            OomControl {
                under_oom: false,
                oom_kill: Some(0)
            }
        );
        let after = parse_oom_control(&data("cgroup-v1/memory.oom_control.after-oom"));
        assert_eq!(after.oom_kill, Some(1));
        // Before Linux 4.13 the file has no `oom_kill` line: unknown, not zero.
        assert_eq!(
            parse_oom_control("oom_kill_disable 0\nunder_oom 1\n"),
            OomControl {
                under_oom: true,
                oom_kill: None
            }
        );
    }

    #[test]
    fn v1_cpu() {
        let stat = parse_cpu_stat(&data("cgroup-v1/cpu.stat"));
        assert_eq!(
            stat,
            CpuStat {
                usage_usec: None,
                user_usec: None,
                system_usec: None,
                nr_periods: 16,
                nr_throttled: 15,
                throttled_usec: 1_064_347,
            }
        );
        assert_eq!(
            parse_counter(&data("cgroup-v1/cpuacct.usage")),
            Some(313_843_267)
        );
        assert_eq!(
            parse_cpuacct_stat(&data("cgroup-v1/cpuacct.stat")),
            Some(CpuAcctStat {
                user: 31,
                system: 0
            })
        );
    }

    #[test]
    fn v1_pids() {
        assert_eq!(parse_counter(&data("cgroup-v1/pids.current")), Some(2));
        assert_eq!(
            parse_limit(&data("cgroup-v1/pids.max")),
            Some(Limit::Value(16))
        );
        assert_eq!(parse_limit("max\n"), Some(Limit::Max));
        assert_eq!(
            parse_cgroup_procs(&data("cgroup-v1/cgroup.procs")),
            [17059, 17060]
        );
    }

    #[test]
    fn v1_hierarchies_from_mountinfo() {
        let mounts = parse_cgroup_mounts(&data("cgroup-v1/mountinfo"));
        let points: Vec<&str> = mounts.iter().map(|m| m.mount_point.as_str()).collect();
        assert_eq!(
            points,
            [
                "/sys/fs/cgroup/cpu",
                "/sys/fs/cgroup/cpuacct",
                "/sys/fs/cgroup/cpuset",
                "/sys/fs/cgroup/memory",
                "/sys/fs/cgroup/devices",
                "/sys/fs/cgroup/freezer",
                "/sys/fs/cgroup/blkio",
                "/sys/fs/cgroup/pids",
                "/sys/fs/cgroup/systemd",
                "/sys/fs/cgroup/unified"
            ]
        );
        let find = |c: &str| {
            mounts
                .iter()
                .find(|m| m.has_controller(c))
                .map(|m| m.mount_point.as_str())
        };
        // cpu and cpuacct are separate mounts here.
        assert_eq!(find("cpu"), Some("/sys/fs/cgroup/cpu"));
        assert_eq!(find("cpuacct"), Some("/sys/fs/cgroup/cpuacct"));
        assert_eq!(find("memory"), Some("/sys/fs/cgroup/memory"));
        assert_eq!(find("name=systemd"), Some("/sys/fs/cgroup/systemd"));
        let unified = mounts.last().expect("unified");
        assert!(unified.is_v2() && !unified.has_controller("memory"));
        assert!(mounts.iter().all(|m| m.root == "/"));

        // A systemd host co-mounts cpu and cpuacct, with more super options.
        let comounted = parse_cgroup_mounts(
            "35 26 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:10 \
             - cgroup cgroup rw,cpu,cpuacct\n",
        );
        assert_eq!(
            comounted[0].controllers.as_deref(),
            Some(&["cpu".to_string(), "cpuacct".to_string()][..])
        );
    }

    #[test]
    fn v1_proc_cgroup() {
        let lines = parse_proc_cgroup(&data("cgroup-v1/proc-cgroup"));
        assert_eq!(lines.len(), 10);
        assert_eq!(lines[0].hierarchy, 9);
        assert_eq!(lines[0].controllers, ["name=systemd"]);
        let v2 = lines.last().expect("v2 line");
        assert_eq!(
            (v2.hierarchy, v2.controllers.len(), v2.path.as_str()),
            (0, 0, "/")
        );
        let runc = parse_proc_cgroup("4:memory:/torc/torc/web.1a:b\n");
        assert_eq!(runc[0].controllers, ["memory"]);
        assert_eq!(runc[0].path, "/torc/torc/web.1a:b", "a path may hold ':'");
    }

    #[test]
    fn v2_files() {
        assert_eq!(
            parse_counter(&data("cgroup-v2/memory.current")),
            Some(67_104_768)
        );
        assert_eq!(
            parse_limit(&data("cgroup-v2/memory.max")),
            Some(Limit::Value(64 << 20))
        );
        assert_eq!(
            parse_limit(&data("cgroup-v2/memory.max.unlimited")),
            Some(Limit::Max)
        );
        assert_eq!(
            parse_memory_events(&data("cgroup-v2/memory.events")),
            MemoryEvents {
                low: 0,
                high: 0,
                max: 154,
                oom: 1,
                oom_kill: 1
            }
        );
        assert_eq!(
            parse_cpu_stat(&data("cgroup-v2/cpu.stat")),
            CpuStat {
                usage_usec: Some(2_008_514),
                user_usec: Some(1_985_102),
                system_usec: Some(23_412),
                nr_periods: 41,
                nr_throttled: 39,
                throttled_usec: 2_013_402,
            }
        );
        // Without the cpu controller on v2 (this host's root), only the time keys.
        let root = parse_cpu_stat(&data("cgroup-v2/cpu.stat.unified-root"));
        assert_eq!(root.usage_usec, Some(69_750_180_273));
        assert_eq!((root.nr_periods, root.nr_throttled), (0, 0));
        assert_eq!(parse_counter(&data("cgroup-v2/pids.current")), Some(3));
        assert_eq!(parse_limit(&data("cgroup-v2/pids.max")), Some(Limit::Max));
        assert_eq!(
            parse_cgroup_procs(&data("cgroup-v2/cgroup.procs")),
            [4242, 4251, 4252]
        );
        let lines = parse_proc_cgroup(&data("cgroup-v2/proc-cgroup"));
        assert_eq!(lines.len(), 1);
        assert_eq!(
            (lines[0].hierarchy, lines[0].path.as_str()),
            (0, "/torc/torc/web.1a2b3c")
        );
        let mounts = parse_cgroup_mounts(&data("cgroup-v2/mountinfo"));
        assert_eq!(mounts.len(), 2);
        assert!(mounts.iter().all(|m| m.is_v2()));
        assert_eq!(mounts[0].mount_point, "/sys/fs/cgroup");
        assert_eq!(
            (mounts[1].mount_point.as_str(), mounts[1].root.as_str()),
            ("/mnt/my cgroup", "/torc")
        );
    }

    /// No text makes a cgroup parser panic: every prefix of every sample, and each with a
    /// byte replaced.
    #[test]
    fn no_input_panics() {
        let samples: Vec<String> = ["cgroup-v1", "cgroup-v2"]
            .iter()
            .flat_map(|dir| {
                std::fs::read_dir(format!("{}/tests/data/{dir}", env!("CARGO_MANIFEST_DIR")))
                    .expect("sample directory")
                    .map(|e| std::fs::read_to_string(e.expect("entry").path()).expect("text"))
            })
            .collect();
        assert!(samples.len() >= 20);
        let all = |t: &str| {
            let _ = parse_counter(t);
            let _ = parse_limit(t);
            let _ = parse_oom_control(t);
            let _ = parse_memory_events(t);
            let _ = parse_cpu_stat(t);
            let _ = parse_cpuacct_stat(t);
            let _ = parse_cgroup_procs(t);
            let _ = parse_cgroup_mounts(t);
            let _ = parse_proc_cgroup(t);
        };
        for text in &samples {
            for end in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
                all(&text[..end]);
                for replacement in ["-", " ", "\n", ":", "\\", "é", "99999999999999999999"] {
                    let mut t = text[..end].to_string();
                    t.push_str(replacement);
                    t.push_str(text.get(end + 1..).unwrap_or(""));
                    all(&t);
                }
            }
        }
    }
}

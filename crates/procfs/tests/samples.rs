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

//! The cost of capping and rotating a task's output (issue 21): a task writing 50 MB/s for
//! 10 s under a real `torc shim`, once with its stdout a plain file (no rotation, how torc
//! ran tasks before) and once through the shim's copier into 10 MiB files with 3 rotated
//! (`--logs`), and then both unpaced (as fast as the writer can: `dd` of 64 KiB blocks, 2 GB).
//!
//! Printed per run: the bytes the task wrote, its throughput, and the shim's CPU time (user +
//! system, its own threads: the copier's work), sampled from `/proc/<shim>/stat` every 50 ms
//! until it ends. The agent does not touch a task's output (the shim copies it), so its CPU is
//! the same with and without rotation; the writer's CPU is the same in both modes and not
//! counted.
//!
//! Run with `cargo bench -p torc --bench logs`. Prints figures; asserts nothing about speed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TORC: &str = env!("CARGO_BIN_EXE_torc");

/// Writes 64 KiB blocks of 100-byte lines at `rate` bytes/s for `secs` seconds.
const PACED: &str = r#"
import sys, time
rate, secs = int(sys.argv[1]), float(sys.argv[2])
line = b"x" * 99 + b"\n"
block = line * 655
out = sys.stdout.buffer
start = time.monotonic()
sent = 0
while True:
    now = time.monotonic() - start
    if now >= secs:
        break
    if sent > rate * now:
        time.sleep(0.001)
        continue
    out.write(block)
    out.flush()
    sent += len(block)
"#;

struct Run {
    bytes: u64,
    wall: Duration,
    shim_cpu: Duration,
}

/// The user + system time of `pid` itself (all its threads), from `/proc/<pid>/stat`.
fn cpu_of(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Some(Duration::from_millis(ticks * 1000 / hz))
}

fn run(dir: &Path, rotate: bool, task: &[&str]) -> Run {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let mut cmd = Command::new(TORC);
    cmd.arg("shim")
        .arg("--status")
        .arg(dir.join("exit.json"))
        .arg("--grace-ms")
        .arg("1000");
    if rotate {
        cmd.arg("--logs")
            .arg(dir)
            .args(["--log-max-bytes", "10485760", "--log-files", "3"])
            .stdout(Stdio::null());
    } else {
        cmd.stdout(std::fs::File::create(dir.join("stdout")).unwrap());
    }
    cmd.arg("--").args(task).stderr(Stdio::null());
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let mut shim_cpu = Duration::ZERO;
    loop {
        if let Some(cpu) = cpu_of(pid) {
            shim_cpu = shim_cpu.max(cpu);
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let wall = start.elapsed();
    let bytes = if rotate {
        let base: u64 = std::fs::read_to_string(dir.join(".stdout.base"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        base + std::fs::metadata(dir.join("stdout")).unwrap().len()
    } else {
        std::fs::metadata(dir.join("stdout")).unwrap().len()
    };
    if rotate {
        let kept: u64 = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("stdout"))
            .map(|e| e.metadata().unwrap().len())
            .sum();
        assert!(kept <= 4 * 10 * 1048576, "{kept} bytes kept, over the cap");
    }
    Run {
        bytes,
        wall,
        shim_cpu,
    }
}

fn print(label: &str, r: &Run) {
    let secs = r.wall.as_secs_f64();
    println!(
        "{label:<34} {:>8.1} MB in {:>5.2} s = {:>7.1} MB/s; shim CPU {:>6} ms ({:>5.1}% of a core)",
        r.bytes as f64 / 1e6,
        secs,
        r.bytes as f64 / 1e6 / secs,
        r.shim_cpu.as_millis(),
        r.shim_cpu.as_secs_f64() / secs * 100.0
    );
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let paced = ["/usr/bin/python3", "-c", PACED, "50000000", "10"];
    let unpaced = ["dd", "if=/dev/zero", "bs=64k", "count=30000", "status=none"];
    println!("task output through `torc shim` ({TORC})");
    for (label, task) in [
        ("50 MB/s for 10 s", &paced[..]),
        ("unpaced (dd, 64 KiB blocks)", &unpaced[..]),
    ] {
        let plain = run(&dir.path().join("plain"), false, task);
        print(&format!("{label}, plain file"), &plain);
        let rotated = run(&dir.path().join("rotated"), true, task);
        print(&format!("{label}, rotated 10 MiB x 4"), &rotated);
    }
}

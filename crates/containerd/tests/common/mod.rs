//! What the containerd tests share: the root check, a private containerd in a temp dir with a
//! random namespace ([`Fixture`]; swept at the end, and by the daemon's drop on a panic), the
//! busybox test image (built once with umoci and skopeo from Debian's busybox-static, cached
//! under the target dir, imported with `ctr`), a minimal OCI spec, and the checks that a
//! container left nothing behind.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use torc_containerd::daemon::{Daemon, Layout, Swept, cgroup_parent};
use torc_containerd::{
    Client, ContainerId, Namespace, NewContainer, NewTask, OVERLAYFS, TaskIo, TaskStatus,
};

/// Whether this process is root (containerd needs it). If not, says so on one line, and the
/// test passes without doing anything.
pub fn root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        println!("skipped: needs root");
    }
    root
}

/// The peer programs the tests run; a missing one fails the test saying how to install it.
pub fn require_peers() {
    torc_test_utils::require_container_peers();
}

/// The name the test image has in containerd (the OCI archive's `ref.name`).
pub const IMAGE: &str = "torc/busybox:1";

/// A private containerd in a temp dir, a client in a random namespace, and the busybox image
/// imported there. Fields drop in order: the daemon (swept if still running) before the dir.
pub struct Fixture {
    pub client: Client,
    pub namespace: Namespace,
    pub daemon: Option<Daemon>,
    pub layout: Layout,
    pub dir: tempfile::TempDir,
    /// The image's top chain id: the parent of each container's snapshot.
    pub chain_id: String,
}

impl Fixture {
    pub async fn start() -> anyhow::Result<Fixture> {
        let mut f = Fixture::empty().await?;
        let archive = busybox_archive()?;
        let output = Command::new("ctr")
            .arg("-a")
            .arg(f.layout.socket())
            .args(["-n", f.namespace.as_str(), "images", "import"])
            .arg(&archive)
            .output()?;
        if !output.status.success() {
            bail!(
                "ctr images import {}: {}",
                archive.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        f.chain_id = top_chain_id(&f.client).await?;
        Ok(f)
    }

    /// A private containerd with no image (`chain_id` empty).
    pub async fn empty() -> anyhow::Result<Fixture> {
        let started = Instant::now();
        let torc_test_utils::Containerd {
            client,
            namespace,
            daemon,
            layout,
            dir,
        } = torc_test_utils::Containerd::start().await?;
        println!(
            "containerd {} answered after {} ms",
            daemon.as_ref().unwrap().version().version,
            started.elapsed().as_millis()
        );
        Ok(Fixture {
            client,
            namespace,
            daemon,
            layout,
            dir,
            chain_id: String::new(),
        })
    }

    /// The cgroup path the design gives a container: `/torc/<namespace>/<id>`.
    pub fn cgroup(&self, id: &ContainerId) -> String {
        format!("{}/{id}", cgroup_parent(&self.namespace))
    }

    /// `<dir>/<id>.stdout` and `.stderr`, created empty (the shim appends to existing files).
    pub fn output_files(&self, id: &ContainerId) -> anyhow::Result<(PathBuf, PathBuf)> {
        let stdout = self.dir.path().join(format!("{id}.stdout"));
        let stderr = self.dir.path().join(format!("{id}.stderr"));
        std::fs::write(&stdout, "")?;
        std::fs::write(&stderr, "")?;
        Ok((stdout, stderr))
    }

    /// A container of the busybox image running `args`, created as the agent will: the
    /// snapshot and the container record under a lease, then the task with its output in two
    /// files, then started. Returns the pid.
    pub async fn run(
        &self,
        id: &ContainerId,
        args: &[&str],
        memory: Option<u64>,
    ) -> anyhow::Result<u32> {
        self.run_image(IMAGE, &self.chain_id, id, args, memory)
            .await
    }

    /// [`Fixture::run`] for another image, whose top chain id is `chain_id`.
    pub async fn run_image(
        &self,
        image: &str,
        chain_id: &str,
        id: &ContainerId,
        args: &[&str],
        memory: Option<u64>,
    ) -> anyhow::Result<u32> {
        let (stdout, stderr) = self.output_files(id)?;
        let lease = self.client.create_lease(Duration::from_secs(3600)).await?;
        let leased = self.client.with_lease(&lease)?;
        let mounts = leased
            .prepare_snapshot(OVERLAYFS, id.as_str(), chain_id, HashMap::new())
            .await?;
        let spec = spec(id, args, &self.cgroup(id), memory);
        leased
            .create_container(&NewContainer {
                id: id.clone(),
                labels: HashMap::from([("torc.test".to_string(), "1".to_string())]),
                image: image.into(),
                spec_json: serde_json::to_vec(&spec)?,
                runc: self.layout.runc_options(),
                snapshotter: OVERLAYFS.into(),
                snapshot_key: id.to_string(),
            })
            .await?;
        self.client.delete_lease(&lease, false).await?;
        self.client
            .create_task(&NewTask {
                id: id.clone(),
                rootfs: mounts,
                io: TaskIo::Files { stdout, stderr },
                runc: Some(self.layout.runc_options()),
            })
            .await?;
        Ok(self.client.start_task(id).await?)
    }

    /// Asserts that nothing of container `id` is left: no task, container or snapshot in
    /// containerd, no runc state, no bundle, no cgroup, no shim.
    pub async fn assert_gone(&self, id: &ContainerId) -> anyhow::Result<()> {
        assert!(
            self.client.task(id).await?.is_none(),
            "{id}: a task is left"
        );
        assert!(
            self.client.container(id).await?.is_none(),
            "{id}: the container is left"
        );
        assert!(
            self.client
                .snapshot(OVERLAYFS, id.as_str())
                .await?
                .is_none(),
            "{id}: the snapshot is left"
        );
        let runc_state = self
            .layout
            .runc_root()
            .join(self.namespace.as_str())
            .join(id.as_str());
        assert!(!runc_state.exists(), "{} is left", runc_state.display());
        let bundle = self
            .layout
            .state()
            .join("io.containerd.runtime.v2.task")
            .join(self.namespace.as_str())
            .join(id.as_str());
        assert!(!bundle.exists(), "{} is left", bundle.display());
        let cgroups = cgroup_dirs(&self.cgroup(id));
        assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
        let shims = processes_naming(&format!("-id {id}"))
            .into_iter()
            .filter(|c| c.contains(self.layout.socket().to_str().unwrap()))
            .collect::<Vec<_>>();
        assert!(shims.is_empty(), "shims left: {shims:?}");
        let socket = self.shim_socket(id);
        assert!(
            !socket.exists(),
            "the shim's socket {} is left",
            socket.display()
        );
        Ok(())
    }

    /// Where the shim of container `id` listens: containerd 1.6 puts every shim's socket in
    /// `/run/containerd/s/`, named by the SHA-256 of `<containerd socket>/<namespace>/<id>`
    /// (`runtime/v2/shim.SocketAddress`). Only looked at, never touched.
    pub fn shim_socket(&self, id: &ContainerId) -> PathBuf {
        let key = format!("{}/{}/{id}", self.layout.socket().display(), self.namespace);
        Path::new("/run/containerd/s").join(format!("{:x}", Sha256::digest(key)))
    }

    /// Ends the daemon through a sweep that must find nothing left, and checks that no
    /// process of this daemon and no cgroup of the namespace is left.
    pub async fn finish(mut self) -> anyhow::Result<Swept> {
        let daemon = self.daemon.take().expect("the daemon");
        let swept = daemon.sweep().await?;
        assert_eq!(
            (swept.killed, swept.removed),
            (0, 0),
            "the test left containers: {swept:?}"
        );
        let run = self.layout.run.to_str().unwrap().to_string();
        let left = processes_naming(&run);
        assert!(left.is_empty(), "processes left: {left:?}");
        let cgroups = cgroup_dirs(&cgroup_parent(&self.namespace));
        assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
        assert!(
            !self.layout.run.exists(),
            "{} is left",
            self.layout.run.display()
        );
        Ok(swept)
    }
}

/// A minimal OCI runtime spec, close to containerd's default one (what `ctr run` uses): new
/// pid, ipc, uts, mount and network namespaces, Docker's default capabilities, the usual
/// mounts and masked paths, and the given cgroup and memory limit (swap held to the same when
/// the host accounts for it).
pub fn spec(
    id: &ContainerId,
    args: &[&str],
    cgroup: &str,
    memory: Option<u64>,
) -> serde_json::Value {
    let caps = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
    ];
    let mut resources = serde_json::json!({"devices": [{"allow": false, "access": "rwm"}]});
    if let Some(limit) = memory {
        let mut memory = serde_json::json!({"limit": limit});
        let swap_accounted = Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
            .exists()
            || Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        if swap_accounted {
            memory["swap"] = serde_json::json!(limit);
        }
        resources["memory"] = memory;
    }
    serde_json::json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs"},
        "hostname": id.as_str(),
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}
        ],
        "linux": {
            "resources": resources,
            "cgroupsPath": cgroup,
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}],
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"],
            "readonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

/// The cgroup directories `relative` that exist, in every hierarchy.
pub fn cgroup_dirs(relative: &str) -> Vec<PathBuf> {
    let relative = relative.trim_start_matches('/');
    let base = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![base.join(relative)];
    for entry in std::fs::read_dir(base).into_iter().flatten().flatten() {
        dirs.push(entry.path().join(relative));
    }
    dirs.into_iter().filter(|d| d.is_dir()).collect()
}

/// The OOM killer's count in a container's cgroup: v1 `memory.oom_control`, v2
/// `memory.events` (`oom_kill N` in both).
pub fn oom_kills(cgroup: &str) -> Option<u64> {
    let relative = cgroup.trim_start_matches('/');
    let files = [
        Path::new("/sys/fs/cgroup/memory")
            .join(relative)
            .join("memory.oom_control"),
        Path::new("/sys/fs/cgroup")
            .join(relative)
            .join("memory.events"),
    ];
    files.iter().find_map(|file| {
        let text = std::fs::read_to_string(file).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
    })
}

/// Command lines (spaces for NULs) of live processes that contain `needle`.
pub fn processes_naming(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()) && n != me)
        })
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let zombie = stat
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (!zombie && text.contains(needle)).then_some(text)
        })
        .collect()
}

/// Whether process `pid` is alive (not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Waits until `what` holds, checking every few milliseconds, for at most `timeout`.
pub async fn wait_for<F: FnMut() -> bool>(timeout: Duration, what: &str, mut check: F) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The status of a task, `None` when it has none.
pub async fn status(client: &Client, id: &ContainerId) -> Option<TaskStatus> {
    client.task(id).await.unwrap().map(|t| t.status)
}

/// The image's top chain id, from what containerd holds: its manifest's config's `diff_ids`
/// (`chain_0 = diff_0`, `chain_i = sha256(chain_{i-1} + " " + diff_i)`).
async fn top_chain_id(client: &Client) -> anyhow::Result<String> {
    use torc_containerd::proto::containerd::services::images::v1::GetImageRequest;
    let image = client
        .images_api()
        .get(GetImageRequest { name: IMAGE.into() })
        .await?
        .into_inner()
        .image
        .context("no image")?;
    let target = image.target.context("no target")?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&read_blob(client, &target.digest).await?)?;
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .context("manifest without config")?;
    let config: serde_json::Value =
        serde_json::from_slice(&read_blob(client, config_digest).await?)?;
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array()
        .context("config without diff_ids")?;
    let mut chain = String::new();
    for diff in diff_ids {
        let diff = diff.as_str().context("a diff id")?;
        chain = if chain.is_empty() {
            diff.to_string()
        } else {
            format!("sha256:{:x}", Sha256::digest(format!("{chain} {diff}")))
        };
    }
    Ok(chain)
}

async fn read_blob(client: &Client, digest: &str) -> anyhow::Result<Vec<u8>> {
    use torc_containerd::proto::containerd::services::content::v1::ReadContentRequest;
    let mut stream = client
        .content_api()
        .read(ReadContentRequest {
            digest: digest.into(),
            offset: 0,
            size: 0,
        })
        .await?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await? {
        bytes.extend_from_slice(&chunk.data);
    }
    Ok(bytes)
}

/// The busybox image as an OCI archive named [`IMAGE`] (`torc_test_utils::TestImage`).
pub fn busybox_archive() -> anyhow::Result<PathBuf> {
    Ok(torc_test_utils::TestImage::get(Path::new(env!("CARGO_TARGET_TMPDIR")))?.oci_archive)
}

//! The OCI runtime spec of a container task (design §6, "Spec mapping"): a pure function of
//! the task, its image's config and what the agent prepared on the node (paths, the network
//! namespace, the cgroup, the user). The base is containerd's default Unix spec, the one
//! `ctr run` uses: new pid, ipc, uts, mount and network namespaces, Docker's 14 default
//! capabilities, masked and read-only `/proc` paths, `/dev` as a tmpfs, `/sys` read-only,
//! `RLIMIT_NOFILE` 1024. Everything else comes from the task.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use torc_types::{ContainerSpec, NetworkMode, TaskSpec};

/// Docker's default capability set (without the `CAP_` prefix).
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

const MASKED_PATHS: [&str; 10] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];

const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// System calls an unprivileged container may not make (torc's seccomp filter: everything
/// else is allowed, these fail with EPERM). They load or change the kernel, its clock, its
/// keyrings and swap, make or enter namespaces and mounts (the container has its own already),
/// open files by handle (the "shocker" escape), or are the usual ways into kernel exploits
/// (`bpf`, `userfaultfd`, `perf_event_open`). Most also need a capability the container lacks:
/// the filter is the second wall, as Docker's default profile is (torc's list is its own,
/// shorter: an allow list is the next step).
pub const DENIED_SYSCALLS: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "init_module",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "move_mount",
    "name_to_handle_at",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "quotactl",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "swapoff",
    "swapon",
    "umount2",
    "unshare",
    "userfaultfd",
];

/// Denied as well on x86 (they do not exist on other architectures).
const DENIED_X86: &[&str] = &["ioperm", "iopl"];

/// The seccomp filter of an unprivileged container: [`DENIED_SYSCALLS`] fail with EPERM, for
/// every ABI of the host's architecture (a 64-bit process can make 32-bit calls).
pub fn seccomp() -> Value {
    let (architectures, extra): (&[&str], &[&str]) = match std::env::consts::ARCH {
        "x86_64" => (
            &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            DENIED_X86,
        ),
        "x86" => (&["SCMP_ARCH_X86"], DENIED_X86),
        "aarch64" => (&["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"], &[]),
        _ => (&[], &[]),
    };
    let names: Vec<&str> = DENIED_SYSCALLS.iter().chain(extra).copied().collect();
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": architectures,
        "syscalls": [{"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    })
}

/// The `PATH` a container gets when its image sets none (Docker's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where the task's data directory (`$DATA_DIR`) appears in the container.
pub const DATA_DIR: &str = "/torc/data";
/// Where the task's secrets directory (`$TORC_SECRETS_DIR`) appears, read-only.
pub const SECRETS_DIR: &str = "/torc/secrets";
/// Where the rack CA's certificate appears, read-only, when the rack has one.
pub const CA_FILE: &str = "/torc/ca.pem";

/// The network namespace a container joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Netns {
    /// An existing namespace by path: the node's (`/proc/<agent>/ns/net`) or the task's own
    /// rack namespace (`/proc/<agent>/fd/<fd>`).
    Path(String),
    /// A new, empty one (loopback only).
    New,
}

/// A host device in the container (`--device`), as the node has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDevice {
    pub container_path: String,
    /// `c` or `b`.
    pub kind: char,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub permissions: String,
}

/// A bind mount from the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: String,
    pub destination: String,
    pub read_only: bool,
}

/// What the agent prepared for the container: everything of the spec that is not the task's
/// own keys or the image's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The final process: argv, environment (`KEY=VALUE`), working directory.
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    /// uid, gid and additional gids.
    pub user: (u32, u32, Vec<u32>),
    pub network: Netns,
    pub cgroup: String,
    pub hostname: String,
    /// The sandbox's `resolv.conf`, `hosts` and `hostname` files, the data and secrets
    /// directories, the CA, then the task's volumes (host paths resolved), in order.
    pub binds: Vec<Bind>,
    pub devices: Vec<HostDevice>,
    /// Whether the host accounts for swap in the memory cgroup (`memory.swap` is then set to
    /// the limit: no swap).
    pub swap_accounted: bool,
    /// The capabilities the agent itself may grant (its bounding set, bit `n` for capability
    /// number `n`): runc cannot give a container one the agent lacks.
    pub capability_bound: u64,
}

/// Why a task cannot become a container process.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error(
        "image {image} has no Entrypoint or Cmd, and the task gives no command: say what to run"
    )]
    NothingToRun { image: String },
}

/// The container's argv: `command` (if any) replaces the image's Entrypoint, `args` (if any)
/// replace its Cmd, as `docker run --entrypoint CMD IMAGE ARGS…` does.
pub fn argv(
    spec: &TaskSpec,
    container: &ContainerSpec,
    entrypoint: &[String],
    cmd: &[String],
    fill: impl Fn(&str) -> String,
) -> Result<Vec<String>, SpecError> {
    let mut out: Vec<String> = if spec.command.is_empty() {
        entrypoint.to_vec()
    } else {
        vec![fill(&spec.command)]
    };
    if spec.args.is_empty() {
        // A new entrypoint drops the image's Cmd, as Docker does.
        if spec.command.is_empty() {
            out.extend(cmd.iter().cloned());
        }
    } else {
        out.extend(spec.args.iter().map(|a| fill(a)));
    }
    if out.is_empty() {
        return Err(SpecError::NothingToRun {
            image: container.image.to_string(),
        });
    }
    Ok(out)
}

/// The environment: the image's, then `PATH` if it has none, then `over` (the task's and the
/// agent's variables) replacing by key, in that order.
pub fn environment(image: &[String], over: &BTreeMap<String, String>) -> Vec<String> {
    let mut out: Vec<(String, String)> = image
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.clone(), String::new()),
        })
        .collect();
    if !out.iter().any(|(k, _)| k == "PATH") {
        out.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
    }
    for (k, v) in over {
        match out.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v.clone(),
            None => out.push((k.clone(), v.clone())),
        }
    }
    out.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The capability set as Docker makes it: the default set, less `--cap-drop` (`ALL`: none
/// left), plus `--cap-add` (`ALL`: every one); every capability for a privileged task.
pub fn capabilities(spec: &TaskSpec, container: &ContainerSpec, bound: u64) -> Vec<String> {
    let options = &container.options;
    let all = || {
        torc_types::CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .collect()
    };
    let mut set: Vec<String> = if spec.privileged {
        all()
    } else if options.cap_drop.iter().any(|c| c.name().is_none()) {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .filter(|c| !options.cap_drop.iter().any(|d| d.name() == Some(**c)))
            .map(|c| c.to_string())
            .collect()
    };
    for cap in &options.cap_add {
        match cap.name() {
            None => set = all(),
            Some(name) if !set.iter().any(|c| c == name) => set.push(name.to_string()),
            Some(_) => {}
        }
    }
    // Only what the agent holds (`CAPABILITIES` is in the kernel's numbering): an agent under a
    // reduced bounding set (in a container, or systemd's `CapabilityBoundingSet`) still starts
    // privileged containers, with everything it has.
    set.retain(|c| {
        torc_types::CAPABILITIES
            .iter()
            .position(|k| k == c)
            .is_some_and(|n| n < 64 && bound >> n & 1 == 1)
    });
    set.into_iter().map(|c| format!("CAP_{c}")).collect()
}

/// The calling process's capability bounding set (`CapBnd` in `/proc/self/status`); all bits
/// when it cannot be read.
pub fn own_capability_bound() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("CapBnd:"))?;
            u64::from_str_radix(line.trim_start_matches("CapBnd:").trim(), 16).ok()
        })
        .unwrap_or(u64::MAX)
}

/// The OCI runtime spec (JSON) of the container.
pub fn build(spec: &TaskSpec, container: &ContainerSpec, p: &Prepared) -> Value {
    let options = &container.options;
    let caps = capabilities(spec, container, p.capability_bound);
    let mut rlimits = vec![json!({"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024})];
    for u in &options.ulimits {
        rlimits.retain(|r| r["type"] != u.oci_type());
        rlimits.push(json!({"type": u.oci_type(), "hard": u.hard, "soft": u.soft}));
    }
    let process = json!({
        "terminal": false,
        "user": {"uid": p.user.0, "gid": p.user.1, "additionalGids": p.user.2},
        "args": p.args,
        "env": p.env,
        "cwd": p.cwd,
        "capabilities": {
            "bounding": caps, "effective": caps, "permitted": caps,
        },
        "rlimits": rlimits,
        "noNewPrivileges": options.no_new_privileges,
    });

    let shm_size = options.shm_size.unwrap_or(64 << 20);
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
    ];
    if spec.privileged {
        // The node's devices, as they are.
        mounts.push(json!({"destination": "/dev", "type": "bind", "source": "/dev", "options": ["rbind", "rw", "nosuid"]}));
    } else {
        mounts.push(json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}));
        mounts.push(json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}));
    }
    if options.host_ipc {
        mounts.push(json!({"destination": "/dev/shm", "type": "bind", "source": "/dev/shm", "options": ["rbind", "rw"]}));
    } else {
        mounts.push(json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", format!("size={shm_size}")]}));
        mounts.push(json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}));
    }
    let sys_mode = if spec.privileged { "rw" } else { "ro" };
    mounts.push(json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", sys_mode]}));
    for b in &p.binds {
        let mode = if b.read_only { "ro" } else { "rw" };
        mounts.push(json!({"destination": b.destination, "type": "bind", "source": b.source, "options": ["rbind", mode]}));
    }
    for t in &options.tmpfs {
        let mut opts = vec!["nosuid".to_string(), "nodev".to_string()];
        opts.extend(t.options.iter().cloned());
        mounts.push(
            json!({"destination": t.path, "type": "tmpfs", "source": "tmpfs", "options": opts}),
        );
    }

    let mut namespaces = Vec::new();
    if !options.host_pid {
        namespaces.push(json!({"type": "pid"}));
    }
    if !options.host_ipc {
        namespaces.push(json!({"type": "ipc"}));
    }
    if !options.host_uts {
        namespaces.push(json!({"type": "uts"}));
    }
    namespaces.push(json!({"type": "mount"}));
    namespaces.push(match &p.network {
        Netns::Path(path) => json!({"type": "network", "path": path}),
        Netns::New => json!({"type": "network"}),
    });

    let mut resources = serde_json::Map::new();
    let mut device_rules = vec![json!({"allow": spec.privileged, "access": "rwm"})];
    if !spec.privileged {
        // What every container may use (containerd's default allow list).
        for (kind, major, minor) in [
            ("c", 1, 3),    // null
            ("c", 1, 5),    // zero
            ("c", 1, 7),    // full
            ("c", 1, 8),    // random
            ("c", 1, 9),    // urandom
            ("c", 5, 0),    // tty
            ("c", 5, 1),    // console
            ("c", 5, 2),    // ptmx
            ("c", 136, -1), // pts
        ] {
            let mut rule = json!({"allow": true, "type": kind, "major": major, "access": "rwm"});
            if minor >= 0 {
                rule["minor"] = json!(minor);
            }
            device_rules.push(rule);
        }
        for d in &p.devices {
            device_rules.push(json!({"allow": true, "type": d.kind.to_string(), "major": d.major, "minor": d.minor, "access": d.permissions}));
        }
    }
    resources.insert("devices".into(), Value::Array(device_rules));
    let mem = spec.resources.mem_mb;
    if mem > 0.0 {
        let limit = (mem * 1024.0 * 1024.0) as u64;
        let mut memory = json!({"limit": limit});
        if p.swap_accounted {
            memory["swap"] = json!(limit);
        }
        resources.insert("memory".into(), memory);
    }
    let cpus = spec.resources.cpus;
    if cpus > 0.0 {
        const PERIOD: u64 = 100_000;
        let quota = ((cpus * PERIOD as f64).round() as u64).max(1_000);
        resources.insert("cpu".into(), json!({"quota": quota, "period": PERIOD}));
    }

    let mut linux = json!({
        "resources": resources,
        "cgroupsPath": p.cgroup,
        "namespaces": namespaces,
    });
    if !spec.privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
        linux["seccomp"] = seccomp();
    }
    if !p.devices.is_empty() && !spec.privileged {
        linux["devices"] = Value::Array(
            p.devices
                .iter()
                .map(|d| json!({"path": d.container_path, "type": d.kind.to_string(), "major": d.major, "minor": d.minor, "fileMode": d.mode, "uid": 0, "gid": 0}))
                .collect(),
        );
    }
    if !options.sysctls.is_empty() {
        linux["sysctl"] = json!(options.sysctls);
    }

    let mut out = json!({
        "ociVersion": "1.0.2-dev",
        "process": process,
        "root": {"path": "rootfs", "readonly": options.read_only},
        "mounts": mounts,
        "linux": linux,
    });
    if !options.host_uts {
        out["hostname"] = json!(p.hostname);
    }
    out
}

/// Whether a network mode and the task's network agree on a namespace: the rack network needs
/// the task's own (the agent made it), the others the node's or a new one.
pub fn network_mode(spec: &TaskSpec, container: &ContainerSpec) -> NetworkMode {
    if spec.network == torc_types::TaskNetwork::Rack {
        NetworkMode::Rack
    } else if container.options.no_network {
        NetworkMode::None
    } else {
        NetworkMode::Host
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use torc_types::{ContainerOptions, ImageRef};

    fn task(command: &str, args: &[&str]) -> (TaskSpec, ContainerSpec) {
        let mut spec = TaskSpec::new("web".parse().unwrap(), command);
        spec.args = args.iter().map(|a| a.to_string()).collect();
        let container = ContainerSpec::new(ImageRef::parse("torc/busybox:1").unwrap());
        spec.container = Some(container.clone());
        (spec, container)
    }

    fn prepared() -> Prepared {
        Prepared {
            args: vec!["sh".into()],
            env: vec![format!("PATH={DEFAULT_PATH}")],
            cwd: "/".into(),
            user: (0, 0, vec![]),
            network: Netns::Path("/proc/42/ns/net".into()),
            cgroup: "/torc/torc/web.000001".into(),
            hostname: "web".into(),
            binds: vec![Bind {
                source: "/data/web".into(),
                destination: DATA_DIR.into(),
                read_only: false,
            }],
            devices: vec![],
            swap_accounted: true,
            capability_bound: u64::MAX,
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    /// The command replaces the entrypoint and drops the image's Cmd; args replace the Cmd and
    /// keep the entrypoint; neither runs the image's own; nothing at all is an error.
    #[test]
    fn argv_follows_docker() {
        let id = |s: &str| s.to_string();
        let (ep, cmd) = (strings(&["/entry"]), strings(&["serve", "--x"]));
        let (s, c) = task("", &[]);
        assert_eq!(
            argv(&s, &c, &ep, &cmd, id).unwrap(),
            strings(&["/entry", "serve", "--x"])
        );
        let (s, c) = task("", &["run", "$PORT"]);
        assert_eq!(
            argv(&s, &c, &ep, &cmd, |a| a.replace("$PORT", "31000")).unwrap(),
            strings(&["/entry", "run", "31000"])
        );
        let (s, c) = task("sh", &[]);
        assert_eq!(argv(&s, &c, &ep, &cmd, id).unwrap(), strings(&["sh"]));
        let (s, c) = task("sh", &["-c", "echo hi"]);
        assert_eq!(
            argv(&s, &c, &[], &cmd, id).unwrap(),
            strings(&["sh", "-c", "echo hi"])
        );
        let (s, c) = task("", &[]);
        assert_eq!(
            argv(&s, &c, &[], &[], id).unwrap_err().to_string(),
            "image docker.io/torc/busybox:1 has no Entrypoint or Cmd, and the task gives no \
             command: say what to run"
        );
    }

    #[test]
    fn environment_layers_image_then_task_with_a_default_path() {
        let over = BTreeMap::from([
            ("A".to_string(), "task".to_string()),
            ("PORT".to_string(), "31000".to_string()),
        ]);
        assert_eq!(
            environment(&strings(&["A=image", "B=image"]), &over),
            strings(&[
                &format!("PATH={DEFAULT_PATH}"),
                "A=task",
                "B=image",
                "PORT=31000"
            ])
        );
        assert_eq!(
            environment(&strings(&["PATH=/bin"]), &BTreeMap::new()),
            strings(&["PATH=/bin"])
        );
    }

    #[test]
    fn capabilities_add_drop_all_and_privileged() {
        let (mut s, mut c) = task("sh", &[]);
        assert_eq!(capabilities(&s, &c, u64::MAX).len(), 14);
        c.options.cap_add = vec![torc_types::Capability::parse("NET_ADMIN").unwrap()];
        c.options.cap_drop = vec![torc_types::Capability::parse("MKNOD").unwrap()];
        let caps = capabilities(&s, &c, u64::MAX);
        assert!(caps.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!caps.contains(&"CAP_MKNOD".to_string()));
        c.options.cap_drop = vec![torc_types::Capability::ALL];
        assert_eq!(
            capabilities(&s, &c, u64::MAX),
            vec!["CAP_NET_ADMIN".to_string()]
        );
        s.privileged = true;
        assert_eq!(
            capabilities(&s, &c, u64::MAX).len(),
            torc_types::CAPABILITIES.len()
        );
        // An agent without CAP_SYS_RESOURCE (24) in its bounding set grants everything else.
        let without = capabilities(&s, &c, !(1 << 24));
        assert_eq!(without.len(), torc_types::CAPABILITIES.len() - 1);
        assert!(!without.contains(&"CAP_SYS_RESOURCE".to_string()));
        assert_eq!(torc_types::CAPABILITIES[24], "SYS_RESOURCE");
    }

    /// The limits, namespaces, masked paths and mounts of a plain task; what `privileged`,
    /// `--ipc/--pid/--uts=host`, `--read-only`, `--ulimit` and `--sysctl` change.
    #[test]
    fn spec_maps_limits_namespaces_and_options() {
        let (mut s, c) = task("sh", &[]);
        s.resources.mem_mb = 64.0;
        s.resources.cpus = 0.5;
        let v = build(&s, &c, &prepared());
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(v["linux"]["resources"]["memory"]["swap"], 64 << 20);
        assert_eq!(v["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(v["linux"]["resources"]["cpu"]["period"], 100_000);
        assert_eq!(v["linux"]["cgroupsPath"], "/torc/torc/web.000001");
        assert_eq!(v["hostname"], "web");
        let ns = v["linux"]["namespaces"].as_array().unwrap();
        assert_eq!(ns.len(), 5);
        assert_eq!(ns[4], json!({"type": "network", "path": "/proc/42/ns/net"}));
        assert_eq!(v["linux"]["maskedPaths"].as_array().unwrap().len(), 10);
        assert_eq!(
            v["linux"]["resources"]["devices"][0],
            json!({"allow": false, "access": "rwm"})
        );
        let data = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == DATA_DIR)
            .unwrap();
        assert_eq!(data["options"], json!(["rbind", "rw"]));
        assert_eq!(v["root"]["readonly"], false);
        assert_eq!(v["process"]["noNewPrivileges"], false);

        let mut c2 = c.clone();
        c2.options = ContainerOptions {
            host_ipc: true,
            host_pid: true,
            host_uts: true,
            read_only: true,
            no_new_privileges: true,
            ulimits: vec![torc_types::Ulimit::parse("nofile=10:20").unwrap()],
            sysctls: BTreeMap::from([("net.ipv4.ip_forward".into(), "1".into())]),
            ..ContainerOptions::default()
        };
        let mut p = prepared();
        p.network = Netns::New;
        let v = build(&s, &c2, &p);
        let ns = v["linux"]["namespaces"].as_array().unwrap();
        assert_eq!(
            ns,
            &vec![json!({"type": "mount"}), json!({"type": "network"})]
        );
        assert!(v.get("hostname").is_none());
        assert_eq!(v["root"]["readonly"], true);
        assert_eq!(v["process"]["noNewPrivileges"], true);
        assert_eq!(
            v["process"]["rlimits"],
            json!([{"type": "RLIMIT_NOFILE", "hard": 20, "soft": 10}])
        );
        assert_eq!(v["linux"]["sysctl"]["net.ipv4.ip_forward"], "1");
        assert!(
            v["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["destination"] == "/dev/shm" && m["source"] == "/dev/shm")
        );

        assert_eq!(
            v["linux"]["seccomp"]["syscalls"][0]["action"], "SCMP_ACT_ERRNO",
            "an unprivileged container is filtered"
        );
        s.privileged = true;
        let v = build(&s, &c, &prepared());
        assert!(v["linux"].get("maskedPaths").is_none());
        assert!(
            v["linux"].get("seccomp").is_none(),
            "a privileged one is not"
        );
        assert_eq!(
            v["linux"]["resources"]["devices"],
            json!([{"allow": true, "access": "rwm"}])
        );
        let sys = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/sys")
            .unwrap();
        assert_eq!(sys["options"][3], "rw");
    }

    #[test]
    fn no_limits_means_no_resource_entries() {
        let (s, c) = task("sh", &[]);
        let mut p = prepared();
        p.swap_accounted = false;
        let v = build(&s, &c, &p);
        assert!(v["linux"]["resources"].get("memory").is_none());
        assert!(v["linux"]["resources"].get("cpu").is_none());
    }
}

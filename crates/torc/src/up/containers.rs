//! `torc up --containers`: one private containerd per rack (design `docs/design/containers.md`
//! §3), from `torc_containerd::daemon`, the code test racks use too.
//!
//! Its files: `root` under the rack's state directory (`<state>/containerd`: images survive a
//! restart of `torc up` with the same `--data-dir`), everything of one run under
//! `/run/torc/<slug>/containerd` (config, sockets, state, runc's state), and the root's path in
//! `/run/torc/<slug>/containerd.root`, so that the sweep of a killed rack finds both. It runs
//! outside every namespace: each container gets an explicit network namespace path from its
//! agent. Each agent works in the containerd namespace `torc-<slug>-<node>`.
//!
//! Invariants: the daemon of a rack is started, stopped and swept only by the process that
//! holds the rack's lock (`/run/torc/<slug>.lock`), so a running rack's containers are never
//! touched; it is swept (every task, container and snapshot removed, then the daemon ended)
//! before the rack's namespaces go, on Ctrl-C and after a kill alike.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::ValueEnum;
use torc_containerd::daemon::{self, Daemon, DaemonOptions, Layout};
use torc_net::NetnsPrefix;
use torc_net::rack::{RackLock, STATE_DIR};

/// `torc up --containers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Containers {
    /// A private containerd when this process may run one (root, with containerd and runc
    /// installed); else none, said in one line.
    Auto,
    /// A private containerd, or refuse to start.
    On,
    /// No containers: every agent gets `--containerd off`.
    Off,
}

/// Why this process cannot run a private containerd, if it cannot.
fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some(
            "torc up runs without root; containerd needs root (measured: containerd as a user \
             fails to chown its ttrpc socket)"
                .into(),
        );
    }
    // Root without CAP_SYS_ADMIN (a container's bounding set): containerd cannot mount its
    // snapshots.
    if !torc_net::netns::capable().unwrap_or(false) {
        return Some(
            "torc up runs without CAP_SYS_ADMIN and CAP_NET_ADMIN; containerd mounts snapshots \
             and containers join the nodes' network"
                .into(),
        );
    }
    daemon::check_programs(&DaemonOptions::default())
        .err()
        .map(|e| e.to_string())
}

/// Whether the rack gets a containerd: `on` without one is refused with the reason, `auto`
/// without one says why in one line.
pub fn decide(mode: Containers) -> anyhow::Result<bool> {
    if mode == Containers::Off {
        return Ok(false);
    }
    match (mode, unavailable()) {
        (_, None) => Ok(true),
        (Containers::On, Some(why)) => bail!("--containers on: {why}"),
        (_, Some(why)) => {
            println!("torc up: no containers on this rack: {why}");
            Ok(false)
        }
    }
}

fn slug_dir(prefix: &NetnsPrefix) -> PathBuf {
    Path::new(STATE_DIR).join(prefix.slug())
}

/// Where the rack's daemon keeps the path of its root, for the sweep after a kill.
fn root_record(prefix: &NetnsPrefix) -> PathBuf {
    slug_dir(prefix).join("containerd.root")
}

/// The files of the daemon of the rack `prefix` whose state is in `data_dir`.
fn layout_of(data_dir: &Path, prefix: &NetnsPrefix) -> Layout {
    Layout {
        root: data_dir.join("containerd"),
        run: slug_dir(prefix).join("containerd"),
    }
}

/// The rack's running containerd.
pub struct RackContainerd {
    daemon: Daemon,
    prefix: NetnsPrefix,
}

impl RackContainerd {
    /// Starts the daemon of the rack `prefix` (whose lock the caller holds) and waits until it
    /// answers.
    pub async fn start(data_dir: &Path, prefix: &NetnsPrefix) -> anyhow::Result<RackContainerd> {
        let layout = layout_of(data_dir, prefix);
        let dir = slug_dir(prefix);
        torc_tls::files::private_dir(&dir)?;
        let root = layout.root.to_str().with_context(|| {
            format!(
                "{}: the state directory's path is not UTF-8",
                layout.root.display()
            )
        })?;
        std::fs::write(root_record(prefix), format!("{root}\n"))
            .with_context(|| format!("cannot write {}", root_record(prefix).display()))?;
        let daemon = Daemon::start(layout, DaemonOptions::default())
            .await
            .context("cannot start the rack's containerd")?;
        Ok(RackContainerd {
            daemon,
            prefix: prefix.clone(),
        })
    }

    pub fn socket(&self) -> PathBuf {
        self.daemon.socket()
    }

    /// The containerd namespace of `node`'s agent: `torc-<slug>-<node>`.
    pub fn namespace(&self, node: &str) -> String {
        namespace_of(&self.prefix, node)
    }

    /// The line `torc up` prints about it.
    pub fn describe(&self) -> String {
        format!(
            "  containers:  containerd {} at {}; agents in {}<node>",
            self.daemon.version().version,
            self.socket().display(),
            self.prefix
        )
    }

    /// Removes every container its agents left, ends the daemon and removes its run files
    /// (the images stay under the state directory).
    pub async fn stop(self) -> anyhow::Result<()> {
        let prefix = self.prefix.clone();
        self.daemon
            .sweep()
            .await
            .context("cannot stop the rack's containerd")?;
        forget(&prefix);
        Ok(())
    }
}

/// `torc-<slug>-<node>`: the node's network namespace's name, also its agent's containerd
/// namespace.
pub fn namespace_of(prefix: &NetnsPrefix, node: &str) -> String {
    format!("{prefix}{node}")
}

/// Removes the rack's record and its directory under `/run/torc` once the daemon's run files
/// are gone.
fn forget(prefix: &NetnsPrefix) {
    let _ = std::fs::remove_file(root_record(prefix));
    let _ = std::fs::remove_dir(slug_dir(prefix));
}

/// Sweeps the containerd of every rack whose lock is free (killed racks), and of `own`'s
/// (whose lock the caller holds), before their namespaces are swept. Answers a line per rack
/// swept. Every rack is tried; the first failure is returned after that.
pub async fn sweep_killed(who: &str, own: Option<&RackLock>) -> anyhow::Result<Vec<String>> {
    let entries = match std::fs::read_dir(STATE_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {STATE_DIR}")),
    };
    let mut prefixes: Vec<NetnsPrefix> = entries
        .flatten()
        .filter(|e| {
            e.path().join("containerd").is_dir() || e.path().join("containerd.root").is_file()
        })
        .filter_map(|e| NetnsPrefix::new(e.file_name().to_str()?).ok())
        .collect();
    prefixes.sort();
    let (mut lines, mut first_error) = (Vec::new(), None);
    for prefix in prefixes {
        // The rack's lock is held (by the caller, or here for the sweep) while its daemon is
        // swept; dropped, not released: the namespaces' sweep takes it next.
        let _theirs = match own.filter(|l| *l.prefix() == prefix) {
            Some(_) => None,
            None => match RackLock::acquire(&prefix) {
                Ok(lock) => Some(lock),
                Err(torc_net::Error::Busy { .. }) => continue,
                Err(e) => {
                    first_error.get_or_insert(anyhow::Error::from(e));
                    continue;
                }
            },
        };
        match sweep_one(&prefix).await {
            Ok(line) => lines.push(format!("{who}: {line}")),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(lines),
    }
}

async fn sweep_one(prefix: &NetnsPrefix) -> anyhow::Result<String> {
    let run = slug_dir(prefix).join("containerd");
    // Without the record (a crash between the two writes), the daemon never ran with a root
    // of ours: one under `run` lets the sweep start it, and goes with `run`.
    let root = std::fs::read_to_string(root_record(prefix))
        .map(|text| PathBuf::from(text.trim_end()))
        .unwrap_or_else(|_| run.join("root"));
    let layout = Layout { root, run };
    let swept = daemon::sweep(&layout, &DaemonOptions::default())
        .await
        .with_context(|| format!("cannot sweep the containerd of the killed rack {prefix}*"))?;
    forget(prefix);
    Ok(format!(
        "removed the containerd of the killed rack {prefix}* ({} container(s) removed, {} of them running)",
        swept.removed, swept.killed
    ))
}

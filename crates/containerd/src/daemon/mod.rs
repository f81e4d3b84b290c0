//! A private containerd for `torc up` and test racks (design §3): its own root, state,
//! sockets, `opt` directory and runc state, from a generated config, so it never touches the
//! system's containerd (`/var/lib/containerd`, `/run/containerd/containerd.sock`,
//! `/opt/containerd`, `/run/containerd/runc`). What it cannot move in containerd 1.6: each
//! shim's socket, `/run/containerd/s/<sha256 of address, namespace and id>`, which the shim
//! makes and removes itself, also on SIGTERM (a SIGKILLed shim leaves its socket file; the
//! name never collides with another containerd's).
//!
//! [`Layout`] places the files: `root` (images, snapshots, metadata: may outlive the daemon)
//! and `run` (config, sockets, state, pid file, log, `opt`, runc's state: the daemon's life).
//! [`Daemon::start`] writes the config, spawns containerd in a process group of its own (a
//! terminal's Ctrl-C reaches the agents first, which stop their containers), and waits until
//! `Version` answers. [`Daemon::stop`] ends containerd only: shims and containers keep
//! running, as they do when containerd restarts. [`sweep`] ends everything a private
//! containerd ran, also after a crash: it attaches to the daemon, or starts it again on the
//! same layout (containerd then reconnects to live shims and cleans up after dead ones), kills
//! and removes every task, container and container snapshot in every namespace, removes their
//! empty cgroup directories ([`cgroup_parent`]), stops the daemon and removes `run`; when that
//! fails, it goes around containerd with runc and signals (`sweep.rs` says how). A [`Daemon`]
//! dropped without [`Daemon::stop`] or [`Daemon::sweep`] (an error path, a panicking test) is
//! swept.
//!
//! Invariants: a daemon is started only on a layout where no containerd answers (it would
//! take over the socket); a process is signalled only if its command line names this layout
//! (containerd: `--config <its config>`; a shim: `-address <its socket>`); `run` is removed
//! only when nothing is mounted below it; nothing in `/run/containerd` is written or removed
//! by this code.

mod layout;
mod process;
mod sweep;

pub use layout::{DaemonError, DaemonOptions, Layout, cgroup_parent, check_programs, which};
pub use process::Daemon;
pub use sweep::{Swept, remove_cgroups, sweep};

//! The rack's processes: `torc <role>` children of `torc up`, each optionally inside a node's
//! network namespace, told to stop (SIGTERM) when `torc up` dies, and stopped in order.

use std::fs::File;
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use torc_net::Netns;

pub struct Child {
    pub label: String,
    pub child: tokio::process::Child,
}

/// Starts `torc <args>` as a child that gets SIGTERM if we die, logging to `log`, inside the
/// namespace `netns` when one is given (entered between fork and exec, so the child and
/// everything it starts live there).
pub fn spawn(
    label: &str,
    args: &[String],
    log: &Path,
    netns: Option<&Netns>,
) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    let child = tokio::process::Command::from(command(&exe, args, log, netns)?)
        .spawn()
        .with_context(|| format!("cannot start the {label}"))?;
    Ok(Child {
        label: label.to_string(),
        child,
    })
}

/// Starts `program <args>` as [`spawn`] starts torc (SIGTERM if we die, `log`, `netns`), as a
/// `std` child: for children that must be killed and reaped in a `Drop` too (etcd members).
// Used by `etcd` only, itself used by its tests until issue 18 item 13 wires it.
#[cfg_attr(not(test), allow(dead_code))]
pub fn spawn_program(
    label: &str,
    program: &Path,
    args: &[String],
    log: &Path,
    netns: Option<&Netns>,
) -> anyhow::Result<std::process::Child> {
    command(program, args, log, netns)?
        .spawn()
        .with_context(|| format!("cannot start the {label} ({})", program.display()))
}

/// The command line of a child of `torc up`. `netns` must stay open until the command is
/// spawned (both callers spawn it before they return, while they borrow it).
fn command(
    program: &Path,
    args: &[String],
    log: &Path,
    netns: Option<&Netns>,
) -> anyhow::Result<std::process::Command> {
    let out = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = out.try_clone()?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let netns_fd = netns.map(|ns| ns.as_fd().as_raw_fd());
    // SAFETY: pre_exec runs between fork and exec; prctl and setns are async-signal-safe
    // system calls that allocate nothing, and the descriptor is open (borrowed from `netns`
    // by the caller, which spawns the command while it holds the borrow).
    unsafe {
        cmd.pre_exec(move || {
            // If `torc up` dies, its children are told to stop.
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
            if let Some(fd) = netns_fd {
                torc_net::netns::enter(BorrowedFd::borrow_raw(fd))?;
            }
            Ok(())
        });
    }
    Ok(cmd)
}

/// Stops agents first (they stop their tasks), then the controller; kills what lingers.
pub async fn stop(children: Vec<Child>) {
    let (controller, agents): (Vec<Child>, Vec<Child>) =
        children.into_iter().partition(|c| c.label == "controller");
    for group in [agents, controller] {
        for c in &group {
            if let Some(pid) = c.child.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        for mut c in group {
            match tokio::time::timeout(Duration::from_secs(15), c.child.wait()).await {
                Ok(_) => {}
                Err(_) => {
                    eprintln!("torc up: the {} did not stop in 15 s; killing it", c.label);
                    let _ = c.child.kill().await;
                }
            }
        }
    }
}

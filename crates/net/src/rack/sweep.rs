//! Sweeping what killed racks left behind: their named namespaces (and the processes still
//! inside them), their intent records and lock files, and the host's guard route once no rack
//! runs. A rack is swept only when its lock can be taken, so a running rack is never touched.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::netns::{self, Netns};
use crate::{Error, NetnsName, NetnsPrefix, Result};

use super::guard;
use super::lock::{self, RackLock};

/// How long processes left in a swept namespace get to stop after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long SIGKILLed processes get to go.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// What a sweep removed, and what it left because its rack runs.
#[derive(Debug, Default)]
pub struct Swept {
    /// The namespaces removed.
    pub namespaces: Vec<NetnsName>,
    /// How many processes were stopped inside them.
    pub processes: usize,
    /// Racks whose lock another process holds: running, left alone.
    pub busy: Vec<NetnsPrefix>,
    /// Whether the host's guard route was removed (no rack runs any more).
    pub guard_removed: bool,
}

/// Sweeps every rack of this machine whose lock is free, and the rack of `own` (whose lock the
/// caller holds: a rack restarting over its own leftovers). Then removes the guard route if no
/// rack's lock is held. Every rack is tried; the first failure is returned after that.
pub fn sweep(own: Option<&RackLock>) -> Result<Swept> {
    let mut prefixes: BTreeSet<NetnsPrefix> =
        netns::list(None)?.iter().map(NetnsName::prefix).collect();
    for slug in lock::known_slugs()? {
        prefixes.insert(NetnsPrefix::new(&slug)?);
    }
    let mut swept = Swept::default();
    let mut first_error = None;
    for prefix in prefixes {
        let outcome = if own.is_some_and(|l| *l.prefix() == prefix) {
            clear(&prefix)
        } else {
            match RackLock::acquire(&prefix) {
                Ok(theirs) => {
                    let cleared = clear(&prefix);
                    if cleared.is_ok() {
                        theirs.release();
                    }
                    cleared
                }
                Err(Error::Busy { .. }) => {
                    swept.busy.push(prefix);
                    continue;
                }
                Err(e) => Err(e),
            }
        };
        match outcome {
            Ok((names, processes)) => {
                swept.namespaces.extend(names);
                swept.processes += processes;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match guard::remove_if_unused() {
        Ok(removed) => swept.guard_removed = removed,
        Err(e) => {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(swept),
    }
}

/// Removes the rack `prefix` (whose lock the caller holds): stops the processes inside its
/// namespaces, deletes the namespaces and its intent record. Answers the namespaces removed and
/// how many processes were stopped.
pub(crate) fn clear(prefix: &NetnsPrefix) -> Result<(Vec<NetnsName>, usize)> {
    let names = netns::list(Some(prefix))?;
    let mut pids = Vec::new();
    for name in &names {
        // A name whose mount is gone is a plain file: nothing can be inside it.
        if let Ok(ns) = Netns::open_named(name) {
            pids.extend(netns::pids(&ns)?);
        }
    }
    let stopped = stop_processes(&pids);
    let removed = netns::sweep(prefix)?;
    lock::remove_record(prefix)?;
    Ok((removed, stopped))
}

/// SIGTERMs `pids`, waits for them to go (at most [`STOP_GRACE`]), SIGKILLs the rest and waits
/// for those. Answers how many there were.
pub(crate) fn stop_processes(pids: &[Pid]) -> usize {
    for pid in pids {
        let _ = kill(*pid, Signal::SIGTERM);
    }
    if !wait_gone(pids, STOP_GRACE) {
        for pid in pids {
            let _ = kill(*pid, Signal::SIGKILL);
        }
        wait_gone(pids, KILL_WAIT);
    }
    pids.len()
}

/// Waits until none of `pids` runs (gone, or a zombie waiting for its parent); answers whether
/// that happened within `timeout`.
fn wait_gone(pids: &[Pid], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if pids.iter().all(|pid| !running(*pid)) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn running(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

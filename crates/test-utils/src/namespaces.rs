//! A test rack on network namespaces: the same `torc_net::rack` code as `torc up` (plan, lock,
//! sweep, create, check, teardown), with a random slug, and a forwarder from the rack's free
//! loopback address to the controller's API, so that the test talks to the rack the way a user
//! of `torc up` does.

use std::net::SocketAddrV4;
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd};
use std::os::unix::process::CommandExt as _;
use std::process::Command;

use torc_net::rack::{self, Forward, Forwarders, Proto, RackLock, RackNet, RackPlan};
use torc_net::{Netns, NetnsPrefix};

/// Whether this process may build racks on namespaces (CAP_SYS_ADMIN and CAP_NET_ADMIN; CI
/// runs as root). If not, says `skipped: needs CAP_NET_ADMIN` on one line: a test that needs
/// namespaces then returns at once and passes.
pub fn namespaces_or_skip() -> bool {
    let capable = torc_net::netns::capable().unwrap_or(false);
    if !capable {
        println!("skipped: needs CAP_NET_ADMIN");
    }
    capable
}

/// A test rack's network: its namespaces and the API's forwarder. Stopped in this order.
pub(crate) struct Namespaces {
    forwarders: Option<Forwarders>,
    rack: Option<RackNet>,
}

impl Namespaces {
    /// Builds the standard layout with `compute` compute nodes under a random slug (after a
    /// sweep of what killed racks left), checks it, and forwards `api` on the host to the
    /// switch's rack address, same port.
    pub(crate) fn start(compute: usize, api: SocketAddrV4) -> anyhow::Result<Namespaces> {
        let prefix = NetnsPrefix::random();
        let lock = RackLock::acquire(&prefix)?;
        rack::sweep(Some(&lock))?;
        let plan = RackPlan::standard(prefix, compute)?;
        let switch = plan.switch_address;
        let rack = rack::create(plan, lock, "a torc-test-utils LocalRack")?;
        rack.check()?;
        let forwarders = Forwarders::start(
            rack.switch(),
            &[Forward {
                proto: Proto::Tcp,
                listen: api,
                target: SocketAddrV4::new(switch, api.port()),
            }],
        )?;
        Ok(Namespaces {
            forwarders: Some(forwarders),
            rack: Some(rack),
        })
    }

    pub(crate) fn rack(&self) -> &RackNet {
        self.rack.as_ref().expect("the rack runs until stopped")
    }

    pub(crate) fn stop(&mut self) {
        if let Some(forwarders) = self.forwarders.take() {
            forwarders.stop();
        }
        if let Some(rack) = self.rack.take()
            && let Err(e) = rack.teardown()
        {
            eprintln!("cannot tear down a test rack's network: {e}");
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Makes `cmd` start inside `ns` (entered between fork and exec). `ns` must stay open until
/// the command has started.
pub(crate) fn enter_in(cmd: &mut Command, ns: &Netns) {
    let fd = ns.as_fd().as_raw_fd();
    // SAFETY: pre_exec runs between fork and exec; setns is an async-signal-safe system call
    // that allocates nothing, and the caller keeps the descriptor open until the spawn.
    unsafe {
        cmd.pre_exec(move || torc_net::netns::enter(BorrowedFd::borrow_raw(fd)));
    }
}

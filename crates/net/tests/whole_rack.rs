//! `torc_net::rack` against the real kernel: a whole rack made from the standard plan under its
//! lock, checked, crossed from node to node through the switch, reached from the host through
//! forwarders, torn down; and a sweep that removes a killed rack's leftovers (stopping the
//! process inside) while it leaves a running rack alone. Needs CAP_SYS_ADMIN and CAP_NET_ADMIN
//! (CI runs as root); without them the test prints `skipped: needs CAP_NET_ADMIN` and passes.
//!
//! Every socket that reaches a rack address is made inside a namespace (a `NetnsDialer`); the
//! host talks only to 127.0.0.1 (the forwarder's listener). The rack is checked first.

mod common;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd};
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use common::{assert_host_clean, privileged, wait_until};
use torc_net::forward::NetnsDialer;
use torc_net::rack::{self, Forward, Forwarders, Proto, RackLock, RackPlan};
use torc_net::{Error, Netlink, NetnsPrefix, RouteKind, RouteProtocol, netns, observe};

const SOON: Duration = Duration::from_secs(10);

/// Whether the host's table holds the guard route.
async fn guard_present() -> bool {
    let host = Netlink::current().unwrap();
    observe::routes(&host, RouteProtocol::TORC)
        .await
        .unwrap()
        .iter()
        .any(|r| {
            r.kind == RouteKind::Blackhole
                && r.dst == Ipv4Addr::new(198, 18, 0, 0)
                && r.dst_len == 15
                && r.protocol == RouteProtocol::TORC
        })
}

/// A one-shot TCP server made inside a namespace: answers the peer's address it saw.
async fn peer_echo(dialer: &NetnsDialer, at: SocketAddr) {
    let socket = dialer.tcp_socket().await.unwrap();
    socket.bind(at).unwrap();
    let listener = socket.listen(4).unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, peer)) = listener.accept().await {
            let _ = stream.write_all(peer.ip().to_string().as_bytes()).await;
        }
    });
}

async fn read_all(mut stream: tokio::net::TcpStream) -> String {
    let mut text = String::new();
    tokio::time::timeout(SOON, stream.read_to_string(&mut text))
        .await
        .expect("an answer in time")
        .unwrap();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rack_is_made_checked_crossed_reached_and_removed_and_a_killed_ones_leftovers_are_swept()
{
    if !privileged() {
        return;
    }
    let prefix = NetnsPrefix::random();
    let lock = RackLock::acquire(&prefix).unwrap();
    let lock_file = lock.path().to_path_buf();
    let plan = RackPlan::standard(prefix.clone(), 2).unwrap();
    let built = rack::create(plan, lock, "the torc-net whole-rack test").unwrap();
    built.check().unwrap();
    assert_host_clean().await;
    assert!(
        guard_present().await,
        "the guard route is in the host's table"
    );
    assert!(rack::running().unwrap().contains(&prefix));
    let record = std::fs::read_to_string(rack::record_path(prefix.slug())).unwrap();
    assert!(
        record.contains(&format!("{prefix}bladerunner2")),
        "{record}"
    );
    // The lock is held: a second rack of this prefix is refused.
    assert!(matches!(
        RackLock::acquire(&prefix),
        Err(Error::Busy { .. })
    ));

    // bladerunner1 → bladerunner2 through the switch, without NAT.
    let node2 = Ipv4Addr::new(198, 18, 0, 22);
    let in_node2 = NetnsDialer::new(built.netns("bladerunner2").unwrap()).unwrap();
    peer_echo(&in_node2, SocketAddr::from((node2, 7000))).await;
    let from_node1 = NetnsDialer::new(built.netns("bladerunner1").unwrap()).unwrap();
    let stream = from_node1
        .connect_tcp(SocketAddr::from((node2, 7000)))
        .await
        .unwrap();
    assert_eq!(read_all(stream).await, "198.18.0.21");

    // The host through a forwarder on its loopback: the switch's address is the peer.
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = match listen.local_addr().unwrap() {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => unreachable!("bound on 127.0.0.1"),
    };
    drop(listen);
    let forwarders = Forwarders::start(
        built.switch(),
        &[Forward {
            proto: Proto::Tcp,
            listen: at,
            target: SocketAddrV4::new(node2, 7000),
        }],
    )
    .unwrap();
    let stream = tokio::net::TcpStream::connect(at).await.unwrap();
    assert_eq!(read_all(stream).await, "198.18.0.20");
    forwarders.stop();
    assert!(tokio::net::TcpStream::connect(at).await.is_err());

    // What a killed rack leaves: a namespace whose lock no one holds, a process inside it.
    let killed = NetnsPrefix::random();
    let left = netns::create_named(&killed.name("wedge").unwrap()).unwrap();
    let fd = left.as_fd().as_raw_fd();
    let mut inside = Command::new("sleep");
    inside.arg("300").stdin(Stdio::null());
    // SAFETY: setns is an async-signal-safe system call; `left` is open until the spawn.
    unsafe {
        inside.pre_exec(move || netns::enter(BorrowedFd::borrow_raw(fd)));
    }
    let mut sleeper = inside.spawn().unwrap();
    drop(left);
    let swept = rack::sweep(None).unwrap();
    assert!(
        (swept.namespaces.iter()).any(|n| n.as_str() == format!("{killed}wedge")),
        "{swept:?}"
    );
    assert!(swept.processes >= 1, "{swept:?}");
    assert!(swept.busy.contains(&prefix), "a running rack is left alone");
    assert!(!swept.guard_removed, "a rack runs: the guard stays");
    // The sweep waited for it to end: it only needs reaping.
    let deadline = std::time::Instant::now() + SOON;
    let status = loop {
        if let Some(status) = sleeper.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the process inside still runs"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(!status.success());
    built.check().unwrap();

    // Teardown: the namespaces, the record and the lock go; the guard too unless another
    // rack (another test's) runs.
    built.teardown().unwrap();
    assert_eq!(netns::list(Some(&prefix)).unwrap(), vec![]);
    assert!(!rack::record_path(prefix.slug()).exists());
    assert!(!lock_file.exists());
    wait_until("the guard route to go", SOON, || async {
        (!guard_present().await || !rack::running().unwrap().is_empty()).then_some(())
    })
    .await;
}

//! Batched UDP on Linux: `recvmmsg` takes up to [`BATCH`] queued datagrams in one system call
//! and `sendmmsg` sends their answers in one more, which roughly halves the server's CPU time
//! per answer under load (`bench/dns.sh`). With one datagram queued it costs what
//! `recv_from`/`send_to` cost.
//!
//! `recvmmsg` is nix's (safe: nix owns the headers and the address slots, the buffers are
//! borrowed for the call). `sendmmsg` stays raw libc, because nix's (0.30) reports how many
//! datagrams went out only through its result iterator, which reads each header's address
//! slot as if a datagram had been received into it (`MultiResults::next`: `assume_init`, then
//! `set_length`, which reads the address family). Headers used only to send never had those
//! slots written, so counting what was sent would read uninitialised memory; and sharing the
//! receive headers is worse, since nix's `sendmmsg` leaves them pointing at the caller's
//! addresses for the next `recvmmsg`. The count is needed: a send that fails part-way skips the
//! failed datagram and sends the rest. Moving the receive side to nix cost nothing measurable:
//! `bench/dns.sh` with 5 s passes, four runs each way alternating, on a shared and loaded
//! 2-core machine, gave 0.459 s of server CPU per 100,000 answers at peak rate before and
//! 0.426 s after (0.760 and 0.701 s at 40,000 queries/s), 1.15 times the no-DNS floor's
//! figure both times.
//!
//! Invariants (the `unsafe` of the send path relies on them):
//! - every send `mmsghdr` points at an `iovec` and an answer buffer of its own slot and at the
//!   peer's address in `replies`, none of which is moved or resized while `sendmmsg` runs;
//! - the kernel writes at most `RECV_BUF` bytes per datagram; a datagram larger than that
//!   (MSG_TRUNC) is dropped: no query is that long;
//! - a socket has one address family, so each receive slot's address length, which nix leaves
//!   as the kernel set it for the slot's last datagram, fits the next one's.

use std::{
    io::{self, IoSliceMut},
    mem::{size_of, zeroed},
    net::SocketAddr,
    os::fd::AsRawFd,
    ptr,
};

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrLike, SockaddrStorage, recvmmsg};
use tracing::debug;

use crate::{udp::WorkerState, udp_worker::UdpWorker};

/// Datagrams per system call.
const BATCH: usize = 32;
/// Receive buffer per datagram; queries are far smaller.
const RECV_BUF: usize = 4096;

/// What `recvmmsg` reported for one datagram.
struct Received {
    len: usize,
    truncated: bool,
    from: Option<SockaddrStorage>,
}

/// An answer to send: its slot and its peer's address, as the kernel gave it, with its length.
struct Reply {
    slot: usize,
    to: SockaddrStorage,
    to_len: libc::socklen_t,
}

/// The batched serving loop of one UDP thread.
pub(crate) fn serve(worker: &UdpWorker, state: &mut WorkerState) {
    let fd = worker.socket().as_raw_fd();
    let mut recv: Box<[[u8; RECV_BUF]; BATCH]> = vec![[0; RECV_BUF]; BATCH]
        .into_boxed_slice()
        .try_into()
        .expect("BATCH buffers");
    let mut out: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(1500)).collect();
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut received: Vec<Received> = Vec::with_capacity(BATCH);
    let mut replies: Vec<Reply> = Vec::with_capacity(BATCH);
    let mut send_iovecs: Vec<libc::iovec> = Vec::with_capacity(BATCH);
    let mut send_headers: Vec<libc::mmsghdr> = Vec::with_capacity(BATCH);
    loop {
        received.clear();
        let mut iovs = recv.each_mut().map(|buf| [IoSliceMut::new(buf)]);
        let r = recvmmsg(
            fd,
            &mut headers,
            iovs.iter_mut(),
            MsgFlags::MSG_WAITFORONE,
            None,
        )
        .map(|msgs| {
            received.extend(msgs.map(|m| Received {
                len: m.bytes,
                truncated: m.flags.contains(MsgFlags::MSG_TRUNC),
                from: m.address,
            }))
        });
        if worker.stopping() {
            return;
        }
        if let Err(e) = r {
            worker.receive_error(&io::Error::from(e));
            continue;
        }

        replies.clear();
        state.tick();
        for (slot, m) in received.iter().enumerate() {
            if m.truncated || m.len > RECV_BUF {
                worker.count_dropped();
                continue;
            }
            let Some((peer, to, to_len)) = m.from.and_then(peer) else {
                worker.count_dropped();
                continue;
            };
            if worker.handle(&recv[slot][..m.len], peer, state, &mut out[slot]) {
                replies.push(Reply { slot, to, to_len });
            }
        }
        if replies.is_empty() {
            continue;
        }

        send_iovecs.clear();
        send_headers.clear();
        for reply in &replies {
            let out = &mut out[reply.slot];
            send_iovecs.push(libc::iovec {
                iov_base: out.as_mut_ptr().cast(),
                iov_len: out.len(),
            });
        }
        for (reply, iov) in replies.iter().zip(&mut send_iovecs) {
            // SAFETY: all-zero bytes are a valid `mmsghdr`.
            let mut header: libc::mmsghdr = unsafe { zeroed() };
            header.msg_hdr.msg_name = reply.to.as_ptr().cast_mut().cast();
            header.msg_hdr.msg_namelen = reply.to_len;
            header.msg_hdr.msg_iov = ptr::from_mut(iov);
            header.msg_hdr.msg_iovlen = 1;
            send_headers.push(header);
        }
        let mut sent = 0;
        while sent < send_headers.len() {
            let remaining = &mut send_headers[sent..];
            // SAFETY: every header points at a live iovec, answer buffer and address (see the
            // module invariants); the kernel only reads them.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    remaining.as_mut_ptr(),
                    remaining.len() as libc::c_uint,
                    0,
                )
            };
            match usize::try_from(n) {
                Ok(0) => break,
                Ok(n) => sent += n,
                Err(_) => {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    // The datagram at `sent` failed (e.g. its client is gone): skip it.
                    debug!(error = %e, "UDP send failed");
                    sent += 1;
                }
            }
        }
    }
}

/// The sender of a datagram as a `SocketAddr`, and its address as the kernel gave it with the
/// length of its family's struct (to send the answer back); `None` for a family other than
/// IPv4 and IPv6.
fn peer(from: SockaddrStorage) -> Option<(SocketAddr, SockaddrStorage, libc::socklen_t)> {
    if let Some(v4) = from.as_sockaddr_in() {
        return Some((
            SocketAddr::from(*v4),
            from,
            size_of::<libc::sockaddr_in>() as _,
        ));
    }
    let v6 = from.as_sockaddr_in6()?;
    Some((
        SocketAddr::from(*v6),
        from,
        size_of::<libc::sockaddr_in6>() as _,
    ))
}

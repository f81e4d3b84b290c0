//! Batched UDP on Linux: `recvmmsg` takes up to [`BATCH`] queued datagrams in one system call
//! and `sendmmsg` sends their answers in one more, which roughly halves the server's CPU time
//! per answer under load (`bench/dns.sh`). With one datagram queued it costs what
//! `recv_from`/`send_to` cost.
//!
//! Invariants (the `unsafe` below relies on them):
//! - every `mmsghdr` points at an `iovec` and a `sockaddr_storage` of its own slot, all owned by
//!   [`Slots`], which is not moved or resized while a system call runs;
//! - the kernel writes at most `RECV_BUF` bytes per datagram and at most
//!   `size_of::<sockaddr_storage>()` bytes of address; we read only `msg_len` and `msg_namelen`
//!   of them;
//! - a datagram larger than `RECV_BUF` (MSG_TRUNC) is dropped: no query is that long.

use std::{
    io,
    mem::{size_of, zeroed},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::AsRawFd,
    ptr,
};

use tracing::debug;

use crate::{udp::WorkerState, udp_worker::UdpWorker};

/// Datagrams per system call.
const BATCH: usize = 32;
/// Receive buffer per datagram; queries are far smaller.
const RECV_BUF: usize = 4096;

struct Slots {
    recv: Vec<[u8; RECV_BUF]>,
    out: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_storage>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
}

impl Slots {
    fn new() -> Self {
        Self {
            recv: vec![[0; RECV_BUF]; BATCH],
            out: (0..BATCH).map(|_| Vec::with_capacity(1500)).collect(),
            // SAFETY: all-zero bytes are a valid value of these plain C structs.
            addrs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            iovecs: Vec::with_capacity(BATCH),
            headers: Vec::with_capacity(BATCH),
        }
    }

    /// Points headers at the receive buffers and address slots.
    fn prepare_recv(&mut self) {
        self.iovecs.clear();
        self.headers.clear();
        for (buf, addr) in self.recv.iter_mut().zip(&mut self.addrs) {
            self.iovecs.push(libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: RECV_BUF,
            });
            // SAFETY: all-zero bytes are a valid `mmsghdr`.
            let mut header: libc::mmsghdr = unsafe { zeroed() };
            header.msg_hdr.msg_name = ptr::from_mut(addr).cast();
            header.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            self.headers.push(header);
        }
        // Only now, with `iovecs` complete, take pointers into it.
        for (header, iov) in self.headers.iter_mut().zip(&mut self.iovecs) {
            header.msg_hdr.msg_iov = ptr::from_mut(iov);
            header.msg_hdr.msg_iovlen = 1;
        }
    }
}

/// The batched serving loop of one UDP thread.
pub(crate) fn serve(worker: &UdpWorker, state: &mut WorkerState) {
    let fd = worker.socket().as_raw_fd();
    let mut slots = Slots::new();
    // (slot, address length) of each answer to send.
    let mut replies: Vec<(usize, libc::socklen_t)> = Vec::with_capacity(BATCH);
    let mut send_iovecs: Vec<libc::iovec> = Vec::with_capacity(BATCH);
    let mut send_headers: Vec<libc::mmsghdr> = Vec::with_capacity(BATCH);
    loop {
        slots.prepare_recv();
        // SAFETY: see the module invariants; `headers` holds BATCH initialised entries.
        let received = unsafe {
            libc::recvmmsg(
                fd,
                slots.headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                ptr::null_mut(),
            )
        };
        if worker.stopping() {
            return;
        }
        let Ok(received) = usize::try_from(received) else {
            worker.receive_error(&io::Error::last_os_error());
            continue;
        };

        replies.clear();
        state.tick();
        for slot in 0..received.min(BATCH) {
            let header = &slots.headers[slot];
            let len = header.msg_len as usize;
            let namelen = header.msg_hdr.msg_namelen;
            if header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len > RECV_BUF {
                worker.count_dropped();
                continue;
            }
            let Some(peer) = socket_addr(&slots.addrs[slot], namelen) else {
                worker.count_dropped();
                continue;
            };
            let packet = &slots.recv[slot][..len];
            if worker.handle(packet, peer, state, &mut slots.out[slot]) {
                replies.push((slot, namelen));
            }
        }
        if replies.is_empty() {
            continue;
        }

        send_iovecs.clear();
        send_headers.clear();
        for &(slot, _) in &replies {
            let out = &mut slots.out[slot];
            send_iovecs.push(libc::iovec {
                iov_base: out.as_mut_ptr().cast(),
                iov_len: out.len(),
            });
        }
        for (&(slot, namelen), iov) in replies.iter().zip(&mut send_iovecs) {
            // SAFETY: all-zero bytes are a valid `mmsghdr`.
            let mut header: libc::mmsghdr = unsafe { zeroed() };
            header.msg_hdr.msg_name = ptr::from_mut(&mut slots.addrs[slot]).cast();
            header.msg_hdr.msg_namelen = namelen;
            header.msg_hdr.msg_iov = ptr::from_mut(iov);
            header.msg_hdr.msg_iovlen = 1;
            send_headers.push(header);
        }
        let mut sent = 0;
        while sent < send_headers.len() {
            let remaining = &mut send_headers[sent..];
            // SAFETY: every header points at a live iovec, answer buffer and address.
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

/// The sender's address as written by the kernel.
fn socket_addr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a `sockaddr_in`, and the storage is
            // large enough and suitably aligned for any socket address.
            let sin = unsafe { &*ptr::from_ref(storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddrV4::new(ip, u16::from_be(sin.sin_port)).into())
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for `sockaddr_in6`.
            let sin6 = unsafe { &*ptr::from_ref(storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(
                SocketAddrV6::new(
                    ip,
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )
                .into(),
            )
        }
        _ => None,
    }
}

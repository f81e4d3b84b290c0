//! Forwarding names outside the rack's zones to upstream resolvers.
//!
//! Not a caching resolver: every forwarded query goes upstream, and the upstream caches.
//! Upstreams are tried in order. Each is asked over UDP from a fresh socket with a fresh random
//! ID (spoofing needs both port and ID); a truncated UDP answer is asked again over TCP when the
//! client itself came over TCP (a UDP client gets the truncated answer and retries over TCP).
//!
//! Invariants: an upstream answer is accepted only if it comes from the upstream's address (the
//! socket is connected), carries our ID and echoes the question; it goes back to the client with
//! the client's ID, AA cleared and RA set.

use std::{
    hash::{BuildHasher, RandomState},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
    time::{Instant, timeout, timeout_at},
};
use tracing::debug;

use crate::wire::{self, FLAG_AA, FLAG_RA, FLAG_TC, HEADER_LEN};

#[derive(Debug)]
pub(crate) struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    ids: RandomState,
    counter: AtomicU64,
}

impl Forwarder {
    pub(crate) fn new(upstreams: Vec<SocketAddr>, timeout: Duration) -> Self {
        Self {
            upstreams,
            timeout,
            ids: RandomState::new(),
            counter: AtomicU64::new(0),
        }
    }

    /// A 16-bit ID nobody can predict: SipHash with a random key over a counter.
    fn next_id(&self) -> u16 {
        self.ids
            .hash_one(self.counter.fetch_add(1, Ordering::Relaxed)) as u16
    }

    /// Asks the upstreams; `None` when none answered in time (the caller answers SERVFAIL).
    /// `question_len` is the length of the query's question section.
    pub(crate) async fn query(
        &self,
        packet: &[u8],
        question_len: usize,
        client_tcp: bool,
    ) -> Option<Vec<u8>> {
        let client_id = packet.get(..2)?;
        let client_id = [client_id[0], client_id[1]];
        let question = packet.get(HEADER_LEN..HEADER_LEN + question_len)?;
        let mut request = packet.to_vec();
        for &upstream in &self.upstreams {
            let id = self.next_id();
            request[0..2].copy_from_slice(&id.to_be_bytes());
            let mut answer = match self.udp(upstream, &request, id, question).await {
                Ok(answer) => answer,
                Err(e) => {
                    debug!(%upstream, error = %e, "upstream did not answer over UDP");
                    continue;
                }
            };
            if client_tcp && answer[2] & FLAG_TC != 0 {
                answer = match self.tcp(upstream, &request, id, question).await {
                    Ok(answer) => answer,
                    Err(e) => {
                        debug!(%upstream, error = %e, "upstream did not answer over TCP");
                        continue;
                    }
                };
            }
            answer[0..2].copy_from_slice(&client_id);
            answer[2] &= !FLAG_AA;
            answer[3] |= FLAG_RA;
            return Some(answer);
        }
        None
    }

    async fn udp(
        &self,
        upstream: SocketAddr,
        request: &[u8],
        id: u16,
        question: &[u8],
    ) -> std::io::Result<Vec<u8>> {
        let local: SocketAddr = if upstream.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local).await?;
        socket.connect(upstream).await?;
        socket.send(request).await?;
        let deadline = Instant::now() + self.timeout;
        let mut buf = vec![0; 65_535];
        loop {
            let n = timeout_at(deadline, socket.recv(&mut buf))
                .await
                .map_err(|_| std::io::ErrorKind::TimedOut)??;
            // Anything else is a stray or forged datagram: keep waiting for ours.
            if wire::answers_query(&buf[..n], id, question) {
                buf.truncate(n);
                return Ok(buf);
            }
        }
    }

    async fn tcp(
        &self,
        upstream: SocketAddr,
        request: &[u8],
        id: u16,
        question: &[u8],
    ) -> std::io::Result<Vec<u8>> {
        let exchange = async {
            let mut stream = TcpStream::connect(upstream).await?;
            let len = u16::try_from(request.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
            let mut frame = len.to_be_bytes().to_vec();
            frame.extend_from_slice(request);
            stream.write_all(&frame).await?;
            let len = stream.read_u16().await?;
            let mut answer = vec![0; usize::from(len)];
            stream.read_exact(&mut answer).await?;
            if wire::answers_query(&answer, id, question) {
                Ok(answer)
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "upstream answered another question",
                ))
            }
        };
        timeout(self.timeout, exchange)
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)?
    }
}

//! The web UI's DNS lookup box: one query to the rack's DNS server (UDP), its answer as
//! zone-file lines. A client of the DNS protocol only (hickory's message codec); the server is
//! whatever runs as the rack's `dns` service.

/// The answer to a lookup made through the rack's DNS server (the UI's lookup box).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Lookup {
    pub server: String,
    pub name: String,
    pub record_type: String,
    pub rcode: String,
    pub authoritative: bool,
    pub answers: Vec<String>,
    pub authority: Vec<String>,
    pub elapsed_ms: f64,
}

/// Why a lookup has no answer: the question is not one DNS can ask (the caller's to fix), or
/// the server did not answer it.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("name {name:?}: {source}")]
    BadName {
        name: String,
        #[source]
        source: hickory_proto::ProtoError,
    },
    #[error("record type {rtype:?} is not one DNS knows")]
    UnknownType { rtype: String },
    #[error("cannot encode the query: {0}")]
    Encode(#[source] hickory_proto::ProtoError),
    #[error("cannot open a UDP socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("cannot send to {server}: {source}")]
    Send {
        server: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer from {server} within 2 s")]
    NoAnswer { server: std::net::SocketAddr },
    #[error("{server}: {source}")]
    Receive {
        server: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("unreadable answer from {server}: {source}")]
    Unreadable {
        server: std::net::SocketAddr,
        #[source]
        source: hickory_proto::serialize::binary::DecodeError,
    },
}

impl LookupError {
    /// The question was not one DNS can ask: the caller's mistake, not the server's.
    pub fn is_bad_question(&self) -> bool {
        matches!(
            self,
            LookupError::BadName { .. } | LookupError::UnknownType { .. }
        )
    }
}

/// Asks `server` (UDP) for `name`/`rtype` and returns the answer as zone-file lines.
pub async fn lookup(
    server: std::net::SocketAddr,
    name: &str,
    rtype: &str,
) -> Result<Lookup, LookupError> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};
    let qname = Name::from_str_relaxed(name).map_err(|source| LookupError::BadName {
        name: name.to_string(),
        source,
    })?;
    let qtype: RecordType =
        rtype
            .to_ascii_uppercase()
            .parse()
            .map_err(|_| LookupError::UnknownType {
                rtype: rtype.to_string(),
            })?;
    let id = (torc_types::now_millis() & 0xffff) as u16;
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(qname, qtype));
    let bytes = msg.to_vec().map_err(LookupError::Encode)?;
    let bind = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(LookupError::Socket)?;
    let start = std::time::Instant::now();
    socket
        .send_to(&bytes, server)
        .await
        .map_err(|source| LookupError::Send { server, source })?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(2), socket.recv(&mut buf))
        .await
        .map_err(|_| LookupError::NoAnswer { server })?
        .map_err(|source| LookupError::Receive { server, source })?;
    let answer = Message::from_vec(&buf[..n])
        .map_err(|source| LookupError::Unreadable { server, source })?;
    Ok(Lookup {
        server: server.to_string(),
        name: name.to_string(),
        record_type: qtype.to_string(),
        rcode: match u16::from(answer.metadata.response_code) {
            0 => "NOERROR".to_string(),
            1 => "FORMERR".to_string(),
            2 => "SERVFAIL".to_string(),
            3 => "NXDOMAIN".to_string(),
            4 => "NOTIMP".to_string(),
            5 => "REFUSED".to_string(),
            other => format!("RCODE{other}"),
        },
        authoritative: answer.metadata.authoritative,
        answers: answer.answers.iter().map(|r| r.to_string()).collect(),
        authority: answer.authorities.iter().map(|r| r.to_string()).collect(),
        elapsed_ms: start.elapsed().as_secs_f64() * 1000.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A question DNS cannot ask is refused before anything is sent, as the caller's mistake.
    #[tokio::test]
    async fn a_bad_question_is_the_callers() {
        let server: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
        let e = lookup(server, "example.", "NOPE").await.unwrap_err();
        assert!(
            matches!(&e, LookupError::UnknownType { rtype } if rtype == "NOPE"),
            "{e:?}"
        );
        assert!(e.is_bad_question());
        assert_eq!(e.to_string(), "record type \"NOPE\" is not one DNS knows");
        let long = "a".repeat(64);
        let e = lookup(server, &long, "A").await.unwrap_err();
        assert!(matches!(&e, LookupError::BadName { .. }), "{e:?}");
        assert!(e.is_bad_question());
    }
}

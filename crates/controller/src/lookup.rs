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

/// Asks `server` (UDP) for `name`/`rtype` and returns the answer as zone-file lines.
pub async fn lookup(
    server: std::net::SocketAddr,
    name: &str,
    rtype: &str,
) -> Result<Lookup, String> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};
    let qname = Name::from_str_relaxed(name).map_err(|e| format!("name {name:?}: {e}"))?;
    let qtype: RecordType = rtype
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| format!("record type {rtype:?} is not one DNS knows"))?;
    let id = (torc_types::now_millis() & 0xffff) as u16;
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(qname, qtype));
    let bytes = msg.to_vec().map_err(|e| e.to_string())?;
    let bind = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| e.to_string())?;
    let start = std::time::Instant::now();
    socket
        .send_to(&bytes, server)
        .await
        .map_err(|e| format!("cannot send to {server}: {e}"))?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(2), socket.recv(&mut buf))
        .await
        .map_err(|_| format!("no answer from {server} within 2 s"))?
        .map_err(|e| format!("{server}: {e}"))?;
    let answer = Message::from_vec(&buf[..n])
        .map_err(|e| format!("unreadable answer from {server}: {e}"))?;
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

//! Accepting the `:authority` that gRPC clients built from a URL send.
//!
//! `etcdctl endpoint status --endpoints http://127.0.0.1:2379` (grpc-go with
//! a `passthrough:///http://127.0.0.1:2379` target) sends the whole URL as
//! the HTTP/2 `:authority`. etcd's grpc-go server ignores it; the `h2` crate
//! under tonic checks it is a URI authority and resets the stream with
//! PROTOCOL_ERROR before any of our code runs, and it has no option to relax
//! that. So each connection's inbound bytes pass through [`AuthorityFix`],
//! which rewrites such a value in HEADERS frames, keeping its length
//! (`http://127.0.0.1:2379` → `http---127.0.0.1:2379`), before h2 reads it.
//! Nothing in torc kv uses the authority.
//!
//! The length is kept because the client's HPACK encoder may have added the
//! value to its dynamic table: h2's decoder then stores the rewritten value,
//! and equal lengths keep both tables' sizes, hence evictions and indexes,
//! in step. The rewritten literal is sent without Huffman coding.
//!
//! Invariants: every other byte passes through unchanged and in order; a
//! header block that is split over CONTINUATION frames, does not parse, or
//! would outgrow the default frame size is passed through as it is (h2 then
//! judges it as before). Memory is bounded: only a HEADERS frame no larger
//! than [`MAX_FRAME_BYTES`] is ever held back whole; a frame that claims to
//! be larger is handed on from its first byte, so h2 refuses it (GOAWAY
//! FRAME_SIZE_ERROR) before its payload arrives, and CONTINUATION frames are
//! never held back (h2 bounds a header list by its own settings).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client connection preface, which precedes the first frame.
const PREFACE_BYTES: usize = 24;
const FRAME_HEADER_BYTES: usize = 9;
const FRAME_HEADERS: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// The largest frame the server accepts: HTTP/2's default
/// SETTINGS_MAX_FRAME_SIZE, which the server never raises (it sets it to
/// this, see `crate::conn`). So at most one frame of this size is ever held
/// back here.
pub(crate) const MAX_FRAME_BYTES: usize = 16_384;
/// `:authority` in HPACK's static table.
const AUTHORITY_INDEX: u64 = 1;

/// Where the inbound byte stream is.
#[derive(Clone, Copy, Debug)]
enum Position {
    /// Inside the connection preface; this many bytes of it are left.
    Preface(usize),
    /// At the start of a frame.
    FrameStart,
    /// Inside a frame passed through; this many payload bytes are left.
    Payload(usize),
}

/// A connection whose inbound HTTP/2 HEADERS frames get a URL `:authority`
/// rewritten into an authority (see the module comment). Writes pass
/// straight through.
pub(crate) struct AuthorityFix<IO> {
    io: IO,
    position: Position,
    /// Read from `io`, not yet looked at.
    input: BytesMut,
    /// Looked at, to be handed to the reader.
    output: BytesMut,
    /// Set once the connection preface has gone by (see `crate::conn`).
    preface_seen: Option<Arc<AtomicBool>>,
}

impl<IO> AuthorityFix<IO> {
    pub(crate) fn new(io: IO) -> AuthorityFix<IO> {
        AuthorityFix {
            io,
            position: Position::Preface(PREFACE_BYTES),
            input: BytesMut::new(),
            output: BytesMut::new(),
            preface_seen: None,
        }
    }

    /// Also sets `preface_seen` once the preface's 24 bytes have gone by.
    pub(crate) fn with_preface_flag(io: IO, preface_seen: Arc<AtomicBool>) -> AuthorityFix<IO> {
        AuthorityFix {
            preface_seen: Some(preface_seen),
            ..AuthorityFix::new(io)
        }
    }

    /// Bytes read and not yet decided on (at most one frame of
    /// [`MAX_FRAME_BYTES`] plus one read's worth).
    pub(crate) fn held_back(&self) -> usize {
        self.input.len()
    }

    /// Moves what can be decided from `input` to `output`.
    fn process(&mut self) {
        loop {
            match self.position {
                Position::Preface(0) => {
                    if let Some(seen) = &self.preface_seen {
                        seen.store(true, Ordering::Release);
                    }
                    self.position = Position::FrameStart;
                }
                Position::Payload(0) => self.position = Position::FrameStart,
                Position::Preface(left) | Position::Payload(left) => {
                    let n = left.min(self.input.len());
                    if n == 0 {
                        return;
                    }
                    self.output.extend_from_slice(&self.input.split_to(n));
                    self.position = match self.position {
                        Position::Preface(_) => Position::Preface(left - n),
                        _ => Position::Payload(left - n),
                    };
                }
                Position::FrameStart => {
                    let Some(header) = self.input.get(..FRAME_HEADER_BYTES) else {
                        return;
                    };
                    let len = usize::from(header[0]) << 16
                        | usize::from(header[1]) << 8
                        | usize::from(header[2]);
                    let (kind, flags) = (header[3], header[4]);
                    // Only a HEADERS frame that holds a whole header block and fits the
                    // frame size h2 accepts is held back to be looked at; anything else,
                    // an oversized frame above all, goes on at once for h2 to judge (it
                    // refuses a frame over its limit from its 9-byte header alone).
                    let whole = kind == FRAME_HEADERS
                        && flags & FLAG_END_HEADERS != 0
                        && len <= MAX_FRAME_BYTES;
                    if !whole {
                        self.output
                            .extend_from_slice(&self.input.split_to(FRAME_HEADER_BYTES));
                        self.position = Position::Payload(len);
                        continue;
                    }
                    if self.input.len() < FRAME_HEADER_BYTES + len {
                        return;
                    }
                    let frame = self.input.split_to(FRAME_HEADER_BYTES + len);
                    match fix_headers_frame(&frame) {
                        Some(fixed) => self.output.extend_from_slice(&fixed),
                        None => self.output.extend_from_slice(&frame),
                    }
                }
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for AuthorityFix<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.output.is_empty() {
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // End of input: hand on whatever was held back; h2 judges it.
                let rest = this.input.split();
                this.output.extend_from_slice(&rest);
                break;
            }
            this.input.extend_from_slice(read.filled());
            this.process();
        }
        let n = this.output.len().min(buf.remaining());
        buf.put_slice(&this.output[..n]);
        this.output.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A whole HEADERS frame with a URL `:authority` rewritten, or `None` to
/// pass the frame on as it is.
fn fix_headers_frame(frame: &[u8]) -> Option<Vec<u8>> {
    let (header, payload) = frame.split_at_checked(FRAME_HEADER_BYTES)?;
    let flags = header[4];
    let mut start = 0;
    let mut end = payload.len();
    if flags & FLAG_PADDED != 0 {
        let pad = usize::from(*payload.first()?);
        start = 1;
        end = end.checked_sub(pad)?;
    }
    let priority = if flags & FLAG_PRIORITY != 0 {
        let p = payload.get(start..start + 5)?;
        start += 5;
        p
    } else {
        &[]
    };
    let block = fix_header_block(payload.get(start..end)?)?;
    let len = priority.len() + block.len();
    if len > MAX_FRAME_BYTES {
        return None;
    }
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + len);
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8]);
    // Padding is dropped, so is its flag.
    out.extend_from_slice(&[header[3], flags & !FLAG_PADDED]);
    out.extend_from_slice(&header[5..9]);
    out.extend_from_slice(priority);
    out.extend_from_slice(&block);
    Some(out)
}

/// An HPACK header block with a URL `:authority` literal rewritten, or
/// `None` if it has none (or does not parse).
fn fix_header_block(block: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(block.len() + 16);
    let mut changed = false;
    let mut at = 0;
    while at < block.len() {
        let first = block[at];
        let start = at;
        let prefix = if first & 0x80 != 0 {
            // Indexed field: refers to a table entry, which is already fixed.
            let (_, n) = integer(&block[at..], 7)?;
            out.extend_from_slice(&block[at..at + n]);
            at += n;
            continue;
        } else if first & 0xc0 == 0x40 {
            6 // literal with incremental indexing
        } else if first & 0xe0 == 0x20 {
            // Dynamic table size update.
            let (_, n) = integer(&block[at..], 5)?;
            out.extend_from_slice(&block[at..at + n]);
            at += n;
            continue;
        } else {
            4 // literal without indexing, or never indexed
        };
        let (index, n) = integer(&block[at..], prefix)?;
        at += n;
        let is_authority = if index == 0 {
            let (name, n) = string(&block[at..])?;
            at += n;
            name == b":authority"
        } else {
            index == AUTHORITY_INDEX
        };
        let value_at = at;
        let (value, n) = string(&block[at..])?;
        at += n;
        match is_authority.then(|| fix_authority(&value)).flatten() {
            Some(fixed) => {
                out.extend_from_slice(&block[start..value_at]);
                raw_string(&fixed, &mut out);
                changed = true;
            }
            None => out.extend_from_slice(&block[start..at]),
        }
    }
    changed.then_some(out)
}

/// `scheme://host:port[/...]` → the same length with `:` `/` of the scheme
/// separator and any `/` turned into `-`, a valid authority; `None` if the
/// value has no scheme.
fn fix_authority(value: &[u8]) -> Option<Vec<u8>> {
    let sep = value.windows(3).position(|w| w == b"://")?;
    let mut fixed = value.to_vec();
    fixed[sep] = b'-';
    for b in &mut fixed[sep..] {
        if *b == b'/' {
            *b = b'-';
        }
    }
    Some(fixed)
}

/// An HPACK integer (RFC 7541 §5.1) with an `prefix`-bit prefix: its value
/// and how many bytes it took.
fn integer(bytes: &[u8], prefix: u32) -> Option<(u64, usize)> {
    let max = (1u64 << prefix) - 1;
    let mut value = u64::from(*bytes.first()?) & max;
    if value < max {
        return Some((value, 1));
    }
    let mut shift = 0u32;
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        if shift > 56 {
            return None;
        }
        value += u64::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// An HPACK string literal (RFC 7541 §5.2), decoded: its bytes and how many
/// bytes it took.
fn string(bytes: &[u8]) -> Option<(Vec<u8>, usize)> {
    let huffman = *bytes.first()? & 0x80 != 0;
    let (len, n) = integer(bytes, 7)?;
    let end = n.checked_add(usize::try_from(len).ok()?)?;
    let raw = bytes.get(n..end)?;
    let value = if huffman {
        huffman_decode(raw)?
    } else {
        raw.to_vec()
    };
    Some((value, end))
}

/// Appends `value` as a string literal without Huffman coding.
fn raw_string(value: &[u8], out: &mut Vec<u8>) {
    let mut len = value.len();
    if len < 0x7f {
        out.push(len as u8);
    } else {
        out.push(0x7f);
        len -= 0x7f;
        while len >= 0x80 {
            out.push((len & 0x7f) as u8 | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
    }
    out.extend_from_slice(value);
}

/// Code lengths of HPACK's Huffman code (RFC 7541 Appendix B), symbols 0 to
/// 255 and EOS. The code is canonical (codes are consecutive in order of
/// length, then symbol), so the lengths define it.
const HUFFMAN_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];
const EOS: u16 = 256;
const MAX_CODE_BITS: usize = 30;

/// The canonical code's decoding tables: per length, its first code and
/// where its symbols start in `symbols` (sorted by length, then symbol).
struct HuffmanTables {
    first_code: [u32; MAX_CODE_BITS + 1],
    first_index: [u16; MAX_CODE_BITS + 1],
    count: [u16; MAX_CODE_BITS + 1],
    symbols: [u16; 257],
}

fn huffman_tables() -> &'static HuffmanTables {
    static TABLES: OnceLock<HuffmanTables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut t = HuffmanTables {
            first_code: [0; MAX_CODE_BITS + 1],
            first_index: [0; MAX_CODE_BITS + 1],
            count: [0; MAX_CODE_BITS + 1],
            symbols: [0; 257],
        };
        let mut next = 0;
        let mut code = 0u32;
        for len in 1..=MAX_CODE_BITS {
            code <<= 1;
            t.first_code[len] = code;
            t.first_index[len] = next;
            for (symbol, &l) in (0u16..).zip(HUFFMAN_LENGTHS.iter()) {
                if usize::from(l) == len {
                    t.symbols[usize::from(next)] = symbol;
                    next += 1;
                    t.count[len] += 1;
                    code += 1;
                }
            }
        }
        t
    })
}

/// Decodes a Huffman-coded string; `None` if it is not valid HPACK.
fn huffman_decode(src: &[u8]) -> Option<Vec<u8>> {
    let t = huffman_tables();
    let mut out = Vec::with_capacity(src.len() * 8 / 5);
    let mut code = 0u32;
    let mut len = 0usize;
    for byte in src {
        for shift in (0..8).rev() {
            code = code << 1 | u32::from(byte >> shift & 1);
            len += 1;
            let offset = code.wrapping_sub(t.first_code[len]);
            if offset < u32::from(t.count[len]) {
                let symbol = t.symbols[usize::from(t.first_index[len]) + offset as usize];
                if symbol == EOS {
                    return None;
                }
                out.push(symbol as u8);
                code = 0;
                len = 0;
            } else if len == MAX_CODE_BITS {
                return None;
            }
        }
    }
    // Padding: fewer than 8 bits, all ones (a prefix of EOS).
    (len < 8 && code == (1 << len) - 1).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huffman_decodes_rfc_examples() {
        // RFC 7541 C.4.1: "www.example.com".
        let coded = [
            0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
        ];
        assert_eq!(
            huffman_decode(&coded).as_deref(),
            Some(&b"www.example.com"[..])
        );
        // C.4.2: "no-cache".
        let coded = [0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf];
        assert_eq!(huffman_decode(&coded).as_deref(), Some(&b"no-cache"[..]));
        // Padding of zeroes is invalid.
        assert_eq!(
            huffman_decode(&[
                0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0x00
            ]),
            None
        );
    }

    /// A header block as grpc-go sends it: `:authority` as a literal with
    /// incremental indexing, by static name index, Huffman-coded.
    #[test]
    fn rewrites_a_url_authority_keeping_its_length() {
        let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
        block.push(0x41); // literal, incremental indexing, name :authority
        block.extend_from_slice(&[0x8c]); // Huffman, 12 bytes: "www.example.com"
        block.extend_from_slice(&[
            0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
        ]);
        // Not a URL: left alone.
        assert_eq!(fix_header_block(&block), None);

        let url = b"http://127.0.0.1:2379";
        let mut block = vec![0x83, 0x86, 0x41];
        raw_string(url, &mut block);
        // A literal with a new name after it: te: trailers.
        block.extend_from_slice(&[0x40, 0x02, b't', b'e', 0x08]);
        block.extend_from_slice(b"trailers");
        let fixed = fix_header_block(&block).expect("rewritten");
        let mut expect = vec![0x83, 0x86, 0x41];
        raw_string(b"http---127.0.0.1:2379", &mut expect);
        expect.extend_from_slice(&[0x40, 0x02, b't', b'e', 0x08]);
        expect.extend_from_slice(b"trailers");
        assert_eq!(fixed, expect);
    }

    /// A HEADERS frame that says it is larger than any frame h2 accepts is
    /// handed on at once, header first, so h2 refuses it (FRAME_SIZE_ERROR)
    /// before its payload arrives: nothing waits for 16 MiB to buffer.
    #[tokio::test]
    async fn an_oversized_headers_frame_is_not_buffered() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        input.extend_from_slice(&[
            0xff,
            0xff,
            0xff,
            FRAME_HEADERS,
            FLAG_END_HEADERS,
            0,
            0,
            0,
            1,
        ]);
        input.extend_from_slice(&[0x82; 100]);
        let (mut client, server) = tokio::io::duplex(1 << 16);
        // The client stays open: the rest of the frame never comes.
        client.write_all(&input).await.expect("write");
        let mut fix = AuthorityFix::new(server);
        let mut got = Vec::new();
        while got.len() < input.len() {
            let mut buf = [0u8; 256];
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), fix.read(&mut buf))
                .await
                .expect("the frame's first bytes are handed on without its payload")
                .expect("read");
            assert_ne!(n, 0, "the stream ended early");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, input);
        assert!(fix.input.capacity() < 64 << 10, "{}", fix.input.capacity());
    }

    /// Through the stream wrapper: preface and other frames pass unchanged,
    /// a padded HEADERS frame comes out rewritten, unpadded.
    #[tokio::test]
    async fn stream_rewrites_only_the_headers_frame() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        let settings = [0, 0, 6, 0x4, 0, 0, 0, 0, 0, 0, 0x3, 0, 0, 0, 100];
        input.extend_from_slice(&settings);
        let mut block = vec![0x83, 0x41];
        raw_string(b"http://h:1", &mut block);
        let pad = 3;
        let len = 1 + block.len() + pad;
        input.extend_from_slice(&[
            0,
            0,
            len as u8,
            FRAME_HEADERS,
            FLAG_END_HEADERS | FLAG_PADDED,
            0,
            0,
            0,
            1,
        ]);
        input.push(pad as u8);
        input.extend_from_slice(&block);
        input.extend_from_slice(&[0; 3]);
        let data = [0, 0, 2, 0x0, 0x1, 0, 0, 0, 1, b'h', b'i'];
        input.extend_from_slice(&data);

        let (mut client, server) = tokio::io::duplex(7);
        let writer = tokio::spawn(async move {
            client.write_all(&input).await.expect("write");
        });
        let mut fixed = Vec::new();
        AuthorityFix::new(server)
            .read_to_end(&mut fixed)
            .await
            .expect("read");
        writer.await.expect("writer");

        let mut expect = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        expect.extend_from_slice(&settings);
        let mut block = vec![0x83, 0x41];
        raw_string(b"http---h:1", &mut block);
        expect.extend_from_slice(&[
            0,
            0,
            block.len() as u8,
            FRAME_HEADERS,
            FLAG_END_HEADERS,
            0,
            0,
            0,
            1,
        ]);
        expect.extend_from_slice(&block);
        expect.extend_from_slice(&data);
        assert_eq!(fixed, expect);
    }
}

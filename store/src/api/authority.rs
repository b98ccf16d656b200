//! Tolerating grpc-go's `:authority: http://host:port`.
//!
//! etcdctl 3.4 dials the client URLs it finds in the member list (`endpoint status
//! --cluster`, `endpoint health --cluster`) with the scheme still on, and grpc-go then
//! sends `:authority: http://127.0.0.1:2379`. etcd's grpc-go server accepts that; the h2
//! crate under tonic refuses the stream as malformed. [`AuthorityFix`] sits under the
//! server on the read side of each client connection: for HTTP/2 connections it decodes
//! every request header block, drops a scheme from `:authority`, and re-encodes the block
//! with its own HPACK encoder (whose table the server's decoder mirrors). Everything else
//! passes through untouched; HTTP/1 connections are not parsed at all.
//!
//! grpc-go sends the same `:authority` on every request of a connection, so a connection
//! whose first request needs no fix is not fixed at all: its bytes go through as they are
//! from then on, read straight into the server's buffer. (Decoding and re-encoding every
//! header block, and copying every byte twice, cost a member several per cent of its CPU
//! under `etcdctl check perf`.)

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub(super) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub(super) const FRAME_HEADER: usize = 9;
pub(super) const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
pub(super) const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The server's (default) SETTINGS_MAX_FRAME_SIZE.
const MAX_FRAME: usize = 16_384;

enum Mode {
    Sniff,
    H2,
    Passthrough,
}

/// A header block being collected across HEADERS and CONTINUATION frames.
struct Pending {
    stream: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
    /// The frames as they came, for when the block goes through unchanged.
    raw: Vec<u8>,
}

pub struct AuthorityFix<T> {
    inner: T,
    mode: Mode,
    input: BytesMut,
    output: BytesMut,
    pending: Option<Pending>,
    decoder: loona_hpack::Decoder<'static>,
    encoder: loona_hpack::Encoder<'static>,
    /// A header block has been rewritten: every later one must be too (the encoder's
    /// table is what the server's decoder mirrors).
    rewriting: bool,
    eof: bool,
}

impl<T> AuthorityFix<T> {
    pub fn new(inner: T) -> Self {
        AuthorityFix {
            inner,
            mode: Mode::Sniff,
            input: BytesMut::new(),
            output: BytesMut::new(),
            pending: None,
            decoder: loona_hpack::Decoder::new(),
            encoder: loona_hpack::Encoder::new(),
            rewriting: false,
            eof: false,
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Moves whatever can be decided from `input` to `output`.
    fn process(&mut self) {
        loop {
            match self.mode {
                Mode::Sniff => {
                    let n = self.input.len().min(PREFACE.len());
                    if self.input[..n] != PREFACE[..n] {
                        self.mode = Mode::Passthrough;
                    } else if n == PREFACE.len() {
                        self.output.put(self.input.split_to(n));
                        self.mode = Mode::H2;
                    } else {
                        return;
                    }
                }
                Mode::Passthrough => {
                    let all = self.input.split();
                    self.output.put(all);
                    return;
                }
                Mode::H2 => {
                    if self.input.len() < FRAME_HEADER {
                        return;
                    }
                    let len = (usize::from(self.input[0]) << 16)
                        | (usize::from(self.input[1]) << 8)
                        | usize::from(self.input[2]);
                    if self.input.len() < FRAME_HEADER + len {
                        return;
                    }
                    let frame = self.input.split_to(FRAME_HEADER + len);
                    if self.frame(&frame).is_err() {
                        // Not something we understand: hand it to h2 as is, and stop
                        // interpreting this connection.
                        self.output.put(&frame[..]);
                        self.mode = Mode::Passthrough;
                    }
                }
            }
        }
    }

    fn frame(&mut self, frame: &[u8]) -> Result<(), ()> {
        let (kind, flags) = (frame[3], frame[4]);
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let mut payload = &frame[FRAME_HEADER..];
        match kind {
            HEADERS => {
                if self.pending.is_some() {
                    return Err(());
                }
                let mut pad = 0usize;
                if flags & PADDED != 0 {
                    pad = usize::from(*payload.first().ok_or(())?);
                    payload = &payload[1..];
                }
                let mut priority = None;
                if flags & PRIORITY != 0 {
                    let p: [u8; 5] = payload.get(..5).ok_or(())?.try_into().map_err(|_| ())?;
                    priority = Some(p);
                    payload = &payload[5..];
                }
                let block = payload.get(..payload.len().checked_sub(pad).ok_or(())?).ok_or(())?.to_vec();
                self.pending = Some(Pending { stream, flags, priority, block, raw: frame.to_vec() });
            }
            CONTINUATION => {
                let p = self.pending.as_mut().filter(|p| p.stream == stream).ok_or(())?;
                p.block.extend_from_slice(payload);
                p.raw.extend_from_slice(frame);
            }
            _ => {
                if self.pending.is_some() {
                    return Err(());
                }
                self.output.put(frame);
                return Ok(());
            }
        }
        if flags & END_HEADERS != 0 {
            let p = self.pending.take().ok_or(())?;
            self.emit(p)?;
        }
        Ok(())
    }

    fn emit(&mut self, p: Pending) -> Result<(), ()> {
        let mut headers = self.decoder.decode(&p.block).map_err(|_| ())?;
        let mut fixed = false;
        for (name, value) in headers.iter_mut() {
            if name.as_slice() == b":authority" {
                if let Some(i) = value.windows(3).position(|w| w == b"://") {
                    let rest = value.split_off(i + 3);
                    let host_port = rest.split(|b| *b == b'/').next().unwrap_or_default().to_vec();
                    *value = host_port;
                    fixed = true;
                }
            }
        }
        if !fixed && !self.rewriting {
            // The first request needs nothing: neither will the rest of this connection's.
            self.output.put_slice(&p.raw);
            self.mode = Mode::Passthrough;
            return Ok(());
        }
        self.rewriting = true;
        let block = self.encoder.encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let mut first = true;
        let mut rest: &[u8] = &block;
        loop {
            let room = if first && p.priority.is_some() { MAX_FRAME - 5 } else { MAX_FRAME };
            let take = rest.len().min(room);
            let (chunk, tail) = rest.split_at(take);
            let last = tail.is_empty();
            let (kind, mut flags) =
                if first { (HEADERS, p.flags & (END_STREAM | PRIORITY)) } else { (CONTINUATION, 0) };
            if last {
                flags |= END_HEADERS;
            }
            let prio: &[u8] = match (&p.priority, first) {
                (Some(pr), true) => pr,
                _ => &[],
            };
            let len = prio.len() + chunk.len();
            self.output.put_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
            self.output.put_u32(p.stream);
            self.output.put_slice(prio);
            self.output.put_slice(chunk);
            if last {
                return Ok(());
            }
            first = false;
            rest = tail;
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for AuthorityFix<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if matches!(this.mode, Mode::Passthrough) && this.output.is_empty() && this.input.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // Whatever is left is incomplete; let the server see it and fail.
                let left = this.input.split();
                if left.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                this.output.put(left);
                continue;
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    if rb.filled().is_empty() {
                        this.eof = true;
                    } else {
                        this.input.extend_from_slice(rb.filled());
                        this.process();
                    }
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn headers_frame(stream: u32, block: &[u8]) -> Vec<u8> {
        let mut f = vec![(block.len() >> 16) as u8, (block.len() >> 8) as u8, block.len() as u8, HEADERS, END_HEADERS];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(block);
        f
    }

    async fn run(input: Vec<u8>) -> Vec<u8> {
        let mut fix = AuthorityFix::new(std::io::Cursor::new(input));
        let mut out = Vec::new();
        fix.read_to_end(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn strips_a_scheme_from_the_authority_and_keeps_the_rest() {
        let mut enc = loona_hpack::Encoder::new();
        let hdrs: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/etcdserverpb.Maintenance/Status"),
            (b":authority", b"http://127.0.0.1:2379"),
            (b"content-type", b"application/grpc"),
        ];
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(1, &enc.encode(hdrs.clone())));
        // A second request on the same connection, encoded against the client's table.
        input.extend(headers_frame(3, &enc.encode(hdrs)));
        input.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]); // an empty SETTINGS frame
        let out = run(input).await;
        assert!(out.starts_with(PREFACE));
        let mut dec = loona_hpack::Decoder::new();
        let mut rest = &out[PREFACE.len()..];
        for _ in 0..2 {
            let len = (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
            assert_eq!(rest[3], HEADERS);
            let decoded = dec.decode(&rest[FRAME_HEADER..FRAME_HEADER + len]).expect("decodes");
            let auth = decoded.iter().find(|(n, _)| n == b":authority").expect("authority");
            assert_eq!(auth.1, b"127.0.0.1:2379");
            assert_eq!(decoded.len(), 5);
            rest = &rest[FRAME_HEADER + len..];
        }
        assert_eq!(rest, &[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    }

    #[tokio::test]
    async fn http1_passes_through_untouched() {
        let req = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        assert_eq!(run(req.clone()).await, req);
    }

    #[tokio::test]
    async fn a_connection_whose_first_request_needs_no_fix_passes_through_unchanged() {
        let mut enc = loona_hpack::Encoder::new();
        let hdrs: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":path", b"/etcdserverpb.KV/Put"),
            (b":authority", b"127.0.0.1:2379"),
            (b"content-type", b"application/grpc"),
        ];
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(1, &enc.encode(hdrs.clone())));
        input.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
        // A later block that would need a fix is left alone: the connection is not parsed
        // any more (grpc-go never changes a connection's authority).
        let later: Vec<(&[u8], &[u8])> = vec![(b":authority", b"http://127.0.0.1:2379")];
        input.extend(headers_frame(3, &enc.encode(later)));
        assert_eq!(run(input.clone()).await, input);
    }
}

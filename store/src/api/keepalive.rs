//! gRPC keepalive on the client port, as etcd configures grpc-go's server.
//!
//! - `--grpc-keepalive-interval` and `--grpc-keepalive-timeout`: after `interval` with
//!   nothing read from a connection, the server pings it, and closes it if no answer comes
//!   within `timeout` (hyper's HTTP/2 keep-alive does this). A client that vanished without
//!   closing its connections no longer holds its watches and leases' streams forever.
//! - `--grpc-keepalive-min-time`: grpc-go's enforcement policy, which hyper has not. A
//!   client that pings more often than that (more often than every two hours while it has
//!   no stream open) gets a strike; at the third, the server answers the ping, then sends
//!   GOAWAY with `ENHANCE_YOUR_CALM` and "too_many_pings" and closes the connection.
//!   Anything the server sends on a stream clears the strikes. [`PingPolicy`] does this
//!   under the server: it reads the frame headers going each way (never the payloads,
//!   so it costs a few comparisons a frame), counts the streams open, and writes the GOAWAY
//!   itself right after the answer to the offending ping.
//! - `--max-concurrent-streams`: the HTTP/2 setting, announced as etcd announces it (its
//!   default, the largest value, means no limit; hyper's own default was 200).

use std::collections::HashSet;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::authority::{END_STREAM, FRAME_HEADER as HEADER_LEN, HEADERS, PREFACE};

const DATA: u8 = 0x0;
const RST_STREAM: u8 = 0x3;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;
const ENHANCE_YOUR_CALM: u32 = 0xb;
/// grpc-go's `maxPingStrikes`: the ping after this many strikes closes the connection.
const MAX_STRIKES: u32 = 2;
/// How often a client with no stream open may ping (grpc-go's `defaultPingTimeout`).
const IDLE_PING_MIN: Duration = Duration::from_secs(2 * 3600);
/// grpc-go's policy when none is given (etcd gives none for a zero `--grpc-keepalive-min-time`).
const DEFAULT_MIN_TIME: Duration = Duration::from_secs(5 * 60);

/// The client port's HTTP/2 settings, from the flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    pub min_time: Duration,
    pub interval: Duration,
    pub timeout: Duration,
    pub max_streams: u32,
}

impl Keepalive {
    /// From etcd's flags: a zero `min_time` leaves grpc-go's own policy (five minutes), and
    /// unless both `interval` and `timeout` are set, grpc-go's defaults (two hours, 20 s).
    pub fn new(min_time: Duration, interval: Duration, timeout: Duration, max_streams: u32) -> Keepalive {
        let (interval, timeout) = if interval.is_zero() || timeout.is_zero() {
            (Duration::from_secs(2 * 3600), Duration::from_secs(20))
        } else {
            (interval, timeout)
        };
        Keepalive {
            min_time: if min_time.is_zero() { DEFAULT_MIN_TIME } else { min_time },
            interval,
            timeout,
            max_streams,
        }
    }
}

impl Keepalive {
    /// etcd's defaults.
    pub fn etcd_default() -> Keepalive {
        Keepalive::new(Duration::from_secs(5), Duration::from_secs(2 * 3600), Duration::from_secs(20), u32::MAX)
    }
}

/// Where a direction of the connection is within its frames.
#[derive(Clone, Copy, Default)]
struct Frames {
    header: [u8; HEADER_LEN],
    have: usize,
    /// Payload bytes of the current frame still to pass.
    left: usize,
}

/// A frame's header, reported once the whole frame has passed.
#[derive(Clone, Copy)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
}

impl Frames {
    /// Passes `data`, calling `done` with each frame that ends in it and the offset just
    /// after that frame.
    fn pass(&mut self, mut data: &[u8], mut done: impl FnMut(Frame, usize)) {
        let mut offset = 0;
        while !data.is_empty() {
            if self.have < HEADER_LEN {
                let take = (HEADER_LEN - self.have).min(data.len());
                self.header[self.have..self.have + take].copy_from_slice(&data[..take]);
                self.have += take;
                data = &data[take..];
                offset += take;
                if self.have < HEADER_LEN {
                    return;
                }
                let h = &self.header;
                self.left = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
            }
            let take = self.left.min(data.len());
            self.left -= take;
            data = &data[take..];
            offset += take;
            if self.left == 0 {
                let h = &self.header;
                let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                self.have = 0;
                done(Frame { kind: h[3], flags: h[4], stream }, offset);
            }
        }
    }
}

enum Proto {
    /// Reading the first bytes: the HTTP/2 preface, or not.
    Sniffing(usize),
    H2,
    /// HTTP/1.1 (the JSON gateway): nothing to watch.
    Other,
}

enum Goaway {
    None,
    /// Sent once the server has answered this many pings.
    AfterAcks(u64),
    /// Being written: the frame and how much of it is out.
    Writing(Vec<u8>, usize),
    Closed,
}

/// grpc-go's keepalive enforcement for one connection (see the module's comment).
pub struct PingPolicy<T> {
    inner: T,
    min_time: Duration,
    proto: Proto,
    read: Frames,
    write: Frames,
    open: HashSet<u32>,
    last_stream: u32,
    last_ping: Option<Instant>,
    strikes: u32,
    /// The server has sent on a stream since the last ping.
    reset: bool,
    pings_in: u64,
    acks_out: u64,
    goaway: Goaway,
}

impl<T> PingPolicy<T> {
    pub fn new(inner: T, min_time: Duration) -> Self {
        PingPolicy {
            inner,
            min_time,
            proto: Proto::Sniffing(0),
            read: Frames::default(),
            write: Frames::default(),
            open: HashSet::new(),
            last_stream: 0,
            last_ping: None,
            strikes: 0,
            reset: false,
            pings_in: 0,
            acks_out: 0,
            goaway: Goaway::None,
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Bytes the client sent.
    fn received(&mut self, mut data: &[u8]) {
        if let Proto::Sniffing(seen) = self.proto {
            let n = (PREFACE.len() - seen).min(data.len());
            if data[..n] != PREFACE[seen..seen + n] {
                self.proto = Proto::Other;
                return;
            }
            self.proto = if seen + n == PREFACE.len() { Proto::H2 } else { Proto::Sniffing(seen + n) };
            data = &data[n..];
        }
        if !matches!(self.proto, Proto::H2) {
            return;
        }
        let mut frames = self.read;
        frames.pass(data, |f, _| match f.kind {
            HEADERS if f.stream > self.last_stream => {
                self.last_stream = f.stream;
                self.open.insert(f.stream);
            }
            RST_STREAM => {
                self.open.remove(&f.stream);
            }
            PING if f.flags & ACK == 0 => self.ping(),
            _ => {}
        });
        self.read = frames;
    }

    /// grpc-go's `handlePing`.
    fn ping(&mut self) {
        self.pings_in += 1;
        let now = Instant::now();
        let last = self.last_ping.replace(now);
        if std::mem::take(&mut self.reset) {
            self.strikes = 0;
            return;
        }
        let least = if self.open.is_empty() { IDLE_PING_MIN } else { self.min_time };
        if last.is_some_and(|last| last + least > now) {
            self.strikes += 1;
        }
        if self.strikes > MAX_STRIKES && matches!(self.goaway, Goaway::None) {
            tracing::warn!(
                "a client pinged too often (more than --grpc-keepalive-min-time allows): closing its connection"
            );
            self.goaway = Goaway::AfterAcks(self.pings_in);
        }
    }

    /// How many of `len` bytes about to be written may go before the GOAWAY must.
    fn writable(&self, bufs: &[IoSlice<'_>]) -> usize {
        let total = bufs.iter().map(|b| b.len()).sum();
        let Goaway::AfterAcks(after) = self.goaway else { return total };
        let (mut frames, mut acks, mut base, mut cut) = (self.write, self.acks_out, 0, None);
        for b in bufs {
            frames.pass(b, |f, end| {
                if f.kind == PING && f.flags & ACK != 0 {
                    acks += 1;
                    if acks == after && cut.is_none() {
                        cut = Some(base + end);
                    }
                }
            });
            if cut.is_some() {
                break;
            }
            base += b.len();
        }
        cut.unwrap_or(total)
    }

    /// Bytes the server wrote.
    fn sent(&mut self, bufs: &[IoSlice<'_>], mut n: usize) {
        let mut frames = self.write;
        for b in bufs {
            let part = &b[..n.min(b.len())];
            n -= part.len();
            frames.pass(part, |f, _| match f.kind {
                DATA | HEADERS if f.stream != 0 => {
                    self.reset = true;
                    if f.flags & END_STREAM != 0 {
                        self.open.remove(&f.stream);
                    }
                }
                RST_STREAM => {
                    self.open.remove(&f.stream);
                }
                PING if f.flags & ACK != 0 => {
                    self.acks_out += 1;
                    if matches!(self.goaway, Goaway::AfterAcks(after) if after == self.acks_out) {
                        self.goaway = Goaway::Writing(goaway_frame(self.last_stream), 0);
                    }
                }
                _ => {}
            });
            if n == 0 {
                break;
            }
        }
        self.write = frames;
    }
}

fn goaway_frame(last_stream: u32) -> Vec<u8> {
    let debug = b"too_many_pings";
    let len = 8 + debug.len();
    let mut f = Vec::with_capacity(HEADER_LEN + len);
    f.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    f.extend_from_slice(&[GOAWAY, 0, 0, 0, 0, 0]);
    f.extend_from_slice(&last_stream.to_be_bytes());
    f.extend_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
    f.extend_from_slice(debug);
    f
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "closed: the client pinged too often")
}

impl<T: AsyncWrite + Unpin> PingPolicy<T> {
    /// Writes a pending GOAWAY, then closes the connection. Ready once there is nothing
    /// (more) to do.
    fn poll_goaway(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match &mut self.goaway {
                Goaway::None | Goaway::AfterAcks(_) => return Poll::Ready(Ok(())),
                Goaway::Closed => return Poll::Ready(Err(closed())),
                Goaway::Writing(frame, at) => {
                    if *at < frame.len() {
                        let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &frame[*at..]))?;
                        if n == 0 {
                            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                        }
                        *at += n;
                        continue;
                    }
                    ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
                    let _ = ready!(Pin::new(&mut self.inner).poll_shutdown(cx));
                    self.goaway = Goaway::Closed;
                }
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for PingPolicy<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if matches!(this.goaway, Goaway::Closed) {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if !matches!(this.proto, Proto::Other) {
            this.received(&buf.filled()[before..]);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for PingPolicy<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if !matches!(this.proto, Proto::H2) {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        ready!(this.poll_goaway(cx))?;
        let limit = this.writable(bufs);
        let n = if limit == bufs.iter().map(|b| b.len()).sum::<usize>() {
            ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?
        } else {
            let mut left = limit;
            let mut cut = Vec::with_capacity(bufs.len());
            for b in bufs {
                if left == 0 {
                    break;
                }
                let take = left.min(b.len());
                cut.push(IoSlice::new(&b[..take]));
                left -= take;
            }
            ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, &cut))?
        };
        this.sent(bufs, n);
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_goaway(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if matches!(self.goaway, Goaway::Closed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn policy(min_time: Duration) -> PingPolicy<()> {
        let mut p = PingPolicy::new((), min_time);
        p.received(PREFACE);
        p
    }

    fn write(p: &mut PingPolicy<()>, bytes: &[u8]) -> usize {
        let bufs = [IoSlice::new(bytes)];
        let n = p.writable(&bufs);
        p.sent(&bufs, n);
        n
    }

    #[test]
    fn frames_split_anywhere_are_seen_whole() {
        let bytes = [frame(PING, 0, 0, &[1; 8]), frame(HEADERS, 4, 3, b"abc"), frame(DATA, 1, 3, &[0; 40])].concat();
        for step in 1..bytes.len() {
            let mut frames = Frames::default();
            let mut seen = Vec::new();
            for chunk in bytes.chunks(step) {
                frames.pass(chunk, |f, _| seen.push((f.kind, f.flags, f.stream)));
            }
            assert_eq!(seen, [(PING, 0, 0), (HEADERS, 4, 3), (DATA, 1, 3)], "chunks of {step}");
        }
    }

    #[test]
    fn the_third_strike_sends_goaway_after_the_fourth_ack() {
        let mut p = policy(Duration::from_secs(5));
        p.received(&frame(HEADERS, 4, 1, b"h"));
        p.received(&frame(PING, 0, 0, &[0; 8]).repeat(4));
        assert!(matches!(p.goaway, Goaway::AfterAcks(4)));
        let acks = frame(PING, ACK, 0, &[0; 8]).repeat(4);
        let n = write(&mut p, &acks);
        assert_eq!(n, acks.len(), "every ack goes before the GOAWAY");
        let Goaway::Writing(f, 0) = &p.goaway else { panic!("no GOAWAY") };
        assert_eq!(f[3], GOAWAY);
        assert_eq!(&f[HEADER_LEN..HEADER_LEN + 8], &[0, 0, 0, 1, 0, 0, 0, 0xb]);
        assert_eq!(&f[HEADER_LEN + 8..], b"too_many_pings");
    }

    #[test]
    fn a_write_stops_right_after_the_offending_pings_ack() {
        let mut p = policy(Duration::from_secs(5));
        p.received(&frame(PING, 0, 0, &[0; 8]).repeat(4));
        let ack = frame(PING, ACK, 0, &[0; 8]);
        let more = [ack.clone(), ack.clone(), ack.clone(), ack.clone(), frame(DATA, 0, 1, b"x")].concat();
        assert_eq!(write(&mut p, &more), 4 * ack.len());
        assert!(matches!(p.goaway, Goaway::Writing(..)));
    }

    #[test]
    fn sending_on_a_stream_clears_the_strikes() {
        let mut p = policy(Duration::from_secs(5));
        p.received(&frame(HEADERS, 4, 1, b"h"));
        for _ in 0..10 {
            p.received(&frame(PING, 0, 0, &[0; 8]));
            p.received(&frame(PING, 0, 0, &[0; 8]));
            write(&mut p, &frame(DATA, 0, 1, b"event"));
        }
        assert!(matches!(p.goaway, Goaway::None), "strikes {}", p.strikes);
    }

    #[test]
    fn pings_within_the_allowed_rate_are_no_strikes() {
        let mut p = policy(Duration::ZERO);
        p.received(&frame(HEADERS, 4, 1, b"h"));
        for _ in 0..10 {
            p.received(&frame(PING, 0, 0, &[0; 8]));
        }
        assert_eq!((p.strikes, p.pings_in), (0, 10));
        // With no stream open, any two pings within two hours are a strike.
        let mut p = policy(Duration::ZERO);
        p.received(&frame(PING, 0, 0, &[0; 8]).repeat(3));
        assert_eq!(p.strikes, 2);
        p.received(&frame(PING, ACK, 0, &[0; 8]));
        assert_eq!((p.strikes, p.pings_in), (2, 3), "acks are not pings");
    }

    #[test]
    fn a_finished_stream_is_no_longer_open() {
        let mut p = policy(Duration::from_secs(5));
        p.received(
            &[frame(HEADERS, 4, 1, b"h"), frame(HEADERS, 4, 3, b"h"), frame(RST_STREAM, 0, 3, &[0; 4])].concat(),
        );
        assert_eq!(p.open, HashSet::from([1]));
        write(&mut p, &frame(HEADERS, 4 | END_STREAM, 1, b"trailers"));
        assert!(p.open.is_empty());
    }

    #[test]
    fn http1_is_left_alone() {
        let mut p = PingPolicy::new((), Duration::from_secs(5));
        p.received(b"POST /v3/kv/put HTTP/1.1\r\n");
        assert!(matches!(p.proto, Proto::Other));
    }
}

//! A bare HTTP/2 client over plain TCP: frames written and read by hand, for what client
//! libraries hide or do for themselves (answering pings, settings, GOAWAY).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;

#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// How the tests compare frames: what the frame means, not its bytes.
    pub fn describe(&self) -> String {
        let word = |at: usize| self.payload.get(at..at + 4).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        match self.kind {
            PING if self.flags & ACK != 0 => "PING ACK".into(),
            PING => "PING".into(),
            RST_STREAM => format!("RST_STREAM stream={} code={}", self.stream, word(0)),
            GOAWAY => format!(
                "GOAWAY last={} code={} {}",
                word(0) & 0x7fff_ffff,
                word(4),
                String::from_utf8_lossy(self.payload.get(8..).unwrap_or_default())
            ),
            k => format!("frame type {k} stream {}", self.stream),
        }
    }
}

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A gRPC request's header block, every field a literal without indexing (no Huffman).
fn grpc_headers(path: &str) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        block.push(0);
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    block
}

pub struct H2 {
    tcp: TcpStream,
    /// The server's first SETTINGS.
    pub settings: Vec<(u16, u32)>,
}

impl H2 {
    /// Connects with prior knowledge, and exchanges settings (ours empty).
    pub fn connect(addr: &str) -> H2 {
        let mut tcp = TcpStream::connect(addr).expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        tcp.write_all(&hello).expect("preface");
        let mut h2 = H2 { tcp, settings: Vec::new() };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let f = h2.next(deadline).expect("the server's settings");
            if f.kind == SETTINGS && f.flags & ACK == 0 {
                h2.settings = f
                    .payload
                    .chunks(6)
                    .map(|c| (u16::from_be_bytes([c[0], c[1]]), u32::from_be_bytes([c[2], c[3], c[4], c[5]])))
                    .collect();
                h2.send(&frame(SETTINGS, ACK, 0, &[]));
                return h2;
            }
        }
    }

    pub fn setting(&self, id: u16) -> Option<u32> {
        self.settings.iter().find(|(i, _)| *i == id).map(|(_, v)| *v)
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).expect("send");
    }

    /// Opens a Watch stream (headers only: no request yet).
    pub fn open_watch(&mut self, stream: u32) {
        self.send(&frame(HEADERS, END_HEADERS, stream, &grpc_headers("/etcdserverpb.Watch/Watch")));
    }

    /// `count` pings, in one write.
    pub fn pings(&mut self, count: u8) {
        let all: Vec<u8> = (0..count).flat_map(|i| frame(PING, 0, 0, &[i; 8])).collect();
        self.send(&all);
    }

    /// The next frame; None once the server has closed the connection (or reset it).
    /// Panics at `deadline`.
    pub fn next(&mut self, deadline: Instant) -> Option<Frame> {
        let mut header = [0u8; 9];
        if !self.read_exact(&mut header, deadline) {
            return None;
        }
        let len = (usize::from(header[0]) << 16) | (usize::from(header[1]) << 8) | usize::from(header[2]);
        let mut payload = vec![0; len];
        if !self.read_exact(&mut payload, deadline) {
            return None;
        }
        let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        Some(Frame { kind: header[3], flags: header[4], stream, payload })
    }

    fn read_exact(&mut self, buf: &mut [u8], deadline: Instant) -> bool {
        let mut at = 0;
        while at < buf.len() {
            let left = deadline.checked_duration_since(Instant::now()).expect("the server to send or close in time");
            self.tcp.set_read_timeout(Some(left.max(Duration::from_millis(1)))).expect("timeout");
            match self.tcp.read(&mut buf[at..]) {
                Ok(0) => return false,
                Ok(n) => at += n,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return false,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("read: {e}"),
            }
        }
        true
    }
}

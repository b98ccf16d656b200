//! Bare HTTP/1.0 requests over a fresh TCP connection, read until the server closes it:
//! every byte of the answer is what the server wrote, with nothing a client library adds
//! or hides.

use std::io::{Read, Write};

/// A server's answer: status, headers (names in lower case) and body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// `method path` with `body` to `addr` (`host:port`), which is also sent as `Host`.
pub fn request(addr: &str, method: &str, path: &str, body: &str) -> Answer {
    let mut conn = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    let head = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n", body.len());
    conn.write_all(format!("{head}{body}").as_bytes()).expect("request");
    let mut text = String::new();
    conn.read_to_string(&mut text).expect("answer");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer { status, headers, body: body.to_string() }
}

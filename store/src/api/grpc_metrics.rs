//! Counts every gRPC call as etcd's go-grpc-prometheus interceptors do: started and
//! handled (with the status code) per method, messages each way, and the bytes of the
//! messages exchanged with clients (`etcd_network_client_grpc_*_bytes_total`).
//!
//! A middleware on the gRPC routes wraps both bodies: the request's to count what the
//! client sends, the response's to count what is sent and to read the status, which
//! comes in the response's headers when the call failed before answering
//! ("trailers-only") and in its trailers otherwise. A call whose response ends without
//! a status (the client went away mid-stream) is counted as `Canceled`, as grpc-go
//! counts a cancelled context.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::Frame;
use prometheus::IntCounter;

use crate::metrics::HOT;

/// grpc-go's names for the status codes, by number.
const CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// The methods the client port serves, by service: only these are counted, so a client
/// naming methods that do not exist cannot add series without end.
const SERVICES: [(&str, &[&str]); 9] = [
    ("etcdserverpb.KV", &["Range", "Put", "DeleteRange", "Txn", "Compact"]),
    ("etcdserverpb.Watch", &["Watch"]),
    ("etcdserverpb.Lease", &["LeaseGrant", "LeaseRevoke", "LeaseKeepAlive", "LeaseTimeToLive", "LeaseLeases"]),
    ("etcdserverpb.Cluster", &["MemberAdd", "MemberRemove", "MemberUpdate", "MemberList", "MemberPromote"]),
    (
        "etcdserverpb.Maintenance",
        &["Alarm", "Status", "Defragment", "Hash", "HashKV", "Snapshot", "MoveLeader", "Downgrade"],
    ),
    (
        "etcdserverpb.Auth",
        &[
            "AuthEnable",
            "AuthDisable",
            "AuthStatus",
            "Authenticate",
            "UserAdd",
            "UserGet",
            "UserList",
            "UserDelete",
            "UserChangePassword",
            "UserGrantRole",
            "UserRevokeRole",
            "RoleAdd",
            "RoleGet",
            "RoleList",
            "RoleDelete",
            "RoleGrantPermission",
            "RoleRevokePermission",
        ],
    ),
    ("v3lockpb.Lock", &["Lock", "Unlock"]),
    ("v3electionpb.Election", &["Campaign", "Proclaim", "Leader", "Observe", "Resign"]),
    ("grpc.health.v1.Health", &["Check", "Watch"]),
];

/// One method's series, looked up once: a call costs one map lookup by its path.
struct Method {
    labels: [&'static str; 3],
    started: IntCounter,
    received: IntCounter,
    sent: IntCounter,
    ok: IntCounter,
}

static METHODS: LazyLock<HashMap<String, Method>> = LazyLock::new(|| {
    let mut methods = HashMap::new();
    for (service, names) in SERVICES {
        for &method in names {
            // As grpc_prometheus labels the kinds of call.
            let kind = match (service, method) {
                ("grpc.health.v1.Health", "Watch") | (_, "Snapshot" | "Observe") => "server_stream",
                (_, "Watch" | "LeaseKeepAlive") => "bidi_stream",
                _ => "unary",
            };
            let labels = [kind, service, method];
            let m = Method {
                labels,
                started: HOT.grpc_started.with_label_values(&labels),
                received: HOT.grpc_msg_received.with_label_values(&labels),
                sent: HOT.grpc_msg_sent.with_label_values(&labels),
                ok: HOT.grpc_handled.with_label_values(&[kind, service, method, "OK"]),
            };
            methods.insert(format!("/{service}/{method}"), m);
        }
    }
    methods
});

/// The middleware: `/etcdserverpb.KV/Put` is service `etcdserverpb.KV`, method `Put`.
pub async fn count(req: Request, next: Next) -> Response {
    let Some(method) = METHODS.get(req.uri().path()) else {
        return next.run(req).await;
    };
    method.started.inc();
    let started = std::time::Instant::now();
    let req = req.map(|b| Body::new(Counted::new(b, method.received.clone(), &HOT.client_received_bytes, None)));
    let resp = next.run(req).await;
    let status = resp.headers().get("grpc-status").map(code);
    let mut handled = Handled { method, done: false, started };
    if let Some(c) = status {
        handled.record(c);
    }
    resp.map(|b| Body::new(Counted::new(b, method.sent.clone(), &HOT.client_sent_bytes, Some(handled))))
}

fn code(v: &http::HeaderValue) -> &'static str {
    v.to_str().ok().and_then(|s| s.parse::<usize>().ok()).and_then(|n| CODES.get(n).copied()).unwrap_or("Unknown")
}

/// Counts the call handled once: with its status, or as `Canceled` when dropped without one.
struct Handled {
    method: &'static Method,
    done: bool,
    started: std::time::Instant,
}

impl Handled {
    fn record(&mut self, code: &str) {
        if !self.done {
            self.done = true;
            let [kind, service, method] = self.method.labels;
            if code == "OK" {
                self.method.ok.inc();
            } else {
                HOT.grpc_handled.with_label_values(&[kind, service, method, code]).inc();
            }
            if crate::metrics::extensive() {
                HOT.grpc_handling.with_label_values(&self.method.labels).observe(self.started.elapsed().as_secs_f64());
            }
        }
    }
}

impl Drop for Handled {
    fn drop(&mut self) {
        self.record("Canceled");
    }
}

/// Finds the messages in a body's bytes: each is a 5-byte prefix (a compression flag and
/// a big-endian length) and then the message, and frames may split them anywhere.
#[derive(Default)]
struct Messages {
    prefix: [u8; 5],
    prefix_len: usize,
    /// Bytes of the current message still to come.
    rest: u64,
}

impl Messages {
    /// Reads `data`; returns the messages that begin in it and their bytes within it.
    fn feed(&mut self, mut data: &[u8]) -> (u64, u64) {
        let (mut messages, mut bytes) = (0, 0);
        while !data.is_empty() {
            if self.rest > 0 {
                let n = self.rest.min(data.len() as u64);
                self.rest -= n;
                bytes += n;
                data = &data[n as usize..];
                continue;
            }
            let n = (5 - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&data[..n]);
            self.prefix_len += n;
            data = &data[n..];
            if self.prefix_len == 5 {
                self.prefix_len = 0;
                let [_, a, b, c, d] = self.prefix;
                self.rest = u64::from(u32::from_be_bytes([a, b, c, d]));
                messages += 1;
            }
        }
        (messages, bytes)
    }
}

/// A body whose messages and their bytes are counted as they pass; a response's also
/// records the call handled when its trailers carry the status.
struct Counted {
    body: Body,
    messages: Messages,
    count: IntCounter,
    bytes: &'static IntCounter,
    handled: Option<Handled>,
}

impl Counted {
    fn new(body: Body, count: IntCounter, bytes: &'static IntCounter, handled: Option<Handled>) -> Counted {
        Counted { body, messages: Messages::default(), count, bytes, handled }
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &frame {
            if let Some(data) = f.data_ref() {
                let (messages, bytes) = this.messages.feed(data);
                this.count.inc_by(messages);
                this.bytes.inc_by(bytes);
            }
            if let (Some(handled), Some(status)) =
                (this.handled.as_mut(), f.trailers_ref().and_then(|t| t.get("grpc-status")))
            {
                handled.record(code(status));
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::Messages;

    fn framed(messages: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in messages {
            out.push(0);
            out.extend_from_slice(&(m.len() as u32).to_be_bytes());
            out.extend_from_slice(m);
        }
        out
    }

    #[test]
    fn messages_are_found_however_the_frames_split_them() {
        let body = framed(&[b"abc", b"", &[7; 300], b"z"]);
        for split in 1..body.len() {
            let mut m = Messages::default();
            let (mut count, mut bytes) = (0, 0);
            for chunk in body.chunks(split) {
                let (c, b) = m.feed(chunk);
                count += c;
                bytes += b;
            }
            assert_eq!((count, bytes), (4, 304), "frames of {split} bytes");
        }
    }
}

//! Early appends: the leader sends new entries to its followers while its own fsync runs,
//! and their answers stand in for openraft's own request for the same entries.
//!
//! openraft 0.9 writes the leader's new entries and waits for that write to be durable
//! before it starts replicating them (`append_to_log` awaits the flush callback), so every
//! write would pay for two fsyncs one after the other: the leader's, then a follower's, and
//! two round trips to the follower. etcd's leader sends its `MsgApp`s while it writes its
//! own WAL, and counts the answers.
//!
//! Keel gets the same without changing openraft: when the leader's log store is handed new
//! entries it also sends them, as the AppendEntries request openraft itself will send for
//! them a moment later (the leader's committed vote, the previous entry's log id, no commit
//! index), over a stream of its own to each follower. A follower takes it like any
//! AppendEntries from its leader: it writes the entries, fsyncs, and answers. The answers
//! are read in order: a success for entries up to log id L under vote V means the
//! follower's log matches the leader's through L, durably (Raft's log matching: the
//! follower checked the entry before the first one). When openraft, its own write done,
//! asks the network to send a request with vote V whose entries end at or before L, the
//! request is answered with that success instead of being sent again (see
//! [`EarlyAppends::covered`]); if the answer is not in yet, the request waits for it, and
//! if none can come (the early request was dropped, failed, or the stream broke), the
//! request goes out as usual. Such an answer claims no more than the follower said, so
//! commitment still means durable on a majority.
//!
//! The request that is not sent would also have told the follower the commit index, so
//! when it is new the network sends the follower a commit notice on the early stream: an
//! AppendEntries with no entries whose previous entry is the request's last one, which the
//! follower has. Requests with no entries (heartbeats, leadership checks) always go out.
//!
//! It is safe because an early request is exactly a request the leader may send: it carries
//! the leader's vote (a follower that has moved on to a newer term rejects it, as it would a
//! late request), and entries that are in the leader's log after an entry that is too (a
//! follower whose log differs at that point reports a conflict, as Raft has it). Early
//! requests are best effort: dropped when a follower's stream cannot be opened or its queue
//! is full, and then openraft's own requests do the work.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use openraft::error::RaftError;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use tokio::sync::{mpsc, watch};

use super::flush::Flushes;
use super::network::{open_stream, FRAME_APPEND};
use super::shared_sink::{Hand, SharedSink};
use super::{decode, encode, Entry, LogId, NodeId, TypeConfig, Vote};

/// Early requests queued per follower at most; more are dropped.
const QUEUE: usize = 64;
/// How long to wait before trying again to open a stream that failed to open.
const RETRY: Duration = Duration::from_secs(1);

/// The leader's side: one sender task per follower, each with its own stream.
#[derive(Clone)]
pub struct EarlyAppends {
    http: reqwest::Client,
    targets: Arc<parking_lot::Mutex<HashMap<NodeId, Target>>>,
    /// Told of every confirmation (see [`super::flush`]).
    flushes: Arc<OnceLock<Arc<Flushes>>>,
}

struct Target {
    base: String,
    link: Link,
    acks: Arc<watch::Sender<Acks>>,
}

/// The way to one follower's stream: written at once by whoever sends, when nothing waits
/// for the sender task; else through the task, in order (see [`SharedSink`]).
///
/// Handing every request to the task cost the leader's requests 20–25 µs before they left:
/// the task runs only once Raft's task, which appends and sends, has finished its turn.
#[derive(Clone)]
struct Link {
    tx: mpsc::Sender<Msg>,
    /// The open stream's writing half, with its requests awaiting answers.
    out: Arc<SharedSink<Sink, InFlight>>,
}

type Sink = futures::stream::SplitSink<super::network::RaftStream, Bytes>;

/// What the sender task is handed.
enum Msg {
    /// A request to write.
    Frame(Frame),
    /// A request written at once did not all leave: finish writing it.
    Flush,
}

impl Link {
    /// Sends `frame`, at once if the task has nothing to do; `false` if it had to be
    /// dropped (the task's queue is full, or it has stopped).
    fn send(&self, frame: Frame) -> bool {
        let (bytes, vote, upto) = (frame.bytes.clone(), frame.vote, frame.upto);
        let accepted = |in_flight: &InFlight| in_flight.lock().push_back((vote, upto));
        self.out.send(&bytes, true, accepted, |hand| match hand {
            Hand::Flush => self.tx.try_send(Msg::Flush).is_ok(),
            // After a failure the task opens another stream for it.
            Hand::Frame | Hand::AfterFailure => self.tx.try_send(Msg::Frame(frame)).is_ok(),
        })
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// An encoded request, its vote, and the log id its answer would confirm.
struct Frame {
    bytes: Bytes,
    vote: Vote,
    upto: LogId,
}

/// What a follower has confirmed through early requests, and what is still on its way.
#[derive(Clone, Debug, Default)]
struct Acks {
    /// The vote of the requests below (a new vote starts over).
    vote: Option<Vote>,
    /// The highest log id the follower has confirmed it holds, durably, under `vote`.
    matched: Option<LogId>,
    /// The highest log id sent under `vote`.
    pending: Option<LogId>,
    /// The highest log id sent under `vote` whose answer came, whatever it said.
    answered: Option<LogId>,
    /// The highest commit index told to the follower on the early stream.
    commit_told: Option<LogId>,
}

/// Whether openraft's request can be answered from early answers.
pub enum Covered {
    /// The follower confirmed the request's entries: answer it with success.
    Yes,
    /// Send it.
    No,
}

impl EarlyAppends {
    pub fn new(http: reqwest::Client) -> EarlyAppends {
        EarlyAppends { http, targets: Arc::default(), flushes: Arc::default() }
    }

    /// Tells `flushes` of every entry a follower confirms holding from now on.
    pub fn report_to(&self, flushes: Arc<Flushes>) {
        let _ = self.flushes.set(flushes);
    }

    /// Starts sending early requests to `id` at peer URL `base` (called whenever openraft
    /// makes a replication client for it).
    pub fn target(&self, id: NodeId, base: &str) {
        let mut targets = self.targets.lock();
        if targets.get(&id).is_some_and(|t| t.base == base && !t.link.is_closed()) {
            return;
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let link = Link { tx, out: Arc::default() };
        let acks = Arc::new(watch::Sender::new(Acks::default()));
        let report = Report { target: id, flushes: self.flushes.clone() };
        tokio::spawn(send_loop(self.http.clone(), base.to_string(), rx, link.out.clone(), acks.clone(), report));
        targets.insert(id, Target { base: base.to_string(), link, acks });
    }

    /// Sends `entries`, which follow `prev` in the leader's log, to every follower.
    pub fn send(&self, prev: LogId, entries: &[Entry]) {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else { return };
        let leader = first.log_id.leader_id;
        let vote = Vote::new_committed(leader.term, leader.node_id);
        let req = AppendEntriesRequest::<TypeConfig> {
            vote,
            prev_log_id: Some(prev),
            entries: entries.to_vec(),
            leader_commit: None,
        };
        let Some(bytes) = frame_of(&req) else { return };
        for (id, t) in self.targets.lock().iter() {
            if *id != leader.node_id && t.link.send(Frame { bytes: bytes.clone(), vote, upto: last.log_id }) {
                // Recorded here rather than by the sender task, so that openraft's request,
                // made right after, waits for the answer even if the task has not run yet.
                t.acks.send_if_modified(|a| {
                    if a.vote != Some(vote) {
                        *a = Acks { vote: Some(vote), ..Acks::default() };
                    }
                    a.pending = a.pending.max(Some(last.log_id));
                    false
                });
            }
        }
    }

    /// Whether `target` has confirmed, under `vote`, holding entries through `last`: at once
    /// if it has, else once the answer to an early request that covers them comes in, for
    /// at most `wait`. When it has and `commit` is news to it, a commit notice goes out.
    pub async fn covered(
        &self,
        target: NodeId,
        vote: &Vote,
        last: LogId,
        commit: Option<LogId>,
        wait: Duration,
    ) -> Covered {
        let Some((acks, link)) = self.targets.lock().get(&target).map(|t| (t.acks.clone(), t.link.clone())) else {
            return Covered::No;
        };
        let mut rx = acks.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            {
                let a = rx.borrow_and_update();
                if a.vote.as_ref() != Some(vote) {
                    return Covered::No;
                }
                if a.matched.is_some_and(|m| m.index >= last.index) {
                    break;
                }
                let coming = a.pending.is_some_and(|p| p.index >= last.index);
                let came = a.answered.is_some_and(|p| p.index >= last.index);
                if !coming || came {
                    return Covered::No;
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return Covered::No,
            }
        }
        let mut tell = false;
        acks.send_if_modified(|a| {
            tell = commit > a.commit_told;
            if tell {
                a.commit_told = commit;
            }
            tell
        });
        if tell {
            let req = AppendEntriesRequest::<TypeConfig> {
                vote: *vote,
                prev_log_id: Some(last),
                entries: Vec::new(),
                leader_commit: commit,
            };
            if let Some(bytes) = frame_of(&req) {
                link.send(Frame { bytes, vote: *vote, upto: last });
            }
            // (The notice's answer confirms no more than the follower already has.)
        }
        Covered::Yes
    }

    /// Notes that openraft's own request told `target` the commit index `commit`.
    pub fn told_commit(&self, target: NodeId, commit: Option<LogId>) {
        if let Some(t) = self.targets.lock().get(&target) {
            t.acks.send_if_modified(|a| {
                let newer = commit > a.commit_told;
                if newer {
                    a.commit_told = commit;
                }
                false
            });
        }
    }
}

fn frame_of(req: &AppendEntriesRequest<TypeConfig>) -> Option<Bytes> {
    let body = encode(req).ok()?;
    let mut frame = BytesMut::with_capacity(body.len() + 1);
    frame.put_u8(FRAME_APPEND);
    frame.extend_from_slice(&body);
    Some(frame.freeze())
}

/// Where a follower's confirmations are reported, besides its [`Acks`].
#[derive(Clone)]
struct Report {
    target: NodeId,
    flushes: Arc<OnceLock<Arc<Flushes>>>,
}

/// Requests sent on one stream whose answers have not come back, in order.
type InFlight = Arc<parking_lot::Mutex<VecDeque<(Vote, LogId)>>>;

/// Writes the early requests handed to it (see [`Link`]) to one follower's stream, opening
/// it when needed; a task of its own reads the answers (see [`read_answers`]).
async fn send_loop(
    http: reqwest::Client,
    base: String,
    mut rx: mpsc::Receiver<Msg>,
    out: Arc<SharedSink<Sink, InFlight>>,
    acks: Arc<watch::Sender<Acks>>,
    report: Report,
) {
    let mut failed_at: Option<Instant> = None;
    // A request that will never be answered: nobody should wait for its answer.
    let dropped = |frame: &Frame| {
        acks.send_modify(|a| {
            if a.vote == Some(frame.vote) {
                a.answered = a.answered.max(Some(frame.upto));
            }
        })
    };
    let finished = |n: usize| out.finished(n, true);
    while let Some(msg) = rx.recv().await {
        let first = match msg {
            Msg::Frame(f) => Some(f),
            Msg::Flush => None,
        };
        if !out.is_open() {
            // (A flush for a stream that has failed has nothing left to do.)
            let Some(frame) = &first else {
                finished(1);
                continue;
            };
            if failed_at.is_some_and(|t| t.elapsed() < RETRY) {
                dropped(frame);
                finished(1);
                continue;
            }
            match open_stream(&http, &base).await {
                Ok(Some(stream)) => {
                    let (sink, answers) = stream.split();
                    let in_flight = InFlight::default();
                    tokio::spawn(read_answers(answers, in_flight.clone(), acks.clone(), report.clone()));
                    out.open(sink, in_flight);
                    failed_at = None;
                }
                Ok(None) | Err(_) => {
                    failed_at = Some(Instant::now());
                    dropped(frame);
                    finished(1);
                    continue;
                }
            }
        }
        // Everything queued goes out in one write.
        let mut taken = 1;
        let mut ok = true;
        let mut next = first;
        loop {
            if let Some(f) = next.take() {
                let accepted = |in_flight: &InFlight| in_flight.lock().push_back((f.vote, f.upto));
                if !out.feed(f.bytes.clone(), accepted).await {
                    ok = false;
                    break;
                }
            }
            match rx.try_recv() {
                Ok(Msg::Frame(f)) => next = Some(f),
                Ok(Msg::Flush) => {}
                Err(_) => break,
            }
            taken += 1;
        }
        let ok = ok && out.flush().await;
        out.finished(taken, ok);
    }
}

/// Reads one stream's answers, in the order its requests went out, and records what they
/// confirm. When the stream ends, nothing more is pending on it.
async fn read_answers<S>(mut answers: S, in_flight: InFlight, acks: Arc<watch::Sender<Acks>>, report: Report)
where
    S: futures::Stream<Item = Result<BytesMut, std::io::Error>> + Unpin,
{
    while let Some(Ok(answer)) = answers.next().await {
        let Some((vote, upto)) = in_flight.lock().pop_front() else { break };
        let confirmed = match decode::<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>>(&answer) {
            Ok(Ok(AppendEntriesResponse::Success)) => Some(upto),
            Ok(Ok(AppendEntriesResponse::PartialSuccess(m))) => m,
            _ => None,
        };
        acks.send_modify(|a| {
            if a.vote == Some(vote) {
                a.matched = a.matched.max(confirmed);
                a.answered = a.answered.max(Some(upto));
            }
        });
        if let (Some(m), Some(f)) = (confirmed, report.flushes.get()) {
            f.acked(report.target, vote, m);
        }
    }
    // Whatever was sent on this stream and not answered never will be.
    in_flight.lock().clear();
    acks.send_modify(|a| {
        a.pending = a.matched;
        a.answered = a.matched;
    });
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{header, StatusCode};
    use axum::response::Response;
    use openraft::raft::AppendEntriesResponse;
    use openraft::{CommittedLeaderId, EntryPayload};

    use futures::SinkExt;

    use super::*;
    use crate::raft::network::{frame_codec, STREAM_PATH, STREAM_PROTOCOL};

    /// A follower that records the AppendEntries requests it gets on Raft streams and
    /// answers each with success.
    async fn follower() -> (String, mpsc::UnboundedReceiver<AppendEntriesRequest<TypeConfig>>) {
        follower_answering(AppendEntriesResponse::Success).await
    }

    /// A follower that records the AppendEntries requests it gets and answers each with
    /// `answer`.
    async fn follower_answering(
        answer: AppendEntriesResponse<NodeId>,
    ) -> (String, mpsc::UnboundedReceiver<AppendEntriesRequest<TypeConfig>>) {
        follower_pausing(answer, Duration::ZERO).await
    }

    /// A follower that answers like [`follower_answering`], but stops reading for `pause`
    /// after its first request (so that the leader's writes fill the socket meanwhile).
    async fn follower_pausing(
        answer: AppendEntriesResponse<NodeId>,
        pause: Duration,
    ) -> (String, mpsc::UnboundedReceiver<AppendEntriesRequest<TypeConfig>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let answer: Result<AppendEntriesResponse<NodeId>, openraft::error::RaftError<NodeId>> = Ok(answer);
        let answer = Bytes::from(encode(&answer).expect("an answer encodes"));
        let app = axum::Router::new().route(
            STREAM_PATH,
            axum::routing::post(move |mut req: axum::extract::Request| {
                let (tx, answer) = (tx.clone(), answer.clone());
                async move {
                    let upgrade = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        let Ok(io) = upgrade.await else { return };
                        let mut framed =
                            tokio_util::codec::Framed::new(hyper_util::rt::TokioIo::new(io), frame_codec());
                        while let Some(Ok(frame)) = framed.next().await {
                            let Some((&FRAME_APPEND, body)) = frame.split_first() else { return };
                            let Ok(req) = super::super::decode::<AppendEntriesRequest<TypeConfig>>(body) else {
                                return;
                            };
                            let first = req.entries.first().map(|e| e.log_id.index) == Some(10);
                            let _ = tx.send(req);
                            if framed.send(answer.clone()).await.is_err() {
                                return;
                            }
                            if first {
                                tokio::time::sleep(pause).await;
                            }
                        }
                    });
                    let mut resp = Response::new(Body::empty());
                    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                    resp.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("upgrade"));
                    resp.headers_mut().insert(header::UPGRADE, header::HeaderValue::from_static(STREAM_PROTOCOL));
                    resp
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), rx)
    }

    fn entry(term: u64, leader: NodeId, index: u64) -> Entry {
        Entry { log_id: LogId::new(CommittedLeaderId::new(term, leader), index), payload: EntryPayload::Blank }
    }

    async fn next(
        rx: &mut mpsc::UnboundedReceiver<AppendEntriesRequest<TypeConfig>>,
    ) -> AppendEntriesRequest<TypeConfig> {
        tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("an early request in time").expect("open")
    }

    #[tokio::test]
    async fn early_requests_are_the_leaders_own_and_arrive_in_order() {
        let (url, mut rx) = follower().await;
        let early = EarlyAppends::new(reqwest::Client::new());
        early.target(2, &url);
        // The leader itself is never a target, even if openraft made a client for it.
        let (own_url, mut own_rx) = follower().await;
        early.target(1, &own_url);

        let prev = entry(3, 1, 9).log_id;
        early.send(prev, &[entry(3, 1, 10), entry(3, 1, 11)]);
        early.send(entry(3, 1, 11).log_id, &[entry(3, 1, 12)]);

        let first = next(&mut rx).await;
        assert_eq!(first.vote, Vote::new_committed(3, 1));
        assert_eq!(first.prev_log_id, Some(prev));
        assert_eq!(first.entries.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), vec![10, 11]);
        assert_eq!(first.leader_commit, None, "an early request never moves the commit index");
        let second = next(&mut rx).await;
        assert_eq!(second.prev_log_id, Some(entry(3, 1, 11).log_id));
        assert_eq!(second.entries.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), vec![12]);
        assert!(own_rx.try_recv().is_err(), "the leader sent an early request to itself");
    }

    /// An entry with a 64 KiB value: a few of them fill a socket's buffer.
    fn big_entry(term: u64, leader: NodeId, index: u64) -> Entry {
        use crate::proto::etcdserverpb::PutRequest;
        use crate::proto::keelpb::raft_request::Command;
        let put = PutRequest { key: "k".into(), value: vec![7u8; 64 << 10].into(), ..Default::default() };
        let cmd =
            super::super::Cmd(crate::proto::keelpb::RaftRequest { command: Some(Command::Put(put)), auth: None }, None);
        Entry { log_id: LogId::new(CommittedLeaderId::new(term, leader), index), payload: EntryPayload::Normal(cmd) }
    }

    #[tokio::test]
    async fn requests_written_at_once_and_by_the_task_arrive_in_order() {
        let (url, mut rx) = follower_pausing(AppendEntriesResponse::Success, Duration::from_millis(300)).await;
        let early = EarlyAppends::new(reqwest::Client::new());
        early.target(2, &url);
        early.send(entry(3, 1, 9).log_id, &[entry(3, 1, 10)]);
        assert_eq!(next(&mut rx).await.entries[0].log_id.index, 10);
        // The stream is open: requests are written by the sender itself until the socket
        // fills, then through the task until it has written what it was given. Requests the
        // task's queue has no room for are dropped (early requests are best effort); those
        // that go out must keep their order.
        for i in 11..=300 {
            early.send(entry(3, 1, i - 1).log_id, &[big_entry(3, 1, i)]);
            if i % 16 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let mut seen = Vec::new();
        while let Ok(Some(req)) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
            seen.push(req.entries[0].log_id.index);
        }
        assert!(seen.len() > 64, "only {} of 290 requests arrived", seen.len());
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "out of order: {seen:?}");
    }

    #[tokio::test]
    async fn a_follower_that_cannot_be_reached_does_not_hold_up_the_others() {
        // Nothing listens on the first target's port.
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let dead_url = format!("http://{}", dead.local_addr().expect("addr"));
        drop(dead);
        let (url, mut rx) = follower().await;
        let early = EarlyAppends::new(reqwest::Client::new());
        early.target(2, &dead_url);
        early.target(3, &url);
        for i in 0..QUEUE as u64 {
            early.send(entry(1, 1, i + 1).log_id, &[entry(1, 1, i + 2)]);
        }
        for i in 0..QUEUE as u64 {
            let req = next(&mut rx).await;
            assert_eq!(req.entries[0].log_id.index, i + 2);
        }
    }

    #[tokio::test]
    async fn answers_stand_in_for_openraft_requests_and_the_commit_is_told_once() {
        let (url, mut rx) = follower().await;
        let early = EarlyAppends::new(reqwest::Client::new());
        early.target(2, &url);
        let vote = Vote::new_committed(3, 1);
        let (id, wait) = (|i| entry(3, 1, i).log_id, Duration::from_secs(10));
        early.send(id(9), &[entry(3, 1, 10), entry(3, 1, 11)]);
        // openraft's request for entries through 11 is answered from the early answer.
        assert!(matches!(early.covered(2, &vote, id(11), Some(id(9)), wait).await, Covered::Yes));
        assert_eq!(next(&mut rx).await.entries.len(), 2, "the early request");
        // The commit index that request would have carried goes in a notice of its own.
        let notice = next(&mut rx).await;
        assert!(notice.entries.is_empty());
        assert_eq!((notice.prev_log_id, notice.leader_commit), (Some(id(11)), Some(id(9))));
        // A request for fewer entries is covered too; the same commit is not told again.
        assert!(matches!(early.covered(2, &vote, id(10), Some(id(9)), wait).await, Covered::Yes));
        early.send(id(11), &[entry(3, 1, 12)]);
        assert_eq!(next(&mut rx).await.entries.len(), 1, "the next early request, no second notice");
        // Entries never sent early, another vote, a target with no early stream: sent as usual.
        let short = Duration::from_millis(1);
        assert!(matches!(early.covered(2, &vote, id(13), None, short).await, Covered::No));
        assert!(matches!(early.covered(2, &Vote::new_committed(4, 1), id(11), None, short).await, Covered::No));
        assert!(matches!(early.covered(5, &vote, id(11), None, short).await, Covered::No));
    }

    #[tokio::test]
    async fn a_refused_early_request_covers_nothing_and_is_not_waited_for() {
        let (url, mut rx) = follower_answering(AppendEntriesResponse::Conflict).await;
        let early = EarlyAppends::new(reqwest::Client::new());
        early.target(2, &url);
        let vote = Vote::new_committed(3, 1);
        early.send(entry(3, 1, 9).log_id, &[entry(3, 1, 10)]);
        // The answer is awaited, and once it is in (a conflict), the request must go out:
        // the call returns long before its hour is up.
        let started = Instant::now();
        let got = early.covered(2, &vote, entry(3, 1, 10).log_id, None, Duration::from_secs(3600)).await;
        assert!(matches!(got, Covered::No));
        assert!(started.elapsed() < Duration::from_secs(60));
        assert_eq!(next(&mut rx).await.entries.len(), 1);
    }
}

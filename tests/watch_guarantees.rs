//! etcd's watch guarantees, checked against acknowledged writes: ordered, unique, atomic,
//! reliable, resumable, bookmarkable; at scale (10,000 watchers) and with a reader that
//! stalls long enough to fall behind its stream's buffer.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, EventType, Txn, TxnOp, WatchOptions};
use tokio::sync::Mutex;

use crate::harness::{client, Flavor, Member};

/// One received event: revision, key, value (None for a delete).
type Ev = (i64, String, Option<String>);

/// Everything a watcher saw: events, and how they were grouped into responses.
#[derive(Default, Debug, Clone)]
struct Seen {
    events: Vec<Ev>,
    /// (first, last) event revision of each response carrying events.
    responses: Vec<(i64, i64)>,
    /// Revisions of progress notifications, and how many events had arrived before each.
    progress: Vec<(i64, usize)>,
    canceled: Option<i64>,
}

fn record(seen: &mut Seen, resp: &etcd_client::WatchResponse) {
    if resp.canceled() {
        seen.canceled = Some(resp.compact_revision());
    }
    let evs: Vec<Ev> = resp
        .events()
        .iter()
        .filter_map(|e| {
            let kv = e.kv()?;
            let value = (e.event_type() == EventType::Put).then(|| String::from_utf8_lossy(kv.value()).into_owned());
            Some((kv.mod_revision(), String::from_utf8_lossy(kv.key()).into_owned(), value))
        })
        .collect();
    if let (Some(first), Some(last)) = (evs.first(), evs.last()) {
        seen.responses.push((first.0, last.0));
    } else if !resp.created() && !resp.canceled() {
        seen.progress.push((resp.header().map_or(0, |h| h.revision()), seen.events.len()));
    }
    seen.events.extend(evs);
}

/// Checks the guarantees of one watcher against the expected history.
fn check(name: &str, seen: &Seen, expected: &[Ev]) {
    let mut last = 0;
    for (rev, _, _) in &seen.events {
        assert!(*rev >= last, "{name}: ordered: revision {rev} after {last}");
        last = *rev;
    }
    let mut uniq = std::collections::HashSet::new();
    for (rev, key, _) in &seen.events {
        assert!(uniq.insert((*rev, key.clone())), "{name}: unique: ({rev}, {key}) twice");
    }
    for w in seen.responses.windows(2) {
        assert_ne!(w[0].1, w[1].0, "{name}: atomic: revision {} split across responses", w[1].0);
    }
    assert_eq!(seen.events.len(), expected.len(), "{name}: reliable: event count");
    assert_eq!(seen.events, expected, "{name}: reliable: events differ");
    for (rev, before) in &seen.progress {
        let delivered = seen.events[..*before].last().map_or(0, |e| e.0);
        assert!(*rev >= delivered, "{name}: bookmarkable: progress {rev} behind delivered {delivered}");
        if let Some(next) = seen.events.get(*before) {
            assert!(next.0 > *rev, "{name}: bookmarkable: event {} at or below progress {rev}", next.0);
        }
    }
}

/// The history the acknowledged writes imply, keyed by revision.
#[derive(Default)]
struct History(BTreeMap<i64, Vec<(String, Option<String>)>>);

impl History {
    fn events(&self, from: i64, prefix: &str) -> Vec<Ev> {
        self.0
            .range(from..)
            .flat_map(|(rev, evs)| {
                evs.iter().filter(|(k, _)| k.starts_with(prefix)).map(move |(k, v)| (*rev, k.clone(), v.clone()))
            })
            .collect()
    }
}

/// Puts, deletes and two-key transactions over 20 keys; records what each write did.
async fn writer(mut c: Client, id: usize, ops: usize, history: Arc<Mutex<History>>) {
    for i in 0..ops {
        let k1 = format!("g/{:02}", (i * 7 + id) % 20);
        let k2 = format!("g/{:02}", (i * 7 + id + 1) % 20);
        let v = format!("w{id}-{i}");
        match i % 5 {
            0..=2 => {
                let r = c.put(k1.clone(), v.clone(), None).await.expect("put");
                history.lock().await.0.insert(r.header().map_or(0, |h| h.revision()), vec![(k1, Some(v))]);
            }
            3 => {
                let r = c.delete(k1.clone(), None).await.expect("delete");
                if r.deleted() > 0 {
                    history.lock().await.0.insert(r.header().map_or(0, |h| h.revision()), vec![(k1, None)]);
                }
            }
            _ => {
                let t = Txn::new()
                    .and_then([TxnOp::put(k1.clone(), v.clone(), None), TxnOp::put(k2.clone(), v.clone(), None)]);
                let r = c.txn(t).await.expect("txn");
                let evs = vec![(k1, Some(v.clone())), (k2, Some(v))];
                history.lock().await.0.insert(r.header().map_or(0, |h| h.revision()), evs);
            }
        }
    }
}

/// Reads a watch stream until `done` says it has seen enough; returns what each watch id saw.
async fn drain(
    name: &str,
    mut s: etcd_client::WatchStream,
    done: impl Fn(&HashMap<i64, Seen>) -> bool,
) -> (etcd_client::WatchStream, HashMap<i64, Seen>) {
    let mut seen: HashMap<i64, Seen> = HashMap::new();
    while !done(&seen) {
        match tokio::time::timeout(Duration::from_secs(60), s.message()).await {
            Ok(Ok(Some(resp))) => record(seen.entry(resp.watch_id()).or_default(), &resp),
            other => panic!(
                "{name}: watch stream ended or stalled after {:?}: {other:?}",
                seen.get(&0).map(|s| s.events.len())
            ),
        }
    }
    (s, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarantees_hold_under_concurrent_writes_a_stalled_reader_and_compaction() {
    let m = Member::single(Flavor::Keel);
    let mut c = client(&m).await;
    let opts = || Some(WatchOptions::new().with_prefix().with_start_revision(1));
    let fast = c.watch("g/", opts()).await.expect("watch");
    // This stream is not read until all writes are done: it falls behind its buffer.
    let stalled = c.watch("g/", opts()).await.expect("watch");

    let history = Arc::new(Mutex::new(History::default()));
    let ops = 4000;
    let writers: Vec<_> = (0..4).map(|w| tokio::spawn(writer(c.clone(), w, ops / 4, history.clone()))).collect();
    let total = |h: &HashMap<i64, Seen>| h.values().map(|s| s.events.len()).sum::<usize>();
    let expected_count = || async { history.lock().await.events(1, "g/").len() };
    let fast_reader = tokio::spawn(async move {
        let mut s = fast;
        let mut seen: HashMap<i64, Seen> = HashMap::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(30), s.message()).await {
                Ok(Ok(Some(resp))) => record(seen.entry(resp.watch_id()).or_default(), &resp),
                _ => return (s, seen),
            }
            if seen.values().any(|v| v.events.iter().any(|e| e.2.as_deref() == Some("end"))) {
                return (s, seen);
            }
        }
    });
    for w in writers {
        w.await.expect("writer");
    }
    c.put("g/end", "end", None).await.expect("marker");
    let end_rev = c.get("g/end", None).await.expect("get").kvs()[0].mod_revision();
    history.lock().await.0.insert(end_rev, vec![("g/end".into(), Some("end".into()))]);
    let want = expected_count().await;

    let (mut fast, fast_seen) = fast_reader.await.expect("reader");
    let expected = history.lock().await.events(1, "g/");
    check("fast", &fast_seen[&0], &expected);

    let (_, stalled_seen) = drain("stalled", stalled, |h| total(h) >= want).await;
    check("stalled", &stalled_seen[&0], &expected);

    // Bookmarkable: a progress request answered after everything delivered.
    fast.request_progress().await.expect("progress");
    let resp = tokio::time::timeout(Duration::from_secs(10), fast.message()).await.expect("progress").expect("ok");
    let resp = resp.expect("a response");
    assert_eq!(resp.watch_id(), -1);
    assert!(resp.header().map_or(0, |h| h.revision()) >= end_rev);

    // Resumable: from any revision in the window, exactly the history from there.
    let mid = end_rev / 2;
    let resumed = c.watch("g/", Some(WatchOptions::new().with_prefix().with_start_revision(mid))).await.expect("watch");
    let from_mid = history.lock().await.events(mid, "g/");
    let n = from_mid.len();
    let (_, seen) = drain("resumed", resumed, |h| total(h) >= n).await;
    check("resumed", &seen[&0], &from_mid);

    // Compacted history cancels the watcher with the compaction revision.
    c.compact(mid, None).await.expect("compact");
    let mut gone =
        c.watch("g/", Some(WatchOptions::new().with_prefix().with_start_revision(mid - 5))).await.expect("watch");
    let mut canceled = None;
    while canceled.is_none() {
        let r = tokio::time::timeout(Duration::from_secs(10), gone.message())
            .await
            .expect("reply")
            .expect("ok")
            .expect("msg");
        if r.canceled() {
            canceled = Some(r.compact_revision());
        }
    }
    assert_eq!(canceled, Some(mid));
    let at_compaction =
        c.watch("g/", Some(WatchOptions::new().with_prefix().with_start_revision(mid))).await.expect("watch");
    let n = history.lock().await.events(mid, "g/").len();
    let (_, seen) = drain("at compaction", at_compaction, |h| total(h) >= n).await;
    assert!(seen[&0].canceled.is_none(), "watching from the compaction revision itself is allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_watchers_receive_every_event_in_order() {
    let m = Member::single(Flavor::Keel);
    let mut c = client(&m).await;
    let (streams, per_stream, puts) = (100usize, 100usize, 50usize);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(streams);
    let mut readers = Vec::new();
    for s in 0..streams {
        let mut ws = c.watch("hot", None).await.expect("watch");
        for i in 1..per_stream {
            // Half the watchers watch the key, half a prefix that covers it.
            let (key, opts) = if i % 2 == 1 { ("ho", Some(WatchOptions::new().with_prefix())) } else { ("hot", None) };
            ws.watch(key, opts).await.expect("add watcher");
        }
        let ready = ready_tx.clone();
        readers.push(tokio::spawn(async move {
            let mut created = 0;
            let mut seen: HashMap<i64, Vec<(i64, String)>> = HashMap::new();
            loop {
                let r = tokio::time::timeout(Duration::from_secs(120), ws.message()).await;
                let Ok(Ok(Some(resp))) = r else { panic!("stream {s} stalled: {r:?}") };
                if resp.created() {
                    created += 1;
                    if created == per_stream {
                        let _ = ready.send(()).await;
                    }
                    continue;
                }
                for e in resp.events() {
                    let kv = e.kv().expect("kv");
                    let value = String::from_utf8_lossy(kv.value()).into_owned();
                    seen.entry(resp.watch_id()).or_default().push((kv.mod_revision(), value));
                }
                if seen.len() == per_stream && seen.values().all(|v| v.len() == puts) {
                    return seen;
                }
            }
        }));
    }
    // Every watcher is created (and so registered) before the first write.
    for _ in 0..streams {
        ready_rx.recv().await.expect("a stream became ready");
    }
    let mut revs = Vec::new();
    for i in 0..puts {
        let r = c.put("hot", format!("v{i:03}"), None).await.expect("put");
        revs.push(r.header().map_or(0, |h| h.revision()));
    }
    let expected: Vec<(i64, String)> = revs.iter().enumerate().map(|(i, r)| (*r, format!("v{i:03}"))).collect();
    for (s, r) in readers.into_iter().enumerate() {
        let seen = r.await.expect("reader");
        assert_eq!(seen.len(), per_stream);
        for (id, evs) in seen {
            assert_eq!(evs, expected, "stream {s} watcher {id}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_notifications_fragments_and_client_chosen_ids() {
    let m = Member::single_with(Flavor::Keel, &["--experimental-watch-progress-notify-interval=200ms"]);
    let mut c = client(&m).await;
    c.put("p", "1", None).await.expect("put");
    let rev = c.get("p", None).await.expect("get").header().map_or(0, |h| h.revision());

    // Periodic progress notification to a watcher that asked for it, at the current revision.
    let mut s = c.watch("p", Some(WatchOptions::new().with_progress_notify().with_watch_id(7))).await.expect("watch");
    let created = s.message().await.expect("ok").expect("created");
    assert!(created.created());
    assert_eq!(created.watch_id(), 7, "the client-chosen id is used");
    let progress =
        tokio::time::timeout(Duration::from_secs(5), s.message()).await.expect("progress").expect("ok").expect("msg");
    assert_eq!((progress.watch_id(), progress.events().len()), (7, 0));
    assert_eq!(progress.header().map_or(0, |h| h.revision()), rev);

    // The same id again on that stream is refused.
    s.watch("q", Some(WatchOptions::new().with_watch_id(7))).await.expect("send");
    let dup = loop {
        let r = s.message().await.expect("ok").expect("msg");
        if r.created() {
            break r;
        }
    };
    assert!(dup.canceled(), "duplicate watch id accepted");

    // One revision larger than a message: split into fragments, reassembled whole.
    for i in 0..3 {
        c.put(format!("big/{i}"), vec![b'x'; 1_000_000], None).await.expect("put big");
    }
    // etcd-client hides the fragment flag: speak the protocol directly.
    use keel_store::proto::etcdserverpb::watch_client::WatchClient;
    use keel_store::proto::etcdserverpb::{watch_request::RequestUnion, WatchCreateRequest, WatchRequest};
    let channel =
        tonic::transport::Channel::from_shared(m.client_url()).expect("url").connect().await.expect("connect");
    let mut raw = WatchClient::new(channel).max_decoding_message_size(64 << 20);
    let create = WatchCreateRequest {
        key: "big/".into(),
        range_end: "big0".into(),
        fragment: true,
        prev_kv: true,
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) }).await.expect("send");
    let mut f = raw.watch(tokio_stream::wrappers::ReceiverStream::new(rx)).await.expect("watch").into_inner();
    assert!(f.message().await.expect("ok").expect("created").created);
    c.delete("big/", Some(etcd_client::DeleteOptions::new().with_prefix())).await.expect("delete");
    let mut parts = Vec::new();
    loop {
        let r =
            tokio::time::timeout(Duration::from_secs(10), f.message()).await.expect("event").expect("ok").expect("msg");
        parts.push(r.events.len());
        if !r.fragment {
            break;
        }
    }
    assert!(parts.len() > 1, "a 3 MB revision arrived unfragmented");
    assert_eq!(parts.iter().sum::<usize>(), 3, "every event of the revision arrived");
}

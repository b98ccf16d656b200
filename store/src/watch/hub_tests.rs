//! The watch hub's tests (see `hub.rs`).

use super::*;
use crate::engine::{Engine, WriteBatch};
use crate::proto::etcdserverpb::{CompactionRequest, DeleteRangeRequest, PutRequest};
use crate::proto::keelpb::raft_request::Command;
use foldhash::HashSetExt;
use std::collections::VecDeque;

use crate::proto::etcdserverpb::watch_create_request::FilterType;
use tokio::sync::mpsc;

fn put(store: &MvccStore, k: &str, v: &str) {
    let cmd = Command::Put(PutRequest { key: k.to_string().into(), value: v.to_string().into(), ..Default::default() });
    store.apply(&cmd, WriteBatch::default()).expect("apply");
}

/// Puts `v0`, `v1`, ... to key `k`: `n` revisions.
fn puts_to_k(store: &MvccStore, n: usize) {
    for i in 0..n {
        put(store, "k", &format!("v{i}"));
    }
}

fn open() -> (tempfile::TempDir, Arc<MvccStore>, Arc<WatchHub>) {
    let dir = tempfile::tempdir().expect("tmp");
    let store = MvccStore::open(Engine::open(dir.path()).expect("engine"), 2).expect("store");
    let hub = WatchHub::attach(&store, Fragmenting { max_bytes: 1 << 20, header: ResponseHeader::default() });
    (dir, store, hub)
}

/// A stream's receiving end, as the Watch service reads it: queued items become responses.
struct Rx {
    rx: mpsc::Receiver<Out>,
    ready: VecDeque<WatchResponse>,
}

impl Rx {
    async fn recv(&mut self) -> Option<WatchResponse> {
        while self.ready.is_empty() {
            let out = self.rx.recv().await?;
            self.ready.extend(out.into_responses(&|_| {}));
        }
        self.ready.pop_front()
    }

    /// Items waiting in the queue (not responses).
    fn queued(&self) -> usize {
        self.rx.len()
    }
}

fn channel(n: usize) -> (Outbox, Rx) {
    let (tx, rx) = mpsc::channel(n);
    (tx, Rx { rx, ready: VecDeque::new() })
}

/// A stream with a queue of `queue` items and `n` watchers of key `k` on it.
fn watchers_of_k(hub: &Arc<WatchHub>, n: usize, queue: usize) -> Rx {
    let (tx, rx) = channel(queue);
    let stream = hub.open_stream(tx);
    for _ in 0..n {
        hub.create(stream, &WatchCreateRequest { key: "k".into(), ..Default::default() });
    }
    rx
}

/// Reads until `n` events have arrived: the watchers that answered `created`, and each
/// watcher's event revisions. Fails on a second `created`, or on events before `created`.
async fn created_and_revisions(rx: &mut Rx, n: usize) -> (HashSet<i64>, HashMap<i64, Vec<i64>>) {
    let mut created = HashSet::new();
    let seen = revisions(rx, n, &mut created).await;
    (created, seen)
}

/// Reads until `n` events have arrived: each watcher's event revisions. `created` holds the
/// watchers that have answered `created` so far, and gains those that do now. Fails on a
/// second `created`, or on events before `created`.
async fn revisions(rx: &mut Rx, n: usize, created: &mut HashSet<i64>) -> HashMap<i64, Vec<i64>> {
    let mut seen: HashMap<i64, Vec<i64>> = HashMap::new();
    while seen.values().map(Vec::len).sum::<usize>() < n {
        let r =
            tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await.expect("in time").expect("open");
        if r.created {
            assert!(created.insert(r.watch_id), "created twice: {}", r.watch_id);
            continue;
        }
        assert!(created.contains(&r.watch_id), "events for watcher {} before its created", r.watch_id);
        seen.entry(r.watch_id)
            .or_default()
            .extend(r.events.iter().filter_map(|e| e.kv.as_ref()).map(|kv| kv.mod_revision));
    }
    seen
}

async fn events(rx: &mut Rx, n: usize) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        let r =
            tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await.expect("in time").expect("open");
        for e in r.events {
            let kv = e.kv.unwrap_or_default();
            out.push((kv.mod_revision, String::from_utf8_lossy(&kv.value).into_owned()));
        }
    }
    out
}

#[tokio::test]
async fn a_watcher_too_slow_for_its_queue_catches_up_from_history_in_order() {
    let (_dir, store, hub) = open();
    let (tx, mut rx) = channel(2);
    let stream = hub.open_stream(tx);
    hub.create(stream, &WatchCreateRequest { key: "k".into(), ..Default::default() });
    // 50 commits while nobody reads a queue of 2: the watcher falls behind.
    puts_to_k(&store, 50);
    let created = rx.recv().await.expect("created");
    assert!(created.created);
    let got = events(&mut rx, 50).await;
    let want: Vec<(i64, String)> = (0..50).map(|i| (i + 2, format!("v{i}"))).collect();
    assert_eq!(got, want);
    // ...and is synced again afterwards: a new commit arrives directly.
    put(&store, "k", "live");
    assert_eq!(events(&mut rx, 1).await, vec![(52, "live".to_string())]);
}

#[tokio::test]
async fn watchers_created_on_a_full_stream_get_created_first_then_every_event() {
    let (_dir, store, hub) = open();
    // A queue of one: the second and third `created` answers do not fit and wait in the
    // sync loop, which must still send each before any of that watcher's events.
    let mut rx = watchers_of_k(&hub, 3, 1);
    puts_to_k(&store, 20);
    let (created, seen) = created_and_revisions(&mut rx, 60).await;
    assert_eq!(created.len(), 3);
    for (id, revs) in seen {
        assert_eq!(revs, (2..=21).collect::<Vec<i64>>(), "watcher {id} got every revision once, in order");
    }
}

#[tokio::test]
async fn a_delete_at_the_compaction_revision_is_still_delivered() {
    // Regression: compaction used to drop a tombstone at exactly its revision, so a watch
    // resumed from that revision missed the delete (etcd issue 19179).
    let (_dir, store, hub) = open();
    put(&store, "k", "v");
    let del = Command::DeleteRange(DeleteRangeRequest { key: "k".into(), ..Default::default() });
    store.apply(&del, WriteBatch::default()).expect("delete");
    let compact = Command::Compaction(CompactionRequest { revision: 3, physical: false });
    store.apply(&compact, WriteBatch::default()).expect("compact");
    let (tx, mut rx) = channel(16);
    let stream = hub.open_stream(tx);
    hub.create(stream, &WatchCreateRequest { key: "k".into(), start_revision: 3, ..Default::default() });
    assert!(rx.recv().await.expect("created").created);
    let r = rx.recv().await.expect("events");
    assert!(!r.canceled);
    assert_eq!(r.events.len(), 1);
    assert_eq!(r.events[0].r#type, crate::proto::mvccpb::event::EventType::Delete as i32);
}

#[tokio::test]
async fn previous_values_the_write_did_not_read_reach_prev_kv_watchers() {
    let (_dir, store, hub) = open();
    put(&store, "a", "a1");
    put(&store, "b", "b1");
    let (tx, mut rx) = channel(16);
    let stream = hub.open_stream(tx);
    let prefix = WatchCreateRequest { key: "a".into(), range_end: "c".into(), prev_kv: true, ..Default::default() };
    hub.create(stream, &prefix);
    assert!(rx.recv().await.expect("created").created);
    // A put and a prefix delete that return no previous values, so read none.
    put(&store, "a", "a2");
    let del = Command::DeleteRange(DeleteRangeRequest { key: "a".into(), range_end: "c".into(), ..Default::default() });
    store.apply(&del, WriteBatch::default()).expect("apply");
    let mut prevs = Vec::new();
    while prevs.len() < 3 {
        let r =
            tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await.expect("in time").expect("open");
        for e in r.events {
            let p = e.prev_kv.expect("a previous value");
            prevs.push((
                String::from_utf8_lossy(&p.key).into_owned(),
                String::from_utf8_lossy(&p.value).into_owned(),
                p.mod_revision,
                p.version,
            ));
        }
    }
    let want = [("a", "a1", 2, 1), ("a", "a2", 4, 2), ("b", "b1", 3, 1)];
    let want: Vec<(String, String, i64, i64)> =
        want.iter().map(|(k, v, m, n)| (k.to_string(), v.to_string(), *m, *n)).collect();
    assert_eq!(prevs, want);
}

#[tokio::test]
async fn watchers_of_one_key_share_a_queue_slot_per_revision_and_stay_synced() {
    let (_dir, store, hub) = open();
    // 500 watchers of one key on a stream whose queue holds 4 items: each revision takes one
    // item for all of them, so none falls behind.
    let mut rx = watchers_of_k(&hub, 500, 4);
    let mut created = 0;
    while created < 500 {
        assert!(rx.recv().await.expect("created").created);
        created += 1;
    }
    // The last `created` answers went out from the sync loop, which then marks them synced.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !hub.inner.lock().unsynced.is_empty() {
        assert!(std::time::Instant::now() < deadline, "watchers synced after their created");
        tokio::task::yield_now().await;
    }
    put(&store, "k", "v0");
    put(&store, "k", "v1");
    assert_eq!(rx.queued(), 2, "one queued item per revision");
    assert_eq!(hub.inner.lock().unsynced.len(), 0, "nobody fell behind");
    let mut seen: HashMap<i64, Vec<(i64, String)>> = HashMap::new();
    for _ in 0..1000 {
        let r = rx.recv().await.expect("events");
        let header = r.header.expect("a header");
        for e in r.events {
            let kv = e.kv.expect("kv");
            assert_eq!(header.revision, kv.mod_revision);
            seen.entry(r.watch_id).or_default().push((kv.mod_revision, String::from_utf8_lossy(&kv.value).into()));
        }
    }
    assert_eq!(seen.len(), 500);
    for (id, got) in seen {
        assert_eq!(got, vec![(2, "v0".to_string()), (3, "v1".to_string())], "watcher {id}");
    }
}

#[tokio::test]
async fn watchers_of_one_key_with_different_filters_each_get_what_they_asked_for() {
    let (_dir, store, hub) = open();
    put(&store, "k", "old");
    let (tx, mut rx) = channel(16);
    let stream = hub.open_stream(tx);
    let plain = WatchCreateRequest { key: "k".into(), ..Default::default() };
    let no_put = WatchCreateRequest { key: "k".into(), filters: vec![FilterType::Noput as i32], ..Default::default() };
    let prev = WatchCreateRequest { key: "k".into(), prev_kv: true, ..Default::default() };
    for req in [&plain, &no_put, &prev, &plain] {
        hub.create(stream, req);
    }
    for _ in 0..4 {
        assert!(rx.recv().await.expect("created").created);
    }
    put(&store, "k", "new");
    let del = Command::DeleteRange(DeleteRangeRequest { key: "k".into(), ..Default::default() });
    store.apply(&del, WriteBatch::default()).expect("delete");
    // Watch ids 0..=3 in creation order: plain, no-put, prev_kv, plain.
    let mut got: HashMap<i64, Vec<(i32, Option<String>)>> = HashMap::new();
    for _ in 0..7 {
        let r = rx.recv().await.expect("events");
        for e in r.events {
            let prev = e.prev_kv.map(|p| String::from_utf8_lossy(&p.value).into_owned());
            got.entry(r.watch_id).or_default().push((e.r#type, prev));
        }
    }
    let (put_t, del_t) = (0, 1);
    assert_eq!(got[&0], vec![(put_t, None), (del_t, None)]);
    assert_eq!(got[&1], vec![(del_t, None)]);
    assert_eq!(got[&2], vec![(put_t, Some("old".into())), (del_t, Some("new".into()))]);
    assert_eq!(got[&3], vec![(put_t, None), (del_t, None)]);
}

#[tokio::test]
async fn a_stalled_stream_of_grouped_watchers_catches_each_up_once_in_order() {
    let (_dir, store, hub) = open();
    // 50 watchers of one key on a queue of 2 that nobody reads while 30 revisions commit:
    // `created` answers fill the queue, every watcher falls behind and is caught up from
    // history one by one; synced again, they share one item per revision.
    let mut rx = watchers_of_k(&hub, 50, 2);
    puts_to_k(&store, 30);
    let (created, seen) = created_and_revisions(&mut rx, 50 * 30).await;
    assert_eq!(created.len(), 50);
    assert_eq!(seen.len(), 50);
    for (id, revs) in seen {
        assert_eq!(revs, (2..=31).collect::<Vec<i64>>(), "watcher {id} got every revision once, in order");
    }
    // And all are synced again: the next revision takes one item for all of them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !hub.inner.lock().unsynced.is_empty() {
        assert!(std::time::Instant::now() < deadline, "watchers synced again");
        tokio::task::yield_now().await;
    }
    put(&store, "k", "live");
    assert_eq!(rx.queued(), 1);
}

/// A stream with a queue of `queue` items and two watchers of key `k` on it: one from now,
/// one from revision 5 (a fresh store's first write makes revision 2).
fn from_now_and_from_5(hub: &Arc<WatchHub>, queue: usize) -> Rx {
    let (tx, rx) = channel(queue);
    let stream = hub.open_stream(tx);
    hub.create(stream, &WatchCreateRequest { key: "k".into(), ..Default::default() });
    hub.create(stream, &WatchCreateRequest { key: "k".into(), start_revision: 5, ..Default::default() });
    rx
}

#[tokio::test]
async fn a_watcher_from_a_later_revision_gets_nothing_before_it_even_beside_watchers_from_now() {
    let (_dir, store, hub) = open();
    // A queue of 2 items, not read while 20 revisions are made: both watchers also fall
    // behind and catch up, the later one once it has started.
    let mut rx = from_now_and_from_5(&hub, 2);
    puts_to_k(&store, 3);
    // Revisions 2, 3, 4 to the first; the second starts at 5.
    let mut created = HashSet::new();
    let seen = revisions(&mut rx, 3, &mut created).await;
    assert_eq!(seen.len(), 1, "only the watcher from now: {seen:?}");
    assert!(seen.values().all(|r| r == &vec![2, 3, 4]), "{seen:?}");
    puts_to_k(&store, 20);
    let mut got: Vec<Vec<i64>> = revisions(&mut rx, 40, &mut created).await.into_values().collect();
    got.sort();
    assert_eq!(got, vec![(5..=24).collect::<Vec<i64>>(), (5..=24).collect()]);
    // Synced again, both get the next revision directly.
    put(&store, "k", "live");
    let seen = revisions(&mut rx, 2, &mut created).await;
    assert_eq!(seen.len(), 2);
    assert!(seen.values().all(|r| r == &vec![25]), "{seen:?}");
}

#[tokio::test]
async fn a_watcher_from_a_later_revision_on_a_stream_with_room_starts_there() {
    let (_dir, store, hub) = open();
    let mut rx = from_now_and_from_5(&hub, 64);
    puts_to_k(&store, 5);
    // Revisions 2 to 6 to the first, 5 and 6 to the second.
    let mut got: Vec<Vec<i64>> = revisions(&mut rx, 7, &mut HashSet::new()).await.into_values().collect();
    got.sort();
    assert_eq!(got, vec![vec![2, 3, 4, 5, 6], vec![5, 6]]);
}

#[tokio::test]
async fn ids_are_never_handed_out_twice_and_empty_ranges_are_refused() {
    let (_dir, store, hub) = open();
    let (tx, mut rx) = channel(16);
    let stream = hub.open_stream(tx);
    let create = |key: &str, range_end: &str| {
        hub.create(
            stream,
            &WatchCreateRequest {
                key: key.to_string().into(),
                range_end: range_end.to_string().into(),
                ..Default::default()
            },
        );
    };
    create("k", "");
    create("k", "");
    let ids: Vec<i64> = [rx.recv().await, rx.recv().await].into_iter().flatten().map(|r| r.watch_id).collect();
    assert_eq!(ids, [0, 1]);
    // The newest id cancelled: etcd does not hand it out again on the stream.
    hub.cancel(stream, 1);
    assert!(rx.recv().await.expect("canceled").canceled);
    create("k", "");
    assert_eq!(rx.recv().await.expect("created").watch_id, 2);
    // A range that ends at or before its key is refused, for id -1, taking no id.
    for (key, end) in [("b", "a"), ("b", "b")] {
        create(key, end);
        let r = rx.recv().await.expect("refused");
        assert!(r.created && r.canceled, "{key}..{end}: {r:?}");
        assert_eq!((r.watch_id, r.cancel_reason.as_str()), (-1, "mvcc: watcher range is empty"));
    }
    // An empty key is "\0", the smallest key; with a range end of "\0", every key.
    create("", "");
    create("", "\0");
    let ids: Vec<i64> = [rx.recv().await, rx.recv().await].into_iter().flatten().map(|r| r.watch_id).collect();
    assert_eq!(ids, [3, 4]);
    put(&store, "\0", "zero");
    let mut got: Vec<i64> = [rx.recv().await, rx.recv().await].into_iter().flatten().map(|r| r.watch_id).collect();
    got.sort_unstable();
    assert_eq!(got, [3, 4], "the watcher of \"\" and the watcher of every key see \"\\0\"");
}

#[tokio::test]
async fn a_watcher_cancelled_for_compaction_keeps_its_id_until_the_client_cancels_it() {
    let (_dir, store, hub) = open();
    let (tx, mut rx) = channel(16);
    let stream = hub.open_stream(tx);
    let create = |start_revision: i64| {
        hub.create(stream, &WatchCreateRequest { key: "k".into(), start_revision, ..Default::default() });
    };
    // Before any compaction etcd 3.4's compaction point is -1: a start below it is
    // compacted (and reported so), a start of -1 is "from the next revision".
    create(-2);
    let created = rx.recv().await.expect("created");
    assert_eq!((created.created, created.canceled, created.watch_id), (true, false, 0));
    let r = rx.recv().await.expect("compacted");
    assert_eq!((r.watch_id, r.canceled, r.compact_revision), (0, true, -1));
    create(-1);
    let r = rx.recv().await.expect("created");
    assert_eq!((r.watch_id, r.canceled), (1, false));
    puts_to_k(&store, 3);
    assert_eq!(events(&mut rx, 3).await.len(), 3, "-1 before any compaction: every new revision");

    let compact = Command::Compaction(CompactionRequest { revision: 3, physical: false });
    store.apply(&compact, WriteBatch::default()).expect("compact");
    create(2);
    assert_eq!(rx.recv().await.expect("created").watch_id, 2);
    let r = rx.recv().await.expect("compacted");
    assert_eq!((r.watch_id, r.canceled, r.compact_revision), (2, true, 3));
    // The server's cancel leaves id 2 taken: a client may not choose it...
    hub.create(stream, &WatchCreateRequest { key: "k".into(), watch_id: 2, ..Default::default() });
    let r = rx.recv().await.expect("refused");
    assert_eq!((r.watch_id, r.canceled), (-1, true), "{r:?}");
    // ...until it cancels the watcher itself, which is answered, and frees it.
    hub.cancel(stream, 2);
    let r = rx.recv().await.expect("canceled");
    assert_eq!((r.watch_id, r.canceled), (2, true));
    hub.create(stream, &WatchCreateRequest { key: "k".into(), watch_id: 2, ..Default::default() });
    let r = rx.recv().await.expect("created");
    assert_eq!((r.watch_id, r.canceled), (2, false));
}

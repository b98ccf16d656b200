//! The watch hub: every watcher of a member, and the fan-out of committed revisions.
//!
//! The store calls [`WatchHub::committed`] for each revision, in order, while it holds
//! its index write lock. A *synced* watcher (one that has been sent everything up to the
//! last revision) gets its events right there with a non-blocking send; if its stream's
//! queue is full, or it starts in the past, it becomes *unsynced*. One sync loop per hub
//! (etcd's `syncWatchersLoop`) goes over the unsynced watchers again and again: for each it
//! reads history from its next revision (one read shared by every watcher asking the same
//! question at the same revision), sends it only if the stream's queue has room for all of
//! it (reserved at once, so nothing goes half-sent), and moves the watcher back to synced
//! under the hub lock once it has reached the last revision. A watcher whose queue is full
//! is simply looked at again on a later round. So a slow watcher never blocks the apply
//! path or other watchers, no event is lost, repeated or reordered, and 100,000 watchers
//! that fall behind together cost queued responses, not 100,000 tasks each holding its own.
//!
//! Events of one revision always travel in one response (or in fragments of it, if the
//! watcher asked for fragments). Keys and values are `Bytes`, shared by every watcher
//! that receives the same event. Synced watchers of one key on one stream with the same
//! filters share one queued item per revision ([`Out::Group`]), written out as a response
//! each: a stream's queue bounds revisions in flight, not watchers times revisions, so
//! 100,000 watchers of one key stay synced instead of cycling through the sync loop.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
// foldhash, not SipHash: these maps are on the fan-out path (100,000 watchers, every
// revision). Watched keys and watch ids come from clients; foldhash is seeded randomly per
// map, which makes it minimally DoS-resistant (hashbrown's default hasher, not a
// cryptographic guarantee).
use foldhash::{HashMap, HashMapExt, HashSet};
use parking_lot::Mutex;
use tokio::sync::mpsc::error::TrySendError;

use super::stream::{refusal, Stream};
use super::watcher::{event_with, Fragmenting, Group, Out, Outbox, WatchKey, Watcher};
use crate::mvcc::{Change, CommitListener, HistoryError, HistoryEvent, KeyRange, MvccStore, StoredValues};
use crate::proto::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchResponse};

/// Events read from history per catch-up step (etcd's `watchBatchMaxRevs` is 1000 revisions).
const CATCH_UP_EVENTS: usize = 1000;
/// Unsynced watchers the sync loop looks at between yields to the runtime.
const SYNC_YIELD_EVERY: usize = 256;
/// How long the sync loop waits when no unsynced watcher had room in its queue.
const SYNC_IDLE: Duration = Duration::from_millis(10);

#[derive(Default)]
struct Inner {
    last_rev: i64,
    streams: HashMap<u64, Stream>,
    synced: HashMap<WatchKey, Watcher>,
    /// Synced watchers of exactly one key, by key.
    by_key: HashMap<Bytes, KeyWatchers>,
    /// Synced watchers of a range.
    ranged: HashSet<WatchKey>,
    /// Synced watchers that asked for previous values.
    synced_prev_kv: usize,
    unsynced: HashMap<WatchKey, Watcher>,
    /// `created` answers that did not fit their stream's queue; sent before any event.
    pending_created: HashMap<WatchKey, Out>,
}

/// The synced watchers of one key. Most take every revision's events as they come, and
/// those of one stream with the same filters all get the same ones: they form a cohort,
/// whose ids a revision's fan-out copies into one queued item without looking at each
/// watcher (at 10,000 watchers, looking each up in `synced` was the members' largest cost,
/// one cache miss per watcher). The others are looked at one by one.
#[derive(Default)]
struct KeyWatchers {
    /// By stream and filters (see [`Watcher::filters`]).
    cohorts: BTreeMap<(u64, u8), Cohort>,
    /// Watchers that fragment large responses, or start at a revision not made yet.
    single: BTreeSet<WatchKey>,
}

struct Cohort {
    tx: Outbox,
    ids: BTreeSet<i64>,
}

impl KeyWatchers {
    fn is_empty(&self) -> bool {
        self.cohorts.is_empty() && self.single.is_empty()
    }
}

impl Inner {
    fn add_synced(&mut self, w: Watcher) {
        let k = w.key();
        self.synced_prev_kv += usize::from(w.prev_kv);
        match w.single_key() {
            Some(key) => {
                let kw = self.by_key.entry(key.clone()).or_default();
                // A cohort's watchers take the next revision made: this one must too.
                if w.fragment || w.next_rev > self.last_rev + 1 {
                    kw.single.insert(k);
                } else {
                    kw.cohorts
                        .entry((k.0, w.filters()))
                        .or_insert_with(|| Cohort { tx: w.tx.clone(), ids: BTreeSet::new() })
                        .ids
                        .insert(k.1);
                }
            }
            None => {
                self.ranged.insert(k);
            }
        }
        self.synced.insert(k, w);
    }

    fn remove_synced(&mut self, k: &WatchKey) -> Option<Watcher> {
        let w = self.synced.remove(k)?;
        self.synced_prev_kv -= usize::from(w.prev_kv);
        match w.single_key() {
            Some(key) => {
                if let Some(kw) = self.by_key.get_mut(key) {
                    if !kw.single.remove(k) {
                        let cohort = (k.0, w.filters());
                        if let Some(c) = kw.cohorts.get_mut(&cohort) {
                            c.ids.remove(&k.1);
                            if c.ids.is_empty() {
                                kw.cohorts.remove(&cohort);
                            }
                        }
                    }
                    if kw.is_empty() {
                        self.by_key.remove(key);
                    }
                }
            }
            None => {
                self.ranged.remove(k);
            }
        }
        Some(w)
    }

    fn remove(&mut self, k: &WatchKey) -> Option<Watcher> {
        if let Some(s) = self.streams.get_mut(&k.0) {
            s.ids.remove(&k.1);
        }
        self.pending_created.remove(k);
        self.remove_synced(k).or_else(|| self.unsynced.remove(k))
    }

    /// Removes a watcher the server cancels, keeping its id taken (see [`Stream::retired`]).
    fn retire(&mut self, k: &WatchKey) {
        if self.remove(k).is_some() {
            if let Some(s) = self.streams.get_mut(&k.0) {
                s.ids.insert(k.1);
                s.retired.insert(k.1);
            }
        }
    }

    fn stream_synced(&self, stream: u64) -> bool {
        self.streams.get(&stream).is_none_or(|s| s.ids.iter().all(|id| !self.unsynced.contains_key(&(stream, *id))))
    }
}

pub struct WatchHub {
    /// This hub's own `Arc`, for spawning catch-up tasks from the commit hook.
    me: Weak<WatchHub>,
    inner: Mutex<Inner>,
    store: OnceLock<Weak<MvccStore>>,
    next_stream: AtomicU64,
    /// Where a response to a watcher that allows fragments is split.
    fragmenting: Fragmenting,
    /// History reads of catching-up watchers, shared by every watcher that needs the same
    /// range from the same revision while the store has not moved on (1,000 watchers of
    /// one key that fell behind together read history once, not 1,000 times).
    history_memo: Mutex<HistoryMemo>,
    /// Wakes the sync loop: a watcher became unsynced.
    sync_wake: tokio::sync::Notify,
    sync_started: AtomicBool,
}

type HistoryBatch = Result<(Arc<Vec<HistoryEvent>>, i64), HistoryError>;

#[derive(Default)]
struct HistoryMemo {
    /// The hub's last revision the entries were read at.
    at: i64,
    entries: HashMap<(KeyRange, i64, bool), HistoryBatch>,
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader { revision, ..Default::default() })
}

/// Sends without waiting; if the queue is full, sends from a task instead.
fn send_soon(tx: &Outbox, resp: WatchResponse) {
    if let Err(TrySendError::Full(resp)) = tx.try_send(resp.into()) {
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(resp).await;
        });
    }
}

impl WatchHub {
    /// Creates the hub and hooks it to the store's commits.
    pub fn attach(store: &Arc<MvccStore>, fragmenting: Fragmenting) -> Arc<WatchHub> {
        let hub = Arc::new_cyclic(|me| WatchHub {
            me: me.clone(),
            inner: Mutex::new(Inner { last_rev: store.current_revision(), ..Default::default() }),
            store: OnceLock::new(),
            next_stream: AtomicU64::new(1),
            fragmenting,
            history_memo: Mutex::new(HistoryMemo::default()),
            sync_wake: tokio::sync::Notify::new(),
            sync_started: AtomicBool::new(false),
        });
        let _ = hub.store.set(Arc::downgrade(store));
        store.set_listener(hub.clone());
        hub
    }

    /// Registers a client stream; watchers created on it send through `tx`.
    pub fn open_stream(&self, tx: Outbox) -> u64 {
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        self.inner.lock().streams.insert(id, Stream::new(tx));
        id
    }

    pub fn close_stream(&self, stream: u64) {
        let mut inner = self.inner.lock();
        if let Some(s) = inner.streams.remove(&stream) {
            for id in s.ids {
                let k = (stream, id);
                inner.remove_synced(&k);
                inner.unsynced.remove(&k);
                inner.pending_created.remove(&k);
            }
        }
    }

    pub fn watcher_count(&self) -> usize {
        let inner = self.inner.lock();
        inner.synced.len() + inner.unsynced.len()
    }

    /// Creates a watcher and answers `created` on its stream.
    pub fn create(self: &Arc<Self>, stream: u64, req: &WatchCreateRequest) {
        // Only a negative start needs it; read before the hub's lock, which commits take
        // inside the store's.
        let compacted = if req.start_revision < 0 { self.store().map_or(0, |s| s.compact_revision()) } else { 0 };
        let mut inner = self.inner.lock();
        let last = inner.last_rev;
        let Some(s) = inner.streams.get_mut(&stream) else { return };
        let id = match s.take_id(req) {
            Ok(id) => id,
            Err(reason) => return send_soon(&s.tx, refusal(header(last), reason)),
        };
        // etcd: no start revision means "from the next revision". etcd 3.4 takes a negative
        // one as it is, against a compaction point of -1 until the first compaction: below
        // it, the watcher is cancelled as compacted; -1 before any compaction reads nothing
        // from history, so it is "from the next revision" too.
        let start = match req.start_revision {
            r if r < 0 && (compacted > 0 || r < -1) => r,
            r if r <= 0 => last + 1,
            r => r,
        };
        let tx = s.tx.clone();
        let w = Watcher::new(id, stream, req, start, tx.clone());
        let created = WatchResponse { header: header(last), watch_id: id, created: true, ..Default::default() };
        match tx.try_send(created.into()) {
            Ok(()) if start > last => inner.add_synced(w),
            Ok(()) => {
                inner.unsynced.insert(w.key(), w);
                self.wake_sync();
            }
            Err(TrySendError::Full(created)) => {
                inner.pending_created.insert(w.key(), created);
                inner.unsynced.insert(w.key(), w);
                self.wake_sync();
            }
            Err(TrySendError::Closed(_)) => {}
        }
    }

    /// Refuses a watch create without creating anything or taking an id (a permission the
    /// watching user lacks): answered `created` and `canceled` with `reason`, for watch id
    /// -1, as etcd does.
    pub fn refuse(&self, stream: u64, reason: &str) {
        let inner = self.inner.lock();
        let Some(s) = inner.streams.get(&stream) else { return };
        send_soon(&s.tx, refusal(header(inner.last_rev), reason));
    }

    /// Cancels a watcher; answers `canceled` if it existed.
    pub fn cancel(&self, stream: u64, id: i64) {
        let mut inner = self.inner.lock();
        let last = inner.last_rev;
        let resp = WatchResponse { header: header(last), watch_id: id, canceled: true, ..Default::default() };
        if let Some(w) = inner.remove(&(stream, id)) {
            send_soon(&w.tx, resp);
        } else if let Some(s) = inner.streams.get_mut(&stream) {
            if s.retired.remove(&id) {
                s.ids.remove(&id);
                send_soon(&s.tx, resp);
            }
        }
    }

    /// A progress request: answered at once if every watcher on the stream is synced, or
    /// as soon as they all are, so the revision it reports never runs ahead of the events.
    pub fn request_progress(&self, stream: u64) {
        let mut inner = self.inner.lock();
        let last = inner.last_rev;
        let synced = inner.stream_synced(stream);
        let Some(s) = inner.streams.get_mut(&stream) else { return };
        if synced {
            send_soon(&s.tx, WatchResponse { header: header(last), watch_id: -1, ..Default::default() });
        } else {
            s.progress_pending = true;
        }
    }

    /// Periodic progress notifications to synced watchers that asked for them.
    pub fn notify_progress(&self) {
        let inner = self.inner.lock();
        let last = inner.last_rev;
        for w in inner.synced.values().filter(|w| w.progress_notify) {
            let _ = w.tx.try_send(WatchResponse { header: header(last), watch_id: w.id, ..Default::default() }.into());
        }
    }

    fn store(&self) -> Option<Arc<MvccStore>> {
        self.store.get().and_then(Weak::upgrade)
    }

    /// Starts the sync loop on first use, and wakes it.
    fn wake_sync(self: &Arc<Self>) {
        if !self.sync_started.swap(true, Ordering::AcqRel) {
            tokio::spawn(self.clone().sync_loop());
        }
        self.sync_wake.notify_one();
    }

    /// Goes over the unsynced watchers until there are none, then sleeps until woken.
    async fn sync_loop(self: Arc<Self>) {
        loop {
            let keys: Vec<WatchKey> = self.inner.lock().unsynced.keys().copied().collect();
            if keys.is_empty() {
                self.sync_wake.notified().await;
                continue;
            }
            let mut progressed = false;
            for (i, key) in keys.into_iter().enumerate() {
                progressed |= self.sync_one(key).await;
                if i % SYNC_YIELD_EVERY == SYNC_YIELD_EVERY - 1 {
                    tokio::task::yield_now().await;
                }
            }
            if !progressed {
                // Every unsynced watcher's queue is full: give their readers a moment.
                tokio::select! {
                    () = self.sync_wake.notified() => {}
                    () = tokio::time::sleep(SYNC_IDLE) => {}
                }
            }
        }
    }

    /// One step for one unsynced watcher: its pending `created`, then the next batch of
    /// history if its queue has room for all of it. Returns whether anything was sent.
    async fn sync_one(&self, key: WatchKey) -> bool {
        let w = {
            let mut inner = self.inner.lock();
            let Some(w) = inner.unsynced.get(&key).cloned() else { return false };
            if let Some(created) = inner.pending_created.remove(&key) {
                match w.tx.try_send(created) {
                    Ok(()) => {}
                    Err(TrySendError::Full(created)) => {
                        inner.pending_created.insert(key, created);
                        return false;
                    }
                    Err(TrySendError::Closed(_)) => {
                        inner.remove(&key);
                        return false;
                    }
                }
            }
            w
        };
        if w.tx.capacity() == 0 {
            return false;
        }
        let Some(store) = self.store() else { return false };
        let (events, upto) = match self.shared_history(&store, &w.range, w.next_rev, w.prev_kv) {
            Ok(b) => b,
            Err(e) => {
                // History is gone (compacted) or unreadable: the watcher ends here.
                let (compact_revision, cancel_reason) = match e {
                    // etcd's compaction point is -1 until the first compaction.
                    HistoryError::Compacted(rev) => (if rev == 0 { -1 } else { rev }, String::new()),
                    HistoryError::Storage(reason) => (0, reason),
                };
                let resp = WatchResponse {
                    header: header(0),
                    watch_id: w.id,
                    canceled: true,
                    compact_revision,
                    cancel_reason,
                    ..Default::default()
                };
                if let Err(TrySendError::Full(_)) = w.tx.try_send(resp.into()) {
                    return false;
                }
                self.inner.lock().retire(&key);
                return true;
            }
        };
        // Like etcd, a catch-up batch goes out as one response stamped with the revision
        // the history was read at; it only ever holds whole revisions.
        let evs: Vec<_> = events.iter().filter_map(|h| w.event_from_history(h)).collect();
        let resps = if evs.is_empty() { Vec::new() } else { w.responses(upto, evs, &self.fragmenting) };
        if resps.len() > w.tx.max_capacity() {
            // More fragments than the queue holds: only blocking sends get them through.
            for r in resps {
                if w.tx.send(r.into()).await.is_err() {
                    self.inner.lock().remove(&key);
                    return false;
                }
            }
        } else if !resps.is_empty() {
            match w.tx.try_reserve_many(resps.len()) {
                Ok(permits) => {
                    for (permit, r) in permits.zip(resps) {
                        permit.send(r.into());
                    }
                }
                Err(TrySendError::Full(())) => return false,
                Err(TrySendError::Closed(())) => {
                    self.inner.lock().remove(&key);
                    return false;
                }
            }
        }
        let mut inner = self.inner.lock();
        let last = inner.last_rev;
        let Some(w) = inner.unsynced.get_mut(&key) else { return true };
        w.next_rev = w.next_rev.max(upto + 1);
        if w.next_rev > last {
            if let Some(w) = inner.unsynced.remove(&key) {
                inner.add_synced(w);
            }
            // Whether the whole stream is synced is a walk over its watchers: only worth
            // it when a progress request waits on the answer.
            let pending = inner.streams.get(&key.0).is_some_and(|s| s.progress_pending);
            if pending && inner.stream_synced(key.0) {
                if let Some(s) = inner.streams.get_mut(&key.0) {
                    s.progress_pending = false;
                    send_soon(&s.tx, WatchResponse { header: header(last), watch_id: -1, ..Default::default() });
                }
            }
        }
        true
    }

    /// A catch-up batch of history, read once for all watchers asking the same question
    /// at the same store revision.
    fn shared_history(&self, store: &MvccStore, range: &KeyRange, from: i64, prev_kv: bool) -> HistoryBatch {
        let last = self.inner.lock().last_rev;
        let key = (range.clone(), from, prev_kv);
        {
            let memo = self.history_memo.lock();
            if memo.at == last {
                if let Some(hit) = memo.entries.get(&key) {
                    return hit.clone();
                }
            }
        }
        let batch = store.history(range, from, prev_kv, CATCH_UP_EVENTS).map(|(e, upto)| (Arc::new(e), upto));
        let mut memo = self.history_memo.lock();
        if memo.at != last {
            memo.at = last;
            memo.entries.clear();
        }
        memo.entries.insert(key, batch.clone());
        batch
    }

    fn make_unsynced(self: &Arc<Self>, inner: &mut Inner, k: WatchKey, next_rev: i64) {
        if let Some(mut w) = inner.remove_synced(&k) {
            w.next_rev = w.next_rev.max(next_rev);
            inner.unsynced.insert(k, w);
            self.wake_sync();
        }
    }
}

/// `changes` with the previous values they left out read back (see `Change::prev_stored`).
fn with_stored_values(changes: &[Change], stored: StoredValues<'_>) -> Vec<Change> {
    let revs: Vec<_> = changes.iter().filter_map(|c| c.prev_stored).collect();
    let mut values = stored(&revs).into_iter();
    changes
        .iter()
        .map(|c| {
            let mut c = c.clone();
            if c.prev_stored.take().is_some() {
                if let (Some(prev), Some(Some(v))) = (c.prev.as_mut(), values.next()) {
                    prev.value = v.value;
                }
            }
            c
        })
        .collect()
}

/// Where a revision's events go, worked out under the hub lock: the room left in each
/// stream's queue, counted as items are given out; the watchers that get an item of their
/// own; and those whose stream is full, for the sync loop.
#[derive(Default)]
struct Plan {
    room: HashMap<u64, usize>,
    own: HashMap<WatchKey, Vec<crate::proto::mvccpb::Event>>,
    behind: Vec<WatchKey>,
}

impl Plan {
    /// Takes a slot of `stream`'s queue, if one is left.
    fn room_for(&mut self, stream: u64, tx: &Outbox) -> bool {
        let left = self.room.entry(stream).or_insert_with(|| tx.capacity());
        let ok = *left > 0;
        *left = left.saturating_sub(1);
        ok
    }

    /// A watcher's own item, if it has events and its stream has room; else it falls behind.
    fn own(&mut self, k: WatchKey, tx: &Outbox, events: Vec<crate::proto::mvccpb::Event>) {
        if events.is_empty() {
            return;
        }
        if self.room_for(k.0, tx) {
            self.own.insert(k, events);
        } else {
            self.behind.push(k);
        }
    }
}

impl CommitListener for WatchHub {
    fn committed(&self, revision: i64, changes: &[Change], stored: StoredValues<'_>) {
        let mut inner = self.inner.lock();
        inner.last_rev = revision;
        if inner.synced.is_empty() {
            return;
        }
        let filled;
        let changes = if inner.synced_prev_kv > 0 && changes.iter().any(|c| c.prev_stored.is_some()) {
            filled = with_stored_values(changes, stored);
            &filled[..]
        } else {
            changes
        };
        // Room left in each stream's queue, counted as items are given out: a watcher whose
        // stream is already full goes straight to the sync loop.
        let mut plan = Plan::default();

        // Watchers of one key: those of a stream with the same filters get the same events,
        // queued once for all of them (see `Out::Group`). Changes of a key keep their order.
        let mut changes_of: HashMap<&Bytes, Vec<&Change>> = HashMap::new();
        let mut keys_in_order: Vec<&Bytes> = Vec::new();
        for c in changes {
            if inner.by_key.contains_key(&c.key) {
                let v = changes_of.entry(&c.key).or_default();
                if v.is_empty() {
                    keys_in_order.push(&c.key);
                }
                v.push(c);
            }
        }
        let mut groups: Vec<(u64, Outbox, Group)> = Vec::new();
        {
            let Inner { by_key, synced, .. } = &*inner;
            for key in keys_in_order {
                let (Some(watchers), Some(key_changes)) = (by_key.get(key), changes_of.get(key)) else { continue };
                // This revision's events for each combination of filters, made when first
                // wanted (`None` inside: none pass them).
                let mut events_by_filters: [Option<Option<Arc<Vec<crate::proto::mvccpb::Event>>>>; 8] =
                    Default::default();
                let mut events_for = |filters: u8| {
                    events_by_filters[usize::from(filters & 7)]
                        .get_or_insert_with(|| {
                            let evs: Vec<_> =
                                key_changes.iter().filter_map(|c| event_with(filters, c, revision)).collect();
                            (!evs.is_empty()).then(|| Arc::new(evs))
                        })
                        .clone()
                };
                for (&(stream, filters), cohort) in &watchers.cohorts {
                    let Some(events) = events_for(filters) else { continue };
                    let ids = cohort.ids.iter().copied().collect();
                    groups.push((stream, cohort.tx.clone(), Group { revision, events, ids }));
                }
                for k in &watchers.single {
                    let Some(w) = synced.get(k) else { continue };
                    if revision < w.next_rev {
                        continue;
                    }
                    if w.fragment {
                        // Its response may need splitting: it gets its own.
                        plan.own(*k, &w.tx, key_changes.iter().filter_map(|c| w.event_for(c, revision)).collect());
                        continue;
                    }
                    let Some(events) = events_for(w.filters()) else { continue };
                    groups.push((k.0, w.tx.clone(), Group { revision, events, ids: vec![k.1] }));
                }
            }
        }
        for k in &inner.ranged {
            let Some(w) = inner.synced.get(k) else { continue };
            if revision < w.next_rev {
                continue;
            }
            let events =
                changes.iter().filter(|c| w.range.contains(&c.key)).filter_map(|c| w.event_for(c, revision)).collect();
            plan.own(*k, &w.tx, events);
        }

        // A watcher whose item is not queued goes to the sync loop, which sends it this
        // revision from history: a synced watcher's `next_rev` is not moved on as items are
        // sent (it stays where the watcher could start taking them), and the sync loop starts
        // at the later of the two.
        let mut gone = Vec::new();
        for (stream, tx, group) in groups {
            let (ids, closed) = if plan.room_for(stream, &tx) {
                match tx.try_send(Out::Group(group)) {
                    Ok(()) => continue,
                    Err(TrySendError::Full(out)) => (out.into_ids(), false),
                    Err(TrySendError::Closed(out)) => (out.into_ids(), true),
                }
            } else {
                (group.ids, false)
            };
            let keys = ids.into_iter().map(|id| (stream, id));
            if closed {
                gone.extend(keys);
            } else {
                plan.behind.extend(keys);
            }
        }
        let Plan { own, mut behind, .. } = plan;
        for (k, events) in own {
            let Some(w) = inner.synced.get(&k) else { continue };
            let resps = w.responses(revision, events, &self.fragmenting);
            // A response split in fragments must go out whole: it needs that much room.
            if w.tx.capacity() < resps.len() {
                behind.push(k);
                continue;
            }
            let mut closed = false;
            for r in resps {
                if let Err(TrySendError::Closed(_)) = w.tx.try_send(r.into()) {
                    closed = true;
                }
            }
            if closed {
                gone.push(k);
            }
        }
        for k in gone {
            inner.remove(&k);
        }
        if !behind.is_empty() {
            if let Some(me) = self.me.upgrade() {
                for k in behind {
                    me.make_unsynced(&mut inner, k, revision);
                }
            }
        }
    }

    fn reloaded(&self, revision: i64) {
        let mut inner = self.inner.lock();
        let before = inner.last_rev;
        inner.last_rev = revision;
        let keys: Vec<WatchKey> = inner.synced.keys().copied().collect();
        if let Some(me) = self.me.upgrade() {
            for k in keys {
                me.make_unsynced(&mut inner, k, before + 1);
            }
        }
    }
}

#[cfg(test)]
#[path = "hub_tests.rs"]
mod tests;

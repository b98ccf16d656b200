//! The watch cache: one store watch per resource type, fanned out in memory to every API
//! watcher of that type, so 10,000 kubectl or kube-rs watchers cost the store one watch.
//!
//! The cache keeps a window of recent events. An API watch from a resourceVersion inside
//! the window replays from it and then follows live events without a gap: it subscribes
//! before reading the window and drops live events it already replayed. A watch from
//! before the window reads the store's own history directly (one store watch for that
//! watcher, ending in 410 Expired if the store compacted it).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::EventType;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::storage::{self, Storage};

/// Live events buffered per API watcher before it has to catch up from the window.
const FANOUT_QUEUE: usize = 4096;
/// How often the cache asks the store how far it has got, to move bookmarks forward.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Added,
    Modified,
    Deleted,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Added => "ADDED",
            Kind::Modified => "MODIFIED",
            Kind::Deleted => "DELETED",
        }
    }
}

/// One change of one object, as read from the store.
#[derive(Debug, Clone)]
pub struct Change {
    pub kind: Kind,
    pub revision: i64,
    /// The object after the change (before it, for a delete, with the delete's revision).
    pub object: Arc<Value>,
    /// The object before the change, when there was one.
    pub prev: Option<Arc<Value>>,
}

#[derive(Debug, Clone)]
pub enum Message {
    Change(Change),
    /// Everything up to this revision has been delivered.
    Progress(i64),
    /// The cache lost its place in the store's history; watchers must start again.
    Reset,
}

struct Window {
    events: VecDeque<Change>,
    /// Watches from this revision on can be served from the window.
    oldest: i64,
    /// The newest revision the cache has seen (events or progress).
    current: i64,
}

pub struct WatchCache {
    prefix: String,
    capacity: usize,
    window: Mutex<Window>,
    tx: broadcast::Sender<Message>,
}

/// Converts one store event into a change; `None` for undecodable values.
pub fn change_of(ev: &etcd_client::Event) -> Option<Change> {
    let kv = ev.kv()?;
    let prev = ev.prev_kv().and_then(|p| storage::decode(p).ok()).map(|s| Arc::new(s.object));
    match ev.event_type() {
        EventType::Put => {
            let obj = storage::decode(kv).ok()?;
            let kind = if kv.create_revision() == kv.mod_revision() { Kind::Added } else { Kind::Modified };
            Some(Change { kind, revision: kv.mod_revision(), object: Arc::new(obj.object), prev })
        }
        EventType::Delete => {
            let mut last = (*prev.clone()?).clone();
            storage::set_resource_version(&mut last, kv.mod_revision());
            Some(Change { kind: Kind::Deleted, revision: kv.mod_revision(), object: Arc::new(last), prev })
        }
    }
}

impl WatchCache {
    /// Starts the cache's store watch from the store's current revision; it ends when
    /// `stop` is cancelled.
    pub async fn start(
        storage: Storage,
        prefix: String,
        capacity: usize,
        stop: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<Arc<WatchCache>> {
        let rev = storage.revision().await.map_err(|e| anyhow::anyhow!(e.message))?;
        let (tx, _) = broadcast::channel(FANOUT_QUEUE);
        let cache = Arc::new(WatchCache {
            prefix,
            capacity,
            window: Mutex::new(Window { events: VecDeque::new(), oldest: rev, current: rev }),
            tx,
        });
        let follow = Arc::clone(&cache).follow(storage);
        tokio::spawn(async move {
            tokio::select! {
                () = follow => {}
                () = stop.cancelled() => {}
            }
        });
        Ok(cache)
    }

    pub fn current(&self) -> i64 {
        self.window.lock().current
    }

    /// Subscribes to live messages and returns the window's changes after `from`, or `None`
    /// if `from` is older than the window.
    pub fn subscribe_from(&self, from: i64) -> Option<(Vec<Change>, broadcast::Receiver<Message>)> {
        let w = self.window.lock();
        if from < w.oldest {
            return None;
        }
        let rx = self.tx.subscribe();
        let replay = w.events.iter().filter(|c| c.revision > from).cloned().collect();
        Some((replay, rx))
    }

    async fn follow(self: Arc<Self>, storage: Storage) {
        loop {
            let from = self.window.lock().current + 1;
            match self.follow_from(&storage, from).await {
                Ok(()) => {}
                Err(Lost::Compacted) => {
                    // The store compacted past us: start over at its current revision.
                    if let Ok(rev) = storage.revision().await {
                        let mut w = self.window.lock();
                        w.events.clear();
                        w.oldest = rev;
                        w.current = rev;
                    }
                    let _ = self.tx.send(Message::Reset);
                }
                Err(Lost::Broken(e)) => tracing::warn!(prefix = %self.prefix, "watch cache: store watch ended: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn follow_from(&self, storage: &Storage, from: i64) -> Result<(), Lost> {
        let stream = storage.watch(&self.prefix, from).await.map_err(|e| Lost::Broken(e.message))?;
        let (mut requests, mut responses) = stream.split();
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    requests.request_progress().await.map_err(|e| Lost::Broken(e.to_string()))?;
                }
                msg = responses.message() => {
                    let Some(resp) = msg.map_err(|e| Lost::Broken(e.to_string()))? else {
                        return Err(Lost::Broken("stream closed".into()));
                    };
                    if resp.compact_revision() > 0 {
                        return Err(Lost::Compacted);
                    }
                    if resp.canceled() {
                        return Err(Lost::Broken(format!("canceled: {}", resp.cancel_reason())));
                    }
                    let header_rev = resp.header().map_or(0, |h| h.revision());
                    if resp.events().is_empty() {
                        // A progress notification (answers to progress requests carry watch id -1).
                        if header_rev > 0 && !resp.created() {
                            self.progress(header_rev);
                        }
                        continue;
                    }
                    for ev in resp.events() {
                        if let Some(c) = change_of(ev) {
                            self.publish(c);
                        }
                    }
                }
            }
        }
    }

    fn publish(&self, c: Change) {
        let mut w = self.window.lock();
        w.current = w.current.max(c.revision);
        if w.events.len() >= self.capacity {
            if let Some(old) = w.events.pop_front() {
                w.oldest = old.revision;
            }
        }
        w.events.push_back(c.clone());
        let _ = self.tx.send(Message::Change(c));
    }

    fn progress(&self, rev: i64) {
        let mut w = self.window.lock();
        if rev > w.current {
            w.current = rev;
        }
        let _ = self.tx.send(Message::Progress(w.current));
    }
}

enum Lost {
    Compacted,
    Broken(String),
}

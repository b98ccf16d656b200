//! API watches (`?watch=true`): newline-delimited JSON events from the resource type's watch
//! cache, filtered by namespace and selectors, with bookmarks, initial events, and
//! `410 Expired` as an ERROR event when the requested resourceVersion is gone.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use crate::server::{Api, Filter, Query, Target};
use crate::status::{ApiError, ApiResult};
use crate::table::{self, Include};
use crate::watchcache::{change_of, Change, Kind, Message};

/// Without `timeoutSeconds`, a watch ends after this long, and the client re-watches.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
/// The longest a bookmark-requesting watcher goes without one while the store moves on.
const BOOKMARK_EVERY: Duration = Duration::from_secs(5);

struct Encoder {
    rt: &'static crate::resources::ResourceType,
    table: Option<Include>,
    sent_columns: bool,
}

impl Encoder {
    fn line(&mut self, kind: &str, object: &Value) -> Bytes {
        let object = match self.table {
            Some(include) if kind != "BOOKMARK" && kind != "ERROR" => {
                let mut t = table::table(self.rt, std::slice::from_ref(object), json!({}), include);
                if self.sent_columns {
                    t["columnDefinitions"] = json!([]);
                }
                self.sent_columns = true;
                t
            }
            _ => object.clone(),
        };
        let mut line = serde_json::to_vec(&json!({ "type": kind, "object": object })).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }

    fn bookmark(&mut self, rev: i64, initial_end: bool) -> Bytes {
        let mut meta = json!({ "resourceVersion": rev.to_string() });
        if initial_end {
            meta["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
        }
        let obj = json!({ "kind": self.rt.kind, "apiVersion": self.rt.api_version(), "metadata": meta });
        self.line("BOOKMARK", &obj)
    }
}

/// What a change means to a filtered watcher: selector transitions turn into ADDED or
/// DELETED as Kubernetes does.
fn visible(filter: &Filter, c: &Change) -> Option<(&'static str, Value)> {
    let now = filter.matches(&c.object);
    let before = c.prev.as_deref().is_some_and(|p| filter.matches(p));
    match c.kind {
        Kind::Deleted => before.then(|| ("DELETED", (*c.object).clone())),
        Kind::Added => now.then(|| ("ADDED", (*c.object).clone())),
        Kind::Modified => match (before, now) {
            (true, true) => Some(("MODIFIED", (*c.object).clone())),
            (false, true) => Some(("ADDED", (*c.object).clone())),
            (true, false) => Some(("DELETED", (*c.object).clone())),
            (false, false) => None,
        },
    }
}

pub async fn serve(api: &Api, t: &Target, q: &Query, accept: &str) -> ApiResult<Response> {
    let filter = Filter::from_query(t, q)?;
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true" || b == "1");
    let send_initial = q.get("sendInitialEvents").map(|s| s == "true");
    let timeout =
        q.get("timeoutSeconds").and_then(|s| s.parse::<u64>().ok()).map(Duration::from_secs).unwrap_or(DEFAULT_TIMEOUT);
    let rv = q.get("resourceVersion").cloned().unwrap_or_default();
    let encoder = Encoder {
        rt: t.rt,
        table: table::wants_table(accept).then(|| Include::parse(q.get("includeObject").map(String::as_str))),
        sent_columns: false,
    };
    let cache = api.cache(t.rt).await?;
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let mut initial = Vec::new();
    let from = if rv.is_empty() || rv == "0" || send_initial == Some(true) {
        // Start with the current state as ADDED events, then changes after it.
        let collection = api.collection_key(t.rt, t.namespace.as_deref());
        let page = api.storage.list(&collection, None, 0, 0).await?;
        initial = page.items.into_iter().map(|s| s.object).filter(|o| filter.matches(o)).collect();
        page.revision
    } else {
        rv.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?
    };
    let source = match cache.subscribe_from(from) {
        Some((replay, live)) => Source::Cache { replay, live },
        None => Source::Store,
    };
    let storage = api.storage.clone();
    let prefix = api.collection_key(t.rt, t.namespace.as_deref());
    let initial_end = send_initial == Some(true) && bookmarks;
    let stopping = api.stopping.clone();
    tokio::spawn(async move {
        let mut w = Writer { tx, enc: encoder, filter, bookmarks, last: from, last_bookmark: Instant::now() };
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let work = async {
            for o in &initial {
                w.send("ADDED", o).await?;
            }
            if initial_end {
                let b = w.enc.bookmark(from, true);
                w.tx.send(b).await.map_err(|_| ())?;
            }
            match source {
                Source::Cache { replay, live } => w.follow_cache(replay, live).await,
                Source::Store => w.follow_store(&storage, &prefix, from).await,
            }
        };
        tokio::select! {
            _ = &mut deadline => {}
            _ = work => {}
            _ = stopping.cancelled() => {}
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::io::Error>));
    let ct =
        if table::wants_table(accept) { "application/json;as=Table;v=v1;g=meta.k8s.io" } else { "application/json" };
    Ok(([(header::CONTENT_TYPE, ct), (header::CACHE_CONTROL, "no-cache, private")], body).into_response())
}

use tokio_stream::StreamExt as _;

enum Source {
    Cache { replay: Vec<Change>, live: broadcast::Receiver<Message> },
    Store,
}

struct Writer {
    tx: mpsc::Sender<Bytes>,
    enc: Encoder,
    filter: Filter,
    bookmarks: bool,
    /// The newest revision delivered (or bookmarked) to this watcher.
    last: i64,
    last_bookmark: Instant,
}

impl Writer {
    async fn send(&mut self, kind: &str, o: &Value) -> Result<(), ()> {
        let line = self.enc.line(kind, o);
        self.tx.send(line).await.map_err(|_| ())
    }

    async fn change(&mut self, c: &Change) -> Result<(), ()> {
        if c.revision <= self.last {
            return Ok(());
        }
        self.last = c.revision;
        if let Some((kind, obj)) = visible(&self.filter, c) {
            self.send(kind, &obj).await?;
        }
        Ok(())
    }

    async fn progress(&mut self, rev: i64) -> Result<(), ()> {
        if self.bookmarks && rev > self.last && self.last_bookmark.elapsed() >= BOOKMARK_EVERY {
            self.last = rev;
            self.last_bookmark = Instant::now();
            let b = self.enc.bookmark(rev, false);
            self.tx.send(b).await.map_err(|_| ())?;
        }
        Ok(())
    }

    async fn expired(&mut self, message: &str) -> Result<(), ()> {
        let status = ApiError::expired(message.to_string()).status();
        self.send("ERROR", &status).await
    }

    async fn follow_cache(&mut self, replay: Vec<Change>, mut live: broadcast::Receiver<Message>) -> Result<(), ()> {
        for c in &replay {
            self.change(c).await?;
        }
        loop {
            match live.recv().await {
                Ok(Message::Change(c)) => self.change(&c).await?,
                Ok(Message::Progress(rev)) => self.progress(rev).await?,
                Ok(Message::Reset) | Err(broadcast::error::RecvError::Closed) => {
                    return self.expired("The resourceVersion for the provided watch is too old.").await;
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Too slow for the fan-out queue: the client resumes from what it has.
                    return self
                        .expired(&format!("too old resource version: {} (watcher fell behind)", self.last))
                        .await;
                }
            }
        }
    }

    /// A watch from before the cache's window reads the store's history itself.
    async fn follow_store(&mut self, storage: &crate::storage::Storage, prefix: &str, from: i64) -> Result<(), ()> {
        let Ok(mut stream) = storage.watch(prefix, from + 1).await else {
            return self.expired("The resourceVersion for the provided watch is too old.").await;
        };
        loop {
            match stream.message().await {
                Ok(Some(resp)) if resp.compact_revision() > 0 => {
                    let msg = format!("too old resource version: {from} ({})", resp.compact_revision());
                    return self.expired(&msg).await;
                }
                Ok(Some(resp)) => {
                    for ev in resp.events() {
                        if let Some(c) = change_of(ev) {
                            self.change(&c).await?;
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }
}

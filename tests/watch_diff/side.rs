//! One server's side of the watch differential: its clients, its watch streams, what they
//! received, normalised, and the wait until every watcher has what the model says.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, EventType, KeyValue, WatchOptions, WatchRequestSender, WatchResponse};

use super::model::{Model, NewWatch};
use crate::harness::{client, Member};

/// One server's side of the run: its client, its watch streams and what they received.
pub(super) struct Side {
    pub(super) name: &'static str,
    /// Writes go through this client...
    pub(super) client: Client,
    /// ...and watches through this one: on another member, where there is one.
    pub(super) watch_client: Client,
    pub(super) senders: Vec<WatchRequestSender>,
    pub(super) received: Arc<Mutex<Vec<(usize, WatchResponse)>>>,
    pub(super) errors: Arc<Mutex<Vec<String>>>,
    pub(super) tick_tx: tokio::sync::watch::Sender<u64>,
    pub(super) tick_rx: tokio::sync::watch::Receiver<u64>,
}

impl Side {
    pub(super) async fn new(name: &'static str, writes: &Member, watches: &Member) -> Side {
        let (tick_tx, tick_rx) = tokio::sync::watch::channel(0);
        Side {
            name,
            client: client(writes).await,
            watch_client: client(watches).await,
            senders: Vec::new(),
            received: Arc::default(),
            errors: Arc::default(),
            tick_tx,
            tick_rx,
        }
    }

    pub(super) async fn open_stream(&mut self, key: &str, opts: WatchOptions) {
        // Catch-up responses of large values outgrow the client's default 4 MiB.
        let mut watch = self.watch_client.watch_client().max_decoding_message_size(64 << 20);
        let stream = watch.watch(key, Some(opts)).await.expect("open a watch stream");
        let (sender, mut responses) = stream.split();
        let idx = self.senders.len();
        self.senders.push(sender);
        let (received, errors, tick) = (self.received.clone(), self.errors.clone(), self.tick_tx.clone());
        tokio::spawn(async move {
            loop {
                match responses.message().await {
                    Ok(Some(r)) => received.lock().expect("lock").push((idx, r)),
                    Ok(None) => {
                        errors.lock().expect("lock").push(format!("stream {idx} ended"));
                        break;
                    }
                    Err(e) => {
                        errors.lock().expect("lock").push(format!("stream {idx}: {e}"));
                        break;
                    }
                }
                tick.send_modify(|n| *n += 1);
            }
            tick.send_modify(|n| *n += 1);
        });
    }

    /// Every watcher's responses, normalised, in model order.
    pub(super) fn transcripts(&self, model: &Model) -> Vec<String> {
        let received = self.received.lock().expect("lock");
        // The n-th created response of a stream is its n-th create request's.
        let mut created_seen: HashMap<usize, usize> = HashMap::new();
        let mut out: Vec<Vec<String>> = model.watches.iter().map(|_| Vec::new()).collect();
        let by_place: HashMap<(usize, usize), usize> =
            model.watches.iter().enumerate().map(|(i, w)| ((w.stream, w.nth), i)).collect();
        // Responses of a refused watcher carry id -1; they are matched by order like the rest.
        let mut owner_of_id: HashMap<(usize, i64), usize> = HashMap::new();
        let mut streams: Vec<Vec<String>> = model.creates.iter().map(|_| Vec::new()).collect();
        for (stream, r) in received.iter() {
            let hdr = r.header().map_or(-1, |h| h.revision());
            if !r.created() && r.watch_id() == -1 {
                streams[*stream].push(format!(
                    "id=-1 hdr={hdr} canceled={} events={} compact={}",
                    r.canceled(),
                    r.events().len(),
                    r.compact_revision()
                ));
                continue;
            }
            if r.created() {
                let n = created_seen.entry(*stream).or_default();
                let place = (*stream, *n);
                *n += 1;
                let Some(&wi) = by_place.get(&place) else {
                    out.push(vec![format!("stream {stream}: a created response beyond its create requests: {r:?}")]);
                    continue;
                };
                owner_of_id.insert((*stream, r.watch_id()), wi);
                out[wi].push(format!(
                    "created id={} hdr={hdr} canceled={} compact={} reason={:?}",
                    r.watch_id(),
                    r.canceled(),
                    r.compact_revision(),
                    r.cancel_reason()
                ));
                continue;
            }
            let Some(&wi) = owner_of_id.get(&(*stream, r.watch_id())) else {
                out.push(vec![format!("stream {stream}: response for unknown watch {}: {r:?}", r.watch_id())]);
                continue;
            };
            if r.events().len() > 1 {
                // How events are grouped into responses (and fragments) shows too.
                out[wi].push(format!("{} events in one response:", r.events().len()));
            }
            for e in r.events() {
                out[wi].push(format!("{} hdr={hdr}", event(e.event_type(), e.kv(), e.prev_kv())));
            }
            if r.canceled() {
                out[wi].push(format!(
                    "canceled hdr={hdr} compact={} reason={:?}",
                    r.compact_revision(),
                    r.cancel_reason()
                ));
            } else if r.events().is_empty() {
                out[wi].push(format!("empty hdr={hdr} compact={}", r.compact_revision()));
            }
        }
        let watches = out.into_iter().enumerate().map(|(i, lines)| format!("watch {i}:\n  {}", lines.join("\n  ")));
        let streams =
            streams.into_iter().enumerate().map(|(i, lines)| format!("stream {i}:\n  {}", lines.join("\n  ")));
        watches.chain(streams).collect()
    }

    /// (events, cancellations, created) received so far for each watcher of the model, and
    /// the progress responses (watch id -1) on each stream.
    pub(super) fn tally(&self, model: &Model) -> (Vec<(usize, usize, bool)>, Vec<usize>) {
        let received = self.received.lock().expect("lock");
        let by_place: HashMap<(usize, usize), usize> =
            model.watches.iter().enumerate().map(|(i, w)| ((w.stream, w.nth), i)).collect();
        let mut created_seen: HashMap<usize, usize> = HashMap::new();
        let mut owner_of_id: HashMap<(usize, i64), usize> = HashMap::new();
        let mut p = vec![(0, 0, false); model.watches.len()];
        let mut progress = vec![0; model.creates.len()];
        for (stream, r) in received.iter() {
            if !r.created() && r.watch_id() == -1 {
                progress[*stream] += 1;
                continue;
            }
            if r.created() {
                let n = created_seen.entry(*stream).or_default();
                if let Some(&wi) = by_place.get(&(*stream, *n)) {
                    owner_of_id.insert((*stream, r.watch_id()), wi);
                    p[wi].2 = true;
                    p[wi].1 += usize::from(r.canceled());
                }
                *n += 1;
                continue;
            }
            if let Some(&wi) = owner_of_id.get(&(*stream, r.watch_id())) {
                p[wi].0 += r.events().len();
                p[wi].1 += usize::from(r.canceled());
            }
        }
        (p, progress)
    }

    /// Waits until every watcher has what the model says it is owed: created, its events,
    /// and its cancellation where one is due. Panics with the transcripts after a deadline.
    pub(super) async fn settle(&mut self, model: &Model, step: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (p, progress) = self.tally(model);
            let done = model.watches.iter().zip(&p).all(|(w, (events, cancelled, created))| {
                *created && *events == model.owed(w) && *cancelled == w.cancellations()
            }) && progress == model.progress;
            let errors = self.errors.lock().expect("lock").clone();
            assert!(errors.is_empty(), "{} after step {step}: {errors:?}", self.name);
            if done {
                return;
            }
            let behind: Vec<String> = model
                .watches
                .iter()
                .zip(&p)
                .enumerate()
                .filter(|(_, (w, (ev, c, cr)))| !*cr || *ev != model.owed(w) || *c != w.cancellations())
                .map(|(i, (w, (ev, c, cr)))| {
                    format!("watch {i} {w:?}: {ev} events of {}, cancelled {c}, created {cr}", model.owed(w))
                })
                .collect();
            if tokio::time::timeout_at(deadline, self.tick_rx.changed()).await.is_err() {
                panic!(
                    "{} after step {step}: watchers not where the model says\n{}\nhistory {:?}, compacted at {}\n{}",
                    self.name,
                    behind.join("\n") + &format!("\nprogress responses {progress:?} of {:?}", model.progress),
                    model.history,
                    model.compacted,
                    self.transcripts(model).join("\n")
                );
            }
        }
    }
}

impl Side {
    pub(super) async fn create(&mut self, w: &NewWatch) {
        let (key, opts) = w.request();
        match w.stream {
            Some(s) => self.senders[s].watch(key, Some(opts)).await.expect("send a create request"),
            None => self.open_stream(key, opts).await,
        }
    }

    /// Waits for watcher `wi`'s created response; true if it refused the watcher.
    pub(super) async fn refused(&mut self, model: &Model, wi: usize) -> bool {
        let w = &model.watches[wi];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let created = {
                let received = self.received.lock().expect("lock");
                received.iter().filter(|(s, r)| *s == w.stream && r.created()).nth(w.nth).map(|(_, r)| r.canceled())
            };
            if let Some(refused) = created {
                return refused;
            }
            if tokio::time::timeout_at(deadline, self.tick_rx.changed()).await.is_err() {
                panic!("{}: no created response for watch {wi} {w:?}", self.name);
            }
        }
    }

    /// The id this server gave watcher `wi`, from its created response.
    pub(super) fn id_of(&self, model: &Model, wi: usize) -> Option<i64> {
        let w = &model.watches[wi];
        let received = self.received.lock().expect("lock");
        received.iter().filter(|(s, r)| *s == w.stream && r.created()).nth(w.nth).map(|(_, r)| r.watch_id())
    }
}

pub(super) fn kv(k: &KeyValue) -> String {
    let value = String::from_utf8_lossy(k.value());
    // Large values by their start and length.
    let value = if value.len() > 24 { format!("{}..[{} B]", &value[..8], value.len()) } else { value.into_owned() };
    format!(
        "{}={value}@c{}m{}v{}l{}",
        String::from_utf8_lossy(k.key()),
        k.create_revision(),
        k.mod_revision(),
        k.version(),
        k.lease()
    )
}

pub(super) fn event(t: EventType, k: Option<&KeyValue>, prev: Option<&KeyValue>) -> String {
    let t = if t == EventType::Put { "PUT" } else { "DEL" };
    format!("{t} {} prev={}", k.map_or_else(|| "-".into(), kv), prev.map_or_else(|| "-".into(), kv))
}

//! The model of the history the watch differential keeps: what it asked for (keys,
//! watchers, streams) and what each watcher is owed; and the generator of new watchers.

use std::collections::HashMap;

use etcd_client::{WatchFilterType, WatchOptions};
use rand::rngs::StdRng;
use rand::Rng;

pub(super) const KEYS: [&str; 8] = ["\0", "a", "a/1", "a/2", "ab", "b", "c", "d"];

/// Which keys a watcher covers.
#[derive(Clone, Debug)]
pub(super) enum Sel {
    Key(&'static str),
    Prefix(&'static str),
    Range(&'static str, &'static str),
    FromKey(&'static str),
    All,
}

impl Sel {
    pub(super) fn covers(&self, k: &str) -> bool {
        match self {
            // etcd reads an empty key as "\0".
            Sel::Key(x) => k == if x.is_empty() { "\0" } else { x },
            Sel::Prefix(p) => k.starts_with(p),
            Sel::Range(a, b) => *a <= k && k < *b,
            Sel::FromKey(a) => *a <= k,
            Sel::All => true,
        }
    }

    pub(super) fn options(&self) -> (&'static str, WatchOptions) {
        match self {
            Sel::Key(k) => (k, WatchOptions::new()),
            Sel::Prefix(p) => (p, WatchOptions::new().with_prefix()),
            Sel::Range(a, b) => (a, WatchOptions::new().with_range(*b)),
            Sel::FromKey(a) => (a, WatchOptions::new().with_from_key()),
            Sel::All => ("", WatchOptions::new().with_all_keys()),
        }
    }
}

/// One watcher as the model sees it.
#[derive(Debug)]
pub(super) struct Watch {
    pub(super) stream: usize,
    /// Its place among the create requests of its stream: the n-th created response is its.
    pub(super) nth: usize,
    pub(super) sel: Sel,
    /// The first revision it is owed (a start of 0 is the next revision).
    pub(super) from: i64,
    pub(super) no_put: bool,
    pub(super) no_delete: bool,
    /// Refused at creation (an empty range) or cancelled for a compacted start.
    pub(super) refused: bool,
    pub(super) compacted: bool,
    /// The store's revision when it was cancelled.
    pub(super) cancelled_at: Option<i64>,
    /// Started at a past revision: until it has had an event, etcd may still be catching it
    /// up (every 100 ms), and a compaction past its start would cancel it there.
    pub(super) past: bool,
}

impl Watch {
    /// The cancellations it is owed: the server's (refused, compacted), then the client's
    /// (etcd answers a client's cancel of a watcher it cancelled itself, too).
    pub(super) fn cancellations(&self) -> usize {
        usize::from(self.refused || self.compacted) + usize::from(self.cancelled_at.is_some())
    }
}

/// One change in the history: revision, key, put (else delete).
pub(super) type Change = (i64, String, bool);

#[derive(Default)]
pub(super) struct Model {
    pub(super) current: i64,
    pub(super) compacted: i64,
    pub(super) history: Vec<Change>,
    pub(super) watches: Vec<Watch>,
    /// Create requests sent on each stream.
    pub(super) creates: Vec<usize>,
    /// Progress requests sent on each stream.
    pub(super) progress: Vec<usize>,
    /// The lease each key is attached to (0: none).
    pub(super) lease_of: HashMap<String, i64>,
}

impl Model {
    /// The highest revision a compaction may take without racing etcd's catch-up of a
    /// watcher that started in the past and has had no event yet (and without making its
    /// start the compaction point: see `draw_watch`).
    pub(super) fn compact_max(&self) -> i64 {
        self.watches
            .iter()
            .filter(|w| w.past && !w.refused && !w.compacted && w.cancelled_at.is_none() && self.owed(w) == 0)
            .map(|w| w.from - 1)
            .fold(self.current, i64::min)
    }

    /// The changes watcher `w` is owed so far.
    pub(super) fn owed(&self, w: &Watch) -> usize {
        if w.refused || w.compacted {
            return 0;
        }
        let until = w.cancelled_at.unwrap_or(i64::MAX);
        self.history
            .iter()
            .filter(|(rev, key, put)| {
                *rev >= w.from && *rev <= until && w.sel.covers(key) && if *put { !w.no_put } else { !w.no_delete }
            })
            .count()
    }
}

/// A new watcher's request, drawn from the run's generator.
pub(super) struct NewWatch {
    /// An existing stream, or a new one.
    pub(super) stream: Option<usize>,
    pub(super) sel: Sel,
    pub(super) start: i64,
    pub(super) prev_kv: bool,
    pub(super) filter: Option<WatchFilterType>,
    /// A watch id the client chooses (0: the server's choice).
    pub(super) id: i64,
    pub(super) fragment: bool,
}

pub(super) fn draw_watch(rng: &mut StdRng, model: &Model) -> NewWatch {
    let sel = match rng.random_range(0..11) {
        0 => Sel::Key("a"),
        9 => Sel::Key(""),
        10 => Sel::Range("b", "b"),
        1 => Sel::Key("b"),
        2 => Sel::Key("a/1"),
        3 => Sel::Prefix("a/"),
        4 => Sel::Prefix("a"),
        5 => Sel::Range("a", "b"),
        6 => Sel::FromKey("ab"),
        7 => Sel::All,
        // An empty range: refused at creation.
        _ => Sel::Range("c", "a"),
    };
    let start = match rng.random_range(0..10) {
        0..=4 => 0,
        // Past, but not the compaction point itself: etcd 3.4 drops a tombstone at that
        // revision, so a watcher from there misses the delete (etcd issue 19179), where
        // Keel keeps it (`mvcc/key_index.rs`).
        5..=7 if model.current > model.compacted => rng.random_range((model.compacted + 1).max(1)..=model.current),
        8 if model.compacted > 1 => rng.random_range(1..model.compacted),
        // Negative: etcd 3.4 compares it with its compaction point, -1 before the first
        // compaction. (A start of -1 then reads history from nothing, and in etcd 3.4 that
        // empties the catch-up read of every watcher in the same sync pass: not drawn.)
        9 if rng.random_bool(0.3) => -rng.random_range(if model.compacted > 0 { 1 } else { 2 }..=3),
        _ => model.current + rng.random_range(1..=3),
    };
    let filter = match rng.random_range(0..5) {
        0 => Some(WatchFilterType::NoPut),
        1 => Some(WatchFilterType::NoDelete),
        _ => None,
    };
    let stream = (!model.creates.is_empty() && rng.random_bool(0.7)).then(|| rng.random_range(0..model.creates.len()));
    let id = if rng.random_bool(0.15) { rng.random_range(1..=6) } else { 0 };
    NewWatch { stream, sel, start, prev_kv: rng.random_bool(0.5), filter, id, fragment: false }
}

impl NewWatch {
    pub(super) fn request(&self) -> (&'static str, WatchOptions) {
        let (key, mut o) = self.sel.options();
        if self.start != 0 {
            o = o.with_start_revision(self.start);
        }
        if self.prev_kv {
            o = o.with_prev_key();
        }
        if let Some(f) = self.filter {
            o = o.with_filters([f]);
        }
        if self.id != 0 {
            o = o.with_watch_id(self.id);
        }
        if self.fragment {
            o = o.with_fragment();
        }
        (key, o)
    }

    pub(super) fn record(&self, model: &mut Model) {
        let stream = match self.stream {
            Some(s) => s,
            None => {
                model.creates.push(0);
                model.progress.push(0);
                model.creates.len() - 1
            }
        };
        let nth = model.creates[stream];
        model.creates[stream] += 1;
        model.watches.push(Watch {
            stream,
            nth,
            sel: self.sel.clone(),
            from: if self.start <= 0 { model.current + 1 } else { self.start },
            no_put: self.filter == Some(WatchFilterType::NoPut),
            no_delete: self.filter == Some(WatchFilterType::NoDelete),
            refused: matches!(self.sel, Sel::Range(a, b) if a >= b),
            // etcd 3.4 takes a negative start as it is: compacted once anything has been.
            compacted: (self.start > 0 && self.start < model.compacted) || self.start < 0,
            cancelled_at: None,
            past: self.start > 0 && self.start <= model.current,
        });
    }
}

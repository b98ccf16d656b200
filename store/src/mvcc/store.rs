//! The MVCC store: the in-memory index over the `Kv` column family, plus leases.
//!
//! Writes arrive only through [`MvccStore::apply`], called by the Raft state machine in
//! log order. Each command runs in an [`Executor`] against the current state; its changes
//! are written in one engine batch together with the caller's bookkeeping (the applied log
//! id), and only then published in the index, so a reader that sees a revision in the index
//! always finds its value in storage.
//!
//! Reads take the index lock only to choose keys and take a storage snapshot; values are
//! fetched after the lock is released.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use prost::Message;

use super::compactor;
use super::index::TreeIndex;
use super::key_index::KeyAt;
use super::key_range::KeyRange;
use super::range::{self, IndexView};
use super::revision::Revision;
use super::txn::{Change, Executor, TxnView};
use crate::engine::{Cf, Engine, EngineError, WriteBatch};
use crate::error::EtcdError;
use crate::lease::{Lease, Lessor, MAX_LEASE_TTL};
use crate::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, LeaseCheckpointRequest, LeaseGrantRequest, LeaseGrantResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use crate::proto::keelpb::raft_request::Command;
use crate::proto::keelpb::raft_response::Result as Outcome;
use crate::proto::keelpb::{ApplyError, Empty, LeaseRecord, RaftResponse};
use crate::proto::mvccpb::KeyValue;

const META_COMPACT_REV: &[u8] = b"compact_rev";
use super::compactor::META_COMPACT_DONE;

/// Reads the stored versions at these revisions: the values changes left out (see
/// [`Change::prev_stored`]); `None` where one cannot be read.
pub type StoredValues<'a> = &'a dyn Fn(&[Revision]) -> Vec<Option<KeyValue>>;

/// Told about every committed revision, in order, while the index write lock is held
/// (so a listener that reads the index afterwards never misses or sees ahead of a change).
pub trait CommitListener: Send + Sync {
    /// `stored` reads previous values the changes left out, for a listener that needs them.
    fn committed(&self, revision: i64, changes: &[Change], stored: StoredValues<'_>);
    /// The whole state was replaced (a snapshot was installed): history may have jumped.
    fn reloaded(&self, _revision: i64) {}
}

/// One change read back from history.
#[derive(Clone, Debug)]
pub struct HistoryEvent {
    pub revision: i64,
    pub delete: bool,
    pub kv: KeyValue,
    pub prev: Option<KeyValue>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistoryError {
    /// The requested history is gone; the value is the compaction revision.
    Compacted(i64),
    Storage(String),
}

pub(super) struct State {
    pub(super) index: TreeIndex,
    /// The latest revision.
    pub(super) rev: i64,
    /// Reads below this revision fail with `Compacted`.
    pub(super) compact: i64,
    pub(super) lessor: Lessor,
}

pub struct MvccStore {
    engine: Engine,
    state: RwLock<State>,
    listener: RwLock<Option<Arc<dyn CommitListener>>>,
    /// The minimum lease TTL in seconds (etcd: 1.5 election timeouts, rounded up).
    min_lease_ttl: i64,
    /// Highest revision whose physical compaction finished.
    compacted_tx: tokio::sync::watch::Sender<i64>,
    compactions: compactor::Compactions,
    /// The raised alarms; NOSPACE caps what may be applied.
    pub alarms: super::alarms::Alarms,
}

/// The index as it stands under a lock, plus storage to fetch values from.
struct View<'a> {
    state: &'a State,
    engine: &'a Engine,
}

impl IndexView for View<'_> {
    fn current_revision(&self) -> i64 {
        self.state.rev
    }
    fn compact_revision(&self) -> i64 {
        self.state.compact
    }
    fn index_range(&self, range: &KeyRange, at: i64, limit: usize) -> (Vec<(Bytes, KeyAt)>, usize) {
        self.state.index.range(range, at, limit)
    }
}

impl TxnView for View<'_> {
    fn fetch(&self, revs: &[Revision]) -> Result<Vec<KeyValue>, EtcdError> {
        let keys: Vec<Vec<u8>> = revs.iter().map(|r| r.to_key(false)).collect();
        decode_all(self.engine.multi_get(Cf::Kv, &keys)?)
    }
    fn lease_exists(&self, id: i64) -> bool {
        self.state.lessor.contains(id)
    }
    fn lease_of(&self, key: &Bytes) -> i64 {
        self.state.lessor.lease_of(key)
    }
}

fn decode_all(values: Vec<Option<Vec<u8>>>) -> Result<Vec<KeyValue>, EtcdError> {
    values
        .into_iter()
        .map(|v| {
            let v = v.ok_or_else(|| EtcdError::Internal("indexed revision missing from storage".into()))?;
            KeyValue::decode(v.as_slice()).map_err(|e| EtcdError::Internal(format!("corrupt value: {e}")))
        })
        .collect()
}

fn be_i64(v: &[u8]) -> i64 {
    v.try_into().map(i64::from_be_bytes).unwrap_or(0)
}

impl MvccStore {
    /// Opens the store over `engine`, rebuilding the index and lease table from storage.
    /// Physical compactions delete at most `n` revisions in one write
    /// (`--experimental-compaction-batch-limit`).
    pub fn set_compaction_batch(&self, n: usize) {
        self.compactions.set_batch(n);
    }

    pub fn open(engine: Engine, min_lease_ttl: i64) -> Result<Arc<MvccStore>, EngineError> {
        let (state, keep) = Self::load(&engine)?;
        let compact = state.compact;
        let done = engine.get(Cf::Meta, META_COMPACT_DONE)?.map_or(0, |v| be_i64(&v));
        let (compacted_tx, _) = tokio::sync::watch::channel(done);
        let alarms = super::alarms::Alarms::load(&engine)?;
        let store = Arc::new(MvccStore {
            engine,
            state: RwLock::new(state),
            listener: RwLock::new(None),
            min_lease_ttl,
            compacted_tx,
            compactions: compactor::Compactions::default(),
            alarms,
        });
        if compact > done {
            store.schedule_physical_compaction(compact, keep);
        }
        Ok(store)
    }

    /// Reads the whole state back from storage (start-up and after a snapshot install).
    fn load(engine: &Engine) -> Result<(State, Vec<Revision>), EngineError> {
        let mut index = TreeIndex::default();
        let mut rev = 0;
        let mut latest_lease: Vec<(Bytes, i64)> = Vec::new();
        for item in engine.scan(Cf::Kv, &[], None)? {
            let (k, v) = item?;
            let Some((r, tombstone)) = Revision::from_key(&k) else { continue };
            let Ok(kv) = KeyValue::decode(&*v) else { continue };
            rev = rev.max(r.main);
            if tombstone {
                index.restore_tombstone(kv.key.clone(), r);
                latest_lease.push((kv.key, 0));
            } else {
                latest_lease.push((kv.key.clone(), kv.lease));
                index.put(kv.key, r);
            }
        }
        let compact = engine.get(Cf::Meta, META_COMPACT_REV)?.map_or(0, |v| be_i64(&v));
        let keep = if compact > 0 { index.compact(compact) } else { Vec::new() };
        let mut lessor = Lessor::default();
        for item in engine.scan(Cf::Lease, &[], None)? {
            let (_, v) = item?;
            if let Ok(l) = LeaseRecord::decode(&*v) {
                lessor.insert(Lease { id: l.id, ttl: l.ttl, remaining_ttl: l.remaining_ttl, keys: BTreeSet::new() });
            }
        }
        // The last write of each key decides its lease (later entries override earlier).
        for (key, lease) in latest_lease {
            lessor.attach(&key, lease);
        }
        Ok((State { index, rev: rev.max(compact).max(1), compact, lessor }, keep))
    }

    /// Replaces the in-memory state with what storage now holds (after a snapshot install).
    pub fn reload(&self) -> Result<(), EngineError> {
        let (fresh, keep) = Self::load(&self.engine)?;
        let compact = fresh.compact;
        let rev = fresh.rev;
        *self.state.write() = fresh;
        self.alarms.reload(&self.engine)?;
        if let Some(l) = self.listener.read().as_ref() {
            l.reloaded(rev);
        }
        if compact > *self.compacted_tx.borrow() {
            self.schedule_physical_compaction(compact, keep);
        }
        Ok(())
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn set_listener(&self, l: Arc<dyn CommitListener>) {
        *self.listener.write() = Some(l);
    }

    pub fn current_revision(&self) -> i64 {
        self.state.read().rev
    }

    pub fn compact_revision(&self) -> i64 {
        self.state.read().compact
    }

    /// Runs `f` with the index read-locked: what the watch hub uses to catch a watcher up
    /// from history without racing new commits.
    pub fn with_index<T>(&self, f: impl FnOnce(&TreeIndex, i64, i64) -> T) -> T {
        let st = self.state.read();
        f(&st.index, st.rev, st.compact)
    }

    /// A hash of the store's history up to revision `rev` (0: now), as etcd's `HashKV`
    /// defines it: every revision still kept (those after the compaction point, and the
    /// ones reads at it need), key and stored value, in revision order. Members that applied
    /// the same history have the same hash, however far their storage has physically
    /// compacted. (CRC-32 over Keel's own encoding: comparable between Keel members, not
    /// with etcd's.) Returns the hash, the current revision and the compaction point.
    pub fn hash_kv(&self, rev: i64) -> Result<(u32, i64, i64), EtcdError> {
        let (revisions, snap, current, compact) = {
            let st = self.state.read();
            if rev > 0 && rev <= st.compact {
                return Err(EtcdError::Compacted);
            }
            if rev > st.rev {
                return Err(EtcdError::FutureRev);
            }
            let at = if rev == 0 { st.rev } else { rev };
            let everything = KeyRange::new(&Bytes::new(), &Bytes::from_static(b"\0"));
            let revisions: Vec<Vec<u8>> = st
                .index
                .changes_since(&everything, 0)
                .into_iter()
                .filter(|(r, _, _)| r.main <= at)
                .map(|(r, tombstone, _)| r.to_key(tombstone))
                .collect();
            // Values as of the same moment: a compaction that follows may delete some.
            (revisions, self.engine.snapshot(), st.rev, st.compact)
        };
        let mut h = crc32fast::Hasher::new();
        // As etcd's starts with its bucket's name: an empty history does not hash to 0.
        h.update(b"key");
        for chunk in revisions.chunks(1024) {
            let values = snap.multi_get(Cf::Kv, chunk)?;
            for (k, v) in chunk.iter().zip(values) {
                h.update(k);
                h.update(v.as_deref().unwrap_or_default());
            }
        }
        Ok((h.finalize(), current, compact))
    }

    /// History for a watcher catching up: every change to `range` at revisions `from..`,
    /// in revision order, with values (and previous values when asked). Stops after about
    /// `max_events` events but never inside a revision. Returns the events and the last
    /// revision they cover; fails with `Compacted` if `from` is below the compaction point.
    pub fn history(
        &self,
        range: &KeyRange,
        from: i64,
        with_prev: bool,
        max_events: usize,
    ) -> Result<(Vec<HistoryEvent>, i64), HistoryError> {
        let (mut changes, prevs, upto, snap) = {
            let st = self.state.read();
            if from < st.compact {
                return Err(HistoryError::Compacted(st.compact));
            }
            let mut changes = st.index.changes_since(range, from - 1);
            let mut upto = st.rev;
            if changes.len() > max_events {
                let cut_rev = changes[max_events - 1].0.main;
                changes.retain(|(r, _, _)| r.main <= cut_rev);
                upto = cut_rev;
            }
            let prevs: Vec<Option<Revision>> = if with_prev {
                changes.iter().map(|(r, _, k)| st.index.get(k, r.main - 1).map(|a| a.modified)).collect()
            } else {
                Vec::new()
            };
            (std::mem::take(&mut changes), prevs, upto, self.engine.snapshot())
        };
        let keys: Vec<Vec<u8>> = changes.iter().map(|(r, t, _)| r.to_key(*t)).collect();
        let values = snap.multi_get(Cf::Kv, &keys).map_err(|e| HistoryError::Storage(e.to_string()))?;
        let prev_keys: Vec<Vec<u8>> = prevs.iter().flatten().map(|r| r.to_key(false)).collect();
        let mut prev_values =
            snap.multi_get(Cf::Kv, &prev_keys).map_err(|e| HistoryError::Storage(e.to_string()))?.into_iter();
        let mut out = Vec::with_capacity(changes.len());
        for (i, ((rev, tombstone, _), v)) in changes.drain(..).zip(values).enumerate() {
            // Missing means compaction removed it after we looked: the watcher must restart.
            let v = v.ok_or(HistoryError::Compacted(self.compact_revision()))?;
            let kv = KeyValue::decode(v.as_slice()).map_err(|e| HistoryError::Storage(e.to_string()))?;
            let prev = match prevs.get(i).copied().flatten() {
                Some(_) => prev_values.next().flatten().and_then(|p| KeyValue::decode(p.as_slice()).ok()),
                None => None,
            };
            out.push(HistoryEvent { revision: rev.main, delete: tombstone, kv, prev });
        }
        Ok((out, upto))
    }

    /// Values of specific revisions (tombstones included when asked), from a snapshot.
    pub fn fetch_revisions(&self, revs: &[(Revision, bool)]) -> Result<Vec<KeyValue>, EtcdError> {
        let keys: Vec<Vec<u8>> = revs.iter().map(|(r, t)| r.to_key(*t)).collect();
        decode_all(self.engine.multi_get(Cf::Kv, &keys)?)
    }

    /// A read of the current or a past revision.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, EtcdError> {
        crate::metrics::HOT.mvcc_range.inc();
        let (sel, snap) = {
            let st = self.state.read();
            let view = View { state: &st, engine: &self.engine };
            let sel = range::select(&view, req, st.rev, &[])?;
            (sel, self.engine.snapshot())
        };
        range::materialize(sel, |revs| {
            let keys: Vec<Vec<u8>> = revs.iter().map(|r| r.to_key(false)).collect();
            decode_all(snap.multi_get(Cf::Kv, &keys)?)
        })
    }

    /// A transaction whose branches only read, served from the current state without Raft.
    pub fn read_txn(&self, req: &TxnRequest) -> Result<TxnResponse, EtcdError> {
        let st = self.state.read();
        let view = View { state: &st, engine: &self.engine };
        let mut ex = Executor::new(&view);
        ex.txn(req)
    }

    pub fn lease(&self, id: i64) -> Option<Lease> {
        self.state.read().lessor.get(id).cloned()
    }

    pub fn lease_ids(&self) -> Vec<i64> {
        self.state.read().lessor.ids()
    }

    pub fn leases(&self) -> Vec<Lease> {
        self.state.read().lessor.leases().cloned().collect()
    }

    /// Applies one committed command. `batch` holds the caller's bookkeeping (applied log
    /// id) and is written atomically with the command's changes. A request error (e.g. an
    /// unknown lease) is a normal outcome carried in the response; only storage failures
    /// are errors here.
    pub fn apply(&self, cmd: &Command, mut batch: WriteBatch) -> Result<RaftResponse, EngineError> {
        let mut st = self.state.write();
        if let Command::Alarm(r) = cmd {
            let (resp, raised) = self.alarms.apply(r, &mut batch);
            self.engine.write(batch, false)?;
            if let Some(raised) = raised {
                self.alarms.publish(raised);
            }
            return Ok(RaftResponse { revision: st.rev, result: Some(Outcome::Alarm(resp)) });
        }
        let result = self.execute(&st, cmd);
        let (revision, outcome) = match result {
            Ok(Executed { outcome, changes, rev, lease_ops }) => {
                let committed_rev = if changes.is_empty() { st.rev } else { rev };
                self.stage(&mut batch, rev, &changes, &lease_ops);
                self.engine.write(batch, false)?;
                self.publish(&mut st, rev, &changes, lease_ops);
                if let Some(CompactTo(at)) = compaction_of(cmd, &outcome) {
                    self.compact_index(&mut st, at)?;
                }
                (committed_rev, outcome)
            }
            Err(e) => {
                self.engine.write(batch, false)?;
                (st.rev, Outcome::Error(ApplyError { code: e.apply_code() }))
            }
        };
        Ok(RaftResponse { revision, result: Some(outcome) })
    }

    /// Applies bookkeeping only (a Raft entry that is not a store command).
    pub fn apply_noop(&self, batch: WriteBatch) -> Result<(), EngineError> {
        let _st = self.state.write();
        self.engine.write(batch, false)
    }

    fn execute(&self, st: &State, cmd: &Command) -> Result<Executed, EtcdError> {
        if let Some(e) = self.alarms.refusal(cmd) {
            return Err(e);
        }
        let view = View { state: st, engine: &self.engine };
        let mut ex = Executor::new(&view);
        let mut lease_ops = Vec::new();
        let outcome = match cmd {
            Command::Put(r) => Outcome::Put(ex.put(r)?),
            Command::DeleteRange(r) => Outcome::DeleteRange(ex.delete_range(r)?),
            Command::Txn(r) => Outcome::Txn(ex.txn(r)?),
            Command::Compaction(r) => Outcome::Compaction(check_compaction(st, r)?),
            Command::LeaseGrant(r) => {
                let (resp, lease) = self.grant(st, r)?;
                lease_ops.push(LeaseOp::Grant(lease));
                Outcome::LeaseGrant(resp)
            }
            Command::LeaseRevoke(r) => {
                let resp = revoke(st, &mut ex, r)?;
                lease_ops.push(LeaseOp::Revoke(r.id));
                Outcome::LeaseRevoke(resp)
            }
            Command::LeaseCheckpoint(r) => {
                lease_ops.extend(checkpoints(st, r));
                Outcome::Empty(Empty {})
            }
            // The state machine unpacks batches; members' attributes and auth live there too.
            _ => Outcome::Empty(Empty {}),
        };
        let (rev, changes) = ex.finish();
        Ok(Executed { outcome, changes, rev, lease_ops })
    }

    fn grant(&self, st: &State, r: &LeaseGrantRequest) -> Result<(LeaseGrantResponse, Lease), EtcdError> {
        if r.ttl > MAX_LEASE_TTL {
            return Err(EtcdError::LeaseTtlTooLarge);
        }
        if r.id == 0 || st.lessor.contains(r.id) {
            return Err(EtcdError::LeaseExist);
        }
        let ttl = r.ttl.max(self.min_lease_ttl);
        let lease = Lease { id: r.id, ttl, remaining_ttl: 0, keys: BTreeSet::new() };
        let resp = LeaseGrantResponse { header: Some(header(st.rev)), id: r.id, ttl, error: String::new() };
        Ok((resp, lease))
    }

    /// Adds a command's changes and lease updates to the batch.
    fn stage(&self, batch: &mut WriteBatch, rev: i64, changes: &[Change], lease_ops: &[LeaseOp]) {
        for (sub, c) in changes.iter().enumerate() {
            let r = Revision::new(rev, sub as i64);
            match &c.kv {
                Some(kv) if corrupts(&kv.key) => {
                    let mut bad = kv.clone();
                    bad.value = [&kv.value[..], b"!"].concat().into();
                    batch.put(Cf::Kv, r.to_key(false), bad.encode_to_vec());
                }
                Some(kv) => batch.put(Cf::Kv, r.to_key(false), kv.encode_to_vec()),
                None => {
                    let tomb = KeyValue { key: c.key.clone(), mod_revision: rev, ..Default::default() };
                    batch.put(Cf::Kv, r.to_key(true), tomb.encode_to_vec());
                }
            }
        }
        for op in lease_ops {
            match op {
                LeaseOp::Grant(l) | LeaseOp::Checkpoint(l) => {
                    let rec = LeaseRecord { id: l.id, ttl: l.ttl, remaining_ttl: l.remaining_ttl };
                    batch.put(Cf::Lease, l.id.to_be_bytes().to_vec(), rec.encode_to_vec());
                }
                LeaseOp::Revoke(id) => batch.delete(Cf::Lease, id.to_be_bytes().to_vec()),
            }
        }
    }

    /// Makes committed changes visible: index, revision, leases, then listeners.
    fn publish(&self, st: &mut State, rev: i64, changes: &[Change], lease_ops: Vec<LeaseOp>) {
        for op in lease_ops {
            match op {
                LeaseOp::Grant(l) => st.lessor.insert(l),
                LeaseOp::Checkpoint(l) => {
                    st.lessor.set_remaining(l.id, l.remaining_ttl);
                }
                LeaseOp::Revoke(id) => {
                    st.lessor.remove(id);
                }
            }
        }
        if changes.is_empty() {
            return;
        }
        for (sub, c) in changes.iter().enumerate() {
            let r = Revision::new(rev, sub as i64);
            match &c.kv {
                Some(kv) => {
                    st.index.put(c.key.clone(), r);
                    st.lessor.attach(&c.key, kv.lease);
                }
                None => {
                    st.index.tombstone(&c.key, r);
                    st.lessor.detach(&c.key);
                }
            }
        }
        st.rev = rev;
        if let Some(l) = self.listener.read().as_ref() {
            let stored = |revs: &[Revision]| -> Vec<Option<KeyValue>> {
                let keys: Vec<Vec<u8>> = revs.iter().map(|r| r.to_key(false)).collect();
                match self.engine.multi_get(Cf::Kv, &keys) {
                    Ok(values) => {
                        values.into_iter().map(|v| v.and_then(|v| KeyValue::decode(v.as_slice()).ok())).collect()
                    }
                    Err(_) => vec![None; revs.len()],
                }
            };
            l.committed(rev, changes, &stored);
        }
    }

    fn compact_index(&self, st: &mut State, at: i64) -> Result<(), EngineError> {
        let mut batch = WriteBatch::default();
        batch.put(Cf::Meta, META_COMPACT_REV, at.to_be_bytes().to_vec());
        self.engine.write(batch, false)?;
        let keep = st.index.compact(at);
        st.compact = at;
        self.schedule_physical_compaction(at, keep);
        Ok(())
    }

    /// Deletes history below `at` from storage in the background.
    fn schedule_physical_compaction(&self, at: i64, keep: Vec<Revision>) {
        self.compactions.spawn(self.engine.clone(), at, keep, self.compacted_tx.clone());
    }

    /// Waits until history below `at` is physically gone (Compact with `physical`).
    pub async fn wait_compacted(&self, at: i64) {
        let mut rx = self.compacted_tx.subscribe();
        let _ = rx.wait_for(|done| *done >= at).await;
    }
}

/// Failpoint for fault-injection tests, naming a key: this member stores every value put
/// to it with a byte added, as a disk that flips bits would, so its history differs from
/// its peers' (what the corruption checks look for). Read once; unset in normal use.
pub const CORRUPT_APPLY: &str = "KEEL_FAILPOINT_CORRUPT_APPLY";

fn corrupts(key: &[u8]) -> bool {
    static KEY: std::sync::OnceLock<Option<Vec<u8>>> = std::sync::OnceLock::new();
    KEY.get_or_init(|| std::env::var_os(CORRUPT_APPLY).map(|k| k.into_encoded_bytes())).as_deref() == Some(key)
}

struct Executed {
    outcome: Outcome,
    changes: Vec<Change>,
    rev: i64,
    lease_ops: Vec<LeaseOp>,
}

enum LeaseOp {
    Grant(Lease),
    Revoke(i64),
    Checkpoint(Lease),
}

struct CompactTo(i64);

fn compaction_of(cmd: &Command, outcome: &Outcome) -> Option<CompactTo> {
    match (cmd, outcome) {
        (Command::Compaction(r), Outcome::Compaction(_)) => Some(CompactTo(r.revision)),
        _ => None,
    }
}

fn header(revision: i64) -> ResponseHeader {
    ResponseHeader { revision, ..Default::default() }
}

fn check_compaction(st: &State, r: &CompactionRequest) -> Result<CompactionResponse, EtcdError> {
    if r.revision > st.rev {
        return Err(EtcdError::FutureRev);
    }
    if r.revision <= st.compact {
        return Err(EtcdError::Compacted);
    }
    Ok(CompactionResponse { header: Some(header(st.rev)) })
}

/// Revoking a lease deletes its keys, all in one revision.
fn revoke(
    st: &State,
    ex: &mut Executor<'_, View<'_>>,
    r: &LeaseRevokeRequest,
) -> Result<LeaseRevokeResponse, EtcdError> {
    let lease = st.lessor.get(r.id).ok_or(EtcdError::LeaseNotFound)?;
    for key in &lease.keys {
        let del = crate::proto::etcdserverpb::DeleteRangeRequest { key: key.clone(), ..Default::default() };
        ex.delete_range(&del)?;
    }
    Ok(LeaseRevokeResponse { header: None })
}

fn checkpoints(st: &State, r: &LeaseCheckpointRequest) -> Vec<LeaseOp> {
    r.checkpoints
        .iter()
        .filter_map(|c| {
            let mut l = st.lessor.get(c.id)?.clone();
            l.remaining_ttl = c.remaining_ttl;
            Some(LeaseOp::Checkpoint(l))
        })
        .collect()
}

//! The Raft state machine: committed entries in, MVCC store changes out.
//!
//! Each entry is applied with its log id in one atomic engine write, so after a crash the
//! store is exactly at its recorded last-applied entry and Raft replays the rest. The
//! membership and each member's published attributes live here too (in `Meta`), because
//! they are replicated state that every member must agree on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use parking_lot::RwLock;
use prost::Message;

use super::answer::Waiters;
use super::snapshot::{self, SnapshotFile};
use openraft::StorageIOError;

use super::{decode, encode, Cmd, Entry, LogId, Resp, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::auth::AuthStore;
use crate::engine::{Cf, Engine, EngineError, WriteBatch};
use crate::error::EtcdError;
use crate::mvcc::MvccStore;
use crate::proto::keelpb::raft_request::Command;
use crate::proto::keelpb::raft_response::Result as Outcome;
use crate::proto::keelpb::{ApplyError, AuthHeader, MemberAttributes, RaftBatchResponse, RaftRequest, RaftResponse};

const LAST_APPLIED: &[u8] = b"last_applied";
const MEMBERSHIP: &[u8] = b"membership";
/// (log id, commands done) of a batch entry being applied.
const PARTIAL: &[u8] = b"partial_batch";
const ATTRS_PREFIX: &[u8] = b"member_attrs/";
const CURRENT_SNAPSHOT: &str = "current.meta";
/// A retired snapshot file that the next one written overwrites in place instead of
/// creating a file: freeing tens of megabytes (on a filesystem mounted with `discard`, as
/// here) stalled every member's log fsyncs for 30–100 ms.
const SPARE_SNAPSHOT: &str = "spare";
/// State-machine facts the rest of the member reads (API handlers, the read path).
pub struct Applied {
    pub membership: RwLock<StoredMembership>,
    /// Member id → the name and client URLs it published.
    pub attrs: RwLock<BTreeMap<u64, MemberAttributes>>,
    last: RwLock<Option<LogId>>,
    index_tx: tokio::sync::watch::Sender<u64>,
}

impl Applied {
    pub fn last_applied(&self) -> Option<LogId> {
        *self.last.read()
    }

    /// Waits until the entry at `index` has been applied.
    pub async fn wait_for(&self, index: u64) {
        let mut rx = self.index_tx.subscribe();
        let _ = rx.wait_for(|i| *i >= index).await;
    }

    fn set(&self, id: LogId) {
        *self.last.write() = Some(id);
        self.index_tx.send_replace(id.index);
    }
}

pub struct StateMachine {
    store: Arc<MvccStore>,
    auth: Arc<AuthStore>,
    engine: Engine,
    applied: Arc<Applied>,
    sync: Arc<StateSync>,
    snap_dir: PathBuf,
    /// Who waits on this member for entries it proposed (see [`super::answer`]).
    waiters: Arc<Waiters>,
}

/// How far the applied state is known to be on disk. Applying writes only RocksDB's
/// memtables (the log replays what a crash loses), so before log entries are purged the
/// state they produced must be flushed. Building a snapshot does that on its own thread;
/// a purge it has not covered flushes itself.
pub struct StateSync {
    engine: Engine,
    through: AtomicU64,
}

impl StateSync {
    /// Makes the state applied through log index `index` durable: free when a snapshot
    /// already did. Called once everything through `index` has been applied.
    pub fn ensure(&self, index: u64) -> Result<(), EngineError> {
        if self.through.load(Ordering::Acquire) >= index {
            return Ok(());
        }
        self.engine.persist()?;
        self.through.fetch_max(index, Ordering::AcqRel);
        Ok(())
    }

    /// Flushes what has been applied, which includes everything through `index`.
    fn sync_through(&self, index: u64) -> Result<(), EngineError> {
        self.engine.persist()?;
        self.through.fetch_max(index, Ordering::AcqRel);
        Ok(())
    }
}

fn sm_read(e: impl std::error::Error + 'static) -> StorageError {
    StorageError::from(StorageIOError::read_state_machine(&e))
}

fn sm_write(e: impl std::error::Error + 'static) -> StorageError {
    StorageError::from(StorageIOError::write_state_machine(&e))
}

fn snap_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageError::from(StorageIOError::write_snapshot(None, &e))
}

fn attr_key(id: u64) -> Vec<u8> {
    let mut k = ATTRS_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

impl StateMachine {
    pub fn open(store: Arc<MvccStore>, auth: Arc<AuthStore>, snap_dir: PathBuf) -> Result<StateMachine, StorageError> {
        std::fs::create_dir_all(&snap_dir).map_err(sm_read)?;
        let engine = store.engine().clone();
        let (index_tx, _) = tokio::sync::watch::channel(0);
        let applied = Arc::new(Applied {
            membership: RwLock::new(StoredMembership::default()),
            attrs: RwLock::new(BTreeMap::new()),
            last: RwLock::new(None),
            index_tx,
        });
        let sync = Arc::new(StateSync { engine: engine.clone(), through: AtomicU64::new(0) });
        for ext in [SENDING_EXT, "tmp"] {
            clear_files(&snap_dir, ext, false);
        }
        let sm = StateMachine { store, auth, engine, applied, sync, snap_dir, waiters: Arc::default() };
        sm.load_meta()?;
        Ok(sm)
    }

    pub fn applied(&self) -> Arc<Applied> {
        self.applied.clone()
    }

    /// Where the log store registers the waiters of entries proposed here.
    pub fn waiters(&self) -> Arc<Waiters> {
        self.waiters.clone()
    }

    /// What the log store consults before purging.
    pub fn state_sync(&self) -> Arc<StateSync> {
        self.sync.clone()
    }

    fn load_meta(&self) -> Result<(), StorageError> {
        let last: Option<LogId> = match self.engine.get(Cf::Meta, LAST_APPLIED).map_err(sm_read)? {
            Some(v) => Some(decode(&v).map_err(sm_read)?),
            None => None,
        };
        let membership: StoredMembership = match self.engine.get(Cf::Meta, MEMBERSHIP).map_err(sm_read)? {
            Some(v) => decode(&v).map_err(sm_read)?,
            None => StoredMembership::default(),
        };
        let mut attrs = BTreeMap::new();
        let mut end = ATTRS_PREFIX.to_vec();
        end.push(0xFF);
        for item in self.engine.scan(Cf::Meta, ATTRS_PREFIX, Some(&end)).map_err(sm_read)? {
            let (_, v) = item.map_err(sm_read)?;
            if let Ok(a) = MemberAttributes::decode(&*v) {
                attrs.insert(a.id, a);
            }
        }
        *self.applied.membership.write() = membership;
        *self.applied.attrs.write() = attrs;
        *self.applied.last.write() = last;
        self.applied.index_tx.send_replace(last.map_or(0, |l| l.index));
        Ok(())
    }

    fn apply_one(&self, entry: Entry) -> Result<Resp, StorageError> {
        let mut batch = WriteBatch::default();
        batch.put(Cf::Meta, LAST_APPLIED, encode(&entry.log_id).map_err(sm_write)?);
        let resp = match entry.payload {
            EntryPayload::Blank => {
                self.store.apply_noop(batch).map_err(sm_write)?;
                Resp::default()
            }
            EntryPayload::Normal(Cmd(req, _)) => match req.command {
                Some(Command::Batch(b)) => self.apply_batch(entry.log_id, b.requests)?,
                Some(cmd) => Resp(self.apply_command(cmd, req.auth, entry.log_id.index, batch)?),
                None => {
                    self.store.apply_noop(batch).map_err(sm_write)?;
                    Resp::default()
                }
            },
            EntryPayload::Membership(m) => {
                let stored = StoredMembership::new(Some(entry.log_id), m);
                batch.put(Cf::Meta, MEMBERSHIP, encode(&stored).map_err(sm_write)?);
                self.store.apply_noop(batch).map_err(sm_write)?;
                *self.applied.membership.write() = stored;
                Resp::default()
            }
        };
        self.applied.set(entry.log_id);
        Ok(resp)
    }

    /// Applies one command; `who` is the client that sent it (absent for a member's own
    /// commands), whose permission is checked first.
    fn apply_command(
        &self,
        cmd: Command,
        who: Option<AuthHeader>,
        index: u64,
        mut batch: WriteBatch,
    ) -> Result<RaftResponse, StorageError> {
        if crate::auth::is_auth_command(&cmd) {
            let (outcome, change) = self.auth.apply(&cmd, who.as_ref(), index, &mut batch);
            self.store.apply_noop(batch).map_err(sm_write)?;
            if let Some(c) = change {
                self.auth.commit(c);
            }
            return Ok(self.answer(outcome));
        }
        if let Some(who) = &who {
            let lease_keys = |id: i64| self.store.lease(id).map(|l| l.keys.into_iter().collect()).unwrap_or_default();
            if let Err(e) = self.auth.check_command(&cmd, who, &lease_keys) {
                self.store.apply_noop(batch).map_err(sm_write)?;
                return Ok(self.answer(Err(e)));
            }
        }
        if let Command::MemberAttributes(a) = &cmd {
            batch.put(Cf::Meta, attr_key(a.id), a.encode_to_vec());
        }
        let r = self.store.apply(&cmd, batch).map_err(sm_write)?;
        if let Command::MemberAttributes(a) = cmd {
            self.applied.attrs.write().insert(a.id, a);
        }
        Ok(r)
    }

    /// The response to a command that changed no key.
    fn answer(&self, outcome: Result<Outcome, EtcdError>) -> RaftResponse {
        let result = outcome.unwrap_or_else(|e| Outcome::Error(ApplyError { code: e.apply_code() }));
        RaftResponse { revision: self.store.current_revision(), result: Some(result) }
    }

    /// Applies a batch entry: each command in its own atomic write that also records how
    /// far into the entry it got (the last one records the entry as applied), so a crash in
    /// the middle replays the entry from where it stopped, never applying a command twice.
    fn apply_batch(&self, log_id: LogId, requests: Vec<RaftRequest>) -> Result<Resp, StorageError> {
        let done = self.partial_progress(log_id)?;
        let n = requests.len();
        let mut responses = Vec::with_capacity(n);
        for (i, req) in requests.into_iter().enumerate() {
            let who = req.auth;
            let Some(cmd) = req.command.filter(|_| i >= done) else {
                responses.push(RaftResponse::default());
                continue;
            };
            let mut wb = WriteBatch::default();
            if i + 1 == n {
                wb.put(Cf::Meta, LAST_APPLIED, encode(&log_id).map_err(sm_write)?);
            } else {
                wb.put(Cf::Meta, PARTIAL, encode(&(log_id, i + 1)).map_err(sm_write)?);
            }
            responses.push(self.apply_command(cmd, who, log_id.index, wb)?);
        }
        if n == 0 {
            let mut wb = WriteBatch::default();
            wb.put(Cf::Meta, LAST_APPLIED, encode(&log_id).map_err(sm_write)?);
            self.store.apply_noop(wb).map_err(sm_write)?;
        }
        Ok(Resp(RaftResponse { revision: 0, result: Some(Outcome::Batch(RaftBatchResponse { responses })) }))
    }

    /// How many commands of the batch entry `log_id` were applied before a crash.
    fn partial_progress(&self, log_id: LogId) -> Result<usize, StorageError> {
        match self.engine.get(Cf::Meta, PARTIAL).map_err(sm_read)? {
            Some(v) => {
                let (id, done): (LogId, usize) = decode(&v).map_err(sm_read)?;
                Ok(if id == log_id { done } else { 0 })
            }
            None => Ok(0),
        }
    }

    fn current_meta_path(&self) -> PathBuf {
        self.snap_dir.join(CURRENT_SNAPSHOT)
    }

    fn snapshot_path(&self, id: &str) -> PathBuf {
        self.snap_dir.join(format!("{id}.snap"))
    }

    /// The meta of a snapshot of the state as applied now.
    fn applied_meta(&self) -> SnapshotMeta {
        let last = self.applied.last_applied();
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let id = match last {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, nanos),
            None => format!("0-0-{nanos}"),
        };
        SnapshotMeta { last_log_id: last, last_membership: self.applied.membership.read().clone(), snapshot_id: id }
    }

    /// A deferred view of the state as applied now, for the snapshot `meta` (see
    /// [`SnapshotFile::deferred`]). Each has a file name of its own: two followers may be
    /// sent the same snapshot at once.
    async fn view(&self, meta: &SnapshotMeta) -> Result<SnapshotFile, snapshot::SnapshotError> {
        let n = NEXT_VIEW.fetch_add(1, Ordering::Relaxed);
        let out = self.snap_dir.join(format!("{}-{n}.{SENDING_EXT}", meta.snapshot_id));
        SnapshotFile::deferred(self.engine.clone(), out, self.snap_dir.join(SPARE_SNAPSHOT)).await
    }
}

/// Numbers deferred snapshot files, so no two share a name.
static NEXT_VIEW: AtomicU64 = AtomicU64::new(0);
/// Snapshot files written for one send; any left by a crash are removed at start.
const SENDING_EXT: &str = "send";

/// Records `meta` as the current snapshot (atomically). Snapshot files no longer needed
/// (`*.snap`: one just installed, or whole snapshots kept by earlier versions) are retired:
/// one is kept as [`SPARE_SNAPSHOT`] for the next file to overwrite, the rest removed.
fn set_current(snap_dir: &std::path::Path, meta: &SnapshotMeta) -> Result<(), StorageError> {
    let tmp = snap_dir.join(format!("{CURRENT_SNAPSHOT}.tmp"));
    std::fs::write(&tmp, encode(meta).map_err(snap_err)?).map_err(snap_err)?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(snap_err)?;
    std::fs::rename(&tmp, snap_dir.join(CURRENT_SNAPSHOT)).map_err(snap_err)?;
    clear_files(snap_dir, "snap", true);
    Ok(())
}

/// Removes the files in `snap_dir` ending in `.ext`; with `keep_spare`, the first becomes
/// [`SPARE_SNAPSHOT`] instead if there is none yet.
fn clear_files(snap_dir: &std::path::Path, ext: &str, keep_spare: bool) {
    let Ok(dir) = std::fs::read_dir(snap_dir) else { return };
    let spare = snap_dir.join(SPARE_SNAPSHOT);
    for e in dir.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != ext) {
            continue;
        }
        if !keep_spare || spare.exists() || std::fs::rename(&p, &spare).is_err() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Taking a snapshot makes the applied state durable through the snapshot's last entry and
/// records its meta: RocksDB holds the state, so no file is written (a follower that needs
/// one gets it from [`RaftStateMachine::get_current_snapshot`]). The data returned is a
/// deferred view of that same state, written only if someone asks for it.
pub struct SnapshotBuilder {
    view: Option<SnapshotFile>,
    meta: SnapshotMeta,
    sync: Arc<StateSync>,
    snap_dir: PathBuf,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let view = self.view.take().ok_or_else(|| snap_err(std::io::Error::other("snapshot already built")))?;
        let (sync, index) = (self.sync.clone(), self.meta.last_log_id.map_or(0, |l| l.index));
        tokio::task::spawn_blocking(move || sync.sync_through(index)).await.map_err(snap_err)?.map_err(snap_err)?;
        set_current(&self.snap_dir, &self.meta)?;
        tracing::info!(id = %self.meta.snapshot_id, "snapshot taken");
        Ok(Snapshot { meta: self.meta.clone(), snapshot: Box::new(view) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.applied.last_applied(), self.applied.membership.read().clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Resp>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let started = std::time::Instant::now();
        let applied: Result<Vec<Resp>, StorageError> = entries
            .into_iter()
            .map(|e| {
                let id = e.log_id;
                let Resp(r) = self.apply_one(e)?;
                Ok(Resp(self.waiters.applied(id, r)))
            })
            .collect();
        if started.elapsed() >= crate::metrics::slow_apply() {
            let entries = applied.as_ref().map_or(0, |v| v.len());
            crate::metrics::HOT.slow_apply.inc();
            tracing::warn!(entries, ms = started.elapsed().as_millis() as u64, "applying entries took too long");
        }
        applied
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let meta = self.applied_meta();
        // The view must be the applied state exactly, and applying happens on this task:
        // it is taken before this returns. If it cannot be, `build_snapshot` fails.
        let view = self.view(&meta).await.map_err(|e| tracing::warn!(error = %e, "snapshot view")).ok();
        SnapshotBuilder { view, meta, sync: self.sync.clone(), snap_dir: self.snap_dir.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        Ok(Box::new(SnapshotFile::at(self.snap_dir.join(format!("incoming-{nanos}.part")))))
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, mut snap: Box<SnapshotFile>) -> Result<(), StorageError> {
        snap.ready().await.map_err(snap_err)?;
        let dest = self.snapshot_path(&meta.snapshot_id);
        if snap.path != dest {
            std::fs::rename(&snap.path, &dest)
                .or_else(|_| std::fs::copy(&snap.path, &dest).map(|_| ()))
                .map_err(snap_err)?;
        }
        let engine = self.engine.clone();
        let file = dest.clone();
        tokio::task::spawn_blocking(move || snapshot::install(&engine, &file))
            .await
            .map_err(snap_err)?
            .map_err(snap_err)?;
        let mut batch = WriteBatch::default();
        if let Some(l) = meta.last_log_id {
            batch.put(Cf::Meta, LAST_APPLIED, encode(&l).map_err(sm_write)?);
        }
        batch.put(Cf::Meta, MEMBERSHIP, encode(&meta.last_membership).map_err(sm_write)?);
        self.engine.write(batch, true).map_err(sm_write)?;
        self.store.reload().map_err(sm_write)?;
        self.auth.reload().map_err(sm_write)?;
        if let Some(last) = meta.last_log_id {
            self.waiters.covered(last.index);
        }
        self.load_meta()?;
        // The state is in RocksDB now (synced by the install's last write): the file has served.
        set_current(&self.snap_dir, meta)?;
        tracing::info!(id = %meta.snapshot_id, "snapshot installed");
        Ok(())
    }

    /// The current state as a snapshot, its file written only when the caller asks
    /// ([`SnapshotFile::ready`]): a replication stream sending it to a follower does, while
    /// openraft's start-up, which wants only the meta, does not. The state has usually moved
    /// past the last snapshot taken; the meta is then that of the applied state (a later
    /// committed entry, which is what a follower installing it needs).
    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let Ok(bytes) = std::fs::read(self.current_meta_path()) else { return Ok(None) };
        let taken: SnapshotMeta = decode(&bytes).map_err(sm_read)?;
        let meta = match self.applied.last_applied() {
            last if last == taken.last_log_id => taken,
            _ => self.applied_meta(),
        };
        let data = self.view(&meta).await.map_err(sm_read)?;
        Ok(Some(Snapshot { meta, snapshot: Box::new(data) }))
    }
}

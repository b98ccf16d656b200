//! Snapshots: the state machine's column families as one streamable file.
//!
//! The state machine lives in RocksDB, which is durable on its own, so taking a Raft snapshot
//! (to purge the log) writes no file at all: the state is synced and the snapshot's meta
//! recorded. A file is written only when a follower needs one: [`SnapshotFile::deferred`]
//! takes a RocksDB snapshot (a pinned sequence number: no copy and no flush) while the state
//! machine waits, which takes microseconds, and [`SnapshotFile::ready`] later streams the
//! `Kv`, `Meta` and `Lease` families as of that view into a file of length-prefixed records,
//! synced every few megabytes, on a thread of lower priority. (Writing the whole state every
//! `--snapshot-count` entries, as before, put tens of megabytes per member on the shared disk
//! each time, and one-client put tails rose with the state's size.) Sending reads the file in
//! chunks, and installing writes it back in bounded batches, so no snapshot is ever held in
//! memory whole.
//!
//! File: `KEELSNP1`, then records `[cf tag u8][key len u32 BE][key][value len u32 BE][value]`,
//! then a final `0xFF`.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::engine::{Cf, Engine, EngineError, EngineSnapshot, WriteBatch};

const MAGIC: &[u8; 8] = b"KEELSNP1";
const END: u8 = 0xFF;
const INSTALL_BATCH_BYTES: usize = 4 << 20;

/// A snapshot's data: a file on local disk, or a view of the state taken already whose file
/// is written when first wanted ([`SnapshotFile::ready`]).
#[derive(Debug)]
pub struct SnapshotFile {
    pub path: PathBuf,
    pending: Option<Pending>,
    /// Written here for one use (a send): retired when dropped.
    transient: Option<Retire>,
}

/// A view held by a thread that writes it out once told to; dropping `go` releases it.
#[derive(Debug)]
struct Pending {
    go: std::sync::mpsc::Sender<()>,
    done: tokio::sync::oneshot::Receiver<Result<u64, SnapshotError>>,
}

/// Where a transient file goes when done with: kept as the spare if there is none, so the
/// next file overwrites it instead of allocating (freeing tens of megabytes on a filesystem
/// mounted with `discard` stalls every other fsync), else removed.
#[derive(Debug)]
struct Retire {
    spare: PathBuf,
}

impl SnapshotFile {
    /// A file that exists (or is being received).
    pub fn at(path: PathBuf) -> SnapshotFile {
        SnapshotFile { path, pending: None, transient: None }
    }

    /// Takes a view of `engine` now, to be written to `out` (over `spare` if there is one)
    /// when [`ready`](Self::ready) is first awaited; dropped unwritten, it writes nothing.
    /// Returns once the view is fixed (microseconds): from then on the database may change
    /// without affecting the file.
    pub async fn deferred(engine: Engine, out: PathBuf, spare: PathBuf) -> Result<SnapshotFile, SnapshotError> {
        let (taken_tx, taken_rx) = tokio::sync::oneshot::channel();
        let (go, go_rx) = std::sync::mpsc::channel::<()>();
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let (file, spare_file) = (out.clone(), spare.clone());
        std::thread::Builder::new().name("keel-snapshot".into()).spawn(move || {
            let view = engine.snapshot();
            let _ = taken_tx.send(());
            if go_rx.recv().is_err() {
                return;
            }
            super::background_priority();
            let _ = done_tx.send(write_snapshot(&view, &file, Some(&spare_file)));
        })?;
        taken_rx.await.map_err(|_| SnapshotError::Malformed("the snapshot thread ended before taking its view"))?;
        Ok(SnapshotFile { path: out, pending: Some(Pending { go, done }), transient: Some(Retire { spare }) })
    }

    /// Waits until the file is complete, writing it first if it is a deferred view.
    pub async fn ready(&mut self) -> Result<(), SnapshotError> {
        let Some(p) = self.pending.take() else { return Ok(()) };
        let _ = p.go.send(());
        p.done.await.map_err(|_| SnapshotError::Malformed("the snapshot thread ended without writing"))??;
        Ok(())
    }
}

impl Drop for SnapshotFile {
    fn drop(&mut self) {
        let Some(r) = &self.transient else { return };
        if self.pending.is_some() {
            return; // never written
        }
        if r.spare.exists() || std::fs::rename(&self.path, &r.spare).is_err() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    #[error("malformed snapshot file: {0}")]
    Malformed(&'static str),
}

/// While writing a snapshot file, sync every this many bytes, so the disk takes it in
/// small pieces rather than one large flush at the end that every log fsync queues behind.
const SYNC_EVERY: u64 = 4 << 20;

/// Writes the state-machine column families to `out` as they are at the moment this
/// starts (a RocksDB snapshot: no copy, no flush), then fsyncs it. `taken` is called as
/// soon as the view is fixed: from then on the database may change without affecting the
/// file. If `spare` names a file, it is overwritten in place (and so consumed) rather than
/// a new one allocated. Meant for a blocking thread.
pub fn write_view(
    engine: &Engine,
    out: &Path,
    spare: Option<&Path>,
    taken: impl FnOnce(),
) -> Result<u64, SnapshotError> {
    let snap = engine.snapshot();
    taken();
    write_snapshot(&snap, out, spare)
}

/// Writes `snap` to `out` (see [`write_view`]).
fn write_snapshot(snap: &EngineSnapshot<'_>, out: &Path, spare: Option<&Path>) -> Result<u64, SnapshotError> {
    let tmp = out.with_extension("tmp");
    let recycled = spare.is_some_and(|s| std::fs::rename(s, &tmp).is_ok());
    let file = if recycled { OpenOptions::new().write(true).open(&tmp)? } else { File::create(&tmp)? };
    let mut w = BufWriter::new(file);
    w.write_all(MAGIC)?;
    let (mut size, mut unsynced) = (MAGIC.len() as u64, 0u64);
    for cf in Cf::STATE_MACHINE {
        for item in snap.scan_all(cf)? {
            let (k, v) = item?;
            w.write_all(&[cf.tag()])?;
            w.write_all(&(k.len() as u32).to_be_bytes())?;
            w.write_all(&k)?;
            w.write_all(&(v.len() as u32).to_be_bytes())?;
            w.write_all(&v)?;
            let n = 9 + k.len() as u64 + v.len() as u64;
            size += n;
            unsynced += n;
            if unsynced >= SYNC_EVERY {
                w.flush()?;
                w.get_ref().sync_data()?;
                unsynced = 0;
            }
        }
    }
    w.write_all(&[END])?;
    let f = w.into_inner().map_err(|e| e.into_error())?;
    f.set_len(size + 1)?;
    f.sync_all()?;
    std::fs::rename(&tmp, out)?;
    Ok(size + 1)
}

/// Replaces the state-machine column families with the snapshot's contents. The caller
/// reloads in-memory state afterwards.
pub fn install(engine: &Engine, file: &Path) -> Result<(), SnapshotError> {
    let mut r = BufReader::new(File::open(file)?);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(SnapshotError::Malformed("bad magic"));
    }
    let mut batch = WriteBatch::default();
    for cf in Cf::STATE_MACHINE {
        batch.delete_range(cf, Vec::new(), vec![0xFF; 64]);
    }
    engine.write(batch, false)?;
    let mut batch = WriteBatch::default();
    let mut bytes = 0usize;
    loop {
        let mut tag = [0u8; 1];
        r.read_exact(&mut tag)?;
        if tag[0] == END {
            break;
        }
        let cf = Cf::from_tag(tag[0]).ok_or(SnapshotError::Malformed("unknown column family"))?;
        if !Cf::STATE_MACHINE.contains(&cf) {
            return Err(SnapshotError::Malformed("not a state-machine column family"));
        }
        let k = read_chunk(&mut r)?;
        let v = read_chunk(&mut r)?;
        bytes += k.len() + v.len();
        batch.put(cf, k, v);
        if bytes >= INSTALL_BATCH_BYTES {
            engine.write(std::mem::take(&mut batch), false)?;
            bytes = 0;
        }
    }
    engine.write(batch, true)?;
    Ok(())
}

fn read_chunk(r: &mut impl Read) -> Result<Vec<u8>, SnapshotError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > 1 << 30 {
        return Err(SnapshotError::Malformed("record too large"));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(engine: &Engine) -> Vec<(Cf, KvPairs)> {
        Cf::STATE_MACHINE
            .into_iter()
            .map(|cf| (cf, engine.scan(cf, b"", None).expect("scan").map(|r| r.expect("item")).collect()))
            .collect()
    }

    type KvPairs = Vec<crate::engine::KvPair>;

    #[test]
    fn a_snapshot_written_over_a_larger_spare_file_is_exact_and_installs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = Engine::open(&dir.path().join("a")).expect("engine");
        let mut batch = WriteBatch::default();
        for i in 0..100u32 {
            batch.put(Cf::Kv, i.to_be_bytes().to_vec(), vec![b'v'; 50]);
        }
        batch.put(Cf::Meta, b"m".to_vec(), b"1".to_vec());
        source.write(batch, true).expect("write");

        let spare = dir.path().join("spare");
        std::fs::write(&spare, vec![0xAB; 1 << 20]).expect("spare");
        let out = dir.path().join("s.snap");
        let mut taken = false;
        let size = write_view(&source, &out, Some(&spare), || taken = true).expect("write_view");
        assert!(taken);
        assert!(!spare.exists(), "the spare file is consumed");
        assert_eq!(std::fs::metadata(&out).expect("meta").len(), size, "no stale bytes past the end");
        assert!(size < 1 << 20);

        let target = Engine::open(&dir.path().join("b")).expect("engine");
        install(&target, &out).expect("install");
        assert_eq!(contents(&target), contents(&source));
    }

    #[tokio::test]
    async fn a_deferred_view_writes_the_state_it_was_taken_at_and_only_when_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = Engine::open(&dir.path().join("a")).expect("engine");
        let put = |k: &[u8], v: &[u8]| {
            let mut batch = WriteBatch::default();
            batch.put(Cf::Kv, k.to_vec(), v.to_vec());
            source.write(batch, false).expect("write");
        };
        put(b"k1", b"before");
        let expected = contents(&source);
        let (out, spare) = (dir.path().join("v.send"), dir.path().join("spare"));

        let unwanted = SnapshotFile::deferred(source.clone(), out.clone(), spare.clone()).await.expect("view");
        drop(unwanted);
        assert!(!out.exists() && !spare.exists(), "a view never asked for writes nothing");

        let mut view = SnapshotFile::deferred(source.clone(), out.clone(), spare.clone()).await.expect("view");
        put(b"k1", b"after");
        put(b"k2", b"new");
        assert!(!out.exists(), "nothing is written before it is wanted");
        view.ready().await.expect("ready");
        let target = Engine::open(&dir.path().join("b")).expect("engine");
        install(&target, &view.path).expect("install");
        assert_eq!(contents(&target), expected, "the file holds the state when the view was taken");

        drop(view);
        assert!(!out.exists() && spare.exists(), "a sent file is kept as the spare");
    }
}

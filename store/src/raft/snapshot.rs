//! Snapshots: the state machine's column families as one streamable file.
//!
//! Building never blocks applying: a blocking thread takes a RocksDB snapshot (a pinned
//! sequence number: no copy and no flush) while the state machine waits, which takes
//! microseconds, then streams the `Kv`, `Meta` and `Lease` families as of that snapshot into
//! a file of length-prefixed records, synced every few megabytes. (A checkpoint, used before,
//! flushes the memtables first: 20–170 ms with applying stopped on all three members at once.) Sending reads
//! that file in chunks, and installing writes it back in bounded batches, so no snapshot is
//! ever held in memory whole.
//!
//! File: `KEELSNP1`, then records `[cf tag u8][key len u32 BE][key][value len u32 BE][value]`,
//! then a final `0xFF`.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::engine::{Cf, Engine, EngineError, WriteBatch};

const MAGIC: &[u8; 8] = b"KEELSNP1";
const END: u8 = 0xFF;
const INSTALL_BATCH_BYTES: usize = 4 << 20;

/// A snapshot's data: a file on local disk.
#[derive(Debug)]
pub struct SnapshotFile {
    pub path: PathBuf,
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
    drop(snap);
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
}

//! Snapshots: the state machine's column families as one streamable file.
//!
//! Building never blocks applying: the state machine takes a RocksDB checkpoint (hard
//! links, instant) at the moment it is asked, and a background task streams the checkpoint's
//! `Kv`, `Meta` and `Lease` families into a file of length-prefixed records. Sending reads
//! that file in chunks, and installing writes it back in bounded batches, so no snapshot is
//! ever held in memory whole.
//!
//! File: `KEELSNP1`, then records `[cf tag u8][key len u32 BE][key][value len u32 BE][value]`,
//! then a final `0xFF`.

use std::fs::File;
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

/// Writes the state-machine column families of the database checkpoint in `checkpoint`
/// to `out`, fsyncs it, and removes the checkpoint.
pub fn write_from_checkpoint(checkpoint: &Path, out: &Path) -> Result<u64, SnapshotError> {
    let engine = Engine::open(checkpoint)?;
    let tmp = out.with_extension("tmp");
    let mut w = BufWriter::new(File::create(&tmp)?);
    w.write_all(MAGIC)?;
    let snap = engine.snapshot();
    for cf in Cf::STATE_MACHINE {
        for item in snap.scan_all(cf)? {
            let (k, v) = item?;
            w.write_all(&[cf.tag()])?;
            w.write_all(&(k.len() as u32).to_be_bytes())?;
            w.write_all(&k)?;
            w.write_all(&(v.len() as u32).to_be_bytes())?;
            w.write_all(&v)?;
        }
    }
    w.write_all(&[END])?;
    let f = w.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    let size = f.metadata()?.len();
    drop(snap);
    drop(engine);
    std::fs::rename(&tmp, out)?;
    std::fs::remove_dir_all(checkpoint)?;
    Ok(size)
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

//! Backups: the Maintenance `Snapshot` stream (`etcdctl snapshot save`) and restoring a
//! saved snapshot into a fresh data directory (`keel snapshot restore`, etcdutl's job).
//!
//! A backup is the state machine (keys with their history, leases, compaction point) in
//! the same record format Raft snapshots use, taken from a RocksDB snapshot so the member
//! keeps serving while it streams. Restoring keeps the data and drops the old cluster's
//! identity (membership, applied position), so the restored members form a new cluster
//! that continues from the saved revision.

use std::path::{Path, PathBuf};
use std::pin::Pin;

use futures::Stream;
use tokio::io::AsyncReadExt;

use crate::engine::{Cf, Engine, WriteBatch};
use crate::error::EtcdError;
use crate::node::Node;
use crate::proto::etcdserverpb::SnapshotResponse;
use crate::raft::snapshot;

const CHUNK: usize = 32 * 1024;
/// etcd's backup trailer: the data is padded to a multiple of this, then its SHA-256
/// follows; `etcdctl snapshot save` checks for it.
const ALIGN: u64 = 512;

pub type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, tonic::Status>> + Send>>;

/// Writes a backup file of the member's state machine into `dir`; returns its path.
pub async fn save(node: &Node, dir: &Path) -> Result<PathBuf, EtcdError> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let out = dir.join(format!("backup-{stamp}.snap"));
    let (engine, file) = (node.store.engine().clone(), out.clone());
    tokio::task::spawn_blocking(move || snapshot::write_view(&engine, &file, None, || ()))
        .await
        .map_err(|e| EtcdError::Internal(e.to_string()))?
        .map_err(|e| EtcdError::Internal(e.to_string()))?;
    Ok(out)
}

/// Streams a backup file as etcd 3.4 does: full chunks of the data, padded to 512 bytes,
/// each with the count of data bytes still to come, then etcd's trailer (the SHA-256 of
/// the data) alone, with nothing remaining; no header. Removes the file after.
pub async fn stream(file: PathBuf) -> Result<SnapshotStream, EtcdError> {
    use sha2::Digest;
    let mut f = tokio::fs::File::open(&file).await.map_err(|e| EtcdError::Internal(e.to_string()))?;
    let len = f.metadata().await.map_err(|e| EtcdError::Internal(e.to_string()))?.len();
    let mut remaining = len + (ALIGN - len % ALIGN) % ALIGN;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut hash = sha2::Sha256::new();
        let send = |blob: Vec<u8>, remaining: u64| SnapshotResponse {
            header: None,
            remaining_bytes: remaining,
            blob: blob.into(),
            version: String::new(),
        };
        while remaining > 0 {
            let mut chunk = vec![0u8; CHUNK.min(remaining as usize)];
            // Past the file's end the chunk keeps its zeros: the padding.
            let mut filled = 0;
            while filled < chunk.len() {
                match f.read(&mut chunk[filled..]).await {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) => {
                        let _ = tx.send(Err(tonic::Status::internal(e.to_string()))).await;
                        let _ = tokio::fs::remove_file(&file).await;
                        return;
                    }
                }
            }
            hash.update(&chunk);
            remaining -= chunk.len() as u64;
            if tx.send(Ok(send(chunk, remaining))).await.is_err() {
                let _ = tokio::fs::remove_file(&file).await;
                return;
            }
        }
        let _ = tx.send(Ok(send(hash.finalize().to_vec(), 0))).await;
        let _ = tokio::fs::remove_file(&file).await;
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

/// Checks etcd's trailer when the file has one (etcdctl keeps it).
fn verify_trailer(file: &Path) -> Result<(), RestoreError> {
    use sha2::Digest;
    let data = std::fs::read(file).map_err(snapshot::SnapshotError::from)?;
    let len = data.len() as u64;
    if len < 32 || (len - 32) % ALIGN != 0 {
        return Ok(());
    }
    let (body, sum) = data.split_at(data.len() - 32);
    if sha2::Sha256::digest(body).as_slice() != sum {
        return Err(RestoreError::Checksum);
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{0} already exists; restore needs a new data directory")]
    Exists(PathBuf),
    #[error("{0}")]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error("storage: {0}")]
    Engine(#[from] crate::engine::EngineError),
    #[error("the backup's SHA-256 does not match its contents")]
    Checksum,
}

/// Creates `data_dir` holding the backup's state and no cluster identity: `keel store`
/// started on it with a new `--initial-cluster` bootstraps a cluster that continues from
/// the backup's revision.
pub fn restore(file: &Path, data_dir: &Path) -> Result<(), RestoreError> {
    let member = data_dir.join("member");
    if member.exists() {
        return Err(RestoreError::Exists(member));
    }
    verify_trailer(file)?;
    let engine = Engine::open(&member.join("db"))?;
    snapshot::install(&engine, file)?;
    // The alarms the old cluster's members raised go too: they name members that are gone.
    forget_cluster(&engine, true)?;
    Ok(())
}

/// Makes a state machine's data the start of a new cluster: forgets who the members were
/// (membership and their published attributes) and how far the old Raft log was applied,
/// and with `alarms`, the raised alarms. The data, leases, auth and compaction point stay.
pub fn forget_cluster(engine: &Engine, alarms: bool) -> Result<(), crate::engine::EngineError> {
    let mut b = WriteBatch::default();
    for key in [&b"last_applied"[..], b"membership", b"partial_batch"] {
        b.delete(Cf::Meta, key.to_vec());
    }
    if alarms {
        b.delete(Cf::Meta, crate::mvcc::alarms::ALARMS.to_vec());
    }
    b.delete_range(Cf::Meta, b"member_attrs/".to_vec(), b"member_attrs0".to_vec());
    engine.write(b, true)
}

//! The store's Raft node: openraft's type configuration, storage and network.
//!
//! - [`log_store`]: the Raft log and vote; appends are made durable by a writer thread
//!   that fsyncs once for every group of appends (group commit).
//! - [`wal`]: the log file itself: preallocated segments of checksummed records.
//! - [`state_machine`]: applies committed entries to the MVCC store, each entry and its
//!   log id in one atomic write; builds and installs snapshots.
//! - [`snapshot`]: the snapshot file format, streamed from a RocksDB checkpoint.
//! - [`network`], [`peer_server`]: the peer transport (HTTP + bincode) on
//!   `--listen-peer-urls`, also used to forward writes and read-index requests to the leader.
//! - [`early`]: the leader sends new entries to its followers while its own fsync runs.
//! - [`shared_sink`]: a stream written at once by whoever has a frame, or by its task, in order.
//! - [`answer`]: the proposing member's callers are answered by the state machine itself.
//! - [`flush`]: a write commits once durable on any majority, the leader's copy or not.
//! - [`ids`]: member and cluster ids, derived from the bootstrap configuration as etcd does.

// openraft's `StorageError` is large and is the error type its storage traits require.
#![allow(clippy::result_large_err)]

pub mod answer;
pub mod early;
pub mod flush;
pub mod force_new;
pub mod ids;
pub mod log_size;
pub mod log_store;
pub mod network;
pub mod peer_server;
pub mod recent;
pub mod shared_sink;
pub mod snapshot;
pub mod state_machine;
pub mod wal;

#[cfg(test)]
mod conformance;

use prost::Message;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::proto::keelpb::{RaftRequest, RaftResponse};

/// Lowers the calling thread's CPU priority (nice 10), for background work: snapshot files
/// and log segment preparation. On a two-core machine the three members writing snapshots
/// at once (the same log index) took the CPU from their log writers and Raft tasks, and log
/// writes that take 0.15 ms took 10–30 ms.
pub(crate) fn background_priority() {
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10) {
        tracing::debug!(error = %e, "could not lower a background thread's priority");
    }
}

pub type NodeId = u64;

/// A cluster member as Raft knows it. Client URLs are published separately, once the
/// member runs (see `MemberAttributes`), as etcd does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub peer_urls: Vec<String>,
}

/// A Raft log payload: a store command, carried in its protobuf encoding; on the member that
/// proposed it, also who waits for its result (see [`answer`]; never encoded).
#[derive(Clone, Debug)]
pub struct Cmd(pub RaftRequest, pub Option<answer::Waiter>);

impl PartialEq for Cmd {
    fn eq(&self, other: &Cmd) -> bool {
        self.0 == other.0
    }
}

/// What applying a [`Cmd`] returned.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resp(pub RaftResponse);

macro_rules! serde_as_protobuf {
    ($t:ident, $inner:ty, $make:expr) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0.encode_to_vec())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let bytes: Vec<u8> = serde_bytes_buf(d)?;
                <$inner>::decode(bytes.as_slice()).map($make).map_err(serde::de::Error::custom)
            }
        }
    };
}

fn serde_bytes_buf<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("protobuf bytes")
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::new();
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }
    d.deserialize_byte_buf(V)
}

serde_as_protobuf!(Cmd, RaftRequest, |r| Cmd(r, None));
serde_as_protobuf!(Resp, RaftResponse, Resp);

openraft::declare_raft_types!(
    /// Keel's Raft types.
    pub TypeConfig:
        D = Cmd,
        R = Resp,
        NodeId = NodeId,
        Node = Member,
        SnapshotData = snapshot::SnapshotFile,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
pub type StorageError = openraft::StorageError<NodeId>;

/// The wire and disk encoding of Raft's own structures.
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, bincode::error::EncodeError> {
    bincode::serde::encode_to_vec(v, bincode::config::standard())
}

pub fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, bincode::error::DecodeError> {
    bincode::serde::decode_from_slice(b, bincode::config::standard()).map(|(v, _)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::PutRequest;
    use crate::proto::keelpb::raft_request::Command;

    #[test]
    fn payloads_round_trip_through_bincode() {
        let cmd = Cmd(
            RaftRequest {
                command: Some(Command::Put(PutRequest { key: "k".into(), value: "v".into(), ..Default::default() })),
                auth: None,
            },
            Some(answer::Waiter::default()),
        );
        let bytes = encode(&cmd).expect("encode");
        assert_eq!(decode::<Cmd>(&bytes).expect("decode"), cmd);
    }
}

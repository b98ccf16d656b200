//! keel-store: Keel's replicated store, a drop-in etcd v3 server.
//!
//! # Layout
//! - [`engine`]: the storage boundary; the only module that names RocksDB.
//! - [`mvcc`]: revisions, the key index, reads, transactions and compaction.
//! - [`lease`]: the replicated lease table.
//! - [`auth`]: users, roles, permissions and tokens (etcd's v3 auth).
//! - [`raft`]: openraft's storage, state machine, snapshots and the peer transport.
//! - [`node`]: one running member: propose, forward to the leader, linearizable reads.
//! - [`api`]: etcd's gRPC services and HTTP endpoints on the client port.
//! - [`config`], [`server`]: `keel store` flags and start-up; [`process`]: what a Keel
//!   process sets about itself (its open-files limit, its log level at run time).
//!
//! # The write path
//! A client request is validated in `api`, proposed by `node` (forwarded to the leader if
//! needed), appended to the Raft log (fsynced on a majority before it commits), then
//! applied by every member's state machine: `mvcc` computes the changes, writes them and
//! the applied log id in one atomic batch, and only then makes them visible in the index.
//! See docs/architecture.md for the fsync order.

pub mod api;
pub mod auth;
pub mod auto_compact;
pub mod config;
pub mod config_compat;
pub mod engine;
pub mod error;
pub mod lease;
pub mod metrics;
pub mod mvcc;
pub mod node;
pub mod process;
pub mod raft;
pub mod server;
pub mod watch;

pub mod proto {
    //! The etcd v3 protocol and Keel's Raft payloads, generated from `store/proto`.
    #![allow(clippy::all, missing_docs, rust_2018_idioms)]
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod authpb {
        tonic::include_proto!("authpb");
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    pub mod keelpb {
        tonic::include_proto!("keelpb");
    }
    pub mod v3lockpb {
        tonic::include_proto!("v3lockpb");
    }
    pub mod v3electionpb {
        tonic::include_proto!("v3electionpb");
    }
}

pub use config::StoreConfig;
pub use error::EtcdError;

//! Multi-version concurrency control: etcd's data model over the storage engine.
//!
//! - [`revision`]: the logical clock and how history is keyed in storage.
//! - [`key_index`], [`index`]: every key's generations, in memory, rebuilt at start-up.
//! - [`range`], [`txn`]: the read and write rules as pure functions of an index view.
//! - [`store`]: [`MvccStore`], which persists changes and serves reads.
//! - [`compactor`]: deleting unreachable history in the background.
//!
//! Invariants: one main revision per write command (Put, DeleteRange that deletes, Txn
//! with writes); a revision visible in the index is always readable from storage; reads
//! below the compaction revision fail with `Compacted`.

pub mod alarms;
pub mod compactor;
pub mod index;
pub mod key_index;
pub mod key_range;
pub mod range;
pub mod revision;
pub mod store;
pub mod txn;

#[cfg(test)]
mod model_tests;

pub use key_range::KeyRange;
pub use revision::Revision;
pub use store::{CommitListener, HistoryError, HistoryEvent, MvccStore, StoredValues};
pub use txn::Change;

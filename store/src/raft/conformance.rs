//! openraft's storage conformance suite (`openraft::testing::Suite`) run against Keel's
//! log store and state machine: the contract every Raft storage must keep.

use openraft::testing::{StoreBuilder, Suite};

use super::log_store::LogStore;
use super::state_machine::StateMachine;
use super::wal::{Wal, WalOptions};
use super::{StorageError, TypeConfig};
use crate::engine::Engine;
use crate::mvcc::MvccStore;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::from(openraft::StorageIOError::write(&e)))?;
        let io = |e: &dyn std::fmt::Display| {
            StorageError::from(openraft::StorageIOError::write(&std::io::Error::other(e.to_string())))
        };
        let engine = Engine::open(&dir.path().join("db")).map_err(|e| io(&e))?;
        let store = MvccStore::open(engine.clone(), 2).map_err(|e| io(&e))?;
        let auth = crate::auth::AuthStore::for_tests(engine.clone()).map_err(|e| io(&e))?;
        let sm = StateMachine::open(store, auth, dir.path().join("snap"))?;
        let opts = WalOptions { first_segment: 64 << 10, max_segment: 256 << 10 };
        let wal = Wal::open(&dir.path().join("wal"), opts).map_err(|e| io(&e))?;
        let log = LogStore::new(std::sync::Arc::new(wal), sm.state_sync()).map_err(|e| io(&e))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn storage_passes_openraft_suite() -> Result<(), StorageError> {
    Suite::test_all(Builder)
}

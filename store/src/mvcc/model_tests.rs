//! Property test: the MVCC store (over real RocksDB) against a plain in-memory model of
//! etcd's semantics: every revision's full key set kept as a map. Random puts, deletes,
//! transactions, compactions and reads at random revisions must answer identically.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;

use super::MvccStore;
use crate::engine::{Engine, WriteBatch};
use crate::error::EtcdError;
use crate::proto::etcdserverpb::request_op::Request;
use crate::proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use crate::proto::keelpb::raft_request::Command;
use crate::proto::keelpb::raft_response::Result as Outcome;
use crate::proto::mvccpb::KeyValue;

#[derive(Clone, Debug)]
enum Op {
    Put(u8, u8),
    Delete(u8, Option<u8>),
    /// Two puts and a delete in one transaction (distinct keys).
    Txn(u8, u8, u8),
    Compact(u8),
    Range(u8, Option<u8>, u8, u8),
}

fn key(k: u8) -> Bytes {
    Bytes::from(format!("k{}", k % 8))
}

fn end(k: u8) -> Bytes {
    Bytes::from(format!("k{}", k % 9))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<u8>(), any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (any::<u8>(), proptest::option::of(any::<u8>())).prop_map(|(k, e)| Op::Delete(k, e)),
        2 => (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(a, b, c)| Op::Txn(a, b, c)),
        1 => any::<u8>().prop_map(Op::Compact),
        3 => (any::<u8>(), proptest::option::of(any::<u8>()), any::<u8>(), any::<u8>())
            .prop_map(|(k, e, r, l)| Op::Range(k, e, r, l)),
    ]
}

/// etcd's semantics, the slow and obvious way: the whole key set at every revision.
struct Model {
    history: Vec<BTreeMap<Bytes, KeyValue>>,
    compacted: i64,
}

impl Model {
    fn new() -> Model {
        // Revision 1 is the empty store.
        Model { history: vec![BTreeMap::new(), BTreeMap::new()], compacted: 0 }
    }
    fn rev(&self) -> i64 {
        self.history.len() as i64 - 1
    }
    fn in_range(k: &Bytes, start: &Bytes, end: &Option<Bytes>) -> bool {
        match end {
            None => k == start,
            Some(e) => k >= start && k < e,
        }
    }
    /// Applies a group of writes at one new revision (if any changes).
    fn write(&mut self, puts: &[(Bytes, Bytes)], dels: &[(Bytes, Option<Bytes>)]) -> i64 {
        let mut next = self.history[self.history.len() - 1].clone();
        let rev = self.rev() + 1;
        let mut changed = false;
        for (s, e) in dels {
            let doomed: Vec<Bytes> = next.keys().filter(|k| Self::in_range(k, s, e)).cloned().collect();
            changed |= !doomed.is_empty();
            for k in doomed {
                next.remove(&k);
            }
        }
        for (k, v) in puts {
            let prev = next.get(k);
            let kv = KeyValue {
                key: k.clone(),
                create_revision: prev.map_or(rev, |p| p.create_revision),
                mod_revision: rev,
                version: prev.map_or(1, |p| p.version + 1),
                value: v.clone(),
                lease: 0,
            };
            next.insert(k.clone(), kv);
            changed = true;
        }
        if changed {
            self.history.push(next);
        }
        self.rev()
    }
    fn range(
        &self,
        start: &Bytes,
        end: &Option<Bytes>,
        rev: i64,
        limit: i64,
    ) -> Result<(Vec<KeyValue>, i64, bool), EtcdError> {
        if rev > self.rev() {
            return Err(EtcdError::FutureRev);
        }
        let at = if rev <= 0 { self.rev() } else { rev };
        if at < self.compacted {
            return Err(EtcdError::Compacted);
        }
        let all: Vec<KeyValue> = self.history[at as usize]
            .iter()
            .filter(|(k, _)| Self::in_range(k, start, end))
            .map(|(_, v)| v.clone())
            .collect();
        let count = all.len() as i64;
        let more = limit > 0 && count > limit;
        let kvs = if limit > 0 { all.into_iter().take(limit as usize).collect() } else { all };
        Ok((kvs, count, more))
    }
}

fn apply(store: &MvccStore, cmd: Command) -> Result<crate::proto::keelpb::RaftResponse, EtcdError> {
    let r = store.apply(&cmd, WriteBatch::default()).map_err(EtcdError::from)?;
    match &r.result {
        Some(Outcome::Error(e)) => Err(EtcdError::from_apply_code(e.code)),
        _ => Ok(r),
    }
}

fn put_op(k: Bytes, v: Bytes) -> RequestOp {
    RequestOp { request: Some(Request::RequestPut(PutRequest { key: k, value: v, ..Default::default() })) }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let engine = Engine::open(dir.path()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let store = MvccStore::open(engine, 2).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut model = Model::new();
    for op in ops {
        match op {
            Op::Put(k, v) => {
                let (k, v) = (key(k), Bytes::from(format!("v{v}")));
                let r =
                    apply(&store, Command::Put(PutRequest { key: k.clone(), value: v.clone(), ..Default::default() }));
                let want = model.write(&[(k, v)], &[]);
                prop_assert_eq!(r.map(|r| r.revision), Ok(want));
            }
            Op::Delete(k, e) => {
                let (s, e) = (key(k), e.map(end));
                let req =
                    DeleteRangeRequest { key: s.clone(), range_end: e.clone().unwrap_or_default(), prev_kv: false };
                let got = apply(&store, Command::DeleteRange(req)).map(|r| r.revision);
                let want = model.write(&[], &[(s, e)]);
                prop_assert_eq!(got, Ok(want));
            }
            Op::Txn(a, b, c) => {
                let (ka, kb, kc) = (key(a), key(a.wrapping_add(1)), key(c));
                if ka == kb || kc == ka || kc == kb {
                    continue;
                }
                let v = Bytes::from(format!("t{b}"));
                let del = RequestOp {
                    request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                        key: kc.clone(),
                        ..Default::default()
                    })),
                };
                let req = TxnRequest {
                    compare: vec![],
                    success: vec![put_op(ka.clone(), v.clone()), del, put_op(kb.clone(), v.clone())],
                    failure: vec![],
                };
                let got = apply(&store, Command::Txn(req)).map(|r| r.revision);
                let want = model.write(&[(ka, v.clone()), (kb, v)], &[(kc, None)]);
                prop_assert_eq!(got, Ok(want));
            }
            Op::Compact(r) => {
                let at = i64::from(r) % (model.rev() + 2);
                let got = apply(&store, Command::Compaction(CompactionRequest { revision: at, physical: false }));
                let want = if at > model.rev() {
                    Err(EtcdError::FutureRev)
                } else if at <= model.compacted {
                    Err(EtcdError::Compacted)
                } else {
                    model.compacted = at;
                    Ok(())
                };
                prop_assert_eq!(got.map(|_| ()), want);
            }
            Op::Range(k, e, r, l) => {
                let (s, e) = (key(k), e.map(end));
                let rev = i64::from(r) % (model.rev() + 2);
                let limit = i64::from(l % 4);
                let req = RangeRequest {
                    key: s.clone(),
                    range_end: e.clone().unwrap_or_default(),
                    revision: rev,
                    limit,
                    ..Default::default()
                };
                let got = store.range(&req).map(|r| (r.kvs, r.count, r.more));
                prop_assert_eq!(got, model.range(&s, &e, rev, limit));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}

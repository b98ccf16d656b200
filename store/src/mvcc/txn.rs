//! Executing writes: Put, DeleteRange and Txn as pure functions of a read view.
//!
//! An [`Executor`] runs one Raft command against the state before it and collects the
//! changes it makes, all at one new main revision (sub revisions in order). Nothing is
//! written: the caller persists [`Executor::finish`]'s changes, so a failed command leaves
//! no trace and every rule here is testable without storage.
//!
//! Txn follows etcd's applier: all compares (nested ones too) are evaluated against the
//! state before the transaction; then puts and ranges of the chosen branches are checked
//! (lease exists, ignored value/lease has a key, revisions readable) before any op runs;
//! reads inside the transaction see its earlier writes.

use std::cell::Cell;

use bytes::Bytes;

use super::key_index::KeyAt;
use super::key_range::KeyRange;
use super::range::{self, IndexView, Item};
use super::revision::Revision;
use crate::error::EtcdError;
use crate::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::proto::etcdserverpb::request_op::Request;
use crate::proto::etcdserverpb::response_op::Response;
use crate::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use crate::proto::mvccpb::KeyValue;

/// Everything a write needs to read.
pub trait TxnView: IndexView {
    /// The stored values of these revisions, in order.
    fn fetch(&self, revs: &[Revision]) -> Result<Vec<KeyValue>, EtcdError>;
    fn lease_exists(&self, id: i64) -> bool;
    /// The lease `key` is attached to (0 for none).
    fn lease_of(&self, key: &Bytes) -> i64;
}

/// One key changed by a command. `kv` is the new value for a put, `None` for a delete;
/// `prev` is the value it replaced.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub key: Bytes,
    pub kv: Option<KeyValue>,
    pub prev: Option<KeyValue>,
    /// When `prev` has everything but its value, where the value is stored: the command did
    /// not need it (as in etcd, a put or delete reads no old value unless asked to return
    /// it), and whoever does later (a watcher with prev_kv) reads it from there.
    pub prev_stored: Option<Revision>,
}

pub struct Executor<'v, V: TxnView> {
    view: &'v V,
    /// The revision this command writes at.
    rev: i64,
    /// Changes so far, also the overlay that later reads in a transaction see.
    overlay: Vec<Item>,
    changes: Vec<Change>,
    counts: Counts,
}

/// The reads and writes of one command, counted as etcd's MVCC metrics count those of a
/// backend transaction (`etcd_mvcc_*_total`), published when the executor is dropped.
#[derive(Default)]
struct Counts {
    ranges: Cell<u64>,
    puts: u64,
    deletes: u64,
    /// A transaction's compares: each a read.
    compares: Cell<u64>,
    /// A transaction that writes evaluates its compares in a read transaction of its own.
    compares_apart: bool,
}

impl Counts {
    fn read(&self) {
        self.ranges.set(self.ranges.get() + 1);
    }
}

impl<V: TxnView> Drop for Executor<'_, V> {
    fn drop(&mut self) {
        let c = &self.counts;
        let (compares, ops) = (c.compares.get(), c.ranges.get() + c.puts + c.deletes);
        let hot = &crate::metrics::HOT;
        hot.mvcc_range.inc_by(c.ranges.get() + compares);
        hot.mvcc_put.inc_by(c.puts);
        hot.mvcc_delete.inc_by(c.deletes);
        // etcd counts a transaction when a backend transaction did more than one thing.
        let txns =
            if c.compares_apart { u64::from(compares > 1) + u64::from(ops > 1) } else { u64::from(compares + ops > 1) };
        hot.mvcc_txn.inc_by(txns);
    }
}

impl<'v, V: TxnView> Executor<'v, V> {
    pub fn new(view: &'v V) -> Self {
        Executor {
            rev: view.current_revision() + 1,
            view,
            overlay: Vec::new(),
            changes: Vec::new(),
            counts: Counts::default(),
        }
    }

    /// The revision a read of "now" sees: the new one once something was written.
    fn now(&self) -> i64 {
        if self.changes.is_empty() {
            self.rev - 1
        } else {
            self.rev
        }
    }

    pub fn finish(mut self) -> (i64, Vec<Change>) {
        (self.rev, std::mem::take(&mut self.changes))
    }

    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, EtcdError> {
        self.counts.read();
        let sel = range::select(self.view, req, self.now(), &self.overlay)?;
        range::materialize(sel, |revs| self.view.fetch(revs))
    }

    /// The current version of `key` without reading its value, and where the value is
    /// stored if it was left out (see [`Change::prev_stored`]).
    fn latest_meta(&self, key: &Bytes) -> (Option<KeyValue>, Option<Revision>) {
        if let Some(it) = self.overlay.iter().rev().find(|it| it.key == *key) {
            return (it.kv.clone(), None);
        }
        let (found, _) = self.view.index_range(&KeyRange::Single(key.clone()), self.view.current_revision(), 1);
        match found.into_iter().next() {
            Some((key, at)) => (Some(self.meta_of(key, &at)), Some(at.modified)),
            None => (None, None),
        }
    }

    /// A key's version as the index has it, without its value.
    fn meta_of(&self, key: Bytes, at: &KeyAt) -> KeyValue {
        KeyValue {
            create_revision: at.created.main,
            mod_revision: at.modified.main,
            version: at.version,
            lease: self.view.lease_of(&key),
            key,
            value: Bytes::new(),
        }
    }

    /// The current value of `key`, including this command's earlier changes.
    fn latest(&self, key: &Bytes) -> Result<Option<KeyValue>, EtcdError> {
        if let Some(it) = self.overlay.iter().rev().find(|it| it.key == *key) {
            return Ok(it.kv.clone());
        }
        let (found, _) = self.view.index_range(&KeyRange::Single(key.clone()), self.view.current_revision(), 1);
        match found.first() {
            Some((_, at)) => Ok(self.view.fetch(&[at.modified])?.pop()),
            None => Ok(None),
        }
    }

    fn record(&mut self, key: Bytes, kv: Option<KeyValue>, prev: Option<KeyValue>, prev_stored: Option<Revision>) {
        let sub = self.changes.len() as i64;
        let modified = Revision::new(self.rev, sub);
        let at = match &kv {
            Some(kv) => KeyAt { modified, created: Revision::new(kv.create_revision, 0), version: kv.version },
            None => KeyAt { modified, created: modified, version: 0 },
        };
        self.overlay.push(Item { key: key.clone(), at, kv: kv.clone() });
        self.changes.push(Change { key, kv, prev, prev_stored });
    }

    fn check_put(&self, req: &PutRequest) -> Result<(), EtcdError> {
        if (req.ignore_value || req.ignore_lease) && self.latest(&req.key)?.is_none() {
            return Err(EtcdError::KeyNotFound);
        }
        if req.lease != 0 && !self.view.lease_exists(req.lease) {
            return Err(EtcdError::LeaseNotFound);
        }
        Ok(())
    }

    pub fn put(&mut self, req: &PutRequest) -> Result<PutResponse, EtcdError> {
        self.check_put(req)?;
        self.counts.puts += 1;
        if req.ignore_value || req.ignore_lease || req.prev_kv {
            // etcd reads the previous key for these.
            self.counts.read();
        }
        let (prev, stored) =
            if req.ignore_value || req.prev_kv { (self.latest(&req.key)?, None) } else { self.latest_meta(&req.key) };
        let value = match (&prev, req.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => req.value.clone(),
        };
        let lease = match (&prev, req.ignore_lease) {
            (Some(p), true) => p.lease,
            _ => req.lease,
        };
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: prev.as_ref().map_or(self.rev, |p| p.create_revision),
            mod_revision: self.rev,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value,
            lease,
        };
        let prev_kv = if req.prev_kv { prev.clone() } else { None };
        self.record(req.key.clone(), Some(kv), prev, stored);
        Ok(PutResponse { header: Some(header(self.rev)), prev_kv })
    }

    pub fn delete_range(&mut self, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse, EtcdError> {
        self.counts.deletes += 1;
        let read = RangeRequest { key: req.key.clone(), range_end: req.range_end.clone(), ..Default::default() };
        if req.prev_kv {
            let existing = self.range(&read)?.kvs;
            let deleted = existing.len() as i64;
            for kv in &existing {
                self.record(kv.key.clone(), None, Some(kv.clone()), None);
            }
            return Ok(DeleteRangeResponse { header: Some(header(self.now())), deleted, prev_kvs: existing });
        }
        // Only the keys are needed: their values are not read (a prefix delete of a few
        // hundred thousand keys read every value and took seconds).
        let items = range::select(self.view, &read, self.now(), &self.overlay)?.items;
        let deleted = items.len() as i64;
        for it in items {
            let (prev, stored) = match it.kv {
                Some(kv) => (kv, None),
                None => (self.meta_of(it.key.clone(), &it.at), Some(it.at.modified)),
            };
            self.record(it.key, None, Some(prev), stored);
        }
        Ok(DeleteRangeResponse { header: Some(header(self.now())), deleted, prev_kvs: Vec::new() })
    }

    pub fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse, EtcdError> {
        self.counts.compares_apart = writes(req);
        let mut path = Vec::new();
        self.choose_path(req, &mut path)?;
        self.check_path(req, &mut path.iter().copied())?;
        let mut resp = self.exec_path(req, &mut path.iter().copied())?;
        resp.header = Some(header(self.now()));
        Ok(resp)
    }

    /// Evaluates every compare that decides which branches run, before any write.
    fn choose_path(&self, req: &TxnRequest, path: &mut Vec<bool>) -> Result<(), EtcdError> {
        let mut ok = true;
        for c in &req.compare {
            self.counts.compares.set(self.counts.compares.get() + 1);
            if !self.compare(c)? {
                ok = false;
                break;
            }
        }
        path.push(ok);
        for op in branch(req, ok) {
            if let Some(Request::RequestTxn(t)) = &op.request {
                self.choose_path(t, path)?;
            }
        }
        Ok(())
    }

    fn check_path(&self, req: &TxnRequest, path: &mut impl Iterator<Item = bool>) -> Result<(), EtcdError> {
        let ok = path.next().unwrap_or(false);
        for op in branch(req, ok) {
            match &op.request {
                Some(Request::RequestPut(p)) => self.check_put(p)?,
                Some(Request::RequestRange(r)) => {
                    range::resolve_revision(r.revision, self.now(), self.view.compact_revision())?;
                }
                Some(Request::RequestTxn(t)) => self.check_path(t, path)?,
                Some(Request::RequestDeleteRange(_)) | None => {}
            }
        }
        Ok(())
    }

    fn exec_path(&mut self, req: &TxnRequest, path: &mut impl Iterator<Item = bool>) -> Result<TxnResponse, EtcdError> {
        let ok = path.next().unwrap_or(false);
        let mut responses = Vec::new();
        for op in branch(req, ok) {
            let response = match &op.request {
                Some(Request::RequestRange(r)) => Response::ResponseRange(self.range(r)?),
                Some(Request::RequestPut(p)) => Response::ResponsePut(self.put(p)?),
                Some(Request::RequestDeleteRange(d)) => Response::ResponseDeleteRange(self.delete_range(d)?),
                Some(Request::RequestTxn(t)) => {
                    let mut nested = self.exec_path(t, path)?;
                    nested.header = Some(ResponseHeader::default());
                    Response::ResponseTxn(nested)
                }
                None => continue,
            };
            responses.push(ResponseOp { response: Some(response) });
        }
        Ok(TxnResponse { header: None, succeeded: ok, responses })
    }

    /// One compare against the state before the transaction; over a range, every key
    /// must satisfy it. A VALUE compare on no keys fails; other targets compare with a
    /// zero key (so `create_revision == 0` tests absence).
    fn compare(&self, c: &Compare) -> Result<bool, EtcdError> {
        let range = KeyRange::new(&c.key, &c.range_end);
        let at = self.rev - 1;
        let (found, _) = self.view.index_range(&range, at, 0);
        let target = CompareTarget::try_from(c.target).unwrap_or(CompareTarget::Version);
        if found.is_empty() {
            return Ok(target != CompareTarget::Value && compare_kv(c, target, &KeyValue::default()));
        }
        let revs: Vec<Revision> = found.iter().map(|(_, a)| a.modified).collect();
        let kvs = self.view.fetch(&revs)?;
        Ok(kvs.iter().all(|kv| compare_kv(c, target, kv)))
    }
}

/// Whether etcd runs the transaction as a write: any operation but a range, in either
/// branch (etcd's `isTxnReadonly`, which counts a nested transaction as a write).
fn writes(req: &TxnRequest) -> bool {
    req.success.iter().chain(&req.failure).any(|op| !matches!(op.request, Some(Request::RequestRange(_))))
}

fn branch(req: &TxnRequest, ok: bool) -> &[RequestOp] {
    if ok {
        &req.success
    } else {
        &req.failure
    }
}

fn header(revision: i64) -> ResponseHeader {
    ResponseHeader { revision, ..Default::default() }
}

fn compare_kv(c: &Compare, target: CompareTarget, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    let int = |v: i64, want: Option<i64>| v.cmp(&want.unwrap_or(0));
    let ord = match (target, &c.target_union) {
        (CompareTarget::Value, Some(TargetUnion::Value(v))) => kv.value.as_ref().cmp(v.as_ref()),
        (CompareTarget::Value, _) => kv.value.as_ref().cmp(&[][..]),
        (CompareTarget::Version, u) => int(kv.version, as_int(u, |t| matches!(t, TargetUnion::Version(_)))),
        (CompareTarget::Create, u) => {
            int(kv.create_revision, as_int(u, |t| matches!(t, TargetUnion::CreateRevision(_))))
        }
        (CompareTarget::Mod, u) => int(kv.mod_revision, as_int(u, |t| matches!(t, TargetUnion::ModRevision(_)))),
        (CompareTarget::Lease, u) => int(kv.lease, as_int(u, |t| matches!(t, TargetUnion::Lease(_)))),
    };
    match CompareResult::try_from(c.result).unwrap_or(CompareResult::Equal) {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::NotEqual => ord != Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
    }
}

/// The integer in the compare's target union, if it is of the kind the target names.
fn as_int(u: &Option<TargetUnion>, right_kind: impl Fn(&TargetUnion) -> bool) -> Option<i64> {
    match u {
        Some(t) if right_kind(t) => match t {
            TargetUnion::Version(v)
            | TargetUnion::CreateRevision(v)
            | TargetUnion::ModRevision(v)
            | TargetUnion::Lease(v) => Some(*v),
            TargetUnion::Value(_) => None,
        },
        _ => None,
    }
}

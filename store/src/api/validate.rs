//! Request checks done before a request is proposed, as etcd's v3rpc layer does them
//! (`etcdserver/api/v3rpc/key.go`): a bad request is refused without touching Raft.

use crate::error::EtcdError;
use crate::mvcc::KeyRange;
use crate::proto::etcdserverpb::request_op::Request;
use crate::proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};

pub fn range(r: &RangeRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    Ok(())
}

pub fn put(r: &PutRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(EtcdError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(EtcdError::LeaseProvided);
    }
    Ok(())
}

pub fn delete_range(r: &DeleteRangeRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    Ok(())
}

/// Op counts, keys, and no key written twice in one branch.
pub fn txn(r: &TxnRequest, max_ops: usize) -> Result<(), EtcdError> {
    check_txn_ops(r, max_ops)?;
    no_duplicates(&r.success)?;
    no_duplicates(&r.failure)?;
    Ok(())
}

fn check_txn_ops(r: &TxnRequest, max_ops: usize) -> Result<(), EtcdError> {
    if r.compare.len().max(r.success.len()).max(r.failure.len()) > max_ops {
        return Err(EtcdError::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(EtcdError::EmptyKey);
    }
    for op in r.success.iter().chain(&r.failure) {
        match &op.request {
            Some(Request::RequestRange(x)) => range(x)?,
            Some(Request::RequestPut(x)) => put(x)?,
            Some(Request::RequestDeleteRange(x)) => delete_range(x)?,
            Some(Request::RequestTxn(x)) => check_txn_ops(x, max_ops)?,
            None => {}
        }
    }
    Ok(())
}

/// The keys put and ranges deleted by a branch (nested transactions included).
struct Writes {
    puts: Vec<bytes::Bytes>,
    dels: Vec<KeyRange>,
}

/// etcd's `checkIntervals`: within one branch, a key may be put once and not also be
/// deleted; the two branches of a nested transaction may overlap each other, since only
/// one of them runs. etcd 3.4 takes a delete's `range_end` literally here, so a from-key
/// delete (`"\0"`, before every key) conflicts with no put, and both run, in order.
fn no_duplicates(ops: &[RequestOp]) -> Result<Writes, EtcdError> {
    let mut dels: Vec<KeyRange> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) if d.range_end.as_ref() != [0] => {
                Some(KeyRange::new(&d.key, &d.range_end))
            }
            _ => None,
        })
        .collect();
    let mut puts: Vec<bytes::Bytes> = Vec::new();
    let deleted = |dels: &[KeyRange], k: &bytes::Bytes| dels.iter().any(|d| d.contains(k));
    for op in ops {
        let Some(Request::RequestTxn(t)) = &op.request else { continue };
        let then = no_duplicates(&t.success)?;
        let other = no_duplicates(&t.failure)?;
        for k in &then.puts {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(EtcdError::DuplicateKey);
            }
        }
        for k in &other.puts {
            if (puts.contains(k) && !then.puts.contains(k)) || deleted(&dels, k) {
                return Err(EtcdError::DuplicateKey);
            }
        }
        puts.extend(then.puts.iter().cloned());
        puts.extend(other.puts.into_iter().filter(|k| !then.puts.contains(k)));
        dels.extend(then.dels);
        dels.extend(other.dels);
    }
    for op in ops {
        let Some(Request::RequestPut(p)) = &op.request else { continue };
        if puts.contains(&p.key) || deleted(&dels, &p.key) {
            return Err(EtcdError::DuplicateKey);
        }
        puts.push(p.key.clone());
    }
    Ok(Writes { puts, dels })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::PutRequest;

    fn put_op(k: &'static str) -> RequestOp {
        RequestOp { request: Some(Request::RequestPut(PutRequest { key: k.into(), ..Default::default() })) }
    }

    fn del_op(k: &'static str, end: &'static str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: k.into(),
                range_end: end.into(),
                ..Default::default()
            })),
        }
    }

    fn txn_op(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        RequestOp { request: Some(Request::RequestTxn(TxnRequest { compare: vec![], success, failure })) }
    }

    #[test]
    fn duplicate_keys() {
        let t = |success| TxnRequest { compare: vec![], success, failure: vec![] };
        assert_eq!(txn(&t(vec![put_op("a"), put_op("a")]), 128), Err(EtcdError::DuplicateKey));
        assert_eq!(txn(&t(vec![put_op("b"), del_op("a", "c")]), 128), Err(EtcdError::DuplicateKey));
        // etcd 3.4 reads a from-key delete's "\0" end literally here: no conflict.
        assert_eq!(txn(&t(vec![put_op("b"), del_op("a", "\0")]), 128), Ok(()));
        assert_eq!(txn(&t(vec![put_op("c"), del_op("a", "c")]), 128), Ok(()));
        assert_eq!(txn(&t(vec![txn_op(vec![put_op("a")], vec![put_op("a")])]), 128), Ok(()));
        assert_eq!(txn(&t(vec![put_op("a"), txn_op(vec![put_op("a")], vec![])]), 128), Err(EtcdError::DuplicateKey));
    }

    #[test]
    fn op_limits() {
        let many = TxnRequest { compare: vec![], success: (0..129).map(|_| put_op("k")).collect(), failure: vec![] };
        assert_eq!(txn(&many, 128), Err(EtcdError::TooManyOps));
    }
}

//! Alarms, as etcd keeps them: raised and cleared through Raft (so every member agrees on
//! them), stored with the state machine, and one of them, NOSPACE, changes what applying
//! does. While any member's NOSPACE alarm is raised, puts, transactions that put and lease
//! grants fail with "database space exceeded" wherever they are applied; reads, deletes,
//! compactions and lease revokes go on, so the space can be freed and the alarm cleared
//! (`etcdctl alarm disarm`).
//!
//! A member raises NOSPACE itself when a write would take its database past
//! `--quota-backend-bytes` (see [`Quota`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use prost::Message;

use crate::engine::{Cf, Engine, EngineError, WriteBatch};
use crate::error::EtcdError;
use crate::proto::etcdserverpb::alarm_request::AlarmAction;
use crate::proto::etcdserverpb::request_op::Request;
use crate::proto::etcdserverpb::{AlarmMember, AlarmRequest, AlarmResponse, AlarmType, PutRequest, TxnRequest};
use crate::proto::keelpb::raft_request::Command;

/// The Meta key the raised alarms are stored under (an `AlarmResponse` holding them).
pub const ALARMS: &[u8] = b"alarms";

#[derive(Default)]
pub struct Alarms {
    raised: RwLock<Vec<AlarmMember>>,
    /// Whether any NOSPACE alarm is raised: read on every write applied.
    no_space: AtomicBool,
    /// Whether any CORRUPT alarm is raised.
    corrupt: AtomicBool,
}

impl Alarms {
    pub fn load(engine: &Engine) -> Result<Alarms, EngineError> {
        let alarms = Alarms::default();
        alarms.reload(engine)?;
        Ok(alarms)
    }

    /// Reads the raised alarms back from storage (start-up, and after a snapshot install).
    pub fn reload(&self, engine: &Engine) -> Result<(), EngineError> {
        let raised = match engine.get(Cf::Meta, ALARMS)? {
            Some(v) => AlarmResponse::decode(v.as_slice()).map(|r| r.alarms).unwrap_or_default(),
            None => Vec::new(),
        };
        self.publish(raised);
        Ok(())
    }

    /// The raised alarms of one type, or all of them for NONE, as etcd lists them.
    pub fn get(&self, alarm: AlarmType) -> Vec<AlarmMember> {
        let raised = self.raised.read();
        raised.iter().filter(|a| alarm == AlarmType::None || a.alarm == alarm as i32).cloned().collect()
    }

    pub fn no_space(&self) -> bool {
        self.no_space.load(Ordering::Relaxed)
    }

    /// Applies an alarm request: its answer, and the alarms as they will be (staged in
    /// `batch`) if it changed them. As etcd's: raising one already raised answers with it,
    /// clearing one not raised answers with nothing.
    pub fn apply(&self, r: &AlarmRequest, batch: &mut WriteBatch) -> (AlarmResponse, Option<Vec<AlarmMember>>) {
        let mut raised = self.raised.read().clone();
        let wanted = AlarmMember { member_id: r.member_id, alarm: r.alarm };
        let mut resp = AlarmResponse::default();
        let changed = match r.action() {
            AlarmAction::Get => {
                resp.alarms = self.get(r.alarm());
                false
            }
            AlarmAction::Activate if r.alarm() == AlarmType::None => false,
            AlarmAction::Activate => {
                resp.alarms.push(wanted);
                if raised.contains(&wanted) {
                    false
                } else {
                    raised.push(wanted);
                    true
                }
            }
            AlarmAction::Deactivate => match raised.iter().position(|a| *a == wanted) {
                Some(i) => {
                    resp.alarms.push(raised.remove(i));
                    true
                }
                None => false,
            },
        };
        if !changed {
            return (resp, None);
        }
        raised.sort_by_key(|a| (a.alarm, a.member_id));
        batch.put(Cf::Meta, ALARMS.to_vec(), AlarmResponse { header: None, alarms: raised.clone() }.encode_to_vec());
        (resp, Some(raised))
    }

    /// Makes applied alarms visible (after their write).
    pub fn publish(&self, raised: Vec<AlarmMember>) {
        let any = |t: AlarmType| raised.iter().any(|a| a.alarm == t as i32);
        let (no_space, corrupt) = (any(AlarmType::Nospace), any(AlarmType::Corrupt));
        *self.raised.write() = raised;
        self.no_space.store(no_space, Ordering::Relaxed);
        self.corrupt.store(corrupt, Ordering::Relaxed);
    }

    /// Why a command may not be applied while an alarm is raised, if it may not. As
    /// etcd's appliers: CORRUPT refuses every key and lease command that goes through
    /// Raft; NOSPACE refuses puts, transactions with a put in either branch, and lease
    /// grants.
    pub fn refusal(&self, cmd: &Command) -> Option<EtcdError> {
        if self.corrupt.load(Ordering::Relaxed) {
            let kv = matches!(
                cmd,
                Command::Put(_)
                    | Command::DeleteRange(_)
                    | Command::Txn(_)
                    | Command::Compaction(_)
                    | Command::LeaseGrant(_)
                    | Command::LeaseRevoke(_)
            );
            if kv {
                return Some(EtcdError::Corrupt);
            }
        }
        let grows = match cmd {
            Command::Put(_) | Command::LeaseGrant(_) => true,
            Command::Txn(t) => puts(t),
            _ => false,
        };
        (grows && self.no_space()).then_some(EtcdError::NoSpace)
    }
}

fn puts(t: &TxnRequest) -> bool {
    t.success.iter().chain(&t.failure).any(|op| match &op.request {
        Some(Request::RequestPut(_)) => true,
        Some(Request::RequestTxn(n)) => puts(n),
        _ => false,
    })
}

/// etcd's default `--quota-backend-bytes`: 2 GiB.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 << 30;

/// `--quota-backend-bytes`: the database size a write may not take a member past.
/// Negative turns the check off, 0 is etcd's default. The size is read from RocksDB at
/// most every [`Quota::REFRESH`], not on every write.
pub struct Quota {
    limit: Option<u64>,
    size: AtomicU64,
    read_at: Mutex<Option<Instant>>,
}

impl Quota {
    const REFRESH: Duration = Duration::from_millis(50);

    pub fn new(quota_backend_bytes: i64) -> Quota {
        let limit = match quota_backend_bytes {
            q if q < 0 => None,
            0 => Some(DEFAULT_QUOTA_BYTES),
            q => Some(q as u64),
        };
        Quota { limit, size: AtomicU64::new(0), read_at: Mutex::new(None) }
    }

    /// Reads the size afresh for the next write (after a defragmentation).
    pub fn forget_size(&self) {
        *self.read_at.lock() = None;
    }

    /// Whether a write of about `cost` bytes fits.
    pub fn fits(&self, engine: &Engine, cost: u64) -> bool {
        // As etcd: a request that writes nothing (a transaction that only reads) passes.
        let Some(limit) = self.limit.filter(|_| cost > 0) else { return true };
        let stale = self.read_at.lock().is_none_or(|t| t.elapsed() >= Self::REFRESH);
        if stale {
            self.size.store(engine.size(), Ordering::Relaxed);
            *self.read_at.lock() = Some(Instant::now());
        }
        self.size.load(Ordering::Relaxed) + cost < limit
    }
}

/// What a request adds to the database, about (etcd's quota cost): a put's key and value
/// with its metadata, the costlier branch of a transaction, a lease's record.
pub fn cost(cmd: &Command) -> u64 {
    match cmd {
        Command::Put(p) => put_cost(p),
        Command::Txn(t) => txn_cost(t),
        Command::LeaseGrant(_) => 64,
        _ => 0,
    }
}

/// etcd's estimate: the key and value, and 256 bytes for the key's metadata.
fn put_cost(p: &PutRequest) -> u64 {
    (p.key.len() + p.value.len() + 256) as u64
}

fn txn_cost(t: &TxnRequest) -> u64 {
    let branch = |ops: &[crate::proto::etcdserverpb::RequestOp]| -> u64 {
        ops.iter()
            .map(|op| match &op.request {
                Some(Request::RequestPut(p)) => put_cost(p),
                Some(Request::RequestTxn(n)) => txn_cost(n),
                _ => 0,
            })
            .sum()
    };
    branch(&t.success).max(branch(&t.failure))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(action: AlarmAction, member_id: u64, alarm: AlarmType) -> AlarmRequest {
        AlarmRequest { action: action as i32, member_id, alarm: alarm as i32 }
    }

    #[test]
    fn raising_and_clearing_answer_as_etcd_and_cap_writes() {
        let alarms = Alarms::default();
        let put = Command::Put(PutRequest { key: b"k".to_vec().into(), ..Default::default() });
        assert_eq!(alarms.refusal(&put), None);
        let mut batch = WriteBatch::default();
        let (resp, raised) = alarms.apply(&req(AlarmAction::Activate, 7, AlarmType::Nospace), &mut batch);
        assert_eq!(resp.alarms.len(), 1);
        alarms.publish(raised.expect("changed"));
        assert_eq!(alarms.refusal(&put), Some(EtcdError::NoSpace));
        // Again: answered with the alarm, nothing changes.
        let (resp, raised) = alarms.apply(&req(AlarmAction::Activate, 7, AlarmType::Nospace), &mut batch);
        assert_eq!((resp.alarms.len(), raised), (1, None));
        // NONE raises nothing; clearing another member's answers with nothing.
        assert_eq!(alarms.apply(&req(AlarmAction::Activate, 8, AlarmType::None), &mut batch).1, None);
        let (resp, raised) = alarms.apply(&req(AlarmAction::Deactivate, 8, AlarmType::Nospace), &mut batch);
        assert_eq!((resp.alarms.len(), raised), (0, None));
        assert_eq!(alarms.get(AlarmType::None).len(), 1);
        assert_eq!(alarms.get(AlarmType::Corrupt).len(), 0);
        let (_, raised) = alarms.apply(&req(AlarmAction::Deactivate, 7, AlarmType::Nospace), &mut batch);
        alarms.publish(raised.expect("changed"));
        assert_eq!(alarms.refusal(&put), None);
    }

    #[test]
    fn a_transaction_is_capped_only_if_it_may_put() {
        use crate::proto::etcdserverpb::{RangeRequest, RequestOp};
        let alarms = Alarms::default();
        alarms.publish(vec![AlarmMember { member_id: 1, alarm: AlarmType::Nospace as i32 }]);
        let op = |r| RequestOp { request: Some(r) };
        let read =
            TxnRequest { success: vec![op(Request::RequestRange(RangeRequest::default()))], ..Default::default() };
        let nested_put = TxnRequest {
            failure: vec![op(Request::RequestTxn(TxnRequest {
                success: vec![op(Request::RequestPut(PutRequest::default()))],
                ..Default::default()
            }))],
            ..Default::default()
        };
        assert_eq!(alarms.refusal(&Command::Txn(read)), None);
        assert_eq!(alarms.refusal(&Command::Txn(nested_put)), Some(EtcdError::NoSpace));
    }
}

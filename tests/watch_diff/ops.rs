//! The writes of the watch differential: puts, deletes, transactions, compactions and lease
//! steps, each from its own seed, and the changes they made.

use std::collections::HashMap;

use etcd_client::{Client, DeleteOptions, LeaseGrantOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::model::{Change, KEYS};
use crate::harness::{err, rev};

/// One write step, from its own seed; returns a description of the result and the
/// changes it made (revision, key, put).
/// Values are padded with `pad` bytes.
pub(super) async fn write(
    c: &mut Client,
    seed: u64,
    compact_max: i64,
    compacted: i64,
    pad: usize,
) -> (String, Vec<Change>, Option<i64>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let padded = |v: String| v + &"x".repeat(pad);
    let key = |rng: &mut StdRng| KEYS[rng.random_range(0..KEYS.len())];
    match rng.random_range(0..10) {
        0..=4 => {
            let (k, v) = (key(&mut rng), format!("v{}", rng.random_range(0..100)));
            match c.put(k, padded(v.clone()), Some(PutOptions::new())).await {
                Ok(r) => (format!("put {k}={v}: {}", rev(r.header())), vec![(rev(r.header()), k.into(), true)], None),
                Err(e) => (err(e), Vec::new(), None),
            }
        }
        5..=6 => {
            let k = key(&mut rng);
            let mut o = DeleteOptions::new().with_prev_key();
            if rng.random_bool(0.4) {
                o = o.with_prefix();
            }
            match c.delete(k, Some(o)).await {
                Ok(r) => {
                    let changes = r
                        .prev_kvs()
                        .iter()
                        .map(|p| (rev(r.header()), String::from_utf8_lossy(p.key()).into_owned(), false))
                        .collect();
                    (format!("del {k}: {} {}", rev(r.header()), r.deleted()), changes, None)
                }
                Err(e) => (err(e), Vec::new(), None),
            }
        }
        7..=8 => {
            let mut used = std::collections::HashSet::new();
            let (mut ops, mut planned) = (Vec::new(), Vec::new());
            for _ in 0..rng.random_range(1..4) {
                let k = key(&mut rng);
                if !used.insert(k) {
                    continue;
                }
                let put = rng.random_bool(0.7);
                planned.push((k, put));
                ops.push(if put {
                    TxnOp::put(k, padded(format!("t{}", rng.random_range(0..100))), None)
                } else {
                    TxnOp::delete(k, Some(DeleteOptions::new().with_prev_key()))
                });
            }
            match c.txn(Txn::new().and_then(ops)).await {
                Ok(r) => {
                    let at = rev(r.header());
                    let mut changes = Vec::new();
                    for ((k, put), op) in planned.iter().zip(r.op_responses()) {
                        match op {
                            TxnOpResponse::Put(_) if *put => changes.push((at, (*k).to_string(), true)),
                            TxnOpResponse::Delete(d) if !*put => changes.extend(
                                d.prev_kvs().iter().map(|p| (at, String::from_utf8_lossy(p.key()).into_owned(), false)),
                            ),
                            other => panic!("txn: {other:?} for {k} (put {put})"),
                        }
                    }
                    (format!("txn {planned:?}: {at}"), changes, None)
                }
                Err(e) => (format!("txn: {}", err(e)), Vec::new(), None),
            }
        }
        _ => {
            // Large values keep their whole history, for catch-ups large enough to fragment.
            if compact_max <= compacted || pad > 0 {
                return ("no compaction".into(), Vec::new(), None);
            }
            let target = rng.random_range(compacted + 1..=compact_max);
            match c.compact(target, None).await {
                Ok(r) => (format!("compact {target}: {}", rev(r.header())), Vec::new(), Some(target)),
                Err(e) => (format!("compact {target}: {}", err(e)), Vec::new(), None),
            }
        }
    }
}

/// A lease step, from its own seed: grant a lease (if new) and put a key with it, or revoke
/// it, which deletes the keys attached to it (`lease_of`) at one revision, in key order.
/// Returns a description, the changes and the lease.
pub(super) async fn lease_step(
    c: &mut Client,
    seed: u64,
    lease_of: &HashMap<String, i64>,
    pad: usize,
) -> (String, Vec<Change>, i64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let lease = 0x1000 + rng.random_range(0..3);
    if rng.random_bool(0.6) {
        let granted = match c.lease_grant(600, Some(LeaseGrantOptions::new().with_id(lease))).await {
            Ok(r) => format!("granted {:#x}", r.id()),
            Err(e) => err(e),
        };
        let k = KEYS[rng.random_range(0..KEYS.len())];
        let v = format!("l{}", rng.random_range(0..100));
        match c.put(k, v.clone() + &"x".repeat(pad), Some(PutOptions::new().with_lease(lease))).await {
            Ok(r) => {
                let at = rev(r.header());
                (format!("lease {lease:#x} ({granted}), put {k}={v}: {at}"), vec![(at, k.into(), true)], lease)
            }
            Err(e) => (format!("lease {lease:#x} ({granted}), put {k}: {}", err(e)), Vec::new(), lease),
        }
    } else {
        let mut keys: Vec<&String> = lease_of.iter().filter(|(_, l)| **l == lease).map(|(k, _)| k).collect();
        keys.sort();
        match c.lease_revoke(lease).await {
            Ok(r) => {
                let at = rev(r.header());
                let changes = keys.iter().map(|k| (at, (*k).clone(), false)).collect();
                (format!("revoke {lease:#x}: {at}"), changes, lease)
            }
            Err(e) => (format!("revoke {lease:#x}: {}", err(e)), Vec::new(), lease),
        }
    }
}

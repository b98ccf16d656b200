//! KV tests through the Rust `etcd-client` crate: direct semantic checks against Keel, and
//! a seeded random workload run against Keel and a real etcd with every response compared.

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::harness::{client, err, rev, Flavor, Member};

fn kv(k: &KeyValue) -> String {
    format!(
        "{}={}@c{}m{}v{}l{}",
        String::from_utf8_lossy(k.key()),
        String::from_utf8_lossy(k.value()),
        k.create_revision(),
        k.mod_revision(),
        k.version(),
        k.lease()
    )
}

fn kvs(list: &[KeyValue]) -> String {
    list.iter().map(kv).collect::<Vec<_>>().join(",")
}

fn txn_ops(ops: Vec<TxnOpResponse>) -> String {
    ops.into_iter()
        .map(|op| match op {
            TxnOpResponse::Put(p) => format!("put[{} {:?}]", rev(p.header()), p.prev_key().map(kv)),
            TxnOpResponse::Get(g) => format!("get[{} {} {} {}]", rev(g.header()), kvs(g.kvs()), g.count(), g.more()),
            TxnOpResponse::Delete(d) => format!("del[{} {} {}]", rev(d.header()), d.deleted(), kvs(d.prev_kvs())),
            TxnOpResponse::Txn(t) => format!("txn[{} {}]", t.succeeded(), txn_ops(t.op_responses())),
        })
        .collect::<Vec<_>>()
        .join(";")
}

const KEYS: [&str; 6] = ["a", "a/1", "a/2", "b", "c", "d"];

fn key(rng: &mut StdRng) -> String {
    KEYS[rng.random_range(0..KEYS.len())].to_string()
}

fn get_options(rng: &mut StdRng, current: i64) -> (GetOptions, String) {
    let mut o = GetOptions::new();
    let mut d = String::new();
    match rng.random_range(0..4) {
        0 => {}
        1 => {
            o = o.with_prefix();
            d += "prefix ";
        }
        2 => {
            o = o.with_range("c");
            d += "range..c ";
        }
        _ => {
            o = o.with_from_key();
            d += "from ";
        }
    }
    if rng.random_bool(0.3) {
        let n = rng.random_range(1..3);
        o = o.with_limit(n);
        d += &format!("limit{n} ");
    }
    if rng.random_bool(0.3) {
        let targets = [SortTarget::Key, SortTarget::Version, SortTarget::Create, SortTarget::Mod, SortTarget::Value];
        let orders = [SortOrder::None, SortOrder::Ascend, SortOrder::Descend];
        let (t, ord) = (rng.random_range(0..5), rng.random_range(0..3));
        o = o.with_sort(targets[t], orders[ord]);
        d += &format!("sort{t}/{ord} ");
    }
    if rng.random_bool(0.2) && current > 1 {
        let r = rng.random_range(1..=current + 1);
        o = o.with_revision(r);
        d += &format!("rev{r} ");
    }
    if rng.random_bool(0.1) {
        o = o.with_keys_only();
    }
    if rng.random_bool(0.1) {
        o = o.with_count_only();
    }
    for (on, name) in [(rng.random_bool(0.1), "minmod"), (rng.random_bool(0.1), "maxcreate")] {
        if on {
            let r = rng.random_range(1..=current.max(1));
            o = if name == "minmod" { o.with_min_mod_revision(r) } else { o.with_max_create_revision(r) };
            d += &format!("{name}{r} ");
        }
    }
    (o, d)
}

fn compare(rng: &mut StdRng) -> Compare {
    let k = key(rng);
    let op = [CompareOp::Equal, CompareOp::Greater, CompareOp::Less, CompareOp::NotEqual][rng.random_range(0..4)];
    let c = match rng.random_range(0..4) {
        0 => Compare::version(k, op, rng.random_range(0..3)),
        1 => Compare::create_revision(k, op, rng.random_range(0..20)),
        2 => Compare::mod_revision(k, op, rng.random_range(0..20)),
        _ => Compare::value(k, op, format!("v{}", rng.random_range(0..5))),
    };
    if rng.random_bool(0.15) {
        c.with_prefix()
    } else {
        c
    }
}

/// A transaction branch: puts, reads (with any read options) and deletes, no key written
/// twice in it, and at `depth` > 0 perhaps a nested transaction, whose writes may overlap
/// the branch's (etcd refuses that: compared too).
fn branch(rng: &mut StdRng, current: i64, depth: u32) -> Vec<TxnOp> {
    let mut used = std::collections::HashSet::new();
    let mut ops = Vec::new();
    for _ in 0..rng.random_range(0..4) {
        let k = key(rng);
        let v = format!("t{}", rng.random_range(0..5));
        match rng.random_range(0..4) {
            0 if used.insert(k.clone()) => ops.push(TxnOp::put(k, v, None)),
            1 => ops.push(TxnOp::get(k, Some(get_options(rng, current).0))),
            2 if used.insert(k.clone()) => {
                let o = if rng.random_bool(0.3) { DeleteOptions::new().with_prefix() } else { DeleteOptions::new() };
                ops.push(TxnOp::delete(k, Some(o.with_prev_key())));
            }
            3 if depth > 0 => {
                let cmps: Vec<Compare> = (0..rng.random_range(0..2)).map(|_| compare(rng)).collect();
                let (then, other) = (branch(rng, current, depth - 1), branch(rng, current, depth - 1));
                ops.push(TxnOp::txn(Txn::new().when(cmps).and_then(then).or_else(other)));
            }
            _ => {}
        }
    }
    ops
}

/// One random operation against one client; returns a normalised description of the result.
async fn random_op(c: &mut Client, seed: u64, current: i64) -> String {
    // Both servers see the same op: derive it from the seed alone.
    let mut rng = StdRng::seed_from_u64(seed);
    match rng.random_range(0..10) {
        0..=3 => {
            let (k, v) = (key(&mut rng), format!("v{}", rng.random_range(0..5)));
            let opts = rng.random_bool(0.5).then(|| PutOptions::new().with_prev_key());
            match c.put(k.clone(), v.clone(), opts).await {
                Ok(r) => format!("put {k}={v}: {} {:?}", rev(r.header()), r.prev_key().map(kv)),
                Err(e) => err(e),
            }
        }
        4..=5 => {
            let k = key(&mut rng);
            let (o, d) = get_options(&mut rng, current);
            match c.get(k.clone(), Some(o)).await {
                Ok(r) => format!("get {k} {d}: {} [{}] {} {}", rev(r.header()), kvs(r.kvs()), r.count(), r.more()),
                Err(e) => format!("get {k} {d}: {}", err(e)),
            }
        }
        6 => {
            let k = key(&mut rng);
            let mut o = DeleteOptions::new().with_prev_key();
            if rng.random_bool(0.4) {
                o = o.with_prefix();
            }
            match c.delete(k.clone(), Some(o)).await {
                Ok(r) => format!("del {k}: {} {} [{}]", rev(r.header()), r.deleted(), kvs(r.prev_kvs())),
                Err(e) => err(e),
            }
        }
        7..=8 => {
            let cmps: Vec<Compare> = (0..rng.random_range(0..3)).map(|_| compare(&mut rng)).collect();
            let (then, other) = (branch(&mut rng, current, 1), branch(&mut rng, current, 1));
            let t = Txn::new().when(cmps).and_then(then).or_else(other);
            match c.txn(t).await {
                Ok(r) => format!("txn: {} {} {}", rev(r.header()), r.succeeded(), txn_ops(r.op_responses())),
                Err(e) => format!("txn: {}", err(e)),
            }
        }
        _ => {
            let target = rng.random_range(1..=current.max(1) + 1);
            match c.compact(target, None).await {
                Ok(r) => format!("compact {target}: {}", rev(r.header())),
                Err(e) => format!("compact {target}: {}", err(e)),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_operations_match_etcd() {
    let keel = Member::single(Flavor::Keel);
    let etcd = Member::single(Flavor::Etcd);
    let (mut k, mut e) = (client(&keel).await, client(&etcd).await);
    let mut current = 1;
    // Another base explores another mix: KEEL_KV_DIFF_SEED=n.
    let base = std::env::var("KEEL_KV_DIFF_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_0000u64);
    for i in 0..400u64 {
        let a = random_op(&mut k, base + i, current).await;
        let b = random_op(&mut e, base + i, current).await;
        assert_eq!(a, b, "operation {i} differs");
        if std::env::var_os("KEEL_DIFF_SHOW").is_some() {
            eprintln!("{b}");
        }
        current = e.get("probe", None).await.map(|r| rev(r.header())).unwrap_or(current);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_versions_and_txn_semantics() {
    let m = Member::single(Flavor::Keel);
    let mut c = client(&m).await;
    let r1 = c.put("k", "v1", None).await.expect("put");
    let r2 = c.put("k", "v2", None).await.expect("put");
    assert_eq!(rev(r2.header()), rev(r1.header()) + 1, "one revision per put");
    let g = c.get("k", None).await.expect("get");
    let kv = &g.kvs()[0];
    assert_eq!((kv.version(), kv.create_revision(), kv.mod_revision()), (2, rev(r1.header()), rev(r2.header())));

    // A transaction whose compare fails and whose failure branch only reads takes no revision.
    let t = Txn::new()
        .when([Compare::value("k", CompareOp::Equal, "nope")])
        .and_then([TxnOp::put("k", "x", None)])
        .or_else([TxnOp::get("k", None)]);
    let tr = c.txn(t).await.expect("txn");
    assert!(!tr.succeeded());
    assert_eq!(rev(tr.header()), rev(r2.header()));

    // All writes of one transaction share one revision.
    let t = Txn::new().and_then([TxnOp::put("x", "1", None), TxnOp::put("y", "2", None), TxnOp::delete("k", None)]);
    let tr = c.txn(t).await.expect("txn");
    let all = c.get("", Some(GetOptions::new().with_all_keys())).await.expect("get all");
    assert!(all.kvs().iter().all(|kv| kv.mod_revision() == rev(tr.header())));
    assert_eq!(all.count(), 2);
}

/// etcd 3.4 takes a from-key delete's end (`"\0"`) literally when it looks for a key both
/// put and deleted in one transaction, so it runs a put and a from-key delete over the same
/// keys together, in order; so must Keel, with the same result, revisions and versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_from_key_delete_and_puts_of_the_same_keys_in_one_transaction() {
    let keel = Member::single(Flavor::Keel);
    let etcd = Member::single(Flavor::Etcd);
    let mut answers = Vec::new();
    for m in [&keel, &etcd] {
        let mut c = client(m).await;
        for (k, v) in [("a", "1"), ("b", "1"), ("c", "1")] {
            c.put(k, v, None).await.expect("put");
        }
        let mut out = Vec::new();
        for ops in [
            vec![TxnOp::put("b", "2", None), TxnOp::delete("a", Some(DeleteOptions::new().with_from_key()))],
            vec![
                TxnOp::put("x", "3", None),
                TxnOp::delete("b", Some(DeleteOptions::new().with_from_key())),
                TxnOp::put("y", "4", None),
            ],
            vec![
                TxnOp::delete("a", Some(DeleteOptions::new().with_from_key().with_prev_key())),
                TxnOp::put("a", "5", None),
            ],
        ] {
            let r = c
                .txn(Txn::new().and_then(ops))
                .await
                .map(|r| format!("{} {}", rev(r.header()), txn_ops(r.op_responses())));
            let all = c.get("", Some(GetOptions::new().with_all_keys())).await.expect("get all");
            out.push(format!("{} -> [{}]", r.unwrap_or_else(err), kvs(all.kvs())));
        }
        answers.push(out);
    }
    assert_eq!(answers[0], answers[1], "keel, then etcd");
}

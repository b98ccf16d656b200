//! Request workloads: put, range, txn (compare-and-set), mixed (Kubernetes-like).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use clap::Args;
use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};

use crate::load::{self, LoadOpts};
use crate::report::Summary;

#[derive(Args, Clone, Debug)]
pub struct PutOpts {
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
    /// Distinct keys written (etcd's benchmark defaults to 1).
    #[arg(long, default_value_t = 100_000)]
    pub key_space_size: u64,
    /// Keys in order (0, 1, 2, ...) instead of random over the key space.
    #[arg(long)]
    pub sequential_keys: bool,
}

fn key(n: u64, size: usize) -> Vec<u8> {
    format!("{n:0size$}").into_bytes()
}

pub async fn put(opts: &LoadOpts, p: &PutOpts) -> anyhow::Result<Summary> {
    let value = Arc::new(vec![b'v'; p.val_size]);
    let p = p.clone();
    load::run("put", opts, move |mut c, n| {
        let k = if p.sequential_keys { n % p.key_space_size } else { rand::random::<u64>() % p.key_space_size };
        let (k, v) = (key(k, p.key_size), value.as_ref().clone());
        async move {
            c.put(k, v, None).await?;
            Ok(())
        }
    })
    .await
}

#[derive(Args, Clone, Debug)]
pub struct RangeOpts {
    /// Keys returned by each range (written first under the prefix `range/`).
    #[arg(long, default_value_t = 1)]
    pub keys: u64,
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
    /// `l` (linearizable) or `s` (serializable).
    #[arg(long, default_value = "l")]
    pub consistency: String,
}

pub async fn range(opts: &LoadOpts, r: &RangeOpts) -> anyhow::Result<Summary> {
    let mut c = load::connect(opts).await?.remove(0);
    for i in 0..r.keys {
        c.put(format!("range/{i:08}"), vec![b'v'; r.val_size], None).await?;
    }
    let serializable = r.consistency == "s";
    let name = format!("range ({} keys, {})", r.keys, if serializable { "serializable" } else { "linearizable" });
    load::run(&name, opts, move |mut c, _| async move {
        let mut o = GetOptions::new().with_prefix();
        if serializable {
            o = o.with_serializable();
        }
        c.get("range/", Some(o)).await?;
        Ok(())
    })
    .await
}

#[derive(Args, Clone, Debug)]
pub struct TxnOpts {
    /// Keys the compare-and-set transactions contend on.
    #[arg(long, default_value_t = 1000)]
    pub keys: usize,
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
}

/// One compare-and-set: `if mod_revision(key) == last seen then put else get`.
async fn cas(c: &mut etcd_client::Client, key: String, seen: &AtomicI64, value: Vec<u8>) -> anyhow::Result<bool> {
    let last = seen.load(Ordering::Relaxed);
    let t = Txn::new()
        .when([Compare::mod_revision(key.clone(), CompareOp::Equal, last)])
        .and_then([TxnOp::put(key.clone(), value, None)])
        .or_else([TxnOp::get(key, None)]);
    let r = c.txn(t).await?;
    if r.succeeded() {
        seen.store(r.header().map_or(0, |h| h.revision()), Ordering::Relaxed);
    } else if let Some(TxnOpResponse::Get(g)) = r.op_responses().into_iter().next() {
        seen.store(g.kvs().first().map_or(0, |kv| kv.mod_revision()), Ordering::Relaxed);
    }
    Ok(r.succeeded())
}

pub async fn txn(opts: &LoadOpts, t: &TxnOpts) -> anyhow::Result<Summary> {
    let seen: Arc<Vec<AtomicI64>> = Arc::new((0..t.keys).map(|_| AtomicI64::new(0)).collect());
    let value = Arc::new(vec![b'v'; t.val_size]);
    let keys = t.keys.max(1);
    load::run("txn (compare-and-set)", opts, move |mut c, n| {
        let (seen, value) = (seen.clone(), value.clone());
        async move {
            let i = (n as usize).wrapping_mul(2_654_435_761) % keys;
            cas(&mut c, format!("txn/{i:06}"), &seen[i], value.as_ref().clone()).await?;
            Ok(())
        }
    })
    .await
}

#[derive(Args, Clone, Debug)]
pub struct MixedOpts {
    /// Objects under `/registry/pods/default/`.
    #[arg(long, default_value_t = 1000)]
    pub objects: usize,
    #[arg(long, default_value_t = 1024)]
    pub object_size: usize,
    /// Watch streams on the prefix (informers), read but not measured.
    #[arg(long, default_value_t = 10)]
    pub watchers: usize,
}

/// A Kubernetes-like mix: 80% guarded updates (by mod revision), 10% lists of 500, 10% gets,
/// with informer-style watches on the prefix.
pub async fn mixed(opts: &LoadOpts, m: &MixedOpts) -> anyhow::Result<Summary> {
    let mut c = load::connect(opts).await?.remove(0);
    let prefix = "/registry/pods/default/";
    let seen: Arc<Vec<AtomicI64>> = Arc::new((0..m.objects).map(|_| AtomicI64::new(0)).collect());
    for i in 0..m.objects {
        let r = c.put(format!("{prefix}pod-{i:05}"), vec![b'o'; m.object_size], None).await?;
        seen[i].store(r.header().map_or(0, |h| h.revision()), Ordering::Relaxed);
    }
    let mut informers = Vec::new();
    for _ in 0..m.watchers {
        let mut w = c.watch(prefix, Some(etcd_client::WatchOptions::new().with_prefix())).await?;
        informers.push(tokio::spawn(async move { while let Ok(Some(_)) = w.message().await {} }));
    }
    let (objects, size) = (m.objects.max(1), m.object_size);
    let s = load::run("mixed (k8s-like)", opts, move |mut c, n| {
        let seen = seen.clone();
        async move {
            let i = (n as usize).wrapping_mul(2_654_435_761) % objects;
            match n % 10 {
                0 => {
                    c.get(prefix, Some(GetOptions::new().with_prefix().with_limit(500))).await?;
                }
                1 => {
                    c.get(format!("{prefix}pod-{i:05}"), None).await?;
                }
                _ => {
                    cas(&mut c, format!("{prefix}pod-{i:05}"), &seen[i], vec![b'u'; size]).await?;
                }
            }
            Ok(())
        }
    })
    .await;
    for i in informers {
        i.abort();
    }
    s
}

//! Watches against a real etcd: a seeded random mix of watchers (one key, prefixes, ranges,
//! from-key, all keys, an empty range; start revisions now, past, future and compacted;
//! `prev_kv`; filters; cancels; several watchers on one stream) and writes (puts, deletes,
//! transactions, compactions), run step by step against Keel and etcd. After every step
//! each server must have delivered what a model of the history says each watcher is owed,
//! and every watcher's responses, normalised, must be the same on both.

mod model;
mod ops;
mod side;

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::harness::{rev, Cluster, Flavor, Member};
use model::{draw_watch, Model, Watch};
use ops::{lease_step, write};
use side::Side;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_watches_match_etcd() {
    let keel = Member::single(Flavor::Keel);
    let etcd = Member::single(Flavor::Etcd);
    let sides = [Side::new("keel", &keel, &keel).await, Side::new("etcd", &etcd, &etcd).await];
    run(sides, 0x3a7c_4000, 600, 0).await;
}

/// The same with values of 20 KB: watchers catching up get responses over etcd's fragment
/// limit (`--max-request-bytes` plus 512 KiB), which those that asked for fragments get
/// split where etcd splits them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_watches_of_large_values_match_etcd() {
    let flags = ["--max-request-bytes=65536"];
    let keel = Member::single_with(Flavor::Keel, &flags);
    let etcd = Member::single_with(Flavor::Etcd, &flags);
    let sides = [Side::new("keel", &keel, &keel).await, Side::new("etcd", &etcd, &etcd).await];
    run(sides, 0x3a7c_6000, 300, 20_000).await;
}

/// The same on three-member clusters, writing through the leader and watching on a
/// follower, whose watchers see the writes as it applies them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_watches_on_a_follower_match_etcd() {
    let keel = Cluster::start(Flavor::Keel, 3, &[]);
    let etcd = Cluster::start(Flavor::Etcd, 3, &[]);
    let ends = |c: &Cluster| {
        let l = c.leader();
        (l, (l + 1) % 3)
    };
    let ((kl, kf), (el, ef)) = (ends(&keel), ends(&etcd));
    let sides = [
        Side::new("keel", &keel.members[kl], &keel.members[kf]).await,
        Side::new("etcd", &etcd.members[el], &etcd.members[ef]).await,
    ];
    run(sides, 0x3a7c_5000, 300, 0).await;
}

async fn run(mut sides: [Side; 2], default_seed: u64, steps: usize, pad: usize) {
    let mut model = Model::default();
    for s in &mut sides {
        model.current = rev(s.client.get("probe", None).await.expect("probe").header());
    }
    // Another seed explores another mix: KEEL_WATCH_DIFF_SEED=n.
    let seed = std::env::var("KEEL_WATCH_DIFF_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default_seed);
    let mut rng = StdRng::seed_from_u64(seed);
    for step in 0..steps {
        // The watching member has applied every write so far (a linearizable read waits
        // for that), so a watch from "now" starts where the model says.
        for s in &mut sides {
            s.watch_client.get("probe", None).await.expect("a read on the watching member");
        }
        let live: Vec<usize> = model
            .watches
            .iter()
            .enumerate()
            .filter(|(_, w)| !w.refused && w.cancelled_at.is_none())
            .map(|(i, _)| i)
            .collect();
        let what = match rng.random_range(0..12) {
            // Leases: a key put with one, and a lease revoked, which deletes its keys.
            11 => {
                let seed = rng.random();
                let mut results = Vec::new();
                for s in &mut sides {
                    results.push(lease_step(&mut s.client, seed, &model.lease_of, pad).await);
                }
                let (etcd_result, keel_result) = (results.pop().expect("etcd"), results.pop().expect("keel"));
                assert_eq!(keel_result.0, etcd_result.0, "step {step}: the lease step's result differs");
                let (what, changes, lease) = etcd_result;
                for (at, key, put) in &changes {
                    model.current = *at;
                    if *put {
                        model.lease_of.insert(key.clone(), lease);
                    } else {
                        model.lease_of.remove(key);
                    }
                }
                model.history.extend(changes);
                what
            }
            0..=2 => {
                let mut w = draw_watch(&mut rng, &model);
                w.fragment = pad > 0 && rng.random_bool(0.7);
                for s in &mut sides {
                    s.create(&w).await;
                }
                w.record(&mut model);
                // Whether a chosen id is taken is etcd's to say; Keel must then agree.
                let wi = model.watches.len() - 1;
                model.watches[wi].refused = sides[1].refused(&model, wi).await;
                format!("watch {:?} from {} prev_kv {} filter {:?}", w.sel, w.start, w.prev_kv, w.filter)
            }
            // A progress request: etcd 3.4.23 answers at once; Keel (as etcd since 3.4.24)
            // once every watcher on the stream has caught up, here at the same revision.
            10 if !model.creates.is_empty() => {
                let stream = rng.random_range(0..model.creates.len());
                for s in &mut sides {
                    s.senders[stream].request_progress().await.expect("send a progress request");
                }
                model.progress[stream] += 1;
                format!("progress on stream {stream}")
            }
            3 if !live.is_empty() => {
                let wi = live[rng.random_range(0..live.len())];
                let stream = model.watches[wi].stream;
                for s in &mut sides {
                    let id = s.id_of(&model, wi).expect("the watcher was created");
                    s.senders[stream].cancel(id).await.expect("send a cancel request");
                }
                model.watches[wi].cancelled_at = Some(model.current);
                format!("cancel watch {wi}")
            }
            _ => {
                let seed = rng.random();
                let mut results = Vec::new();
                for s in &mut sides {
                    results.push(write(&mut s.client, seed, model.compact_max(), model.compacted, pad).await);
                }
                let (etcd_result, keel_result) = (results.pop().expect("etcd"), results.pop().expect("keel"));
                assert_eq!(keel_result.0, etcd_result.0, "step {step}: the write's result differs");
                if let Some(&(at, _, _)) = etcd_result.1.last() {
                    model.current = at;
                }
                for (_, key, put) in &etcd_result.1 {
                    if *put {
                        model.lease_of.insert(key.clone(), 0);
                    } else {
                        model.lease_of.remove(key);
                    }
                }
                model.history.extend(etcd_result.1);
                if let Some(c) = etcd_result.2 {
                    model.compacted = c;
                }
                etcd_result.0
            }
        };
        if std::env::var_os("KEEL_DIFF_SHOW").is_some() {
            eprintln!("step {step}: {what}");
        }
        for s in &mut sides {
            s.settle(&model, step).await;
        }
        if step % 10 == 9 || step == steps - 1 {
            let (k, e) = (sides[0].transcripts(&model), sides[1].transcripts(&model));
            for (i, (a, b)) in k.iter().zip(&e).enumerate() {
                assert_eq!(a, b, "step {step} ({what}): watch {i} differs (left Keel, right etcd)");
            }
            assert_eq!(k.len(), e.len(), "step {step}: responses for unknown watchers");
        }
    }
    let events: usize = model.watches.iter().map(|w| model.owed(w)).sum();
    if pad > 0 {
        // Responses that were fragments: more than one in a row for one watcher at one revision.
        let received = sides[1].received.lock().expect("lock");
        let mut last: HashMap<(usize, i64), i64> = HashMap::new();
        let mut split = 0;
        for (stream, r) in received.iter().filter(|(_, r)| !r.events().is_empty()) {
            let hdr = rev(r.header());
            if last.insert((*stream, r.watch_id()), hdr) == Some(hdr) {
                split += 1;
            }
        }
        let biggest = received
            .iter()
            .map(|(_, r)| {
                r.events()
                    .iter()
                    .map(|e| e.kv().map_or(0, |k| k.value().len()) + e.prev_kv().map_or(0, |k| k.value().len()))
                    .sum::<usize>()
            })
            .max()
            .unwrap_or(0);
        eprintln!(
            "etcd sent {split} responses that continued a fragmented one; the largest held {biggest} B of values"
        );
        assert!(split > 0, "nothing was fragmented: the run does not test fragments");
    }
    let count = |f: fn(&Watch) -> bool| model.watches.iter().filter(|w| f(w)).count();
    eprintln!(
        "{} watchers on {} streams, {events} events, {} progress requests; refused {}, compacted {}, cancelled {}, \
         from the past {}",
        model.watches.len(),
        model.creates.len(),
        model.progress.iter().sum::<usize>(),
        count(|w| w.refused),
        count(|w| w.compacted),
        count(|w| w.cancelled_at.is_some()),
        count(|w| w.past)
    );
    assert!(events > steps, "the run delivered only {events} events: the mix is too thin to mean much");
}

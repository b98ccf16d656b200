//! Crash recovery: SIGKILL a member in the middle of a stream of acknowledged puts, restart
//! it, and check that every acknowledged put is there with the revision it was given.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::Mutex;

use crate::harness::load::{self, writer};
use crate::harness::{client, wait_for, Flavor, Member};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_puts_loses_no_acknowledged_write() {
    kill_during_puts(Member::single(Flavor::Keel), 3, 200).await;
}

/// The applied state reaches disk only when RocksDB flushes it (the Raft log is its
/// write-ahead log), and the log is purged behind snapshots: with a snapshot every 20
/// entries, each kill lands after purges, and the restart must replay exactly the entries
/// between the last flushed state and the log's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_after_snapshots_and_purges_loses_no_acknowledged_write() {
    let m = kill_during_puts(Member::single_with(Flavor::Keel, &["--snapshot-count=20"]), 3, 600).await;
    // Snapshots were taken (each keeps 20 entries; the log is purged 256 at a time behind them).
    let taken = m.log_text().matches("snapshot taken").count();
    assert!(taken >= 2, "{taken} snapshots taken:\n{}", m.log_tail());
}

/// Rounds of: four writers put until `per_round` more puts are acknowledged, SIGKILL at a
/// random moment, restart, check every acknowledged put. Returns the member, still running.
async fn kill_during_puts(mut m: Member, rounds: usize, per_round: usize) -> Member {
    let acked: load::Log = Arc::new(Mutex::new(Vec::new()));
    for round in 0..rounds {
        let before = acked.lock().await.len();
        let writers: Vec<_> = (0..4)
            .map(|w| tokio::spawn(writer(vec![m.client_url()], round * 10 + w, acked.clone(), true, usize::MAX)))
            .collect();
        // Let a few hundred puts be acknowledged, then kill at a random point in the stream.
        let target = before + per_round;
        let probe = acked.clone();
        tokio::task::spawn_blocking(move || {
            wait_for("acknowledged puts", Duration::from_secs(60), || {
                (probe.blocking_lock().len() >= target).then_some(())
            })
        })
        .await
        .expect("wait");
        let jitter = rand::rng().random_range(0..30);
        tokio::time::sleep(Duration::from_millis(jitter)).await;
        m.kill();
        for w in writers {
            let _ = w.await;
        }
        tokio::task::block_in_place(|| m.restart());

        let mut c = client(&m).await;
        if let Err(e) = load::verify(&mut c, &acked, false).await {
            panic!("after kill round {round}: {e}");
        }
        let max_rev = acked.lock().await.iter().map(|a| a.revision).max().unwrap_or(0);
        let now = c.get("probe", None).await.expect("get").header().map_or(0, |h| h.revision());
        assert!(now >= max_rev, "store revision {now} went behind acknowledged {max_rev}");
    }
    m
}

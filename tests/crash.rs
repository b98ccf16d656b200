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
    let mut m = Member::single(Flavor::Keel);
    let acked: load::Log = Arc::new(Mutex::new(Vec::new()));
    for round in 0..3 {
        let before = acked.lock().await.len();
        let writers: Vec<_> = (0..4)
            .map(|w| tokio::spawn(writer(vec![m.client_url()], round * 10 + w, acked.clone(), true, usize::MAX)))
            .collect();
        // Let a few hundred puts be acknowledged, then kill at a random point in the stream.
        let target = before + 200;
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
}

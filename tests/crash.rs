//! Crash recovery: SIGKILL a member in the middle of a stream of acknowledged puts, restart
//! it, and check that every acknowledged put is there with the revision it was given.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::Mutex;

use crate::harness::{client, wait_for, Flavor, Member};

#[derive(Clone, Debug)]
struct Acked {
    key: String,
    value: String,
    revision: i64,
}

async fn writer(m_url: String, id: usize, acked: Arc<Mutex<Vec<Acked>>>) {
    let Ok(mut c) = etcd_client::Client::connect([m_url], None).await else { return };
    for i in 0.. {
        let (key, value) = (format!("w{id}/{i:06}"), format!("value-{id}-{i}"));
        match c.put(key.clone(), value.clone(), None).await {
            Ok(r) => {
                let revision = r.header().map_or(0, |h| h.revision());
                acked.lock().await.push(Acked { key, value, revision });
            }
            Err(_) => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_puts_loses_no_acknowledged_write() {
    let mut m = Member::single(Flavor::Keel);
    let acked = Arc::new(Mutex::new(Vec::new()));
    for round in 0..3 {
        let before = acked.lock().await.len();
        let writers: Vec<_> =
            (0..4).map(|w| tokio::spawn(writer(m.client_url(), round * 10 + w, acked.clone()))).collect();
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
        let all = acked.lock().await.clone();
        let max_rev = all.iter().map(|a| a.revision).max().unwrap_or(0);
        for a in &all {
            let r = c.get(a.key.clone(), None).await.expect("get after restart");
            let kv = r.kvs().first().unwrap_or_else(|| panic!("acknowledged {} lost after kill round {round}", a.key));
            assert_eq!(kv.value_str().ok(), Some(a.value.as_str()), "{}", a.key);
            assert_eq!(kv.mod_revision(), a.revision, "{} revision changed", a.key);
        }
        let now = c.get("probe", None).await.expect("get").header().map_or(0, |h| h.revision());
        assert!(now >= max_rev, "store revision {now} went behind acknowledged {max_rev}");
    }
}

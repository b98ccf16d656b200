//! A write load for fault tests: writers put unique keys and record every acknowledged
//! put with its revision, so a test can check afterwards that none was lost.

use std::sync::Arc;

use tokio::sync::Mutex;

#[derive(Clone, Debug)]
pub struct Acked {
    pub key: String,
    pub value: String,
    pub revision: i64,
}

pub type Log = Arc<Mutex<Vec<Acked>>>;

/// Puts `w<id>/<n>` keys through `endpoints` until a put fails (or `stop_on_error` is
/// false, in which case it keeps going until `limit` puts were acknowledged).
pub async fn writer(endpoints: Vec<String>, id: usize, log: Log, stop_on_error: bool, limit: usize) {
    let Ok(mut c) = etcd_client::Client::connect(endpoints, None).await else { return };
    let mut acked = 0;
    for i in 0.. {
        if acked >= limit {
            return;
        }
        let (key, value) = (format!("w{id}/{i:06}"), format!("value-{id}-{i}"));
        match c.put(key.clone(), value.clone(), None).await {
            Ok(r) => {
                acked += 1;
                let revision = r.header().map_or(0, |h| h.revision());
                log.lock().await.push(Acked { key, value, revision });
            }
            Err(_) if stop_on_error => return,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
}

/// Checks every acknowledged put through `c` (values and revisions).
pub async fn verify(c: &mut etcd_client::Client, log: &Log, serializable: bool) -> Result<(), String> {
    let all = log.lock().await.clone();
    for a in &all {
        let opts = serializable.then(|| etcd_client::GetOptions::new().with_serializable());
        let r = c.get(a.key.clone(), opts).await.map_err(|e| format!("get {}: {e}", a.key))?;
        let kv = r.kvs().first().ok_or_else(|| format!("acknowledged {} is missing", a.key))?;
        if kv.value_str().ok() != Some(a.value.as_str()) || kv.mod_revision() != a.revision {
            return Err(format!(
                "{}: got {:?}@{}, acknowledged {}@{}",
                a.key,
                kv.value_str(),
                kv.mod_revision(),
                a.value,
                a.revision
            ));
        }
    }
    Ok(())
}

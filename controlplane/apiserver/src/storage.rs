//! Objects in the store, kube-apiserver's way: JSON under `<prefix>/<resource>/[<ns>/]<name>`,
//! `resourceVersion` is the key's mod_revision, and every write is a Txn guarded on it.

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse, WatchOptions};
use serde_json::Value;

use crate::status::{ApiError, ApiResult};

/// An object read from the store with the revision it was last written at.
#[derive(Debug, Clone)]
pub struct Stored {
    pub object: Value,
    pub revision: i64,
}

#[derive(Debug)]
pub struct Page {
    pub items: Vec<Stored>,
    /// The store revision the list was read at.
    pub revision: i64,
    /// The key to continue from, when `limit` cut the list short.
    pub next_key: Option<Vec<u8>>,
    pub remaining: i64,
}

/// The outcome of a guarded write that lost its guard: what is there now, if anything.
#[derive(Debug)]
pub enum WriteError {
    Changed(Option<Stored>),
    Api(ApiError),
}

impl From<etcd_client::Error> for WriteError {
    fn from(e: etcd_client::Error) -> WriteError {
        WriteError::Api(e.into())
    }
}

#[derive(Clone)]
pub struct Storage {
    client: etcd_client::Client,
}

/// The end of the key range that holds every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

pub fn decode(kv: &etcd_client::KeyValue) -> ApiResult<Stored> {
    let mut object: Value = serde_json::from_slice(kv.value())
        .map_err(|e| ApiError::internal(format!("stored object at {:?} is not JSON: {e}", kv.key_str())))?;
    set_resource_version(&mut object, kv.mod_revision());
    Ok(Stored { object, revision: kv.mod_revision() })
}

pub fn set_resource_version(object: &mut Value, rev: i64) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".to_string(), Value::String(rev.to_string()));
    }
}

/// The bytes stored for an object: it without its resourceVersion (the key's revision is).
pub fn encode(object: &Value) -> ApiResult<Vec<u8>> {
    let mut v = object.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&v).map_err(|e| ApiError::internal(e.to_string()))
}

/// How to reach `https` store URLs (kube-apiserver's `--etcd-cafile`, `--etcd-certfile`,
/// `--etcd-keyfile`): the authority to trust, and a client certificate and key to present.
#[derive(Clone, Debug, Default)]
pub struct StoreTls {
    pub ca: Option<std::path::PathBuf>,
    pub identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl StoreTls {
    fn options(&self) -> anyhow::Result<Option<etcd_client::TlsOptions>> {
        use anyhow::Context as _;
        if self.ca.is_none() && self.identity.is_none() {
            return Ok(None);
        }
        let read = |p: &std::path::Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
        let mut tls = etcd_client::TlsOptions::new();
        if let Some(ca) = &self.ca {
            tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
        }
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
        }
        Ok(Some(tls))
    }
}

impl Storage {
    pub async fn connect(endpoints: &[String], tls: &StoreTls) -> anyhow::Result<Storage> {
        let mut opts = etcd_client::ConnectOptions::new()
            .with_keep_alive(std::time::Duration::from_secs(10), std::time::Duration::from_secs(5))
            .with_connect_timeout(std::time::Duration::from_secs(5));
        if let Some(t) = tls.options()? {
            opts = opts.with_tls(t);
        }
        let client = etcd_client::Client::connect(endpoints, Some(opts)).await?;
        Ok(Storage { client })
    }

    pub fn client(&self) -> etcd_client::Client {
        self.client.clone()
    }

    pub async fn get(&self, key: &str) -> ApiResult<Option<Stored>> {
        let resp = self.client.kv_client().get(key, None).await?;
        resp.kvs().first().map(decode).transpose()
    }

    /// The store's current revision (a quorum read).
    pub async fn revision(&self) -> ApiResult<i64> {
        let resp = self.client.kv_client().get("/", Some(GetOptions::new().with_count_only())).await?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// Up to `limit` objects (0 = all) under `prefix` from `start` on, read at `revision` (0 =
    /// latest).
    pub async fn list(&self, prefix: &str, start: Option<Vec<u8>>, limit: i64, revision: i64) -> ApiResult<Page> {
        let end = prefix_end(prefix.as_bytes());
        let from = start.unwrap_or_else(|| prefix.as_bytes().to_vec());
        let mut opts = GetOptions::new().with_range(end).with_revision(revision);
        if limit > 0 {
            opts = opts.with_limit(limit);
        }
        let resp = self.client.kv_client().get(from, Some(opts)).await?;
        let items = resp.kvs().iter().map(decode).collect::<ApiResult<Vec<_>>>()?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let next_key = if resp.more() {
            resp.kvs().last().map(|kv| {
                let mut k = kv.key().to_vec();
                k.push(0);
                k
            })
        } else {
            None
        };
        let remaining = if resp.more() { resp.count() - items.len() as i64 } else { 0 };
        Ok(Page { items, revision, next_key, remaining })
    }

    /// Creates `key` if it does not exist; returns the new revision.
    pub async fn create(&self, key: &str, object: &Value) -> Result<i64, WriteError> {
        let bytes = encode(object).map_err(WriteError::Api)?;
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, bytes, None)])
            .or_else([TxnOp::get(key, None)]);
        self.guarded(txn).await
    }

    /// Replaces `key` if it is still at `expected`; returns the new revision.
    pub async fn update(&self, key: &str, expected: i64, object: &Value) -> Result<i64, WriteError> {
        let bytes = encode(object).map_err(WriteError::Api)?;
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
            .and_then([TxnOp::put(key, bytes, None)])
            .or_else([TxnOp::get(key, None)]);
        self.guarded(txn).await
    }

    /// Deletes `key` if it is still at `expected`; returns the deletion's revision.
    pub async fn delete(&self, key: &str, expected: i64) -> Result<i64, WriteError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
            .and_then([TxnOp::delete(key, None)])
            .or_else([TxnOp::get(key, None)]);
        self.guarded(txn).await
    }

    async fn guarded(&self, txn: Txn) -> Result<i64, WriteError> {
        let resp = self.client.kv_client().txn(txn).await?;
        let rev = resp.header().map_or(0, |h| h.revision());
        if resp.succeeded() {
            return Ok(rev);
        }
        let current = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(g) => g.kvs().first().map(decode),
            _ => None,
        });
        Err(WriteError::Changed(current.transpose().map_err(WriteError::Api)?))
    }

    /// A watch of every key under `prefix` from revision `from` on, with previous values.
    pub async fn watch(&self, prefix: &str, from: i64) -> ApiResult<etcd_client::WatchStream> {
        let opts = WatchOptions::new()
            .with_range(prefix_end(prefix.as_bytes()))
            .with_start_revision(from)
            .with_prev_key()
            .with_progress_notify();
        Ok(self.client.watch_client().watch(prefix, Some(opts)).await?)
    }
}

//! Namespace deletion. Deleting a namespace marks it Terminating; this task then deletes
//! everything in it and removes the `kubernetes` finalizer, after which the namespace goes.
//! Kubernetes does this in the controller manager's namespace controller; it lives here
//! until Keel's controller manager exists, and any API server finishing it is fine because
//! every step is a guarded write that is idempotent.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::resources::{self, RESOURCES};
use crate::server::{self, Api, Target};
use crate::status::ApiResult;
use crate::storage::WriteError;

pub async fn run(api: Arc<Api>, mut rx: UnboundedReceiver<String>) {
    // Namespaces left Terminating by a previous run are finished first.
    if let Err(e) = resume(&api).await {
        tracing::warn!("namespace lifecycle: {}", e.message);
    }
    while let Some(ns) = rx.recv().await {
        for attempt in 0..10u32 {
            match finalize(&api, &ns).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(namespace = %ns, "namespace cleanup failed (attempt {attempt}): {}", e.message);
                    tokio::time::sleep(Duration::from_millis(200 << attempt.min(5))).await;
                }
            }
        }
    }
}

async fn resume(api: &Api) -> ApiResult<()> {
    let Some(nsrt) = resources::find("", "v1", "namespaces") else { return Ok(()) };
    let page = api.storage.list(&api.collection_key(nsrt, None), None, 0, 0).await?;
    for ns in page.items {
        if ns.object.pointer("/metadata/deletionTimestamp").is_some() {
            finalize(api, crate::objects::name_of(&ns.object)).await?;
        }
    }
    Ok(())
}

async fn finalize(api: &Api, ns: &str) -> ApiResult<()> {
    let no_query = server::Query::new();
    for rt in RESOURCES.iter().filter(|r| r.namespaced) {
        let page = api.storage.list(&api.collection_key(rt, Some(ns)), None, 0, 0).await?;
        for item in page.items {
            let name = crate::objects::name_of(&item.object).to_string();
            let t = Target { rt, namespace: Some(ns.to_string()), name: Some(name.clone()), sub: None };
            let opts = json!({ "gracePeriodSeconds": 0 });
            match crate::registry::delete(api, &t, &name, &opts, &no_query, false).await {
                Ok(_) => {}
                Err(e) if e.reason == "NotFound" => {}
                Err(e) => return Err(e),
            }
        }
    }
    let Some(nsrt) = resources::find("", "v1", "namespaces") else { return Ok(()) };
    let key = api.key(nsrt, None, ns);
    loop {
        let Some(cur) = api.storage.get(&key).await? else { return Ok(()) };
        let mut obj = cur.object.clone();
        if let Some(f) = obj.pointer_mut("/spec/finalizers").and_then(Value::as_array_mut) {
            f.retain(|x| x != "kubernetes");
        }
        let spec_done = obj.pointer("/spec/finalizers").and_then(Value::as_array).is_none_or(Vec::is_empty);
        let meta_done = obj.pointer("/metadata/finalizers").and_then(Value::as_array).is_none_or(Vec::is_empty);
        let result = if spec_done && meta_done {
            api.storage.delete(&key, cur.revision).await
        } else {
            api.storage.update(&key, cur.revision, &obj).await
        };
        match result {
            Ok(_) => return Ok(()),
            Err(WriteError::Changed(_)) => continue,
            Err(WriteError::Api(e)) => return Err(e),
        }
    }
}

//! kube-rs against `keel apiserver`: the watcher a Rust controller runs (list, then watch
//! with bookmarks), resuming across API server restarts, and relisting when the
//! resourceVersion it resumes from has expired (410).

use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt as _;
use serde_json::json;
use tokio::sync::mpsc;

use crate::harness::kube::ApiServer;
use crate::harness::{client, Flavor, Member};

fn kube_client(api: &ApiServer) -> kube::Client {
    let uri: http::Uri = api.url().parse().expect("apiserver URL");
    let mut config = kube::Config::new(uri);
    config.default_namespace = "default".into();
    kube::Client::try_from(config).expect("kube client")
}

fn configmap(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": name },
        "data": { "v": value },
    }))
    .expect("configmap")
}

/// What the watcher reported, flattened: `init`, `apply <name>=<v>`, `done`, `delete <name>`.
fn describe(e: &Event<ConfigMap>) -> String {
    let nv = |cm: &ConfigMap| {
        let v = cm.data.as_ref().and_then(|d| d.get("v")).cloned().unwrap_or_default();
        format!("{}={v}", cm.metadata.name.clone().unwrap_or_default())
    };
    match e {
        Event::Init => "init".into(),
        Event::InitApply(cm) => format!("init-apply {}", nv(cm)),
        Event::InitDone => "done".into(),
        Event::Apply(cm) => format!("apply {}", nv(cm)),
        Event::Delete(cm) => format!("delete {}", nv(cm)),
    }
}

async fn next_matching(rx: &mut mpsc::UnboundedReceiver<String>, want: &str, seen: &mut Vec<String>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) => {
                seen.push(e.clone());
                if e == want {
                    return;
                }
            }
            _ => panic!("watcher never reported {want:?}; it reported {seen:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_resumes_and_relists_when_its_resource_version_expired() {
    let store = Member::single(Flavor::Keel);
    // A tiny watch cache, so a restarted API server cannot serve old resourceVersions.
    let mut a = ApiServer::start(&store.client_url(), &["--default-watch-cache-size=2"]);
    let b = ApiServer::start(&store.client_url(), &[]);
    let cms: Api<ConfigMap> = Api::default_namespaced(kube_client(&a));
    let via_b: Api<ConfigMap> = Api::default_namespaced(kube_client(&b));
    cms.create(&PostParams::default(), &configmap("first", "1")).await.expect("create");

    let (tx, mut rx) = mpsc::unbounded_channel();
    let cfg = watcher::Config::default().timeout(5);
    let watch = tokio::spawn(async move {
        let mut s = std::pin::pin!(watcher(cms, cfg).default_backoff());
        while let Some(e) = s.next().await {
            if let Ok(e) = e {
                if tx.send(describe(&e)).is_err() {
                    return;
                }
            }
        }
    });
    let mut seen = Vec::new();
    next_matching(&mut rx, "init-apply first=1", &mut seen).await;
    next_matching(&mut rx, "done", &mut seen).await;
    via_b.create(&PostParams::default(), &configmap("second", "1")).await.expect("create");
    next_matching(&mut rx, "apply second=1", &mut seen).await;

    // While A is down, the world moves on and the store compacts its history away.
    a.stop();
    for v in 2..6 {
        let patch = kube::api::Patch::Merge(json!({ "data": { "v": v.to_string() } }));
        via_b.patch("second", &kube::api::PatchParams::default(), &patch).await.expect("patch");
    }
    let mut etcd = client(&store).await;
    let rev = etcd.get("x", None).await.expect("get").header().map_or(0, |h| h.revision());
    etcd.compact(rev, None).await.expect("compact");
    a.restart();

    // The watcher's resourceVersion is gone: 410, then a relist with the current state.
    next_matching(&mut rx, "init", &mut seen).await;
    next_matching(&mut rx, "init-apply second=5", &mut seen).await;
    next_matching(&mut rx, "done", &mut seen).await;
    via_b.create(&PostParams::default(), &configmap("third", "1")).await.expect("create");
    next_matching(&mut rx, "apply third=1", &mut seen).await;
    watch.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_watches_get_bookmarks_and_expired_errors() {
    let store = Member::single(Flavor::Keel);
    let api = ApiServer::start(&store.client_url(), &[]);
    let kc = kube_client(&api);
    let cms: Api<ConfigMap> = Api::default_namespaced(kc.clone());
    let secrets: Api<Secret> = Api::default_namespaced(kc);
    let list = cms.list(&ListParams::default()).await.expect("list");
    let rv = list.metadata.resource_version.clone().expect("list resourceVersion");

    // Writes elsewhere move the store on; a bookmark tells the watcher it is caught up.
    let mut stream = cms.watch(&WatchParams::default().timeout(60), &rv).await.expect("watch").boxed();
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}})).expect("secret");
    secrets.create(&PostParams::default(), &secret).await.expect("create secret");
    let bookmark = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(e) = stream.next().await {
            if let Ok(WatchEvent::Bookmark(b)) = e {
                return b.metadata.resource_version;
            }
        }
        String::new()
    })
    .await
    .expect("a bookmark within 30s");
    let bookmark: i64 = bookmark.parse().expect("numeric resourceVersion");
    assert!(bookmark > rv.parse::<i64>().expect("numeric"), "bookmark {bookmark} must be past {rv}");

    // A resourceVersion the store compacted away ends the watch with 410 Expired.
    cms.create(&PostParams::default(), &configmap("c", "1")).await.expect("create");
    let mut etcd = client(&store).await;
    let rev = etcd.get("x", None).await.expect("get").header().map_or(0, |h| h.revision());
    etcd.compact(rev, None).await.expect("compact");
    let mut old = cms.watch(&WatchParams::default(), "1").await.expect("watch").boxed();
    match tokio::time::timeout(Duration::from_secs(30), old.next()).await.expect("an answer") {
        Some(Ok(WatchEvent::Error(e))) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"), "{e:?}");
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
}

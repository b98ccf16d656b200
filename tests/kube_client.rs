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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_servers_are_stateless_and_lists_page_consistently() {
    for flavor in [Flavor::Keel, Flavor::Etcd] {
        two_api_servers(flavor).await;
    }
}

async fn two_api_servers(flavor: Flavor) {
    let store = Member::single(flavor);
    let a = ApiServer::start(&store.client_url(), &[]);
    let b = ApiServer::start(&store.client_url(), &[]);
    let via_a: Api<ConfigMap> = Api::default_namespaced(kube_client(&a));
    let via_b: Api<ConfigMap> = Api::default_namespaced(kube_client(&b));
    for i in 0..7 {
        via_a.create(&PostParams::default(), &configmap(&format!("cm-{i}"), "1")).await.expect("create");
    }
    // A write through one API server is a conflict for a stale write through the other.
    let seen = via_b.get("cm-0").await.expect("get through b");
    let mut changed = seen.clone();
    changed.data = Some([("v".to_string(), "2".to_string())].into());
    via_a.replace("cm-0", &PostParams::default(), &changed).await.expect("replace through a");
    let stale = via_b.replace("cm-0", &PostParams::default(), &changed).await;
    match stale {
        Err(kube::Error::Api(e)) => assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"), "{e:?}"),
        other => panic!("a stale replace must conflict, got {other:?}"),
    }

    // Pages of 3 read at the first page's revision: a create between pages is not seen.
    let first = via_b.list(&ListParams::default().limit(3)).await.expect("page 1");
    assert_eq!(first.items.len(), 3);
    assert_eq!(first.metadata.remaining_item_count, Some(4));
    via_a.create(&PostParams::default(), &configmap("cm-late", "1")).await.expect("create");
    let mut names: Vec<String> = first.items.iter().filter_map(|c| c.metadata.name.clone()).collect();
    let mut token = first.metadata.continue_.clone();
    while let Some(t) = token.filter(|t| !t.is_empty()) {
        let page = via_b.list(&ListParams::default().limit(3).continue_token(&t)).await.expect("next page");
        assert_eq!(page.metadata.resource_version, first.metadata.resource_version);
        names.extend(page.items.iter().filter_map(|c| c.metadata.name.clone()));
        token = page.metadata.continue_.clone();
    }
    let want: Vec<String> = (0..7).map(|i| format!("cm-{i}")).collect();
    assert_eq!(names, want);

    // deletecollection with a label selector removes only what it selects.
    let labelled: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "tagged", "labels": {"x": "y"}}})).expect("cm");
    via_a.create(&PostParams::default(), &labelled).await.expect("create");
    via_b
        .delete_collection(&kube::api::DeleteParams::default(), &ListParams::default().labels("x=y"))
        .await
        .expect("deletecollection");
    let left = via_a.list(&ListParams::default()).await.expect("list");
    assert_eq!(left.items.len(), 8, "only the labelled configmap goes");
}

//! `pods/<name>/log`: as kube-apiserver does it, the API server checks the container, finds
//! the pod's node and the node agent's address on it (`status.addresses` in the preferred
//! order, port `status.daemonEndpoints.kubeletEndpoint.Port`), then streams the node
//! agent's `GET /containerLogs/<namespace>/<pod>/<container>` back to the caller, with the
//! log options passed through. A pod on no node yet has no logs (an empty 200, as
//! kube-apiserver answers).
//!
//! The node agent serves HTTPS. Like kube-apiserver without
//! `--kubelet-certificate-authority`, its certificate is not verified unless that flag
//! names the authority to verify it against.

use std::time::Duration;

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::resources;
use crate::server::{get_object, Api, Query, Target};
use crate::status::{ApiError, ApiResult};

/// kube-apiserver's default `--kubelet-preferred-address-types`.
pub const DEFAULT_ADDRESS_TYPES: &str = "Hostname,InternalDNS,InternalIP,ExternalDNS,ExternalIP";
/// The node agent's port when a node does not report one.
pub const DEFAULT_KUBELET_PORT: i64 = 10250;

/// How the API server reaches node agents.
#[derive(Clone)]
pub struct Kubelets {
    http: reqwest::Client,
    address_types: Vec<String>,
}

impl Kubelets {
    /// `ca`: a PEM file to verify node agents' certificates against (unverified without).
    pub fn new(address_types: &str, ca: Option<&std::path::Path>) -> anyhow::Result<Kubelets> {
        let mut b = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).tcp_nodelay(true);
        b = match ca {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    anyhow::anyhow!("cannot read --kubelet-certificate-authority {}: {e}", path.display())
                })?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| anyhow::anyhow!("--kubelet-certificate-authority {}: {e}", path.display()))?;
                certs.into_iter().fold(b.tls_built_in_root_certs(false), |b, c| b.add_root_certificate(c))
            }
            None => b.danger_accept_invalid_certs(true),
        };
        let address_types = address_types.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        Ok(Kubelets { http: b.build()?, address_types })
    }
}

/// The container to read: the one named, or the pod's only container (kube-apiserver's
/// rules and messages).
fn container_of(pod: &Value, name: &str, wanted: Option<&str>) -> ApiResult<String> {
    let names = |field: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
            .collect()
    };
    let main = names("containers");
    let all: Vec<String> =
        names("initContainers").into_iter().chain(main.iter().cloned()).chain(names("ephemeralContainers")).collect();
    match wanted.filter(|w| !w.is_empty()) {
        Some(w) if all.iter().any(|c| c == w) => Ok(w.to_string()),
        Some(w) => Err(ApiError::bad_request(format!("container {w} is not valid for pod {name}"))),
        None if main.len() == 1 => Ok(main[0].clone()),
        None if main.is_empty() => {
            Err(ApiError::bad_request(format!("a container name must be specified for pod {name}")))
        }
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            all.join(" ")
        ))),
    }
}

/// The log options to pass on, checked as kube-apiserver checks PodLogOptions.
fn log_params(q: &Query) -> ApiResult<Vec<(&'static str, String)>> {
    let mut out = Vec::new();
    for flag in ["follow", "previous", "timestamps"] {
        if q.get(flag).is_some_and(|v| v == "true" || v == "1") {
            out.push((flag, "true".to_string()));
        }
    }
    for (field, min) in [("sinceSeconds", 1), ("tailLines", 0), ("limitBytes", 1)] {
        if let Some(v) = q.get(field) {
            let n: i64 = v
                .parse()
                .map_err(|_| ApiError::bad_request(format!("{field}: Invalid value: \"{v}\": must be an integer")))?;
            if n < min {
                let what = if min == 0 { "must be greater than or equal to 0" } else { "must be greater than 0" };
                return Err(ApiError::unprocessable(format!(
                    "PodLogOptions \"\" is invalid: {field}: Invalid value: {n}: {what}"
                )));
            }
            out.push((field, n.to_string()));
        }
    }
    if let Some(t) = q.get("sinceTime") {
        if q.contains_key("sinceSeconds") {
            return Err(ApiError::unprocessable(
                "PodLogOptions \"\" is invalid: []: Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified",
            ));
        }
        let parsed: jiff::Timestamp =
            t.parse().map_err(|_| ApiError::bad_request(format!("sinceTime: Invalid value: \"{t}\"")))?;
        out.push(("sinceTime", parsed.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()));
    }
    // In key order, as Go's url.Values encodes them.
    out.sort_by_key(|(k, _)| *k);
    Ok(out)
}

/// Where the node agent of `node` listens: its preferred address and its port.
fn kubelet_address(node: &Value, name: &str, types: &[String]) -> ApiResult<(String, i64)> {
    let addresses: Vec<(&str, &str)> = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| Some((a.get("type")?.as_str()?, a.get("address")?.as_str()?)))
        .collect();
    let host = types
        .iter()
        .find_map(|t| addresses.iter().find(|(at, _)| at == t).map(|(_, a)| a.to_string()))
        .ok_or_else(|| {
            let known: Vec<String> = addresses.iter().map(|(t, a)| format!("{{{t} {a}}}")).collect();
            ApiError::internal(format!(
                "no preferred addresses found for node {name}; known addresses: [{}]",
                known.join(" ")
            ))
        })?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_i64)
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Ok((host, port))
}

pub async fn serve(api: &Api, t: &Target, name: &str, q: &Query) -> ApiResult<Response> {
    let pod = get_object(api, t, name).await?.object;
    let container = container_of(&pod, name, q.get("container").map(String::as_str))?;
    let params = log_params(q)?;
    let node_name = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default();
    let text = [(header::CONTENT_TYPE, "text/plain")];
    if node_name.is_empty() {
        return Ok((text, Body::empty()).into_response());
    }
    let nodes = resources::find("", "v1", "nodes").ok_or_else(|| ApiError::internal("nodes are not served"))?;
    let node_target = Target { rt: nodes, namespace: None, name: Some(node_name.to_string()), sub: None };
    let node = get_object(api, &node_target, node_name).await?.object;
    let (host, port) = kubelet_address(&node, node_name, &api.kubelets.address_types)?;
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    let namespace = t.namespace.as_deref().unwrap_or("default");
    let mut url = url::Url::parse(&format!("https://{host}:{port}/"))
        .map_err(|e| ApiError::internal(format!("node {node_name} address {host}:{port}: {e}")))?;
    url.path_segments_mut().map_err(|()| ApiError::internal("node address is not a base URL"))?.extend([
        "containerLogs",
        namespace,
        name,
        &container,
    ]);
    if !params.is_empty() {
        url.query_pairs_mut().extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())));
    }
    let resp = api
        .kubelets
        .http
        .get(url.clone())
        .send()
        .await
        .map_err(|e| ApiError::internal(format!("Get \"{url}\": {}", error_chain(&e))))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        let code =
            axum::http::StatusCode::from_u16(status.as_u16()).unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        return Err(ApiError::relayed(code, body.trim().to_string()));
    }
    Ok((text, Body::from_stream(resp.bytes_stream())).into_response())
}

/// An error with its causes, as Go prints wrapped errors ("...: connection refused").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_container_is_the_named_or_the_only_one() {
        let one = json!({"spec": {"containers": [{"name": "app"}]}});
        assert_eq!(container_of(&one, "p", None).ok(), Some("app".into()));
        let two = json!({"spec": {"initContainers": [{"name": "init"}], "containers": [{"name": "a"}, {"name": "b"}]}});
        assert_eq!(container_of(&two, "p", Some("init")).ok(), Some("init".into()));
        let e = container_of(&two, "p", None).err().map(|e| e.message);
        assert_eq!(e.as_deref(), Some("a container name must be specified for pod p, choose one of: [init a b]"));
        let e = container_of(&two, "p", Some("c")).err().map(|e| e.message);
        assert_eq!(e.as_deref(), Some("container c is not valid for pod p"));
    }

    #[test]
    fn log_options_are_checked_and_passed_on() {
        let q: Query = [("follow", "true"), ("tailLines", "5"), ("timestamps", "false")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(log_params(&q).ok(), Some(vec![("follow", "true".to_string()), ("tailLines", "5".to_string())]));
        let bad: Query = [("tailLines".to_string(), "-1".to_string())].into_iter().collect();
        assert_eq!(log_params(&bad).err().map(|e| e.code.as_u16()), Some(422));
        let both: Query = [("sinceSeconds", "5"), ("sinceTime", "2026-01-01T00:00:00Z")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(log_params(&both).err().map(|e| e.code.as_u16()), Some(422));
    }

    #[test]
    fn the_kubelet_address_follows_the_preferred_types() {
        let types: Vec<String> = DEFAULT_ADDRESS_TYPES.split(',').map(str::to_string).collect();
        let node = json!({"status": {
            "addresses": [{"type": "InternalIP", "address": "10.0.0.5"}, {"type": "Hostname", "address": "n1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10255}},
        }});
        assert_eq!(kubelet_address(&node, "n1", &types).ok(), Some(("n1".into(), 10255)));
        let ip_only = json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.5"}]}});
        assert_eq!(kubelet_address(&ip_only, "n1", &types).ok(), Some(("10.0.0.5".into(), 10250)));
        assert!(kubelet_address(&json!({}), "n1", &types).is_err());
    }
}

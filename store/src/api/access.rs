//! What etcd checks before its HTTP handlers on the client port (its `accessController`):
//!
//! - `--host-whitelist`: over plain HTTP, a request whose `Host` (without its port) is not
//!   listed is refused with 421 and etcd's explanation, against DNS rebinding (CVE-2018-5702).
//! - `--cors`: allowed origins get etcd's CORS headers (all of them, as `*`, by default), and
//!   `OPTIONS` (a browser's preflight) is answered 200 at once, on any path.
//!
//! gRPC calls are not HTTP requests to etcd (its listener hands them to the gRPC server
//! first), so they are not checked.

use std::collections::HashSet;

use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::tls::ClientCert;

/// etcd's answer to a Host it does not know, naming it (with the newline Go's `http.Error`
/// adds).
fn rebinding(host: &str) -> String {
    format!(
        "
etcd received your request, but the Host header was unrecognized.

To fix this, choose one of the following options:
- Enable TLS, then any HTTPS request will be allowed.
- Add the hostname you want to use to the whitelist in settings.
  - e.g. etcd --host-whitelist {host:?}

This requirement has been added to help prevent \"DNS Rebinding\" attacks (CVE-2018-5702).

"
    )
}

#[derive(Clone, Debug, Default)]
pub struct Access {
    /// None: every origin (and `*` is sent).
    origins: Option<HashSet<String>>,
    /// None: every host.
    hosts: Option<HashSet<String>>,
}

/// A list flag's values; None when empty or holding `*` (everything allowed).
fn allow_list(s: &str) -> Option<HashSet<String>> {
    let set: HashSet<String> = s.split(',').map(str::trim).filter(|v| !v.is_empty()).map(String::from).collect();
    (!set.is_empty() && !set.contains("*")).then_some(set)
}

impl Access {
    /// From `--cors` and `--host-whitelist`. Origins are URLs with a port, as etcd requires.
    pub fn new(cors: &str, hosts: &str) -> Result<Access, String> {
        let origins = allow_list(cors);
        for o in origins.iter().flatten() {
            // The port written out (the URL parser drops a scheme's default one).
            let authority = o.split_once("://").map_or("", |(_, rest)| rest.split('/').next().unwrap_or_default());
            let port = authority.rsplit_once(':').map(|(_, p)| p).filter(|p| !p.is_empty() && !p.contains(']'));
            let parsed = url::Url::parse(o).ok().filter(|u| u.host_str().is_some_and(|h| !h.is_empty()));
            if port.is_none_or(|p| p.parse::<u16>().is_err()) || parsed.is_none() {
                return Err(format!(
                    "invalid value {cors:?} for flag --cors: URL address does not have the form \"host:port\": {o}"
                ));
            }
        }
        Ok(Access { origins, hosts: allow_list(hosts) })
    }

    /// The request's host name, if it may not name it.
    fn refused_host(&self, req: &Request) -> Option<String> {
        let hosts = self.hosts.as_ref()?;
        let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).or_else(|| req.uri().host());
        let name = hostname(host.unwrap_or_default());
        (!hosts.contains(name)).then(|| name.to_string())
    }

    /// The origin to allow in the answer, if any.
    fn origin(&self, req: &Request) -> Option<HeaderValue> {
        match &self.origins {
            None => Some(HeaderValue::from_static("*")),
            Some(allowed) => {
                let origin = req.headers().get(header::ORIGIN)?;
                allowed.contains(origin.to_str().ok()?).then(|| origin.clone())
            }
        }
    }
}

/// Go's `SplitHostPort` host, or the whole value when it has no port.
fn hostname(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once("]:") {
            Some((h, _)) => h,
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, _)) if !h.contains(':') => h,
        _ => host,
    }
}

fn is_grpc(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The middleware (see the module's comment).
pub async fn check(access: axum::extract::State<std::sync::Arc<Access>>, req: Request, next: Next) -> Response {
    if is_grpc(&req) {
        return next.run(req).await;
    }
    let tls = req.extensions().get::<axum::extract::ConnectInfo<ClientCert>>().is_some();
    if let Some(host) = access.refused_host(&req).filter(|_| !tls) {
        tracing::warn!(%host, "rejecting HTTP request to prevent DNS rebinding attacks");
        let mut resp = (StatusCode::MISDIRECTED_REQUEST, rebinding(&host)).into_response();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        return resp;
    }
    let origin = access.origin(&req);
    let mut resp = if req.method() == Method::OPTIONS { StatusCode::OK.into_response() } else { next.run(req).await };
    if let Some(origin) = origin {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"));
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("accept, content-type, authorization"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_lose_their_ports_as_go_splits_them() {
        for (host, name) in [
            ("localhost:2379", "localhost"),
            ("localhost", "localhost"),
            ("[::1]:2379", "::1"),
            ("[::1]", "[::1]"),
            ("::1", "::1"),
            ("10.0.0.1:80", "10.0.0.1"),
        ] {
            assert_eq!(hostname(host), name, "{host}");
        }
    }

    #[test]
    fn star_or_nothing_allows_everything() {
        assert!(allow_list("*").is_none());
        assert!(allow_list("").is_none());
        assert!(allow_list("a,*").is_none());
        assert_eq!(allow_list("a, b").map(|s| s.len()), Some(2));
    }

    #[test]
    fn origins_need_a_port() {
        assert!(Access::new("http://a.com:80,https://b.com:8443,http://[::1]:80", "*").is_ok());
        assert!(Access::new("http://[::1]", "*").is_err());
        let e = Access::new("http://a.com", "*").expect_err("no port");
        assert!(e.contains("does not have the form \"host:port\": http://a.com"), "{e}");
    }
}

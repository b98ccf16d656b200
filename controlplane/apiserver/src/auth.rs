//! Authentication by bearer token (`--token-auth-file`, kube-apiserver's static token file:
//! CSV lines `token,user,uid[,"group1,group2"]`) and by client certificate
//! (`--client-ca-file`, see `tls.rs`). With neither flag every request is accepted, as for a
//! plain-HTTP API server on loopback; with either, a request must carry a known token or a
//! verified client certificate. Health and version endpoints are open either way, as
//! kube-apiserver leaves them to anonymous users.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The users the token file names, by token.
#[derive(Debug, Default)]
pub struct Tokens(HashMap<String, String>);

impl Tokens {
    pub fn load(path: &Path) -> anyhow::Result<Tokens> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read token file {}", path.display()))?;
        let mut tokens = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.splitn(3, ',');
            let (Some(token), Some(user)) = (fields.next(), fields.next()) else {
                anyhow::bail!("{}:{}: want token,user,uid[,groups]", path.display(), n + 1);
            };
            let (token, user) = (token.trim(), user.trim());
            anyhow::ensure!(!token.is_empty() && !user.is_empty(), "{}:{}: empty token or user", path.display(), n + 1);
            tokens.insert(token.to_string(), user.to_string());
        }
        anyhow::ensure!(!tokens.is_empty(), "token file {} names no tokens", path.display());
        Ok(Tokens(tokens))
    }

    pub fn user(&self, token: &str) -> Option<&str> {
        self.0.get(token).map(String::as_str)
    }
}

fn open_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz" | "/version")
}

/// How requests may authenticate.
#[derive(Debug, Default)]
pub struct Authn {
    pub tokens: Option<Tokens>,
    /// Client certificates are verified (their user arrives as a request extension).
    pub client_certs: bool,
}

/// Refuses requests with neither a known bearer token nor a verified client certificate,
/// with kube-apiserver's 401 Status.
pub async fn require_auth(State(authn): State<Arc<Authn>>, req: Request, next: Next) -> Response {
    if open_path(req.uri().path()) || (authn.client_certs && req.extensions().get::<crate::tls::ClientUser>().is_some())
    {
        return next.run(req).await;
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match bearer.and_then(|t| authn.tokens.as_ref().and_then(|tokens| tokens.user(t))) {
        Some(_) => next.run(req).await,
        None => (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "message": "Unauthorized", "reason": "Unauthorized", "code": 401,
            })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_parse_like_kube_apiserver() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("keel-tokens-{}", std::process::id()));
        std::fs::write(&dir, "# admins\nsecret1,alice,1,\"system:masters,dev\"\nsecret2,bob,2\n")?;
        let t = Tokens::load(&dir)?;
        assert_eq!(t.user("secret1"), Some("alice"));
        assert_eq!(t.user("secret2"), Some("bob"));
        assert_eq!(t.user("nope"), None);
        std::fs::write(&dir, "only-a-token\n")?;
        assert!(Tokens::load(&dir).is_err());
        std::fs::remove_file(&dir)?;
        Ok(())
    }
}

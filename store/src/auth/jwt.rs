//! etcd's JWT tokens (`--auth-token jwt,pub-key=...,priv-key=...,sign-method=RS256,ttl=5m`):
//! signed, so any member with the public key verifies them without having seen them, and
//! they survive restarts. A token carries its user and the auth revision it was issued at
//! (claims `username`, `revision`, `exp`, as etcd's): after any auth change it is stale
//! ("revision of auth store is old") and the client authenticates again.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// etcd's default token lifetime.
const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);

/// In the order etcd's (Go's sorted map) JSON has them.
#[derive(Serialize, Deserialize)]
struct Claims {
    exp: u64,
    revision: u64,
    username: String,
}

pub struct JwtTokens {
    algorithm: Algorithm,
    /// Absent for a member given only the public key: it verifies, but cannot issue.
    signing: Option<EncodingKey>,
    verifying: DecodingKey,
    ttl: Duration,
}

impl JwtTokens {
    /// From `--auth-token`'s options after `jwt,`: `pub-key`, `priv-key`, `sign-method`,
    /// `ttl` (a Go duration), each at most once.
    pub fn from_options(options: &[(&str, &str)]) -> Result<JwtTokens, String> {
        let mut seen = std::collections::HashMap::new();
        for (k, v) in options {
            if seen.insert(*k, *v).is_some() {
                return Err(format!("--auth-token: {k} given twice"));
            }
            if !matches!(*k, "pub-key" | "priv-key" | "sign-method" | "ttl") {
                return Err(format!("--auth-token: unknown jwt option {k:?}"));
            }
        }
        let method = seen.get("sign-method").ok_or("--auth-token jwt needs sign-method")?;
        let algorithm: Algorithm =
            method.parse().map_err(|_| format!("--auth-token: unsupported sign-method {method:?}"))?;
        let read = |k: &str| -> Result<Option<Vec<u8>>, String> {
            seen.get(k)
                .map(|p| std::fs::read(Path::new(p)).map_err(|e| format!("--auth-token {k}={p}: {e}")))
                .transpose()
        };
        let public = read("pub-key")?.ok_or("--auth-token jwt needs pub-key")?;
        let private = read("priv-key")?;
        let (verifying, signing) = match algorithm {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => (
                DecodingKey::from_rsa_pem(&public).map_err(|e| format!("--auth-token pub-key: {e}"))?,
                private
                    .map(|p| EncodingKey::from_rsa_pem(&p).map_err(|e| format!("--auth-token priv-key: {e}")))
                    .transpose()?,
            ),
            Algorithm::ES256 | Algorithm::ES384 => (
                DecodingKey::from_ec_pem(&public).map_err(|e| format!("--auth-token pub-key: {e}"))?,
                private
                    .map(|p| EncodingKey::from_ec_pem(&p).map_err(|e| format!("--auth-token priv-key: {e}")))
                    .transpose()?,
            ),
            Algorithm::EdDSA => (
                DecodingKey::from_ed_pem(&public).map_err(|e| format!("--auth-token pub-key: {e}"))?,
                private
                    .map(|p| EncodingKey::from_ed_pem(&p).map_err(|e| format!("--auth-token priv-key: {e}")))
                    .transpose()?,
            ),
            other => return Err(format!("--auth-token: unsupported sign-method {other:?}")),
        };
        let ttl = match seen.get("ttl") {
            Some(t) => crate::config::parse_go_duration(t).map_err(|e| format!("--auth-token ttl: {e}"))?,
            None => DEFAULT_TTL,
        };
        Ok(JwtTokens { algorithm, signing, verifying, ttl })
    }

    /// A token for `user` at auth revision `revision`.
    pub fn sign(&self, user: &str, revision: u64) -> Result<String, String> {
        let key = self.signing.as_ref().ok_or("auth: token signing attempted with verify-only key")?;
        let exp = (SystemTime::now() + self.ttl).duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let claims = Claims { exp, revision, username: user.to_string() };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, key).map_err(|e| e.to_string())
    }

    /// The user and auth revision of a valid, unexpired token.
    pub fn verify(&self, token: &str) -> Option<(String, u64)> {
        let mut validation = Validation::new(self.algorithm);
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<Claims>(token, &self.verifying, &validation).ok()?;
        Some((data.claims.username, data.claims.revision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ed25519 key pair from openssl, as an operator would make one.
    fn keys(dir: &Path) -> (String, String) {
        let (private, public) = (dir.join("k.pem"), dir.join("k.pub"));
        for args in [
            vec!["genpkey", "-algorithm", "ed25519", "-out", private.to_str().unwrap_or_default()],
            vec![
                "pkey",
                "-in",
                private.to_str().unwrap_or_default(),
                "-pubout",
                "-out",
                public.to_str().unwrap_or_default(),
            ],
        ] {
            let out = std::process::Command::new("openssl").args(&args).output().expect("openssl");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        (private.display().to_string(), public.display().to_string())
    }

    #[test]
    fn tokens_carry_user_and_revision_and_only_their_key_verifies_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (private, public) = keys(dir.path());
        let opts = [("pub-key", public.as_str()), ("priv-key", private.as_str()), ("sign-method", "EdDSA")];
        let jwt = JwtTokens::from_options(&opts).expect("options");
        let token = jwt.sign("alice", 7).expect("sign");
        assert_eq!(jwt.verify(&token), Some(("alice".to_string(), 7)));
        let mut tampered = token.clone();
        tampered.insert(tampered.len() - 3, 'x');
        assert_eq!(jwt.verify(&tampered), None);

        let other = tempfile::tempdir().expect("tempdir");
        let (private2, public2) = keys(other.path());
        let opts2 = [("pub-key", public2.as_str()), ("priv-key", private2.as_str()), ("sign-method", "EdDSA")];
        assert_eq!(JwtTokens::from_options(&opts2).expect("options").verify(&token), None, "another key");

        let expired =
            [("pub-key", public.as_str()), ("priv-key", private.as_str()), ("sign-method", "EdDSA"), ("ttl", "0s")];
        let short = JwtTokens::from_options(&expired).expect("options");
        let old = short.sign("alice", 7).expect("sign");
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(short.verify(&old), None, "an expired token");

        let verify_only =
            JwtTokens::from_options(&[("pub-key", public.as_str()), ("sign-method", "EdDSA")]).expect("options");
        assert_eq!(verify_only.verify(&token), Some(("alice".to_string(), 7)));
        assert!(verify_only.sign("alice", 7).is_err());
    }

    #[test]
    fn bad_options_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (private, public) = keys(dir.path());
        for bad in [
            vec![("pub-key", public.as_str())],
            vec![("sign-method", "EdDSA")],
            vec![("pub-key", public.as_str()), ("sign-method", "XS256")],
            vec![("pub-key", public.as_str()), ("sign-method", "EdDSA"), ("colour", "red")],
            vec![("pub-key", public.as_str()), ("pub-key", public.as_str()), ("sign-method", "EdDSA")],
            vec![("pub-key", "/nonexistent"), ("sign-method", "EdDSA")],
            vec![("pub-key", private.as_str()), ("sign-method", "RS256")],
        ] {
            assert!(JwtTokens::from_options(&bad).is_err(), "{bad:?}");
        }
    }
}

//! Tokens through the JSON gateway: simple tokens and JWTs, watches refused on a stream.

use super::*;

/// Gateway credentials.
#[derive(Clone, Copy)]
enum Cred {
    None,
    /// The token an authenticate call saved under this name (each server's own).
    Token(&'static str),
    /// This header value as is.
    Raw(&'static str),
    /// "Bearer " and the named token: etcd takes the bare token only.
    Bearer(&'static str),
}

struct Call {
    path: &'static str,
    body: &'static str,
    cred: Cred,
    /// Saves the answer's token under this name.
    save: Option<&'static str>,
    /// Compares the status only (the body of a 404 is the router's).
    status_only: bool,
}

fn call(path: &'static str, body: &'static str, cred: Cred) -> Call {
    Call { path, body, cred, save: None, status_only: false }
}

/// Authenticates, saving the token under the user's name.
fn login(body: &'static str, save: &'static str) -> Call {
    Call { save: Some(save), ..call("/v3/auth/authenticate", body, Cred::None) }
}

/// Ids that differ between two clusters, masked.
fn mask(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if matches!(k.as_str(), "cluster_id" | "member_id" | "raft_term") {
                    *v = Value::String("*".into());
                } else {
                    mask(v);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mask),
        _ => {}
    }
}

/// An etcd 3.4 simple token: 16 random letters, a dot, the raft index of the Authenticate
/// request ("aXZLmKbSmHMJULsU.465").
fn simple_token(t: &str) -> bool {
    t.split_once('.').is_some_and(|(r, n)| {
        r.len() == 16
            && r.chars().all(|c| c.is_ascii_alphabetic())
            && !n.is_empty()
            && n.chars().all(|c| c.is_ascii_digit())
    })
}

/// A JWT's claims.
fn jwt(t: &str) -> Option<Value> {
    let parts: Vec<&str> = t.split('.').collect();
    let [_, claims, _] = parts[..] else { return None };
    serde_json::from_slice(&crate::harness::base64::decode(claims)?).ok()
}

fn header(tokens: &HashMap<&'static str, String>, cred: Cred) -> Option<String> {
    let named = |n: &str| tokens.get(n).cloned().unwrap_or_else(|| panic!("no token saved as {n}"));
    match cred {
        Cred::None => None,
        Cred::Token(n) => Some(named(n)),
        Cred::Raw(t) => Some(t.to_string()),
        Cred::Bearer(n) => Some(format!("Bearer {}", named(n))),
    }
}

async fn gateway(http: &reqwest::Client, m: &Member, tokens: &mut HashMap<&'static str, String>, c: &Call) -> String {
    let mut req = http.post(format!("{}{}", m.client_url(), c.path)).body(c.body);
    if let Some(h) = header(tokens, c.cred) {
        req = req.header("Authorization", h);
    }
    let resp = req.send().await.expect("the request is answered");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("a body");
    if c.status_only {
        return format!("POST {} -> {status}", c.path);
    }
    let mut v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if let Some(t) = v.get("token").and_then(Value::as_str).map(str::to_string) {
        assert!(simple_token(&t) || jwt(&t).is_some(), "{:?} answered the token {t:?}", m.flavor);
        if let Some(name) = c.save {
            tokens.insert(name, t);
        }
        v["token"] = Value::from("TOKEN");
    }
    mask(&mut v);
    format!("POST {} {} -> {status} {v}", c.path, c.body)
}

/// The first `n` lines of a `/v3/watch` stream's answer to `body`.
async fn watch_lines(
    http: &reqwest::Client,
    m: &Member,
    auth: Option<String>,
    body: &'static str,
    n: usize,
) -> Vec<String> {
    let mut req = http.post(format!("{}/v3/watch", m.client_url())).body(body);
    if let Some(h) = auth {
        req = req.header("Authorization", h);
    }
    let mut resp = req.send().await.expect("the watch is answered");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut buf = String::new();
    while buf.matches('\n').count() < n {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(c))) => buf.push_str(&String::from_utf8_lossy(&c)),
            _ => break,
        }
    }
    buf.lines()
        .take(n)
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap_or(Value::String(l.to_string()));
            mask(&mut v);
            v.to_string()
        })
        .collect()
}

async fn gateway_calls(
    http: &reqwest::Client,
    keel: &Member,
    etcd: &Member,
    tokens: &mut [HashMap<&'static str, String>; 2],
    calls: &[Call],
) {
    for (i, c) in calls.iter().enumerate() {
        let k = gateway(http, keel, &mut tokens[0], c).await;
        let e = gateway(http, etcd, &mut tokens[1], c).await;
        assert_eq!(k, e, "gateway call {i}\n--- keel ---\n{k}\n--- etcd ---\n{e}");
    }
}

/// Tokens through the JSON gateway: how they are given (the bare token in the
/// Authorization header), which changes end them (a password change, deleting the user,
/// disabling auth) and which do not (a role's permissions are looked up at each request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_through_the_json_gateway() {
    let mut keel = Side::new(Flavor::Keel);
    let mut etcd = Side::new(Flavor::Etcd);
    run_steps("gateway setup", &mut keel, &mut etcd, &restricted_setup());
    let http = reqwest::Client::new();
    let mut tokens = [HashMap::new(), HashMap::new()];
    const A: &str = r#"{"key":"L2E="}"#; // /a
    const B: &str = r#"{"key":"L2I="}"#; // /b
    use Cred::{Bearer, Raw, Token};
    let calls = [
        login(r#"{"name":"root","password":"rootpw"}"#, "root"),
        // 400, code 3: "etcdserver: authentication failed, invalid user ID or password".
        call("/v3/auth/authenticate", r#"{"name":"root","password":"bad"}"#, Cred::None),
        call("/v3/auth/authenticate", r#"{"name":"nosuch","password":"x"}"#, Cred::None),
        call("/v3/auth/authenticate", "{}", Cred::None),
        call("/v3/kv/range", A, Token("root")),
        // No token: 400, code 3, "etcdserver: user name is empty".
        call("/v3/kv/range", A, Cred::None),
        // A token nobody issued, or with "Bearer ": 401, code 16, "etcdserver: invalid auth token".
        call("/v3/kv/range", A, Raw("bogus")),
        call("/v3/kv/range", A, Bearer("root")),
        call("/v3/auth/user/list", "{}", Token("root")),
        call("/v3/auth/user/list", "{}", Cred::None),
        // The role root answers no permissions; r1's types are enum names ("READWRITE").
        call("/v3/auth/role/get", r#"{"role":"root"}"#, Token("root")),
        call("/v3/auth/role/get", r#"{"role":"r1"}"#, Token("root")),
        call("/v3/auth/user/get", r#"{"name":"alice"}"#, Token("root")),
        login(r#"{"name":"alice","password":"apw"}"#, "alice"),
        call("/v3/kv/range", A, Token("alice")),
        // 403, code 7, "etcdserver: permission denied".
        call("/v3/kv/range", B, Token("alice")),
        call("/v3/auth/user/list", "{}", Token("alice")),
        // The lock and election services act for their caller, as etcd's do (errors as
        // Unknown, code 2): /q is not alice's to write, and a caller without a token is
        // nobody.
        call("/v3/lock/lock", r#"{"name":"L3EvbGs="}"#, Token("alice")),
        call("/v3/lock/lock", r#"{"name":"L3AvbGsy"}"#, Cred::None),
        call("/v3/election/campaign", r#"{"name":"L3EvZQ==","value":"eA=="}"#, Token("alice")),
        call("/v3/election/leader", r#"{"name":"L3AvZQ=="}"#, Token("alice")),
        // A role's permissions are looked up at each request: the token outlives a revoke,
        // and its next request is refused.
        call("/v3/auth/role/revoke", r#"{"role":"r1","key":"L2E="}"#, Token("root")),
        call("/v3/auth/role/revoke", r#"{"role":"r1","key":"L2E="}"#, Token("root")),
        call("/v3/kv/range", A, Token("alice")),
        call("/v3/auth/role/grant", r#"{"name":"r1","perm":{"key":"L2E=","permType":"READ"}}"#, Token("root")),
        call("/v3/kv/range", A, Token("alice")),
        call("/v3/auth/user/revoke", r#"{"name":"alice","role":"r1"}"#, Token("root")),
        call("/v3/kv/range", A, Token("alice")),
        call("/v3/auth/user/grant", r#"{"user":"alice","role":"r1"}"#, Token("root")),
        call("/v3/kv/range", A, Token("alice")),
        // A password change ends the user's tokens, even to the same password: 401.
        call("/v3/auth/user/changepw", r#"{"name":"alice","password":"apw"}"#, Token("root")),
        call("/v3/kv/range", A, Token("alice")),
        login(r#"{"name":"alice","password":"apw"}"#, "alice"),
        call("/v3/kv/range", A, Token("alice")),
        // So does deleting the user; a user added again under the name does not revive them.
        call("/v3/auth/user/add", r#"{"name":"temp","password":"tpw"}"#, Token("root")),
        call("/v3/auth/user/grant", r#"{"user":"temp","role":"r1"}"#, Token("root")),
        login(r#"{"name":"temp","password":"tpw"}"#, "temp"),
        call("/v3/kv/range", A, Token("temp")),
        call("/v3/auth/user/delete", r#"{"name":"temp"}"#, Token("root")),
        call("/v3/kv/range", A, Token("temp")),
        call("/v3/auth/user/add", r#"{"name":"temp","password":"tpw"}"#, Token("root")),
        call("/v3/kv/range", A, Token("temp")),
        // Surprise: an empty password is a password in 3.4, and authenticates.
        call("/v3/auth/user/add", r#"{"name":"carol","password":""}"#, Token("root")),
        call("/v3/auth/authenticate", r#"{"name":"carol","password":""}"#, Cred::None),
        call("/v3/auth/authenticate", r#"{"name":"carol","password":"x"}"#, Cred::None),
        // A no-password user never authenticates: 500, code 2 (Unknown), "auth:
        // authentication failed, password was given for no password user".
        call("/v3/auth/user/add", r#"{"name":"nopw","options":{"no_password":true}}"#, Token("root")),
        call("/v3/auth/authenticate", r#"{"name":"nopw","password":""}"#, Cred::None),
        call("/v3/auth/authenticate", r#"{"name":"nopw","password":"x"}"#, Cred::None),
        // Without a token or without the role root, no user management.
        call("/v3/auth/user/changepw", r#"{"name":"alice","password":"apw"}"#, Cred::None),
        call("/v3/auth/user/changepw", r#"{"name":"alice","password":"apw"}"#, Token("alice")),
    ];
    gateway_calls(&http, &keel.member, &etcd.member, &mut tokens, &calls).await;

    // etcd 3.4 has no AuthStatus (404); Keel serves it, as etcd 3.5 does (Keel reports 3.5).
    let status = Call { status_only: true, ..call("/v3/auth/status", "{}", Token("root")) };
    assert_eq!(gateway(&http, &etcd.member, &mut tokens[1], &status).await, "POST /v3/auth/status -> 404");
    let status = call("/v3/auth/status", "{}", Token("root"));
    let k = gateway(&http, &keel.member, &mut tokens[0], &status).await;
    assert!(k.contains(r#"-> 200 {"authRevision":"#) && k.contains(r#""enabled":true"#), "{k}");

    // Watches on one stream, as alice: a refused create is answered created and canceled,
    // watch id -1, the status as cancel reason ("rpc error: code = PermissionDenied desc =
    // etcdserver: permission denied"); it takes no id, and the stream goes on (ids 0, 1 for
    // the two allowed ones; 0 is omitted from the JSON).
    let body = r#"{"create_request":{"key":"L2I="}} {"create_request":{"key":"L2E="}} {"create_request":{"key":"L2I="}} {"create_request":{"key":"L2E="}}"#;
    let k = watch_lines(&http, &keel.member, header(&tokens[0], Token("alice")), body, 4).await;
    let e = watch_lines(&http, &etcd.member, header(&tokens[1], Token("alice")), body, 4).await;
    assert_eq!(k, e, "alice's watch stream");
    // Without a token (InvalidArgument, "user name is empty"), with a bogus one
    // (Unauthenticated, "invalid auth token"): the same, on an HTTP 200 stream.
    let one = r#"{"create_request":{"key":"L2E="}}"#;
    for auth in [None, Some("bogus".to_string())] {
        let k = watch_lines(&http, &keel.member, auth.clone(), one, 1).await;
        let e = watch_lines(&http, &etcd.member, auth.clone(), one, 1).await;
        assert_eq!(k, e, "a watch with authorization {auth:?}");
    }

    let calls = [
        // Only root disables.
        call("/v3/auth/disable", "{}", Token("alice")),
        call("/v3/auth/disable", "{}", Token("root")),
        // Surprise: while auth is disabled every token is refused as invalid (401), even one
        // that was good a moment ago; no token is fine.
        call("/v3/kv/range", A, Token("alice")),
        call("/v3/kv/range", A, Token("root")),
        call("/v3/kv/range", A, Raw("bogus")),
        call("/v3/kv/range", A, Cred::None),
        // 412, code 9: "etcdserver: authentication is not enabled".
        call("/v3/auth/authenticate", r#"{"name":"root","password":"rootpw"}"#, Cred::None),
        call("/v3/auth/enable", "{}", Cred::None),
        // Enabling again does not revive the old tokens.
        call("/v3/kv/range", A, Token("root")),
        call("/v3/kv/range", A, Token("alice")),
        call("/v3/kv/range", A, Cred::None),
        login(r#"{"name":"root","password":"rootpw"}"#, "root"),
        call("/v3/kv/range", A, Token("root")),
    ];
    gateway_calls(&http, &keel.member, &etcd.member, &mut tokens, &calls).await;
}

/// JWT tokens (`--auth-token jwt,...`, the same key pair for both): etcd's claims, a token
/// stale after any auth change ("revision of auth store is old", 400) until the user
/// authenticates again, and, being signed rather than remembered, valid after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_tokens() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (private, public) = (dir.path().join("jwt.key"), dir.path().join("jwt.pub"));
    for args in [
        vec!["genrsa".to_string(), "-out".into(), private.display().to_string(), "2048".into()],
        vec![
            "rsa".into(),
            "-in".into(),
            private.display().to_string(),
            "-pubout".into(),
            "-out".into(),
            public.display().to_string(),
        ],
    ] {
        let out = Command::new("openssl").args(&args).output().expect("openssl");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let flag = format!(
        "--auth-token=jwt,pub-key={},priv-key={},sign-method=RS256,ttl=10m",
        public.display(),
        private.display()
    );
    let (mut keel, mut etcd) = tokio::task::block_in_place(|| {
        let mut keel = Side::with_flags(Flavor::Keel, &[&flag]);
        let mut etcd = Side::with_flags(Flavor::Etcd, &[&flag]);
        run_steps("jwt setup", &mut keel, &mut etcd, &restricted_setup());
        (keel, etcd)
    });
    let http = reqwest::Client::new();
    let mut tokens = [HashMap::new(), HashMap::new()];
    const P: &str = r#"{"key":"L3AvYQ=="}"#; // /p/a
    use Cred::Token;
    let calls = [
        login(r#"{"name":"alice","password":"apw"}"#, "alice"),
        call("/v3/kv/range", P, Token("alice")),
        call("/v3/kv/put", r#"{"key":"L3AvYQ==","value":"eA=="}"#, Token("alice")),
        call("/v3/kv/range", A_KEY, Token("alice")),
        call("/v3/kv/range", P, Cred::Raw("x.y.z")),
    ];
    gateway_calls(&http, &keel.member, &etcd.member, &mut tokens, &calls).await;
    let claims: Vec<Value> = tokens.iter().map(|t| jwt(&t["alice"]).expect("a JWT")).collect();
    for c in &claims {
        let mut keys: Vec<&String> = c.as_object().expect("claims").keys().collect();
        keys.sort();
        assert_eq!(keys, ["exp", "revision", "username"], "{c}");
        assert_eq!(c["username"], "alice");
    }
    assert_eq!(claims[0]["revision"], claims[1]["revision"], "the same auth history, the same revision");

    // Any auth change makes the token stale, on both.
    tokio::task::block_in_place(|| {
        run_steps("jwt change", &mut keel, &mut etcd, &[root(&["role", "add", "r9"])]);
    });
    let calls = [
        call("/v3/kv/range", P, Token("alice")),
        call("/v3/kv/put", r#"{"key":"L3AvYQ==","value":"eQ=="}"#, Token("alice")),
        login(r#"{"name":"alice","password":"apw"}"#, "alice"),
        call("/v3/kv/range", P, Token("alice")),
    ];
    gateway_calls(&http, &keel.member, &etcd.member, &mut tokens, &calls).await;

    // A restarted member takes the token it issued before.
    tokio::task::block_in_place(|| keel.member.restart());
    let after = gateway(&http, &keel.member, &mut tokens[0], &call("/v3/kv/range", P, Token("alice"))).await;
    assert!(after.contains("-> 200"), "{after}");
}

//! etcd's debugging endpoints on the client port, beside `/health` and `/version`:
//!
//! - `GET /debug/vars`: Go's expvar page as etcd fills it: `cmdline`, the open-files limit,
//!   and `raft.status`, this member's view of Raft (term, vote, commit and applied index,
//!   leader, and on the leader each member's progress), in etcd's JSON. Go's `memstats`
//!   (its garbage collector's counters) has no counterpart here and is left out.
//! - `PUT /config/local/log` with `{"Level": "debug"}`: the log level, changed while the
//!   member runs. Levels are capnslog's (etcd 3.4's logger): `CRITICAL`, `ERROR`, `WARNING`,
//!   `NOTICE`, `INFO`, `DEBUG`, `TRACE`, or their initials or digits `0`–`5`, in any case.
//!
//! As in etcd, neither asks for authentication, and any other method is answered 405 with
//! the one allowed. The body is read as Go's `json.Decoder` reads it into etcd's struct:
//! only the first JSON value counts, field names match in any case, unknown fields are
//! ignored, and a missing or null level is the empty (invalid) one.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{ALLOW, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use openraft::ServerState;

use crate::node::Node;
use crate::process;

pub fn router(node: Arc<Node>) -> Router {
    Router::new().route("/debug/vars", any(vars)).route("/config/local/log", any(log_level)).with_state(node)
}

async fn vars(State(node): State<Arc<Node>>, method: Method) -> Response {
    if method != Method::GET {
        return method_not_allowed("GET");
    }
    // expvar's page: one `"name": value` a line, names in order.
    let vars = [
        ("cmdline", go_json(&process::cmdline())),
        ("file_descriptor_limit", process::open_files_limit().unwrap_or(u64::MAX).to_string()),
        ("raft.status", raft_status(&node).await),
    ];
    let lines: Vec<String> = vars.iter().map(|(name, value)| format!("{name:?}: {value}")).collect();
    ([(CONTENT_TYPE, "application/json; charset=utf-8")], format!("{{\n{}\n}}\n", lines.join(",\n"))).into_response()
}

/// etcd's `raft.Status` as its `MarshalJSON` writes it: ids in hex, `0` for none, and
/// `progress` filled on the leader only.
async fn raft_status(node: &Node) -> String {
    let m = node.raft.metrics().borrow().clone();
    let commit = node.raft.with_raft_state(|st| st.committed.map_or(0, |c| c.index)).await.unwrap_or(0);
    let applied = node.applied.last_applied().map_or(0, |l| l.index);
    let state = match m.state {
        ServerState::Leader => "StateLeader",
        ServerState::Candidate => "StateCandidate",
        // A learner is a follower that does not vote, as in etcd's Raft.
        ServerState::Follower | ServerState::Learner | ServerState::Shutdown => "StateFollower",
    };
    let progress: Vec<String> = m
        .replication
        .iter()
        .flatten()
        .map(|(id, matched)| {
            let (matched, state) = match matched {
                Some(l) => (l.index, "StateReplicate"),
                None => (0, "StateProbe"),
            };
            format!(r#""{id:x}":{{"match":{matched},"next":{},"state":"{state}"}}"#, matched + 1)
        })
        .collect();
    format!(
        r#"{{"id":"{:x}","term":{},"vote":"{:x}","commit":{commit},"lead":"{:x}","raftState":"{state}","applied":{applied},"progress":{{{}}},"leadtransferee":"0"}}"#,
        node.id,
        m.current_term,
        m.vote.leader_id().voted_for().unwrap_or(0),
        m.current_leader.unwrap_or(0),
        progress.join(","),
    )
}

async fn log_level(method: Method, body: Bytes) -> Response {
    if method != Method::PUT {
        return method_not_allowed("PUT");
    }
    let Some(level) = requested_level(&body) else {
        return http_error(StatusCode::BAD_REQUEST, "Invalid json body");
    };
    let Some((name, directives)) = capnslog_level(&level) else {
        return http_error(StatusCode::BAD_REQUEST, &format!("Invalid log level {level}"));
    };
    tracing::info!("log level set to {name:?}");
    match process::set_log_level(directives) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => http_error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

/// The `Level` of etcd's `struct{ Level string }`, decoded from the body as Go decodes it;
/// `None` where Go's decoder fails.
fn requested_level(body: &[u8]) -> Option<String> {
    let first = serde_json::Deserializer::from_slice(body).into_iter::<serde_json::Value>().next()?.ok()?;
    let fields = match first {
        serde_json::Value::Null => return Some(String::new()),
        serde_json::Value::Object(fields) => fields,
        _ => return None,
    };
    let mut level = String::new();
    for (name, value) in fields {
        if !name.eq_ignore_ascii_case("level") {
            continue;
        }
        match value {
            serde_json::Value::String(s) => level = s,
            serde_json::Value::Null => {}
            _ => return None,
        }
    }
    Some(level)
}

/// capnslog's level for `level` (its name, as etcd logs it) and the filter that gives it.
fn capnslog_level(level: &str) -> Option<(&'static str, &'static str)> {
    Some(match level.to_uppercase().as_str() {
        "CRITICAL" | "C" => ("CRITICAL", "error"),
        "ERROR" | "0" | "E" => ("ERROR", "error"),
        "WARNING" | "1" | "W" => ("WARNING", "warn"),
        "NOTICE" | "2" | "N" => ("NOTICE", "info,openraft=warn"),
        "INFO" | "3" | "I" => ("INFO", "info,openraft=warn"),
        "DEBUG" | "4" | "D" => ("DEBUG", "debug"),
        "TRACE" | "5" | "T" => ("TRACE", "trace"),
        _ => return None,
    })
}

/// Go's `http.Error` for a method other than `allowed`.
fn method_not_allowed(allowed: &'static str) -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(ALLOW, allowed), (CONTENT_TYPE, "text/plain; charset=utf-8"), (X_CONTENT_TYPE_OPTIONS, "nosniff")],
        "Method Not Allowed\n",
    )
        .into_response()
}

/// etcd's `httptypes.HTTPError`: `{"message": ...}`, no newline.
fn http_error(status: StatusCode, message: &str) -> Response {
    let body = format!(r#"{{"message":{}}}"#, go_json(message));
    (status, [(CONTENT_TYPE, "application/json")], body).into_response()
}

/// JSON as Go's `json.Marshal` writes it: compact, with `<`, `>`, `&`, U+2028 and U+2029
/// escaped (they can only occur inside strings, so replacing them is safe).
fn go_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    let json = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_read_as_gos_decoder_reads_them() {
        let cases: &[(&str, Option<&str>)] = &[
            (r#"{"Level":"debug"}"#, Some("debug")),
            (r#"{"level":"d"}"#, Some("d")),
            (r#"{"LEVEL":"w","other":[1]}"#, Some("w")),
            (r#"{"Level":"debug"} trailing"#, Some("debug")),
            (r#"{"Level":null}"#, Some("")),
            ("null", Some("")),
            ("{}", Some("")),
            (r#"{"Level":5}"#, None),
            ("[1]", None),
            ("nope", None),
            ("", None),
        ];
        for (body, want) in cases {
            assert_eq!(requested_level(body.as_bytes()).as_deref(), *want, "body {body:?}");
        }
    }

    #[test]
    fn capnslog_names_initials_and_digits() {
        assert_eq!(capnslog_level("debug").map(|l| l.0), Some("DEBUG"));
        assert_eq!(capnslog_level("4").map(|l| l.0), Some("DEBUG"));
        assert_eq!(capnslog_level("w").map(|l| l.0), Some("WARNING"));
        assert_eq!(capnslog_level("Critical").map(|l| l.1), Some("error"));
        assert_eq!(capnslog_level("verbose"), None);
        assert_eq!(capnslog_level(""), None);
    }

    #[test]
    fn json_escapes_as_go_does() {
        assert_eq!(go_json("a<b>&c"), r#""a\u003cb\u003e\u0026c""#);
        assert_eq!(go_json(&["x", "y"]), r#"["x","y"]"#);
    }
}

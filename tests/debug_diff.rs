//! etcd's debugging endpoints, `/debug/vars` and `/config/local/log`, and the open-files
//! limit a member runs with: the same requests to Keel and etcd, the same answers.

use std::time::Duration;

use crate::harness::http1::{self, Answer};
use crate::harness::{free_port, wait_for_or, Cluster, Flavor, Member};

/// One bare HTTP/1.0 request to a member's client port.
fn request(m: &Member, method: &str, path: &str, body: &str) -> Answer {
    http1::request(&m.endpoint(), method, path, body)
}

fn vars(m: &Member) -> (String, serde_json::Value) {
    let answer = request(m, "GET", "/debug/vars", "");
    let text = answer.body.clone();
    assert_eq!(answer.status, 200, "{text}");
    assert_eq!(answer.header("content-type"), Some("application/json; charset=utf-8"));
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (text, value)
}

/// `raft.status` as etcd writes it, with ids and numbers blanked: its fields, their order,
/// and the states in it.
fn shape(text: &str) -> String {
    let line = text.lines().find(|l| l.starts_with("\"raft.status\": ")).expect("a raft.status line");
    let ids = regex::Regex::new(r#""[0-9a-f]{1,16}""#).expect("regex");
    let numbers = regex::Regex::new(r":[0-9]+").expect("regex");
    numbers.replace_all(&ids.replace_all(line, "\"ID\""), ":N").into_owned()
}

/// What one member's `/debug/vars` says, in terms both servers share: its names, and its
/// Raft view against what the test knows (which member leads, the members' ids).
fn describe(text: &str, v: &serde_json::Value, id: &str, leader: &str, all: &[String]) -> String {
    let mut names: Vec<&str> = v.as_object().expect("an object").keys().map(String::as_str).collect();
    names.sort();
    let s = &v["raft.status"];
    let (commit, applied) = (s["commit"].as_u64().expect("commit"), s["applied"].as_u64().expect("applied"));
    let progress = s["progress"].as_object().expect("progress");
    let mut ids: Vec<String> = progress.keys().cloned().collect();
    ids.sort();
    let in_step = progress
        .values()
        .all(|p| p["state"] == "StateReplicate" && p["match"] == commit && p["next"].as_u64() == Some(commit + 1));
    format!(
        "names {names:?}; id ok {}; lead ok {}; vote {}; state {}; commit=applied {}; progress of {} members, all members {}, in step {in_step}; transferee {}\n{}",
        s["id"] == id,
        s["lead"] == leader,
        // A member that joined the leader's term after its election has voted for no one.
        if s["vote"] == leader || s["vote"] == "0" { "the leader or none" } else { "another" },
        s["raftState"],
        commit == applied,
        ids.len(),
        ids == all,
        s["leadtransferee"],
        shape(text),
    )
}

/// The soft limit on open files of the process `pid`, from `/proc`.
fn open_files_limit(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("a Max open files line");
    line.split_whitespace().nth(3).and_then(|n| n.parse().ok()).expect("a number")
}

#[test]
fn debug_vars_show_raft_as_etcd_shows_it() {
    let mut seen = Vec::new();
    for flavor in [Flavor::Keel, Flavor::Etcd] {
        let c = Cluster::start(flavor, 3, &[]);
        let leader = c.member_id(c.leader());
        let mut all: Vec<String> = (0..3).map(|i| c.member_id(i)).collect();
        all.sort();
        let applied = |m: &Member| vars(m).1["raft.status"]["applied"].as_u64().expect("applied");
        let before: Vec<u64> = c.members.iter().map(applied).collect();
        for i in 0..5 {
            assert!(c.members[i % 3].ctl(&["put", &format!("k{i}"), "v"], None).success());
        }
        // Settled: every member has applied all five, as far as the others, and the leader
        // knows they have.
        let settled = wait_for_or(
            &format!("{flavor:?}'s members to apply five puts"),
            Duration::from_secs(10),
            || {
                let all_vars: Vec<(String, serde_json::Value)> = c.members.iter().map(vars).collect();
                let descriptions: Vec<String> = all_vars
                    .iter()
                    .enumerate()
                    .map(|(i, (text, v))| describe(text, v, &c.member_id(i), &leader, &all))
                    .collect();
                let now: Vec<u64> =
                    all_vars.iter().map(|(_, v)| v["raft.status"]["applied"].as_u64().unwrap_or(0)).collect();
                let done = now.iter().zip(&before).all(|(n, b)| *n >= b + 5 && *n == now[0])
                    && descriptions.iter().all(|d| d.contains("commit=applied true"))
                    && descriptions.iter().any(|d| d.contains("in step true") && d.contains("StateLeader"));
                done.then_some((descriptions, all_vars))
            },
            || c.log_tails(),
        );
        let (mut descriptions, all_vars) = settled;
        for (m, (_, v)) in c.members.iter().zip(&all_vars) {
            let pid = m.pid().expect("running");
            assert_eq!(v["file_descriptor_limit"].as_u64(), Some(open_files_limit(pid)), "{flavor:?}");
            let cmdline: Vec<&str> =
                v["cmdline"].as_array().expect("cmdline").iter().filter_map(|a| a.as_str()).collect();
            assert!(cmdline.contains(&format!("--name={}", m.name).as_str()), "{flavor:?}: {cmdline:?}");
        }
        descriptions.sort();
        seen.push(descriptions.join("\n"));
    }
    // Go's memory statistics are etcd's alone.
    let keel = seen[0].clone();
    let etcd = seen[1].replace(r#""memstats", "#, "");
    assert_eq!(keel, etcd, "left Keel, right etcd");
    assert!(seen[1].contains("memstats"), "{}", seen[1]);
    assert!(keel.contains("progress of 3 members, all members true, in step true"), "{keel}");
}

/// Status, `Allow` and content type, and the body, for each request.
fn answers(m: &Member) -> Vec<String> {
    let mut out = Vec::new();
    for (method, path, body) in [
        ("GET", "/debug/vars/", ""),
        ("POST", "/debug/vars", ""),
        ("DELETE", "/debug/vars", ""),
        ("GET", "/config/local/log", ""),
        ("POST", "/config/local/log", r#"{"Level":"debug"}"#),
        ("PUT", "/config/local/log", r#"{"Level":"debug"}"#),
        ("PUT", "/config/local/log", r#"{"level":"i","extra":[1,2]}"#),
        ("PUT", "/config/local/log", r#"{"LEVEL":"4"} and then some"#),
        ("PUT", "/config/local/log", r#"{"Level":"verbose"}"#),
        ("PUT", "/config/local/log", r#"{"Level":"<b>&"}"#),
        ("PUT", "/config/local/log", r#"{"Level":5}"#),
        ("PUT", "/config/local/log", r#"{"Level":null}"#),
        ("PUT", "/config/local/log", "{}"),
        ("PUT", "/config/local/log", "null"),
        ("PUT", "/config/local/log", "[1]"),
        ("PUT", "/config/local/log", "not json"),
        ("PUT", "/config/local/log", ""),
        ("PUT", "/config/local/log", r#"{"Level":"INFO"}"#),
    ] {
        let a = request(m, method, path, body);
        let (allow, ctype) = (a.header("allow"), a.header("content-type"));
        out.push(format!("{method} {path} {body}: {} {allow:?} {ctype:?}\n{:?}", a.status, a.body));
    }
    out
}

#[test]
fn methods_and_bodies_are_answered_as_etcd_answers_them() {
    let mut seen = Vec::new();
    for flavor in [Flavor::Keel, Flavor::Etcd] {
        let m = Member::single(flavor);
        seen.push(answers(&m));
    }
    assert_eq!(seen[0], seen[1], "left Keel, right etcd");
    assert_eq!(seen[0].iter().filter(|a| a.contains(": 204 ")).count(), 4, "{:#?}", seen[0]);
}

/// A member's log, without terminal colours.
fn plain_log(m: &Member) -> String {
    regex::Regex::new("\x1b\\[[0-9;]*m").expect("regex").replace_all(&m.log_text(), "").into_owned()
}

/// The levels a member said it set, in order, from its log.
fn levels_set(m: &Member) -> Vec<String> {
    let said = regex::Regex::new(r#"(?:globalLogLevel|log level) set to \\?"([A-Z]+)\\?""#).expect("regex");
    said.captures_iter(&plain_log(m)).map(|c| c[1].to_string()).collect()
}

#[test]
fn the_log_level_changes_while_the_member_runs() {
    let mut seen = Vec::new();
    for (flavor, debug_line) in [(Flavor::Keel, " DEBUG "), (Flavor::Etcd, " D | ")] {
        let m = Member::single(flavor);
        let put_level = |level: &str| {
            let a = request(&m, "PUT", "/config/local/log", &format!(r#"{{"Level":"{level}"}}"#));
            assert_eq!(a.status, 204, "{flavor:?} {level}: {}", a.body);
        };
        assert!(!plain_log(&m).contains(debug_line), "{flavor:?} logs debug lines from the start");
        put_level("debug");
        wait_for_or(
            &format!("{flavor:?} to log at debug level"),
            Duration::from_secs(10),
            || {
                assert!(m.ctl(&["put", "k", "v"], None).success());
                plain_log(&m).contains(debug_line).then_some(())
            },
            || m.log_tail(),
        );
        // Each change is logged (at info, or capnslog's notice) before it takes effect,
        // so the one made while the level is error is not.
        put_level("error");
        put_level("info");
        put_level("debug");
        let levels = wait_for_or(
            &format!("{flavor:?} to log its changes"),
            Duration::from_secs(10),
            || Some(levels_set(&m)).filter(|l| l.len() >= 3),
            || m.log_tail(),
        );
        seen.push(levels);
    }
    assert_eq!(seen[0], seen[1], "left Keel, right etcd");
    assert_eq!(seen[0], ["DEBUG", "ERROR", "DEBUG"]);
}

/// A member started with a low soft limit on open files raises it to the hard limit, as
/// every Go program does, and so serves more connections than the soft limit would allow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_files_limit_is_raised_to_the_hard_one() {
    const CONNECTIONS: usize = 200;
    for flavor in [Flavor::Keel, Flavor::Etcd] {
        let peer = free_port();
        let initial = format!("m1=http://127.0.0.1:{peer}");
        let mut m = Member::new(flavor, "m1", free_port(), peer, &initial, "new", &[]);
        m.wrap = vec!["prlimit".into(), "--nofile=64:4096".into()];
        m.start();
        let limit = tokio::task::block_in_place(|| {
            m.wait_ready();
            vars(&m).1["file_descriptor_limit"].as_u64()
        });
        assert_eq!(limit, Some(4096), "{flavor:?}");
        assert_eq!(open_files_limit(m.pid().expect("running")), 4096, "{flavor:?}");
        // Each client its own connection, all open at once.
        let mut clients = Vec::new();
        for _ in 0..CONNECTIONS {
            clients.push(crate::harness::client(&m).await);
        }
        let gets = clients.iter_mut().map(|c| async move { c.get("k", None).await.map(|_| ()) });
        let answered = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(gets)).await;
        let answered = answered.unwrap_or_else(|_| panic!("{flavor:?}: not every connection was served"));
        assert!(answered.iter().all(Result::is_ok), "{flavor:?}: {answered:?}");
    }
}

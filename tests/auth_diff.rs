//! Authentication (etcd v3 auth: users, roles, permissions, tokens) against a real etcd: the
//! same etcdctl (v3.4) scripts against `keel store` and etcd 3.4, step by step, outputs
//! compared after normalising cluster and member ids, lease ids and timings; and tokens
//! through the JSON gateway, statuses and bodies compared with tokens and ids masked.
//! etcd 3.4's auth has surprises a compatible store shares; the steps that pin one down say
//! so (what needs no permission at all, the checks a txn skips that a plain request makes,
//! watches checked once at creation, tokens refused while auth is disabled).

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::etcdctl::{self, normalize_leases, shape, spawn, Output};
use crate::harness::{wait_for, Flavor, Member};

const ROOT: &str = "--user=root:rootpw";
const ALICE: &str = "--user=alice:apw";
const PERMISSION_DENIED: &str = "etcdserver: permission denied";
const USER_EMPTY: &str = "etcdserver: user name is empty";
/// `/a` in a JSON request body.
const A_KEY: &str = r#"{"key":"L2E="}"#;

/// How much of a step's output is compared.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Cmp {
    /// Exit code, stdout and stderr, normalised.
    Exact,
    /// Exit code, and stdout and stderr with endpoints, ids, numbers and durations masked.
    Shape,
    /// Exit code and stderr only: whether the server refuses, not what it reports (member
    /// ids, versions, database sizes differ between the two).
    Refusal,
    /// Where etcd 3.4.23 lets a user past RBAC and later etcd releases fixed it (CVE
    /// fixes Keel has): Keel must refuse with this error, while etcd answers.
    KeelRefuses(&'static str),
    /// Run on Keel only, and must succeed: the write etcd made in a step Keel refused, so
    /// the two go on from the same data and revision.
    KeelOnly,
}

struct Step {
    args: Vec<String>,
    stdin: Option<String>,
    cmp: Cmp,
}

impl Step {
    fn cmp(self, cmp: Cmp) -> Step {
        Step { cmp, ..self }
    }
}

fn s(args: &[&str]) -> Step {
    Step { args: args.iter().map(|a| a.to_string()).collect(), stdin: None, cmp: Cmp::Exact }
}

fn with_stdin(args: &[&str], input: &str) -> Step {
    Step { stdin: Some(input.to_string()), ..s(args) }
}

/// `args` as the user a `--user=` flag names.
fn by(user: &str, args: &[&str]) -> Step {
    let mut all = vec![user];
    all.extend_from_slice(args);
    s(&all)
}

fn root(args: &[&str]) -> Step {
    by(ROOT, args)
}

fn alice(args: &[&str]) -> Step {
    by(ALICE, args)
}

/// `etcdctl txn --interactive=false` input: compares, a blank line, success ops, a blank
/// line, failure ops, a blank line.
fn txn(compares: &[&str], success: &[&str], failure: &[&str]) -> String {
    let mut t = String::new();
    for part in [compares, success, failure] {
        for line in part {
            t.push_str(line);
            t.push('\n');
        }
        t.push('\n');
    }
    t
}

/// A txn as alice, in etcdctl's simple output.
fn alice_txn(compares: &[&str], success: &[&str], failure: &[&str]) -> Step {
    with_stdin(&[ALICE, "txn", "--interactive=false"], &txn(compares, success, failure))
}

/// One server under test, and the lease ids it granted: `LEASE0`, `LEASE1`, ... in a step's
/// arguments or input stand for the first, second, ... lease a `lease grant` step got from
/// it, and every lease id in its outputs reads `LEASE`.
struct Side {
    member: Member,
    leases: Vec<String>,
}

impl Side {
    fn new(flavor: Flavor) -> Side {
        Side::with_flags(flavor, &[])
    }

    fn with_flags(flavor: Flavor, flags: &[&str]) -> Side {
        Side { member: Member::single_with(flavor, flags), leases: Vec::new() }
    }

    fn substitute(&self, text: &str) -> String {
        let mut t = text.to_string();
        for (i, id) in self.leases.iter().enumerate().rev() {
            t = t.replace(&format!("LEASE{i}"), id);
        }
        t
    }

    fn run(&mut self, step: &Step) -> Output {
        let args: Vec<String> = step.args.iter().map(|a| self.substitute(a)).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let stdin = step.stdin.as_ref().map(|i| self.substitute(i));
        let out = etcdctl::run(&self.member.endpoint(), &args, stdin.as_ref().map(|i| i.as_bytes()));
        if out.success() && args.windows(2).any(|w| w[0] == "lease" && w[1] == "grant") {
            // "lease 390da22fa3103ae8 granted with TTL(100s)"
            if let Some(id) = out.stdout.split_whitespace().nth(1) {
                self.leases.push(id.to_string());
            }
        }
        let out = out.normalized();
        let out = Output {
            code: out.code,
            stdout: sort_attached_keys(&normalize_leases(&out.stdout, &self.leases)),
            stderr: normalize_leases(&out.stderr, &self.leases),
        };
        match step.cmp {
            Cmp::Exact => out,
            Cmp::Shape => Output { code: out.code, stdout: shape(&out.stdout), stderr: shape(&out.stderr) },
            Cmp::Refusal => Output { code: out.code, stdout: String::new(), stderr: out.stderr },
            Cmp::KeelRefuses(_) | Cmp::KeelOnly => out,
        }
    }
}

/// etcd lists a lease's attached keys (`lease timetolive --keys`) in Go map order: sorted
/// here, on both sides.
fn sort_attached_keys(text: &str) -> String {
    const OPEN: &str = "attached keys([";
    let Some(start) = text.find(OPEN).map(|i| i + OPEN.len()) else { return text.to_string() };
    let Some(len) = text[start..].find("])") else { return text.to_string() };
    let mut keys: Vec<&str> = text[start..start + len].split(' ').collect();
    keys.sort_unstable();
    format!("{}{}{}", &text[..start], keys.join(" "), &text[start + len..])
}

fn run_steps(name: &str, keel: &mut Side, etcd: &mut Side, steps: &[Step]) {
    for (i, step) in steps.iter().enumerate() {
        let k = keel.run(step);
        if step.cmp == Cmp::KeelOnly {
            assert!(k.success(), "{name} step {i}: {:?} on Keel\n{}", step.args, k.stderr);
            continue;
        }
        let e = etcd.run(step);
        if let Cmp::KeelRefuses(err) = step.cmp {
            assert!(
                !k.success() && k.stderr.contains(err),
                "{name} step {i}: {:?}: Keel should refuse with {err:?}\n{}\n{}",
                step.args,
                k.stdout,
                k.stderr
            );
            assert!(e.success(), "{name} step {i}: {:?}: etcd 3.4.23 allows it\n{}", step.args, e.stderr);
            continue;
        }
        assert!(
            !e.stderr.contains("unknown flag") && !e.stdout.starts_with("NAME:"),
            "{name} step {i} is not a valid etcdctl 3.4 command: {:?}\n{}",
            step.args,
            e.stderr
        );
        assert_eq!(
            k, e,
            "{name} step {i}: etcdctl {:?} ({:?})\n--- keel ---\n{}\n{}\n--- etcd ---\n{}\n{}",
            step.args, step.cmp, k.stdout, k.stderr, e.stdout, e.stderr
        );
    }
}

fn differential(name: &str, steps: &[Step]) {
    let mut keel = Side::new(Flavor::Keel);
    let mut etcd = Side::new(Flavor::Etcd);
    run_steps(name, &mut keel, &mut etcd, steps);
}

/// Users root and alice; alice's role r1 reads the key /a, reads and writes the prefix /p/,
/// writes the range [/x, /z) and reads every key from /f on; keys inside and outside every
/// grant; then auth enabled.
fn restricted_setup() -> Vec<Step> {
    let mut steps = vec![
        s(&["user", "add", "root:rootpw"]),
        s(&["user", "add", "alice:apw"]),
        s(&["role", "add", "r1"]),
        s(&["role", "grant-permission", "r1", "read", "/a"]),
        s(&["role", "grant-permission", "r1", "readwrite", "/p/", "--prefix"]),
        s(&["role", "grant-permission", "r1", "write", "/x", "/z"]),
        s(&["role", "grant-permission", "r1", "read", "/f", "--from-key"]),
        s(&["user", "grant-role", "alice", "r1"]),
    ];
    for (k, v) in [
        ("/a", "1"),
        ("/b", "2"),
        ("/e", "3"),
        ("/f", "4"),
        ("/g", "5"),
        ("/p/a", "6"),
        ("/p/b", "7"),
        ("/p0", "8"),
        ("/q", "9"),
        ("/x", "10"),
        ("/y", "11"),
        ("/z", "12"),
    ] {
        steps.push(s(&["put", k, v]));
    }
    // Root has no role root yet: etcd answers "root user does not have root role", and
    // etcdctl 3.4's `auth enable` then adds role root, grants it to root and enables again.
    // Its only trace is a client warning line, which normalising drops.
    steps.push(s(&["auth", "enable"]));
    steps
}

/// Users and roles, their listings and permission grants and revokes, while auth is off
/// (no credentials needed).
#[test]
fn user_and_role_management_before_enable() {
    let steps = vec![
        s(&["user", "add", "root:rootpw"]),
        s(&["user", "add", "root:x"]),
        s(&["user", "add", "alice:apw"]),
        s(&["user", "add", "bob", "--no-password"]),
        with_stdin(&["user", "add", "carol", "--interactive=false"], "cpw\n"),
        // No input: an empty password, which etcd 3.4 takes (and later authenticates).
        s(&["user", "add", "dave", "--interactive=false"]),
        s(&["user", "add", "erin", "--new-user-password=epw"]),
        // An empty name reaches the server, which refuses it (InvalidArgument).
        s(&["user", "add", "", "--interactive=false"]),
        s(&["user", "add", "", "--no-password"]),
        // user:password splits at the first colon: user x, password "y:z".
        s(&["user", "add", "x:y:z"]),
        s(&["user", "get", "x"]),
        s(&["user", "delete", "x"]),
        s(&["user", "add", "u2:p", "-w", "json"]),
        s(&["role", "add", "r1"]),
        s(&["role", "add", "r1"]),
        s(&["role", "add", ""]),
        s(&["role", "add", "r2", "-w", "json"]),
        s(&["user", "list"]),
        s(&["role", "list"]),
        s(&["user", "list", "-w", "json"]),
        s(&["role", "list", "-w", "json"]),
        // etcdctl prints auth listings in simple and json only: exit code 4.
        s(&["user", "list", "-w", "table"]),
        s(&["user", "get", "alice"]),
        s(&["user", "get", "alice", "-w", "json"]),
        s(&["user", "get", "alice", "--detail"]),
        s(&["user", "get", "bob"]),
        s(&["user", "get", "nosuch"]),
        s(&["user", "get", "nosuch", "-w", "json"]),
        s(&["role", "get", "r1"]),
        s(&["role", "get", "r1", "-w", "json"]),
        s(&["role", "get", "nosuch"]),
        // The four kinds of grant: a key, a prefix, a range, from a key on.
        s(&["role", "grant-permission", "r1", "read", "/a"]),
        s(&["role", "grant-permission", "r1", "readwrite", "/p/", "--prefix"]),
        s(&["role", "grant-permission", "r1", "write", "/x", "/z"]),
        s(&["role", "grant-permission", "r1", "read", "/f", "--from-key"]),
        // "Role r1\nKV Read:\n\t/a\n\t[/f, <open ended>\n\t[/p/, /p0) (prefix /p/)\nKV Write:\n..."
        s(&["role", "get", "r1"]),
        // Sorted by key; READ (0) is omitted from the JSON; WRITE is 1, READWRITE 2; a
        // from-key grant has range end "\0" (AA==).
        s(&["role", "get", "r1", "-w", "json"]),
        s(&["role", "get", "r1", "-w", "fields"]),
        // A grant to the same key and range end replaces the type: write replaces read (no
        // merge into readwrite), and read back again.
        s(&["role", "grant-permission", "r1", "write", "/a"]),
        s(&["role", "get", "r1"]),
        s(&["role", "grant-permission", "r1", "read", "/a", "-w", "json"]),
        s(&["role", "get", "r1"]),
        s(&["role", "grant-permission", "nosuch", "read", "/a"]),
        // Revokes match key and range end exactly; etcdctl's message shows the range.
        s(&["role", "grant-permission", "r1", "read", "/m"]),
        s(&["role", "revoke-permission", "r1", "/m"]),
        s(&["role", "revoke-permission", "r1", "/m"]),
        s(&["role", "revoke-permission", "r1", "/nope"]),
        s(&["role", "revoke-permission", "r1", "/p/"]),
        s(&["role", "revoke-permission", "nosuch", "/a"]),
        s(&["role", "grant-permission", "r1", "read", "/pp/", "--prefix"]),
        s(&["role", "revoke-permission", "r1", "/pp/", "--prefix"]),
        s(&["role", "grant-permission", "r1", "read", "/zz", "--from-key"]),
        s(&["role", "revoke-permission", "r1", "/zz", "--from-key"]),
        s(&["role", "grant-permission", "r1", "read", "/m", "/n"]),
        s(&["role", "revoke-permission", "r1", "/m", "/n", "-w", "json"]),
        s(&["role", "get", "r1"]),
        // Roles to users: granting twice is fine; users' roles are kept sorted.
        s(&["user", "grant-role", "alice", "r1"]),
        s(&["user", "grant-role", "alice", "r1"]),
        s(&["user", "grant-role", "alice", "nosuch"]),
        s(&["user", "grant-role", "nosuch", "r1"]),
        s(&["user", "grant-role", "alice", "r2", "-w", "json"]),
        s(&["role", "add", "r0"]),
        s(&["user", "grant-role", "alice", "r0"]),
        s(&["user", "revoke-role", "alice", "nosuch"]),
        s(&["user", "revoke-role", "nosuch", "r1"]),
        s(&["user", "revoke-role", "bob", "r1"]),
        s(&["user", "get", "alice"]),
        s(&["user", "get", "alice", "-w", "json"]),
        s(&["user", "get", "alice", "--detail"]),
        // "User: alice", a blank line, then each role's JSON and a blank line.
        s(&["user", "get", "alice", "--detail", "-w", "json"]),
        s(&["user", "revoke-role", "alice", "r0"]),
        s(&["user", "revoke-role", "alice", "r0", "-w", "json"]),
        s(&["user", "get", "alice"]),
        // Deleting a role takes it from its users.
        s(&["user", "grant-role", "bob", "r2"]),
        s(&["user", "grant-role", "bob", "r0"]),
        s(&["role", "delete", "r2"]),
        s(&["user", "get", "bob"]),
        s(&["role", "delete", "r2"]),
        s(&["role", "delete", ""]),
        s(&["role", "delete", "r0", "-w", "json"]),
        s(&["user", "get", "bob"]),
        s(&["user", "delete", "bob"]),
        s(&["user", "delete", "bob"]),
        s(&["user", "delete", ""]),
        s(&["user", "delete", "u2", "-w", "json"]),
        with_stdin(&["user", "passwd", "alice", "--interactive=false"], "apw2\n"),
        with_stdin(&["user", "passwd", "nosuch", "--interactive=false"], "x\n"),
        with_stdin(&["user", "passwd", "alice", "--interactive=false", "-w", "json"], "apw\n"),
        // The auth store's changes leave the KV revision alone: headers show the KV's.
        s(&["put", "k", "v"]),
        s(&["user", "get", "alice", "-w", "json"]),
        s(&["role", "get", "r1", "-w", "json"]),
        s(&["user", "list"]),
        s(&["role", "list"]),
    ];
    differential("user_and_role_management_before_enable", &steps);
}

/// How etcd 3.4 keeps a role's permission list, odd as some of it is.
#[test]
fn permission_list_quirks() {
    let steps = vec![
        s(&["role", "add", "r1"]),
        // Ranges are not checked: an end at or before the key is kept (and grants nothing).
        s(&["role", "grant-permission", "r1", "read", "/q"]),
        s(&["role", "grant-permission", "r1", "read", "/q", "/q"]),
        s(&["role", "grant-permission", "r1", "read", "/q", "/b"]),
        s(&["role", "get", "r1"]),
        // The list is sorted by key alone (equal keys in the order granted). A grant updates
        // the first permission with its key, and only if that one's range end matches: else
        // it appends. So this adds a second [/q, /b), as write, beside the read one.
        s(&["role", "grant-permission", "r1", "write", "/q", "/b"]),
        s(&["role", "get", "r1"]),
        s(&["role", "get", "r1", "-w", "json"]),
        // A revoke removes every permission with that key and range end.
        s(&["role", "revoke-permission", "r1", "/q", "/b"]),
        s(&["role", "get", "r1", "-w", "json"]),
        // etcdctl sends an empty key as "\0": "" --prefix (and "" --from-key) is
        // ["\0", "\0"), every key; "" alone is the key "\0". `role get` prints the NUL bytes.
        s(&["role", "grant-permission", "r1", "read", "", "--prefix"]),
        s(&["role", "grant-permission", "r1", "write", ""]),
        s(&["role", "get", "r1"]),
        s(&["role", "get", "r1", "-w", "json"]),
        // The revoke messages show the arguments as given: "[, <open ended>" and "key  is".
        s(&["role", "revoke-permission", "r1", "", "--prefix"]),
        s(&["role", "revoke-permission", "r1", ""]),
        s(&["role", "get", "r1", "-w", "json"]),
    ];
    differential("permission_list_quirks", &steps);
}

/// What alice, with r1 of [`restricted_setup`], may read and write, in plain requests and
/// in transactions.
#[test]
fn a_restricted_user_after_enable() {
    let mut steps = restricted_setup();
    steps.extend([
        // Read-only /a.
        alice(&["get", "/a"]),
        alice(&["get", "/a", "-w", "json"]),
        alice(&["put", "/a", "2"]),
        alice(&["del", "/a"]),
        // Below /f, only /a is granted: a range must be covered whole.
        alice(&["get", "/b"]),
        alice(&["put", "/b", "x"]),
        alice(&["get", "/e"]),
        alice(&["get", "/a", "/b"]),
        alice(&["get", "/e", "--from-key"]),
        alice(&["get", "", "--prefix"]),
        alice(&["get", "", "--from-key"]),
        // Read from /f on covers every key after /f, whatever else grants them: /p, /x...
        alice(&["get", "/f"]),
        alice(&["get", "/g"]),
        alice(&["get", "/f", "--from-key"]),
        alice(&["get", "/f", "--from-key", "--keys-only"]),
        alice(&["get", "/f", "/zzz"]),
        alice(&["get", "/p", "--prefix"]),
        alice(&["get", "/x"]),
        alice(&["put", "/f", "x"]),
        // Read and write under /p/.
        alice(&["get", "/p/a"]),
        alice(&["put", "/p/c", "13"]),
        alice(&["get", "/p/", "--prefix"]),
        alice(&["get", "/p/a", "/p/z"]),
        alice(&["get", "/p/", "/p0"]),
        alice(&["put", "/p0", "x"]),
        alice(&["put", "--prev-kv", "/p/a", "66"]),
        alice(&["del", "--prev-kv", "/p/b"]),
        alice(&["del", "/p/", "--prefix"]),
        alice(&["get", "/p/", "--prefix", "-w", "json"]),
        alice(&["put", "/p/a", "6"]),
        // Write [/x, /z): the end is excluded; a delete's range must be inside too.
        alice(&["put", "/x", "14"]),
        alice(&["put", "/y", "15"]),
        alice(&["put", "/z", "16"]),
        alice(&["del", "/x", "/zz"]),
        alice(&["del", "/x", "/z"]),
        alice(&["put", "/x", "17"]),
        // Without the read from /f, [/x, /z) is write-only, /p only /p/ (changes to a role
        // apply to the next request).
        root(&["role", "revoke-permission", "r1", "/f", "--from-key"]),
        alice(&["get", "/x"]),
        alice(&["get", "/f"]),
        alice(&["get", "/p", "--prefix"]),
        alice(&["get", "/p/", "/p1"]),
        alice(&["get", "/p/", "/p0"]),
        alice(&["put", "/x", "18"]),
        // A put or delete that returns the previous value needs read permission too.
        alice(&["put", "--prev-kv", "/x", "19"]),
        alice(&["del", "--prev-kv", "/x"]),
        alice(&["del", "/x"]),
        alice(&["del", "/x"]),
        alice(&["put", "/x", "20"]),
        root(&["get", "/x"]),
        // Transactions: compares need read permission on their keys, and the ops of both
        // branches are checked, whichever branch runs.
        alice_txn(&[r#"value("/a") = "1""#], &["put /p/t 1"], &["get /a"]),
        alice_txn(&[r#"value("/b") = "2""#], &["put /p/t 2"], &[]),
        alice_txn(&[r#"mod("/x") > "0""#], &["put /x 1"], &[]),
        alice_txn(&[r#"value("/a") = "1""#], &["put /a 2"], &[]),
        alice_txn(&[r#"value("/a") = "1""#], &["put /p/t 3"], &["get /b"]),
        alice_txn(&[r#"value("/a") = "nope""#], &["get /b"], &["put /p/t 3"]),
        alice_txn(&[], &["get /e"], &[]),
        alice_txn(&[], &["put /y 1", "put /p/u 1"], &[]),
        with_stdin(&[ALICE, "txn", "--interactive=false", "-w", "json"], &txn(&[], &["put /x 21", "get /p/t"], &[])),
        // etcd 3.4.23 does not check a txn put's prev_kv against read permission (a plain
        // put's it does, above), so alice reads the write-only /x's old value there; later
        // releases check it (GHSA-x35m-3gp4-4fh5), and Keel does. Root makes the same writes
        // on Keel.
        alice_txn(&[], &["put /x 22 --prev-kv"], &[]).cmp(Cmp::KeelRefuses(PERMISSION_DENIED)),
        root(&["put", "/x", "22"]).cmp(Cmp::KeelOnly),
        with_stdin(&[ALICE, "txn", "--interactive=false", "-w", "json"], &txn(&[], &["put /x 23 --prev-kv"], &[]))
            .cmp(Cmp::KeelRefuses(PERMISSION_DENIED)),
        root(&["put", "/x", "23"]).cmp(Cmp::KeelOnly),
        // A txn delete's prev_kv it does check.
        alice_txn(&[], &["del /x --prev-kv"], &[]),
        alice_txn(&[], &["del /x"], &[]),
        // A range is allowed when the union of all the user's roles' ranges covers it:
        // [/b, /c) from r2 and [/c, /d) from r1 cover [/b, /d); the key /a is [/a, /a\0),
        // which leaves a gap before /b.
        root(&["role", "add", "r2"]),
        root(&["role", "grant-permission", "r2", "read", "/b", "/c"]),
        root(&["role", "grant-permission", "r1", "read", "/c", "/d"]),
        root(&["user", "grant-role", "alice", "r2"]),
        alice(&["get", "/b", "/d"]),
        alice(&["get", "/b", "/d0"]),
        alice(&["get", "/a", "/c"]),
        root(&["user", "revoke-role", "alice", "r2"]),
        alice(&["get", "/b", "/d"]),
        // A revoked permission is refused at the next request, a granted one allowed.
        root(&["role", "revoke-permission", "r1", "/a"]),
        alice(&["get", "/a"]),
        root(&["role", "grant-permission", "r1", "read", "/a"]),
        alice(&["get", "/a"]),
        root(&["get", "", "--prefix"]),
    ]);
    differential("a_restricted_user_after_enable", &steps);
}

/// With auth enabled: requests without a user, with a bad password, from a user without
/// the role root; and what 3.4 lets anyone do.
#[test]
fn errors_for_no_user_bad_password_and_non_admins() {
    let dir = tempfile::tempdir().expect("temp dir");
    // One path for both servers: keel's snapshot is written first, etcd's over it.
    let snap = dir.path().join("snap.db").display().to_string();
    let mut steps = restricted_setup();
    steps.extend([
        // No user: InvalidArgument "etcdserver: user name is empty", exit code 1.
        s(&["get", "/a"]),
        s(&["get", "/a", "-w", "json"]),
        s(&["put", "/a", "1"]),
        s(&["del", "/a"]),
        with_stdin(&["txn", "--interactive=false"], &txn(&[], &["get /a"], &[])),
        s(&["user", "list"]),
        s(&["role", "list"]),
        s(&["user", "get", "alice"]),
        s(&["auth", "enable"]),
        s(&["auth", "disable"]),
        // A wrong password or an unknown user: the client's Authenticate fails (InvalidArgument
        // "etcdserver: authentication failed, invalid user ID or password") and etcdctl exits 2.
        by("--user=root:bad", &["get", "/a"]),
        by("--user=nosuch:x", &["get", "/a"]),
        by("--user=root:bad", &["user", "list"]),
        s(&["--user=root", "--password=rootpw", "get", "/a"]),
        s(&["--user=root", "--password=bad", "get", "/a"]),
        // user:password splits at the first colon.
        root(&["user", "add", "x:y:z"]),
        by("--user=x:y:z", &["get", "/a"]),
        by("--user=x:y", &["get", "/a"]),
        // A --no-password user cannot authenticate with any password: code Unknown, "auth:
        // authentication failed, password was given for no password user", exit code 2.
        root(&["user", "add", "nopw", "--no-password"]),
        by("--user=nopw:x", &["get", "/a"]),
        // Not root: user and role management is root's, except reading one's own user and
        // one's own roles.
        alice(&["user", "list"]),
        alice(&["role", "list"]),
        alice(&["user", "get", "alice"]),
        alice(&["user", "get", "alice", "-w", "json"]),
        alice(&["user", "get", "alice", "--detail"]),
        alice(&["role", "get", "r1"]),
        alice(&["role", "get", "r1", "-w", "json"]),
        alice(&["user", "get", "root"]),
        alice(&["role", "get", "root"]),
        alice(&["user", "add", "zed:z"]),
        alice(&["role", "add", "r9"]),
        with_stdin(&[ALICE, "user", "passwd", "alice", "--interactive=false"], "apw\n"),
        alice(&["role", "grant-permission", "r1", "read", "/b"]),
        alice(&["user", "grant-role", "alice", "root"]),
        alice(&["user", "revoke-role", "alice", "r1"]),
        alice(&["role", "delete", "r1"]),
        alice(&["user", "delete", "alice"]),
        alice(&["auth", "disable"]),
        alice(&["auth", "enable"]),
        // Root may do everything; the role root shows no permissions.
        root(&["get", "", "--prefix", "--keys-only"]),
        root(&["user", "list"]),
        root(&["role", "list"]),
        root(&["user", "get", "root"]),
        root(&["user", "get", "root", "--detail"]),
        root(&["role", "get", "root"]),
        root(&["role", "get", "root", "-w", "json"]),
        // Surprise: in 3.4 member list, endpoint status and alarms need no user at all...
        s(&["member", "list"]).cmp(Cmp::Refusal),
        alice(&["member", "list"]).cmp(Cmp::Refusal),
        s(&["endpoint", "status"]).cmp(Cmp::Refusal),
        alice(&["endpoint", "status"]).cmp(Cmp::Refusal),
        s(&["alarm", "list"]),
        alice(&["alarm", "list"]),
        s(&["alarm", "disarm"]),
        // ... nor does compaction, not even without a user.
        alice(&["compaction", "3"]),
        s(&["compaction", "2"]),
        s(&["compaction", "4"]),
        alice(&["compaction", "5", "--physical"]),
        // endpoint health is a linearizable get of "health": without a user it fails, and the
        // endpoint is unhealthy; etcdctl counts alice's "permission denied" as healthy.
        s(&["endpoint", "health"]).cmp(Cmp::Shape),
        alice(&["endpoint", "health"]).cmp(Cmp::Shape),
        root(&["endpoint", "health"]).cmp(Cmp::Shape),
        // The maintenance service is root's: its refusals are gRPC code Unknown with "auth: "
        // texts ("auth: user name is empty", "auth: permission denied").
        s(&["endpoint", "hashkv"]).cmp(Cmp::Shape),
        alice(&["endpoint", "hashkv"]).cmp(Cmp::Shape),
        root(&["endpoint", "hashkv"]).cmp(Cmp::Shape),
        s(&["defrag"]).cmp(Cmp::Shape),
        alice(&["defrag"]).cmp(Cmp::Shape),
        root(&["defrag"]).cmp(Cmp::Shape),
        // A refused snapshot: "Error: rpc error: code = Unknown desc = auth: permission
        // denied", exit code 5.
        s(&["snapshot", "save", &snap]),
        alice(&["snapshot", "save", &snap]),
        root(&["snapshot", "save", &snap]),
        // Membership changes are root's too (the list is anyone's), with the usual errors.
        s(&["member", "remove", "1234"]),
        alice(&["member", "remove", "1234"]),
        root(&["member", "remove", "1234"]),
        s(&["member", "update", "1234", "--peer-urls=http://127.0.0.1:29999"]),
        alice(&["member", "add", "x", "--learner", "--peer-urls=http://127.0.0.1:29998"]),
        s(&["member", "list"]).cmp(Cmp::Refusal),
    ]);
    differential("errors_for_no_user_bad_password_and_non_admins", &steps);
}

/// Leases under auth: granting, keep-alives and time-to-live need nobody; revoking needs
/// write permission on the lease's keys; attaching a key checks the lease's other keys.
#[test]
fn leases_with_auth() {
    let mut steps = restricted_setup();
    steps.extend([
        alice(&["lease", "grant", "100"]), // LEASE0
        s(&["lease", "grant", "100"]),     // LEASE1: no user needed
        root(&["lease", "grant", "100"]),  // LEASE2
        root(&["put", "/b", "2", "--lease=LEASE2"]),
        root(&["put", "/p/l", "1", "--lease=LEASE2"]),
        // etcd 3.4.23's time-to-live shows the names of a lease's keys to anyone, even keys
        // they may not read, even without a user (CVE-2023-32082, fixed in 3.4.26): Keel
        // lists them only to a user who may read them all. Without --keys, anyone may ask.
        alice(&["lease", "timetolive", "LEASE2", "--keys"]).cmp(Cmp::KeelRefuses(PERMISSION_DENIED)),
        s(&["lease", "timetolive", "LEASE2", "--keys"]).cmp(Cmp::KeelRefuses(USER_EMPTY)),
        alice(&["lease", "timetolive", "LEASE2"]),
        s(&["lease", "keep-alive", "--once", "LEASE2"]),
        alice(&["lease", "list"]),
        // Revoking deletes the keys: it needs write permission on every one of them
        // ("Error: failed to revoke lease (etcdserver: permission denied)").
        alice(&["lease", "revoke", "LEASE2"]),
        s(&["lease", "revoke", "LEASE2"]),
        root(&["lease", "timetolive", "LEASE2", "--keys"]),
        // A lease without keys needs none: anyone revokes it, even without a user.
        alice(&["lease", "revoke", "LEASE1"]),
        alice(&["put", "/p/z", "1", "--lease=LEASE0"]),
        // A put to a lease that holds a key one may not write is refused (one could not
        // revoke it), after the put's own check, and before the lease is looked up.
        alice(&["put", "/p/z", "2", "--lease=LEASE2"]),
        alice(&["put", "/p/zz", "2", "--lease=1234"]),
        alice(&["put", "/b", "2", "--lease=1234"]),
        // etcd 3.4.23 does not check a txn's put against its lease's keys, as it does a
        // plain put's (GHSA-x35m-3gp4-4fh5); Keel does. Root makes the same write on Keel.
        alice_txn(&[], &["put /p/z 3 --lease=LEASE2"], &[]).cmp(Cmp::KeelRefuses(PERMISSION_DENIED)),
        root(&["put", "/p/z", "3", "--lease=LEASE2"]).cmp(Cmp::KeelOnly),
        root(&["get", "/p/z", "-w", "json"]),
        root(&["lease", "timetolive", "LEASE2", "--keys"]),
        // LEASE0 lost its key to LEASE2: revoking it needs nobody now.
        s(&["lease", "revoke", "LEASE0"]),
        s(&["lease", "revoke", "LEASE0"]),
        root(&["lease", "revoke", "LEASE2"]),
        root(&["get", "", "--prefix", "--keys-only"]),
        alice(&["lease", "list"]),
    ]);
    differential("leases_with_auth", &steps);
}

/// `auth enable`'s preconditions, root's protections while enabled, `auth disable`, and
/// what credentials do while auth is disabled.
#[test]
fn enabling_and_disabling_auth() {
    let steps = vec![
        s(&["auth", "enable"]),
        s(&["user", "add", "root:rootpw"]),
        s(&["role", "add", "root"]),
        // etcd answers "root user does not have root role"; etcdctl then tries to add role
        // root, which exists, and prints that error: "etcdserver: role name already exists".
        s(&["auth", "enable"]),
        s(&["role", "delete", "root"]),
        s(&["user", "add", "alice:apw"]),
        s(&["role", "add", "r1"]),
        s(&["role", "grant-permission", "r1", "readwrite", "/a"]),
        s(&["user", "grant-role", "alice", "r1"]),
        s(&["put", "/a", "1"]),
        // Now etcdctl adds role root, grants it to root and enables: "Authentication Enabled".
        s(&["auth", "enable"]),
        s(&["get", "/a"]),
        s(&["put", "/a", "2"]),
        s(&["user", "list"]),
        s(&["auth", "enable"]),
        s(&["auth", "disable"]),
        // Enabling again is fine.
        root(&["auth", "enable"]),
        root(&["user", "get", "root"]),
        root(&["role", "get", "root"]),
        root(&["role", "list"]),
        // Root keeps what makes it root: "etcdserver: invalid auth management".
        root(&["user", "delete", "root"]),
        root(&["role", "delete", "root"]),
        root(&["user", "revoke-role", "root", "root"]),
        root(&["user", "add", "root:x"]),
        root(&["role", "add", "root"]),
        // The role root can be granted permissions, which then show, and root other roles.
        root(&["role", "grant-permission", "root", "read", "/a"]),
        root(&["role", "get", "root"]),
        root(&["role", "revoke-permission", "root", "/a"]),
        root(&["role", "get", "root", "-w", "json"]),
        root(&["user", "grant-role", "root", "r1"]),
        root(&["user", "get", "root"]),
        root(&["user", "revoke-role", "root", "r1"]),
        // Only root disables.
        alice(&["auth", "disable"]),
        root(&["auth", "disable"]),
        // Disabled: no user needed. A --user's Authenticate fails ("authentication is not
        // enabled"), which etcdctl only logs (a warning line normalising drops), and it goes
        // on without a token; so even a bad password works.
        s(&["get", "/a"]),
        by("--user=root:bad", &["get", "/a"]),
        alice(&["put", "/b", "1"]),
        s(&["user", "list"]),
        s(&["role", "get", "root"]),
        s(&["auth", "disable"]),
        // Enabling needs no user while auth is off.
        s(&["auth", "enable"]),
        s(&["get", "/b"]),
        alice(&["get", "/b"]),
        root(&["get", "/b"]),
        // A new password: the old one fails.
        with_stdin(&[ROOT, "user", "passwd", "root", "--interactive=false"], "newpw\n"),
        root(&["get", "/a"]),
        by("--user=root:newpw", &["get", "/a"]),
        by("--user=root:newpw", &["user", "delete", "alice"]),
        alice(&["get", "/a"]),
        by("--user=root:newpw", &["auth", "disable"]),
        s(&["get", "", "--prefix"]),
    ];
    differential("enabling_and_disabling_auth", &steps);
}

/// etcdctl with a deadline: a watch that is not refused would never end.
fn bounded(m: &Member, args: &[&str]) -> Output {
    let out = Command::new("timeout")
        .arg("20")
        .arg("etcdctl")
        .arg(format!("--endpoints={}", m.endpoint()))
        .args(args)
        .env("ETCDCTL_API", "3")
        .stdin(Stdio::null())
        .output()
        .expect("timeout and etcdctl");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
    .normalized()
}

/// The KV revision a server is at, as root reads it.
fn revision(side: &Side) -> i64 {
    let out = etcdctl::run(&side.member.endpoint(), &[ROOT, "get", "/a", "-w", "json"], None);
    let v: Value = serde_json::from_str(out.stdout.trim()).expect("get -w json");
    v["header"]["revision"].as_i64().expect("a revision")
}

/// A watch needs read permission on its whole range when it is created, and only then.
#[test]
fn watches_need_read_permission() {
    let mut keel = Side::new(Flavor::Keel);
    let mut etcd = Side::new(Flavor::Etcd);
    let mut setup = restricted_setup();
    // Without the read from /f, alice reads /a and /p/ only.
    setup.push(root(&["role", "revoke-permission", "r1", "/f", "--from-key"]));
    run_steps("watch setup", &mut keel, &mut etcd, &setup);

    // Refused at creation: the server answers created and canceled, watch id -1, the
    // status as cancel reason; etcdctl prints "watch was canceled (rpc error: code =
    // PermissionDenied desc = etcdserver: permission denied)" and "Error: watch is canceled
    // by the server" on stderr and exits 5 at once (with -w json, stdout has
    // {"Header":{},"Events":null,"CompactRevision":0,"Canceled":true,"Created":false}).
    for args in [
        &[ALICE, "watch", "/b"][..],
        &[ALICE, "watch", "/b", "-w", "json"],
        &[ALICE, "watch", "/b", "--rev=1"],
        &[ALICE, "watch", "", "--prefix"],
        &[ALICE, "watch", "/p/", "/p1"],
        &[ALICE, "watch", "/x"],
        &[ALICE, "watch", "/f", "/zzz"],
        // Without a user: "code = InvalidArgument desc = etcdserver: user name is empty".
        &["watch", "/a"],
        &["watch", "/a", "-w", "json"],
        // A bad password fails before the watch: exit code 2.
        &["--user=alice:bad", "watch", "/a"],
    ] {
        let k = bounded(&keel.member, args);
        let e = bounded(&etcd.member, args);
        assert_eq!(
            k, e,
            "etcdctl {args:?}\n--- keel ---\n{}\n{}\n--- etcd ---\n{}\n{}",
            k.stdout, k.stderr, e.stdout, e.stderr
        );
    }

    // Allowed watches, from the next revision so that they see the same events however fast
    // they start. The permission is checked once: the watch goes on delivering after the
    // permission is revoked, the password changed, auth disabled and enabled again.
    let from = |side: &Side| format!("--rev={}", revision(side) + 1);
    let (from_k, from_e) = (from(&keel), from(&etcd));
    let wk = spawn(&keel.member.endpoint(), &[ALICE, "watch", "/a", &from_k]);
    let we = spawn(&etcd.member.endpoint(), &[ALICE, "watch", "/a", &from_e]);
    let wk_p = spawn(&keel.member.endpoint(), &[ALICE, "watch", "/p/", "--prefix", &from_k]);
    let we_p = spawn(&etcd.member.endpoint(), &[ALICE, "watch", "/p/", "--prefix", &from_e]);
    run_steps("watch", &mut keel, &mut etcd, &[root(&["put", "/a", "before"]), root(&["put", "/p/k", "before"])]);
    // Every watch has seen an event, so each was created while alice could read /a, with
    // her first password, auth enabled.
    wait_for("the watches to start", Duration::from_secs(20), || {
        [&wk, &we, &wk_p, &we_p].iter().all(|w| w.output().contains("before")).then_some(())
    });
    let steps = vec![
        root(&["role", "revoke-permission", "r1", "/a"]),
        alice(&["get", "/a"]),
        root(&["put", "/a", "revoked"]),
        with_stdin(&[ROOT, "user", "passwd", "alice", "--interactive=false"], "apw2\n"),
        root(&["put", "/a", "repassworded"]),
        root(&["auth", "disable"]),
        s(&["put", "/a", "disabled"]),
        s(&["auth", "enable"]),
        root(&["put", "/a", "end"]),
        root(&["put", "/p/k", "end"]),
    ];
    run_steps("watch", &mut keel, &mut etcd, &steps);
    let (k, e) = (wk.stop_after("end\n"), we.stop_after("end\n"));
    assert_eq!(k, e, "alice's watch on /a");
    assert!(e.contains("PUT\n/a\nrevoked\n"), "etcd 3.4 goes on delivering: {e}");
    let (k, e) = (wk_p.stop_after("end\n"), we_p.stop_after("end\n"));
    assert_eq!(k, e, "alice's watch on /p/");
}

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

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

use crate::harness::etcdctl::{self, normalize_leases, shape, spawn, txn, Output};
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

mod gateway;
mod scripts;
mod watch;

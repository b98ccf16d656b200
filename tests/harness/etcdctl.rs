//! Running the real `etcdctl` (v3.4) and normalising its output for comparison.

use std::io::Write;
use std::process::{Command, Stdio};

/// What one etcdctl invocation produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// The output with everything that legitimately differs between two clusters removed:
    /// cluster and member ids and raft terms in JSON headers, and etcdctl's client-side
    /// retry log lines (which name random client ids).
    pub fn normalized(&self) -> Output {
        let stdout = self.stdout.lines().map(normalize_line).collect::<Vec<_>>().join("\n");
        // A Go panic's goroutine dump has addresses that differ run to run: keep its first line.
        let stderr = match self.stderr.find("panic: ") {
            Some(i) => self.stderr[i..].lines().next().unwrap_or_default().to_string(),
            None => self.stderr.lines().filter(|l| !l.starts_with('{')).collect::<Vec<_>>().join("\n"),
        };
        Output { code: self.code, stdout, stderr }
    }
}

fn normalize_line(line: &str) -> String {
    // `-w fields` prints `"ClusterID" : 123` lines.
    for field in ["\"ClusterID\" : ", "\"MemberID\" : ", "\"RaftTerm\" : "] {
        if let Some(rest) = line.strip_prefix(field) {
            if rest.chars().all(|c| c.is_ascii_digit()) {
                return format!("{field}0");
            }
        }
    }
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(mut v) if v.is_object() => {
            scrub(&mut v);
            v.to_string()
        }
        _ => line.to_string(),
    }
}

fn scrub(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                if matches!(k.as_str(), "cluster_id" | "member_id" | "raft_term") {
                    *val = serde_json::Value::from(0);
                } else {
                    scrub(val);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(scrub),
        _ => {}
    }
}

/// `etcdctl txn --interactive=false` input: compares, a blank line, success ops, a blank
/// line, failure ops, a blank line.
pub fn txn(compares: &[&str], success: &[&str], failure: &[&str]) -> String {
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

/// Runs `etcdctl --endpoints=<endpoint> <args>` with optional stdin.
pub fn run(endpoint: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--command-timeout=10s")
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("etcdctl is installed (make deps)");
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input).expect("write etcdctl stdin");
    }
    let out = child.wait_with_output().expect("etcdctl output");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The shape of an output: JSON with every scalar replaced by its type (arrays keep their
/// length, not their order), or text with ids, numbers and durations replaced, so outputs from two
/// different clusters compare equal when they have the same structure.
pub fn shape(out: &str) -> String {
    out.lines()
        .map(|line| match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) if v.is_object() || v.is_array() => skeleton(&v).to_string(),
            _ => line.split_whitespace().map(word_shape).collect::<Vec<_>>().join(" "),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn skeleton(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), skeleton(v))).collect()),
        Value::Array(a) => {
            // Element order follows ids, which differ between clusters.
            let mut items: Vec<Value> = a.iter().map(skeleton).collect();
            items.sort_by_key(|v| v.to_string());
            Value::Array(items)
        }
        Value::Number(_) => Value::from("number"),
        Value::String(_) => Value::from("string"),
        Value::Bool(_) => Value::from("bool"),
        Value::Null => Value::Null,
    }
}

fn word_shape(w: &str) -> String {
    let core = w.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let hexy = core.len() >= 8 && core.chars().all(|c| c.is_ascii_hexdigit());
    let numeric = !core.is_empty() && core.chars().all(|c| c.is_ascii_digit() || c == '.');
    let duration = core.ends_with("ms") || core.ends_with("µs") || core.ends_with('s') && core.contains('.');
    if w.contains("127.0.0.1:") {
        "ENDPOINT".into()
    } else if hexy || numeric {
        "N".into()
    } else if duration {
        "DURATION".into()
    } else {
        w.to_string()
    }
}

/// An etcdctl left running (a watch, an interactive session), its output collected.
pub struct Background {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    out: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Background {
    pub fn output(&self) -> String {
        self.out.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn send(&mut self, line: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(line.as_bytes());
            let _ = stdin.flush();
        }
    }

    /// Waits until the output contains `needle`, then stops the process; returns the output.
    pub fn stop_after(mut self, needle: &str) -> String {
        let out = self.out.clone();
        super::wait_for(&format!("etcdctl output to show {needle:?}"), std::time::Duration::from_secs(20), || {
            out.lock().ok().filter(|s| s.contains(needle)).map(|_| ())
        });
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.output()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `etcdctl --endpoints=<endpoint> <args>` in the background.
pub fn spawn(endpoint: &str, args: &[&str]) -> Background {
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl");
    let stdin = child.stdin.take();
    let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    if let Some(mut stdout) = child.stdout.take() {
        let sink = out.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
    }
    Background { child, stdin, out }
}

/// Replaces lease ids (16 hex digits), and the seconds in `remaining(Ns)` and `TTL(N)`
/// that depend on timing, with placeholders.
pub fn normalize_leases(text: &str, lease_ids: &[String]) -> String {
    let mut t = text.to_string();
    for id in lease_ids {
        t = t.replace(id.as_str(), "LEASE");
        if let Ok(n) = i64::from_str_radix(id, 16) {
            t = t.replace(&format!("\"id\":{n}"), "\"id\":LEASE").replace(&format!("\"lease\":{n}"), "\"lease\":LEASE");
        }
    }
    let mut out = String::new();
    let mut rest = t.as_str();
    while let Some(i) = rest.find("remaining(") {
        out.push_str(&rest[..i + "remaining(".len()]);
        rest = &rest[i + "remaining(".len()..];
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        out.push('N');
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

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

//! What a Keel process knows and sets about itself, the same for every subcommand: its
//! open-files limit (raised at start as every Go program raises its own, etcd and
//! kube-apiserver among them), its command line, and the hook through which the binary's
//! log subscriber lets `/config/local/log` change the log level while the process runs.
//!
//! The log subscriber is the process's one global (`tracing` installs it once); the hook
//! to change it is therefore one too, set by `main` when it installs the subscriber. A
//! library user that installs none gets an error from [`set_log_level`], not a panic.

use std::sync::OnceLock;

/// Changes the log filter to the `tracing` directives given.
pub type LogControl = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

static LOG_CONTROL: OnceLock<LogControl> = OnceLock::new();

/// Raises the soft limit on open files to the hard limit, as the Go runtime does at the
/// start of every Go program (since Go 1.19): etcd can then hold as many client
/// connections as the hard limit allows, and so can Keel. Under systemd's defaults (soft
/// 1024, hard 524288) the soft limit would otherwise cap connections at about a thousand.
/// Returns the limit in force; failing to raise it is not fatal (the old limit stays), and
/// an unlimited hard limit is left alone (Linux refuses it as a soft limit).
pub fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(max)) = (limit.current, limit.maximum) {
        if current < max {
            limit.current = Some(max);
            if let Err(e) = setrlimit(Resource::Nofile, limit) {
                tracing::warn!(error = %e, from = current, to = max, "could not raise the open-files limit");
                return Some(current);
            }
        }
    }
    open_files_limit()
}

/// The soft limit on open files now (`None`: unlimited).
pub fn open_files_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// The process's command line as it was started, arguments that are not UTF-8 made so.
pub fn cmdline() -> Vec<String> {
    std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect()
}

/// Installs the hook that changes the log level (once; a second call is ignored).
pub fn install_log_control(control: LogControl) {
    let _ = LOG_CONTROL.set(control);
}

/// Sets the log filter to `directives` (`tracing`'s syntax).
pub fn set_log_level(directives: &str) -> Result<(), String> {
    match LOG_CONTROL.get() {
        Some(control) => control(directives),
        None => Err("this process's log level cannot be changed while it runs".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_keeps_the_soft_limit_at_most_the_hard_one() {
        let before = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        let now = raise_open_files_limit();
        if before.maximum.is_some() {
            assert_eq!(now, before.maximum, "the soft limit is raised to the hard one");
        }
    }

    #[test]
    fn the_command_line_starts_with_the_program() {
        let line = cmdline();
        assert!(!line.is_empty());
        assert_eq!(line[0], std::env::args().next().unwrap_or_default());
    }
}

//! `keel-bench floor`: the least a replicated, durable put can take on this machine, with
//! none of a real store's work, as a yardstick for both servers' one-client put.
//!
//! Four processes, as in the compare runner's one-client put: a client, a leader and two
//! followers, over loopback TCP. Each is blocking code on plain threads, so a request makes
//! the fewest hops the design allows:
//!
//! - the client sends a request (an 8-byte number and a 256-byte value) and waits for the
//!   answer;
//! - the leader sends it to both followers, then writes it to its own log file and
//!   `fdatasync`s; a follower writes, `fdatasync`s and answers;
//! - whichever of the leader's three paths (its own write, a reader thread per follower)
//!   makes the second durable copy answers the client, at once, from that thread.
//!
//! So what is left is what no server can avoid here: loopback TCP, four processes sharing
//! the cores, and two of three concurrent fsyncs on the one disk. There is no Raft state, no
//! gRPC, no state machine. The members are this binary again, run with a hidden subcommand.

use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use crate::compare::{self, idle};
use crate::report::{Recorder, Summary};

/// A request: the 8-byte sequence number, then the value.
const REQ: usize = 8 + 256;
/// Each log file: written round and round, allocated and synced beforehand so that a
/// write's `fdatasync` has no file size to update (as Keel's preallocated log segments).
const LOG_BYTES: u64 = 64 << 20;
/// Requests before the measured ones (connections, page cache and log file warm).
const WARM_UP: u64 = 500;

#[derive(Args, Clone, Debug)]
pub struct FloorOpts {
    /// Where the three log files go (the disk under test); the system's temp dir if not given.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Role {
    Leader,
    Follower,
}

/// A member process of the floor (started by `floor`, not by hand). It listens on a port
/// of its choosing and prints the address, a line on stdout, once it is ready.
#[derive(Args, Clone, Debug)]
pub struct MemberOpts {
    #[arg(value_enum)]
    pub role: Role,
    /// The log file.
    pub log: PathBuf,
    /// The followers' addresses (the leader's only).
    pub followers: Vec<String>,
}

/// Runs `puts` requests through a fresh floor setup and summarizes them. The summary's
/// extras hold the three members' CPU time and context switches per request, as the
/// compare runner records them for the servers.
pub fn run(puts: u64, o: &FloorOpts) -> anyhow::Result<Summary> {
    let dir = tempfile::tempdir_in(o.dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let log = |i: usize| dir.path().join(format!("log{i}")).display().to_string();
    let exe = std::env::current_exe()?;
    let mut members = Members(Vec::new());
    // Starts a member and returns the address it listens on, once it is ready.
    let mut start = |args: Vec<String>| -> anyhow::Result<String> {
        // A member's stdin is a pipe from this process: when this process ends, however it
        // ends, the pipe closes and the member exits (see `member`).
        let mut child =
            Command::new(&exe).arg("floor-member").args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
        let out = child.stdout.take();
        members.0.push(child);
        let mut line = String::new();
        if let Some(out) = out {
            std::io::BufReader::new(out).read_line(&mut line)?;
        }
        anyhow::ensure!(!line.trim().is_empty(), "a floor member ended before it listened");
        Ok(line.trim().to_string())
    };
    let f1 = start(vec!["follower".into(), log(1)])?;
    let f2 = start(vec!["follower".into(), log(2)])?;
    let leader = start(vec!["leader".into(), log(0), f1, f2])?;
    let pids: Vec<u32> = members.0.iter().map(Child::id).collect();

    let mut s = connect(&leader)?;
    let mut n: u64 = 0;
    let mut put = |s: &mut TcpStream| -> anyhow::Result<()> {
        let mut req = [b'v'; REQ];
        req[..8].copy_from_slice(&n.to_le_bytes());
        s.write_all(&req)?;
        let mut ack = [0u8; 8];
        s.read_exact(&mut ack)?;
        anyhow::ensure!(u64::from_le_bytes(ack) == n, "answer {} to request {n}", u64::from_le_bytes(ack));
        n += 1;
        Ok(())
    };
    for _ in 0..WARM_UP {
        put(&mut s)?;
    }
    let mut rec = Recorder::default();
    let before = idle::counters(&pids);
    let started = Instant::now();
    for _ in 0..puts {
        let t = Instant::now();
        put(&mut s)?;
        rec.record(t.elapsed());
    }
    let took = started.elapsed();
    let after = idle::counters(&pids);
    let mut summary = rec.summary("floor: replicated put, no server work", took);
    if let (Some(before), Some(after)) = (before, after) {
        compare::per_op(&mut summary, before, after);
    }
    Ok(summary)
}

/// The member processes, ended when dropped (also on an early return).
struct Members(Vec<Child>);

impl Drop for Members {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn connect(addr: &str) -> anyhow::Result<TcpStream> {
    let s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Listens on a free loopback port, tells the starting process which (the ready line), and
/// takes the one connection.
fn accept() -> anyhow::Result<TcpStream> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let mut out = std::io::stdout();
    writeln!(out, "{}", l.local_addr()?)?;
    out.flush()?;
    let (s, _) = l.accept()?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Runs a member until its peer goes away, or the process that started it does (its end of
/// the member's stdin closes), so that no member outlives a run cut short.
pub fn member(o: &MemberOpts) -> anyhow::Result<()> {
    std::thread::spawn(|| {
        let mut buf = [0u8; 64];
        while matches!(std::io::stdin().read(&mut buf), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    let r = match o.role {
        Role::Follower => follower(&o.log),
        Role::Leader => leader(&o.log, &o.followers),
    };
    // The run ends by closing the connections: not an error.
    match r {
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::UnexpectedEof) => {
            Ok(())
        }
        r => r,
    }
}

/// A log file written round and round, each write durable before it is confirmed.
struct Log {
    file: std::fs::File,
    at: u64,
}

impl Log {
    fn create(path: &Path) -> anyhow::Result<Log> {
        let mut file = std::fs::File::create(path)?;
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..LOG_BYTES >> 20 {
            file.write_all(&zeros)?;
        }
        file.sync_all()?;
        Ok(Log { file, at: 0 })
    }

    fn append(&mut self, rec: &[u8]) -> std::io::Result<()> {
        if self.at + rec.len() as u64 > LOG_BYTES {
            self.at = 0;
        }
        self.file.write_all_at(rec, self.at)?;
        self.at += rec.len() as u64;
        self.file.sync_data()
    }
}

fn follower(log: &Path) -> anyhow::Result<()> {
    let mut log = Log::create(log)?;
    let mut s = accept()?;
    let mut req = [0u8; REQ];
    loop {
        s.read_exact(&mut req)?;
        log.append(&req)?;
        s.write_all(&req[..8])?;
    }
}

/// The request being served: how many durable copies it has.
struct Round {
    seq: u64,
    copies: u32,
    client: TcpStream,
}

impl Round {
    /// Starts serving request `seq`: no durable copies yet.
    fn begin(&mut self, seq: u64) {
        self.seq = seq;
        self.copies = 0;
    }

    /// Counts a durable copy of request `seq`; the second answers the client.
    fn durable(&mut self, seq: u64) -> std::io::Result<()> {
        if seq == self.seq {
            self.copies += 1;
            if self.copies == 2 {
                self.client.write_all(&seq.to_le_bytes())?;
            }
        }
        Ok(())
    }
}

fn lock(round: &Mutex<Round>) -> anyhow::Result<std::sync::MutexGuard<'_, Round>> {
    round.lock().map_err(|_| anyhow::anyhow!("a thread of the leader panicked"))
}

fn leader(log: &Path, followers: &[String]) -> anyhow::Result<()> {
    let mut log = Log::create(log)?;
    let mut links = followers.iter().map(|f| connect(f)).collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(links.len() == 2, "the leader needs two followers");
    let mut client = accept()?;
    let round = Arc::new(Mutex::new(Round { seq: u64::MAX, copies: 0, client: client.try_clone()? }));
    for link in &links {
        let (mut link, round) = (link.try_clone()?, round.clone());
        std::thread::spawn(move || -> anyhow::Result<()> {
            let mut ack = [0u8; 8];
            loop {
                link.read_exact(&mut ack)?;
                lock(&round)?.durable(u64::from_le_bytes(ack))?;
            }
        });
    }
    let mut req = [0u8; REQ];
    loop {
        client.read_exact(&mut req)?;
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&req[..8]);
        let seq = u64::from_le_bytes(seq);
        lock(&round)?.begin(seq);
        for link in &mut links {
            link.write_all(&req)?;
        }
        log.append(&req)?;
        lock(&round)?.durable(seq)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client's end of a loopback connection whose other end a `Round` answers on.
    fn pair() -> anyhow::Result<(TcpStream, TcpStream)> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let client = TcpStream::connect(l.local_addr()?)?;
        let (server, _) = l.accept()?;
        Ok((client, server))
    }

    #[test]
    fn the_second_durable_copy_answers_once_and_stale_copies_are_ignored() -> anyhow::Result<()> {
        let (mut client, server) = pair()?;
        let mut r = Round { seq: 7, copies: 0, client: server };
        r.durable(6)?; // a late copy of the previous request
        r.durable(7)?;
        r.durable(7)?; // the second copy: the answer
        r.durable(7)?; // the third: nothing more
        r.begin(8);
        r.durable(8)?;
        r.durable(8)?;
        drop(r);
        let mut got = Vec::new();
        client.read_to_end(&mut got)?;
        let answers: Vec<u64> = got.chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default())).collect();
        assert_eq!(answers, vec![7, 8]);
        Ok(())
    }

    #[test]
    fn the_log_wraps_around_within_its_preallocated_size() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut log = Log::create(&dir.path().join("log"))?;
        log.at = LOG_BYTES - 100;
        log.append(&[1u8; REQ])?;
        assert_eq!(log.at, REQ as u64, "a record that would not fit starts over at the beginning");
        assert_eq!(std::fs::metadata(dir.path().join("log"))?.len(), LOG_BYTES, "the file never grows");
        Ok(())
    }
}

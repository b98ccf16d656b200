//! A replicated floor for `etcdctl check perf`: a three-member store that does what the
//! durability rule asks (every acknowledged write fsynced on a majority) and nothing
//! else. `null_kv` is the ceiling of the load generator and the gRPC stack alone; this
//! adds forwarding, replication and the fsyncs, which no replicated store of this design
//! can leave out.
//!
//! Three processes, each serving the etcd KV service on Keel's own serving stack (as
//! `null_kv`) on its client address:
//!
//! - a follower forwards each put to the leader over one TCP stream (all the puts queued
//!   when it writes, in one write), and answers its client when the leader's answer comes
//!   back on the same stream;
//! - the leader queues its own clients' puts and forwarded ones; one writer thread takes
//!   all that is queued as a batch, sends it to both followers, writes it to its own log
//!   and `fdatasync`s; a follower's thread writes every batch it has received, `fdatasync`s
//!   once and acknowledges the last; a batch is committed, and its puts answered, when two
//!   of the three copies are durable;
//! - each log is a preallocated file written round and round (as Keel's log segments).
//!
//! There is no Raft state, no state machine, no index and no reads: what it spends a
//! write is a yardstick for any store built this way (leader, two followers, fsync on
//! each, forwarding to the leader) on the same stack; not proven the least possible.
//!
//! ```text
//! floor_kv follower CLIENT_ADDR REPL_ADDR LOG_FILE LEADER_FORWARD_ADDR   (twice)
//! floor_kv leader CLIENT_ADDR FORWARD_ADDR LOG_FILE FOLLOWER1_REPL FOLLOWER2_REPL
//! etcdctl --endpoints=CLIENT1,CLIENT2,CLIENT3 check perf --load=l
//! ```
//!
//! Each process runs one tokio worker (as Keel's members do when three share two cores)
//! unless `TOKIO_WORKER_THREADS` says otherwise. The leader prints the batches it has
//! written and the puts in them every 10 s on stderr. `FLOOR_HOLD_US` and `FLOOR_NO_SYNC`
//! (see [`knob`]) vary the batching and drop the syncs, for measuring what each costs.
//! Measured in session 36: docs/benchmarks.md, the check-perf item of the reading.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, Read, Write};
use std::net::TcpStream as StdStream;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use keel_store::api::keepalive::Keepalive;
use keel_store::proto::etcdserverpb::kv_server::{Kv, KvServer};
use keel_store::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use keel_store::server::{serve_client, ClientListener};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};

/// Each log file's size: allocated and synced beforehand, so that `fdatasync` has no file
/// size to update.
const LOG_BYTES: u64 = 64 << 20;

type Answer = oneshot::Sender<i64>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A log file written round and round.
struct Log {
    file: std::fs::File,
    at: u64,
}

impl Log {
    fn create(path: &Path) -> std::io::Result<Log> {
        // Written out (not just sized), so that no write later allocates a block.
        let mut file = std::fs::File::create(path)?;
        std::io::copy(&mut std::io::repeat(0).take(LOG_BYTES), &mut file)?;
        file.sync_all()?;
        Ok(Log { file, at: 0 })
    }

    /// Writes `rec` at the next offset, from the start again when it would not fit.
    fn write(&mut self, rec: &[u8]) -> std::io::Result<()> {
        let len = rec.len() as u64;
        let at = if self.at + len > LOG_BYTES { 0 } else { self.at };
        self.file.write_all_at(rec, at)?;
        self.at = at + len;
        Ok(())
    }
}

/// Where a put's answer goes once its batch is committed.
enum Responder {
    /// A client of the leader itself.
    Local(Answer),
    /// A put a follower forwarded: its number on that follower's stream.
    Forwarded(mpsc::UnboundedSender<(u64, i64)>, u64),
}

impl Responder {
    fn answer(self, revision: i64) {
        match self {
            Responder::Local(tx) => {
                let _ = tx.send(revision);
            }
            Responder::Forwarded(tx, id) => {
                let _ = tx.send((id, revision));
            }
        }
    }
}

/// The leader's state shared by its tasks and threads.
#[derive(Default)]
struct Leader {
    /// Puts waiting for the writer thread.
    queue: Mutex<Vec<(Vec<u8>, Responder)>>,
    wake: Condvar,
    commit: Mutex<Commit>,
}

#[derive(Default)]
struct Commit {
    /// The last batch durable on the leader, follower 1 and follower 2.
    durable: [u64; 3],
    /// Batches sent and not yet committed: their puts' revisions and answers.
    waiting: BTreeMap<u64, Vec<(i64, Responder)>>,
}

impl Leader {
    fn push(&self, puts: impl IntoIterator<Item = (Vec<u8>, Responder)>) {
        lock(&self.queue).extend(puts);
        self.wake.notify_one();
    }

    /// Copy `who` is durable through `batch`; answers what is now on two of three.
    fn durable(&self, who: usize, batch: u64) {
        let mut c = lock(&self.commit);
        c.durable[who] = c.durable[who].max(batch);
        let mut d = c.durable;
        d.sort_unstable();
        let committed = d[1];
        while let Some(entry) = c.waiting.first_entry() {
            if *entry.key() > committed {
                break;
            }
            for (revision, r) in entry.remove() {
                r.answer(revision);
            }
        }
    }
}

/// For measuring only: `FLOOR_HOLD_US=n` makes the leader's writer wait `n` µs before
/// taking each batch (larger batches); `FLOOR_NO_SYNC=1` skips every `fdatasync` (not
/// durable: to see what the syncs cost).
fn knob(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0)
}

static NO_SYNC: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| knob("FLOOR_NO_SYNC").is_some());

/// Batches written and the puts in them, reported on stderr every 10 s by the leader.
static BATCHES: AtomicU64 = AtomicU64::new(0);
static PUTS: AtomicU64 = AtomicU64::new(0);

/// The leader's writer thread: batches what is queued, sends it, writes and syncs it.
fn write_batches(leader: &Leader, mut log: Log, mut followers: Vec<StdStream>) -> std::io::Result<()> {
    let mut batch_id = 0u64;
    let mut revision = 1i64;
    let hold = knob("FLOOR_HOLD_US").map(std::time::Duration::from_micros);
    loop {
        if let Some(hold) = hold {
            std::thread::sleep(hold);
        }
        let puts = {
            let mut q = lock(&leader.queue);
            while q.is_empty() {
                q = leader.wake.wait(q).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            std::mem::take(&mut *q)
        };
        batch_id += 1;
        let mut body = Vec::with_capacity(puts.iter().map(|(p, _)| p.len() + 4).sum());
        let mut answers = Vec::with_capacity(puts.len());
        for (put, r) in puts {
            body.extend_from_slice(&(put.len() as u32).to_le_bytes());
            body.extend_from_slice(&put);
            revision += 1;
            answers.push((revision, r));
        }
        BATCHES.fetch_add(1, Ordering::Relaxed);
        PUTS.fetch_add(answers.len() as u64, Ordering::Relaxed);
        lock(&leader.commit).waiting.insert(batch_id, answers);
        let mut frame = Vec::with_capacity(body.len() + 12);
        frame.extend_from_slice(&batch_id.to_le_bytes());
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        frame.extend_from_slice(&body);
        for f in &mut followers {
            f.write_all(&frame)?;
        }
        log.write(&body)?;
        if !*NO_SYNC {
            log.file.sync_data()?;
        }
        leader.durable(0, batch_id);
    }
}

/// A follower's replication thread: writes what the leader sends, syncs, acknowledges.
fn replicate(listener: std::net::TcpListener, mut log: Log) -> std::io::Result<()> {
    let (s, _) = listener.accept()?;
    s.set_nodelay(true)?;
    let mut acks = s.try_clone()?;
    let mut r = BufReader::with_capacity(1 << 20, s);
    let read_batch = |r: &mut BufReader<StdStream>, log: &mut Log| -> std::io::Result<u64> {
        let mut head = [0u8; 12];
        r.read_exact(&mut head)?;
        let (id, len) = head.split_at(8);
        let id = u64::from_le_bytes(id.try_into().unwrap_or_default());
        let len = u32::from_le_bytes(len.try_into().unwrap_or_default()) as usize;
        let mut body = vec![0u8; len];
        r.read_exact(&mut body)?;
        log.write(&body)?;
        Ok(id)
    };
    loop {
        let mut last = read_batch(&mut r, &mut log)?;
        // Every batch already received goes under the same sync.
        while !r.buffer().is_empty() {
            last = read_batch(&mut r, &mut log)?;
        }
        if !*NO_SYNC {
            log.file.sync_data()?;
        }
        acks.write_all(&last.to_le_bytes())?;
    }
}

/// The leader's side of a follower's forward stream.
async fn serve_forwarded(leader: Arc<Leader>, stream: tokio::net::TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, i64)>();
    tokio::spawn(async move {
        let mut buf = Vec::new();
        while let Some(first) = rx.recv().await {
            buf.clear();
            let mut next = Some(first);
            while let Some((id, revision)) = next {
                buf.extend_from_slice(&id.to_le_bytes());
                buf.extend_from_slice(&revision.to_le_bytes());
                next = rx.try_recv().ok();
            }
            if wr.write_all(&buf).await.is_err() {
                return;
            }
        }
    });
    let mut rd = tokio::io::BufReader::with_capacity(1 << 20, rd);
    loop {
        let mut puts = Vec::new();
        loop {
            let id = rd.read_u64_le().await?;
            let len = rd.read_u32_le().await? as usize;
            let mut put = vec![0u8; len];
            rd.read_exact(&mut put).await?;
            puts.push((put, Responder::Forwarded(tx.clone(), id)));
            if rd.buffer().is_empty() {
                break;
            }
        }
        leader.push(puts);
    }
}

/// A follower's forward stream to the leader: writes what is queued, matches the answers.
async fn forward(addr: String, mut rx: mpsc::UnboundedReceiver<(Vec<u8>, Answer)>) -> std::io::Result<()> {
    let stream = loop {
        match tokio::net::TcpStream::connect(&addr).await {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    };
    stream.set_nodelay(true)?;
    let (rd, mut wr) = stream.into_split();
    let waiting: Arc<Mutex<HashMap<u64, Answer>>> = Arc::default();
    let answers = waiting.clone();
    tokio::spawn(async move {
        let mut rd = tokio::io::BufReader::with_capacity(1 << 16, rd);
        while let (Ok(id), Ok(revision)) = (rd.read_u64_le().await, rd.read_i64_le().await) {
            if let Some(tx) = lock(&answers).remove(&id) {
                let _ = tx.send(revision);
            }
        }
    });
    let mut next_id = 0u64;
    let mut buf = Vec::new();
    while let Some(first) = rx.recv().await {
        buf.clear();
        {
            let mut next = Some(first);
            let mut w = lock(&waiting);
            while let Some((put, answer)) = next {
                next_id += 1;
                w.insert(next_id, answer);
                buf.extend_from_slice(&next_id.to_le_bytes());
                buf.extend_from_slice(&(put.len() as u32).to_le_bytes());
                buf.extend_from_slice(&put);
                next = rx.try_recv().ok();
            }
        }
        wr.write_all(&buf).await?;
    }
    Ok(())
}

enum Sink {
    Leader(Arc<Leader>),
    Follower(mpsc::UnboundedSender<(Vec<u8>, Answer)>),
}

struct FloorKv {
    sink: Sink,
    revision: AtomicI64,
}

impl FloorKv {
    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader { cluster_id: 1, member_id: 1, revision, raft_term: 1 })
    }
}

#[tonic::async_trait]
impl Kv for FloorKv {
    async fn range(&self, _: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let revision = self.revision.load(Ordering::Relaxed);
        Ok(Response::new(RangeResponse { header: self.header(revision), ..Default::default() }))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let put = req.into_inner().encode_to_vec();
        let (tx, rx) = oneshot::channel();
        match &self.sink {
            Sink::Leader(l) => l.push([(put, Responder::Local(tx))]),
            Sink::Follower(f) => f.send((put, tx)).map_err(|_| Status::unavailable("the forward stream is gone"))?,
        }
        let revision = rx.await.map_err(|_| Status::unavailable("no answer"))?;
        self.revision.fetch_max(revision, Ordering::Relaxed);
        Ok(Response::new(PutResponse { header: self.header(revision), prev_kv: None }))
    }

    async fn delete_range(&self, _: Request<DeleteRangeRequest>) -> Result<Response<DeleteRangeResponse>, Status> {
        let revision = self.revision.load(Ordering::Relaxed);
        Ok(Response::new(DeleteRangeResponse { header: self.header(revision), ..Default::default() }))
    }

    async fn txn(&self, _: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Err(Status::unimplemented("floor server: txn"))
    }

    async fn compact(&self, _: Request<CompactionRequest>) -> Result<Response<CompactionResponse>, Status> {
        Err(Status::unimplemented("floor server: compact"))
    }
}

async fn serve(addr: &str, sink: Sink) -> anyhow::Result<()> {
    let kv = FloorKv { sink, revision: AtomicI64::new(1) };
    let router = tonic::service::Routes::new(KvServer::new(kv)).into_axum_router();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    serve_client(ClientListener(listener), router, stop, Keepalive::etcd_default(), |_| None).await;
    Ok(())
}

async fn run(args: Vec<String>) -> anyhow::Result<()> {
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["follower", client, repl, log, leader] => {
            let log = Log::create(Path::new(log))?;
            let listener = std::net::TcpListener::bind(repl)?;
            std::thread::spawn(move || replicate(listener, log));
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(forward(leader.to_string(), rx));
            serve(client, Sink::Follower(tx)).await
        }
        ["leader", client, forward_addr, log, f1, f2] => {
            let log = Log::create(Path::new(log))?;
            let leader = Arc::new(Leader::default());
            let mut followers = Vec::new();
            for (i, f) in [f1, f2].into_iter().enumerate() {
                let s = StdStream::connect(f)?;
                s.set_nodelay(true)?;
                let (mut acks, l) = (s.try_clone()?, leader.clone());
                std::thread::spawn(move || {
                    let mut ack = [0u8; 8];
                    while acks.read_exact(&mut ack).is_ok() {
                        l.durable(i + 1, u64::from_le_bytes(ack));
                    }
                });
                followers.push(s);
            }
            let l = leader.clone();
            std::thread::spawn(move || write_batches(&l, log, followers));
            std::thread::spawn(|| loop {
                std::thread::sleep(std::time::Duration::from_secs(10));
                let (b, p) = (BATCHES.load(Ordering::Relaxed), PUTS.load(Ordering::Relaxed));
                eprintln!("batches {b}, puts {p}");
            });
            let forwards = tokio::net::TcpListener::bind(forward_addr).await?;
            let l = leader.clone();
            tokio::spawn(async move {
                while let Ok((s, _)) = forwards.accept().await {
                    tokio::spawn(serve_forwarded(l.clone(), s));
                }
            });
            serve(client, Sink::Leader(leader)).await
        }
        _ => anyhow::bail!(
            "usage: floor_kv follower CLIENT REPL LOG LEADER_FORWARD | floor_kv leader CLIENT FORWARD LOG FOLLOWER1_REPL FOLLOWER2_REPL"
        ),
    }
}

fn main() -> anyhow::Result<()> {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        rt.worker_threads(1);
    }
    rt.build()?.block_on(run(std::env::args().skip(1).collect()))
}

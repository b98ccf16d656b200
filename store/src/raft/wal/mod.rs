//! The Raft log on disk: a chain of preallocated segment files of checksummed records.
//!
//! Why not RocksDB: a synced RocksDB write appends to a growing WAL file, so every fsync
//! also commits the file's new size to the ext4 journal, and the journal is one queue for
//! the whole filesystem; RocksDB also flushes and compacts log entries that are deleted a
//! few seconds later. Measured on this project's machine with the three members on one
//! disk, each member's synced one-entry write took p50 0.43–0.48 ms under one client's
//! puts, against about 0.25 ms for a write and fdatasync into a file whose space is already
//! written. etcd keeps its Raft log in a WAL of its own for the same reasons.
//!
//! Layout: `member/wal/<seq>.seg`, segments with consecutive sequence numbers. Every
//! segment starts with a header record holding its sequence number and the log's state so
//! far ([`Meta`]: vote, committed hint, purge point, member identity), then records
//! ([`record`]) in the order they were written, and ends, when full, with an end record.
//! Writes cover whole pages from the start of the page the write begins in (the part of
//! that page already written is rewritten with the same bytes), padded with zeros, then
//! `fdatasync`: no read-modify-write of a page that fell out of the cache, and after the
//! last record there are only zeros up to the next page.
//!
//! Recovery takes the longest run of consecutive segments with valid headers that ends at
//! the newest one, reads it forward, and stops at the first record that is not valid or
//! after a segment with no end record; whatever follows was never acknowledged. It then
//! ends the last segment there and starts a new one, so nothing is ever appended after
//! bytes that were not checked. Segments that are wholly purged leave the log by being
//! renamed (a prefix of the chain at a time, oldest first) and are reused as later
//! segments (see [`segment`]).
//!
//! A failed write or fsync fails every later write too: after a failed fsync the kernel
//! may have dropped the dirty pages, so retrying could report success for lost data.

mod record;
mod segment;

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::metrics::{Timer, HOT};

use record::{Kind, END_LEN};
use segment::{Preparer, PAGE};

/// The log's own state, apart from its entries: what every segment header carries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub vote: Option<Vec<u8>>,
    pub committed: Option<Vec<u8>>,
    /// The last purged index and its (encoded) log id.
    pub purged: Option<(u64, Vec<u8>)>,
    /// Member id and cluster id.
    pub identity: Option<(u64, u64)>,
}

/// One thing to write.
#[derive(Clone, Copy, Debug)]
pub enum Record<'a> {
    /// An entry: its index and encoded payload. Entries from this index on are replaced.
    Entry(u64, &'a [u8]),
    Vote(&'a [u8]),
    Committed(&'a [u8]),
    /// Entries from this index on are gone.
    Truncate(u64),
    /// Entries up to this index are gone; the encoded log id of the last one.
    Purge(u64, &'a [u8]),
    Identity(u64, u64),
}

/// Segment sizes: the first segment is small (a member that writes little writes little),
/// each next one twice the last, up to `max_segment`.
#[derive(Clone, Copy, Debug)]
pub struct WalOptions {
    pub first_segment: u64,
    pub max_segment: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions { first_segment: 4 << 20, max_segment: 64 << 20 }
    }
}

/// Where an entry's record is.
#[derive(Clone, Copy, Debug)]
struct Loc {
    seq: u64,
    at: u64,
    len: usize,
}

struct Segment {
    file: Arc<File>,
    /// The highest entry index written in it.
    last_index: Option<u64>,
}

/// What readers see: written entries, the files they are in, and the durable meta.
#[derive(Default)]
struct Layout {
    entries: BTreeMap<u64, Loc>,
    segments: BTreeMap<u64, Segment>,
    meta: Meta,
}

/// The segment being written.
struct Active {
    seq: u64,
    file: Arc<File>,
    size: u64,
    /// Where the next record goes.
    at: u64,
    /// The bytes of `at`'s page before `at`: rewritten with the next write.
    page: Vec<u8>,
}

struct Writer {
    active: Active,
    /// The meta as of the last record written (headers carry it).
    meta: Meta,
    next_size: u64,
    failed: Option<String>,
}

pub struct Wal {
    dir: PathBuf,
    opts: WalOptions,
    writer: Mutex<Writer>,
    layout: RwLock<Layout>,
    prep: Preparer,
}

/// A change to the layout, in write order.
enum Effect {
    Put(u64, Loc),
    Truncate(u64),
    Purge(u64),
}

fn corrupt(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn round_up(n: u64) -> u64 {
    n.div_ceil(PAGE) * PAGE
}

/// Writes `buf`, which starts at page-aligned `start`, padded with zeros to a whole page
/// (or the end of the segment).
fn write_pages(file: &File, start: u64, buf: &mut Vec<u8>, size: u64) -> io::Result<()> {
    let n = buf.len();
    let end = round_up(start + n as u64).min(size);
    buf.resize((end - start) as usize, 0);
    let res = file.write_all_at(buf, start);
    buf.truncate(n);
    res
}

impl Meta {
    /// The header body: the sequence number, then the meta as records of their own kinds.
    fn header(&self, seq: u64) -> Vec<u8> {
        let mut b = seq.to_le_bytes().to_vec();
        let mut field = |kind: Kind, parts: &[&[u8]]| {
            let len: usize = parts.iter().map(|p| p.len()).sum();
            b.push(kind as u8);
            b.extend_from_slice(&(len as u32).to_le_bytes());
            for p in parts {
                b.extend_from_slice(p);
            }
        };
        if let Some(v) = &self.vote {
            field(Kind::Vote, &[v]);
        }
        if let Some(c) = &self.committed {
            field(Kind::Committed, &[c]);
        }
        if let Some((i, id)) = &self.purged {
            field(Kind::Purge, &[&i.to_le_bytes(), id]);
        }
        if let Some((m, c)) = self.identity {
            field(Kind::Identity, &[&m.to_le_bytes(), &c.to_le_bytes()]);
        }
        b
    }

    /// Reads a header body: its sequence number and meta.
    fn from_header(body: &[u8]) -> Option<(u64, Meta)> {
        let seq = record::u64_at(body, 0)?;
        let mut meta = Meta::default();
        let mut at = 8;
        while at < body.len() {
            let kind = *body.get(at)?;
            let len = u32::from_le_bytes(body.get(at + 1..at + 5)?.try_into().ok()?) as usize;
            let v = body.get(at + 5..at + 5 + len)?;
            meta.apply(kind, v)?;
            at += 5 + len;
        }
        Some((seq, meta))
    }

    /// Takes in a meta record (kind as a byte, body). `None` if it is malformed.
    fn apply(&mut self, kind: u8, v: &[u8]) -> Option<()> {
        match kind {
            k if k == Kind::Vote as u8 => self.vote = Some(v.to_vec()),
            k if k == Kind::Committed as u8 => self.committed = Some(v.to_vec()),
            k if k == Kind::Purge as u8 => self.purged = Some((record::u64_at(v, 0)?, v.get(8..)?.to_vec())),
            k if k == Kind::Identity as u8 => self.identity = Some((record::u64_at(v, 0)?, record::u64_at(v, 8)?)),
            _ => return None,
        }
        Some(())
    }
}

impl Record<'_> {
    /// Its kind and body parts.
    fn framed<'s>(&'s self, scratch: &'s mut [u8; 16]) -> (Kind, [&'s [u8]; 2]) {
        match *self {
            Record::Entry(i, p) => {
                scratch[..8].copy_from_slice(&i.to_le_bytes());
                (Kind::Entry, [&scratch[..8], p])
            }
            Record::Vote(v) => (Kind::Vote, [v, &[]]),
            Record::Committed(c) => (Kind::Committed, [c, &[]]),
            Record::Truncate(i) => {
                scratch[..8].copy_from_slice(&i.to_le_bytes());
                (Kind::Truncate, [&scratch[..8], &[]])
            }
            Record::Purge(i, id) => {
                scratch[..8].copy_from_slice(&i.to_le_bytes());
                (Kind::Purge, [&scratch[..8], id])
            }
            Record::Identity(m, c) => {
                scratch[..8].copy_from_slice(&m.to_le_bytes());
                scratch[8..].copy_from_slice(&c.to_le_bytes());
                (Kind::Identity, [&scratch[..], &[]])
            }
        }
    }
}

impl Layout {
    fn apply(&mut self, e: Effect) {
        match e {
            Effect::Put(i, loc) => {
                let _ = self.entries.split_off(&i);
                self.entries.insert(i, loc);
                if let Some(s) = self.segments.get_mut(&loc.seq) {
                    s.last_index = s.last_index.max(Some(i));
                }
            }
            Effect::Truncate(from) => {
                let _ = self.entries.split_off(&from);
            }
            Effect::Purge(upto) => {
                self.entries = self.entries.split_off(&(upto.saturating_add(1)));
            }
        }
    }

    /// Takes out the oldest segments (before `active`) that hold no entry after `upto`.
    fn retire(&mut self, upto: u64, active: u64) -> Vec<u64> {
        let mut out = Vec::new();
        for (&seq, s) in &self.segments {
            if seq >= active || s.last_index.is_some_and(|i| i > upto) {
                break;
            }
            out.push(seq);
        }
        for seq in &out {
            self.segments.remove(seq);
        }
        out
    }
}

impl Wal {
    /// Opens the log in `dir` (creating it if needed), recovering what was written.
    pub fn open(dir: &Path, opts: WalOptions) -> io::Result<Wal> {
        std::fs::create_dir_all(dir)?;
        let found = recover::scan(dir)?;
        let prep = Preparer::start(dir, found.free)?;
        let mut layout = Layout { entries: found.entries, segments: BTreeMap::new(), meta: found.meta.clone() };
        for (seq, last_index) in found.segments {
            let file =
                Arc::new(std::fs::OpenOptions::new().read(true).write(true).open(dir.join(segment::seg_name(seq)))?);
            layout.segments.insert(seq, Segment { file, last_index });
        }
        // Always go on in a new segment: after the last valid record may lie bytes of a
        // write that never completed, and nothing is ever appended after unchecked bytes.
        let seq = found.end.map_or(1, |(last, _, _)| last + 1);
        if let Some((last, at, false)) = found.end {
            let seg = layout.segments.get(&last).ok_or_else(|| corrupt("the last segment went missing".into()))?;
            let start = at / PAGE * PAGE;
            let mut buf = vec![0u8; (at - start) as usize];
            seg.file.read_exact_at(&mut buf, start)?;
            record::put(&mut buf, last, Kind::End, &[]);
            let size = seg.file.metadata()?.len();
            write_pages(&seg.file, start, &mut buf, size)?;
            seg.file.sync_data()?;
        }
        let header = found.meta.header(seq);
        let size = opts.first_segment.max(round_up((record::framed_len(header.len()) + END_LEN) as u64));
        prep.ask(seq, size, false);
        let spare = prep.take(seq, size)?;
        let mut page = Vec::new();
        record::put(&mut page, seq, Kind::Header, &[&header]);
        write_pages(&spare.file, 0, &mut page, spare.size)?;
        spare.file.sync_data()?;
        let file = Arc::new(spare.file);
        layout.segments.insert(seq, Segment { file: file.clone(), last_index: None });
        let at = page.len() as u64;
        let active = Active { seq, file, size: spare.size, at, page };
        let next_size = (size * 2).min(opts.max_segment.max(size));
        // The next segment is prepared now, while the member starts, rather than halfway
        // through this one: on a fresh member that is in its first few thousand writes, and
        // with nothing freed yet to reuse it is zero-filled, on every member at the same
        // moment (8 MiB, 70-90 ms; twice in four one-client runs it was a burst of the
        // run's slowest puts).
        prep.ask(seq + 1, next_size, true);
        let writer = Writer { active, meta: found.meta, next_size, failed: None };
        Ok(Wal { dir: dir.to_path_buf(), opts, writer: Mutex::new(writer), layout: RwLock::new(layout), prep })
    }

    /// Writes `records` in order, durably, and makes them visible to readers. A failure
    /// fails every later write as well.
    pub fn write(&self, records: &[Record<'_>]) -> io::Result<()> {
        let mut w = self.writer.lock();
        if let Some(e) = &w.failed {
            return Err(io::Error::other(format!("an earlier log write failed: {e}")));
        }
        let res = self.write_locked(&mut w, records);
        if let Err(e) = &res {
            w.failed = Some(e.to_string());
        }
        res
    }

    fn write_locked(&self, w: &mut Writer, records: &[Record<'_>]) -> io::Result<()> {
        let mut effects = Vec::with_capacity(records.len());
        let mut ended: Vec<Arc<File>> = Vec::new();
        let mut started: Vec<(u64, Arc<File>)> = Vec::new();
        let mut buf = std::mem::take(&mut w.active.page);
        let mut start = w.active.at - buf.len() as u64;
        let mut purge = None;
        let mut scratch = [0u8; 16];
        let mut written = 0;
        for rec in records {
            let (kind, parts) = rec.framed(&mut scratch);
            let need = record::framed_len(parts[0].len() + parts[1].len()) as u64;
            if w.active.at + need + END_LEN as u64 > w.active.size {
                record::put(&mut buf, w.active.seq, Kind::End, &[]);
                write_pages(&w.active.file, start, &mut buf, w.active.size)?;
                ended.push(w.active.file.clone());
                let seq = w.active.seq + 1;
                let header = w.meta.header(seq);
                let fits = round_up(record::framed_len(header.len()) as u64 + need + END_LEN as u64);
                self.prep.ask(seq, w.next_size.max(fits), false);
                let spare = self.prep.take(seq, fits)?;
                w.next_size = (w.next_size * 2).min(self.opts.max_segment.max(w.next_size));
                buf.clear();
                start = 0;
                record::put(&mut buf, seq, Kind::Header, &[&header]);
                let file = Arc::new(spare.file);
                started.push((seq, file.clone()));
                w.active = Active { seq, file, size: spare.size, at: buf.len() as u64, page: Vec::new() };
            }
            let at = w.active.at;
            record::put(&mut buf, w.active.seq, kind, &parts);
            w.active.at += need;
            written += need;
            match *rec {
                Record::Entry(i, _) => effects.push(Effect::Put(i, Loc { seq: w.active.seq, at, len: need as usize })),
                Record::Truncate(i) => effects.push(Effect::Truncate(i)),
                Record::Purge(i, id) => {
                    effects.push(Effect::Purge(i));
                    w.meta.purged = Some((i, id.to_vec()));
                    purge = Some(i);
                }
                Record::Vote(v) => w.meta.vote = Some(v.to_vec()),
                Record::Committed(c) => w.meta.committed = Some(c.to_vec()),
                Record::Identity(m, c) => w.meta.identity = Some((m, c)),
            }
        }
        write_pages(&w.active.file, start, &mut buf, w.active.size)?;
        let page_start = w.active.at / PAGE * PAGE;
        w.active.page = buf[(page_start - start) as usize..].to_vec();
        {
            let _fsync = Timer::start(&HOT.wal_fsync);
            for f in &ended {
                f.sync_data()?;
            }
            w.active.file.sync_data()?;
        }
        HOT.wal_write_bytes.inc_by(written);
        if w.active.at > w.active.size / 2 {
            // Paced: half a segment's writes are time enough.
            self.prep.ask(w.active.seq + 1, w.next_size, true);
        }
        let retired = {
            let mut layout = self.layout.write();
            for (seq, file) in started {
                layout.segments.insert(seq, Segment { file, last_index: None });
            }
            for e in effects {
                layout.apply(e);
            }
            layout.meta = w.meta.clone();
            purge.map(|upto| layout.retire(upto, w.active.seq)).unwrap_or_default()
        };
        for seq in retired {
            self.prep.free(self.dir.join(segment::seg_name(seq)));
        }
        Ok(())
    }

    /// The durable meta.
    pub fn meta(&self) -> Meta {
        self.layout.read().meta.clone()
    }

    /// The bytes of the records of the entries from index `from` on.
    #[cfg(test)]
    pub fn bytes_from(&self, from: u64) -> u64 {
        self.layout.read().entries.range(from..).map(|(_, loc)| loc.len as u64).sum()
    }

    /// The highest index `i` such that the entries after `i` hold at least `keep` bytes: the
    /// log can be purged through `i` and still keep `keep` bytes of its newest entries.
    /// `None` if the whole log holds less.
    pub fn purge_point(&self, keep: u64) -> Option<u64> {
        let layout = self.layout.read();
        let mut kept = 0u64;
        for (&i, loc) in layout.entries.iter().rev() {
            if kept >= keep {
                return Some(i);
            }
            kept += loc.len as u64;
        }
        None
    }

    /// The index of the last entry, if any.
    pub fn last_index(&self) -> Option<u64> {
        self.layout.read().entries.keys().next_back().copied()
    }

    /// The payloads of the written entries with indexes in `[from, to)`, in order.
    pub fn read(&self, from: u64, to: u64) -> io::Result<Vec<(u64, Vec<u8>)>> {
        let wanted: Vec<(u64, Loc, Arc<File>)> = {
            let layout = self.layout.read();
            let mut v = Vec::new();
            for (&i, &loc) in layout.entries.range(from..to.max(from)) {
                let Some(seg) = layout.segments.get(&loc.seq) else {
                    return Err(corrupt(format!("entry {i} is in segment {} which is gone", loc.seq)));
                };
                v.push((i, loc, seg.file.clone()));
            }
            v
        };
        let mut out = Vec::with_capacity(wanted.len());
        for (i, loc, file) in wanted {
            let mut rec = vec![0u8; loc.len];
            file.read_exact_at(&mut rec, loc.at)?;
            let body = record::body_of(&rec, loc.seq, Kind::Entry)
                .filter(|b| record::u64_at(b, 0) == Some(i))
                .ok_or_else(|| corrupt(format!("entry {i} in segment {} does not read back", loc.seq)))?;
            out.push((i, body[8..].to_vec()));
        }
        Ok(out)
    }

    /// Stops the thread that prepares segments.
    pub fn close(&self) {
        self.prep.stop();
    }
}

mod recover;

#[cfg(test)]
mod tests;

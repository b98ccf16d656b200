//! Segment files: names, preparation, reuse, and the thread that prepares the next one.
//!
//! A segment is only ever written into space that is already allocated and initialised: a
//! new file is filled with zeros and synced before it is used, and a purged segment is
//! renamed and reused as a later one instead of being deleted. So a log fsync never has a
//! size change or an extent conversion to record (on ext4 that means no journal commit,
//! which all three members on one disk would otherwise queue for), and no file deletion
//! (which with `discard` stalls every other fsync for tens of milliseconds) happens while
//! the log is busy. Renames are made durable by syncing the directory, all off the write
//! path: a spare for the next segment is prepared while the current one fills.
//!
//! Zero-filling a new segment in the background is paced: a small chunk at a time, each
//! synced, with a pause as long as the chunk took. All three members of a cluster on one
//! disk prepare their spares at the same log position, and 8 MiB written and synced a
//! megabyte at a time held up every log fsync for the 25 ms it took (about ten of a
//! single client's puts went from 1.1 ms to 2-7 ms, a tenth of its slowest 1%). A paced
//! chunk delays an fsync by well under a millisecond. When the writer needs the spare
//! before it is done, the rest is written at full speed.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// Segment sizes are multiples of this, and writes cover whole pages of it.
pub const PAGE: u64 = 4096;
/// Free files kept for reuse at most; more are deleted.
const KEEP_FREE: usize = 4;
/// What a new segment is zero-filled and synced in: a megabyte when someone waits for it,
/// a small chunk when it is prepared ahead (paced, see the module comment).
const CHUNK: usize = 1 << 20;
const PACED_CHUNK: usize = 128 << 10;

/// A name for a file no longer in the log, kept for reuse.
pub fn free_name(n: u64) -> String {
    format!("free-{n:016x}")
}

pub fn seg_name(seq: u64) -> String {
    format!("{seq:016x}.seg")
}

/// The sequence number in a segment's file name.
pub fn parse_seg_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".seg")?;
    (hex.len() == 16).then(|| u64::from_str_radix(hex, 16).ok()).flatten()
}

/// Makes renames and new names in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

/// A file ready to become segment `seq`: under its name already, `size` bytes, all of them
/// written and synced.
pub struct Spare {
    pub seq: u64,
    pub file: File,
    pub size: u64,
}

/// Creates segment file `seq` of `size` bytes filled with zeros, synced a chunk at a time
/// (so the writeback comes in small bursts), under a temporary name until it is complete.
/// With `paced`, chunks are small and each is followed by a pause as long as it took, until
/// `paced` is cleared (someone is waiting for the file).
pub fn create(dir: &Path, seq: u64, size: u64, paced: Option<&AtomicBool>) -> io::Result<Spare> {
    let tmp = dir.join(format!("{seq:016x}.tmp"));
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&tmp)?;
    let zeros = vec![0u8; CHUNK];
    let mut at = 0;
    while at < size {
        let pace = paced.is_some_and(|p| p.load(Ordering::Acquire));
        let n = (size - at).min(if pace { PACED_CHUNK } else { CHUNK } as u64);
        let started = Instant::now();
        file.write_all_at(&zeros[..n as usize], at)?;
        file.sync_data()?;
        at += n;
        if pace && at < size {
            std::thread::sleep(started.elapsed().min(Duration::from_millis(20)));
        }
    }
    std::fs::rename(&tmp, dir.join(seg_name(seq)))?;
    sync_dir(dir)?;
    Ok(Spare { seq, file, size })
}

enum Job {
    /// Have a spare of at least this size ready for this segment (paced, if asked ahead).
    Spare(u64, u64),
    /// A segment no longer needed: keep it for reuse.
    Free(PathBuf),
    Stop,
}

#[derive(Default)]
struct Ready {
    /// The segment a spare is being prepared for, until it is taken.
    asked: Option<u64>,
    spare: Option<io::Result<Spare>>,
}

/// The thread that prepares spares and keeps freed segments for reuse.
pub struct Preparer {
    dir: PathBuf,
    tx: mpsc::Sender<Job>,
    ready: Arc<(Mutex<Ready>, Condvar)>,
    /// Set while the spare being prepared is not yet needed: it may be paced.
    paced: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Preparer {
    /// Starts the thread; `free` are files in `dir` that may be reused: free files, or
    /// segment files no longer in the log, which must have been renamed out of the log
    /// already (see [`free_name`]) or be renamed before anything else is written.
    pub fn start(dir: &Path, free: Vec<PathBuf>) -> io::Result<Preparer> {
        let (tx, rx) = mpsc::channel();
        let ready: Arc<(Mutex<Ready>, Condvar)> = Arc::default();
        let paced = Arc::new(AtomicBool::new(false));
        let (d, r, p) = (dir.to_path_buf(), ready.clone(), paced.clone());
        let thread = std::thread::Builder::new().name("keel-log-prep".into()).spawn(move || {
            crate::raft::background_priority();
            let mut pool = Pool { dir: d, free: Vec::new(), next: 1 };
            for path in free {
                pool.keep(path);
            }
            for job in rx {
                match job {
                    Job::Spare(seq, size) => {
                        let spare = pool.spare(seq, size, &p);
                        let (lock, cv) = &*r;
                        lock.lock().spare = Some(spare);
                        cv.notify_all();
                    }
                    Job::Free(path) => pool.keep(path),
                    Job::Stop => return,
                }
            }
        })?;
        Ok(Preparer { dir: dir.to_path_buf(), tx, ready, paced, thread: Mutex::new(Some(thread)) })
    }

    /// Starts preparing a spare for segment `seq` unless one is already on its way; `ahead`
    /// if it is not needed yet, so its writes may be paced.
    pub fn ask(&self, seq: u64, size: u64, ahead: bool) {
        let mut ready = self.ready.0.lock();
        if ready.asked.is_none() {
            self.paced.store(ahead, Ordering::Release);
            if self.tx.send(Job::Spare(seq, size)).is_ok() {
                ready.asked = Some(seq);
            }
        }
    }

    /// The spare for segment `seq`, of at least `need` bytes: the one asked for if it is that
    /// big (waiting for it if need be; it may be smaller than asked, see [`Pool::spare`]),
    /// else one of `need` bytes made here and now.
    pub fn take(&self, seq: u64, need: u64) -> io::Result<Spare> {
        let (lock, cv) = &*self.ready;
        let mut ready = lock.lock();
        if ready.asked.is_some() {
            self.paced.store(false, Ordering::Release);
            while ready.spare.is_none() {
                cv.wait(&mut ready);
            }
            ready.asked = None;
            if let Some(Ok(spare)) = ready.spare.take() {
                if spare.seq == seq && spare.size >= need {
                    return Ok(spare);
                }
            }
        }
        drop(ready);
        create(&self.dir, seq, need, None)
    }

    /// Keeps a segment file that is no longer part of the log, for reuse.
    pub fn free(&self, path: PathBuf) {
        let _ = self.tx.send(Job::Free(path));
    }

    pub fn stop(&self) {
        if let Some(t) = self.thread.lock().take() {
            let _ = self.tx.send(Job::Stop);
            let _ = t.join();
        }
    }
}

impl Drop for Preparer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Freed files, renamed out of the log (`free-<n>`), smallest first.
struct Pool {
    dir: PathBuf,
    free: Vec<(PathBuf, u64)>,
    next: u64,
}

/// The number in a free file's name.
pub fn parse_free_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("free-")?;
    (hex.len() == 16).then(|| u64::from_str_radix(hex, 16).ok()).flatten()
}

impl Pool {
    /// Keeps `path` for reuse, renaming it out of the log first unless it is a free file
    /// already. Renames made while the log is open are made durable at once, so a segment
    /// that left the log never comes back after a crash. With the pool full, the smallest
    /// file goes: segments grow to their largest size and stay there, so the small first
    /// ones would otherwise hold the pool while every freed full-size segment was deleted
    /// and its successor zero-filled anew (a deletion and 64 MiB of writes per segment, on
    /// each member at the same log position).
    fn keep(&mut self, path: PathBuf) {
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if size == 0 || size % PAGE != 0 {
            let _ = std::fs::remove_file(&path);
            return;
        }
        if self.free.len() >= KEEP_FREE {
            // `free` is sorted by size, smallest first.
            if self.free.first().is_some_and(|(_, smallest)| *smallest < size) {
                let (smallest, _) = self.free.remove(0);
                let _ = std::fs::remove_file(smallest);
            } else {
                let _ = std::fs::remove_file(&path);
                return;
            }
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let path = match parse_free_name(name) {
            Some(n) => {
                self.next = self.next.max(n + 1);
                path
            }
            None => {
                let to = self.dir.join(free_name(self.next));
                self.next += 1;
                if std::fs::rename(&path, &to).and_then(|()| sync_dir(&self.dir)).is_err() {
                    let _ = std::fs::remove_file(&path);
                    return;
                }
                to
            }
        };
        self.free.push((path, size));
        self.free.sort_by_key(|(_, s)| *s);
    }

    /// A spare for `seq`: the smallest free file of at least `size` bytes, else the largest
    /// free file, else a new one. A smaller segment than asked for beats a new file: while
    /// the log grows (4, 8, ... 64 MiB segments), the first segments freed by a purge were
    /// never big enough again, and each larger segment was zero-filled while they sat in the
    /// pool. Zero-filling an 8 MiB spare put 38 of a one-client run's 100 slowest puts in its
    /// 90 ms, a 64 MiB one 37 in 0.6 s, with freed 4-32 MiB files unused (all three members
    /// fill theirs at the same log position). The writer takes a smaller spare as long as
    /// what it must write fits ([`Preparer::take`]).
    fn spare(&mut self, seq: u64, size: u64, paced: &AtomicBool) -> io::Result<Spare> {
        let fitting = self.free.iter().position(|(_, s)| *s >= size);
        if let Some(i) = fitting.or(self.free.len().checked_sub(1)) {
            let (path, size) = self.free.remove(i);
            let to = self.dir.join(seg_name(seq));
            std::fs::rename(&path, &to)?;
            sync_dir(&self.dir)?;
            return Ok(Spare { seq, file: open_rw(&to)?, size });
        }
        let started = Instant::now();
        let spare = create(&self.dir, seq, size, Some(paced))?;
        tracing::info!(
            seq,
            mib = size >> 20,
            took_ms = started.elapsed().as_millis() as u64,
            "log segment zero-filled"
        );
        Ok(spare)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_seg_name(&seg_name(0x1234)), Some(0x1234));
        assert_eq!(parse_seg_name("0000000000000001.free"), None);
        assert_eq!(parse_seg_name("1.seg"), None);
    }

    #[test]
    fn a_full_pool_gives_up_its_smallest_file_for_a_larger_one() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let files = || -> io::Result<usize> { Ok(std::fs::read_dir(dir.path())?.count()) };
        let mut pool = Pool { dir: dir.path().to_path_buf(), free: Vec::new(), next: 1 };
        // Segments as the log makes them: growing, here one page more each time.
        let n = KEEP_FREE as u64;
        for seq in 1..=n {
            create(dir.path(), seq, seq * PAGE, None)?;
            pool.keep(dir.path().join(seg_name(seq)));
        }
        // Smaller than everything kept: not kept.
        create(dir.path(), n + 1, PAGE, None)?;
        pool.keep(dir.path().join(seg_name(n + 1)));
        assert_eq!(files()?, KEEP_FREE);
        // A full-size segment freed: kept, in place of the smallest file.
        let big = create(dir.path(), n + 2, 4 * n * PAGE, None)?;
        big.file.write_all_at(b"big", 0)?;
        pool.keep(dir.path().join(seg_name(n + 2)));
        let sizes: Vec<u64> = pool.free.iter().map(|(_, s)| *s / PAGE).collect();
        assert_eq!(sizes, (2..=n).chain([4 * n]).collect::<Vec<_>>());
        assert_eq!(files()?, KEEP_FREE);
        // The next full-size segment is that file, not a new one.
        let spare = pool.spare(n + 3, 4 * n * PAGE, &AtomicBool::new(false))?;
        let mut head = [0u8; 3];
        spare.file.read_exact_at(&mut head, 0)?;
        assert_eq!(&head, b"big");
        Ok(())
    }

    #[test]
    fn the_largest_free_file_is_used_before_a_bigger_one_is_made() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut pool = Pool { dir: dir.path().to_path_buf(), free: Vec::new(), next: 1 };
        for (seq, pages) in [(1, 2), (2, 3)] {
            create(dir.path(), seq, pages * PAGE, None)?.file.write_all_at(&[seq as u8], 0)?;
            pool.keep(dir.path().join(seg_name(seq)));
        }
        let spare = pool.spare(3, 8 * PAGE, &AtomicBool::new(false))?;
        let mut head = [0u8; 1];
        spare.file.read_exact_at(&mut head, 0)?;
        assert_eq!((spare.size, head[0]), (3 * PAGE, 2), "the 3-page file, not a new 8-page one");
        assert_eq!(std::fs::read_dir(dir.path())?.count(), 2, "no file was made");
        // The writer takes it only if what it must write fits.
        let prep = Preparer::start(dir.path(), vec![dir.path().join(free_name(1))])?;
        prep.ask(4, 8 * PAGE, true);
        assert_eq!(prep.take(4, 2 * PAGE)?.size, 2 * PAGE, "the free 2-page file holds 2 pages");
        prep.ask(5, 8 * PAGE, true);
        assert_eq!(prep.take(5, 4 * PAGE)?.size, 8 * PAGE, "nothing free: made at the size asked");
        prep.free(dir.path().join(seg_name(4)));
        prep.ask(6, 8 * PAGE, true);
        assert_eq!(prep.take(6, 4 * PAGE)?.size, 4 * PAGE, "the free 2-page file is too small: made anew");
        Ok(())
    }

    #[test]
    fn freed_files_are_reused_before_new_ones_are_made() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let first = create(dir.path(), 1, 2 * PAGE, None)?;
        assert_eq!(std::fs::read(dir.path().join(seg_name(1)))?, vec![0; 2 * PAGE as usize]);
        first.file.write_all_at(b"old", 0)?;
        let prep = Preparer::start(dir.path(), Vec::new())?;
        prep.free(dir.path().join(seg_name(1)));
        prep.ask(2, PAGE, true);
        let spare = prep.take(2, PAGE)?;
        assert_eq!((spare.seq, spare.size), (2, 2 * PAGE), "the freed file, renamed");
        let mut head = [0u8; 3];
        spare.file.read_exact_at(&mut head, 0)?;
        assert_eq!(&head, b"old");
        assert!(!dir.path().join(seg_name(1)).exists());
        // Nothing asked: made on the spot.
        let made = prep.take(3, 3 * PAGE)?;
        assert_eq!((made.seq, made.size), (3, 3 * PAGE));
        prep.stop();
        Ok(())
    }

    #[test]
    fn a_paced_spare_is_whole_whether_taken_early_or_left_to_finish() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let prep = Preparer::start(dir.path(), Vec::new())?;
        // Taken at once: the rest is written unpaced.
        let size = 64 << 20;
        prep.ask(1, size, true);
        let spare = prep.take(1, size)?;
        assert_eq!((spare.seq, spare.size), (1, size));
        assert_eq!(spare.file.metadata()?.len(), size);
        let mut tail = vec![1u8; PACED_CHUNK];
        spare.file.read_exact_at(&mut tail, size - PACED_CHUNK as u64)?;
        assert!(tail.iter().all(|b| *b == 0));
        assert!(!dir.path().join(format!("{:016x}.tmp", 1)).exists());
        assert!(dir.path().join(seg_name(1)).exists());
        // A small paced spare, left to finish on its own, is whole too.
        prep.ask(2, 4 * PACED_CHUNK as u64, true);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !dir.path().join(seg_name(2)).exists() {
            assert!(std::time::Instant::now() < deadline, "the paced spare never appeared");
            std::thread::sleep(Duration::from_millis(5));
        }
        let spare = prep.take(2, 4 * PACED_CHUNK as u64)?;
        assert_eq!(std::fs::read(dir.path().join(seg_name(2)))?, vec![0; 4 * PACED_CHUNK]);
        assert_eq!(spare.size, 4 * PACED_CHUNK as u64);
        prep.stop();
        Ok(())
    }
}

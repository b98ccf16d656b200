use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::segment::{parse_free_name, parse_seg_name, seg_name};
use super::*;

/// Small segments, so a few hundred entries cross several.
const SMALL: WalOptions = WalOptions { first_segment: 2 * PAGE, max_segment: 4 * PAGE };

fn payload(i: u64) -> Vec<u8> {
    format!("entry {i} ").repeat(1 + (i % 7) as usize).into_bytes()
}

fn append(wal: &Wal, range: std::ops::Range<u64>) -> io::Result<()> {
    let bodies: Vec<(u64, Vec<u8>)> = range.map(|i| (i, payload(i))).collect();
    let records: Vec<Record<'_>> = bodies.iter().map(|(i, p)| Record::Entry(*i, p)).collect();
    wal.write(&records)
}

fn indexes(wal: &Wal) -> io::Result<Vec<u64>> {
    let all = wal.read(0, u64::MAX)?;
    for (i, p) in &all {
        assert_eq!(p, &payload(*i), "entry {i} reads back");
    }
    Ok(all.into_iter().map(|(i, _)| i).collect())
}

fn files(dir: &Path) -> io::Result<(Vec<u64>, usize)> {
    let mut segs = Vec::new();
    let mut free = 0;
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some(s) = parse_seg_name(&name) {
            segs.push(s);
        } else if parse_free_name(&name).is_some() {
            free += 1;
        }
    }
    segs.sort();
    Ok((segs, free))
}

#[test]
fn entries_and_meta_survive_a_reopen() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let wal = Wal::open(dir.path(), WalOptions::default())?;
        assert_eq!(wal.meta(), Meta::default());
        wal.write(&[Record::Identity(7, 9), Record::Vote(b"vote-1")])?;
        append(&wal, 1..11)?;
        wal.write(&[Record::Committed(b"c-5"), Record::Vote(b"vote-2")])?;
        assert_eq!(indexes(&wal)?, (1..11).collect::<Vec<_>>());
        wal.close();
    }
    let wal = Wal::open(dir.path(), WalOptions::default())?;
    assert_eq!(indexes(&wal)?, (1..11).collect::<Vec<_>>());
    let meta = wal.meta();
    assert_eq!(meta.identity, Some((7, 9)));
    assert_eq!(meta.vote.as_deref(), Some(&b"vote-2"[..]));
    assert_eq!(meta.committed.as_deref(), Some(&b"c-5"[..]));
    assert_eq!(wal.last_index(), Some(10));
    assert_eq!(wal.read(3, 5)?.into_iter().map(|(i, _)| i).collect::<Vec<_>>(), vec![3, 4]);
    Ok(())
}

#[test]
fn truncation_and_purges_replay_in_order() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let wal = Wal::open(dir.path(), SMALL)?;
        append(&wal, 1..40)?;
        wal.write(&[Record::Truncate(30)])?;
        append(&wal, 30..35)?;
        // An entry at an index already there replaces it and everything after it.
        append(&wal, 33..34)?;
        wal.write(&[Record::Purge(10, b"id-10")])?;
        assert_eq!(indexes(&wal)?, (11..34).collect::<Vec<_>>());
    }
    let wal = Wal::open(dir.path(), SMALL)?;
    assert_eq!(indexes(&wal)?, (11..34).collect::<Vec<_>>());
    assert_eq!(wal.meta().purged, Some((10, b"id-10".to_vec())));
    // A purge past the last entry empties the log; the next entry follows the purge point.
    wal.write(&[Record::Purge(100, b"id-100")])?;
    assert_eq!(wal.last_index(), None);
    append(&wal, 101..103)?;
    drop(wal);
    let wal = Wal::open(dir.path(), SMALL)?;
    assert_eq!(indexes(&wal)?, vec![101, 102]);
    assert_eq!(wal.meta().purged.map(|p| p.0), Some(100));
    Ok(())
}

#[test]
fn purged_segments_leave_the_log_and_are_reused() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let wal = Wal::open(dir.path(), SMALL)?;
    append(&wal, 1..1000)?;
    let (before, _) = files(dir.path())?;
    assert!(before.len() > 2, "1000 entries fill several small segments: {before:?}");
    wal.write(&[Record::Vote(b"v")])?;
    wal.write(&[Record::Purge(800, b"id")])?;
    wal.close();
    let (after, free) = files(dir.path())?;
    assert!(after.len() < before.len() && free > 0, "segments {before:?} -> {after:?}, {free} free");
    assert_eq!(indexes(&wal)?, (801..1000).collect::<Vec<_>>());
    drop(wal);
    // The log reads back the same after a reopen, and freed files become new segments.
    let wal = Wal::open(dir.path(), SMALL)?;
    assert_eq!(indexes(&wal)?, (801..1000).collect::<Vec<_>>());
    assert_eq!(wal.meta().vote.as_deref(), Some(&b"v"[..]));
    append(&wal, 1000..2000)?;
    let (_, free_after) = files(dir.path())?;
    assert!(free_after < free, "free files were reused ({free} -> {free_after})");
    drop(wal);
    let wal = Wal::open(dir.path(), SMALL)?;
    assert_eq!(indexes(&wal)?, (801..2000).collect::<Vec<_>>());
    Ok(())
}

#[test]
fn a_record_larger_than_a_segment_gets_a_segment_of_its_own() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let wal = Wal::open(dir.path(), SMALL)?;
    append(&wal, 1..3)?;
    let big = vec![7u8; 10 * PAGE as usize];
    wal.write(&[Record::Entry(3, &big)])?;
    append(&wal, 4..6)?;
    drop(wal);
    let wal = Wal::open(dir.path(), SMALL)?;
    let all = wal.read(0, u64::MAX)?;
    assert_eq!(all.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    assert_eq!(all[2].1, big);
    Ok(())
}

/// The newest segment file and where its records end (the first zero length).
fn tail_of(dir: &Path) -> io::Result<(std::path::PathBuf, u64, u64)> {
    let (segs, _) = files(dir)?;
    for seq in segs.into_iter().rev() {
        let path = dir.join(seg_name(seq));
        let buf = std::fs::read(&path)?;
        let mut at = 0;
        let mut last_entry = None;
        while let Some((found, next)) = record::next(&buf, at, seq) {
            if found.kind == Kind::Entry {
                last_entry = Some(at as u64);
            }
            at = next;
        }
        if let Some(e) = last_entry {
            return Ok((path, e, at as u64));
        }
    }
    Err(io::Error::other("no segment with entries"))
}

#[test]
fn a_torn_last_write_is_dropped_and_never_read_again() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let wal = Wal::open(dir.path(), SMALL)?;
        append(&wal, 1..6)?;
    }
    // Damage the last entry, as a write cut short by a crash would.
    let (path, last_entry, _) = tail_of(dir.path())?;
    let f = std::fs::OpenOptions::new().write(true).open(&path)?;
    f.write_all_at(&[0xff; 3], last_entry + 12)?;
    drop(f);
    {
        let wal = Wal::open(dir.path(), SMALL)?;
        assert_eq!(indexes(&wal)?, vec![1, 2, 3, 4]);
        // Raft writes entry 5 again (differently); the damaged bytes stay unread.
        wal.write(&[Record::Entry(5, b"five again")])?;
    }
    let wal = Wal::open(dir.path(), SMALL)?;
    let all = wal.read(0, u64::MAX)?;
    assert_eq!(all.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    assert_eq!(all[4].1, b"five again");
    Ok(())
}

#[test]
fn valid_looking_records_after_the_end_are_never_taken_in() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = WalOptions::default();
    {
        let wal = Wal::open(dir.path(), opts)?;
        append(&wal, 1..4)?;
    }
    // A record of the right segment on the page after the end of the log: a write that was
    // never acknowledged, whose first page was lost and a later one reached the disk.
    let (path, _, end) = tail_of(dir.path())?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let seq = parse_seg_name(&name).ok_or_else(|| io::Error::other("segment name"))?;
    let mut stray = Vec::new();
    record::put(&mut stray, seq, Kind::Entry, &[&4u64.to_le_bytes(), b"never acknowledged"]);
    std::fs::OpenOptions::new().write(true).open(&path)?.write_all_at(&stray, end.div_ceil(PAGE) * PAGE)?;
    {
        let wal = Wal::open(dir.path(), opts)?;
        assert_eq!(indexes(&wal)?, vec![1, 2, 3]);
        wal.write(&[Record::Entry(4, b"four"), Record::Entry(5, b"five")])?;
    }
    let wal = Wal::open(dir.path(), opts)?;
    let all = wal.read(0, u64::MAX)?;
    assert_eq!(all.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    assert_eq!((all[3].1.as_slice(), all[4].1.as_slice()), (&b"four"[..], &b"five"[..]));
    Ok(())
}

#[test]
fn segments_outside_the_chain_are_set_aside() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let wal = Wal::open(dir.path(), SMALL)?;
        append(&wal, 1..50)?;
    }
    let (segs, _) = files(dir.path())?;
    // A segment file far ahead of the log, holding garbage (a spare that was being made).
    let stray = dir.path().join(seg_name(segs[segs.len() - 1] + 5));
    std::fs::write(&stray, vec![1u8; 2 * PAGE as usize])?;
    let wal = Wal::open(dir.path(), SMALL)?;
    assert_eq!(indexes(&wal)?, (1..50).collect::<Vec<_>>());
    assert!(!stray.exists(), "the stray file was renamed out of the log");
    Ok(())
}

#[test]
fn the_log_measures_its_entries_in_bytes() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let wal = Wal::open(dir.path(), WalOptions::default())?;
    assert_eq!((wal.bytes_from(0), wal.purge_point(1)), (0, None));
    let big = vec![7u8; 1000];
    let records: Vec<Record<'_>> = (1..=10).map(|i| Record::Entry(i, &big)).collect();
    wal.write(&records)?;
    // Each record holds its payload, its index and some framing.
    let one = wal.bytes_from(10);
    assert!((1008..1100).contains(&one), "one record of a 1000-byte entry: {one} bytes");
    assert_eq!(wal.bytes_from(1), 10 * one);
    assert_eq!(wal.bytes_from(4), 7 * one);
    assert_eq!(wal.bytes_from(11), 0);
    // Keeping three entries' worth: purge through 7; a little more than that: through 6.
    assert_eq!(wal.purge_point(3 * one), Some(7));
    assert_eq!(wal.purge_point(3 * one + 1), Some(6));
    assert_eq!(wal.purge_point(10 * one), None);
    // Purged entries no longer count.
    wal.write(&[Record::Purge(5, b"id-5")])?;
    assert_eq!(wal.bytes_from(0), 5 * one);
    assert_eq!(wal.purge_point(5 * one), None);
    Ok(())
}

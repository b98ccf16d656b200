//! Reading the log back at start-up.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::record::{self, Kind};
use super::segment::{self, free_name, parse_free_name, parse_seg_name};
use super::{corrupt, Loc, Meta};

/// What the segments on disk hold.
pub(super) struct Scanned {
    pub entries: BTreeMap<u64, Loc>,
    /// The segments of the log, oldest first, with the highest entry index in each.
    pub segments: Vec<(u64, Option<u64>)>,
    pub meta: Meta,
    /// The last segment, where its valid records end, and whether that is an end record.
    pub end: Option<(u64, u64, bool)>,
    /// Files that may be reused, all renamed out of the log already.
    pub free: Vec<PathBuf>,
}

/// The meta in segment `seq`'s header, if the file starts with a valid header for `seq`.
fn read_header(path: &Path, seq: u64) -> io::Result<Option<Meta>> {
    let mut head = Vec::new();
    std::fs::File::open(path)?.take(64 << 10).read_to_end(&mut head)?;
    let Some((found, _)) = record::next(&head, 0, seq) else { return Ok(None) };
    if found.kind != Kind::Header {
        return Ok(None);
    }
    Ok(Meta::from_header(&head[found.body]).filter(|(s, _)| *s == seq).map(|(_, meta)| meta))
}

/// Finds the log in `dir`: the longest run of consecutive segments with valid headers that
/// ends at the newest one, read forward until a record is not valid or a segment has no
/// end record. Every other segment file is renamed out of the log (durably) before this
/// returns, so none can be taken for part of the log later.
pub(super) fn scan(dir: &Path) -> io::Result<Scanned> {
    let mut segs: BTreeMap<u64, PathBuf> = BTreeMap::new();
    let mut free = Vec::new();
    let mut next_free = 1;
    for item in std::fs::read_dir(dir)? {
        let path = item?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if let Some(seq) = parse_seg_name(&name) {
            segs.insert(seq, path);
        } else if let Some(n) = parse_free_name(&name) {
            next_free = next_free.max(n + 1);
            free.push(path);
        } else if name.ends_with(".tmp") {
            std::fs::remove_file(&path)?;
        }
    }
    let mut headers: BTreeMap<u64, Meta> = BTreeMap::new();
    for (&seq, path) in &segs {
        if let Some(meta) = read_header(path, seq)? {
            headers.insert(seq, meta);
        }
    }
    let chain: Vec<u64> = match headers.keys().next_back() {
        None => Vec::new(),
        Some(&newest) => {
            let mut oldest = newest;
            while oldest > 0 && headers.contains_key(&(oldest - 1)) {
                oldest -= 1;
            }
            (oldest..=newest).collect()
        }
    };
    let mut meta = chain.first().and_then(|s| headers.get(s)).cloned().unwrap_or_default();
    let mut entries: BTreeMap<u64, Loc> = BTreeMap::new();
    let mut segments = Vec::new();
    let mut end = None;
    for &seq in &chain {
        let buf = std::fs::read(&segs[&seq])?;
        let (last_index, at, ended) = replay(&buf, seq, &mut meta, &mut entries)?;
        segments.push((seq, last_index));
        end = Some((seq, at, ended));
        if !ended {
            break;
        }
    }
    let in_log: BTreeSet<u64> = segments.iter().map(|(s, _)| *s).collect();
    let mut renamed = false;
    for (seq, path) in segs {
        if !in_log.contains(&seq) {
            let to = dir.join(free_name(next_free));
            next_free += 1;
            std::fs::rename(&path, &to)?;
            free.push(to);
            renamed = true;
        }
    }
    if renamed {
        segment::sync_dir(dir)?;
    }
    if let Some((upto, _)) = &meta.purged {
        entries = entries.split_off(&upto.saturating_add(1));
    }
    Ok(Scanned { entries, segments, meta, end, free })
}

/// Replays one segment's records after its header. Returns the highest entry index in it,
/// where its valid records end, and whether they end with an end record.
fn replay(
    buf: &[u8],
    seq: u64,
    meta: &mut Meta,
    entries: &mut BTreeMap<u64, Loc>,
) -> io::Result<(Option<u64>, u64, bool)> {
    let Some((_, mut at)) = record::next(buf, 0, seq) else {
        return Err(corrupt(format!("segment {seq}'s header went bad while it was read")));
    };
    let mut last_index = None;
    let bad = |what: &str| corrupt(format!("segment {seq}: a {what} record with a valid checksum is malformed"));
    while let Some((found, next)) = record::next(buf, at, seq) {
        let body = &buf[found.body.clone()];
        match found.kind {
            Kind::Entry => {
                let i = record::u64_at(body, 0).ok_or_else(|| bad("entry"))?;
                let _ = entries.split_off(&i);
                entries.insert(i, Loc { seq, at: at as u64, len: next - at });
                last_index = last_index.max(Some(i));
            }
            Kind::Truncate => {
                let from = record::u64_at(body, 0).ok_or_else(|| bad("truncate"))?;
                let _ = entries.split_off(&from);
            }
            Kind::Purge => {
                meta.apply(Kind::Purge as u8, body).ok_or_else(|| bad("purge"))?;
                let upto = record::u64_at(body, 0).ok_or_else(|| bad("purge"))?;
                *entries = entries.split_off(&upto.saturating_add(1));
            }
            Kind::Vote | Kind::Committed | Kind::Identity => {
                meta.apply(found.kind as u8, body).ok_or_else(|| bad("meta"))?;
            }
            Kind::End => return Ok((last_index, next as u64, true)),
            Kind::Header => return Err(bad("second header")),
        }
        at = next;
    }
    Ok((last_index, at as u64, false))
}

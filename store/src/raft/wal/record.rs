//! How a segment frames what it holds.
//!
//! A record is `[len: u32 LE][crc: u32 LE][kind: u8][body]`, where `len` counts the kind
//! byte and the body, and `crc` is the CRC-32 of the segment's sequence number (LE), the
//! kind and the body. Salting with the sequence number means a record left over from an
//! earlier use of a recycled file never passes for one of the segment now in it. A zero
//! length, a length past the end of the segment, an unknown kind or a bad checksum ends the
//! segment's records.

use std::ops::Range;

/// Length and checksum.
pub const PREFIX: usize = 8;
/// Bytes an end-of-segment record takes: every segment keeps room for one.
pub const END_LEN: usize = PREFIX + 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// First in every segment: the sequence number and the log's state so far (see
    /// [`super::Meta`]).
    Header = 1,
    /// `[index: u64 LE][payload]`: one log entry.
    Entry = 2,
    Vote = 3,
    Committed = 4,
    /// `[from: u64 LE]`: entries from this index on are gone.
    Truncate = 5,
    /// `[upto: u64 LE][log id]`: entries up to this index are gone.
    Purge = 6,
    /// `[member: u64 LE][cluster: u64 LE]`.
    Identity = 7,
    /// The next record is at the start of the next segment.
    End = 8,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Header,
            2 => Kind::Entry,
            3 => Kind::Vote,
            4 => Kind::Committed,
            5 => Kind::Truncate,
            6 => Kind::Purge,
            7 => Kind::Identity,
            8 => Kind::End,
            _ => return None,
        })
    }
}

fn checksum(seq: u64, kind: u8, parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(&[kind]);
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

/// The bytes a record with a body of `body` bytes takes.
pub fn framed_len(body: usize) -> usize {
    PREFIX + 1 + body
}

/// Appends a record whose body is `parts` concatenated.
pub fn put(buf: &mut Vec<u8>, seq: u64, kind: Kind, parts: &[&[u8]]) {
    let body: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(1 + body).unwrap_or(u32::MAX);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&checksum(seq, kind as u8, parts).to_le_bytes());
    buf.push(kind as u8);
    for p in parts {
        buf.extend_from_slice(p);
    }
}

/// One record found in a segment: its kind and where its body is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub kind: Kind,
    pub body: Range<usize>,
}

/// The record at `at` in `buf` (a segment of sequence number `seq`), if there is a valid
/// one, and where the next one starts.
pub fn next(buf: &[u8], at: usize, seq: u64) -> Option<(Found, usize)> {
    let prefix = buf.get(at..at.checked_add(PREFIX)?)?;
    let len = u32::from_le_bytes(prefix[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(prefix[4..].try_into().ok()?);
    if len == 0 {
        return None;
    }
    let start = at + PREFIX;
    let end = start.checked_add(len)?;
    let rest = buf.get(start..end)?;
    let kind = Kind::from_u8(rest[0])?;
    if checksum(seq, rest[0], &[&rest[1..]]) != crc {
        return None;
    }
    Some((Found { kind, body: start + 1..end }, end))
}

/// Checks a record read on its own (prefix, kind and body) and returns its body.
pub fn body_of(rec: &[u8], seq: u64, kind: Kind) -> Option<&[u8]> {
    let (found, end) = next(rec, 0, seq)?;
    (found.kind == kind && end == rec.len()).then(|| &rec[found.body])
}

pub fn u64_at(body: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_end_at_zeros() {
        let mut buf = Vec::new();
        put(&mut buf, 7, Kind::Entry, &[&5u64.to_le_bytes(), b"hello"]);
        put(&mut buf, 7, Kind::Vote, &[b"v"]);
        buf.extend_from_slice(&[0; 32]);
        let (a, at) = next(&buf, 0, 7).expect("first record");
        assert_eq!(a.kind, Kind::Entry);
        assert_eq!(u64_at(&buf[a.body.clone()], 0), Some(5));
        assert_eq!(&buf[a.body.start + 8..a.body.end], b"hello");
        let (b, at) = next(&buf, at, 7).expect("second record");
        assert_eq!((b.kind, &buf[b.body]), (Kind::Vote, &b"v"[..]));
        assert_eq!(next(&buf, at, 7), None, "zeros end the records");
    }

    #[test]
    fn a_record_of_another_segment_or_damaged_is_not_read() {
        let mut buf = Vec::new();
        put(&mut buf, 7, Kind::Entry, &[&1u64.to_le_bytes(), b"payload"]);
        assert!(next(&buf, 0, 8).is_none(), "a record from an earlier use of the file");
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(next(&bad, 0, 7).is_none(), "a flipped bit at byte {i} went unnoticed");
        }
        assert!(next(&buf[..buf.len() - 1], 0, 7).is_none(), "a torn record");
        assert_eq!(body_of(&buf, 7, Kind::Entry).map(|b| b.len()), Some(15));
        assert_eq!(body_of(&buf, 7, Kind::Vote), None);
    }
}

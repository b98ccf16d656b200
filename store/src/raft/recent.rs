//! The newest log entries written, kept in memory as written (encoded).
//!
//! openraft reads each new entry back right after writing it: every replication stream to
//! send it, the state machine to apply it. Serving those reads from here saves a read of the
//! log file each (3 `pread`s a put on the leader, one on each follower). Encoded, not
//! decoded: a decoded entry's keys and values can be slices of the buffer its request
//! arrived in, and keeping a few hundred of them kept those buffers too (the leader's RSS
//! went from 63 to 210 MB under 100 clients' puts).
//!
//! The log store tells it what each write did, in the order the write did it, so that it
//! holds exactly what the log file holds for the indexes it has.

use std::collections::BTreeMap;
use std::ops::Range;

/// Entries kept, at most.
pub const MAX_ENTRIES: usize = 256;
/// Their encoded bytes, at most (a batch entry can be megabytes).
pub const MAX_BYTES: usize = 4 << 20;

#[derive(Default)]
pub struct Recent {
    entries: BTreeMap<u64, Vec<u8>>,
    /// The bytes of `entries`, kept as they change (summing them on every write took 0.6% of
    /// the members' CPU under one client's puts, in a profile).
    bytes: usize,
}

impl Recent {
    /// `bytes` were written as the entry at `index` (replacing any older one there).
    pub fn written(&mut self, index: u64, bytes: Vec<u8>) {
        self.bytes += bytes.len();
        if let Some(old) = self.entries.insert(index, bytes) {
            self.bytes -= old.len();
        }
    }

    /// Entries from `from` on are gone.
    pub fn truncated(&mut self, from: u64) {
        let gone = self.entries.split_off(&from);
        self.bytes -= gone.values().map(Vec::len).sum::<usize>();
    }

    /// Entries up to and including `upto` are gone.
    pub fn purged(&mut self, upto: u64) {
        let kept = self.entries.split_off(&upto.saturating_add(1));
        self.bytes -= self.entries.values().map(Vec::len).sum::<usize>();
        self.entries = kept;
    }

    /// Forgets everything (after a failed write).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Drops the oldest entries beyond [`MAX_ENTRIES`] or [`MAX_BYTES`].
    pub fn trim(&mut self) {
        while self.entries.len() > MAX_ENTRIES || self.bytes > MAX_BYTES {
            match self.entries.pop_first() {
                Some((_, b)) => self.bytes -= b.len(),
                None => break,
            }
        }
    }

    /// The entries kept in `range`, by index.
    pub fn range(&self, range: Range<u64>) -> impl Iterator<Item = (u64, &[u8])> {
        self.entries.range(range).map(|(i, b)| (*i, b.as_slice()))
    }

    #[cfg(test)]
    pub fn indexes(&self) -> Vec<u64> {
        self.entries.keys().copied().collect()
    }

    #[cfg(test)]
    fn counted_bytes_are_right(&self) -> bool {
        self.bytes == self.entries.values().map(Vec::len).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_go_first_beyond_the_count_or_the_bytes() {
        let mut r = Recent::default();
        for i in 1..=(MAX_ENTRIES as u64 + 10) {
            r.written(i, vec![0; 8]);
        }
        r.trim();
        assert_eq!(r.indexes().first(), Some(&11), "beyond the count, the oldest go");
        assert_eq!(r.indexes().len(), MAX_ENTRIES);

        // Three entries of 1.5 MiB are over the byte limit: the oldest of them goes, and
        // every smaller one before it.
        for i in 300..303 {
            r.written(i, vec![0; 3 << 19]);
        }
        r.trim();
        assert_eq!(r.indexes(), [301, 302]);
        assert!(r.counted_bytes_are_right());
        r.clear();
        assert!(r.counted_bytes_are_right());
    }

    #[test]
    fn truncated_and_purged_entries_are_gone_and_rewritten_ones_replaced() {
        let mut r = Recent::default();
        for i in 1..=10 {
            r.written(i, vec![1]);
        }
        r.truncated(8);
        r.written(8, vec![2]);
        r.written(5, vec![3; 4]);
        r.purged(3);
        assert_eq!(r.indexes(), [4, 5, 6, 7, 8]);
        assert!(r.counted_bytes_are_right(), "the bytes follow replacements, truncations and purges");
        assert_eq!(r.range(8..9).map(|(_, b)| b.to_vec()).collect::<Vec<_>>(), [vec![2]]);
    }
}

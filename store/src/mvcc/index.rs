//! The in-memory index of every key's history (etcd's `treeIndex`).
//!
//! An ordered map from key to its [`KeyIndex`]. It answers "which revision of which keys
//! does a read at revision R see" without touching the disk; values are then fetched from
//! storage by revision. It is rebuilt from the `Kv` column family at start-up.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::key_index::{KeyAt, KeyIndex};
use super::key_range::KeyRange;
use super::revision::Revision;

#[derive(Default, Debug)]
pub struct TreeIndex {
    keys: BTreeMap<Bytes, KeyIndex>,
}

impl TreeIndex {
    pub fn put(&mut self, key: Bytes, rev: Revision) {
        self.keys.entry(key).or_default().put(rev);
    }

    /// Records a deletion; false if the key did not exist.
    pub fn tombstone(&mut self, key: &[u8], rev: Revision) -> bool {
        self.keys.get_mut(key).is_some_and(|k| k.tombstone(rev))
    }

    /// Rebuild from storage: a tombstone read back in revision order.
    pub fn restore_tombstone(&mut self, key: Bytes, rev: Revision) {
        self.keys.entry(key).or_default().restore_tombstone(rev);
    }

    pub fn get(&self, key: &[u8], at: i64) -> Option<KeyAt> {
        self.keys.get(key)?.get(at)
    }

    pub fn latest(&self, key: &[u8]) -> Option<KeyAt> {
        self.keys.get(key)?.latest()
    }

    /// The keys in `range` that exist at revision `at`, in key order, with what the read
    /// sees of each. Stops after `limit` keys (0 = no limit) but always returns the total.
    pub fn range(&self, range: &KeyRange, at: i64, limit: usize) -> (Vec<(Bytes, KeyAt)>, usize) {
        if let KeyRange::Single(key) = range {
            // One descent of the tree, where a range takes two (its bounds): every put and
            // every guarded update reads its key this way.
            return match self.keys.get_key_value(key.as_ref()).and_then(|(k, ki)| Some((k.clone(), ki.get(at)?))) {
                Some(found) => (vec![found], 1),
                None => (Vec::new(), 0),
            };
        }
        let Some(bounds) = range.bounds() else { return (Vec::new(), 0) };
        let mut out = Vec::new();
        let mut count = 0;
        for (k, ki) in self.keys.range::<[u8], _>(bounds) {
            if let Some(at) = ki.get(at) {
                count += 1;
                if limit == 0 || out.len() < limit {
                    out.push((k.clone(), at));
                }
            }
        }
        (out, count)
    }

    /// The keys in `range` that exist now.
    pub fn range_latest(&self, range: &KeyRange) -> Vec<(Bytes, KeyAt)> {
        let Some(bounds) = range.bounds() else { return Vec::new() };
        self.keys.range::<[u8], _>(bounds).filter_map(|(k, ki)| Some((k.clone(), ki.latest()?))).collect()
    }

    /// Every change to keys in `range` after main revision `after`, sorted by revision.
    pub fn changes_since(&self, range: &KeyRange, after: i64) -> Vec<(Revision, bool, Bytes)> {
        let Some(bounds) = range.bounds() else { return Vec::new() };
        let mut out: Vec<_> = self
            .keys
            .range::<[u8], _>(bounds)
            .flat_map(|(k, ki)| ki.since(after).into_iter().map(move |(r, t)| (r, t, k.clone())))
            .collect();
        out.sort_by_key(|(r, _, _)| *r);
        out
    }

    /// Compacts every key's history at `at`. Returns the revisions at or below `at` that
    /// must stay in storage; storage may delete the others.
    pub fn compact(&mut self, at: i64) -> Vec<Revision> {
        let mut keep = Vec::new();
        self.keys.retain(|_, ki| {
            ki.compact(at, &mut keep);
            !ki.is_empty()
        });
        keep.sort();
        keep
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_key_reads_as_the_same_key_in_a_range_would() {
        let mut idx = TreeIndex::default();
        idx.put(Bytes::from("a"), Revision::new(2, 0));
        idx.put(Bytes::from("b"), Revision::new(3, 0));
        idx.put(Bytes::from("b"), Revision::new(4, 0));
        assert!(idx.tombstone(b"b", Revision::new(5, 0)));
        let single = |k: &str, at| idx.range(&KeyRange::Single(Bytes::from(k.to_owned())), at, 1);
        let spanned = |k: &str, at| {
            let end = [k.as_bytes(), b"\0"].concat();
            idx.range(&KeyRange::Span { start: Bytes::from(k.to_owned()), end: Some(Bytes::from(end)) }, at, 1)
        };
        for (k, at) in [("a", 1), ("a", 2), ("a", 9), ("b", 2), ("b", 3), ("b", 4), ("b", 5), ("c", 9)] {
            assert_eq!(single(k, at), spanned(k, at), "{k} at {at}");
        }
        let (found, count) = single("b", 4);
        assert_eq!(count, 1);
        assert_eq!((found[0].1.modified, found[0].1.version), (Revision::new(4, 0), 2));
        assert_eq!(single("b", 5), (Vec::new(), 0), "deleted at 5");
        assert_eq!(single("a", 1), (Vec::new(), 0), "not yet created");
    }
}

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

//! The history of one key: its generations.
//!
//! A generation is the life of a key from its creation to its deletion: the revisions
//! that modified it, the last of which is the tombstone when the generation has ended.
//! The last generation is the current one; after a deletion it is empty until the key is
//! created again. `version` is the number of modifications in the current generation.
//!
//! This is etcd's `keyIndex` model; reads at a revision, compaction and watch catch-up
//! are all answered from it without touching the disk.

use super::revision::Revision;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Generation {
    /// The number of modifications in this generation (the version of the last one).
    ver: i64,
    /// The revision that created the key in this generation.
    created: Revision,
    /// Every revision that changed the key in this generation, ascending.
    revs: Vec<Revision>,
}

/// What a read at some revision sees of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyAt {
    /// The revision of the change visible at the read revision.
    pub modified: Revision,
    pub created: Revision,
    pub version: i64,
}

/// The generations of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyIndex {
    generations: Vec<Generation>,
}

impl Default for KeyIndex {
    fn default() -> Self {
        KeyIndex { generations: vec![Generation::default()] }
    }
}

impl KeyIndex {
    /// Records a modification (put) at `rev`.
    pub fn put(&mut self, rev: Revision) {
        let g = self.current_mut();
        if g.revs.is_empty() {
            g.created = rev;
        }
        g.revs.push(rev);
        g.ver += 1;
    }

    /// Records a deletion at `rev`, ending the current generation.
    /// Returns false (and changes nothing) if the key does not currently exist.
    pub fn tombstone(&mut self, rev: Revision) -> bool {
        if self.current().revs.is_empty() {
            return false;
        }
        self.put(rev);
        self.generations.push(Generation::default());
        true
    }

    /// Rebuild helper: records a tombstone read back from storage. Unlike [`tombstone`],
    /// this accepts a tombstone for a key whose creation was compacted away.
    pub fn restore_tombstone(&mut self, rev: Revision) {
        if self.current().revs.is_empty() {
            // The whole generation was compacted except its tombstone.
            let g = self.current_mut();
            g.created = rev;
        }
        self.put(rev);
        self.generations.push(Generation::default());
    }

    fn current(&self) -> &Generation {
        // Invariant: there is always at least one generation.
        &self.generations[self.generations.len() - 1]
    }

    fn current_mut(&mut self) -> &mut Generation {
        let n = self.generations.len();
        &mut self.generations[n - 1]
    }

    /// True if the key has no history left at all (every generation compacted away).
    pub fn is_empty(&self) -> bool {
        self.generations.len() == 1 && self.generations[0].revs.is_empty()
    }

    /// What a read at main revision `at` sees, or `None` if the key did not exist then.
    pub fn get(&self, at: i64) -> Option<KeyAt> {
        let last = self.generations.len() - 1;
        for (i, g) in self.generations.iter().enumerate().rev() {
            let Some(first) = g.revs.first() else { continue };
            if first.main > at {
                continue;
            }
            // A finished generation whose tombstone is at or before `at`: deleted then.
            if i != last && g.revs[g.revs.len() - 1].main <= at {
                return None;
            }
            let idx = g.revs.iter().rposition(|r| r.main <= at)?;
            let behind = (g.revs.len() - 1 - idx) as i64;
            return Some(KeyAt { modified: g.revs[idx], created: g.created, version: g.ver - behind });
        }
        None
    }

    /// The key's current state, if it exists now.
    pub fn latest(&self) -> Option<KeyAt> {
        let g = self.current();
        let modified = *g.revs.last()?;
        Some(KeyAt { modified, created: g.created, version: g.ver })
    }

    /// Every revision (with whether it is a tombstone) after main revision `after`,
    /// ascending: what a watcher catching up from history needs.
    pub fn since(&self, after: i64) -> Vec<(Revision, bool)> {
        let last = self.generations.len() - 1;
        let mut out = Vec::new();
        for (i, g) in self.generations.iter().enumerate() {
            for (j, r) in g.revs.iter().enumerate() {
                if r.main > after {
                    let tombstone = i != last && j == g.revs.len() - 1;
                    out.push((*r, tombstone));
                }
            }
        }
        out
    }

    /// Drops history before `at`, keeping what a read at `at` or later needs. Every
    /// revision that must survive in storage is added to `keep`; storage may delete the
    /// key's other revisions at or below `at`.
    ///
    /// A tombstone exactly at `at` is kept (until a later compaction): a watcher resuming
    /// from revision `at` must still see that deletion (etcd issue 19179).
    pub fn compact(&mut self, at: i64, keep: &mut Vec<Revision>) {
        // Find the first generation that ends at or after `at`, or the current one.
        let mut gi = 0;
        while gi < self.generations.len() - 1 {
            let g = &self.generations[gi];
            if g.revs[g.revs.len() - 1].main >= at {
                break;
            }
            gi += 1;
        }
        let g = &mut self.generations[gi];
        if let Some(idx) = g.revs.iter().rposition(|r| r.main <= at) {
            // Keep the revision visible at `at` (or the tombstone at `at`), drop the rest.
            g.revs.drain(..idx);
            keep.push(g.revs[0]);
        }
        self.generations.drain(..gi);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(main: i64) -> Revision {
        Revision::new(main, 0)
    }

    #[test]
    fn reads_follow_generations() {
        let mut k = KeyIndex::default();
        k.put(r(2));
        k.put(r(4));
        assert!(k.tombstone(r(6)));
        k.put(r(8));
        assert_eq!(k.get(1), None);
        assert_eq!(k.get(2).map(|a| (a.modified.main, a.version)), Some((2, 1)));
        assert_eq!(k.get(5).map(|a| (a.modified.main, a.version)), Some((4, 2)));
        assert_eq!(k.get(6), None);
        assert_eq!(k.get(7), None);
        let at8 = k.get(9).expect("exists at 9");
        assert_eq!((at8.modified.main, at8.created.main, at8.version), (8, 8, 1));
        assert!(!KeyIndex::default().tombstone(r(3)), "deleting a missing key is a no-op");
    }

    #[test]
    fn compaction_keeps_what_reads_need() {
        let mut k = KeyIndex::default();
        k.put(r(2));
        k.put(r(4));
        k.tombstone(r(6));
        k.put(r(8));
        k.put(r(10));

        let mut keep = Vec::new();
        k.compact(5, &mut keep);
        assert_eq!(keep, vec![r(4)]);
        assert_eq!(k.get(5).map(|a| a.modified.main), Some(4));

        let mut keep = Vec::new();
        k.compact(7, &mut keep);
        assert!(keep.is_empty(), "the deleted generation is gone entirely");
        assert_eq!(k.get(7), None);
        assert_eq!(k.get(9).map(|a| (a.modified.main, a.version)), Some((8, 1)));

        let mut keep = Vec::new();
        k.compact(9, &mut keep);
        assert_eq!(keep, vec![r(8)]);
        assert_eq!(k.latest().map(|a| (a.modified.main, a.version)), Some((10, 2)));
    }

    #[test]
    fn compacting_a_deleted_key_keeps_its_tombstone_at_the_compaction_point_only() {
        let mut k = KeyIndex::default();
        k.put(r(2));
        k.tombstone(r(3));
        let mut keep = Vec::new();
        k.compact(3, &mut keep);
        assert_eq!(keep, vec![r(3)], "a watcher from revision 3 still sees the delete");
        assert_eq!(k.get(3), None);
        assert_eq!(k.since(2), vec![(r(3), true)]);
        let mut keep = Vec::new();
        k.compact(4, &mut keep);
        assert!(keep.is_empty());
        assert!(k.is_empty());
    }

    #[test]
    fn since_lists_changes_after_a_revision() {
        let mut k = KeyIndex::default();
        k.put(r(2));
        k.tombstone(r(3));
        k.put(r(5));
        assert_eq!(k.since(2), vec![(r(3), true), (r(5), false)]);
    }
}

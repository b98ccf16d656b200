//! Revisions: the store's logical clock.
//!
//! Every write (Put, DeleteRange with deletions, Txn with writes) takes the next *main*
//! revision; the keys it changes get increasing *sub* revisions inside it. In the `Kv`
//! column family a change is keyed by its revision in big-endian order, so history sorts
//! by time, and a trailing `t` marks a tombstone (a deletion), as in etcd.

/// A point in the store's history: the main revision and the change's place in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

const TOMBSTONE_MARK: u8 = b't';
/// Length of an encoded revision without the tombstone mark.
pub const REVISION_BYTES: usize = 16;

impl Revision {
    pub fn new(main: i64, sub: i64) -> Revision {
        Revision { main, sub }
    }

    /// The storage key of this revision; `tombstone` appends the deletion mark.
    pub fn to_key(self, tombstone: bool) -> Vec<u8> {
        let mut k = Vec::with_capacity(REVISION_BYTES + 1);
        k.extend_from_slice(&self.main.to_be_bytes());
        k.extend_from_slice(&self.sub.to_be_bytes());
        if tombstone {
            k.push(TOMBSTONE_MARK);
        }
        k
    }

    /// Parses a storage key back into the revision and whether it is a tombstone.
    pub fn from_key(k: &[u8]) -> Option<(Revision, bool)> {
        if k.len() < REVISION_BYTES {
            return None;
        }
        let main = i64::from_be_bytes(k[..8].try_into().ok()?);
        let sub = i64::from_be_bytes(k[8..16].try_into().ok()?);
        let tombstone = match &k[REVISION_BYTES..] {
            [] => false,
            [TOMBSTONE_MARK] => true,
            _ => return None,
        };
        Some((Revision { main, sub }, tombstone))
    }

    /// The smallest storage key at or after main revision `main`.
    pub fn lower_bound_key(main: i64) -> Vec<u8> {
        Revision::new(main, 0).to_key(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sort_by_time() {
        let a = Revision::new(2, 0);
        let b = Revision::new(2, 1);
        let c = Revision::new(10, 0);
        assert_eq!(Revision::from_key(&a.to_key(false)), Some((a, false)));
        assert_eq!(Revision::from_key(&b.to_key(true)), Some((b, true)));
        assert!(a.to_key(false) < b.to_key(true));
        assert!(b.to_key(true) < c.to_key(false));
        assert_eq!(Revision::from_key(b"short"), None);
    }
}

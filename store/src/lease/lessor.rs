//! The lease table of the state machine.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;

/// etcd's `MaxLeaseTTL`: 9,000,000,000 seconds.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    /// The granted TTL in seconds.
    pub ttl: i64,
    /// The TTL left at the last checkpoint (0 = none).
    pub remaining_ttl: i64,
    /// The keys attached to the lease.
    pub keys: BTreeSet<Bytes>,
}

/// Leases and the keys attached to them.
#[derive(Default, Debug)]
pub struct Lessor {
    leases: HashMap<i64, Lease>,
    /// key → the lease it is attached to.
    items: HashMap<Bytes, i64>,
}

impl Lessor {
    pub fn get(&self, id: i64) -> Option<&Lease> {
        self.leases.get(&id)
    }

    pub fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    /// The lease `key` is attached to (0 for none).
    pub fn lease_of(&self, key: &Bytes) -> i64 {
        self.items.get(key).copied().unwrap_or(0)
    }

    pub fn insert(&mut self, lease: Lease) {
        self.leases.insert(lease.id, lease);
    }

    pub fn remove(&mut self, id: i64) -> Option<Lease> {
        let lease = self.leases.remove(&id)?;
        for k in &lease.keys {
            self.items.remove(k);
        }
        Some(lease)
    }

    pub fn set_remaining(&mut self, id: i64, remaining: i64) -> bool {
        match self.leases.get_mut(&id) {
            Some(l) => {
                l.remaining_ttl = remaining;
                true
            }
            None => false,
        }
    }

    /// Moves `key` to lease `id` (0 = no lease), detaching it from any previous one.
    pub fn attach(&mut self, key: &Bytes, id: i64) {
        if let Some(old) = self.items.remove(key) {
            if let Some(l) = self.leases.get_mut(&old) {
                l.keys.remove(key);
            }
        }
        if id != 0 {
            if let Some(l) = self.leases.get_mut(&id) {
                l.keys.insert(key.clone());
                self.items.insert(key.clone(), id);
            }
        }
    }

    pub fn detach(&mut self, key: &Bytes) {
        self.attach(key, 0);
    }

    pub fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.leases.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.leases.values()
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_move_between_leases() {
        let mut l = Lessor::default();
        for id in [1, 2] {
            l.insert(Lease { id, ttl: 10, remaining_ttl: 0, keys: BTreeSet::new() });
        }
        let k = Bytes::from("k");
        l.attach(&k, 1);
        l.attach(&k, 2);
        assert!(l.get(1).is_some_and(|x| x.keys.is_empty()));
        assert!(l.get(2).is_some_and(|x| x.keys.contains(&k)));
        let removed = l.remove(2).expect("lease 2 exists");
        assert_eq!(removed.keys.len(), 1);
        l.attach(&k, 1);
        l.detach(&k);
        assert!(l.get(1).is_some_and(|x| x.keys.is_empty()));
    }
}

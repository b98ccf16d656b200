//! Member and cluster ids, computed from the bootstrap configuration as etcd computes them,
//! so every member derives the same ids from the same `--initial-cluster` independently.
//!
//! Member id: the first 8 bytes (big-endian) of SHA-1 over the member's sorted peer URLs
//! joined, then the cluster token (and, for members added at run time, the time).
//! Cluster id: the same over the sorted member ids, each as 8 big-endian bytes.

use sha1::{Digest, Sha1};

pub fn member_id(peer_urls: &[String], token: &str, added_at: Option<u64>) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut b = urls.concat().into_bytes();
    b.extend_from_slice(token.as_bytes());
    if let Some(t) = added_at {
        b.extend_from_slice(t.to_string().as_bytes());
    }
    first_u64(&Sha1::digest(&b))
}

pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let b: Vec<u8> = ids.iter().flat_map(|id| id.to_be_bytes()).collect();
    first_u64(&Sha1::digest(&b))
}

fn first_u64(h: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&h[..8]);
    u64::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_order_independent() {
        let a = member_id(&["http://127.0.0.1:2380".into()], "etcd-cluster", None);
        assert_eq!(a, member_id(&["http://127.0.0.1:2380".into()], "etcd-cluster", None));
        assert_ne!(a, member_id(&["http://127.0.0.1:2380".into()], "other", None));
        assert_eq!(cluster_id(&[1, 2]), cluster_id(&[2, 1]));
    }

    #[test]
    fn matches_etcd_default_single_member() {
        // etcd --name default with the default peer URL reports member 8e9e05c52164694d
        // and cluster cdf818194e3a8c32.
        let m = member_id(&["http://localhost:2380".into()], "etcd-cluster", None);
        assert_eq!(format!("{m:x}"), "8e9e05c52164694d");
        assert_eq!(format!("{:x}", cluster_id(&[m])), "cdf818194e3a8c32");
    }
}

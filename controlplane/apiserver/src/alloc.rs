//! Service ClusterIP and NodePort allocation. Each allocated value is a key in the store,
//! created with a Txn that succeeds only if the key is absent, so two API servers can never
//! hand out the same IP or port.

use std::net::Ipv4Addr;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use rand::Rng;

use crate::status::{ApiError, ApiResult};
use crate::storage::Storage;

#[derive(Debug, Clone)]
pub struct Ranges {
    pub cluster_ip_base: u32,
    pub cluster_ip_size: u32,
    pub node_ports: (u16, u16),
}

impl Ranges {
    /// Parses `10.96.0.0/12` and `30000-32767`.
    pub fn parse(cidr: &str, ports: &str) -> anyhow::Result<Ranges> {
        let (ip, bits) = cidr.split_once('/').ok_or_else(|| anyhow::anyhow!("bad service CIDR {cidr:?}"))?;
        let ip: Ipv4Addr = ip.parse()?;
        let bits: u32 = bits.parse()?;
        anyhow::ensure!((8..=30).contains(&bits), "service CIDR {cidr:?} must be between /8 and /30");
        let size = 1u32 << (32 - bits);
        let base = u32::from(ip) & !(size - 1);
        let (lo, hi) = ports.split_once('-').ok_or_else(|| anyhow::anyhow!("bad node port range {ports:?}"))?;
        let node_ports = (lo.trim().parse()?, hi.trim().parse()?);
        anyhow::ensure!(node_ports.0 < node_ports.1, "bad node port range {ports:?}");
        Ok(Ranges { cluster_ip_base: base, cluster_ip_size: size, node_ports })
    }

    pub fn contains_ip(&self, ip: Ipv4Addr) -> bool {
        let v = u32::from(ip);
        v > self.cluster_ip_base && v < self.cluster_ip_base + self.cluster_ip_size - 1
    }

    /// The first usable IP, kept for the `kubernetes` service as Kubernetes does.
    pub fn first_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.cluster_ip_base + 1)
    }
}

pub struct Allocator {
    storage: Storage,
    prefix: String,
    pub ranges: Ranges,
}

impl Allocator {
    pub fn new(storage: Storage, prefix: &str, ranges: Ranges) -> Allocator {
        Allocator { storage, prefix: format!("{prefix}/keel/allocations"), ranges }
    }

    async fn claim(&self, key: &str, owner: &str) -> ApiResult<bool> {
        let txn =
            Txn::new().when([Compare::mod_revision(key, CompareOp::Equal, 0)]).and_then([TxnOp::put(key, owner, None)]);
        let resp = self.storage.client().kv_client().txn(txn).await?;
        Ok(resp.succeeded())
    }

    pub async fn release(&self, kind: &str, value: &str) -> ApiResult<()> {
        let key = format!("{}/{kind}/{value}", self.prefix);
        self.storage.client().kv_client().delete(key, None).await?;
        Ok(())
    }

    /// Claims `wanted` (an error if taken or out of range) or a free IP at random.
    pub async fn cluster_ip(&self, owner: &str, wanted: Option<&str>) -> ApiResult<String> {
        if let Some(w) = wanted {
            let ip: Ipv4Addr = w.parse().map_err(|_| {
                ApiError::unprocessable(format!("spec.clusterIPs: Invalid value: \"{w}\": must be a valid IP address"))
            })?;
            if !self.ranges.contains_ip(ip) {
                return Err(ApiError::unprocessable(format!(
                    "Service \"{owner}\" is invalid: spec.clusterIPs: Invalid value: [\"{w}\"]: failed to allocate IP {w}: the provided IP ({w}) is not in the valid range"
                )));
            }
            if !self.claim(&format!("{}/clusterips/{w}", self.prefix), owner).await? {
                return Err(ApiError::unprocessable(format!(
                    "Service \"{owner}\" is invalid: spec.clusterIPs: Invalid value: [\"{w}\"]: failed to allocate IP {w}: provided IP is already allocated"
                )));
            }
            return Ok(w.to_string());
        }
        for _ in 0..64 {
            let offset = rand::rng().random_range(2..self.ranges.cluster_ip_size - 1);
            let ip = Ipv4Addr::from(self.ranges.cluster_ip_base + offset).to_string();
            if self.claim(&format!("{}/clusterips/{ip}", self.prefix), owner).await? {
                return Ok(ip);
            }
        }
        Err(ApiError::internal("failed to allocate a serviceIP: range is full"))
    }

    pub async fn node_port(&self, owner: &str, wanted: Option<i64>) -> ApiResult<i64> {
        let (lo, hi) = self.ranges.node_ports;
        if let Some(p) = wanted {
            if p < i64::from(lo) || p > i64::from(hi) {
                return Err(ApiError::unprocessable(format!(
                    "Service \"{owner}\" is invalid: spec.ports[0].nodePort: Invalid value: {p}: provided port is not in the valid range. The range of valid ports is {lo}-{hi}"
                )));
            }
            if !self.claim(&format!("{}/nodeports/{p}", self.prefix), owner).await? {
                return Err(ApiError::unprocessable(format!(
                    "Service \"{owner}\" is invalid: spec.ports[0].nodePort: Invalid value: {p}: provided port is already allocated"
                )));
            }
            return Ok(p);
        }
        for _ in 0..64 {
            let p = i64::from(rand::rng().random_range(lo..=hi));
            if self.claim(&format!("{}/nodeports/{p}", self.prefix), owner).await? {
                return Ok(p);
            }
        }
        Err(ApiError::internal("failed to allocate a nodePort: range is full"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_kube_apiserver_flags() -> anyhow::Result<()> {
        let r = Ranges::parse("10.96.0.0/12", "30000-32767")?;
        assert_eq!(r.first_ip().to_string(), "10.96.0.1");
        assert!(r.contains_ip("10.100.3.4".parse()?));
        assert!(!r.contains_ip("10.112.0.1".parse()?));
        assert!(!r.contains_ip("10.96.0.0".parse()?));
        assert!(Ranges::parse("10.96.0.0", "1-2").is_err());
        Ok(())
    }
}

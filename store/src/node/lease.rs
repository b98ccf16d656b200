//! Lease keepalive and time-to-live: answered by the leader, which alone tracks deadlines;
//! other members forward them over the peer transport (as etcd followers do).

use std::time::{Duration, Instant};

use super::{LocalError, Node};
use crate::error::EtcdError;

pub const LEASE_RENEW_PATH: &str = "/keel/lease/renew";
pub const LEASE_TTL_PATH: &str = "/keel/lease/ttl";

impl Node {
    /// On the leader: renews the lease and returns its TTL, or 0 if it does not exist.
    pub fn renew_lease_here(&self, id: i64) -> Result<i64, LocalError> {
        if !self.expiry.follow_role(self) {
            return Err(LocalError::NotLeader);
        }
        match self.store.lease(id) {
            Some(l) => {
                self.expiry.renew(id, l.ttl, l.remaining_ttl > 0);
                Ok(l.ttl)
            }
            None => Ok(0),
        }
    }

    /// On the leader: seconds left on the lease, or -1 if it does not exist.
    pub fn lease_remaining_here(&self, id: i64) -> Result<i64, LocalError> {
        if !self.expiry.follow_role(self) {
            return Err(LocalError::NotLeader);
        }
        Ok(match self.store.lease(id) {
            Some(l) => self.expiry.remaining(id).unwrap_or(l.ttl),
            None => -1,
        })
    }

    pub async fn renew_lease(&self, id: i64) -> Result<i64, EtcdError> {
        self.on_leader(id, LEASE_RENEW_PATH, |n| n.renew_lease_here(id)).await
    }

    pub async fn lease_remaining(&self, id: i64) -> Result<i64, EtcdError> {
        self.on_leader(id, LEASE_TTL_PATH, |n| n.lease_remaining_here(id)).await
    }

    /// Runs `here` if this member leads, otherwise asks the leader at `path`.
    async fn on_leader(
        &self,
        id: i64,
        path: &str,
        here: impl Fn(&Node) -> Result<i64, LocalError>,
    ) -> Result<i64, EtcdError> {
        let deadline = Instant::now() + self.limits.request_timeout;
        loop {
            match here(self) {
                Ok(v) => return Ok(v),
                Err(LocalError::Etcd(e)) => return Err(e),
                Err(LocalError::NotLeader) => {}
            }
            let leader = self.await_leader(deadline).await?;
            if leader != self.id {
                let answer = self.peer_call(leader, path, id.to_be_bytes().to_vec(), deadline).await;
                if let Some(v) = answer.and_then(|b| b.as_ref().try_into().ok().map(i64::from_be_bytes)) {
                    return Ok(v);
                }
            }
            if Instant::now() >= deadline {
                return Err(EtcdError::Timeout);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

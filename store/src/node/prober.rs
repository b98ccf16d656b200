//! Round trips to the other members, timed by followers too
//! (`etcd_network_peer_round_trip_time_seconds`, by peer).
//!
//! The leader times its heartbeats (see `raft::network`). A follower sends the others no
//! requests of its own, so, as each etcd member does, it probes them: a `GET` of
//! `/raft/probing` on each one's peer URL every four seconds (etcd's interval), each
//! answer's round trip observed. etcd's members record two observations a peer soon after
//! start and two more every 30 seconds (measured against etcd 3.4); Keel records every
//! probe.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
use tokio_util::sync::CancellationToken;

use super::Node;
use crate::raft::NodeId;

pub const PROBING_PATH: &str = "/raft/probing";
/// etcd's `proberInterval`: its peer read timeout less a second.
const INTERVAL: Duration = Duration::from_secs(4);

impl Node {
    /// Probes the other members while this one follows, until `stop`.
    pub async fn probe_peers(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            let m = self.raft.metrics().borrow().clone();
            if m.state == ServerState::Leader {
                continue;
            }
            let peers: Vec<NodeId> = m.membership_config.membership().nodes().map(|(id, _)| *id).collect();
            let probes = peers.into_iter().filter(|id| *id != self.id).map(|peer| self.probe(peer));
            futures::future::join_all(probes).await;
        }
    }

    async fn probe(&self, peer: NodeId) {
        let Some(url) = self.peer_url_of(peer) else { return };
        let started = Instant::now();
        let answer = self.http.get(format!("{url}{PROBING_PATH}")).timeout(INTERVAL).send().await;
        match answer {
            Ok(a) if a.status().is_success() => {
                let to = format!("{peer:x}");
                let rtt = &crate::metrics::HOT.peer_round_trip;
                rtt.with_label_values(&[to.as_str()]).observe(started.elapsed().as_secs_f64());
            }
            Ok(a) => tracing::debug!(peer = %format!("{peer:x}"), status = %a.status(), "probe refused"),
            Err(e) => tracing::debug!(peer = %format!("{peer:x}"), error = %e, "probe failed"),
        }
    }
}

/// What a probe is answered with: etcd's (its `probing` package's `Health`).
pub fn probe_answer() -> String {
    format!(r#"{{"OK":true,"Now":"{}"}}"#, jiff::Timestamp::now()) + "\n"
}

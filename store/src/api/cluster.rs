//! The Cluster service: the member list (what `etcdctl member list` shows).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::node::Node;
use crate::proto::etcdserverpb::cluster_server::Cluster;
use crate::proto::etcdserverpb::{Member, MemberListRequest, MemberListResponse};

pub struct ClusterService {
    node: Arc<Node>,
}

impl ClusterService {
    pub fn new(node: Arc<Node>) -> Self {
        ClusterService { node }
    }
}

/// The members as etcd lists them: voters and learners, with the name and client URLs
/// each member published once it started (empty until then).
pub fn members(node: &Node) -> Vec<Member> {
    let m = node.applied.membership.read();
    let attrs = node.applied.attrs.read();
    let membership = m.membership();
    let voters: Vec<u64> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, n)| {
            let a = attrs.get(id);
            Member {
                id: *id,
                name: a.map_or_else(|| n.name.clone(), |a| a.name.clone()),
                peer_ur_ls: n.peer_urls.clone(),
                client_ur_ls: a.map(|a| a.client_urls.clone()).unwrap_or_default(),
                is_learner: !voters.contains(id),
            }
        })
        .collect()
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_list(&self, req: Request<MemberListRequest>) -> Result<Response<MemberListResponse>, Status> {
        if req.get_ref().linearizable {
            self.node.read_barrier().await?;
        }
        let n = &self.node;
        Ok(Response::new(MemberListResponse {
            header: Some(n.header(n.store.current_revision())),
            members: members(n),
        }))
    }
}

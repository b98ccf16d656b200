//! The Cluster service: the member list (what `etcdctl member list` shows).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::node::{MemberChange, Node};
use crate::proto::etcdserverpb::cluster_server::Cluster;
use crate::proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};

pub struct ClusterService {
    node: Arc<Node>,
}

impl ClusterService {
    pub fn new(node: Arc<Node>) -> Self {
        ClusterService { node }
    }

    /// Membership changes are for the root role (etcd's checkMembershipOperationPermission);
    /// the member list is for anyone.
    async fn admin<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let who = self.node.who_sent(req).await?;
        Ok(self.node.auth.check_admin(&who)?)
    }
}

// etcd's Cluster service fills headers without a revision (v3rpc/member.go).

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
        Ok(Response::new(MemberListResponse { header: Some(n.header(0)), members: members(n) }))
    }

    async fn member_add(&self, req: Request<MemberAddRequest>) -> Result<Response<MemberAddResponse>, Status> {
        self.admin(&req).await?;
        let r = req.into_inner();
        let (peer_urls, learner) = (r.peer_ur_ls, r.is_learner);
        let id = self.node.change_member(MemberChange::Add { peer_urls: peer_urls.clone(), learner }).await?;
        let n = &self.node;
        let list = members(n);
        let member = list.iter().find(|m| m.id == id).cloned().unwrap_or(Member {
            id,
            name: String::new(),
            peer_ur_ls: peer_urls,
            client_ur_ls: Vec::new(),
            is_learner: learner,
        });
        Ok(Response::new(MemberAddResponse { header: Some(n.header(0)), member: Some(member), members: list }))
    }

    async fn member_remove(&self, req: Request<MemberRemoveRequest>) -> Result<Response<MemberRemoveResponse>, Status> {
        self.admin(&req).await?;
        self.node.change_member(MemberChange::Remove { id: req.get_ref().id }).await?;
        let n = &self.node;
        let header = Some(n.header(0));
        Ok(Response::new(MemberRemoveResponse { header, members: members(n) }))
    }

    async fn member_update(&self, req: Request<MemberUpdateRequest>) -> Result<Response<MemberUpdateResponse>, Status> {
        self.admin(&req).await?;
        let r = req.into_inner();
        self.node.change_member(MemberChange::Update { id: r.id, peer_urls: r.peer_ur_ls }).await?;
        let n = &self.node;
        let header = Some(n.header(0));
        Ok(Response::new(MemberUpdateResponse { header, members: members(n) }))
    }

    async fn member_promote(
        &self,
        req: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        self.admin(&req).await?;
        self.node.change_member(MemberChange::Promote { id: req.get_ref().id }).await?;
        let n = &self.node;
        let header = Some(n.header(0));
        Ok(Response::new(MemberPromoteResponse { header, members: members(n) }))
    }
}

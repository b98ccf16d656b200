//! The Auth service: turning auth on and off, users, roles, permissions, and
//! `Authenticate`, which trades a user's password for a token.
//!
//! Changes go through Raft as the caller (the state machine checks the caller holds the
//! root role, see [`crate::auth`]); the listings are linearizable reads checked here.
//! Passwords are hashed with bcrypt here, before proposing, so the Raft log and snapshots
//! hold only hashes, as in etcd 3.4.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::auth::{SimpleTokens, Who};
use crate::error::EtcdError;
use crate::node::Node;
use crate::proto::etcdserverpb::auth_server::Auth;
use crate::proto::etcdserverpb::*;
use crate::proto::keelpb::raft_request::Command;
use crate::proto::keelpb::raft_response::Result as Outcome;
use crate::proto::keelpb::AuthenticateCommand;

/// How many times `Authenticate` checks a password again when the auth store changed
/// between the check and the token's entry.
const AUTHENTICATE_ATTEMPTS: usize = 3;

pub struct AuthService {
    node: Arc<Node>,
}

impl AuthService {
    pub fn new(node: Arc<Node>) -> Self {
        AuthService { node }
    }

    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(self.node.header(revision))
    }

    /// Proposes an auth change as the request's sender; the header of its answer.
    async fn change<T>(&self, req: &Request<T>, cmd: Command) -> Result<Option<ResponseHeader>, Status> {
        let who = self.node.who_sent(req).await?;
        let r = self.node.propose_as(cmd, &who).await?;
        Ok(self.header(r.revision))
    }

    /// The sender of a listing, once this member is up to date.
    async fn reader<T>(&self, req: &Request<T>) -> Result<Who, Status> {
        let who = self.node.who_sent(req).await?;
        self.node.read_barrier().await?;
        Ok(who)
    }

    fn current(&self) -> Option<ResponseHeader> {
        self.header(self.node.store.current_revision())
    }

    async fn hash(&self, password: String) -> Result<String, Status> {
        let cost = self.node.auth.bcrypt_cost;
        tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
            .await
            .map_err(|e| EtcdError::Internal(e.to_string()))?
            .map_err(|e| EtcdError::Internal(e.to_string()).into())
    }
}

/// Whether `password` matches a stored bcrypt hash (slow on purpose: off the runtime).
async fn password_matches(password: String, hash: Vec<u8>) -> bool {
    let check = move || std::str::from_utf8(&hash).ok().is_some_and(|h| bcrypt::verify(password, h).unwrap_or(false));
    tokio::task::spawn_blocking(check).await.unwrap_or(false)
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(&self, req: Request<AuthEnableRequest>) -> Result<Response<AuthEnableResponse>, Status> {
        let header = self.change(&req, Command::AuthEnable(AuthEnableRequest {})).await?;
        Ok(Response::new(AuthEnableResponse { header }))
    }

    async fn auth_disable(&self, req: Request<AuthDisableRequest>) -> Result<Response<AuthDisableResponse>, Status> {
        let header = self.change(&req, Command::AuthDisable(AuthDisableRequest {})).await?;
        Ok(Response::new(AuthDisableResponse { header }))
    }

    async fn auth_status(&self, req: Request<AuthStatusRequest>) -> Result<Response<AuthStatusResponse>, Status> {
        self.reader(&req).await?;
        let auth = &self.node.auth;
        Ok(Response::new(AuthStatusResponse {
            header: self.current(),
            enabled: auth.enabled(),
            auth_revision: auth.revision(),
        }))
    }

    async fn authenticate(&self, req: Request<AuthenticateRequest>) -> Result<Response<AuthenticateResponse>, Status> {
        self.node.read_barrier().await?;
        let r = req.into_inner();
        for _ in 0..AUTHENTICATE_ATTEMPTS {
            let (hash, checked_revision) = self.node.auth.password_of(&r.name)?;
            if !password_matches(r.password.clone(), hash).await {
                return Err(EtcdError::AuthFailed.into());
            }
            let cmd = Command::Authenticate(AuthenticateCommand {
                name: r.name.clone(),
                token_prefix: SimpleTokens::new_prefix(),
                checked_revision,
            });
            match self.node.propose(cmd).await {
                Ok(resp) => match resp.result {
                    Some(Outcome::Authenticate(mut a)) => {
                        a.header = self.header(resp.revision);
                        if let Some(jwt) = &self.node.auth.jwt {
                            a.token = jwt.sign(&r.name, checked_revision).map_err(Status::unknown)?;
                        }
                        return Ok(Response::new(a));
                    }
                    _ => return Err(EtcdError::Internal("unexpected apply result".into()).into()),
                },
                Err(EtcdError::AuthOldRevision) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EtcdError::AuthOldRevision.into())
    }

    async fn user_add(&self, req: Request<AuthUserAddRequest>) -> Result<Response<AuthUserAddResponse>, Status> {
        let mut r = req.get_ref().clone();
        if !r.options.as_ref().is_some_and(|o| o.no_password) {
            r.hashed_password = self.hash(std::mem::take(&mut r.password)).await?;
        }
        r.password.clear();
        let header = self.change(&req, Command::AuthUserAdd(r)).await?;
        Ok(Response::new(AuthUserAddResponse { header }))
    }

    async fn user_get(&self, req: Request<AuthUserGetRequest>) -> Result<Response<AuthUserGetResponse>, Status> {
        let who = self.reader(&req).await?;
        let user = self.node.auth.user(&who, &req.get_ref().name)?;
        Ok(Response::new(AuthUserGetResponse { header: self.current(), roles: user.roles }))
    }

    async fn user_list(&self, req: Request<AuthUserListRequest>) -> Result<Response<AuthUserListResponse>, Status> {
        let who = self.reader(&req).await?;
        let users = self.node.auth.users(&who)?;
        Ok(Response::new(AuthUserListResponse { header: self.current(), users }))
    }

    async fn user_delete(
        &self,
        req: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        let header = self.change(&req, Command::AuthUserDelete(req.get_ref().clone())).await?;
        Ok(Response::new(AuthUserDeleteResponse { header }))
    }

    async fn user_change_password(
        &self,
        req: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        let mut r = req.get_ref().clone();
        r.hashed_password = self.hash(std::mem::take(&mut r.password)).await?;
        let header = self.change(&req, Command::AuthUserChangePassword(r)).await?;
        Ok(Response::new(AuthUserChangePasswordResponse { header }))
    }

    async fn user_grant_role(
        &self,
        req: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        let header = self.change(&req, Command::AuthUserGrantRole(req.get_ref().clone())).await?;
        Ok(Response::new(AuthUserGrantRoleResponse { header }))
    }

    async fn user_revoke_role(
        &self,
        req: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        let header = self.change(&req, Command::AuthUserRevokeRole(req.get_ref().clone())).await?;
        Ok(Response::new(AuthUserRevokeRoleResponse { header }))
    }

    async fn role_add(&self, req: Request<AuthRoleAddRequest>) -> Result<Response<AuthRoleAddResponse>, Status> {
        let header = self.change(&req, Command::AuthRoleAdd(req.get_ref().clone())).await?;
        Ok(Response::new(AuthRoleAddResponse { header }))
    }

    async fn role_get(&self, req: Request<AuthRoleGetRequest>) -> Result<Response<AuthRoleGetResponse>, Status> {
        let who = self.reader(&req).await?;
        let perm = self.node.auth.role(&who, &req.get_ref().role)?;
        Ok(Response::new(AuthRoleGetResponse { header: self.current(), perm }))
    }

    async fn role_list(&self, req: Request<AuthRoleListRequest>) -> Result<Response<AuthRoleListResponse>, Status> {
        let who = self.reader(&req).await?;
        let roles = self.node.auth.roles(&who)?;
        Ok(Response::new(AuthRoleListResponse { header: self.current(), roles }))
    }

    async fn role_delete(
        &self,
        req: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        let header = self.change(&req, Command::AuthRoleDelete(req.get_ref().clone())).await?;
        Ok(Response::new(AuthRoleDeleteResponse { header }))
    }

    async fn role_grant_permission(
        &self,
        req: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        let header = self.change(&req, Command::AuthRoleGrantPermission(req.get_ref().clone())).await?;
        Ok(Response::new(AuthRoleGrantPermissionResponse { header }))
    }

    async fn role_revoke_permission(
        &self,
        req: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        let header = self.change(&req, Command::AuthRoleRevokePermission(req.get_ref().clone())).await?;
        Ok(Response::new(AuthRoleRevokePermissionResponse { header }))
    }
}

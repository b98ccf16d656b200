//! The replicated auth state and etcd's rules over it: what each auth command changes
//! (etcd's authStore), and who may do what (its permission, admin and lease checks).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;

use super::perms::UserPerms;
use super::{Who, ROOT};
use crate::error::EtcdError;
use crate::proto::authpb::{Role, User, UserAddOptions};
use crate::proto::etcdserverpb::request_op::Request as Op;
use crate::proto::etcdserverpb::{AuthenticateResponse, TxnRequest};
use crate::proto::keelpb::raft_request::Command;
use crate::proto::keelpb::raft_response::Result as Outcome;

/// The replicated auth state, replaced whole on every change (changes are rare).
#[derive(Clone, Debug)]
pub(super) struct State {
    pub(super) enabled: bool,
    pub(super) revision: u64,
    pub(super) users: BTreeMap<String, User>,
    pub(super) roles: BTreeMap<String, Role>,
    /// Each user's merged permissions, derived from the two maps above.
    pub(super) perms: HashMap<String, Arc<UserPerms>>,
}

impl State {
    pub(super) fn refresh_perms(&mut self) {
        self.perms = self
            .users
            .iter()
            .map(|(name, u)| {
                let grants = u.roles.iter().filter_map(|r| self.roles.get(r)).flat_map(|r| &r.key_permission);
                (name.clone(), Arc::new(UserPerms::merge(grants)))
            })
            .collect();
    }

    pub(super) fn has_role(&self, user: &str, role: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.roles.iter().any(|r| r == role))
    }

    /// etcd's IsAdminPermitted.
    pub(super) fn admin(&self, who: &Who) -> Result<(), EtcdError> {
        if !self.enabled {
            return Ok(());
        }
        if who.username.is_empty() {
            return Err(EtcdError::UserEmpty);
        }
        if !self.users.contains_key(&who.username) {
            return Err(EtcdError::UserNotFound);
        }
        if !self.has_role(&who.username, ROOT) {
            return Err(EtcdError::PermissionDenied);
        }
        Ok(())
    }

    /// etcd's isOpPermitted: `key` alone (empty `range_end`) or `[key, range_end)`.
    pub(super) fn permitted(&self, who: &Who, key: &[u8], range_end: &[u8], write: bool) -> Result<(), EtcdError> {
        if !self.enabled {
            return Ok(());
        }
        if who.auth_revision == 0 {
            return Err(EtcdError::UserEmpty);
        }
        if who.auth_revision < self.revision {
            return Err(EtcdError::AuthOldRevision);
        }
        if !self.users.contains_key(&who.username) {
            return Err(EtcdError::PermissionDenied);
        }
        if self.has_role(&who.username, ROOT) {
            return Ok(());
        }
        let perms = self.perms.get(&who.username).ok_or(EtcdError::PermissionDenied)?;
        let ranges = if write { &perms.write } else { &perms.read };
        if ranges.covers(key, range_end) {
            Ok(())
        } else {
            Err(EtcdError::PermissionDenied)
        }
    }

    /// A put with lease `keys` attached to it (or that lease's revoke) deletes those keys
    /// when the lease goes, so the user must be able to write them all (etcd's
    /// checkLeasePuts).
    pub(super) fn lease_keys_writable(&self, who: &Who, keys: &[Bytes]) -> Result<(), EtcdError> {
        if keys.is_empty() || self.admin(who).is_ok() {
            return Ok(());
        }
        keys.iter().try_for_each(|k| self.permitted(who, k, b"", true))
    }

    /// Every compare and operation of a transaction, nested ones included. Unlike etcd
    /// 3.4.23, a put's `prev_kv` and lease are checked here as they are for a plain put
    /// (the fix of GHSA-x35m-3gp4-4fh5).
    pub(super) fn txn(
        &self,
        who: &Who,
        t: &TxnRequest,
        lease_keys: &dyn Fn(i64) -> Vec<Bytes>,
    ) -> Result<(), EtcdError> {
        for c in &t.compare {
            self.permitted(who, &c.key, &c.range_end, false)?;
        }
        for op in t.success.iter().chain(&t.failure) {
            match &op.request {
                Some(Op::RequestRange(r)) => self.permitted(who, &r.key, &r.range_end, false)?,
                Some(Op::RequestPut(p)) => {
                    self.permitted(who, &p.key, b"", true)?;
                    if p.prev_kv {
                        self.permitted(who, &p.key, b"", false)?;
                    }
                    if p.lease != 0 {
                        self.lease_keys_writable(who, &lease_keys(p.lease))?;
                    }
                }
                Some(Op::RequestDeleteRange(d)) => {
                    if d.prev_kv {
                        self.permitted(who, &d.key, &d.range_end, false)?;
                    }
                    self.permitted(who, &d.key, &d.range_end, true)?;
                }
                Some(Op::RequestTxn(n)) => self.txn(who, n, lease_keys)?,
                None => {}
            }
        }
        Ok(())
    }

    pub(super) fn bump(&mut self) {
        self.revision += 1;
    }
}

/// What an applied auth command changes besides the state: the members' tokens.
pub(super) enum Tokens {
    Keep,
    Assign { token: String, user: String },
    ForgetUser(String),
    ForgetAll,
}

pub(super) fn no_password(u: &User) -> bool {
    u.options.as_ref().is_some_and(|o| o.no_password)
}

/// etcd's authStore rules for each command, applied to `st`.
/// With `simple_tokens`, a successful `Authenticate` issues the token every member records;
/// else (JWT) the token is signed by the member that was asked, once the entry is applied.
pub(super) fn change(
    st: &mut State,
    cmd: &Command,
    index: u64,
    simple_tokens: bool,
    tokens: &mut Tokens,
    out: &mut Outcome,
) -> Result<(), EtcdError> {
    match cmd {
        Command::AuthEnable(_) => {
            if st.enabled {
                return Ok(());
            }
            if !st.users.contains_key(ROOT) {
                return Err(EtcdError::RootUserNotExist);
            }
            if !st.has_role(ROOT, ROOT) {
                return Err(EtcdError::RootRoleNotExist);
            }
            st.enabled = true;
        }
        Command::AuthDisable(_) if st.enabled => {
            st.enabled = false;
            st.bump();
            *tokens = Tokens::ForgetAll;
        }
        Command::Authenticate(a) => {
            if !st.enabled {
                return Err(EtcdError::AuthNotEnabled);
            }
            let user = st.users.get(&a.name).ok_or(EtcdError::AuthFailed)?;
            if no_password(user) {
                return Err(EtcdError::AuthFailed);
            }
            // The password was checked against this revision's hash: a change since
            // (a new password, say) and the proposer checks again.
            if a.checked_revision != st.revision {
                return Err(EtcdError::AuthOldRevision);
            }
            if simple_tokens {
                let token = format!("{}.{index}", a.token_prefix);
                *out = Outcome::Authenticate(AuthenticateResponse { header: None, token: token.clone() });
                *tokens = Tokens::Assign { token, user: a.name.clone() };
            } else {
                *out = Outcome::Authenticate(AuthenticateResponse::default());
            }
        }
        Command::AuthUserAdd(r) => {
            if r.name.is_empty() {
                return Err(EtcdError::UserEmpty);
            }
            if st.users.contains_key(&r.name) {
                return Err(EtcdError::UserAlreadyExist);
            }
            let options = r.options.unwrap_or(UserAddOptions { no_password: false });
            let password = if options.no_password { Bytes::new() } else { Bytes::from(r.hashed_password.clone()) };
            let user = User { name: Bytes::from(r.name.clone()), password, roles: Vec::new(), options: Some(options) };
            st.users.insert(r.name.clone(), user);
            st.bump();
        }
        Command::AuthUserDelete(r) => {
            if st.enabled && r.name == ROOT {
                return Err(EtcdError::InvalidAuthMgmt);
            }
            st.users.remove(&r.name).ok_or(EtcdError::UserNotFound)?;
            st.bump();
            *tokens = Tokens::ForgetUser(r.name.clone());
        }
        Command::AuthUserChangePassword(r) => {
            let user = st.users.get_mut(&r.name).ok_or(EtcdError::UserNotFound)?;
            if !no_password(user) {
                user.password = Bytes::from(r.hashed_password.clone());
            }
            st.bump();
            *tokens = Tokens::ForgetUser(r.name.clone());
        }
        Command::AuthUserGrantRole(r) => {
            if !st.users.contains_key(&r.user) {
                return Err(EtcdError::UserNotFound);
            }
            if r.role != ROOT && !st.roles.contains_key(&r.role) {
                return Err(EtcdError::RoleNotFound);
            }
            let user = st.users.get_mut(&r.user).ok_or(EtcdError::UserNotFound)?;
            if let Err(at) = user.roles.binary_search(&r.role) {
                user.roles.insert(at, r.role.clone());
                st.bump();
            }
        }
        Command::AuthUserRevokeRole(r) => {
            if st.enabled && r.name == ROOT && r.role == ROOT {
                return Err(EtcdError::InvalidAuthMgmt);
            }
            let user = st.users.get_mut(&r.name).ok_or(EtcdError::UserNotFound)?;
            let before = user.roles.len();
            user.roles.retain(|x| *x != r.role);
            if user.roles.len() == before {
                return Err(EtcdError::RoleNotGranted);
            }
            st.bump();
        }
        Command::AuthRoleAdd(r) => {
            if r.name.is_empty() {
                return Err(EtcdError::RoleEmpty);
            }
            if st.roles.contains_key(&r.name) {
                return Err(EtcdError::RoleAlreadyExist);
            }
            st.roles.insert(r.name.clone(), Role { name: Bytes::from(r.name.clone()), key_permission: Vec::new() });
            st.bump();
        }
        Command::AuthRoleDelete(r) => {
            if st.enabled && r.role == ROOT {
                return Err(EtcdError::InvalidAuthMgmt);
            }
            st.roles.remove(&r.role).ok_or(EtcdError::RoleNotFound)?;
            for u in st.users.values_mut() {
                u.roles.retain(|x| *x != r.role);
            }
            st.bump();
        }
        Command::AuthRoleGrantPermission(r) => {
            let perm = r.perm.as_ref().ok_or(EtcdError::PermissionNotGiven)?;
            let role = st.roles.get_mut(&r.name).ok_or(EtcdError::RoleNotFound)?;
            // As etcd: only the first permission on the same key is updated, if its range
            // end matches too; otherwise the grant is added after those on its key.
            let first = role.key_permission.partition_point(|p| p.key < perm.key);
            match role.key_permission.get_mut(first) {
                Some(p) if p.key == perm.key && p.range_end == perm.range_end => p.perm_type = perm.perm_type,
                _ => {
                    let at = role.key_permission.partition_point(|p| p.key <= perm.key);
                    role.key_permission.insert(at, perm.clone());
                }
            }
            st.bump();
        }
        Command::AuthRoleRevokePermission(r) => {
            let role = st.roles.get_mut(&r.role).ok_or(EtcdError::RoleNotFound)?;
            let before = role.key_permission.len();
            role.key_permission.retain(|p| p.key != r.key || p.range_end != r.range_end);
            if role.key_permission.len() == before {
                return Err(EtcdError::PermissionNotGranted);
            }
            st.bump();
        }
        _ => {}
    }
    Ok(())
}

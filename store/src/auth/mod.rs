//! Authentication and authorisation, as etcd's v3 auth does them: users with bcrypt
//! password hashes, roles that grant READ, WRITE or READWRITE on a key, a range or every
//! key from one on, the `root` user and role (everything, and auth management), and
//! "simple" tokens.
//!
//! The users, roles, on/off switch and the auth revision (bumped by every change) are
//! replicated state: each change is a Raft command applied by [`AuthStore::apply`], and is
//! stored in the Meta column family (`auth/...`) in the same write as the applied log id,
//! so snapshots carry it. Who may do what is checked where etcd checks it:
//! - writes (put, delete, txn, lease revoke, auth management) when the state machine
//!   applies them ([`AuthStore::check_command`]), against the identity and auth revision
//!   the request carries ([`AuthHeader`]); a request authorised before a later auth change
//!   fails with "revision of auth store is old", and the client authenticates again;
//! - reads, watches and maintenance calls in the API layer, against the current state.
//!
//! With auth disabled every check passes at the cost of one atomic load.

mod jwt;
mod perms;
mod state;
mod tokens;

pub use jwt::JwtTokens;
pub use tokens::SimpleTokens;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use prost::Message;

use crate::engine::{Cf, Engine, EngineError, KvPair, WriteBatch};
use crate::error::EtcdError;
use crate::proto::authpb::{Permission, Role, User};
use crate::proto::etcdserverpb::TxnRequest;
use crate::proto::keelpb::raft_request::Command;
use crate::proto::keelpb::raft_response::Result as Outcome;
use crate::proto::keelpb::{AuthHeader, Empty};
use state::{change, no_password, State, Tokens};

/// The user and role that may do everything.
pub const ROOT: &str = "root";

const ENABLED_KEY: &[u8] = b"auth/enabled";
const REVISION_KEY: &[u8] = b"auth/revision";
const USER_PREFIX: &[u8] = b"auth/user/";
const ROLE_PREFIX: &[u8] = b"auth/role/";

/// Who sent a request: a user and the auth revision their token was checked at; the
/// default (empty name, revision 0) is a client that sent no token.
pub type Who = AuthHeader;

/// What a request says about who sent it: a token (gRPC metadata `token`, or the JSON
/// gateway's `Authorization` header), and the CommonName of the verified client
/// certificate it came with (`--client-cert-auth`). Resolved by `Node::who`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    pub token: Option<String>,
    pub cert_name: Option<String>,
}

impl Credentials {
    pub fn of<T>(req: &tonic::Request<T>) -> Credentials {
        let token = ["token", "authorization"]
            .iter()
            .find_map(|k| req.metadata().get(*k))
            .map(|v| v.to_str().map(str::to_string).unwrap_or_default());
        let cert_name = req
            .extensions()
            .get::<axum::extract::ConnectInfo<crate::api::tls::ClientCert>>()
            .and_then(|c| c.0 .0.clone());
        Credentials { token, cert_name }
    }

    /// A request carrying these credentials, as [`Credentials::of`] reads them.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Some(t) = self.token.as_deref().and_then(|t| tonic::metadata::MetadataValue::try_from(t).ok()) {
            req.metadata_mut().insert("token", t);
        }
        if self.cert_name.is_some() {
            let cert = crate::api::tls::ClientCert(self.cert_name.clone());
            req.extensions_mut().insert(axum::extract::ConnectInfo(cert));
        }
        req
    }
}

/// An applied auth command's effect, made visible by [`AuthStore::commit`] once its
/// write is stored.
pub struct Change {
    state: Option<State>,
    tokens: Tokens,
}

/// Whether a command is auth management (applied by [`AuthStore::apply`]).
pub fn is_auth_command(cmd: &Command) -> bool {
    use Command::*;
    matches!(
        cmd,
        AuthEnable(_)
            | AuthDisable(_)
            | Authenticate(_)
            | AuthUserAdd(_)
            | AuthUserDelete(_)
            | AuthUserChangePassword(_)
            | AuthUserGrantRole(_)
            | AuthUserRevokeRole(_)
            | AuthRoleAdd(_)
            | AuthRoleDelete(_)
            | AuthRoleGrantPermission(_)
            | AuthRoleRevokePermission(_)
    )
}

/// A user as the API reports it.
pub struct UserInfo {
    pub roles: Vec<String>,
}

pub struct AuthStore {
    engine: Engine,
    state: RwLock<Arc<State>>,
    /// `state.enabled`, for the checks' fast path.
    enabled: AtomicBool,
    revision: AtomicU64,
    pub tokens: SimpleTokens,
    /// With `--auth-token jwt,...`: tokens are these instead of simple ones.
    pub jwt: Option<JwtTokens>,
    /// bcrypt's cost for new password hashes (`--bcrypt-cost`).
    pub bcrypt_cost: u32,
}

impl AuthStore {
    pub fn open(engine: Engine, tokens: SimpleTokens, bcrypt_cost: u32) -> Result<AuthStore, EngineError> {
        let state = Self::load(&engine)?;
        let store = AuthStore {
            engine,
            enabled: AtomicBool::new(state.enabled),
            revision: AtomicU64::new(state.revision),
            state: RwLock::new(Arc::new(state)),
            tokens,
            jwt: None,
            bcrypt_cost,
        };
        Ok(store)
    }

    /// Issue and take JWT tokens instead of simple ones.
    pub fn with_jwt(mut self, jwt: JwtTokens) -> AuthStore {
        self.jwt = Some(jwt);
        self
    }

    /// A store with a cheap bcrypt cost and long-lived tokens, for tests.
    #[cfg(test)]
    pub fn for_tests(engine: Engine) -> Result<Arc<AuthStore>, EngineError> {
        Self::open(engine, SimpleTokens::new(std::time::Duration::from_secs(300)), 4).map(Arc::new)
    }

    fn load(engine: &Engine) -> Result<State, EngineError> {
        let enabled = engine.get(Cf::Meta, ENABLED_KEY)?.is_some_and(|v| v == [1]);
        // etcd starts its auth revision at 1.
        let revision = engine
            .get(Cf::Meta, REVISION_KEY)?
            .and_then(|v| v.as_slice().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(1);
        let mut users = BTreeMap::new();
        for (k, v) in scan_prefix(engine, USER_PREFIX)? {
            if let (Ok(name), Ok(u)) = (String::from_utf8(k[USER_PREFIX.len()..].to_vec()), User::decode(&*v)) {
                users.insert(name, u);
            }
        }
        let mut roles = BTreeMap::new();
        for (k, v) in scan_prefix(engine, ROLE_PREFIX)? {
            if let (Ok(name), Ok(r)) = (String::from_utf8(k[ROLE_PREFIX.len()..].to_vec()), Role::decode(&*v)) {
                roles.insert(name, r);
            }
        }
        let mut state = State { enabled, revision, users, roles, perms: HashMap::new() };
        state.refresh_perms();
        Ok(state)
    }

    /// Reads the state back from storage (after a snapshot install). The snapshot may
    /// hold changes that end tokens (a new password, a deleted user, auth disabled), which
    /// this member never applied one by one: every simple token is forgotten, and clients
    /// authenticate again.
    pub fn reload(&self) -> Result<(), EngineError> {
        let state = Self::load(&self.engine)?;
        self.publish(state);
        self.tokens.clear();
        Ok(())
    }

    fn publish(&self, state: State) {
        self.enabled.store(state.enabled, Ordering::Release);
        self.revision.store(state.revision, Ordering::Release);
        *self.state.write() = Arc::new(state);
    }

    fn current(&self) -> Arc<State> {
        self.state.read().clone()
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }

    /// Who a token names, as of now (etcd's AuthInfoFromCtx): anonymous without a token;
    /// an unknown or lapsed token is an error, and so is any token with auth off.
    pub fn who(&self, token: Option<&str>) -> Result<Who, EtcdError> {
        let Some(token) = token else { return Ok(Who::default()) };
        if !self.enabled() {
            return Err(EtcdError::InvalidAuthToken);
        }
        if let Some(jwt) = &self.jwt {
            let (username, auth_revision) = jwt.verify(token).ok_or(EtcdError::InvalidAuthToken)?;
            return Ok(Who { username, auth_revision });
        }
        let username = self.tokens.user(token).ok_or(EtcdError::InvalidAuthToken)?;
        Ok(Who { username, auth_revision: self.revision() })
    }

    /// Read permission on `key` or `[key, range_end)`.
    pub fn check_read(&self, who: &Who, key: &[u8], range_end: &[u8]) -> Result<(), EtcdError> {
        if !self.enabled() {
            return Ok(());
        }
        self.current().permitted(who, key, range_end, false)
    }

    /// Every read of a transaction that only reads.
    pub fn check_read_txn(&self, who: &Who, t: &TxnRequest) -> Result<(), EtcdError> {
        if !self.enabled() {
            return Ok(());
        }
        self.current().txn(who, t, &|_| Vec::new())
    }

    /// Maintenance and auth management: the root role.
    pub fn check_admin(&self, who: &Who) -> Result<(), EtcdError> {
        if !self.enabled() {
            return Ok(());
        }
        self.current().admin(who)
    }

    /// A lease's keys may be listed to a user who may read them all (the fix of
    /// CVE-2023-32082), or to an admin.
    pub fn check_lease_keys_readable(&self, who: &Who, keys: &[Bytes]) -> Result<(), EtcdError> {
        if !self.enabled() {
            return Ok(());
        }
        let st = self.current();
        if st.admin(who).is_ok() {
            return Ok(());
        }
        keys.iter().try_for_each(|k| st.permitted(who, k, b"", false))
    }

    /// The permission check of a client's command, made when it is applied.
    /// `lease_keys` lists the keys attached to a lease.
    pub fn check_command(
        &self,
        cmd: &Command,
        who: &Who,
        lease_keys: &dyn Fn(i64) -> Vec<Bytes>,
    ) -> Result<(), EtcdError> {
        if !self.enabled() {
            return Ok(());
        }
        let st = self.current();
        match cmd {
            Command::Put(p) => {
                st.permitted(who, &p.key, b"", true)?;
                if p.lease != 0 {
                    st.lease_keys_writable(who, &lease_keys(p.lease))?;
                }
                if p.prev_kv {
                    st.permitted(who, &p.key, b"", false)?;
                }
                Ok(())
            }
            Command::DeleteRange(d) => {
                st.permitted(who, &d.key, &d.range_end, true)?;
                if d.prev_kv {
                    st.permitted(who, &d.key, &d.range_end, false)?;
                }
                Ok(())
            }
            Command::Txn(t) => st.txn(who, t, lease_keys),
            Command::LeaseRevoke(r) => st.lease_keys_writable(who, &lease_keys(r.id)),
            _ => Ok(()),
        }
    }

    /// The password hash of `name` and the auth revision it was read at, for checking a
    /// password outside any lock (bcrypt is slow on purpose).
    pub fn password_of(&self, name: &str) -> Result<(Vec<u8>, u64), EtcdError> {
        let st = self.current();
        if !st.enabled {
            return Err(EtcdError::AuthNotEnabled);
        }
        let user = st.users.get(name).ok_or(EtcdError::AuthFailed)?;
        if no_password(user) {
            return Err(EtcdError::NoPasswordUser);
        }
        Ok((user.password.to_vec(), st.revision))
    }

    pub fn user(&self, who: &Who, name: &str) -> Result<UserInfo, EtcdError> {
        let st = self.current();
        if let Err(e) = st.admin(who) {
            if name != who.username {
                return Err(e);
            }
        }
        let user = st.users.get(name).ok_or(EtcdError::UserNotFound)?;
        Ok(UserInfo { roles: user.roles.clone() })
    }

    pub fn users(&self, who: &Who) -> Result<Vec<String>, EtcdError> {
        let st = self.current();
        st.admin(who)?;
        Ok(st.users.keys().cloned().collect())
    }

    pub fn role(&self, who: &Who, name: &str) -> Result<Vec<Permission>, EtcdError> {
        let st = self.current();
        if let Err(e) = st.admin(who) {
            if !st.has_role(&who.username, name) {
                return Err(e);
            }
        }
        let role = st.roles.get(name).ok_or(EtcdError::RoleNotFound)?;
        Ok(role.key_permission.clone())
    }

    pub fn roles(&self, who: &Who) -> Result<Vec<String>, EtcdError> {
        let st = self.current();
        st.admin(who)?;
        Ok(st.roles.keys().cloned().collect())
    }

    /// Applies an auth command, staging its writes in `batch`. Returns the outcome and,
    /// when the command changed anything, what [`Self::commit`] makes visible once
    /// `batch` is written. `who` is absent only for a member's own commands.
    pub fn apply(
        &self,
        cmd: &Command,
        who: Option<&Who>,
        index: u64,
        batch: &mut WriteBatch,
    ) -> (Result<Outcome, EtcdError>, Option<Change>) {
        let cur = self.current();
        if let (Some(who), false) = (who, matches!(cmd, Command::Authenticate(_))) {
            if let Err(e) = cur.admin(who) {
                return (Err(e), None);
            }
        }
        let mut next = (*cur).clone();
        let mut tokens = Tokens::Keep;
        let mut outcome = Outcome::Empty(Empty {});
        if let Err(e) = change(&mut next, cmd, index, self.jwt.is_none(), &mut tokens, &mut outcome) {
            return (Err(e), None);
        }
        let changed = stage(&cur, &next, batch);
        if changed {
            next.refresh_perms();
        }
        let state = changed.then_some(next);
        (Ok(outcome), Some(Change { state, tokens }))
    }

    /// Makes an applied command's change visible.
    pub fn commit(&self, change: Change) {
        if let Some(state) = change.state {
            self.publish(state);
        }
        match change.tokens {
            Tokens::Keep => {}
            Tokens::Assign { token, user } => self.tokens.assign(token, user),
            Tokens::ForgetUser(u) => self.tokens.invalidate_user(&u),
            Tokens::ForgetAll => self.tokens.clear(),
        }
    }
}

fn scan_prefix(engine: &Engine, prefix: &[u8]) -> Result<Vec<KvPair>, EngineError> {
    let mut end = prefix.to_vec();
    end.push(0xFF);
    engine.scan(Cf::Meta, prefix, Some(&end))?.collect()
}

fn key(prefix: &[u8], name: &str) -> Vec<u8> {
    [prefix, name.as_bytes()].concat()
}

/// Stages the writes that turn `old` into `new`; whether there were any.
fn stage(old: &State, new: &State, batch: &mut WriteBatch) -> bool {
    let mut changed = false;
    if old.enabled != new.enabled {
        batch.put(Cf::Meta, ENABLED_KEY, vec![u8::from(new.enabled)]);
        changed = true;
    }
    if old.revision != new.revision {
        batch.put(Cf::Meta, REVISION_KEY, new.revision.to_be_bytes().to_vec());
        changed = true;
    }
    changed |= stage_map(&old.users, &new.users, USER_PREFIX, batch);
    changed |= stage_map(&old.roles, &new.roles, ROLE_PREFIX, batch);
    changed
}

fn stage_map<T: Message + PartialEq>(
    old: &BTreeMap<String, T>,
    new: &BTreeMap<String, T>,
    prefix: &[u8],
    batch: &mut WriteBatch,
) -> bool {
    let mut changed = false;
    for (name, v) in new {
        if old.get(name) != Some(v) {
            batch.put(Cf::Meta, key(prefix, name), v.encode_to_vec());
            changed = true;
        }
    }
    for name in old.keys().filter(|n| !new.contains_key(*n)) {
        batch.delete(Cf::Meta, key(prefix, name));
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests;

use std::time::Duration;

use super::*;
use crate::proto::authpb::permission::Type;
use crate::proto::etcdserverpb::{
    compare, request_op, AuthEnableRequest, AuthRoleAddRequest, AuthRoleDeleteRequest, AuthRoleGrantPermissionRequest,
    AuthRoleRevokePermissionRequest, AuthUserAddRequest, AuthUserDeleteRequest, AuthUserGrantRoleRequest,
    AuthUserRevokeRoleRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
};
use crate::proto::keelpb::AuthenticateCommand;

struct Fixture {
    _dir: tempfile::TempDir,
    engine: Engine,
    auth: AuthStore,
    index: u64,
}

fn root() -> Who {
    Who { username: ROOT.into(), auth_revision: 0 }
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::open(dir.path()).expect("engine");
        let auth = AuthStore::open(engine.clone(), SimpleTokens::new(Duration::from_secs(60)), 4).expect("auth");
        Fixture { _dir: dir, engine, auth, index: 0 }
    }

    /// Applies `cmd` as `who` would, writing it as the state machine does.
    fn run(&mut self, who: &Who, cmd: Command) -> Result<Outcome, EtcdError> {
        self.index += 1;
        let mut batch = WriteBatch::default();
        let (out, change) = self.auth.apply(&cmd, Some(who), self.index, &mut batch);
        self.engine.write(batch, false).expect("write");
        if let Some(c) = change {
            self.auth.commit(c);
        }
        out
    }

    fn ok(&mut self, who: &Who, cmd: Command) {
        if let Err(e) = self.run(who, cmd.clone()) {
            panic!("{cmd:?}: {e}");
        }
    }

    /// root with the root role, user alice with role r1, auth enabled.
    fn enabled() -> Fixture {
        let mut f = Fixture::new();
        let anyone = Who::default();
        for name in [ROOT, "alice"] {
            f.ok(&anyone, user_add(name));
        }
        f.ok(&anyone, Command::AuthRoleAdd(AuthRoleAddRequest { name: "r1".into() }));
        f.ok(&anyone, grant_role(ROOT, ROOT));
        f.ok(&anyone, grant_role("alice", "r1"));
        f.ok(&anyone, Command::AuthEnable(AuthEnableRequest {}));
        f
    }

    fn who(&self, name: &str) -> Who {
        Who { username: name.into(), auth_revision: self.auth.revision() }
    }
}

fn user_add(name: &str) -> Command {
    Command::AuthUserAdd(AuthUserAddRequest {
        name: name.into(),
        hashed_password: format!("hash-of-{name}"),
        ..Default::default()
    })
}

fn grant_role(user: &str, role: &str) -> Command {
    Command::AuthUserGrantRole(AuthUserGrantRoleRequest { user: user.into(), role: role.into() })
}

fn grant(role: &str, t: Type, key: &str, end: &[u8]) -> Command {
    Command::AuthRoleGrantPermission(AuthRoleGrantPermissionRequest {
        name: role.into(),
        perm: Some(Permission { perm_type: t as i32, key: b(key), range_end: end.to_vec().into() }),
    })
}

fn put(key: &str) -> Command {
    Command::Put(PutRequest { key: b(key), value: "v".into(), ..Default::default() })
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn no_leases(_: i64) -> Vec<Bytes> {
    Vec::new()
}

#[test]
fn auth_enable_needs_root_with_the_root_role() {
    let mut f = Fixture::new();
    let anyone = Who::default();
    assert_eq!(f.run(&anyone, Command::AuthEnable(AuthEnableRequest {})), Err(EtcdError::RootUserNotExist));
    f.ok(&anyone, user_add(ROOT));
    assert_eq!(f.run(&anyone, Command::AuthEnable(AuthEnableRequest {})), Err(EtcdError::RootRoleNotExist));
    // The root role needs no RoleAdd to be granted.
    f.ok(&anyone, grant_role(ROOT, ROOT));
    let rev = f.auth.revision();
    f.ok(&anyone, Command::AuthEnable(AuthEnableRequest {}));
    assert!(f.auth.enabled());
    assert_eq!(f.auth.revision(), rev, "enabling does not bump the revision, as in etcd");
    // Now only root may manage auth.
    assert_eq!(
        f.run(&anyone, Command::AuthRoleAdd(AuthRoleAddRequest { name: "r".into() })),
        Err(EtcdError::UserEmpty)
    );
    f.ok(&root(), Command::AuthRoleAdd(AuthRoleAddRequest { name: "r".into() }));
    assert_eq!(
        f.run(&root(), Command::AuthUserDelete(AuthUserDeleteRequest { name: ROOT.into() })),
        Err(EtcdError::InvalidAuthMgmt)
    );
    assert_eq!(
        f.run(&root(), Command::AuthUserRevokeRole(AuthUserRevokeRoleRequest { name: ROOT.into(), role: ROOT.into() })),
        Err(EtcdError::InvalidAuthMgmt)
    );
}

#[test]
fn management_errors_are_etcds() {
    let mut f = Fixture::new();
    let a = Who::default();
    assert_eq!(f.run(&a, user_add("")), Err(EtcdError::UserEmpty));
    f.ok(&a, user_add("u"));
    assert_eq!(f.run(&a, user_add("u")), Err(EtcdError::UserAlreadyExist));
    assert_eq!(f.run(&a, Command::AuthRoleAdd(AuthRoleAddRequest { name: "".into() })), Err(EtcdError::RoleEmpty));
    f.ok(&a, Command::AuthRoleAdd(AuthRoleAddRequest { name: "r".into() }));
    assert_eq!(
        f.run(&a, Command::AuthRoleAdd(AuthRoleAddRequest { name: "r".into() })),
        Err(EtcdError::RoleAlreadyExist)
    );
    assert_eq!(f.run(&a, grant_role("nobody", "r")), Err(EtcdError::UserNotFound));
    assert_eq!(f.run(&a, grant_role("u", "nothing")), Err(EtcdError::RoleNotFound));
    f.ok(&a, grant_role("u", "r"));
    let rev = f.auth.revision();
    f.ok(&a, grant_role("u", "r"));
    assert_eq!(f.auth.revision(), rev, "a repeated grant changes nothing");
    assert_eq!(
        f.run(&a, Command::AuthUserRevokeRole(AuthUserRevokeRoleRequest { name: "u".into(), role: "x".into() })),
        Err(EtcdError::RoleNotGranted)
    );
    assert_eq!(
        f.run(
            &a,
            Command::AuthRoleRevokePermission(AuthRoleRevokePermissionRequest {
                role: "r".into(),
                key: "k".into(),
                range_end: Bytes::new()
            })
        ),
        Err(EtcdError::PermissionNotGranted)
    );
    assert_eq!(
        f.run(&a, Command::AuthRoleGrantPermission(AuthRoleGrantPermissionRequest { name: "r".into(), perm: None })),
        Err(EtcdError::PermissionNotGiven)
    );
    // Deleting a role takes it from its users.
    f.ok(&a, Command::AuthRoleDelete(AuthRoleDeleteRequest { role: "r".into() }));
    assert!(f.auth.user(&a, "u").expect("user").roles.is_empty());
}

#[test]
fn permissions_are_kept_sorted_and_a_regrant_updates_the_type() {
    let mut f = Fixture::new();
    let a = Who::default();
    f.ok(&a, Command::AuthRoleAdd(AuthRoleAddRequest { name: "r".into() }));
    f.ok(&a, grant("r", Type::Read, "b", b""));
    f.ok(&a, grant("r", Type::Write, "a", b"c"));
    f.ok(&a, grant("r", Type::Readwrite, "b", b""));
    let perms = f.auth.role(&a, "r").expect("role");
    let seen: Vec<(&[u8], i32)> = perms.iter().map(|p| (&p.key[..], p.perm_type)).collect();
    assert_eq!(seen, vec![(b"a".as_slice(), Type::Write as i32), (b"b".as_slice(), Type::Readwrite as i32)]);
}

#[test]
fn writes_are_checked_against_the_users_grants_and_revision() {
    let mut f = Fixture::enabled();
    f.ok(&root(), grant("r1", Type::Readwrite, "/p/", b"/p0"));
    f.ok(&root(), grant("r1", Type::Write, "/w", b""));
    let alice = f.who("alice");
    let check = |f: &Fixture, who: &Who, cmd: &Command| f.auth.check_command(cmd, who, &no_leases);
    assert_eq!(check(&f, &alice, &put("/p/a")), Ok(()));
    assert_eq!(check(&f, &alice, &put("/q")), Err(EtcdError::PermissionDenied));
    assert_eq!(check(&f, &f.who(ROOT), &put("/q")), Ok(()));
    assert_eq!(check(&f, &Who::default(), &put("/p/a")), Err(EtcdError::UserEmpty));
    // A write-only key refuses prev_kv, which would read it.
    let prev = Command::Put(PutRequest { key: "/w".into(), prev_kv: true, ..Default::default() });
    assert_eq!(check(&f, &alice, &put("/w")), Ok(()));
    assert_eq!(check(&f, &alice, &prev), Err(EtcdError::PermissionDenied));
    // A delete of the whole prefix is covered; one reaching past it is not.
    let del = |end: &str| {
        Command::DeleteRange(DeleteRangeRequest { key: "/p/".into(), range_end: b(end), ..Default::default() })
    };
    assert_eq!(check(&f, &alice, &del("/p0")), Ok(()));
    assert_eq!(check(&f, &alice, &del("/q")), Err(EtcdError::PermissionDenied));
    // Transactions: compares read, nested operations count.
    let txn = |compare_key: &str, op_key: &str| {
        Command::Txn(TxnRequest {
            compare: vec![Compare {
                key: b(compare_key),
                target: compare::CompareTarget::Version as i32,
                ..Default::default()
            }],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestTxn(TxnRequest {
                    success: vec![RequestOp {
                        request: Some(request_op::Request::RequestRange(RangeRequest {
                            key: b(op_key),
                            ..Default::default()
                        })),
                    }],
                    ..Default::default()
                })),
            }],
            failure: vec![],
        })
    };
    assert_eq!(check(&f, &alice, &txn("/p/a", "/p/b")), Ok(()));
    assert_eq!(check(&f, &alice, &txn("/w", "/p/b")), Err(EtcdError::PermissionDenied));
    assert_eq!(check(&f, &alice, &txn("/p/a", "/w")), Err(EtcdError::PermissionDenied));
    // A lease whose keys alice cannot write cannot be revoked or attached by her.
    let leases = |_: i64| vec![Bytes::from_static(b"/secret")];
    let revoke = Command::LeaseRevoke(crate::proto::etcdserverpb::LeaseRevokeRequest { id: 1 });
    assert_eq!(f.auth.check_command(&revoke, &alice, &leases), Err(EtcdError::PermissionDenied));
    assert_eq!(f.auth.check_command(&revoke, &f.who(ROOT), &leases), Ok(()));
    let attach = Command::Put(PutRequest { key: "/p/a".into(), lease: 1, ..Default::default() });
    assert_eq!(f.auth.check_command(&attach, &alice, &leases), Err(EtcdError::PermissionDenied));
    // After any auth change, a request authorised earlier is stale.
    f.ok(&root(), Command::AuthRoleAdd(AuthRoleAddRequest { name: "r2".into() }));
    assert_eq!(check(&f, &alice, &put("/p/a")), Err(EtcdError::AuthOldRevision));
    assert_eq!(check(&f, &f.who("alice"), &put("/p/a")), Ok(()));
}

#[test]
fn reads_and_admin_calls_are_checked() {
    let mut f = Fixture::enabled();
    f.ok(&root(), grant("r1", Type::Read, "/f", b"\0"));
    let alice = f.who("alice");
    assert_eq!(f.auth.check_read(&alice, b"/f", b"\0"), Ok(()));
    assert_eq!(f.auth.check_read(&alice, b"/e", b"\0"), Err(EtcdError::PermissionDenied));
    assert_eq!(f.auth.check_admin(&alice), Err(EtcdError::PermissionDenied));
    assert_eq!(f.auth.check_admin(&Who::default()), Err(EtcdError::UserEmpty));
    assert_eq!(f.auth.check_admin(&Who { username: "ghost".into(), auth_revision: 9 }), Err(EtcdError::UserNotFound));
    assert_eq!(f.auth.check_admin(&f.who(ROOT)), Ok(()));
    // A user may read their own user and roles, not others'.
    assert_eq!(f.auth.user(&alice, "alice").map(|u| u.roles), Ok(vec!["r1".to_string()]));
    assert!(matches!(f.auth.user(&alice, ROOT), Err(EtcdError::PermissionDenied)));
    assert!(f.auth.role(&alice, "r1").is_ok());
    assert_eq!(f.auth.users(&alice), Err(EtcdError::PermissionDenied));
    assert_eq!(f.auth.users(&f.who(ROOT)), Ok(vec!["alice".to_string(), ROOT.to_string()]));
}

#[test]
fn tokens_are_issued_by_authenticate_and_forgotten_on_changes() {
    let mut f = Fixture::enabled();
    let auth = |f: &mut Fixture, name: &str, checked: u64| {
        let cmd = Command::Authenticate(AuthenticateCommand {
            name: name.into(),
            token_prefix: "abc".into(),
            checked_revision: checked,
        });
        match f.run(&Who::default(), cmd) {
            Ok(Outcome::Authenticate(a)) => Ok(a.token),
            Ok(o) => panic!("{o:?}"),
            Err(e) => Err(e),
        }
    };
    let rev = f.auth.revision();
    let token = auth(&mut f, "alice", rev).expect("authenticate");
    assert_eq!(token, format!("abc.{}", f.index));
    assert_eq!(f.auth.who(Some(&token)).map(|w| w.username), Ok("alice".to_string()));
    assert_eq!(f.auth.who(Some("nope.1")), Err(EtcdError::InvalidAuthToken));
    assert_eq!(auth(&mut f, "ghost", rev), Err(EtcdError::AuthFailed));
    assert_eq!(auth(&mut f, "alice", rev - 1), Err(EtcdError::AuthOldRevision));
    // A new password forgets the user's tokens.
    f.ok(
        &root(),
        Command::AuthUserChangePassword(crate::proto::etcdserverpb::AuthUserChangePasswordRequest {
            name: "alice".into(),
            hashed_password: "new".into(),
            ..Default::default()
        }),
    );
    assert_eq!(f.auth.who(Some(&token)), Err(EtcdError::InvalidAuthToken));
    // Disabling forgets every token; with auth off, no token is valid (as in etcd 3.4),
    // and a request without one is anonymous.
    let rev = f.auth.revision();
    let token = auth(&mut f, ROOT, rev).expect("authenticate");
    f.ok(&root(), Command::AuthDisable(crate::proto::etcdserverpb::AuthDisableRequest {}));
    assert_eq!(f.auth.who(Some(&token)), Err(EtcdError::InvalidAuthToken));
    assert_eq!(f.auth.who(None), Ok(Who::default()));
    let rev = f.auth.revision();
    assert_eq!(auth(&mut f, ROOT, rev), Err(EtcdError::AuthNotEnabled));
}

#[test]
fn the_state_survives_a_reopen() {
    let mut f = Fixture::enabled();
    f.ok(&root(), grant("r1", Type::Read, "/a", b""));
    f.ok(&root(), Command::AuthUserDelete(AuthUserDeleteRequest { name: "alice".into() }));
    let again = AuthStore::open(f.engine.clone(), SimpleTokens::new(Duration::from_secs(1)), 4).expect("reopen");
    assert!(again.enabled());
    assert_eq!(again.revision(), f.auth.revision());
    assert_eq!(again.users(&root()), Ok(vec![ROOT.to_string()]));
    assert_eq!(again.roles(&root()), f.auth.roles(&root()));
    assert_eq!(again.role(&root(), "r1"), f.auth.role(&root(), "r1"));
}

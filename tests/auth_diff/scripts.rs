//! The etcdctl scripts: users and roles, a restricted user, errors, leases, enabling and
//! disabling.

use super::*;

/// Users and roles, their listings and permission grants and revokes, while auth is off
/// (no credentials needed).
#[test]
fn user_and_role_management_before_enable() {
    let steps = vec![
        s(&["user", "add", "root:rootpw"]),
        s(&["user", "add", "root:x"]),
        s(&["user", "add", "alice:apw"]),
        s(&["user", "add", "bob", "--no-password"]),
        with_stdin(&["user", "add", "carol", "--interactive=false"], "cpw\n"),
        // No input: an empty password, which etcd 3.4 takes (and later authenticates).
        s(&["user", "add", "dave", "--interactive=false"]),
        s(&["user", "add", "erin", "--new-user-password=epw"]),
        // An empty name reaches the server, which refuses it (InvalidArgument).
        s(&["user", "add", "", "--interactive=false"]),
        s(&["user", "add", "", "--no-password"]),
        // user:password splits at the first colon: user x, password "y:z".
        s(&["user", "add", "x:y:z"]),
        s(&["user", "get", "x"]),
        s(&["user", "delete", "x"]),
        s(&["user", "add", "u2:p", "-w", "json"]),
        s(&["role", "add", "r1"]),
        s(&["role", "add", "r1"]),
        s(&["role", "add", ""]),
        s(&["role", "add", "r2", "-w", "json"]),
        s(&["user", "list"]),
        s(&["role", "list"]),
        s(&["user", "list", "-w", "json"]),
        s(&["role", "list", "-w", "json"]),
        // etcdctl prints auth listings in simple and json only: exit code 4.
        s(&["user", "list", "-w", "table"]),
        s(&["user", "get", "alice"]),
        s(&["user", "get", "alice", "-w", "json"]),
        s(&["user", "get", "alice", "--detail"]),
        s(&["user", "get", "bob"]),
        s(&["user", "get", "nosuch"]),
        s(&["user", "get", "nosuch", "-w", "json"]),
        s(&["role", "get", "r1"]),
        s(&["role", "get", "r1", "-w", "json"]),
        s(&["role", "get", "nosuch"]),
        // The four kinds of grant: a key, a prefix, a range, from a key on.
        s(&["role", "grant-permission", "r1", "read", "/a"]),
        s(&["role", "grant-permission", "r1", "readwrite", "/p/", "--prefix"]),
        s(&["role", "grant-permission", "r1", "write", "/x", "/z"]),
        s(&["role", "grant-permission", "r1", "read", "/f", "--from-key"]),
        // "Role r1\nKV Read:\n\t/a\n\t[/f, <open ended>\n\t[/p/, /p0) (prefix /p/)\nKV Write:\n..."
        s(&["role", "get", "r1"]),
        // Sorted by key; READ (0) is omitted from the JSON; WRITE is 1, READWRITE 2; a
        // from-key grant has range end "\0" (AA==).
        s(&["role", "get", "r1", "-w", "json"]),
        s(&["role", "get", "r1", "-w", "fields"]),
        // A grant to the same key and range end replaces the type: write replaces read (no
        // merge into readwrite), and read back again.
        s(&["role", "grant-permission", "r1", "write", "/a"]),
        s(&["role", "get", "r1"]),
        s(&["role", "grant-permission", "r1", "read", "/a", "-w", "json"]),
        s(&["role", "get", "r1"]),
        s(&["role", "grant-permission", "nosuch", "read", "/a"]),
        // Revokes match key and range end exactly; etcdctl's message shows the range.
        s(&["role", "grant-permission", "r1", "read", "/m"]),
        s(&["role", "revoke-permission", "r1", "/m"]),
        s(&["role", "revoke-permission", "r1", "/m"]),
        s(&["role", "revoke-permission", "r1", "/nope"]),
        s(&["role", "revoke-permission", "r1", "/p/"]),
        s(&["role", "revoke-permission", "nosuch", "/a"]),
        s(&["role", "grant-permission", "r1", "read", "/pp/", "--prefix"]),
        s(&["role", "revoke-permission", "r1", "/pp/", "--prefix"]),
        s(&["role", "grant-permission", "r1", "read", "/zz", "--from-key"]),
        s(&["role", "revoke-permission", "r1", "/zz", "--from-key"]),
        s(&["role", "grant-permission", "r1", "read", "/m", "/n"]),
        s(&["role", "revoke-permission", "r1", "/m", "/n", "-w", "json"]),
        s(&["role", "get", "r1"]),
        // Roles to users: granting twice is fine; users' roles are kept sorted.
        s(&["user", "grant-role", "alice", "r1"]),
        s(&["user", "grant-role", "alice", "r1"]),
        s(&["user", "grant-role", "alice", "nosuch"]),
        s(&["user", "grant-role", "nosuch", "r1"]),
        s(&["user", "grant-role", "alice", "r2", "-w", "json"]),
        s(&["role", "add", "r0"]),
        s(&["user", "grant-role", "alice", "r0"]),
        s(&["user", "revoke-role", "alice", "nosuch"]),
        s(&["user", "revoke-role", "nosuch", "r1"]),
        s(&["user", "revoke-role", "bob", "r1"]),
        s(&["user", "get", "alice"]),
        s(&["user", "get", "alice", "-w", "json"]),
        s(&["user", "get", "alice", "--detail"]),
        // "User: alice", a blank line, then each role's JSON and a blank line.
        s(&["user", "get", "alice", "--detail", "-w", "json"]),
        s(&["user", "revoke-role", "alice", "r0"]),
        s(&["user", "revoke-role", "alice", "r0", "-w", "json"]),
        s(&["user", "get", "alice"]),
        // Deleting a role takes it from its users.
        s(&["user", "grant-role", "bob", "r2"]),
        s(&["user", "grant-role", "bob", "r0"]),
        s(&["role", "delete", "r2"]),
        s(&["user", "get", "bob"]),
        s(&["role", "delete", "r2"]),
        s(&["role", "delete", ""]),
        s(&["role", "delete", "r0", "-w", "json"]),
        s(&["user", "get", "bob"]),
        s(&["user", "delete", "bob"]),
        s(&["user", "delete", "bob"]),
        s(&["user", "delete", ""]),
        s(&["user", "delete", "u2", "-w", "json"]),
        with_stdin(&["user", "passwd", "alice", "--interactive=false"], "apw2\n"),
        with_stdin(&["user", "passwd", "nosuch", "--interactive=false"], "x\n"),
        with_stdin(&["user", "passwd", "alice", "--interactive=false", "-w", "json"], "apw\n"),
        // The auth store's changes leave the KV revision alone: headers show the KV's.
        s(&["put", "k", "v"]),
        s(&["user", "get", "alice", "-w", "json"]),
        s(&["role", "get", "r1", "-w", "json"]),
        s(&["user", "list"]),
        s(&["role", "list"]),
    ];
    differential("user_and_role_management_before_enable", &steps);
}

/// How etcd 3.4 keeps a role's permission list, odd as some of it is.
#[test]
fn permission_list_quirks() {
    let steps = vec![
        s(&["role", "add", "r1"]),
        // Ranges are not checked: an end at or before the key is kept (and grants nothing).
        s(&["role", "grant-permission", "r1", "read", "/q"]),
        s(&["role", "grant-permission", "r1", "read", "/q", "/q"]),
        s(&["role", "grant-permission", "r1", "read", "/q", "/b"]),
        s(&["role", "get", "r1"]),
        // The list is sorted by key alone (equal keys in the order granted). A grant updates
        // the first permission with its key, and only if that one's range end matches: else
        // it appends. So this adds a second [/q, /b), as write, beside the read one.
        s(&["role", "grant-permission", "r1", "write", "/q", "/b"]),
        s(&["role", "get", "r1"]),
        s(&["role", "get", "r1", "-w", "json"]),
        // A revoke removes every permission with that key and range end.
        s(&["role", "revoke-permission", "r1", "/q", "/b"]),
        s(&["role", "get", "r1", "-w", "json"]),
        // etcdctl sends an empty key as "\0": "" --prefix (and "" --from-key) is
        // ["\0", "\0"), every key; "" alone is the key "\0". `role get` prints the NUL bytes.
        s(&["role", "grant-permission", "r1", "read", "", "--prefix"]),
        s(&["role", "grant-permission", "r1", "write", ""]),
        s(&["role", "get", "r1"]),
        s(&["role", "get", "r1", "-w", "json"]),
        // The revoke messages show the arguments as given: "[, <open ended>" and "key  is".
        s(&["role", "revoke-permission", "r1", "", "--prefix"]),
        s(&["role", "revoke-permission", "r1", ""]),
        s(&["role", "get", "r1", "-w", "json"]),
    ];
    differential("permission_list_quirks", &steps);
}

/// What alice, with r1 of [`restricted_setup`], may read and write, in plain requests and
/// in transactions.
#[test]
fn a_restricted_user_after_enable() {
    let mut steps = restricted_setup();
    steps.extend([
        // Read-only /a.
        alice(&["get", "/a"]),
        alice(&["get", "/a", "-w", "json"]),
        alice(&["put", "/a", "2"]),
        alice(&["del", "/a"]),
        // Below /f, only /a is granted: a range must be covered whole.
        alice(&["get", "/b"]),
        alice(&["put", "/b", "x"]),
        alice(&["get", "/e"]),
        alice(&["get", "/a", "/b"]),
        alice(&["get", "/e", "--from-key"]),
        alice(&["get", "", "--prefix"]),
        alice(&["get", "", "--from-key"]),
        // Read from /f on covers every key after /f, whatever else grants them: /p, /x...
        alice(&["get", "/f"]),
        alice(&["get", "/g"]),
        alice(&["get", "/f", "--from-key"]),
        alice(&["get", "/f", "--from-key", "--keys-only"]),
        alice(&["get", "/f", "/zzz"]),
        alice(&["get", "/p", "--prefix"]),
        alice(&["get", "/x"]),
        alice(&["put", "/f", "x"]),
        // Read and write under /p/.
        alice(&["get", "/p/a"]),
        alice(&["put", "/p/c", "13"]),
        alice(&["get", "/p/", "--prefix"]),
        alice(&["get", "/p/a", "/p/z"]),
        alice(&["get", "/p/", "/p0"]),
        alice(&["put", "/p0", "x"]),
        alice(&["put", "--prev-kv", "/p/a", "66"]),
        alice(&["del", "--prev-kv", "/p/b"]),
        alice(&["del", "/p/", "--prefix"]),
        alice(&["get", "/p/", "--prefix", "-w", "json"]),
        alice(&["put", "/p/a", "6"]),
        // Write [/x, /z): the end is excluded; a delete's range must be inside too.
        alice(&["put", "/x", "14"]),
        alice(&["put", "/y", "15"]),
        alice(&["put", "/z", "16"]),
        alice(&["del", "/x", "/zz"]),
        alice(&["del", "/x", "/z"]),
        alice(&["put", "/x", "17"]),
        // Without the read from /f, [/x, /z) is write-only, /p only /p/ (changes to a role
        // apply to the next request).
        root(&["role", "revoke-permission", "r1", "/f", "--from-key"]),
        alice(&["get", "/x"]),
        alice(&["get", "/f"]),
        alice(&["get", "/p", "--prefix"]),
        alice(&["get", "/p/", "/p1"]),
        alice(&["get", "/p/", "/p0"]),
        alice(&["put", "/x", "18"]),
        // A put or delete that returns the previous value needs read permission too.
        alice(&["put", "--prev-kv", "/x", "19"]),
        alice(&["del", "--prev-kv", "/x"]),
        alice(&["del", "/x"]),
        alice(&["del", "/x"]),
        alice(&["put", "/x", "20"]),
        root(&["get", "/x"]),
        // Transactions: compares need read permission on their keys, and the ops of both
        // branches are checked, whichever branch runs.
        alice_txn(&[r#"value("/a") = "1""#], &["put /p/t 1"], &["get /a"]),
        alice_txn(&[r#"value("/b") = "2""#], &["put /p/t 2"], &[]),
        alice_txn(&[r#"mod("/x") > "0""#], &["put /x 1"], &[]),
        alice_txn(&[r#"value("/a") = "1""#], &["put /a 2"], &[]),
        alice_txn(&[r#"value("/a") = "1""#], &["put /p/t 3"], &["get /b"]),
        alice_txn(&[r#"value("/a") = "nope""#], &["get /b"], &["put /p/t 3"]),
        alice_txn(&[], &["get /e"], &[]),
        alice_txn(&[], &["put /y 1", "put /p/u 1"], &[]),
        with_stdin(&[ALICE, "txn", "--interactive=false", "-w", "json"], &txn(&[], &["put /x 21", "get /p/t"], &[])),
        // etcd 3.4.23 does not check a txn put's prev_kv against read permission (a plain
        // put's it does, above), so alice reads the write-only /x's old value there; later
        // releases check it (GHSA-x35m-3gp4-4fh5), and Keel does. Root makes the same writes
        // on Keel.
        alice_txn(&[], &["put /x 22 --prev-kv"], &[]).cmp(Cmp::KeelRefuses(PERMISSION_DENIED)),
        root(&["put", "/x", "22"]).cmp(Cmp::KeelOnly),
        with_stdin(&[ALICE, "txn", "--interactive=false", "-w", "json"], &txn(&[], &["put /x 23 --prev-kv"], &[]))
            .cmp(Cmp::KeelRefuses(PERMISSION_DENIED)),
        root(&["put", "/x", "23"]).cmp(Cmp::KeelOnly),
        // A txn delete's prev_kv it does check.
        alice_txn(&[], &["del /x --prev-kv"], &[]),
        alice_txn(&[], &["del /x"], &[]),
        // A range is allowed when the union of all the user's roles' ranges covers it:
        // [/b, /c) from r2 and [/c, /d) from r1 cover [/b, /d); the key /a is [/a, /a\0),
        // which leaves a gap before /b.
        root(&["role", "add", "r2"]),
        root(&["role", "grant-permission", "r2", "read", "/b", "/c"]),
        root(&["role", "grant-permission", "r1", "read", "/c", "/d"]),
        root(&["user", "grant-role", "alice", "r2"]),
        alice(&["get", "/b", "/d"]),
        alice(&["get", "/b", "/d0"]),
        alice(&["get", "/a", "/c"]),
        root(&["user", "revoke-role", "alice", "r2"]),
        alice(&["get", "/b", "/d"]),
        // A revoked permission is refused at the next request, a granted one allowed.
        root(&["role", "revoke-permission", "r1", "/a"]),
        alice(&["get", "/a"]),
        root(&["role", "grant-permission", "r1", "read", "/a"]),
        alice(&["get", "/a"]),
        root(&["get", "", "--prefix"]),
    ]);
    differential("a_restricted_user_after_enable", &steps);
}

/// With auth enabled: requests without a user, with a bad password, from a user without
/// the role root; and what 3.4 lets anyone do.
#[test]
fn errors_for_no_user_bad_password_and_non_admins() {
    let dir = tempfile::tempdir().expect("temp dir");
    // One path for both servers: keel's snapshot is written first, etcd's over it.
    let snap = dir.path().join("snap.db").display().to_string();
    let mut steps = restricted_setup();
    steps.extend([
        // No user: InvalidArgument "etcdserver: user name is empty", exit code 1.
        s(&["get", "/a"]),
        s(&["get", "/a", "-w", "json"]),
        s(&["put", "/a", "1"]),
        s(&["del", "/a"]),
        with_stdin(&["txn", "--interactive=false"], &txn(&[], &["get /a"], &[])),
        s(&["user", "list"]),
        s(&["role", "list"]),
        s(&["user", "get", "alice"]),
        s(&["auth", "enable"]),
        s(&["auth", "disable"]),
        // A wrong password or an unknown user: the client's Authenticate fails (InvalidArgument
        // "etcdserver: authentication failed, invalid user ID or password") and etcdctl exits 2.
        by("--user=root:bad", &["get", "/a"]),
        by("--user=nosuch:x", &["get", "/a"]),
        by("--user=root:bad", &["user", "list"]),
        s(&["--user=root", "--password=rootpw", "get", "/a"]),
        s(&["--user=root", "--password=bad", "get", "/a"]),
        // user:password splits at the first colon.
        root(&["user", "add", "x:y:z"]),
        by("--user=x:y:z", &["get", "/a"]),
        by("--user=x:y", &["get", "/a"]),
        // A --no-password user cannot authenticate with any password: code Unknown, "auth:
        // authentication failed, password was given for no password user", exit code 2.
        root(&["user", "add", "nopw", "--no-password"]),
        by("--user=nopw:x", &["get", "/a"]),
        // Not root: user and role management is root's, except reading one's own user and
        // one's own roles.
        alice(&["user", "list"]),
        alice(&["role", "list"]),
        alice(&["user", "get", "alice"]),
        alice(&["user", "get", "alice", "-w", "json"]),
        alice(&["user", "get", "alice", "--detail"]),
        alice(&["role", "get", "r1"]),
        alice(&["role", "get", "r1", "-w", "json"]),
        alice(&["user", "get", "root"]),
        alice(&["role", "get", "root"]),
        alice(&["user", "add", "zed:z"]),
        alice(&["role", "add", "r9"]),
        with_stdin(&[ALICE, "user", "passwd", "alice", "--interactive=false"], "apw\n"),
        alice(&["role", "grant-permission", "r1", "read", "/b"]),
        alice(&["user", "grant-role", "alice", "root"]),
        alice(&["user", "revoke-role", "alice", "r1"]),
        alice(&["role", "delete", "r1"]),
        alice(&["user", "delete", "alice"]),
        alice(&["auth", "disable"]),
        alice(&["auth", "enable"]),
        // Root may do everything; the role root shows no permissions.
        root(&["get", "", "--prefix", "--keys-only"]),
        root(&["user", "list"]),
        root(&["role", "list"]),
        root(&["user", "get", "root"]),
        root(&["user", "get", "root", "--detail"]),
        root(&["role", "get", "root"]),
        root(&["role", "get", "root", "-w", "json"]),
        // Surprise: in 3.4 member list, endpoint status and alarms need no user at all...
        s(&["member", "list"]).cmp(Cmp::Refusal),
        alice(&["member", "list"]).cmp(Cmp::Refusal),
        s(&["endpoint", "status"]).cmp(Cmp::Refusal),
        alice(&["endpoint", "status"]).cmp(Cmp::Refusal),
        s(&["alarm", "list"]),
        alice(&["alarm", "list"]),
        s(&["alarm", "disarm"]),
        // ... nor does compaction, not even without a user.
        alice(&["compaction", "3"]),
        s(&["compaction", "2"]),
        s(&["compaction", "4"]),
        alice(&["compaction", "5", "--physical"]),
        // endpoint health is a linearizable get of "health": without a user it fails, and the
        // endpoint is unhealthy; etcdctl counts alice's "permission denied" as healthy.
        s(&["endpoint", "health"]).cmp(Cmp::Shape),
        alice(&["endpoint", "health"]).cmp(Cmp::Shape),
        root(&["endpoint", "health"]).cmp(Cmp::Shape),
        // The maintenance service is root's: its refusals are gRPC code Unknown with "auth: "
        // texts ("auth: user name is empty", "auth: permission denied").
        s(&["endpoint", "hashkv"]).cmp(Cmp::Shape),
        alice(&["endpoint", "hashkv"]).cmp(Cmp::Shape),
        root(&["endpoint", "hashkv"]).cmp(Cmp::Shape),
        s(&["defrag"]).cmp(Cmp::Shape),
        alice(&["defrag"]).cmp(Cmp::Shape),
        root(&["defrag"]).cmp(Cmp::Shape),
        // A refused snapshot: "Error: rpc error: code = Unknown desc = auth: permission
        // denied", exit code 5.
        s(&["snapshot", "save", &snap]),
        alice(&["snapshot", "save", &snap]),
        root(&["snapshot", "save", &snap]),
        // Membership changes are root's too (the list is anyone's), with the usual errors.
        s(&["member", "remove", "1234"]),
        alice(&["member", "remove", "1234"]),
        root(&["member", "remove", "1234"]),
        s(&["member", "update", "1234", "--peer-urls=http://127.0.0.1:29999"]),
        alice(&["member", "add", "x", "--learner", "--peer-urls=http://127.0.0.1:29998"]),
        s(&["member", "list"]).cmp(Cmp::Refusal),
    ]);
    differential("errors_for_no_user_bad_password_and_non_admins", &steps);
}

/// Leases under auth: granting, keep-alives and time-to-live need nobody; revoking needs
/// write permission on the lease's keys; attaching a key checks the lease's other keys.
#[test]
fn leases_with_auth() {
    let mut steps = restricted_setup();
    steps.extend([
        alice(&["lease", "grant", "100"]), // LEASE0
        s(&["lease", "grant", "100"]),     // LEASE1: no user needed
        root(&["lease", "grant", "100"]),  // LEASE2
        root(&["put", "/b", "2", "--lease=LEASE2"]),
        root(&["put", "/p/l", "1", "--lease=LEASE2"]),
        // etcd 3.4.23's time-to-live shows the names of a lease's keys to anyone, even keys
        // they may not read, even without a user (CVE-2023-32082, fixed in 3.4.26): Keel
        // lists them only to a user who may read them all. Without --keys, anyone may ask.
        alice(&["lease", "timetolive", "LEASE2", "--keys"]).cmp(Cmp::KeelRefuses(PERMISSION_DENIED)),
        s(&["lease", "timetolive", "LEASE2", "--keys"]).cmp(Cmp::KeelRefuses(USER_EMPTY)),
        alice(&["lease", "timetolive", "LEASE2"]),
        s(&["lease", "keep-alive", "--once", "LEASE2"]),
        alice(&["lease", "list"]),
        // Revoking deletes the keys: it needs write permission on every one of them
        // ("Error: failed to revoke lease (etcdserver: permission denied)").
        alice(&["lease", "revoke", "LEASE2"]),
        s(&["lease", "revoke", "LEASE2"]),
        root(&["lease", "timetolive", "LEASE2", "--keys"]),
        // A lease without keys needs none: anyone revokes it, even without a user.
        alice(&["lease", "revoke", "LEASE1"]),
        alice(&["put", "/p/z", "1", "--lease=LEASE0"]),
        // A put to a lease that holds a key one may not write is refused (one could not
        // revoke it), after the put's own check, and before the lease is looked up.
        alice(&["put", "/p/z", "2", "--lease=LEASE2"]),
        alice(&["put", "/p/zz", "2", "--lease=1234"]),
        alice(&["put", "/b", "2", "--lease=1234"]),
        // etcd 3.4.23 does not check a txn's put against its lease's keys, as it does a
        // plain put's (GHSA-x35m-3gp4-4fh5); Keel does. Root makes the same write on Keel.
        alice_txn(&[], &["put /p/z 3 --lease=LEASE2"], &[]).cmp(Cmp::KeelRefuses(PERMISSION_DENIED)),
        root(&["put", "/p/z", "3", "--lease=LEASE2"]).cmp(Cmp::KeelOnly),
        root(&["get", "/p/z", "-w", "json"]),
        root(&["lease", "timetolive", "LEASE2", "--keys"]),
        // LEASE0 lost its key to LEASE2: revoking it needs nobody now.
        s(&["lease", "revoke", "LEASE0"]),
        s(&["lease", "revoke", "LEASE0"]),
        root(&["lease", "revoke", "LEASE2"]),
        root(&["get", "", "--prefix", "--keys-only"]),
        alice(&["lease", "list"]),
    ]);
    differential("leases_with_auth", &steps);
}

/// `auth enable`'s preconditions, root's protections while enabled, `auth disable`, and
/// what credentials do while auth is disabled.
#[test]
fn enabling_and_disabling_auth() {
    let steps = vec![
        s(&["auth", "enable"]),
        s(&["user", "add", "root:rootpw"]),
        s(&["role", "add", "root"]),
        // etcd answers "root user does not have root role"; etcdctl then tries to add role
        // root, which exists, and prints that error: "etcdserver: role name already exists".
        s(&["auth", "enable"]),
        s(&["role", "delete", "root"]),
        s(&["user", "add", "alice:apw"]),
        s(&["role", "add", "r1"]),
        s(&["role", "grant-permission", "r1", "readwrite", "/a"]),
        s(&["user", "grant-role", "alice", "r1"]),
        s(&["put", "/a", "1"]),
        // Now etcdctl adds role root, grants it to root and enables: "Authentication Enabled".
        s(&["auth", "enable"]),
        s(&["get", "/a"]),
        s(&["put", "/a", "2"]),
        s(&["user", "list"]),
        s(&["auth", "enable"]),
        s(&["auth", "disable"]),
        // Enabling again is fine.
        root(&["auth", "enable"]),
        root(&["user", "get", "root"]),
        root(&["role", "get", "root"]),
        root(&["role", "list"]),
        // Root keeps what makes it root: "etcdserver: invalid auth management".
        root(&["user", "delete", "root"]),
        root(&["role", "delete", "root"]),
        root(&["user", "revoke-role", "root", "root"]),
        root(&["user", "add", "root:x"]),
        root(&["role", "add", "root"]),
        // The role root can be granted permissions, which then show, and root other roles.
        root(&["role", "grant-permission", "root", "read", "/a"]),
        root(&["role", "get", "root"]),
        root(&["role", "revoke-permission", "root", "/a"]),
        root(&["role", "get", "root", "-w", "json"]),
        root(&["user", "grant-role", "root", "r1"]),
        root(&["user", "get", "root"]),
        root(&["user", "revoke-role", "root", "r1"]),
        // Only root disables.
        alice(&["auth", "disable"]),
        root(&["auth", "disable"]),
        // Disabled: no user needed. A --user's Authenticate fails ("authentication is not
        // enabled"), which etcdctl only logs (a warning line normalising drops), and it goes
        // on without a token; so even a bad password works.
        s(&["get", "/a"]),
        by("--user=root:bad", &["get", "/a"]),
        alice(&["put", "/b", "1"]),
        s(&["user", "list"]),
        s(&["role", "get", "root"]),
        s(&["auth", "disable"]),
        // Enabling needs no user while auth is off.
        s(&["auth", "enable"]),
        s(&["get", "/b"]),
        alice(&["get", "/b"]),
        root(&["get", "/b"]),
        // A new password: the old one fails.
        with_stdin(&[ROOT, "user", "passwd", "root", "--interactive=false"], "newpw\n"),
        root(&["get", "/a"]),
        by("--user=root:newpw", &["get", "/a"]),
        by("--user=root:newpw", &["user", "delete", "alice"]),
        alice(&["get", "/a"]),
        by("--user=root:newpw", &["auth", "disable"]),
        s(&["get", "", "--prefix"]),
    ];
    differential("enabling_and_disabling_auth", &steps);
}

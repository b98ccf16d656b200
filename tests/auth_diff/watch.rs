//! Watches under auth, through etcdctl.

use super::*;

/// etcdctl with a deadline: a watch that is not refused would never end.
fn bounded(m: &Member, args: &[&str]) -> Output {
    let out = Command::new("timeout")
        .arg("20")
        .arg("etcdctl")
        .arg(format!("--endpoints={}", m.endpoint()))
        .args(args)
        .env("ETCDCTL_API", "3")
        .stdin(Stdio::null())
        .output()
        .expect("timeout and etcdctl");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
    .normalized()
}

/// The KV revision a server is at, as root reads it.
fn revision(side: &Side) -> i64 {
    let out = etcdctl::run(&side.member.endpoint(), &[ROOT, "get", "/a", "-w", "json"], None);
    let v: Value = serde_json::from_str(out.stdout.trim()).expect("get -w json");
    v["header"]["revision"].as_i64().expect("a revision")
}

/// A watch needs read permission on its whole range when it is created, and only then.
#[test]
fn watches_need_read_permission() {
    let mut keel = Side::new(Flavor::Keel);
    let mut etcd = Side::new(Flavor::Etcd);
    let mut setup = restricted_setup();
    // Without the read from /f, alice reads /a and /p/ only.
    setup.push(root(&["role", "revoke-permission", "r1", "/f", "--from-key"]));
    run_steps("watch setup", &mut keel, &mut etcd, &setup);

    // Refused at creation: the server answers created and canceled, watch id -1, the
    // status as cancel reason; etcdctl prints "watch was canceled (rpc error: code =
    // PermissionDenied desc = etcdserver: permission denied)" and "Error: watch is canceled
    // by the server" on stderr and exits 5 at once (with -w json, stdout has
    // {"Header":{},"Events":null,"CompactRevision":0,"Canceled":true,"Created":false}).
    for args in [
        &[ALICE, "watch", "/b"][..],
        &[ALICE, "watch", "/b", "-w", "json"],
        &[ALICE, "watch", "/b", "--rev=1"],
        &[ALICE, "watch", "", "--prefix"],
        &[ALICE, "watch", "/p/", "/p1"],
        &[ALICE, "watch", "/x"],
        &[ALICE, "watch", "/f", "/zzz"],
        // Without a user: "code = InvalidArgument desc = etcdserver: user name is empty".
        &["watch", "/a"],
        &["watch", "/a", "-w", "json"],
        // A bad password fails before the watch: exit code 2.
        &["--user=alice:bad", "watch", "/a"],
    ] {
        let k = bounded(&keel.member, args);
        let e = bounded(&etcd.member, args);
        assert_eq!(
            k, e,
            "etcdctl {args:?}\n--- keel ---\n{}\n{}\n--- etcd ---\n{}\n{}",
            k.stdout, k.stderr, e.stdout, e.stderr
        );
    }

    // Allowed watches, from the next revision so that they see the same events however fast
    // they start. The permission is checked once: the watch goes on delivering after the
    // permission is revoked, the password changed, auth disabled and enabled again.
    let from = |side: &Side| format!("--rev={}", revision(side) + 1);
    let (from_k, from_e) = (from(&keel), from(&etcd));
    let wk = spawn(&keel.member.endpoint(), &[ALICE, "watch", "/a", &from_k]);
    let we = spawn(&etcd.member.endpoint(), &[ALICE, "watch", "/a", &from_e]);
    let wk_p = spawn(&keel.member.endpoint(), &[ALICE, "watch", "/p/", "--prefix", &from_k]);
    let we_p = spawn(&etcd.member.endpoint(), &[ALICE, "watch", "/p/", "--prefix", &from_e]);
    run_steps("watch", &mut keel, &mut etcd, &[root(&["put", "/a", "before"]), root(&["put", "/p/k", "before"])]);
    // Every watch has seen an event, so each was created while alice could read /a, with
    // her first password, auth enabled.
    wait_for("the watches to start", Duration::from_secs(20), || {
        [&wk, &we, &wk_p, &we_p].iter().all(|w| w.output().contains("before")).then_some(())
    });
    let steps = vec![
        root(&["role", "revoke-permission", "r1", "/a"]),
        alice(&["get", "/a"]),
        root(&["put", "/a", "revoked"]),
        with_stdin(&[ROOT, "user", "passwd", "alice", "--interactive=false"], "apw2\n"),
        root(&["put", "/a", "repassworded"]),
        root(&["auth", "disable"]),
        s(&["put", "/a", "disabled"]),
        s(&["auth", "enable"]),
        root(&["put", "/a", "end"]),
        root(&["put", "/p/k", "end"]),
    ];
    run_steps("watch", &mut keel, &mut etcd, &steps);
    let (k, e) = (wk.stop_after("end\n"), we.stop_after("end\n"));
    assert_eq!(k, e, "alice's watch on /a");
    assert!(e.contains("PUT\n/a\nrevoked\n"), "etcd 3.4 goes on delivering: {e}");
    let (k, e) = (wk_p.stop_after("end\n"), we_p.stop_after("end\n"));
    assert_eq!(k, e, "alice's watch on /p/");
}

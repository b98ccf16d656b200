//! Bad input gets etcd's error and the member keeps serving, with nothing lost.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use etcd_client::{GetOptions, Txn, TxnOp};

use crate::harness::{client, Flavor, Member};

fn status_of(e: etcd_client::Error) -> (tonic::Code, String) {
    match e {
        etcd_client::Error::GRpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("expected a gRPC status, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_get_etcd_errors() {
    let m = Member::single(Flavor::Keel);
    let mut c = client(&m).await;
    c.put("keep", "me", None).await.expect("put");

    let e = c.put("", "v", None).await.expect_err("empty key");
    assert_eq!(status_of(e), (tonic::Code::InvalidArgument, "etcdserver: key is not provided".into()));

    let ops: Vec<TxnOp> = (0..129).map(|i| TxnOp::put(format!("t{i}"), "v", None)).collect();
    let e = c.txn(Txn::new().and_then(ops)).await.expect_err("129 ops");
    assert_eq!(status_of(e), (tonic::Code::InvalidArgument, "etcdserver: too many operations in txn request".into()));

    let ops: Vec<TxnOp> = (0..128).map(|i| TxnOp::put(format!("t{i}"), "v", None)).collect();
    c.txn(Txn::new().and_then(ops)).await.expect("128 ops are allowed");

    let e = c.put("big", vec![b'x'; 1_600_000], None).await.expect_err("over 1.5 MiB");
    assert_eq!(status_of(e), (tonic::Code::InvalidArgument, "etcdserver: request is too large".into()));

    let e = c.put("huge", vec![b'x'; 3 << 20], None).await.expect_err("over the gRPC limit");
    let (code, msg) = status_of(e);
    assert_eq!(code, tonic::Code::ResourceExhausted, "{msg}");

    let e = c.put("k", "v", Some(etcd_client::PutOptions::new().with_lease(77))).await.expect_err("no lease");
    assert_eq!(status_of(e), (tonic::Code::NotFound, "etcdserver: requested lease not found".into()));

    let r = c.get("keep", None).await.expect("still serving");
    assert_eq!(r.kvs()[0].value(), b"me");
    let all = c.get("t", Some(GetOptions::new().with_prefix().with_count_only())).await.expect("count");
    assert_eq!(all.count(), 128, "only the valid transaction wrote");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_client_port_is_survived() {
    let m = Member::single(Flavor::Keel);
    let mut c = client(&m).await;
    c.put("before", "1", None).await.expect("put");
    let garbage: [&[u8]; 4] = [
        b"\x00\x01\x02\x03 this is not http at all \xff\xfe",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\x08\x00\x00\x00\x00\x00garbage-frames-follow\xff\xff\xff",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        &[0xAB; 64 * 1024],
    ];
    for g in garbage {
        let mut s = TcpStream::connect(m.endpoint()).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let _ = s.write_all(g);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    c.put("after", "2", None).await.expect("the member still serves");
    let r = c.get("before", None).await.expect("get");
    assert_eq!(r.kvs()[0].value(), b"1");
}

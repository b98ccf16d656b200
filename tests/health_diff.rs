//! gRPC's standard health service (`grpc.health.v1.Health`), which etcd registers and
//! health probes (`grpc_health_probe`, load balancers, grpc-go clients) call: the same
//! answers from both servers.

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::harness::{Flavor, Member};

async fn answers(m: &Member) -> Vec<String> {
    let channel =
        tonic::transport::Endpoint::from_shared(m.client_url()).expect("url").connect().await.expect("connect");
    let mut client = HealthClient::new(channel);
    let mut out = Vec::new();
    for service in ["", "etcdserverpb.KV", "no.such.Service"] {
        let req = HealthCheckRequest { service: service.into() };
        out.push(match client.check(req).await {
            Ok(r) => format!("{service:?}: {:?}", ServingStatus::try_from(r.into_inner().status)),
            Err(s) => format!("{service:?}: {:?}", s.code()),
        });
    }
    // The watch answers at once with the current status.
    let mut watch = client.watch(HealthCheckRequest { service: String::new() }).await.expect("watch").into_inner();
    let first = watch.message().await.expect("a status").expect("a message");
    out.push(format!("watch: {:?}", ServingStatus::try_from(first.status)));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_service_answers_as_etcds_does() {
    let keel = Member::single(Flavor::Keel);
    let etcd = Member::single(Flavor::Etcd);
    let (k, e) = (answers(&keel).await, answers(&etcd).await);
    assert_eq!(k, e, "left Keel, right etcd");
    assert!(k[0].ends_with("Ok(Serving)"), "{k:?}");
}

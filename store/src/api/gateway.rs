//! etcd's JSON gateway (grpc-gateway, on by default in etcd 3.4): `POST /v3/kv/put` with
//! `{"key": "Zm9v", "value": "YmFy"}` and the like, for clients that speak HTTP and JSON
//! rather than gRPC (curl, scripts). Each path is a unary call of the gRPC service behind
//! it: the body is read as the request message in protobuf's JSON mapping, as etcd reads it
//! (field names as in the .proto files, bytes in base64, 64-bit integers as strings or
//! numbers, unknown fields ignored), and the response written the same way, fields left at
//! their defaults omitted. Errors are etcd's gateway body,
//! `{"error": ..., "message": ..., "code": <gRPC code>}`, with its HTTP status for the code.
//! `/v3beta/...` paths are served too, as etcd 3.4 does. The streaming calls (watch, lease
//! keep-alive, snapshot, observe) are not served here.

use std::future::Future;
use std::sync::{Arc, LazyLock};

use axum::body::Bytes;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use prost::Message;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, SerializeOptions};
use tonic::{Code, Request, Status};

use super::cluster::ClusterService;
use super::concurrency::Local;
use super::election::ElectionService;
use super::kv::KvService;
use super::lease::LeaseService;
use super::lock::LockService;
use super::maintenance::MaintenanceService;
use crate::node::Node;
use crate::proto::etcdserverpb::cluster_server::Cluster;
use crate::proto::etcdserverpb::kv_server::Kv;
use crate::proto::etcdserverpb::lease_server::Lease;
use crate::proto::etcdserverpb::maintenance_server::Maintenance;
use crate::proto::v3electionpb::election_server::Election;
use crate::proto::v3lockpb::lock_server::Lock;
use crate::watch::WatchHub;

/// The compiled .proto files (see `build.rs`).
static DESCRIPTORS: LazyLock<Result<DescriptorPool, String>> = LazyLock::new(|| {
    DescriptorPool::decode(include_bytes!(concat!(env!("OUT_DIR"), "/etcd_descriptors.bin")).as_ref())
        .map_err(|e| e.to_string())
});

/// grpc-gateway's HTTP status for a gRPC code.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn json(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// etcd's gateway error body.
fn error(s: &Status) -> Response {
    let body = serde_json::json!({ "error": s.message(), "message": s.message(), "code": s.code() as i32 });
    json(http_status(s.code()), body.to_string().into_bytes())
}

/// Reads `body` as the JSON of message `name` (an empty body is the empty message).
fn decode<T: Message + Default>(name: &str, body: &[u8]) -> Result<T, Status> {
    let pool = DESCRIPTORS.as_ref().map_err(|e| Status::internal(format!("descriptors: {e}")))?;
    let desc = pool.get_message_by_name(name).ok_or_else(|| Status::internal(format!("no message {name}")))?;
    let body = if body.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { body };
    let mut de = serde_json::Deserializer::from_slice(body);
    let options = DeserializeOptions::new().deny_unknown_fields(false);
    let dynamic = DynamicMessage::deserialize_with_options(desc, &mut de, &options)
        .and_then(|m| de.end().map(|()| m))
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    T::decode(dynamic.encode_to_vec().as_slice()).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// Writes `msg` (message `name`) as JSON.
fn encode(name: &str, msg: &impl Message) -> Result<Vec<u8>, Status> {
    let pool = DESCRIPTORS.as_ref().map_err(|e| Status::internal(format!("descriptors: {e}")))?;
    let desc = pool.get_message_by_name(name).ok_or_else(|| Status::internal(format!("no message {name}")))?;
    let dynamic =
        DynamicMessage::decode(desc, msg.encode_to_vec().as_slice()).map_err(|e| Status::internal(e.to_string()))?;
    let options = SerializeOptions::new().use_proto_field_name(true).skip_default_fields(true);
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::new(&mut out);
    dynamic.serialize_with_options(&mut ser, &options).map_err(|e| Status::internal(e.to_string()))?;
    Ok(out)
}

/// One unary call: JSON in, the service's answer out.
async fn unary<Req, Resp, Fut>(req_name: &str, resp_name: &str, body: Bytes, call: impl FnOnce(Req) -> Fut) -> Response
where
    Req: Message + Default,
    Resp: Message,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let req = match decode::<Req>(req_name, &body) {
        Ok(r) => r,
        Err(s) => return error(&s),
    };
    match call(req).await.and_then(|r| encode(resp_name, r.get_ref())) {
        Ok(out) => json(StatusCode::OK, out),
        Err(s) => error(&s),
    }
}

/// Adds `POST /v3<path>` and `POST /v3beta<path>`, calling `$svc.$method` with
/// `$req` in and `$resp` out (full protobuf names).
macro_rules! routes {
    ($router:ident, $svc:expr, $( $path:literal => $method:ident($req:literal, $resp:literal) ),* $(,)?) => {
        $(
            let handler = {
                let svc = $svc.clone();
                move |body: Bytes| {
                    let svc = svc.clone();
                    async move { unary($req, $resp, body, |r| async move { svc.$method(Request::new(r)).await }).await }
                }
            };
            $router = $router
                .route(concat!("/v3", $path), post(handler.clone()))
                .route(concat!("/v3beta", $path), post(handler));
        )*
    };
}

/// The gateway's routes.
pub fn router(node: Arc<Node>, hub: Arc<WatchHub>, backup_dir: std::path::PathBuf) -> Router {
    let kv = Arc::new(KvService::new(node.clone()));
    let lease = Arc::new(LeaseService::new(node.clone()));
    let cluster = Arc::new(ClusterService::new(node.clone()));
    let maintenance = Arc::new(MaintenanceService::new(node.clone(), backup_dir));
    let lock = Arc::new(LockService::new(Local::new(node.clone(), hub.clone())));
    let election = Arc::new(ElectionService::new(Local::new(node, hub)));
    let mut r = Router::new();
    routes!(r, kv,
        "/kv/range" => range("etcdserverpb.RangeRequest", "etcdserverpb.RangeResponse"),
        "/kv/put" => put("etcdserverpb.PutRequest", "etcdserverpb.PutResponse"),
        "/kv/deleterange" => delete_range("etcdserverpb.DeleteRangeRequest", "etcdserverpb.DeleteRangeResponse"),
        "/kv/txn" => txn("etcdserverpb.TxnRequest", "etcdserverpb.TxnResponse"),
        "/kv/compaction" => compact("etcdserverpb.CompactionRequest", "etcdserverpb.CompactionResponse"),
    );
    routes!(r, lease,
        "/lease/grant" => lease_grant("etcdserverpb.LeaseGrantRequest", "etcdserverpb.LeaseGrantResponse"),
        "/lease/revoke" => lease_revoke("etcdserverpb.LeaseRevokeRequest", "etcdserverpb.LeaseRevokeResponse"),
        "/kv/lease/revoke" => lease_revoke("etcdserverpb.LeaseRevokeRequest", "etcdserverpb.LeaseRevokeResponse"),
        "/lease/timetolive" => lease_time_to_live("etcdserverpb.LeaseTimeToLiveRequest", "etcdserverpb.LeaseTimeToLiveResponse"),
        "/kv/lease/timetolive" => lease_time_to_live("etcdserverpb.LeaseTimeToLiveRequest", "etcdserverpb.LeaseTimeToLiveResponse"),
        "/lease/leases" => lease_leases("etcdserverpb.LeaseLeasesRequest", "etcdserverpb.LeaseLeasesResponse"),
        "/kv/lease/leases" => lease_leases("etcdserverpb.LeaseLeasesRequest", "etcdserverpb.LeaseLeasesResponse"),
    );
    routes!(r, cluster,
        "/cluster/member/add" => member_add("etcdserverpb.MemberAddRequest", "etcdserverpb.MemberAddResponse"),
        "/cluster/member/remove" => member_remove("etcdserverpb.MemberRemoveRequest", "etcdserverpb.MemberRemoveResponse"),
        "/cluster/member/update" => member_update("etcdserverpb.MemberUpdateRequest", "etcdserverpb.MemberUpdateResponse"),
        "/cluster/member/list" => member_list("etcdserverpb.MemberListRequest", "etcdserverpb.MemberListResponse"),
        "/cluster/member/promote" => member_promote("etcdserverpb.MemberPromoteRequest", "etcdserverpb.MemberPromoteResponse"),
    );
    routes!(r, maintenance,
        "/maintenance/alarm" => alarm("etcdserverpb.AlarmRequest", "etcdserverpb.AlarmResponse"),
        "/maintenance/status" => status("etcdserverpb.StatusRequest", "etcdserverpb.StatusResponse"),
        "/maintenance/defragment" => defragment("etcdserverpb.DefragmentRequest", "etcdserverpb.DefragmentResponse"),
        "/maintenance/hash" => hash("etcdserverpb.HashRequest", "etcdserverpb.HashResponse"),
        "/maintenance/hashkv" => hash_kv("etcdserverpb.HashKVRequest", "etcdserverpb.HashKVResponse"),
        "/maintenance/transfer-leadership" => move_leader("etcdserverpb.MoveLeaderRequest", "etcdserverpb.MoveLeaderResponse"),
    );
    routes!(r, lock,
        "/lock/lock" => lock("v3lockpb.LockRequest", "v3lockpb.LockResponse"),
        "/lock/unlock" => unlock("v3lockpb.UnlockRequest", "v3lockpb.UnlockResponse"),
    );
    routes!(r, election,
        "/election/campaign" => campaign("v3electionpb.CampaignRequest", "v3electionpb.CampaignResponse"),
        "/election/proclaim" => proclaim("v3electionpb.ProclaimRequest", "v3electionpb.ProclaimResponse"),
        "/election/leader" => leader("v3electionpb.LeaderRequest", "v3electionpb.LeaderResponse"),
        "/election/resign" => resign("v3electionpb.ResignRequest", "v3electionpb.ResignResponse"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::{PutRequest, RangeResponse, ResponseHeader};
    use crate::proto::mvccpb::KeyValue;

    #[test]
    fn json_reads_and_writes_as_etcds_gateway_does() {
        let put: PutRequest =
            decode("etcdserverpb.PutRequest", br#"{"key":"Zm9v","value":"YmFy","lease":"7","prev_kv":true,"nope":1}"#)
                .expect("decodes");
        assert_eq!((&put.key[..], &put.value[..], put.lease, put.prev_kv), (&b"foo"[..], &b"bar"[..], 7, true));
        let empty: PutRequest = decode("etcdserverpb.PutRequest", b"").expect("an empty body is an empty message");
        assert!(empty.key.is_empty());
        assert!(decode::<PutRequest>("etcdserverpb.PutRequest", b"garbage").is_err());
        let resp = RangeResponse {
            header: Some(ResponseHeader { cluster_id: 1, member_id: 2, revision: 3, raft_term: 4 }),
            kvs: vec![KeyValue {
                key: "foo".into(),
                value: "bar".into(),
                create_revision: 3,
                mod_revision: 3,
                version: 1,
                lease: 0,
            }],
            more: false,
            count: 1,
        };
        let out = String::from_utf8(encode("etcdserverpb.RangeResponse", &resp).expect("encodes")).expect("utf-8");
        assert_eq!(
            out,
            r#"{"header":{"cluster_id":"1","member_id":"2","revision":"3","raft_term":"4"},"kvs":[{"key":"Zm9v","create_revision":"3","mod_revision":"3","version":"1","value":"YmFy"}],"count":"1"}"#
        );
    }
}

//! etcd's JSON gateway (grpc-gateway, on by default in etcd 3.4): `POST /v3/kv/put` with
//! `{"key": "Zm9v", "value": "YmFy"}` and the like, for clients that speak HTTP and JSON
//! rather than gRPC (curl, scripts). Each path is a unary call of the gRPC service behind
//! it: the body is read as the request message in protobuf's JSON mapping, as etcd reads it
//! (field names as in the .proto files, bytes in base64, 64-bit integers as strings or
//! numbers, unknown fields ignored), and the response written the same way, fields left at
//! their defaults omitted. Errors are etcd's gateway body,
//! `{"error": ..., "message": ..., "code": <gRPC code>}`, with its HTTP status for the code.
//! `/v3beta/...` paths are served too, as etcd 3.4 does. The streaming calls watch, lease
//! keep-alive, election observe and maintenance snapshot answer a line `{"result": ...}`
//! per response.

use std::future::Future;
use std::sync::{Arc, LazyLock};

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use prost::Message;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, SerializeOptions};
use tonic::{Code, Request, Status};

use super::auth::AuthService;
use super::cluster::ClusterService;
use super::concurrency::Local;
use super::election::ElectionService;
use super::kv::KvService;
use super::lease::LeaseService;
use super::lock::LockService;
use super::maintenance::MaintenanceService;
use crate::auth::Credentials;
use crate::node::Node;
use crate::proto::etcdserverpb::auth_server::Auth;
use crate::proto::etcdserverpb::cluster_server::Cluster;
use crate::proto::etcdserverpb::kv_server::Kv;
use crate::proto::etcdserverpb::lease_server::Lease;
use crate::proto::etcdserverpb::maintenance_server::Maintenance;
use crate::proto::etcdserverpb::{WatchRequest, WatchResponse};
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

/// etcd's gateway error body, its fields in etcd's order.
fn error_body(s: &Status) -> String {
    let text = serde_json::Value::from(s.message()).to_string();
    format!(r#"{{"error":{text},"message":{text},"code":{}}}"#, s.code() as i32)
}

fn error(s: &Status) -> Response {
    json(http_status(s.code()), error_body(s).into_bytes())
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

/// Who a gateway call comes from: the token in etcd's `Authorization` header (a client
/// certificate does not name a user through the gateway, as in etcd).
fn credentials(headers: &HeaderMap) -> Credentials {
    let token = headers.get(header::AUTHORIZATION).map(|v| v.to_str().map(str::to_string).unwrap_or_default());
    Credentials { token, cert_name: None }
}

/// A service request as the gateway's caller sent it.
fn request<T>(headers: &HeaderMap, msg: T) -> Request<T> {
    credentials(headers).request(msg)
}

/// Adds `POST /v3<path>` and `POST /v3beta<path>`, calling `$svc.$method` with
/// `$req` in and `$resp` out (full protobuf names).
macro_rules! routes {
    ($router:ident, $svc:expr, $( $path:literal => $method:ident($req:literal, $resp:literal) ),* $(,)?) => {
        $(
            let handler = {
                let svc = $svc.clone();
                move |headers: HeaderMap, body: Bytes| {
                    let svc = svc.clone();
                    async move {
                        let call = |r| async move { svc.$method(request(&headers, r)).await };
                        unary($req, $resp, body, call).await
                    }
                }
            };
            $router = $router
                .route(concat!("/v3", $path), post(handler.clone()))
                .route(concat!("/v3beta", $path), post(handler));
        )*
    };
}

/// `POST /v3/watch`: the body is a stream of JSON watch requests (creates, cancels,
/// progress requests), the answer a stream of lines `{"result": <watch response>}`, as
/// etcd's gateway streams them. The watch lives until the client goes away, whether or not
/// its request body has ended; a request that cannot be read ends it with an error line
/// (`{"error": ..., "message": ..., "code": 2}`).
async fn watch(node: Arc<Node>, hub: Arc<WatchHub>, headers: HeaderMap, body: axum::body::Body) -> Response {
    let creds = credentials(&headers);
    let mut body = JsonRequests::new(body);
    // As etcd's gateway, answer nothing until the first request is read: one that cannot
    // be read is answered with an error status.
    let first = match body.next_requests::<WatchRequest>("etcdserverpb.WatchRequest").await {
        Ok(Some(first)) => first,
        Ok(None) => Vec::new(),
        Err(s) => return error(&s),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(128);
    let stream = hub.open_stream(tx);
    for r in first {
        apply(&node, &hub, stream, &creds, r).await;
    }
    // One task reads the rest of the body and writes the answer's lines; it ends, closing
    // the watch, when the client goes away or a request cannot be read (after saying so).
    let (lines, answer) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        let mut body_open = true;
        'serve: loop {
            tokio::select! {
                () = lines.closed() => break,
                out = rx.recv() => {
                    let Some(out) = out else { break };
                    for r in out.into_local_responses(&|h| node.fill(h, 0)) {
                        if lines.send(Ok(result_line(&r))).await.is_err() {
                            break 'serve;
                        }
                    }
                }
                // Reading stops at the body's end; the watchers stay until the client goes.
                requests = body.next_requests::<WatchRequest>("etcdserverpb.WatchRequest"), if body_open => {
                    match requests {
                        Ok(Some(rs)) => {
                            for r in rs {
                                apply(&node, &hub, stream, &creds, r).await;
                            }
                        }
                        Ok(None) => body_open = false,
                        Err(s) => {
                            let _ = lines.send(Ok(error_line(&s))).await;
                            break;
                        }
                    }
                }
            }
        }
        hub.close_stream(stream);
    });
    let body = axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(answer));
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A streaming call's request body: a stream of JSON values, each a request message.
struct JsonRequests {
    chunks: axum::body::BodyDataStream,
    buf: Vec<u8>,
}

impl JsonRequests {
    fn new(body: axum::body::Body) -> JsonRequests {
        JsonRequests { chunks: body.into_data_stream(), buf: Vec::new() }
    }

    /// The next requests (message `name`): every whole JSON value the body holds so far,
    /// waiting for more of it while it holds none. `None` once the body has ended.
    async fn next_requests<T: Message + Default>(&mut self, name: &str) -> Result<Option<Vec<T>>, Status> {
        use futures::StreamExt;
        loop {
            let mut de = serde_json::Deserializer::from_slice(&self.buf).into_iter::<serde_json::Value>();
            let (mut out, mut used) = (Vec::new(), 0);
            loop {
                match de.next() {
                    Some(Ok(v)) => {
                        used = de.byte_offset();
                        out.push(streamed_request(name, v)?);
                    }
                    Some(Err(e)) if e.is_eof() => break,
                    Some(Err(e)) => return Err(Status::unknown(e.to_string())),
                    None => {
                        used = self.buf.len();
                        break;
                    }
                }
            }
            self.buf.drain(..used);
            if !out.is_empty() {
                return Ok(Some(out));
            }
            if self.buf.len() > super::DECODE_LIMIT_BYTES {
                // One request larger than any the services take: not buffered further.
                return Err(Status::resource_exhausted(format!(
                    "grpc: received message larger than max ({} vs. {})",
                    self.buf.len(),
                    super::DECODE_LIMIT_BYTES
                )));
            }
            match self.chunks.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                _ => return Ok(None),
            }
        }
    }
}

/// One request of a streaming call; errors are Unknown, as the gateway reports them there.
fn streamed_request<T: Message + Default>(name: &str, v: serde_json::Value) -> Result<T, Status> {
    let body = serde_json::to_vec(&v).map_err(|e| Status::unknown(e.to_string()))?;
    decode::<T>(name, &body).map_err(|s| Status::unknown(s.message()))
}

async fn apply(node: &Node, hub: &Arc<WatchHub>, stream: u64, creds: &Credentials, r: WatchRequest) {
    use crate::proto::etcdserverpb::watch_request::RequestUnion;
    match r.request_union {
        Some(RequestUnion::CreateRequest(c)) => super::watch::create(node, hub, stream, creds, &c).await,
        Some(RequestUnion::CancelRequest(c)) => hub.cancel(stream, c.watch_id),
        Some(RequestUnion::ProgressRequest(_)) => hub.request_progress(stream),
        None => {}
    }
}

/// `{"result": <response>}` and a newline.
fn result_line(r: &WatchResponse) -> Bytes {
    result_line_of("etcdserverpb.WatchResponse", r)
}

/// `{"error": ...}` and a newline.
fn error_line(s: &Status) -> Bytes {
    Bytes::from(error_body(s) + "\n")
}

/// `{"result": <message name>}` and a newline.
fn result_line_of(name: &str, r: &impl Message) -> Bytes {
    let inner = encode(name, r).unwrap_or_else(|_| b"{}".to_vec());
    let mut line = Vec::with_capacity(inner.len() + 12);
    line.extend_from_slice(b"{\"result\":");
    line.extend_from_slice(&inner);
    line.extend_from_slice(b"}\n");
    line.into()
}

/// `POST /v3/lease/keepalive`: a body of keep-alive requests, a line each in answer
/// (`{"result": {"ID": ..., "TTL": ...}}`), ending with the body; an error ends it with an
/// error line.
async fn keep_alive(node: Arc<Node>, body: axum::body::Body) -> Response {
    use crate::proto::etcdserverpb::{LeaseKeepAliveRequest, LeaseKeepAliveResponse};
    const NAME: &str = "etcdserverpb.LeaseKeepAliveRequest";
    let mut body = JsonRequests::new(body);
    let first = match body.next_requests::<LeaseKeepAliveRequest>(NAME).await {
        Ok(first) => first.unwrap_or_default(),
        Err(s) => return error(&s),
    };
    let queue: std::collections::VecDeque<LeaseKeepAliveRequest> = first.into();
    let lines = futures::stream::unfold((body, queue, node, false), |(mut body, mut queue, node, done)| async move {
        if done {
            return None;
        }
        while queue.is_empty() {
            match body.next_requests::<LeaseKeepAliveRequest>(NAME).await {
                Ok(Some(rs)) => queue.extend(rs),
                // The body ended: so does the answer, as etcd's keep-alive stream ends
                // when its client stops sending.
                Ok(None) => return None,
                Err(s) => return Some((Ok::<_, std::io::Error>(error_line(&s)), (body, queue, node, true))),
            }
        }
        let ka = queue.pop_front()?;
        let line = match node.renew_lease(ka.id).await {
            Ok(ttl) => {
                let header = Some(node.header(node.store.current_revision()));
                result_line_of(
                    "etcdserverpb.LeaseKeepAliveResponse",
                    &LeaseKeepAliveResponse { header, id: ka.id, ttl },
                )
            }
            Err(e) => return Some((Ok(error_line(&Status::from(e))), (body, queue, node, true))),
        };
        Some((Ok(line), (body, queue, node, false)))
    });
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], axum::body::Body::from_stream(lines)).into_response()
}

/// A server-streaming call: the body is its one request (message `req_name`), the answer
/// a line `{"result": ...}` per response (message `resp_name`), in order; an error before
/// the first is an error status, one after it an error line.
async fn server_stream<Req, Resp, Fut, S>(
    req_name: &str,
    resp_name: &'static str,
    body: Bytes,
    call: impl FnOnce(Req) -> Fut,
) -> Response
where
    Req: Message + Default,
    Resp: Message,
    Fut: Future<Output = Result<tonic::Response<S>, Status>>,
    S: futures::Stream<Item = Result<Resp, Status>> + Send + 'static,
{
    use futures::StreamExt;
    let req = match decode::<Req>(req_name, &body) {
        Ok(r) => r,
        Err(s) => return error(&s),
    };
    let responses = match call(req).await {
        Ok(r) => r.into_inner(),
        Err(s) => return error(&s),
    };
    let lines = responses.map(move |r| {
        Ok::<_, std::io::Error>(match r {
            Ok(m) => result_line_of(resp_name, &m),
            Err(s) => error_line(&s),
        })
    });
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], axum::body::Body::from_stream(lines)).into_response()
}

/// `POST /v3/maintenance/snapshot`: the member's backup as lines `{"result": {"header":
/// ..., "remaining_bytes": ..., "blob": <base64>}}`, in order.
async fn snapshot(maintenance: Arc<MaintenanceService>, headers: HeaderMap, body: Bytes) -> Response {
    let call = |r| async move { maintenance.snapshot(request(&headers, r)).await };
    server_stream::<crate::proto::etcdserverpb::SnapshotRequest, _, _, _>(
        "etcdserverpb.SnapshotRequest",
        "etcdserverpb.SnapshotResponse",
        body,
        call,
    )
    .await
}

/// `POST /v3/election/observe`: one request, a line per leader or value in answer.
async fn observe(election: Arc<ElectionService>, headers: HeaderMap, body: Bytes) -> Response {
    let call = |r| async move { election.observe(request(&headers, r)).await };
    server_stream::<crate::proto::v3electionpb::LeaderRequest, _, _, _>(
        "v3electionpb.LeaderRequest",
        "v3electionpb.LeaderResponse",
        body,
        call,
    )
    .await
}

/// A client certificate cannot name a user through the gateway; with client certificate
/// and RBAC auth on, etcd refuses a gateway call made with one that has a CommonName,
/// rather than serve it as someone else (text and status as etcd's).
async fn refuse_named_certificates(node: &Node, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use super::tls::ClientCert;
    let named = req
        .extensions()
        .get::<axum::extract::ConnectInfo<ClientCert>>()
        .is_some_and(|c| c.0 .0.as_deref().is_some_and(|n| !n.is_empty()));
    if named && node.client_cert_auth && node.auth.enabled() {
        let text = "CommonName of client sending a request against gateway will be ignored and not used as expected\n";
        let headers =
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::X_CONTENT_TYPE_OPTIONS, "nosniff")];
        return (StatusCode::BAD_REQUEST, headers, text).into_response();
    }
    next.run(req).await
}

/// The gateway's routes.
pub fn router(node: Arc<Node>, hub: Arc<WatchHub>, backup_dir: std::path::PathBuf) -> Router {
    let watch_route = {
        let (node, hub) = (node.clone(), hub.clone());
        move |headers: HeaderMap, body: axum::body::Body| watch(node.clone(), hub.clone(), headers, body)
    };
    let kv = Arc::new(KvService::new(node.clone()));
    let auth = Arc::new(AuthService::new(node.clone()));
    let lease = Arc::new(LeaseService::new(node.clone()));
    let cluster = Arc::new(ClusterService::new(node.clone()));
    let maintenance = Arc::new(MaintenanceService::new(node.clone(), backup_dir));
    let lock = Arc::new(LockService::new(Local::new(node.clone(), hub.clone())));
    let election = Arc::new(ElectionService::new(Local::new(node.clone(), hub)));
    let keep_alive_route = {
        let node = node.clone();
        move |body: axum::body::Body| keep_alive(node.clone(), body)
    };
    let observe_route = {
        let election = election.clone();
        move |headers: HeaderMap, body: Bytes| observe(election.clone(), headers, body)
    };
    let snapshot_route = {
        let maintenance = maintenance.clone();
        move |headers: HeaderMap, body: Bytes| snapshot(maintenance.clone(), headers, body)
    };
    let mut r = Router::new();
    for prefix in ["/v3", "/v3beta"] {
        r = r
            .route(&format!("{prefix}/maintenance/snapshot"), post(snapshot_route.clone()))
            .route(&format!("{prefix}/watch"), post(watch_route.clone()))
            .route(&format!("{prefix}/lease/keepalive"), post(keep_alive_route.clone()))
            .route(&format!("{prefix}/election/observe"), post(observe_route.clone()));
    }
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
    routes!(r, auth,
        "/auth/enable" => auth_enable("etcdserverpb.AuthEnableRequest", "etcdserverpb.AuthEnableResponse"),
        "/auth/disable" => auth_disable("etcdserverpb.AuthDisableRequest", "etcdserverpb.AuthDisableResponse"),
        "/auth/status" => auth_status("etcdserverpb.AuthStatusRequest", "etcdserverpb.AuthStatusResponse"),
        "/auth/authenticate" => authenticate("etcdserverpb.AuthenticateRequest", "etcdserverpb.AuthenticateResponse"),
        "/auth/user/add" => user_add("etcdserverpb.AuthUserAddRequest", "etcdserverpb.AuthUserAddResponse"),
        "/auth/user/get" => user_get("etcdserverpb.AuthUserGetRequest", "etcdserverpb.AuthUserGetResponse"),
        "/auth/user/list" => user_list("etcdserverpb.AuthUserListRequest", "etcdserverpb.AuthUserListResponse"),
        "/auth/user/delete" => user_delete("etcdserverpb.AuthUserDeleteRequest", "etcdserverpb.AuthUserDeleteResponse"),
        "/auth/user/changepw" => user_change_password("etcdserverpb.AuthUserChangePasswordRequest", "etcdserverpb.AuthUserChangePasswordResponse"),
        "/auth/user/grant" => user_grant_role("etcdserverpb.AuthUserGrantRoleRequest", "etcdserverpb.AuthUserGrantRoleResponse"),
        "/auth/user/revoke" => user_revoke_role("etcdserverpb.AuthUserRevokeRoleRequest", "etcdserverpb.AuthUserRevokeRoleResponse"),
        "/auth/role/add" => role_add("etcdserverpb.AuthRoleAddRequest", "etcdserverpb.AuthRoleAddResponse"),
        "/auth/role/get" => role_get("etcdserverpb.AuthRoleGetRequest", "etcdserverpb.AuthRoleGetResponse"),
        "/auth/role/list" => role_list("etcdserverpb.AuthRoleListRequest", "etcdserverpb.AuthRoleListResponse"),
        "/auth/role/delete" => role_delete("etcdserverpb.AuthRoleDeleteRequest", "etcdserverpb.AuthRoleDeleteResponse"),
        "/auth/role/grant" => role_grant_permission("etcdserverpb.AuthRoleGrantPermissionRequest", "etcdserverpb.AuthRoleGrantPermissionResponse"),
        "/auth/role/revoke" => role_revoke_permission("etcdserverpb.AuthRoleRevokePermissionRequest", "etcdserverpb.AuthRoleRevokePermissionResponse"),
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
    let r = {
        let node = node.clone();
        r.route_layer(axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| {
            let node = node.clone();
            async move { refuse_named_certificates(&node, req, next).await }
        }))
    };
    // The services check sizes themselves, with etcd's errors (a request over
    // --max-request-bytes, a message over it plus gRPC's allowance); the body limit only
    // bounds what is read before they can (base64 makes a value a third larger).
    r.layer(axum::extract::DefaultBodyLimit::max(super::DECODE_LIMIT_BYTES))
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

//! Kubernetes `Status` errors: every failure the API server answers with is one, with the
//! reason and code kube-apiserver uses, so kubectl prints `Error from server (Reason): ...`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::resources::ResourceType;

/// A field-level cause of an `Invalid` error.
#[derive(Debug, Clone)]
pub struct Cause {
    pub kind: &'static str,
    pub field: String,
    pub message: String,
}

impl Cause {
    pub fn required(field: &str) -> Cause {
        Cause { kind: "FieldValueRequired", field: field.to_string(), message: "Required value".to_string() }
    }

    pub fn invalid(field: &str, value: &str, detail: &str) -> Cause {
        Cause {
            kind: "FieldValueInvalid",
            field: field.to_string(),
            message: format!("Invalid value: \"{value}\": {detail}"),
        }
    }

    /// An invalid value printed as Go prints it (`[]string{"a"}`), not as a quoted string.
    pub fn invalid_go(field: &str, go_value: &str, detail: &str) -> Cause {
        Cause {
            kind: "FieldValueInvalid",
            field: field.to_string(),
            message: format!("Invalid value: {go_value}: {detail}"),
        }
    }

    pub fn forbidden(field: &str, detail: &str) -> Cause {
        Cause { kind: "FieldValueForbidden", field: field.to_string(), message: format!("Forbidden: {detail}") }
    }

    pub fn duplicate(field: &str, value: &str) -> Cause {
        Cause {
            kind: "FieldValueDuplicate",
            field: field.to_string(),
            message: format!("Duplicate value: \"{value}\""),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: StatusCode,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
    pub retry_after: Option<u32>,
}

impl ApiError {
    fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { code, reason, message: message.into(), details: None, retry_after: None }
    }

    /// An error relayed from another server (a node agent): the reason follows the code.
    pub fn relayed(code: StatusCode, message: impl Into<String>) -> ApiError {
        let reason = match code.as_u16() {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            409 => "Conflict",
            422 => "Invalid",
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "InternalError",
        };
        ApiError::new(code, reason, message)
    }

    fn with_details(mut self, name: &str, rt: &ResourceType) -> ApiError {
        let mut d = json!({ "name": name, "kind": rt.plural });
        if !rt.group.is_empty() {
            d["group"] = json!(rt.group);
        }
        self.details = Some(d);
        self
    }

    pub fn not_found(rt: &ResourceType, name: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "NotFound", format!("{} \"{name}\" not found", rt.qualified()))
            .with_details(name, rt)
    }

    pub fn already_exists(rt: &ResourceType, name: &str) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "AlreadyExists", format!("{} \"{name}\" already exists", rt.qualified()))
            .with_details(name, rt)
    }

    pub fn conflict(rt: &ResourceType, name: &str) -> ApiError {
        ApiError::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your \
                 changes to the latest version and try again",
                rt.qualified()
            ),
        )
        .with_details(name, rt)
    }

    pub fn conflict_msg(rt: &ResourceType, name: &str, msg: &str) -> ApiError {
        ApiError::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!("Operation cannot be fulfilled on {} \"{name}\": {msg}", rt.qualified()),
        )
        .with_details(name, rt)
    }

    pub fn invalid(rt: &ResourceType, name: &str, causes: Vec<Cause>) -> ApiError {
        let summary: Vec<String> = causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        let kind = rt.kind;
        let mut e = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {}", summary.join(", ")),
        );
        let mut d = json!({ "name": name, "kind": kind });
        if !rt.group.is_empty() {
            d["group"] = json!(rt.group);
        }
        d["causes"] = causes
            .iter()
            .map(|c| json!({ "reason": c.kind, "message": c.message, "field": c.field }))
            .collect::<Vec<_>>()
            .into();
        e.details = Some(d);
        e
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub fn unprocessable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "Forbidden", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", message)
    }

    pub fn unsupported_media_type(ct: &str) -> ApiError {
        ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json, application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (got {ct:?})"))
    }

    pub fn path_not_found(path: &str) -> ApiError {
        let _ = path;
        ApiError::new(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource")
    }

    pub fn expired(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::GONE, "Expired", message)
    }

    pub fn too_large_rv(rv: i64) -> ApiError {
        let mut e = ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "Timeout",
            format!("Too large resource version: {rv}, current: unknown"),
        );
        e.retry_after = Some(1);
        e.details = Some(
            json!({ "causes": [{ "reason": "ResourceVersionTooLarge", "message": "Too large resource version" }], "retryAfterSeconds": 1 }),
        );
        e
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", message);
        e.retry_after = Some(1);
        e
    }

    pub fn status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

impl From<etcd_client::Error> for ApiError {
    fn from(e: etcd_client::Error) -> ApiError {
        match &e {
            etcd_client::Error::GRpcStatus(s) if s.message().contains("required revision has been compacted") => {
                ApiError::expired("The resourceVersion for the provided list is too old.")
            }
            etcd_client::Error::GRpcStatus(s) if s.message().contains("future revision") => ApiError::too_large_rv(0),
            _ => ApiError::unavailable(format!("storage: {e}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.code, axum::Json(self.status())).into_response();
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

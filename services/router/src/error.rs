//! The router's errors: [`Error`] for the library surface, [`ApiError`] for
//! what a client sees. One `match` maps every `ApiError` to its status and
//! JSON body; internal causes are logged there and never shown.

use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use agenttier_bus::model::Phase;
use agenttier_bus::msg::Rejection;

/// Errors of the library surface ([`crate::serve`], [`crate::ensure_api_key`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] agenttier_bus::store::Error),
    #[error(transparent)]
    Bus(#[from] agenttier_bus::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a handler can answer other than success.
#[derive(Debug)]
pub enum ApiError {
    MissingAuthorization,
    InvalidApiKey,
    InvalidAuthorizationFormat,
    InvalidToken(String),
    Forbidden(String),
    InvalidRequest(String),
    InvalidTimeout,
    /// 404 with `error: not_found` and this message.
    NotFound(&'static str),
    TemplateNotFound(String),
    AlreadyExists(String),
    /// The name exists in several of the caller's namespaces.
    Ambiguous {
        name: String,
        namespaces: Vec<String>,
    },
    InvalidPhase(Phase),
    /// No such endpoint (404), or not with this method (405).
    NoRoute {
        method: axum::http::Method,
        path: String,
        allowed: bool,
    },
    PayloadTooLarge(Option<String>),
    /// The sandbox exists and should be served, but nobody answers for it.
    ExecutorUnavailable,
    /// An executor took longer than the request timeout to answer.
    ExecutorTimeout,
    /// The owner of the resource said no, in HTTP terms.
    Rejected(Rejection),
    /// A dependency (store, bus) failed; the cause is logged only.
    Unavailable(String),
    Internal(String),
}

impl ApiError {
    pub fn sandbox_not_found() -> Self {
        ApiError::NotFound("sandbox not found")
    }
}

impl From<agenttier_bus::store::Error> for ApiError {
    fn from(e: agenttier_bus::store::Error) -> Self {
        ApiError::Unavailable(format!("store: {e}"))
    }
}

fn body(error: &str, message: Option<String>) -> Value {
    let mut m = Map::new();
    m.insert("error".into(), Value::from(error));
    if let Some(message) = message {
        m.insert("message".into(), Value::from(message));
    }
    Value::Object(m)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut retry_after = None;
        let (status, body) = match self {
            ApiError::MissingAuthorization => (
                StatusCode::UNAUTHORIZED,
                body("missing_authorization", None),
            ),
            ApiError::InvalidApiKey => (StatusCode::UNAUTHORIZED, body("invalid_api_key", None)),
            ApiError::InvalidAuthorizationFormat => (
                StatusCode::UNAUTHORIZED,
                body("invalid_authorization_format", None),
            ),
            ApiError::InvalidToken(m) => (StatusCode::UNAUTHORIZED, body("invalid_token", Some(m))),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, body("forbidden", Some(m))),
            ApiError::InvalidRequest(m) => {
                (StatusCode::BAD_REQUEST, body("invalid_request", Some(m)))
            }
            ApiError::InvalidTimeout => (
                StatusCode::BAD_REQUEST,
                body(
                    "invalid_timeout",
                    Some("timeout must be a duration like 30s, 5m or 1h30m".into()),
                ),
            ),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, body("not_found", Some(m.into()))),
            ApiError::TemplateNotFound(name) => (
                StatusCode::NOT_FOUND,
                body(
                    "template_not_found",
                    Some(format!("template {name:?} not found")),
                ),
            ),
            ApiError::AlreadyExists(m) => (StatusCode::CONFLICT, body("already_exists", Some(m))),
            ApiError::Ambiguous { name, namespaces } => {
                let mut b = body(
                    "ambiguous_sandbox",
                    Some(format!(
                        "sandbox {name:?} exists in namespaces {}; pass ?namespace=",
                        namespaces.join(", ")
                    )),
                );
                b["namespaces"] = json!(namespaces);
                (StatusCode::CONFLICT, b)
            }
            ApiError::InvalidPhase(p) => (
                StatusCode::CONFLICT,
                body("invalid_phase", Some(format!("sandbox is {}", p.as_str()))),
            ),
            ApiError::NoRoute {
                method,
                path,
                allowed: false,
            } => (
                StatusCode::NOT_FOUND,
                body(
                    "endpoint_not_supported",
                    Some(format!("this server has no endpoint {method} {path}")),
                ),
            ),
            ApiError::NoRoute { method, path, .. } => (
                StatusCode::METHOD_NOT_ALLOWED,
                body(
                    "method_not_allowed",
                    Some(format!("{path} does not accept {method}")),
                ),
            ),
            ApiError::PayloadTooLarge(m) => {
                (StatusCode::PAYLOAD_TOO_LARGE, body("payload_too_large", m))
            }
            ApiError::ExecutorUnavailable => {
                retry_after = Some(2);
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    body(
                        "executor_unavailable",
                        Some("the executor hosting this sandbox is not reachable; retry".into()),
                    ),
                )
            }
            ApiError::ExecutorTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                body(
                    "executor_timeout",
                    Some("the executor did not answer in time".into()),
                ),
            ),
            ApiError::Rejected(r) => {
                retry_after = r.retry_after;
                let status =
                    StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut m = r.extra;
                m.insert("error".into(), Value::from(r.error));
                if let Some(message) = r.message {
                    m.insert("message".into(), Value::from(message));
                }
                (status, Value::Object(m))
            }
            ApiError::Unavailable(cause) => {
                tracing::warn!(%cause, "dependency unavailable");
                retry_after = Some(2);
                (StatusCode::SERVICE_UNAVAILABLE, body("unavailable", None))
            }
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, body("internal", None))
            }
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        resp
    }
}

/// A JSON body whose rejection is an [`ApiError`]. The `Content-Type` is not
/// checked (curl's `-d` sends a form type), and an empty body reads as `{}`.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = bytes::Bytes::from_request(req, state)
            .await
            .map_err(|e: BytesRejection| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge(Some("request body too large".into()))
                } else {
                    ApiError::InvalidRequest(e.body_text())
                }
            })?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(text)
            .map(Json)
            .map_err(|e| ApiError::InvalidRequest(format!("invalid JSON body: {e}")))
    }
}

/// Query parameters whose rejection is an [`ApiError`].
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e: QueryRejection| ApiError::InvalidRequest(e.body_text()))
    }
}

/// Path parameters whose rejection is an [`ApiError`].
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| ApiError::InvalidRequest(e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parts(e: ApiError) -> (StatusCode, Option<String>, Value) {
        let r = e.into_response();
        let status = r.status();
        let retry = r
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap_or_default().to_string());
        let b = axum::body::to_bytes(r.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        (
            status,
            retry,
            serde_json::from_slice(&b).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn rejections_keep_status_fields_and_retry_after() {
        let r = Rejection::new(429, "concurrency_exceeded")
            .message("busy")
            .retry_after(3)
            .field("inflight", 4)
            .field("limit", 4);
        let (status, retry, b) = parts(ApiError::Rejected(r)).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(retry.as_deref(), Some("3"));
        assert_eq!(
            b,
            json!({"error":"concurrency_exceeded","message":"busy","inflight":4,"limit":4})
        );
    }

    #[tokio::test]
    async fn internal_causes_are_not_shown() {
        let (status, _, b) = parts(ApiError::Internal("secret detail".into())).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(b, json!({"error":"internal"}));
        let (status, retry, b) = parts(ApiError::Unavailable("redb: disk".into())).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry.as_deref(), Some("2"));
        assert_eq!(b, json!({"error":"unavailable"}));
    }

    #[tokio::test]
    async fn auth_bodies_match_the_spec() {
        assert_eq!(
            parts(ApiError::MissingAuthorization).await.2,
            json!({"error":"missing_authorization"})
        );
        assert_eq!(
            parts(ApiError::InvalidApiKey).await.2,
            json!({"error":"invalid_api_key"})
        );
        let (s, _, b) = parts(ApiError::InvalidPhase(Phase::Stopped)).await;
        assert_eq!(s, StatusCode::CONFLICT);
        assert_eq!(
            b,
            json!({"error":"invalid_phase","message":"sandbox is Stopped"})
        );
    }
}

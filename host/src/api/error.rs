//! The API's one error type, its JSON body `{"error": {"code", "message"}}`, and extractors
//! whose rejections are that type: malformed input is a JSON 4xx, never a 500 or plain text.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::queue::QueueError;
use crate::retry::RetryError;

/// The body of every error answer: `{"error": {"code", "message"}}` (what `ApiError::body`
/// sends; some endpoints add fields beside `error`, see each operation).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable code, e.g. `invalid_query`, `not_found`, `unauthorized`,
    /// `forbidden`, `redis_unavailable`, `timeout`, `internal`.
    #[schema(example = "not_found")]
    pub code: &'static str,
    /// A sentence for people; 5xx details are logged, never sent.
    pub message: String,
}

/// Everything a request can fail with. 5xx details are logged, never sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400: a parameter is malformed or out of range.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// 400: `force=true` without a `reason`.
    #[error("force requires a reason (add reason=…): it is written to the audit trail")]
    ForceRequiresReason,
    /// 401: no valid bearer token.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: a valid token whose role is too low.
    #[error("{0}")]
    Forbidden(String),
    /// 403 `cross_site`: a state-changing request a page of another site made a browser send.
    #[error("{0}")]
    CrossSite(String),
    /// 403 `host_not_allowed`: a `Host` this server does not answer to (DNS rebinding).
    #[error("{0}")]
    HostNotAllowed(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 405.
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    /// 409: refused because of the current state (e.g. retiring a bound policy).
    #[error("{0}")]
    Conflict(String),
    /// 409 of the idempotency guard (`in_progress`, `stale_token`): the body carries the
    /// key's state beside `error`, and `in_progress` a `Retry-After` (the lease's end).
    #[error("{}", .0.error.message)]
    KeyConflict(Box<super::guard::Conflict>),
    /// 422: well-formed, but not acceptable (e.g. a policy that fails validation).
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    /// 413.
    #[error("the request body is over the {0}-byte limit")]
    PayloadTooLarge(u64),
    /// 413 `result_too_large`: an idempotency result over `[guard] max_result_bytes`.
    #[error("{0}")]
    ResultTooLarge(String),
    /// 415: a body whose content type the endpoint does not read.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 414.
    #[error("the request URI is over the {0}-byte limit")]
    UriTooLong(usize),
    /// 429: too many retry-all operations running.
    #[error("{running} retry-all operations are running, the most allowed at once: retry later")]
    TooManyOperations { running: u32 },
    /// 503: Redis did not answer. The detail is logged.
    #[error("Redis is unavailable: retry later")]
    RedisUnavailable(String),
    /// 503: the request took longer than the server's request timeout.
    #[error("the request did not finish within {} s", .0.as_secs())]
    Timeout(Duration),
    /// 503 `audit_not_configured`: an audit query on a server without an audit directory.
    #[error("audit is not configured: set an audit directory to query the audit trail")]
    AuditNotConfigured,
    /// 500: anything else. The detail is logged.
    #[error("internal error: see the server log")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } | Self::ForceRequiresReason => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::CrossSite(_) | Self::HostNotAllowed(_) => {
                StatusCode::FORBIDDEN
            }
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) | Self::KeyConflict(_) => StatusCode::CONFLICT,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge(_) | Self::ResultTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            Self::TooManyOperations { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::RedisUnavailable(_) | Self::Timeout(_) | Self::AuditNotConfigured => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. } => code,
            Self::ForceRequiresReason => "force_requires_reason",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::CrossSite(_) => "cross_site",
            Self::HostNotAllowed(_) => "host_not_allowed",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::KeyConflict(conflict) => conflict.error.code,
            Self::Unprocessable { code, .. } => code,
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::ResultTooLarge(_) => "result_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::UriTooLong(_) => "uri_too_long",
            Self::TooManyOperations { .. } => "too_many_operations",
            Self::RedisUnavailable(_) => "redis_unavailable",
            Self::Timeout(_) => "timeout",
            Self::AuditNotConfigured => "audit_not_configured",
            Self::Internal(_) => "internal",
        }
    }

    /// Logs what a 5xx hides from the client (once, where the error is first turned into a
    /// response or recorded).
    pub fn log(&self) {
        match self {
            Self::RedisUnavailable(detail) => tracing::warn!(error = %detail, "redis unavailable"),
            Self::Internal(detail) => tracing::error!(error = %detail, "internal error"),
            Self::Timeout(after) => tracing::warn!(after_s = after.as_secs(), "request timed out"),
            _ => {}
        }
    }

    /// `{"code", "message"}`: the `error` of the body.
    pub fn detail(&self) -> ErrorDetail {
        ErrorDetail {
            code: self.code(),
            message: self.to_string(),
        }
    }

    /// The JSON body: `{"error": {"code", "message"}}` (a `KeyConflict` answers with more
    /// fields beside `error`: see `IntoResponse`).
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.detail(),
        }
    }

    /// The `Retry-After` header's seconds, for the errors that have one.
    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::TooManyOperations { .. } => Some(10),
            Self::RedisUnavailable(_) | Self::Timeout(_) => Some(5),
            Self::KeyConflict(conflict) => conflict.retry_after_seconds,
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log();
        let status = self.status();
        let retry_after = self.retry_after();
        let mut response = match self {
            Self::KeyConflict(conflict) => (status, Json(conflict)).into_response(),
            other => (status, Json(other.body())).into_response(),
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<RetryError> for ApiError {
    fn from(e: RetryError) -> Self {
        match e {
            RetryError::ForceWithoutReason => Self::ForceRequiresReason,
            RetryError::Queue(q) => q.into(),
            RetryError::Redis(r) => r.into(),
            RetryError::Engine(detail) => Self::Internal(format!("policy engine: {detail}")),
            e @ RetryError::CountMismatch { .. } => Self::Conflict(e.to_string()),
            e @ RetryError::DeleteWithoutReason => Self::Unprocessable {
                code: "reason_required",
                message: e.to_string(),
            },
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Unavailable(detail) => Self::RedisUnavailable(detail),
            e @ (QueueError::Redis(_) | QueueError::Unsupported(_)) => {
                Self::Internal(e.to_string())
            }
        }
    }
}

impl From<crate::redis_error::RedisError> for ApiError {
    fn from(e: crate::redis_error::RedisError) -> Self {
        match e {
            crate::redis_error::RedisError::Unavailable(detail) => Self::RedisUnavailable(detail),
            e @ crate::redis_error::RedisError::Failed(_) => Self::Internal(e.to_string()),
        }
    }
}

/// `Query<T>` whose rejection is a JSON 400 naming the bad parameter. Every `T` denies
/// unknown fields, so a misspelt parameter is an error, never a silent default; a route
/// without parameters takes `ApiQuery<NoQuery>`. Handlers list it before their body, so a bad
/// parameter is reported even when the body is bad too.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

/// The query of a route that has no parameters: any parameter is refused by name.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Self(v))
            .map_err(|e| {
                let text = e.body_text();
                // serde's words for a struct with no fields: say it plainly, naming the
                // parameter (`unknown field `x`, there are no fields`).
                let message = match text.strip_suffix(", there are no fields") {
                    Some(head) => format!(
                        "this endpoint takes no query parameters: {}",
                        head.rsplit(": ").next().unwrap_or(head)
                    ),
                    None => text,
                };
                ApiError::bad_request("invalid_query", message)
            })
    }
}

/// `Path<T>` whose rejection is a JSON 400.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| Self(v))
            .map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))
    }
}

/// `Json<T>` whose rejection is a JSON 4xx: 415 `unsupported_media_type` for a body that is
/// not `application/json`, 400 `payload_too_large` over the body limit, 400 `invalid_json`
/// for anything else (malformed JSON, a wrong type, or an unknown field: every body type
/// denies unknown fields, and serde's message names the field).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| Self(v))
            .map_err(|e| match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => {
                    ApiError::bad_request("payload_too_large", e.body_text())
                }
                StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(
                    "this endpoint reads a JSON body: send it with \
                     `Content-Type: application/json`"
                        .into(),
                ),
                _ => ApiError::bad_request("invalid_json", e.body_text()),
            })
    }
}

/// The body of a route that reads none: an empty body passes, any other is refused with
/// 400 `unexpected_body` before the handler acts. A request never does something other than
/// what it says because a body it carried (`{"dry_run": true}`, a form) went unread: the
/// parameters of such a route go in the query string. Handlers list it last, after their
/// query, so a bad parameter is reported first.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBody;

impl<S: Send + Sync> FromRequest<S> for NoBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let refused = || {
            ApiError::bad_request(
                "unexpected_body",
                "this endpoint reads no request body, and nothing was done: its parameters go \
                 in the query string (e.g. `?dry_run=true`)",
            )
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        match declared {
            Some(0) if !req.headers().contains_key(header::TRANSFER_ENCODING) => Ok(Self),
            Some(_) => Err(refused()),
            // Chunked, or no length: read it (within the body limit) to see.
            None => match Bytes::from_request(req, state).await {
                Ok(bytes) if bytes.is_empty() => Ok(Self),
                _ => Err(refused()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;

    use super::*;

    #[tokio::test]
    async fn a_malformed_json_body_is_a_json_400() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code, reason = "only deserialized")]
        struct Body1 {
            n: u32,
        }
        let request = |body: &'static str| {
            Request::builder()
                .method("POST")
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap()
        };
        let e = ApiJson::<Body1>::from_request(request("{\"n\": \"x\"}"), &())
            .await
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.code(), "invalid_json");
        assert!(e.to_string().contains('n'), "{e}");
        let ok = ApiJson::<Body1>::from_request(request("{\"n\": 3}"), &()).await;
        assert_eq!(ok.unwrap().0.n, 3);
    }

    #[tokio::test]
    async fn a_parameter_on_a_route_without_any_is_named() {
        let mut parts = Request::builder()
            .uri("/healthz?feul=5")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let e = ApiQuery::<NoQuery>::from_request_parts(&mut parts, &())
            .await
            .unwrap_err();
        assert_eq!(e.code(), "invalid_query");
        assert_eq!(
            e.to_string(),
            "this endpoint takes no query parameters: unknown field `feul`"
        );
    }

    #[tokio::test]
    async fn no_body_passes_only_an_empty_body() {
        let request = |length: Option<&str>, body: &'static str| {
            let mut r = Request::builder().method("POST");
            if let Some(n) = length {
                r = r.header("content-length", n);
            }
            r.body(Body::from(body)).unwrap()
        };
        assert!(NoBody::from_request(request(None, ""), &()).await.is_ok());
        assert!(
            NoBody::from_request(request(Some("0"), ""), &())
                .await
                .is_ok()
        );
        for (length, body) in [(None, "dry_run=true"), (Some("2"), "{}"), (None, " ")] {
            let e = NoBody::from_request(request(length, body), &())
                .await
                .unwrap_err();
            assert_eq!(e.code(), "unexpected_body", "{length:?} {body:?}");
            assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        }
    }

    #[tokio::test]
    async fn a_json_route_refuses_another_content_type_with_415() {
        let request = Request::builder()
            .method("POST")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from("n=3"))
            .unwrap();
        let e = ApiJson::<serde_json::Value>::from_request(request, &())
            .await
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(e.code(), "unsupported_media_type");
    }

    #[test]
    fn every_error_maps_to_its_status_and_hides_internals() {
        let cases = [
            (ApiError::bad_request("invalid_query", "x"), 400),
            (ApiError::ForceRequiresReason, 400),
            (ApiError::NotFound("no".into()), 404),
            (ApiError::MethodNotAllowed, 405),
            (ApiError::PayloadTooLarge(1), 413),
            (ApiError::UnsupportedMediaType("x".into()), 415),
            (ApiError::UriTooLong(1), 414),
            (ApiError::TooManyOperations { running: 4 }, 429),
            (ApiError::RedisUnavailable("secret-host:6379".into()), 503),
            (ApiError::Timeout(Duration::from_secs(3)), 503),
            (ApiError::Internal("secret detail".into()), 500),
        ];
        for (e, status) in cases {
            assert_eq!(e.status().as_u16(), status, "{e:?}");
            let body = serde_json::to_string(&e.body()).unwrap();
            assert!(!body.contains("secret"), "{body}");
            assert!(body.contains(e.code()), "{body}");
        }
        assert_eq!(
            ApiError::from(RetryError::Queue(QueueError::Unavailable("x".into()))).code(),
            "redis_unavailable"
        );
        assert_eq!(
            ApiError::from(RetryError::ForceWithoutReason).code(),
            "force_requires_reason"
        );
        assert_eq!(
            ApiError::from(RetryError::Queue(QueueError::Redis("WRONGTYPE".into()))).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}

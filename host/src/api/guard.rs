//! `/api/v1/idempotency/{key}…`: the idempotency guard over HTTP (docs/guard.md).
//!
//! | request                         | answers                                                     |
//! |---------------------------------|-------------------------------------------------------------|
//! | `POST …/{key}/begin`            | 201 acquired · 409 in_progress (+ Retry-After) · 200 completed (+ Idempotent-Replayed) · 422 fingerprint_mismatch |
//! | `POST …/{key}/complete`         | 200 completed · 409 stale_token · 413 result_too_large       |
//! | `POST …/{key}/release`          | 200 absent · 409 stale_token                                |
//! | `GET …/{key}`                   | 200 the state                                               |
//! | `DELETE …/{key}`                | 200 `{"deleted": bool}` (an operator's action)              |
//!
//! The key is the path segment after percent-decoding (1..=255 bytes).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use std::sync::Arc;

use super::AppState;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody, ErrorDetail, NoBody, NoQuery};
use crate::guard::{Begin, Complete, Guard, GuardError, InvalidInput, Release, State as KeyState};

/// The header on a replayed result (as Stripe names it).
pub static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(show, delete))
        .routes(routes!(begin))
        .routes(routes!(complete))
        .routes(routes!(release))
}

impl From<GuardError> for ApiError {
    fn from(e: GuardError) -> Self {
        match e {
            GuardError::Invalid(invalid @ InvalidInput::ResultTooLarge { .. }) => {
                Self::ResultTooLarge(invalid.to_string())
            }
            GuardError::Invalid(invalid) => {
                let code = match invalid {
                    InvalidInput::Key(_) => "invalid_key",
                    InvalidInput::Fingerprint(_) => "invalid_fingerprint",
                    InvalidInput::Lease | InvalidInput::ResultTooLarge { .. } => "invalid_body",
                };
                Self::bad_request(code, invalid.to_string())
            }
            GuardError::Redis(q) => q.into(),
        }
    }
}

/// The key from the path, checked.
fn key(key: String) -> Result<String, ApiError> {
    Guard::check_key(&key).map_err(|e| ApiError::from(GuardError::from(e)))?;
    Ok(key)
}

/// A stored result (JSON text) as a JSON value; text that is somehow not JSON is returned
/// as a string rather than failing the request.
fn result_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// `201` of `begin`: the caller holds the key until `lease_until_ms`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Acquired {
    /// `acquired`.
    state: &'static str,
    key: String,
    /// Pass to `complete` or `release`.
    token: u64,
    lease_seconds: u64,
    lease_until_ms: u64,
}

/// `200` of `begin` (a replay, `Idempotent-Replayed: true`) and of `complete`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Completed {
    /// `completed`.
    state: &'static str,
    key: String,
    /// The stored result, as given to `complete`: any JSON value.
    result: Value,
    /// When it completed (epoch ms); only in `begin`'s replay.
    #[serde(skip_serializing_if = "Option::is_none")]
    completed_ms: Option<u64>,
}

/// `409` of `begin` (`in_progress`, with `Retry-After`) and of `complete`/`release`
/// (`stale_token`): the error body plus the key's state.
// The body of `ApiError::KeyConflict`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Conflict {
    pub error: ErrorDetail,
    /// The key's state: `in_progress`, `completed` or `absent`.
    pub state: &'static str,
    pub key: String,
    /// Only with `in_progress`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_until_ms: Option<u64>,
    /// Only with `in_progress` (also the `Retry-After` header).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}

/// `200` of `release`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Released {
    /// `absent`.
    state: &'static str,
    key: String,
    released: bool,
}

/// A field of `KeyView` only some states have: absent in the others (`None`), and `null`
/// where the record lacks it (`Some(None)`).
type InState<T> = Option<Option<T>>;

/// `GET …/{key}`: the key's state; the fields after `now_ms` depend on it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct KeyView {
    key: String,
    /// `absent`, `in_progress` or `completed`.
    state: &'static str,
    /// The latest owner's fencing token; `null` for a key never held (within the retention).
    token: Option<u64>,
    /// When the record last changed (epoch ms); `null` for a key never held.
    updated_ms: Option<u64>,
    now_ms: u64,
    /// `in_progress` and `completed` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    fingerprint: InState<String>,
    /// `in_progress` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>)]
    lease_until_ms: InState<u64>,
    /// `in_progress` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    lease_expired: Option<bool>,
    /// `completed` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>)]
    completed_ms: InState<u64>,
    /// `completed` only: the stored result (any JSON value).
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<Value>,
}

/// `DELETE …/{key}`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
struct Deleted {
    key: String,
    /// Whether the key existed.
    deleted: bool,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
struct BeginBody {
    /// What the request is (e.g. a hash of its arguments): the same key with another
    /// fingerprint is refused with 422. Empty when not given.
    fingerprint: String,
    /// The lease; `[guard] default_lease_seconds` when absent, capped at `max_lease_seconds`.
    lease_seconds: Option<u64>,
}

/// Claim a key before doing the work it names, or get the stored result of work already
/// done (role `operate`).
#[utoipa::path(
    post,
    path = "/api/v1/idempotency/{key}/begin",
    tag = "idempotency",
    params(("key" = String, Path, description = "The idempotency key (1..=255 bytes after percent-decoding)")),
    request_body = BeginBody,
    security(("bearerAuth" = [])),
    responses(
        (status = 201, description = "Acquired: do the work, then `complete` (or `release`)", body = Acquired),
        (status = 200, description = "Already completed: the stored result (`Idempotent-Replayed: true`)", body = Completed,
            headers(("Idempotent-Replayed" = String, description = "`true`"))),
        (status = 400, description = "A malformed key, fingerprint or body (`invalid_key`, `invalid_fingerprint`, `invalid_body`, `invalid_json`)", body = ErrorBody),
        (status = 409, description = "Another caller holds the key (`in_progress`, `Retry-After`)", body = Conflict,
            headers(("Retry-After" = u64, description = "Seconds until the lease ends"))),
        (status = 422, description = "The key was used with another fingerprint (`fingerprint_mismatch`)", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "The token's role is below `operate`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Redis unavailable or request timeout", body = ErrorBody),
        (status = 415, description = "The body is not `application/json` (`unsupported_media_type`)", body = ErrorBody),
    )
)]
async fn begin(
    State(guard): State<Arc<Guard>>,
    ApiPath(path): ApiPath<String>,
    _: ApiQuery<NoQuery>,
    ApiJson(body): ApiJson<BeginBody>,
) -> Result<Response, ApiError> {
    let key = key(path)?;
    match guard
        .begin(&key, &body.fingerprint, body.lease_seconds)
        .await?
    {
        Begin::Acquired {
            token,
            lease_until_ms,
            lease_seconds,
        } => Ok((
            StatusCode::CREATED,
            Json(Acquired {
                state: "acquired",
                key,
                token,
                lease_seconds,
                lease_until_ms,
            }),
        )
            .into_response()),
        Begin::InProgress {
            remaining_ms,
            lease_until_ms,
        } => {
            // Whole seconds, rounded up: a caller that waits this long finds the lease over.
            let retry_after = remaining_ms.div_ceil(1000).max(1);
            Err(ApiError::KeyConflict(Box::new(Conflict {
                error: ErrorDetail {
                    code: "in_progress",
                    message: format!(
                        "another caller holds the key {key:?}; its lease ends in {retry_after} s"
                    ),
                },
                state: "in_progress",
                key,
                lease_until_ms: Some(lease_until_ms),
                retry_after_seconds: Some(retry_after),
            })))
        }
        Begin::Completed {
            result,
            completed_ms,
        } => Ok((
            StatusCode::OK,
            [(
                IDEMPOTENT_REPLAYED.clone(),
                HeaderValue::from_static("true"),
            )],
            Json(Completed {
                state: "completed",
                key,
                result: result_value(&result),
                completed_ms: Some(completed_ms),
            }),
        )
            .into_response()),
        Begin::Mismatch => Err(ApiError::Unprocessable {
            code: "fingerprint_mismatch",
            message: format!(
                "the key {key:?} was used for a request with another fingerprint: use a new key"
            ),
        }),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CompleteBody {
    /// The token `begin` gave.
    token: u64,
    /// Any JSON value (`null` included). Documented as an object: schemathesis 4.32 cannot
    /// generate bodies from the any-value schema `{}` (an internal Hypothesis error), and an
    /// object is what results usually are; the server takes any JSON value.
    #[serde(default)]
    #[schema(value_type = Object)]
    result: Value,
}

/// Store the result of the work and mark the key completed (role `operate`).
#[utoipa::path(
    post,
    path = "/api/v1/idempotency/{key}/complete",
    tag = "idempotency",
    params(("key" = String, Path, description = "The idempotency key (1..=255 bytes after percent-decoding)")),
    request_body = CompleteBody,
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "Completed", body = Completed),
        (status = 400, description = "A malformed key or body (`invalid_key`, `invalid_body`, `invalid_json`)", body = ErrorBody),
        (status = 409, description = "The token no longer holds the key (`stale_token`)", body = Conflict),
        (status = 413, description = "The result is over `[guard] max_result_bytes` (`result_too_large`)", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "The token's role is below `operate`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Redis unavailable or request timeout", body = ErrorBody),
        (status = 415, description = "The body is not `application/json` (`unsupported_media_type`)", body = ErrorBody),
    )
)]
async fn complete(
    State(guard): State<Arc<Guard>>,
    ApiPath(path): ApiPath<String>,
    _: ApiQuery<NoQuery>,
    ApiJson(body): ApiJson<CompleteBody>,
) -> Result<Json<Completed>, ApiError> {
    let key = key(path)?;
    let text = body.result.to_string();
    match guard.complete(&key, body.token, &text).await? {
        Complete::Completed { result } => Ok(Json(Completed {
            state: "completed",
            result: result_value(&result),
            key,
            completed_ms: None,
        })),
        Complete::Stale { state } => Err(stale(&key, body.token, state)),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ReleaseBody {
    /// The token `begin` gave.
    token: u64,
}

/// Give the key up without a result (the work failed and may be tried again) (role
/// `operate`).
#[utoipa::path(
    post,
    path = "/api/v1/idempotency/{key}/release",
    tag = "idempotency",
    params(("key" = String, Path, description = "The idempotency key (1..=255 bytes after percent-decoding)")),
    request_body = ReleaseBody,
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "Released: the key is absent", body = Released),
        (status = 400, description = "A malformed key or body (`invalid_key`, `invalid_json`)", body = ErrorBody),
        (status = 409, description = "The token no longer holds the key (`stale_token`)", body = Conflict),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "The token's role is below `operate`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Redis unavailable or request timeout", body = ErrorBody),
        (status = 415, description = "The body is not `application/json` (`unsupported_media_type`)", body = ErrorBody),
    )
)]
async fn release(
    State(guard): State<Arc<Guard>>,
    ApiPath(path): ApiPath<String>,
    _: ApiQuery<NoQuery>,
    ApiJson(body): ApiJson<ReleaseBody>,
) -> Result<Json<Released>, ApiError> {
    let key = key(path)?;
    match guard.release(&key, body.token).await? {
        Release::Released => Ok(Json(Released {
            state: "absent",
            key,
            released: true,
        })),
        Release::Stale { state } => Err(stale(&key, body.token, state)),
    }
}

/// 409 `stale_token`: `token` does not own `key` (any more).
fn stale(key: &str, token: u64, state: KeyState) -> ApiError {
    ApiError::KeyConflict(Box::new(Conflict {
        error: ErrorDetail {
            code: "stale_token",
            message: format!(
                "token {token} does not hold the key {key:?} (it is {}): its lease was taken \
                 over, released, completed or forgotten",
                state.as_str()
            ),
        },
        state: state.as_str(),
        key: key.to_string(),
        lease_until_ms: None,
        retry_after_seconds: None,
    }))
}

/// A key's state (role `read`).
#[utoipa::path(
    get,
    path = "/api/v1/idempotency/{key}",
    tag = "idempotency",
    params(("key" = String, Path, description = "The idempotency key (1..=255 bytes after percent-decoding)")),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The key's state (`absent` for an unknown key)", body = KeyView),
        (status = 400, description = "A malformed key (`invalid_key`)", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "The token's role is below `read`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Redis unavailable or request timeout", body = ErrorBody),
    )
)]
async fn show(
    State(guard): State<Arc<Guard>>,
    ApiPath(path): ApiPath<String>,
    _: ApiQuery<NoQuery>,
    _: NoBody,
) -> Result<Json<KeyView>, ApiError> {
    let key = key(path)?;
    let r = guard.get(&key).await?;
    let in_progress = r.state == KeyState::InProgress;
    let completed = r.state == KeyState::Completed;
    Ok(Json(KeyView {
        state: r.state.as_str(),
        token: r.token,
        updated_ms: r.updated_ms,
        now_ms: r.now_ms,
        fingerprint: (in_progress || completed).then_some(r.fingerprint),
        lease_until_ms: in_progress.then_some(r.lease_until_ms),
        lease_expired: in_progress.then_some(r.lease_expired),
        completed_ms: completed.then_some(r.completed_ms),
        result: completed.then(|| r.result.as_deref().map_or(Value::Null, result_value)),
        key,
    }))
}

/// Forget a key whatever its state: an operator's action (role `admin`).
#[utoipa::path(
    delete,
    path = "/api/v1/idempotency/{key}",
    tag = "idempotency",
    params(("key" = String, Path, description = "The idempotency key (1..=255 bytes after percent-decoding)")),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "Deleted (or there was nothing to delete)", body = Deleted),
        (status = 400, description = "A malformed key (`invalid_key`)", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "The token's role is below `admin`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Redis unavailable or request timeout", body = ErrorBody),
    )
)]
async fn delete(
    State(guard): State<Arc<Guard>>,
    ApiPath(path): ApiPath<String>,
    _: ApiQuery<NoQuery>,
    _: NoBody,
) -> Result<Json<Deleted>, ApiError> {
    let key = key(path)?;
    let deleted = guard.delete(&key).await?;
    Ok(Json(Deleted { key, deleted }))
}

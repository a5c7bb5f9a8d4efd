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

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody, ErrorDetail, NoBody, NoQuery};
use crate::guard::{Begin, Complete, Guard, GuardError, InvalidInput, Release, State as KeyState};

/// The header on a replayed result (as Stripe names it).
pub static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/idempotency/{key}", get(show).delete(delete))
        .route("/api/v1/idempotency/{key}/begin", post(begin))
        .route("/api/v1/idempotency/{key}/complete", post(complete))
        .route("/api/v1/idempotency/{key}/release", post(release))
}

/// The guard over the app's Redis connection and `[guard]` settings.
fn guard(state: &AppState) -> Guard {
    Guard::new(state.service.backend().connection(), state.config.guard)
}

/// An answer that is not a plain `ApiError`: the same `{"error": {"code", "message"}}` body,
/// with statuses the shared type does not have (409, 422) and extra fields beside `error`.
#[derive(Debug)]
enum GuardReply {
    Api(ApiError),
    Refused {
        status: StatusCode,
        code: &'static str,
        message: String,
        extra: Value,
        retry_after: Option<u64>,
    },
}

impl From<ApiError> for GuardReply {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl From<GuardError> for GuardReply {
    fn from(e: GuardError) -> Self {
        match e {
            GuardError::Invalid(invalid @ InvalidInput::ResultTooLarge { .. }) => Self::Refused {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                code: "result_too_large",
                message: invalid.to_string(),
                extra: json!({}),
                retry_after: None,
            },
            GuardError::Invalid(invalid) => {
                let code = match invalid {
                    InvalidInput::Key(_) => "invalid_key",
                    InvalidInput::Fingerprint(_) => "invalid_fingerprint",
                    InvalidInput::Lease | InvalidInput::ResultTooLarge { .. } => "invalid_body",
                };
                Self::Api(ApiError::bad_request(code, invalid.to_string()))
            }
            GuardError::Redis(q) => Self::Api(q.into()),
        }
    }
}

impl IntoResponse for GuardReply {
    fn into_response(self) -> Response {
        match self {
            Self::Api(e) => e.into_response(),
            Self::Refused {
                status,
                code,
                message,
                extra,
                retry_after,
            } => {
                let mut body = json!({"error": {"code": code, "message": message}});
                if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
                    body.extend(extra);
                }
                let mut response = (status, Json(body)).into_response();
                if let Some(seconds) = retry_after {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
                }
                response
            }
        }
    }
}

/// The key from the path, checked.
fn key(key: String) -> Result<String, GuardReply> {
    Guard::check_key(&key).map_err(|e| GuardReply::from(GuardError::from(e)))?;
    Ok(key)
}

/// A stored result (JSON text) as a JSON value; text that is somehow not JSON is returned
/// as a string rather than failing the request.
fn result_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// `201` of `begin`: the caller holds the key until `lease_until_ms`.
#[derive(Debug, utoipa::ToSchema)]
#[allow(
    dead_code,
    reason = "schema only: describes the JSON the guard handlers build"
)]
struct Acquired {
    /// `acquired`.
    state: String,
    key: String,
    /// Pass to `complete` or `release`.
    token: u64,
    lease_seconds: u64,
    lease_until_ms: u64,
}

/// `200` of `begin` (a replay, `Idempotent-Replayed: true`) and of `complete`.
#[derive(Debug, utoipa::ToSchema)]
#[allow(
    dead_code,
    reason = "schema only: describes the JSON the guard handlers build"
)]
struct Completed {
    /// `completed`.
    state: String,
    key: String,
    /// The stored result, as given to `complete`: any JSON value.
    result: Value,
    /// When it completed (epoch ms); only in `begin`'s replay.
    completed_ms: Option<u64>,
}

/// `409` of `begin` (`in_progress`, with `Retry-After`) and of `complete`/`release`
/// (`stale_token`): the error body plus the key's state.
#[derive(Debug, utoipa::ToSchema)]
#[allow(
    dead_code,
    reason = "schema only: describes the JSON the guard handlers build"
)]
struct Conflict {
    error: ErrorDetail,
    /// The key's state: `in_progress`, `completed` or `absent`.
    state: String,
    key: String,
    /// Only with `in_progress`.
    lease_until_ms: Option<u64>,
    /// Only with `in_progress` (also the `Retry-After` header).
    retry_after_seconds: Option<u64>,
}

/// `200` of `release`.
#[derive(Debug, utoipa::ToSchema)]
#[allow(
    dead_code,
    reason = "schema only: describes the JSON the guard handlers build"
)]
struct Released {
    /// `absent`.
    state: String,
    key: String,
    released: bool,
}

/// `GET …/{key}`: the key's state; the fields after `now_ms` depend on it.
#[derive(Debug, utoipa::ToSchema)]
#[allow(
    dead_code,
    reason = "schema only: describes the JSON the guard handlers build"
)]
struct KeyView {
    key: String,
    /// `absent`, `in_progress` or `completed`.
    state: String,
    /// The latest owner's fencing token; `null` for a key never held (within the retention).
    token: Option<u64>,
    /// When the record last changed (epoch ms); `null` for a key never held.
    updated_ms: Option<u64>,
    now_ms: u64,
    /// `in_progress` and `completed` only.
    fingerprint: Option<String>,
    /// `in_progress` only.
    lease_until_ms: Option<u64>,
    /// `in_progress` only.
    lease_expired: Option<bool>,
    /// `completed` only.
    completed_ms: Option<u64>,
    /// `completed` only: the stored result (any JSON value).
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
    State(state): State<AppState>,
    ApiPath(path): ApiPath<String>,
    _: ApiQuery<NoQuery>,
    ApiJson(body): ApiJson<BeginBody>,
) -> Result<Response, GuardReply> {
    let key = key(path)?;
    match guard(&state)
        .begin(&key, &body.fingerprint, body.lease_seconds)
        .await?
    {
        Begin::Acquired {
            token,
            lease_until_ms,
            lease_seconds,
        } => Ok((
            StatusCode::CREATED,
            Json(json!({
                "state": "acquired",
                "key": key,
                "token": token,
                "lease_seconds": lease_seconds,
                "lease_until_ms": lease_until_ms,
            })),
        )
            .into_response()),
        Begin::InProgress {
            remaining_ms,
            lease_until_ms,
        } => {
            // Whole seconds, rounded up: a caller that waits this long finds the lease over.
            let retry_after = remaining_ms.div_ceil(1000).max(1);
            Err(GuardReply::Refused {
                status: StatusCode::CONFLICT,
                code: "in_progress",
                message: format!(
                    "another caller holds the key {key:?}; its lease ends in {retry_after} s"
                ),
                extra: json!({
                    "state": "in_progress",
                    "key": key,
                    "lease_until_ms": lease_until_ms,
                    "retry_after_seconds": retry_after,
                }),
                retry_after: Some(retry_after),
            })
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
            Json(json!({
                "state": "completed",
                "key": key,
                "result": result_value(&result),
                "completed_ms": completed_ms,
            })),
        )
            .into_response()),
        Begin::Mismatch => Err(GuardReply::Refused {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "fingerprint_mismatch",
            message: format!(
                "the key {key:?} was used for a request with another fingerprint: use a new key"
            ),
            extra: json!({}),
            retry_after: None,
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
    State(state): State<AppState>,
    ApiPath(path): ApiPath<String>,
    _: ApiQuery<NoQuery>,
    ApiJson(body): ApiJson<CompleteBody>,
) -> Result<Json<Value>, GuardReply> {
    let key = key(path)?;
    let text = body.result.to_string();
    match guard(&state).complete(&key, body.token, &text).await? {
        Complete::Completed { result } => Ok(Json(json!({
            "state": "completed",
            "key": key,
            "result": result_value(&result),
        }))),
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
    State(state): State<AppState>,
    ApiPath(path): ApiPath<String>,
    _: ApiQuery<NoQuery>,
    ApiJson(body): ApiJson<ReleaseBody>,
) -> Result<Json<Value>, GuardReply> {
    let key = key(path)?;
    match guard(&state).release(&key, body.token).await? {
        Release::Released => Ok(Json(
            json!({"state": "absent", "key": key, "released": true}),
        )),
        Release::Stale { state } => Err(stale(&key, body.token, state)),
    }
}

/// 409 `stale_token`: `token` does not own `key` (any more).
fn stale(key: &str, token: u64, state: KeyState) -> GuardReply {
    GuardReply::Refused {
        status: StatusCode::CONFLICT,
        code: "stale_token",
        message: format!(
            "token {token} does not hold the key {key:?} (it is {}): its lease was taken over, \
             released, completed or forgotten",
            state.as_str()
        ),
        extra: json!({"state": state.as_str(), "key": key}),
        retry_after: None,
    }
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
    State(state): State<AppState>,
    ApiPath(path): ApiPath<String>,
    _: ApiQuery<NoQuery>,
    _: NoBody,
) -> Result<Json<Value>, GuardReply> {
    let key = key(path)?;
    let r = guard(&state).get(&key).await?;
    let mut body = json!({
        "key": key,
        "state": r.state.as_str(),
        "token": r.token,
        "updated_ms": r.updated_ms,
        "now_ms": r.now_ms,
    });
    if let Some(map) = body.as_object_mut() {
        match r.state {
            KeyState::Absent => {}
            KeyState::InProgress => {
                map.insert("fingerprint".into(), json!(r.fingerprint));
                map.insert("lease_until_ms".into(), json!(r.lease_until_ms));
                map.insert("lease_expired".into(), json!(r.lease_expired));
            }
            KeyState::Completed => {
                map.insert("fingerprint".into(), json!(r.fingerprint));
                map.insert("completed_ms".into(), json!(r.completed_ms));
                let result = r.result.as_deref().map_or(Value::Null, result_value);
                map.insert("result".into(), result);
            }
        }
    }
    Ok(Json(body))
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
    State(state): State<AppState>,
    ApiPath(path): ApiPath<String>,
    _: ApiQuery<NoQuery>,
    _: NoBody,
) -> Result<Json<Deleted>, GuardReply> {
    let key = key(path)?;
    let deleted = guard(&state).delete(&key).await?;
    Ok(Json(Deleted { key, deleted }))
}

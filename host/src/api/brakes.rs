//! `/api/v1/breakers*` and `/api/v1/auto-retry`: the circuit breakers (listed with role
//! `read`; opened, closed or reset by hand with role `admin` and a reason) and the auto-retry
//! sweeper's state (docs/auto-retry.md).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Actor;
use super::error::{ApiJson, ApiPath, ApiQuery, ErrorBody, NoBody, NoQuery};
use super::{ApiError, AppState};
use crate::brake::state::{self, BreakerView, ManualOp};
use crate::brake::{BreakerConfig, split_key};
use crate::clock::now_ms;
use crate::registry::Pattern;
use crate::retry::sweeper::{self, AutoRetryStatus};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(breakers))
        .routes(routes!(change))
        .routes(routes!(auto_retry))
}

/// Longest reason accepted.
const MAX_REASON_BYTES: usize = 1024;

/// `GET /api/v1/breakers`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BreakerList {
    /// Every breaker that has seen an outcome or a hand, by key.
    pub breakers: Vec<BreakerView>,
}

/// Every circuit breaker, shared by all instances: its state, failure rate over its window,
/// when it opened and when it lets probes through.
#[utoipa::path(
    get,
    path = "/api/v1/breakers",
    tag = "auto-retry",
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The breakers", body = BreakerList),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role too low (needs `read`)", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
    )
)]
pub async fn breakers(
    State(state): State<AppState>,
    _: ApiQuery<NoQuery>,
    _: NoBody,
) -> Result<Json<BreakerList>, ApiError> {
    let mut conn = state.backend.connection();
    Ok(Json(BreakerList {
        breakers: state::list(&mut conn, now_ms()).await?,
    }))
}

/// The path of a change by hand.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ChangePath {
    /// `<pattern>|<failure type>` (URL-encode `|` as `%7C`).
    pub key: String,
    /// `open`, `close` or `reset`.
    pub op: String,
}

/// The body of a change by hand.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRequest {
    /// Why, for the audit trail (required).
    pub reason: String,
}

/// A breaker after a change by hand.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BreakerChanged {
    pub key: String,
    /// `open` or `closed`.
    pub state: String,
}

/// Opens a breaker by hand (every retry of its key is held, `circuit_open`, until it is
/// closed by hand; `force` with a reason still gets through), closes it (retries go again,
/// its window starts empty) or resets it (forgotten). Audited with the reason.
#[utoipa::path(
    post,
    path = "/api/v1/breakers/{key}/{op}",
    tag = "auto-retry",
    params(ChangePath),
    request_body = ChangeRequest,
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "Changed", body = BreakerChanged),
        (status = 400, description = "Not a breaker key, an unknown op, or no reason", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role too low (needs `admin`)", body = ErrorBody),
        (status = 415, description = "The body is not `application/json` (`unsupported_media_type`)", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
    )
)]
pub async fn change(
    State(state): State<AppState>,
    Actor(actor): Actor,
    ApiPath(p): ApiPath<ChangePath>,
    _: ApiQuery<NoQuery>,
    ApiJson(body): ApiJson<ChangeRequest>,
) -> Result<Json<BreakerChanged>, ApiError> {
    let op = ManualOp::parse(&p.op).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_path",
            format!("the op must be open, close or reset, not {:?}", p.op),
        )
    })?;
    let reason = checked_reason(&body.reason)?;
    let key = checked_key(&p.key)?;
    let config = breaker_config(&state, &key).await?;
    let mut conn = state.backend.connection();
    let after = state::manual(&mut conn, &key, op, &config, &actor, &reason, now_ms()).await?;
    crate::metrics::global().breaker_transition(match op {
        ManualOp::Open => "opened",
        ManualOp::Close | ManualOp::Reset => "closed",
    });
    tracing::warn!(breaker = %key, op = op.as_str(), %actor, %reason, "circuit breaker changed by hand");
    Ok(Json(BreakerChanged { key, state: after }))
}

/// A key as `<valid pattern>|<failure type>`, the pattern in its canonical form.
fn checked_key(key: &str) -> Result<String, ApiError> {
    let bad = |why: String| ApiError::bad_request("invalid_path", why);
    let Some((pattern, failure_type)) = split_key(key) else {
        return Err(bad(format!(
            "a breaker key is <pattern>|<failure type>, not {key:?}"
        )));
    };
    let pattern = Pattern::parse(pattern).map_err(bad)?.to_string();
    let failure_type =
        super::jobs::failure_type(Some(failure_type.to_string()))?.unwrap_or_default();
    Ok(crate::brake::breaker_key(&pattern, &failure_type))
}

fn checked_reason(reason: &str) -> Result<String, ApiError> {
    let reason = reason.trim();
    if reason.is_empty() || reason.len() > MAX_REASON_BYTES || reason.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(
            "invalid_body",
            format!(
                "a reason is required: 1 to {MAX_REASON_BYTES} bytes without control characters"
            ),
        ));
    }
    Ok(reason.to_string())
}

/// The breaker settings of the key's pattern (its binding's, else the defaults).
async fn breaker_config(state: &AppState, key: &str) -> Result<BreakerConfig, ApiError> {
    let (pattern, _) = split_key(key).unwrap_or_default();
    let Some(registry) = state.service.registry() else {
        return Ok(BreakerConfig::default());
    };
    let snapshot = registry.store().bindings().await?;
    Ok(snapshot
        .bindings
        .iter()
        .find(|b| b.pattern == pattern)
        .and_then(|b| b.spec.breaker)
        .unwrap_or_default())
}

/// The auto-retry sweeper: whether this instance runs one, which instance leads, how many
/// failed jobs wait for their due time (and how many are due now), the next due time, the
/// jobs parked until the bindings change, and this instance's lag (retry time → requeue).
#[utoipa::path(
    get,
    path = "/api/v1/auto-retry",
    tag = "auto-retry",
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The sweeper's state", body = AutoRetryStatus),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role too low (needs `read`)", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
    )
)]
pub async fn auto_retry(
    State(state): State<AppState>,
    _: ApiQuery<NoQuery>,
    _: NoBody,
) -> Result<Json<AutoRetryStatus>, ApiError> {
    let mut conn = state.backend.connection();
    let status = sweeper::status(
        &mut conn,
        state.config.auto_retry.enabled,
        state.service.table().any_auto_retry(),
        &state.sweeper,
        now_ms(),
    )
    .await?;
    Ok(Json(status))
}

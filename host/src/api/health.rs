//! `/healthz` (the process answers) and `/readyz` (Redis answers, whether what it holds
//! survives a restart and is never evicted, and whether the audit trail keeps up).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiQuery, ErrorDetail, NoBody, NoQuery};
use crate::config::redact_url;
use crate::queue::rq::RedisStatus;

/// How long `/readyz` waits for Redis.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// What `/healthz` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Healthz {
    /// Always `ok`.
    status: &'static str,
}

/// What `/readyz` answers when Redis answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Ready {
    /// `ready`, or `degraded` when the audit trail lags (retries still work).
    status: &'static str,
    /// Whether the audit trail keeps up; `null` when it cannot be read.
    audit: Option<crate::audit::AuditHealth>,
    redis: ReadyRedis,
    /// Durability risks of this Redis and audit problems, in sentences.
    warnings: Vec<String>,
}

/// The Redis `/readyz` checked.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ReadyRedis {
    /// The Redis URL, password redacted.
    url: String,
    /// The server connected to now (`host:port`); with Sentinel, the primary the sentinels
    /// named and its master name.
    server: String,
    ping_ms: u64,
    /// `yes`, `no` or `unknown` (CONFIG GET refused).
    appendonly: String,
    appendfsync: String,
    maxmemory_policy: String,
}

/// What `/readyz` answers when Redis does not: the error body plus `status` and `redis`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct NotReady {
    error: ErrorDetail,
    /// Always `not_ready`.
    status: &'static str,
    /// `{"url": …}`, the password redacted.
    #[schema(value_type = Object)]
    redis: RedisUrl,
}

/// The `redis` of `NotReady`.
#[derive(Debug, Serialize)]
struct RedisUrl {
    url: String,
}

/// Liveness: the process answers (open, no token).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "Alive", body = Healthz))
)]
async fn healthz(_: ApiQuery<NoQuery>, _: NoBody) -> Json<Healthz> {
    Json(Healthz { status: "ok" })
}

/// Readiness: Redis answers within 3 s; reports its durability settings and the audit
/// trail's health (open, no token).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Ready (or degraded: see `warnings`)", body = Ready),
        (status = 503, description = "Redis unavailable (`redis_unavailable`) or request timeout", body = NotReady),
    )
)]
async fn readyz(State(state): State<AppState>, _: ApiQuery<NoQuery>, _: NoBody) -> Response {
    let redis_url = redact_url(&state.config.redis.url);
    let status = match tokio::time::timeout(READY_TIMEOUT, state.backend.redis_status()).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return not_ready(redis_url, ApiError::from(e)),
        Err(_) => {
            return not_ready(
                redis_url,
                ApiError::RedisUnavailable(format!("no answer within {READY_TIMEOUT:?}")),
            );
        }
    };
    let mut warnings = durability_warnings(&status);
    // A degraded audit does not stop retries (their records wait in the outbox), so the
    // instance stays ready; the status and a warning say so.
    let audit = super::jobs::audit_health(&state.audit).await;
    let degraded = audit.as_ref().is_some_and(|a| a.status == "degraded");
    if degraded {
        warnings.push(format!(
            "audit degraded: {}",
            audit
                .as_ref()
                .and_then(|a| a.reason.as_deref())
                .unwrap_or("unknown")
        ));
    }
    // A bindings table that failed to build: the last good one judges, but not the newest.
    if let Some(error) = state.service.registry().and_then(|r| r.status().error) {
        warnings.push(format!("policy bindings: {error}"));
    }
    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
    Json(Ready {
        status: if degraded { "degraded" } else { "ready" },
        audit,
        redis: ReadyRedis {
            url: redis_url,
            server: state.backend.connection().describe(),
            ping_ms: status.ping_ms,
            appendonly: show(&status.appendonly),
            appendfsync: show(&status.appendfsync),
            maxmemory_policy: show(&status.maxmemory_policy),
        },
        warnings,
    })
    .into_response()
}

/// 503 with the error and the Redis `/readyz` tried (no `Retry-After`: a probe asks again
/// on its own schedule).
fn not_ready(redis_url: String, e: ApiError) -> Response {
    e.log();
    let body = NotReady {
        error: e.detail(),
        status: "not_ready",
        redis: RedisUrl { url: redis_url },
    };
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// Warnings unless Redis keeps what it acknowledged across a restart (`appendonly yes`) and
/// never evicts keys (`noeviction`). Settings that could not be read are reported as unknown.
pub fn durability_warnings(s: &RedisStatus) -> Vec<String> {
    let mut warnings = Vec::new();
    match s.appendonly.as_deref() {
        Some("yes") => {
            if s.appendfsync.as_deref() == Some("no") {
                warnings.push(
                    "appendfsync is `no`: the OS decides when the append-only file reaches the \
                     disk, so a crash can lose recent retries and audit records; `everysec` or \
                     `always` is safer"
                        .to_string(),
                );
            }
        }
        Some(other) => warnings.push(format!(
            "appendonly is `{other}`: a Redis restart loses what was written since the last \
             snapshot (failed jobs, retry attempts, audit records not yet drained); set \
             `appendonly yes`"
        )),
        None => warnings.push(
            "appendonly is unknown (CONFIG GET is not allowed here): make sure this Redis \
             persists with the append-only file"
                .to_string(),
        ),
    }
    match s.maxmemory_policy.as_deref() {
        Some("noeviction") => {}
        Some(other) => warnings.push(format!(
            "maxmemory-policy is `{other}`: under memory pressure Redis may evict job hashes, \
             retry state or the audit outbox; set `noeviction`"
        )),
        None => warnings.push(
            "maxmemory-policy is unknown (CONFIG GET is not allowed here): make sure it is \
             `noeviction`"
                .to_string(),
        ),
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(aof: Option<&str>, fsync: Option<&str>, policy: Option<&str>) -> RedisStatus {
        RedisStatus {
            ping_ms: 0,
            appendonly: aof.map(str::to_string),
            appendfsync: fsync.map(str::to_string),
            maxmemory_policy: policy.map(str::to_string),
        }
    }

    #[test]
    fn durable_redis_has_no_warnings() {
        let w = durability_warnings(&status(Some("yes"), Some("everysec"), Some("noeviction")));
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn each_risk_is_named() {
        let w = durability_warnings(&status(Some("no"), Some("everysec"), Some("allkeys-lru")));
        assert_eq!(w.len(), 2);
        assert!(w[0].contains("appendonly"));
        assert!(w[1].contains("allkeys-lru"));
        let w = durability_warnings(&status(None, None, None));
        assert!(w.iter().all(|w| w.contains("unknown")), "{w:?}");
        let w = durability_warnings(&status(Some("yes"), Some("no"), Some("noeviction")));
        assert!(w[0].contains("appendfsync"));
    }
}

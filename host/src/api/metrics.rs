//! `GET /metrics`: Prometheus text format. The process's counters and histograms
//! (`crate::metrics`) plus gauges read from Redis at scrape time: jobs per queue and
//! registry, failed jobs per failure type (classified jobs, at most `MAX_CLASSIFIED`, cached
//! for `CLASSIFIED_TTL`), and the audit backlog.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiQuery, NoBody, NoQuery};
use crate::metrics::{escape, global, header};

/// Failed jobs classified per scrape, at most.
const MAX_CLASSIFIED: usize = 10_000;
/// How long the per-failure-type counts are reused.
const CLASSIFIED_TTL: Duration = Duration::from_secs(30);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(metrics))
}

/// Prometheus metrics in the text exposition format 0.0.4 (open unless `[auth]
/// protect_metrics`, then role `read`).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    security((), ("bearerAuth" = [])),
    responses(
        (status = 200, description = "The metrics", body = String,
            content_type = "text/plain; version=0.0.4; charset=utf-8"),
        (status = 401, description = "No valid bearer token (only with `protect_metrics`)", body = super::error::ErrorBody),
        (status = 403, description = "The token's role is below `read` (only with `protect_metrics`)", body = super::error::ErrorBody),
    )
)]
async fn metrics(State(state): State<AppState>, _: ApiQuery<NoQuery>, _: NoBody) -> Response {
    let mut out = String::with_capacity(16 << 10);
    global().render(&mut out);
    gauges(&state, &mut out).await;
    let mut response = out.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Failed jobs per failure type, and when they were counted.
type ByType = Option<(Instant, Vec<(String, u64)>)>;

/// Shared by scrapes for `CLASSIFIED_TTL`.
static BY_TYPE: std::sync::Mutex<ByType> = std::sync::Mutex::new(None);

async fn gauges(state: &AppState, out: &mut String) {
    let up = match crate::queue::QueueBackend::counts(&state.backend).await {
        Ok(queues) => {
            header(
                out,
                "retryguard_rq_jobs",
                "gauge",
                "RQ jobs per queue and state (queued, started, failed, finished, deferred, scheduled).",
            );
            for q in &queues {
                let name = escape(&q.queue);
                for (st, n) in [
                    ("queued", q.queued),
                    ("started", q.started),
                    ("failed", q.failed),
                    ("finished", q.finished),
                    ("deferred", q.deferred),
                    ("scheduled", q.scheduled),
                ] {
                    let _ = writeln!(
                        out,
                        "retryguard_rq_jobs{{queue=\"{name}\",state=\"{st}\"}} {n}"
                    );
                }
            }
            1
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read queue counts");
            0
        }
    };
    header(
        out,
        "retryguard_redis_up",
        "gauge",
        "1 when Redis answered this scrape.",
    );
    let _ = writeln!(out, "retryguard_redis_up {up}");

    let cached = BY_TYPE
        .lock()
        .ok()
        .and_then(|c| c.clone())
        .filter(|(at, _)| at.elapsed() < CLASSIFIED_TTL);
    let by_type = match cached {
        Some((_, v)) => Some(v),
        None => match state.service.stats(MAX_CLASSIFIED).await {
            Ok(s) => {
                let v: Vec<(String, u64)> = s.failed_by_type.into_iter().collect();
                if let Ok(mut c) = BY_TYPE.lock() {
                    *c = Some((Instant::now(), v.clone()));
                }
                Some(v)
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics: cannot classify failed jobs");
                None
            }
        },
    };
    if let Some(by_type) = by_type {
        header(
            out,
            "retryguard_failed_jobs_by_type",
            "gauge",
            "Failed jobs per failure type, as the bound policy classifies them (the first 10,000 failed jobs; refreshed every 30 s).",
        );
        for (t, n) in by_type {
            let _ = writeln!(
                out,
                "retryguard_failed_jobs_by_type{{failure_type=\"{}\"}} {n}",
                escape(&t)
            );
        }
    }

    if let Ok(h) = state.audit.health().await {
        header(
            out,
            "retryguard_audit_backlog",
            "gauge",
            "Audit records waiting in the Redis outbox for the parquet writer.",
        );
        let _ = writeln!(out, "retryguard_audit_backlog {}", h.backlog);
        header(
            out,
            "retryguard_audit_oldest_pending_seconds",
            "gauge",
            "Age of the oldest audit record not yet in parquet (0 when none).",
        );
        let _ = writeln!(
            out,
            "retryguard_audit_oldest_pending_seconds {}",
            h.oldest_pending_ms.unwrap_or(0) as f64 / 1000.0
        );
        header(
            out,
            "retryguard_audit_degraded",
            "gauge",
            "1 when the audit writer reports an error or falls behind.",
        );
        let _ = writeln!(
            out,
            "retryguard_audit_degraded {}",
            u8::from(h.status == "degraded")
        );
    }
}

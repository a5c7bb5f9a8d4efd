//! `GET /metrics`: Prometheus text format. The process's counters and histograms
//! (`crate::metrics`) plus gauges read from Redis at scrape time: jobs per queue and
//! registry, failed jobs per queue and failure type and the index's state (from the failure
//! index, `crate::triage`: nothing is classified at scrape time), and the audit backlog.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiQuery, NoBody, NoQuery};
use crate::metrics::{escape, global, header};

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
async fn gauges(state: &AppState, out: &mut String) {
    let stats = match crate::triage::read::stats(&state.backend).await {
        Ok(stats) => Some(stats),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read the queue and index counts");
            None
        }
    };
    if let Some(stats) = &stats {
        header(
            out,
            "retryguard_rq_jobs",
            "gauge",
            "RQ jobs per queue and state (queued, started, failed, finished, deferred, scheduled).",
        );
        for q in &stats.queues {
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
        header(
            out,
            "retryguard_failed_jobs_by_type",
            "gauge",
            "Failed jobs per queue and failure type, from the failure index (each group classified by its bound policy).",
        );
        for ((q, t), n) in &stats.counts.by_queue_and_type {
            let _ = writeln!(
                out,
                "retryguard_failed_jobs_by_type{{queue=\"{}\",failure_type=\"{}\"}} {n}",
                escape(q),
                escape(t)
            );
        }
        header(
            out,
            "retryguard_failure_index_built",
            "gauge",
            "1 once the failure index has completed its first full pass over every queue.",
        );
        let _ = writeln!(
            out,
            "retryguard_failure_index_built {}",
            u8::from(stats.index.built)
        );
        if let Some(at) = stats.index.last_pass_ms {
            header(
                out,
                "retryguard_failure_index_last_pass_age_seconds",
                "gauge",
                "Seconds since the reconciler (on whichever instance holds its lease) ended a pass.",
            );
            let age = crate::clock::now_ms().saturating_sub(at) as f64 / 1000.0;
            let _ = writeln!(out, "retryguard_failure_index_last_pass_age_seconds {age}");
        }
    }
    header(
        out,
        "retryguard_redis_up",
        "gauge",
        "1 when Redis answered this scrape.",
    );
    let _ = writeln!(out, "retryguard_redis_up {}", u8::from(stats.is_some()));

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

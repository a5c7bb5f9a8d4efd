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
    brakes(state, out).await;

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

/// The breakers' states and the auto-retry sweeper's backlog, read from Redis (every
/// instance reports the same shared state).
async fn brakes(state: &AppState, out: &mut String) {
    let mut conn = state.backend.connection();
    let now = crate::clock::now_ms();
    match crate::brake::state::list(&mut conn, now).await {
        Ok(breakers) => {
            header(
                out,
                "retryguard_breaker_state",
                "gauge",
                "1 for the state each circuit breaker is in (closed, open, half_open), 0 for the others.",
            );
            for b in &breakers {
                for st in ["closed", "open", "half_open"] {
                    let _ = writeln!(
                        out,
                        "retryguard_breaker_state{{breaker=\"{}\",state=\"{st}\"}} {}",
                        escape(&b.key),
                        u8::from(b.state == st)
                    );
                }
            }
            header(
                out,
                "retryguard_breaker_open_seconds",
                "gauge",
                "Seconds since each circuit breaker that is not closed opened (0 when closed).",
            );
            header(
                out,
                "retryguard_breaker_failure_rate",
                "gauge",
                "Failed-again outcomes over all outcomes in each breaker's window.",
            );
            for b in &breakers {
                let open = b
                    .opened_at_ms
                    .map_or(0.0, |t| now.saturating_sub(t) as f64 / 1000.0);
                let key = escape(&b.key);
                let _ = writeln!(
                    out,
                    "retryguard_breaker_open_seconds{{breaker=\"{key}\"}} {open}"
                );
                let _ = writeln!(
                    out,
                    "retryguard_breaker_failure_rate{{breaker=\"{key}\"}} {}",
                    b.failure_rate
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read the circuit breakers"),
    }
    match crate::retry::sweeper::status(
        &mut conn,
        state.config.auto_retry.enabled,
        state.service.table().any_auto_retry(),
        &state.sweeper,
        now,
    )
    .await
    {
        Ok(s) => {
            for (name, help, v) in [
                (
                    "retryguard_auto_retry_due",
                    "Failed jobs in the auto-retry due-time index.",
                    s.due,
                ),
                (
                    "retryguard_auto_retry_due_now",
                    "Of those, the jobs whose due time has passed (a backlog here is lag).",
                    s.due_now,
                ),
                (
                    "retryguard_auto_retry_parked",
                    "Failed jobs the sweeper has nothing to do for until the bindings change.",
                    s.parked,
                ),
            ] {
                header(out, name, "gauge", help);
                let _ = writeln!(out, "{name} {v}");
            }
            header(
                out,
                "retryguard_auto_retry_overdue_seconds",
                "gauge",
                "How long the earliest due job has been waiting past its due time (0 when none, or when no sweeper runs or no binding has auto_retry).",
            );
            // Without a sweeper at work the index only waits: nothing is late.
            let overdue = s
                .next_due_ms
                .filter(|_| s.enabled && s.any_binding_opted_in)
                .map_or(0.0, |t| now.saturating_sub(t) as f64 / 1000.0);
            let _ = writeln!(out, "retryguard_auto_retry_overdue_seconds {overdue}");
            header(
                out,
                "retryguard_auto_retry_leader",
                "gauge",
                "1 when this instance's sweeper holds the auto-retry lease.",
            );
            let _ = writeln!(
                out,
                "retryguard_auto_retry_leader {}",
                u8::from(s.this_instance_leads)
            );
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read the auto-retry state"),
    }
}

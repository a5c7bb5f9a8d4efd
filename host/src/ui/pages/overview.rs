//! `/ui/`: the overview. Failed jobs by queue and failure type and the top groups (from the
//! failure index: the cost does not grow with the failed jobs), today's five retry metrics
//! (from the audit trail), a 24-hour chart of failures and retries, and health.

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use super::groups::GroupRow;
use super::{Chrome, html};
use crate::triage::read::{self, GroupQuery, GroupSort};
use crate::ui::format::{self, thousands};
use crate::ui::svg::{self, HourBar};
use crate::ui::{UiError, UiState, Viewer};

/// One row of a count table.
pub struct CountRow {
    pub label: String,
    pub count: String,
    pub bar: String,
    /// Where the row links (the jobs or groups it counts).
    pub href: String,
}

/// A circuit breaker as the overview lists it.
pub struct BreakerRow {
    pub key: String,
    pub state: String,
    pub failure_rate: String,
    pub outcomes: String,
    /// When it lets probes through, or why it waits.
    pub next: String,
}

/// One of the five retry metrics.
pub struct Metric {
    pub name: &'static str,
    pub value: String,
    pub hint: &'static str,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    chrome: Chrome,
    total: String,
    index_built: bool,
    by_queue: Vec<CountRow>,
    by_type: Vec<CountRow>,
    metrics: Vec<Metric>,
    metrics_note: Option<String>,
    chart: String,
    /// The top 10 groups.
    rows: Vec<GroupRow>,
    warnings: Vec<String>,
    audit_status: String,
    audit_backlog: String,
    redis_ping: String,
    /// The auto-retry sweeper, in a line.
    auto_retry: String,
    /// The breakers, those not closed first (at most 10).
    breakers: Vec<BreakerRow>,
}

fn count_rows(
    counts: std::collections::BTreeMap<String, u64>,
    total: u64,
    link: impl Fn(&str) -> String,
    label: impl Fn(&str) -> String,
) -> Vec<CountRow> {
    let mut rows: Vec<(String, u64)> = counts.into_iter().filter(|(_, n)| *n > 0).collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows.into_iter()
        .map(|(key, n)| CountRow {
            label: label(&key),
            count: thousands(n),
            bar: svg::share(n, total, 120),
            href: link(&key),
        })
        .collect()
}

pub async fn page(State(ui): UiState, viewer: Viewer) -> Result<Response, UiError> {
    let now = crate::clock::now_ms();
    let app = &ui.app;
    let stats = read::stats(&app.backend)
        .await
        .map_err(crate::api::ApiError::from)?;
    let mut conn = app.backend.connection();
    let failures = read::hourly(&mut conn, now).await?;
    let top = read::groups(
        &mut conn,
        &GroupQuery {
            sort: GroupSort::Count,
            limit: 10,
            ..GroupQuery::default()
        },
    )
    .await?;
    let top = GroupRow::page(&mut conn, top.groups, now).await?;
    let total = stats.counts.total();
    let by_queue = count_rows(
        stats.counts.by_queue(),
        total,
        |q| format!("/ui/groups{}", format::query(&[("queue", q)])),
        str::to_string,
    );
    let by_type = count_rows(
        stats.counts.by_type(),
        total,
        |t| format!("/ui/groups{}", format::query(&[("failure_type", t)])),
        |t| format!("{} ({t})", format::failure_label(t)),
    );

    let (metrics, metrics_note) = match app.analytics.retry_stats(now).await {
        Ok(Some(r)) => (
            vec![
                Metric {
                    name: "Retries today",
                    value: thousands(r.retries_today),
                    hint: "jobs requeued (not dry runs)",
                },
                Metric {
                    name: "Retry success rate",
                    value: format::percent(r.retry_success_rate),
                    hint: "retried jobs that then succeeded",
                },
                Metric {
                    name: "Non-retryable rate",
                    value: format::percent(r.non_retryable_rate),
                    hint: "decisions held as non-retryable",
                },
                Metric {
                    name: "Cooldown blocks",
                    value: thousands(r.blocked_cooldown),
                    hint: "retries refused: still cooling down",
                },
                Metric {
                    name: "Max-attempt blocks",
                    value: thousands(r.blocked_max_attempts),
                    hint: "retries refused: attempts used up",
                },
            ],
            Some(format!("UTC day {}", r.date)),
        ),
        Ok(None) => (
            Vec::new(),
            Some("No audit directory is configured: no retry metrics.".into()),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "overview: cannot read the retry metrics");
            (
                Vec::new(),
                Some(format!("The audit trail cannot be read now: {e}")),
            )
        }
    };
    let retries = match app.analytics.retries_by_hour(now).await {
        Ok(r) => r.unwrap_or_default(),
        Err(e) => {
            tracing::warn!(error = %e, "overview: cannot read the retries per hour");
            Vec::new()
        }
    };
    let hours: Vec<HourBar> = failures
        .iter()
        .enumerate()
        .map(|(i, h)| HourBar {
            label: h.hour.get(11..16).unwrap_or("").to_string(),
            failures: h.count,
            retries: retries.get(i).copied().unwrap_or(0),
        })
        .collect();

    let mut warnings = Vec::new();
    let redis_ping = match app.backend.redis_status().await {
        Ok(status) => {
            warnings.extend(crate::api::health::durability_warnings(&status));
            format!("{} ms", status.ping_ms)
        }
        Err(e) => {
            warnings.push(format!("redis: {e}"));
            "—".into()
        }
    };
    let (audit_status, audit_backlog) = match app.audit.health().await {
        Ok(h) => {
            if let Some(reason) = &h.reason {
                warnings.push(format!("audit degraded: {reason}"));
            }
            (h.status.to_string(), thousands(h.backlog))
        }
        Err(e) => {
            warnings.push(format!("audit health cannot be read: {e}"));
            ("unknown".into(), "—".into())
        }
    };
    if let Some(error) = app.service.registry().and_then(|r| r.status().error) {
        warnings.push(format!("policy bindings: {error}"));
    }
    if !stats.index.built {
        warnings.push("the failure index is still building: counts are partial".into());
    }
    let (auto_retry, breakers) = brakes(&ui, &mut conn, now, &mut warnings).await;
    Ok(html(&OverviewPage {
        chrome: Chrome::new(viewer, "overview", "Overview"),
        total: thousands(total),
        index_built: stats.index.built,
        by_queue,
        by_type,
        metrics,
        metrics_note,
        chart: svg::hour_bars(&hours),
        rows: top,
        warnings,
        audit_status,
        audit_backlog,
        redis_ping,
        auto_retry,
        breakers,
    }))
}

/// The auto-retry sweeper in a line, and the breakers (an open one is also a warning).
async fn brakes(
    ui: &crate::ui::Ui,
    conn: &mut crate::redis_link::Link,
    now: u64,
    warnings: &mut Vec<String>,
) -> (String, Vec<BreakerRow>) {
    let app = &ui.app;
    let auto = match crate::retry::sweeper::status(
        conn,
        app.config.auto_retry.enabled,
        app.service.table().any_auto_retry(),
        &app.sweeper,
        now,
    )
    .await
    {
        Ok(s) => {
            let who = match (&s.leader, s.this_instance_leads) {
                (_, true) => "swept by this instance".to_string(),
                (Some(_), false) => "swept by another instance".to_string(),
                (None, _) => "no instance sweeps".to_string(),
            };
            let opted = if s.any_binding_opted_in {
                ""
            } else {
                " · no binding has auto_retry"
            };
            let lag = s
                .lag_p99_ms
                .map_or(String::new(), |p| format!(" · lag p99 {p} ms"));
            format!(
                "{who}{opted} · {} due ({} now) · {} parked{lag}",
                thousands(s.due),
                thousands(s.due_now),
                thousands(s.parked)
            )
        }
        Err(e) => format!("cannot be read: {e}"),
    };
    let mut list = match crate::brake::state::list(conn, now).await {
        Ok(l) => l,
        Err(e) => {
            warnings.push(format!("circuit breakers cannot be read: {e}"));
            Vec::new()
        }
    };
    list.sort_by_key(|b| (b.state == "closed", b.key.clone()));
    for b in list.iter().filter(|b| b.state == "open") {
        warnings.push(format!(
            "circuit breaker {} is open: every retry of it is held",
            b.key
        ));
    }
    let rows = list
        .into_iter()
        .take(10)
        .map(|b| BreakerRow {
            next: match (b.state.as_str(), &b.manual, b.half_open_at_ms) {
                ("open", Some(why), _) => format!("opened by hand: {why}"),
                ("open", None, Some(at)) => {
                    format!("probes in {} s", at.saturating_sub(now).div_ceil(1000))
                }
                ("half_open", _, _) => format!("{} probes left", b.probes_left),
                _ => "—".into(),
            },
            failure_rate: format::percent(Some(b.failure_rate)),
            outcomes: thousands(b.outcomes),
            key: b.key,
            state: b.state.replace('_', "-"),
        })
        .collect();
    (auto, rows)
}

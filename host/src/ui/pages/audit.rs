//! `/ui/audit`: the audit trail, queried by job id, actor, decision, operation, UTC date and
//! dry run, newest first, paged by cursor. Every job and operation page links here.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::{Chrome, PAGE_ROWS, html, pager};
use crate::audit::query::AuditQuery;
use crate::audit::schema::AuditRecord;
use crate::ui::format::{self, When, short_digest};
use crate::ui::{UiError, UiState, Viewer};

/// Longest filter value accepted.
const MAX_FILTER_BYTES: usize = 512;

/// A record as a row of the timeline.
#[derive(Debug, Clone)]
pub struct RecordRow {
    pub when: When,
    pub decision: String,
    pub class: &'static str,
    pub dry_run: bool,
    pub forced: bool,
    pub actor: String,
    pub job_id: String,
    pub job_type: String,
    pub failure_type: String,
    pub attempt: String,
    pub operation_id: String,
    pub policy: String,
    pub reason: String,
    pub detail: String,
}

impl RecordRow {
    pub fn new(r: &AuditRecord, now: u64) -> Self {
        let ms = u64::try_from(r.timestamp_us / 1000).unwrap_or(0);
        let class = match r.decision.as_str() {
            "retried" | "succeeded" => "ok",
            "blocked_cooldown" | "operation_started" | "operation_finished" => "warn",
            "deleted" | "failed_again" | "lost" | "policy_error" => "bad",
            _ if r.decision.starts_with("blocked") => "bad",
            _ => "",
        };
        let detail = r
            .error_message
            .clone()
            .or_else(|| r.counts.clone())
            .unwrap_or_default();
        Self {
            when: When::of_ms(ms, now),
            decision: r.decision.clone(),
            class,
            dry_run: r.dry_run_flag,
            forced: r.forced,
            actor: r.user_or_system.clone(),
            job_id: r.job_id.clone().unwrap_or_default(),
            job_type: r.job_type.clone().unwrap_or_default(),
            failure_type: r.failure_type.clone().unwrap_or_default(),
            attempt: r.attempt_number.map(|a| a.to_string()).unwrap_or_default(),
            operation_id: r.operation_id.clone().unwrap_or_default(),
            policy: r
                .policy_digest
                .as_deref()
                .map(short_digest)
                .unwrap_or_default(),
            reason: format::truncate(r.retry_reason.as_deref().unwrap_or(""), 200),
            detail: format::truncate(&detail, 200),
        }
    }
}

/// The filters, as they appear in the URL.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AuditFilters {
    pub job_id: String,
    pub actor: String,
    pub decision: String,
    pub operation_id: String,
    /// A UTC date, `YYYY-MM-DD`.
    pub date: String,
    /// `""` (all), `true` (dry runs only), `false` (no dry runs).
    pub dry_run: String,
    pub cursor: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    f: AuditFilters,
    rows: Vec<RecordRow>,
    next: Option<String>,
    first: Option<String>,
    note: Option<String>,
}

fn opt(name: &str, s: &str) -> Result<Option<String>, UiError> {
    let s = s.trim();
    if s.len() > MAX_FILTER_BYTES || s.chars().any(char::is_control) {
        return Err(UiError::bad_request(format!(
            "{name} must be at most {MAX_FILTER_BYTES} bytes without control characters"
        )));
    }
    Ok((!s.is_empty()).then(|| s.to_string()))
}

pub async fn page(
    State(ui): UiState,
    viewer: Viewer,
    Query(f): Query<AuditFilters>,
) -> Result<Response, UiError> {
    let now = crate::clock::now_ms();
    let dry_run = match f.dry_run.as_str() {
        "" => None,
        "true" => Some(true),
        "false" => Some(false),
        other => {
            return Err(UiError::bad_request(format!(
                "dry_run is true, false or empty, not {other:?}"
            )));
        }
    };
    let (since_ms, until_ms) = match opt("date", &f.date)? {
        None => (None, None),
        Some(d) => {
            let start = crate::clock::ms_of_date(&d).ok_or_else(|| {
                UiError::bad_request(format!("date is a UTC date YYYY-MM-DD, not {d:?}"))
            })?;
            (Some(start), Some(start + crate::audit::query::DAY_MS))
        }
    };
    let query = AuditQuery {
        job_id: opt("job_id", &f.job_id)?,
        actor: opt("actor", &f.actor)?,
        decision: opt("decision", &f.decision)?,
        operation_id: opt("operation_id", &f.operation_id)?,
        dry_run,
        failure_type: None,
        since_ms,
        until_ms,
        limit: PAGE_ROWS,
        cursor: opt("cursor", &f.cursor)?,
    };
    let (records, next_cursor, note) = match ui.app.audit.query(&query).await {
        Ok(Some(page)) => (page.records, page.next_cursor, None),
        Ok(None) => (
            Vec::new(),
            None,
            Some("No audit directory is configured ([audit] path).".to_string()),
        ),
        Err(crate::audit::query::QueryError::Invalid(m)) => return Err(UiError::bad_request(m)),
        Err(e) => return Err(crate::api::ApiError::from(e).into()),
    };
    let rows: Vec<RecordRow> = records.iter().map(|r| RecordRow::new(r, now)).collect();
    let base = format::query(&[
        ("job_id", &f.job_id),
        ("actor", &f.actor),
        ("decision", &f.decision),
        ("operation_id", &f.operation_id),
        ("date", &f.date),
        ("dry_run", &f.dry_run),
    ]);
    let (first, next) = pager("/ui/audit", &base, &f.cursor, next_cursor);
    Ok(html(&AuditPage {
        chrome: Chrome::new(viewer, "audit", "Audit"),
        rows,
        next,
        first,
        note,
        f,
    }))
}

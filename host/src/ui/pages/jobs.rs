//! `/ui/jobs` (the failed jobs, filtered, each with its decision) and `/ui/jobs/{id}` (one
//! job: traceback, arguments when allowed, classification, decision, audit timeline, and
//! the retry and delete actions).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::audit::RecordRow;
use super::groups::retryable_filter;
use super::{Chrome, PAGE_ROWS, filled, html, pager};
use crate::api::groups as api_groups;
use crate::api::jobs as api_jobs;
use crate::api::views::{decode_cursor, encode_cursor};
use crate::policy::HoldKind;
use crate::retry::{JobFilter, JobView, Outcome};
use crate::ui::format::{self, When, failure_label, short_digest};
use crate::ui::{UiError, UiState, Viewer};

/// Longest description (arguments) shown.
const MAX_ARGS_CHARS: usize = 4096;

/// A job as a row, with its decision.
pub struct JobRow {
    pub id: String,
    pub queue: String,
    pub job_type: String,
    pub exc_type: String,
    pub message: String,
    pub failed_at: Option<When>,
    pub failure_type: String,
    pub failure_label: String,
    pub retryable: Option<bool>,
    pub attempts: u32,
    /// `retry`, `wait`, `hold` or `error`.
    pub action: &'static str,
    pub retry_at: Option<When>,
    pub hold: String,
    pub reason: String,
    pub policy_digest: String,
    pub traceback: String,
}

impl JobRow {
    pub fn new(view: JobView, now: u64) -> Self {
        let action = match view.outcome {
            Outcome::Retried => "retry",
            Outcome::BlockedCooldown => "wait",
            Outcome::PolicyError => "error",
            _ => "hold",
        };
        let (failure_type, retryable) = match &view.classification {
            Some(c) => (c.failure_type.clone(), Some(c.retryable)),
            None => (String::new(), None),
        };
        let job = view.job;
        Self {
            failure_label: failure_label(&failure_type),
            failure_type,
            retryable,
            id: job.id,
            queue: job.queue,
            job_type: job.job_type,
            exc_type: job.exc_type,
            message: format::truncate(&job.exc_message, 200),
            failed_at: job.failed_at_ms.map(|ms| When::of_ms(ms, now)),
            attempts: view.attempts,
            action,
            retry_at: view.retry_at_ms.map(|ms| When::of_ms(ms, now)),
            hold: view
                .hold_kind
                .map(hold_label)
                .unwrap_or_default()
                .to_string(),
            reason: view.reason,
            policy_digest: view.policy_digest,
            traceback: job.traceback,
        }
    }

    /// The decision in a few words: "retry now", "wait (cooling down)", "hold: max attempts".
    pub fn decision_summary(&self) -> String {
        match self.action {
            "retry" => "retry now".into(),
            "wait" => "wait: cooling down".into(),
            "error" => "policy error: never retried".into(),
            _ => format!("hold: {}", self.hold),
        }
    }

    /// The decision with its time: "wait until 14:05 UTC (in 3 min)".
    pub fn decision_text(&self) -> String {
        match (self.action, &self.retry_at) {
            ("wait", Some(at)) => format!("wait until {} ({})", at.utc, at.rel),
            _ => self.decision_summary(),
        }
    }

    pub fn action_class(&self) -> &'static str {
        match self.action {
            "retry" => "ok",
            "wait" => "warn",
            _ => "bad",
        }
    }

    pub fn short_digest(&self) -> String {
        short_digest(&self.policy_digest)
    }
}

pub fn hold_label(kind: HoldKind) -> &'static str {
    match kind {
        HoldKind::MaxAttempts => "max attempts",
        HoldKind::NonRetryable => "non-retryable",
        HoldKind::UnknownFailure => "unknown failure",
        HoldKind::PolicySaysNo => "the policy says no",
        HoldKind::CircuitOpen => "circuit open",
        HoldKind::Budget => "retry budget spent",
    }
}

/// The list's filters, as they appear in the URL.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct JobFilters {
    pub queue: String,
    pub job_type: String,
    pub failure_type: String,
    pub retryable: String,
    pub group: String,
    pub q: String,
    pub cursor: String,
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    chrome: Chrome,
    f: JobFilters,
    jobs: Vec<JobRow>,
    next: Option<String>,
    first: Option<String>,
    scanned: u64,
    scan_limited: bool,
}

pub async fn list(
    State(ui): UiState,
    viewer: Viewer,
    Query(f): Query<JobFilters>,
) -> Result<Response, UiError> {
    let now = crate::clock::now_ms();
    let filter = JobFilter {
        queue: api_jobs::name("queue", filled(&f.queue))?,
        job_type: api_jobs::name("job_type", filled(&f.job_type))?,
        failure_type: api_jobs::failure_type(filled(&f.failure_type))?,
        retryable: retryable_filter(&f.retryable)?,
        group: filled(&f.group)
            .map(|g| api_groups::fingerprint(&g))
            .transpose()?,
        q: api_groups::search(filled(&f.q))?,
        ..JobFilter::default()
    };
    let cursor = filled(&f.cursor).map(|c| decode_cursor(&c)).transpose()?;
    let page = ui
        .app
        .service
        .list(&filter, cursor, PAGE_ROWS)
        .await
        .map_err(crate::api::ApiError::from)?;
    let base = format::query(&[
        ("queue", &f.queue),
        ("job_type", &f.job_type),
        ("failure_type", &f.failure_type),
        ("retryable", &f.retryable),
        ("group", &f.group),
        ("q", &f.q),
    ]);
    let (first, next) = pager(
        "/ui/jobs",
        &base,
        &f.cursor,
        page.next_cursor.as_ref().map(encode_cursor),
    );
    Ok(html(&JobsPage {
        chrome: Chrome::new(viewer, "jobs", "Jobs"),
        jobs: page.jobs.into_iter().map(|v| JobRow::new(v, now)).collect(),
        next,
        first,
        scanned: page.scanned,
        scan_limited: page.scan_limited,
        f,
    }))
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    chrome: Chrome,
    j: JobRow,
    params: String,
    policy_name: String,
    /// RQ's description of the call (its arguments), when allowed and present.
    args: Option<String>,
    /// Why the arguments are not shown.
    args_note: &'static str,
    /// The audit timeline, newest first.
    rows: Vec<RecordRow>,
    timeline_more: Option<String>,
    /// The newest outcome of a retry (`succeeded`, `failed again`, `lost`), if any.
    outcome: Option<(String, Option<When>)>,
    group: Option<String>,
}

pub async fn show(
    State(ui): UiState,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let now = crate::clock::now_ms();
    let id = api_jobs::job_id(id)?;
    let Some(view) = ui
        .app
        .service
        .get(&id)
        .await
        .map_err(crate::api::ApiError::from)?
    else {
        return Err(UiError::not_found(format!(
            "Job {id} is not in a failed registry now (retried, deleted, or expired). Its \
             audit records: /ui/audit?job_id={}",
            format::url_encode(&id)
        )));
    };
    let table = ui.app.service.table();
    let binding = table.resolve(&view.job.job_type);
    let policy = &binding.active.policy;
    let policy_name = format!("{} {}", policy.info().name, policy.info().version);
    let params = binding.active.params_json.clone();
    let group = crate::fingerprint::fingerprint(&view.job.job_type, &view.job.traceback).id;
    let show_args = ui.app.config.ui.show_job_args && viewer.can_operate();
    let (args, args_note) = if show_args {
        let description = ui.app.backend.job_description(&id).await;
        (
            description.map(|d| format::truncate(&d, MAX_ARGS_CHARS)),
            "RQ stores no description for this job.",
        )
    } else if ui.app.config.ui.show_job_args {
        (
            None,
            "Arguments are shown to the operate and admin roles only.",
        )
    } else {
        (
            None,
            "Arguments are hidden: they may hold personal data or secrets ([ui] show_job_args).",
        )
    };
    let query = crate::audit::query::AuditQuery {
        job_id: Some(id.clone()),
        limit: 100,
        ..Default::default()
    };
    let (timeline, timeline_more) = match ui.app.audit.query(&query).await {
        Ok(Some(page)) => (
            page.records
                .iter()
                .map(|r| RecordRow::new(r, now))
                .collect(),
            page.next_cursor
                .map(|_| format!("/ui/audit?job_id={}", format::url_encode(&id))),
        ),
        Ok(None) => (Vec::new(), None),
        Err(e) => {
            tracing::warn!(error = %e, "job page: cannot read the audit trail");
            (Vec::new(), None)
        }
    };
    let outcome = timeline
        .iter()
        .find(|r: &&RecordRow| matches!(r.decision.as_str(), "succeeded" | "failed_again" | "lost"))
        .map(|r| (r.decision.replace('_', " "), Some(r.when.clone())));
    Ok(html(&JobPage {
        chrome: Chrome::new(viewer, "jobs", format!("Job {id}")),
        j: JobRow::new(view, now),
        params,
        policy_name,
        args,
        args_note,
        rows: timeline,
        timeline_more,
        outcome,
        group: Some(group),
    }))
}

//! Retry and delete from the dashboard, for a group or one job. Always in three steps:
//!
//! 1. `…/preview` (POST, a form of the page): a dry run (the same operation or call as the
//!    real one, with `dry_run`, audited as such) and its counts, with which jobs would do
//!    what (the dry run's own audit records);
//! 2. a confirmation form naming the count (and the script's `confirm()` naming it again);
//! 3. `…/run` (POST): the real thing. A group's runs as an operation and the browser goes to
//!    its progress page; a job's answers at once with its outcome.
//!
//! Force and delete need a typed reason (the audit trail keeps it). A delete carries the
//! dry run's count as `expected_count`: when the group has changed since, nothing is deleted
//! (the operation ends `conflict`).

use std::time::Duration;

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;

use super::audit::RecordRow;
use super::{Chrome, html};
use crate::api::groups as api_groups;
use crate::api::jobs as api_jobs;
use crate::api::views::SummaryJson;
use crate::audit::query::AuditQuery;
use crate::retry::{DeleteOptions, JobFilter, JobOutcome, RetryOptions};
use crate::ui::format::{self, failure_label, thousands};
use crate::ui::{Ui, UiError, UiResult, UiState, Viewer, redirect};

/// Rows of the dry run a preview lists.
const PREVIEW_ROWS: usize = 50;
/// Longest a preview waits for its dry run before showing its progress page instead (less
/// when `[server] request_timeout_seconds` is shorter).
const PREVIEW_WAIT: Duration = Duration::from_secs(20);

/// The action forms' fields (the gate has already checked `csrf`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ActionForm {
    /// `retry` or `delete`.
    pub action: String,
    /// A checkbox: `on` when ticked.
    pub force: String,
    /// A checkbox: `on` (the default form ticks it) retries only retryable failures.
    pub only_retryable: String,
    pub reason: String,
    /// The dry run's count, carried to the confirmation (a delete's `expected_count`).
    pub expected: Option<u64>,
    #[serde(rename = "csrf")]
    pub _csrf: String,
}

impl ActionForm {
    fn is_delete(&self) -> Result<bool, UiError> {
        match self.action.as_str() {
            "retry" => Ok(false),
            "delete" => Ok(true),
            other => Err(UiError::bad_request(format!(
                "action is retry or delete, not {other:?}"
            ))),
        }
    }

    fn reason(&self) -> Option<String> {
        Some(self.reason.trim().to_string()).filter(|r| !r.is_empty())
    }

    fn retry_options(&self, dry_run: bool) -> Result<RetryOptions, UiError> {
        Ok(api_jobs::options(
            dry_run,
            self.force == "on",
            self.only_retryable == "on",
            self.reason(),
        )?)
    }

    fn delete_options(&self, dry_run: bool) -> Result<DeleteOptions, UiError> {
        // The same checks of the reason as a retry's.
        let checked = api_jobs::options(true, false, true, self.reason())?;
        if !dry_run && checked.reason.is_none() {
            return Err(UiError::bad_request(
                "A delete needs a reason: type why these jobs are deleted (the audit trail keeps it).",
            ));
        }
        Ok(DeleteOptions {
            dry_run,
            reason: checked.reason,
            expected_count: if dry_run { None } else { self.expected },
            max_difference: 0,
            delete_dependents: false,
        })
    }
}

#[derive(Template)]
#[template(path = "preview.html")]
struct PreviewPage {
    chrome: Chrome,
    /// What the action is on: "group 0123…", "job abc".
    subject: String,
    back: String,
    /// `retry` or `delete`.
    action: String,
    /// Where the confirmation posts.
    run_url: String,
    /// Jobs the real action would act on.
    count: u64,
    count_text: String,
    /// Outcome → count of the dry run.
    counts: Vec<(String, String)>,
    rows: Vec<RecordRow>,
    more_href: Option<String>,
    form: ActionForm,
    /// A job's real action has run: this is its result, not a preview.
    done: bool,
    outcome_reason: String,
}

impl PreviewPage {
    pub fn verb(&self) -> &'static str {
        if self.action == "delete" {
            "Delete"
        } else {
            "Retry"
        }
    }

    pub fn forced(&self) -> bool {
        self.form.force == "on"
    }

    pub fn only_retryable(&self) -> bool {
        self.form.only_retryable == "on"
    }
}

fn summary_counts(s: &SummaryJson) -> Vec<(String, String)> {
    s.counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| (k.to_string(), thousands(*n)))
        .collect()
}

/// The dry run's own records: which jobs would do what.
async fn dry_run_rows(ui: &Ui, operation_id: &str) -> (Vec<RecordRow>, Option<String>) {
    let now = crate::clock::now_ms();
    let query = AuditQuery {
        operation_id: Some(operation_id.to_string()),
        limit: PREVIEW_ROWS + 2,
        ..AuditQuery::default()
    };
    let href = format!(
        "/ui/audit?operation_id={}",
        format::url_encode(operation_id)
    );
    match ui.app.audit.query(&query).await {
        Ok(Some(page)) => {
            let more = page.next_cursor.is_some();
            let rows = page
                .records
                .iter()
                .filter(|r| !r.decision.starts_with("operation_"))
                .take(PREVIEW_ROWS)
                .map(|r| RecordRow::new(r, now))
                .collect();
            (rows, more.then_some(href))
        }
        Ok(None) => (Vec::new(), None),
        Err(e) => {
            tracing::warn!(error = %e, "preview: cannot read the dry run's records");
            (Vec::new(), Some(href))
        }
    }
}

async fn group_filter(ui: &Ui, fp: &str) -> Result<(String, JobFilter), UiError> {
    let fp = api_groups::fingerprint(fp)?;
    let mut conn = ui.app.backend.connection();
    if crate::triage::read::group(&mut conn, &fp, crate::clock::now_ms())
        .await?
        .is_none()
    {
        return Err(UiError::not_found(format!(
            "The failure index knows no group {fp}: its jobs may have been retried or deleted."
        )));
    }
    let filter = JobFilter {
        group: Some(fp.clone()),
        ..JobFilter::default()
    };
    Ok((fp, filter))
}

/// Starts the form's action on a group as an operation (a dry run or the real one).
async fn start_group(
    ui: &Ui,
    viewer: &Viewer,
    fp: &str,
    form: &ActionForm,
    dry_run: bool,
) -> Result<(String, std::sync::Arc<crate::app::operations::Operation>), UiError> {
    let delete = form.is_delete()?;
    let (fp, filter) = group_filter(ui, fp).await?;
    let service = ui.app.service.clone();
    let actor = viewer.actor.clone();
    let op = if delete {
        let options = form.delete_options(dry_run)?;
        ui.app
            .operations
            .start_delete_all(service, filter, options, actor)
            .await
    } else {
        let options = form.retry_options(dry_run)?;
        ui.app
            .operations
            .start(service, filter, options, actor)
            .await
    }
    .map_err(crate::api::ApiError::from)?;
    Ok((fp, op))
}

/// A group's dry run, and the confirmation.
pub async fn group_preview(
    State(ui): UiState,
    viewer: Viewer,
    Path(fp): Path<String>,
    Form(form): Form<ActionForm>,
) -> UiResult {
    let delete = form.is_delete()?;
    let (fp, op) = start_group(&ui, &viewer, &fp, &form, true).await?;
    // The answer must leave before the request timeout (the dry run goes on regardless).
    let timeout = ui
        .app
        .config
        .server
        .request_timeout_seconds
        .saturating_sub(1);
    let wait = PREVIEW_WAIT.min(Duration::from_secs(timeout));
    let summary = match op.wait(wait).await {
        Some(Ok(s)) => SummaryJson::from(&s),
        Some(Err(e)) => return Err(crate::api::ApiError::from(e).into()),
        // A big group: its dry run goes on; its page shows the progress.
        None => return Ok(redirect(&format!("/ui/operations/{}", op.id()))),
    };
    let key = if delete { "deleted" } else { "retried" };
    let count = summary.counts.get(key).copied().unwrap_or(0);
    let (rows, more_href) = dry_run_rows(&ui, op.id()).await;
    Ok(html(&PreviewPage {
        chrome: Chrome::new(viewer, "groups", format!("Preview: group {fp}")),
        subject: format!("group {fp}"),
        back: format!("/ui/groups/{fp}"),
        action: form.action.clone(),
        run_url: format!("/ui/groups/{fp}/run"),
        count,
        count_text: thousands(count),
        counts: summary_counts(&summary),
        rows,
        more_href,
        form,
        done: false,
        outcome_reason: String::new(),
    }))
}

/// A group's real retry or delete: an operation; the browser goes to its progress page.
pub async fn group_run(
    State(ui): UiState,
    viewer: Viewer,
    Path(fp): Path<String>,
    Form(form): Form<ActionForm>,
) -> UiResult {
    let (_, op) = start_group(&ui, &viewer, &fp, &form, false).await?;
    tracing::info!(operation_id = %op.id(), actor = %viewer.actor, action = %form.action, "dashboard group action");
    Ok(redirect(&format!("/ui/operations/{}", op.id())))
}

async fn job_action(
    ui: &Ui,
    viewer: &Viewer,
    id: &str,
    form: &ActionForm,
    dry_run: bool,
) -> Result<JobOutcome, UiError> {
    if form.is_delete()? {
        let options = form.delete_options(dry_run)?;
        let outcome = ui
            .app
            .service
            .delete_one(id, &options, &viewer.actor)
            .await
            .map_err(crate::api::ApiError::from)?;
        outcome.ok_or_else(|| {
            UiError::not_found(format!(
                "Job {id} is not in a failed registry now (retried, deleted, or expired)."
            ))
        })
    } else {
        let options = form.retry_options(dry_run)?;
        Ok(ui
            .app
            .service
            .retry(id, &options, &viewer.actor)
            .await
            .map_err(crate::api::ApiError::from)?)
    }
}

fn job_page(viewer: Viewer, id: &str, form: ActionForm, o: &JobOutcome, done: bool) -> Response {
    let key = if form.action == "delete" {
        "deleted"
    } else {
        "retried"
    };
    let count = u64::from(o.outcome.as_str() == key);
    let mut counts = vec![(o.outcome.as_str().to_string(), "1".to_string())];
    if let Some(c) = &o.classification {
        counts.push((
            format!("classified {}", failure_label(&c.failure_type)),
            String::new(),
        ));
    }
    let title = if done { "Result" } else { "Preview" };
    html(&PreviewPage {
        chrome: Chrome::new(viewer, "jobs", format!("{title}: job {id}")),
        subject: format!("job {id}"),
        back: format!("/ui/jobs/{}", format::url_encode(id)),
        action: form.action.clone(),
        run_url: format!("/ui/jobs/{}/run", format::url_encode(id)),
        count,
        count_text: thousands(count),
        counts,
        rows: Vec::new(),
        more_href: Some(format!("/ui/audit?job_id={}", format::url_encode(id))),
        form,
        done,
        outcome_reason: o.reason.clone(),
    })
}

/// One job's dry run, and the confirmation.
pub async fn job_preview(
    State(ui): UiState,
    viewer: Viewer,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> UiResult {
    job_step(&ui, viewer, id, form, true).await
}

/// One job's real retry or delete, and its outcome.
pub async fn job_run(
    State(ui): UiState,
    viewer: Viewer,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> UiResult {
    job_step(&ui, viewer, id, form, false).await
}

/// The form's action on one job: a dry run (the preview) or the real one (its result).
async fn job_step(
    ui: &Ui,
    viewer: Viewer,
    id: String,
    form: ActionForm,
    dry_run: bool,
) -> UiResult {
    let id = api_jobs::job_id(id)?;
    let outcome = job_action(ui, &viewer, &id, &form, dry_run).await?;
    if !dry_run {
        tracing::info!(job_id = %id, actor = %viewer.actor, outcome = outcome.outcome.as_str(), "dashboard job action");
    }
    Ok(job_page(viewer, &id, form, &outcome, !dry_run))
}

//! `/ui/operations/{id}`: a retry-all or delete-all the dashboard started, with live progress
//! (the script polls `/ui/operations/{id}/status`, the API's operation view as JSON, about
//! once a second) to the final counts. Without the script the page shows the state when it
//! was loaded and a link to reload.

use askama::Template;
use axum::Json;
use axum::extract::{Path, State};
use axum::response::Response;

use super::{Chrome, html};
use crate::api::operations::{OperationJson, check_id, not_found, view};
use crate::ui::format::{self, When, thousands};
use crate::ui::{UiError, UiState, Viewer};

#[derive(Template)]
#[template(path = "operation.html")]
struct OperationPage {
    chrome: Chrome,
    op: OperationJson,
    started: Option<When>,
    finished: Option<When>,
    /// (outcome, count) of the non-zero counts.
    counts: Vec<(String, String)>,
    percent: u64,
    running: bool,
    error: Option<String>,
    audit_href: String,
}

async fn load(ui: &crate::ui::Ui, id: &str) -> Result<OperationJson, UiError> {
    check_id(id)?;
    let seen = ui
        .app
        .operations
        .status(id)
        .await
        .map_err(crate::api::ApiError::from)?;
    Ok(view(seen.ok_or_else(|| not_found(id))?))
}

pub async fn page(
    State(ui): UiState,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let now = crate::clock::now_ms();
    let op = load(&ui, &id).await?;
    let counts = op
        .counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| (k.to_string(), thousands(*n)))
        .collect();
    let percent = (op.processed * 100)
        .checked_div(op.total)
        .map_or(if op.state == "running" { 0 } else { 100 }, |p| p.min(100));
    Ok(html(&OperationPage {
        chrome: Chrome::new(viewer, "", format!("Operation {id}")),
        started: When::of_rfc3339(&op.started_at, now),
        finished: op
            .finished_at
            .as_deref()
            .and_then(|t| When::of_rfc3339(t, now)),
        counts,
        percent,
        running: op.state == "running",
        error: op.error.as_ref().map(|e| e.error.message.clone()),
        audit_href: format!(
            "/ui/audit?operation_id={}",
            format::url_encode(&op.operation_id)
        ),
        op,
    }))
}

/// The operation as the API shows it, for the page's script.
pub async fn status(
    State(ui): UiState,
    _: Viewer,
    Path(id): Path<String>,
) -> Result<Json<OperationJson>, UiError> {
    load(&ui, &id).await.map(Json)
}

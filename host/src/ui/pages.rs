//! The dashboard's pages: one module per page family, each handler gathering what its page
//! shows into a template struct (`host/templates/`). `html` renders one.

use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::{Ui, Viewer};

pub mod actions;
pub mod audit;
pub mod groups;
pub mod jobs;
pub mod login;
pub mod operations;
pub mod overview;
pub mod policies;

/// Rows a list page shows.
pub const PAGE_ROWS: usize = 50;

/// A filter field as given: trimmed, `None` when empty.
pub fn filled(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// The links of a paged list at `path` with the filters `query` (`?a=1&b=2`, or empty):
/// `(first, next)`. `first` when this is not the first page (`cursor` given), `next` when the
/// page has a next cursor.
pub fn pager(
    path: &str,
    query: &str,
    cursor: &str,
    next_cursor: Option<String>,
) -> (Option<String>, Option<String>) {
    let first = (!cursor.is_empty()).then(|| format!("{path}{query}"));
    let next = next_cursor.map(|c| {
        let sep = if query.is_empty() { "?" } else { "&" };
        format!("{path}{query}{sep}cursor={}", super::format::url_encode(&c))
    });
    (first, next)
}

pub fn router() -> Router<Arc<Ui>> {
    Router::new()
        .route("/ui/", get(overview::page))
        .route("/ui/groups", get(groups::list))
        .route("/ui/groups/{fingerprint}", get(groups::show))
        .route(
            "/ui/groups/{fingerprint}/preview",
            post(actions::group_preview),
        )
        .route("/ui/groups/{fingerprint}/run", post(actions::group_run))
        .route("/ui/jobs", get(jobs::list))
        .route("/ui/jobs/{id}", get(jobs::show))
        .route("/ui/jobs/{id}/preview", post(actions::job_preview))
        .route("/ui/jobs/{id}/run", post(actions::job_run))
        .route("/ui/operations/{id}", get(operations::page))
        .route("/ui/operations/{id}/status", get(operations::status))
        .route("/ui/policies", get(policies::page))
        .route("/ui/policies/bind", post(policies::bind))
        .route("/ui/policies/rollback", post(policies::rollback))
        .route("/ui/policies/promote", post(policies::promote))
        // A component of up to 32 MiB (every other form has `[server] body_limit_bytes`).
        .route(
            "/ui/policies/upload",
            post(policies::upload).layer(axum::extract::DefaultBodyLimit::max(
                crate::registry::MAX_UPLOAD_BYTES,
            )),
        )
        .route("/ui/audit", get(audit::page))
}

/// What the frame of every page needs: who is looking, and where they are.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub viewer: Viewer,
    /// The navigation entry to mark (`overview`, `groups`, `jobs`, `policies`, `audit`).
    pub nav: &'static str,
    pub title: String,
}

impl Chrome {
    pub fn new(viewer: Viewer, nav: &'static str, title: impl Into<String>) -> Self {
        Self {
            viewer,
            nav,
            title: title.into(),
        }
    }

    /// `class="active"`'s value for a navigation entry.
    pub fn active(&self, nav: &str) -> &'static str {
        if self.nav == nav { "active" } else { "" }
    }
}

/// A rendered page (`text/html`); a template that cannot render is a 500 and a log line.
pub fn html<T: Template>(page: &T) -> Response {
    match page.render() {
        Ok(body) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a dashboard template did not render");
            (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal error: the page did not render",
            )
                .into_response()
        }
    }
}

/// Any error, as a page.
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub status: u16,
    pub reason: &'static str,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pager_links_keep_the_filters() {
        assert_eq!(pager("/ui/jobs", "", "", None), (None, None));
        assert_eq!(
            pager("/ui/jobs", "?q=x", "c1", Some("a b".into())),
            (
                Some("/ui/jobs?q=x".into()),
                Some("/ui/jobs?q=x&cursor=a%20b".into())
            )
        );
        assert_eq!(
            pager("/ui/audit", "", "", Some("1-0".into())).1.as_deref(),
            Some("/ui/audit?cursor=1-0")
        );
        assert_eq!(filled("  "), None);
        assert_eq!(filled(" a ").as_deref(), Some("a"));
    }
}

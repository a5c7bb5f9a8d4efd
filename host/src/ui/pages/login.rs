//! `/ui/login` and `/ui/logout` (`super::super::session` keeps the sessions).

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::html;
use crate::ui::session::{self, Viewer};
use crate::ui::{Ui, UiResult, UiState, redirect};

/// Longest token accepted in the form (a token is 67 bytes).
const MAX_TOKEN_BYTES: usize = 256;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    next: String,
    error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct NextQuery {
    next: String,
}

/// Where to go after the login: a dashboard path, never another site.
fn safe_next(next: &str) -> String {
    let ok = next.starts_with("/ui/")
        && !next.starts_with("//")
        && !next.contains('\\')
        && next.len() <= 2048
        && next.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        next.to_string()
    } else {
        "/ui/".to_string()
    }
}

/// The login form (straight to the overview without tokens: there is no login then).
pub async fn form(State(ui): UiState, Query(q): Query<NextQuery>) -> Response {
    if !ui.app.auth.enabled() {
        return redirect("/ui/");
    }
    html(&LoginPage {
        next: safe_next(&q.next),
        error: None,
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LoginForm {
    token: String,
    next: String,
}

/// Checks the token once and starts a session.
pub async fn submit(State(ui): UiState, Form(f): Form<LoginForm>) -> UiResult {
    if !ui.app.auth.enabled() {
        return Ok(redirect("/ui/"));
    }
    let next = safe_next(&f.next);
    let token = f.token.trim();
    let found = (token.len() <= MAX_TOKEN_BYTES)
        .then(|| ui.app.auth.find(token))
        .flatten();
    let Some(token) = found else {
        tracing::warn!("dashboard login with a token that is not valid");
        let mut page = html(&LoginPage {
            next,
            error: Some("That token is not valid.".into()),
        });
        *page.status_mut() = StatusCode::UNAUTHORIZED;
        return Ok(page);
    };
    let (idle_ms, _) = ui.session_limits_ms();
    let mut conn = ui.app.backend.connection();
    let id = session::create(&mut conn, &token, idle_ms, crate::clock::now_ms()).await?;
    tracing::info!(actor = %token.name, "dashboard login");
    Ok(with_cookie(&ui, redirect(&next), &id, max_age(&ui)))
}

/// Ends the session and clears the cookie.
pub async fn logout(
    State(ui): UiState,
    viewer: Viewer,
    headers: axum::http::HeaderMap,
) -> UiResult {
    if let Some(id) = session::cookie_session(&headers, ui.cookie_name()) {
        let mut conn = ui.app.backend.connection();
        session::destroy(&mut conn, &id).await?;
    }
    tracing::info!(actor = %viewer.actor, "dashboard logout");
    Ok(with_cookie(&ui, redirect("/ui/login"), "", 0))
}

/// The cookie's `Max-Age`: the absolute lifetime (the idle expiry is the server's).
fn max_age(ui: &Ui) -> u64 {
    ui.app.config.ui.session_max_hours.saturating_mul(3600)
}

fn with_cookie(ui: &Ui, mut response: Response, id: &str, max_age: u64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(ui, id, max_age)) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_the_dashboard() {
        assert_eq!(safe_next("/ui/groups?q=x"), "/ui/groups?q=x");
        for bad in [
            "https://evil.example/",
            "//evil.example/ui/",
            "/api/v1/x",
            "",
            "/ui/\\x",
            "/ui/ a",
        ] {
            assert_eq!(safe_next(bad), "/ui/", "{bad}");
        }
    }
}

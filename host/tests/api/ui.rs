//! The dashboard's session gate without a browser (the browser tests are
//! host/tests/ui/test_dashboard.py): login, the cookie, idle and absolute expiry, a token
//! that leaves the config, CSRF, roles, the headers, and loopback mode.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use retryguard::api::auth::Role;
use tower::ServiceExt as _;

use crate::common::{NETWORK_TB, RawJob, RedisServer, config, connect, state_with, write_failed};

struct Page {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    cookie: Option<&str>,
    form: Option<&str>,
) -> Page {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "127.0.0.1:8000");
    if let Some(c) = cookie {
        request = request.header("cookie", c);
    }
    let body = match form {
        Some(f) => {
            request = request.header("content-type", "application/x-www-form-urlencoded");
            Body::from(f.to_string())
        }
        None => Body::empty(),
    };
    let response = app
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
        .await
        .unwrap();
    Page {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn location(p: &Page) -> &str {
    p.headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// `rg_session=<id>` from a login's `Set-Cookie`.
fn session_cookie(p: &Page) -> String {
    let set = p.headers.get("set-cookie").unwrap().to_str().unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(flag), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: no Secure flag");
    set.split(';').next().unwrap().to_string()
}

/// The CSRF token of a page's forms.
fn csrf(body: &str) -> String {
    let at = body
        .find("name=\"csrf\" value=\"")
        .expect("a form with a csrf field")
        + 19;
    body[at..at + 64].to_string()
}

async fn app_with_tokens(
    redis: &RedisServer,
    roles: &[(&str, Role)],
) -> (axum::Router, Vec<String>) {
    let mut tokens = Vec::new();
    let mut entries = Vec::new();
    for (name, role) in roles {
        let (token, entry) = retryguard::api::auth::new_token(name, *role).unwrap();
        tokens.push(token);
        entries.push(entry);
    }
    let mut c = config(redis);
    c.auth.tokens = entries;
    (retryguard::ui::app(state_with(c).await), tokens)
}

async fn login(app: &axum::Router, token: &str) -> String {
    let p = call(
        app,
        "POST",
        "/ui/login",
        None,
        Some(&format!("token={token}&next=%2Fui%2Fgroups")),
    )
    .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert_eq!(location(&p), "/ui/groups");
    session_cookie(&p)
}

#[tokio::test]
async fn login_session_csrf_and_roles() {
    let redis = RedisServer::start();
    write_failed(
        &mut connect(&redis),
        &[RawJob::new("j-1", NETWORK_TB, 1_700_000_000_000)],
    );
    let (app, tokens) =
        app_with_tokens(&redis, &[("ops", Role::Operate), ("viewer", Role::Read)]).await;

    // No session: pages go to the login page, POSTs are refused.
    let p = call(&app, "GET", "/ui/jobs?q=x", None, None).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(location(&p), "/ui/login?next=%2Fui%2Fjobs%3Fq%3Dx");
    let p = call(&app, "POST", "/ui/jobs/j-1/run", None, Some("action=retry")).await;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    let p = call(&app, "POST", "/ui/login", None, Some("token=rg_wrong")).await;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    assert!(p.body.contains("not valid"));
    // `next` never leaves the dashboard.
    let p = call(
        &app,
        "POST",
        "/ui/login",
        None,
        Some(&format!("token={}&next=https://evil.example/", tokens[0])),
    )
    .await;
    assert_eq!(location(&p), "/ui/");

    let ops = login(&app, &tokens[0]).await;
    let p = call(&app, "GET", "/ui/jobs", Some(&ops), None).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert!(p.body.contains("j-1"));
    for (name, value) in [
        ("cache-control", "no-store"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
        ("x-content-type-options", "nosniff"),
    ] {
        assert_eq!(p.headers.get(name).unwrap(), value, "{name}");
    }
    let csp = p
        .headers
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let token = csrf(&p.body);

    // A POST without the session's CSRF token changes nothing; with it, it goes through.
    let p = call(
        &app,
        "POST",
        "/ui/jobs/j-1/preview",
        Some(&ops),
        Some("action=retry"),
    )
    .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert!(p.body.contains("CSRF"));
    let p = call(
        &app,
        "POST",
        "/ui/jobs/j-1/preview",
        Some(&ops),
        Some(&format!("action=retry&csrf={}", "0".repeat(64))),
    )
    .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    let p = call(
        &app,
        "POST",
        "/ui/jobs/j-1/preview",
        Some(&ops),
        Some(&format!("action=retry&only_retryable=on&csrf={token}")),
    )
    .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert!(p.body.contains("dry run"));
    // Operate is below admin: the policy forms are refused.
    let p = call(
        &app,
        "POST",
        "/ui/policies/bind",
        Some(&ops),
        Some(&format!("pattern=x&policy=y&csrf={token}")),
    )
    .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);

    // Read: the job's page has no action form, and a POST with its own CSRF token is refused.
    let viewer = login(&app, &tokens[1]).await;
    let p = call(&app, "GET", "/ui/jobs/j-1", Some(&viewer), None).await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(!p.body.contains("job-actions"));
    let read_csrf = csrf(&p.body);
    let p = call(
        &app,
        "POST",
        "/ui/jobs/j-1/run",
        Some(&viewer),
        Some(&format!("action=retry&csrf={read_csrf}")),
    )
    .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert!(p.body.contains("needs operate"), "{}", p.body);
    // The sessions' CSRF tokens differ.
    assert_ne!(read_csrf, token);
    let mut con = connect(&redis);
    let failed: Vec<String> = redis::cmd("ZRANGE")
        .arg("rq:failed:default")
        .arg(0)
        .arg(-1)
        .query(&mut con)
        .unwrap();
    assert_eq!(failed, ["j-1"], "nothing was retried");

    // Logout ends the session server-side.
    let p = call(
        &app,
        "POST",
        "/ui/logout",
        Some(&viewer),
        Some(&format!("csrf={read_csrf}")),
    )
    .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    let p = call(&app, "GET", "/ui/jobs", Some(&viewer), None).await;
    assert_eq!(
        p.status,
        StatusCode::SEE_OTHER,
        "the old cookie opens nothing"
    );
}

#[tokio::test]
async fn sessions_expire_when_idle_at_their_lifetime_and_with_their_token() {
    let redis = RedisServer::start();
    let (app, tokens) = app_with_tokens(&redis, &[("ops", Role::Operate)]).await;
    let cookie = login(&app, &tokens[0]).await;
    let mut con = connect(&redis);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("retryguard:ui:session:*")
        .query(&mut con)
        .unwrap();
    assert_eq!(keys.len(), 1);
    let key = &keys[0];
    assert!(
        !key.contains(cookie.split('=').nth(1).unwrap()),
        "Redis holds the id's hash only"
    );
    // Idle expiry is Redis's TTL, renewed by every request.
    let ttl: i64 = redis::cmd("PTTL").arg(key).query(&mut con).unwrap();
    assert!((29 * 60_000..=30 * 60_000).contains(&ttl), "{ttl}");
    let _: () = redis::cmd("PEXPIRE")
        .arg(key)
        .arg(5_000)
        .query(&mut con)
        .unwrap();
    assert_eq!(
        call(&app, "GET", "/ui/", Some(&cookie), None).await.status,
        StatusCode::OK
    );
    let ttl: i64 = redis::cmd("PTTL").arg(key).query(&mut con).unwrap();
    assert!(ttl > 60_000, "renewed: {ttl}");
    // Past its absolute lifetime (12 h) it ends, however active.
    let old = retryguard::clock::now_ms() - 13 * 3_600_000;
    let _: () = redis::cmd("HSET")
        .arg(key)
        .arg("created_ms")
        .arg(old)
        .query(&mut con)
        .unwrap();
    assert_eq!(
        call(&app, "GET", "/ui/", Some(&cookie), None).await.status,
        StatusCode::SEE_OTHER
    );
    let exists: u64 = redis::cmd("EXISTS").arg(key).query(&mut con).unwrap();
    assert_eq!(exists, 0, "and is deleted");

    // A session whose token left the config opens nothing on a server with the new config.
    let cookie = login(&app, &tokens[0]).await;
    let (other, _) = app_with_tokens(&redis, &[("someone-else", Role::Admin)]).await;
    assert_eq!(
        call(&other, "GET", "/ui/", Some(&cookie), None)
            .await
            .status,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn loopback_mode_has_no_login_and_still_checks_csrf_and_origin() {
    let redis = RedisServer::start();
    write_failed(
        &mut connect(&redis),
        &[RawJob::new("j-1", NETWORK_TB, 1_700_000_000_000)],
    );
    let app = retryguard::ui::app(state_with(config(&redis)).await);
    let p = call(&app, "GET", "/", None, None).await;
    assert_eq!((p.status, location(&p)), (StatusCode::SEE_OTHER, "/ui/"));
    let p = call(&app, "GET", "/ui/login", None, None).await;
    assert_eq!((p.status, location(&p)), (StatusCode::SEE_OTHER, "/ui/"));
    let p = call(&app, "GET", "/ui/jobs/j-1", None, None).await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.body.contains(">local <"), "the viewer is local");
    let token = csrf(&p.body);
    let p = call(
        &app,
        "POST",
        "/ui/jobs/j-1/preview",
        None,
        Some("action=retry"),
    )
    .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN, "CSRF without tokens too");
    // Another origin is refused before anything else.
    let request = Request::builder()
        .method("POST")
        .uri("/ui/jobs/j-1/preview")
        .header("host", "127.0.0.1:8000")
        .header("origin", "http://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!("action=retry&csrf={token}")))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // Bad input is a 400 page, never a 500.
    let p = call(&app, "GET", "/ui/groups?retryable=maybe", None, None).await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    let p = call(&app, "GET", "/ui/groups/not-a-fingerprint", None, None).await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    let p = call(&app, "GET", "/ui/audit?date=yesterday", None, None).await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    let p = call(&app, "GET", "/ui/jobs?cursor=garbage", None, None).await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    let p = call(&app, "GET", "/ui/jobs/missing-job", None, None).await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    assert!(p.body.contains("missing-job"));
    let p = call(&app, "GET", "/ui/static/app.css", None, None).await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(
        p.headers
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
}

//! Bearer tokens and roles: the matrix of no token, a wrong token and each role on each
//! kind of route, the JSON 401/403, and the token's name as the audit actor.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use retryguard::api::{self, auth::Role};

use crate::common::{
    NETWORK_TB, RawJob, RedisServer, Reply, config, connect, send_request, state_with, write_failed,
};

/// One route of each kind and the role it needs (`None`: open).
const ROUTES: &[(&str, &str, Option<Role>)] = &[
    ("GET", "/healthz", None),
    ("GET", "/readyz", None),
    ("GET", "/api/v1/jobs/failed", Some(Role::Read)),
    ("GET", "/api/v1/jobs/stats", Some(Role::Read)),
    ("GET", "/api/v1/jobs/retry-audit", Some(Role::Read)),
    ("GET", "/api/v1/operations/op-none", Some(Role::Read)),
    (
        "POST",
        "/api/v1/jobs/failed/j-1/retry?dry_run=true",
        Some(Role::Operate),
    ),
    (
        "POST",
        "/api/v1/jobs/failed/retry-all?dry_run=true",
        Some(Role::Operate),
    ),
    ("DELETE", "/api/v1/operations/op-none", Some(Role::Operate)),
    ("POST", "/api/v1/policies", Some(Role::Admin)),
];

async fn call(app: &axum::Router, method: &str, uri: &str, token: Option<&str>) -> Reply {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        request = request.header("authorization", format!("Bearer {t}"));
    }
    send_request(app, request.body(Body::empty()).unwrap()).await
}

#[tokio::test]
async fn every_route_needs_the_right_role_and_answers_401_or_403_in_json() {
    let redis = RedisServer::start();
    write_failed(
        &mut connect(&redis),
        &[RawJob::new("j-1", NETWORK_TB, 1_700_000_000_000)],
    );
    let mut tokens = Vec::new();
    let mut entries = Vec::new();
    for (name, role) in [("r", Role::Read), ("o", Role::Operate), ("a", Role::Admin)] {
        let (token, entry) = api::auth::new_token(name, role).unwrap();
        tokens.push((token, role));
        entries.push(entry);
    }
    let mut c = config(&redis);
    c.auth.tokens = entries;
    let app = api::router(state_with(c).await);
    for (method, uri, needed) in ROUTES {
        let open = needed.is_none();
        let reply = call(&app, method, uri, None).await;
        if open {
            assert_ne!(reply.status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        } else {
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {uri}");
            assert_eq!(reply.code(), "unauthorized");
            assert!(reply.headers.contains_key("www-authenticate"));
            let wrong = call(&app, method, uri, Some("rg_not-a-token")).await;
            assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        }
        for (token, role) in &tokens {
            let reply = call(&app, method, uri, Some(token)).await;
            let allowed = needed.is_none_or(|n| *role >= n);
            if allowed {
                assert!(
                    ![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&reply.status),
                    "{role:?} on {method} {uri}: {} {}",
                    reply.status,
                    reply.json
                );
            } else {
                assert_eq!(
                    reply.status,
                    StatusCode::FORBIDDEN,
                    "{role:?} on {method} {uri}: {}",
                    reply.json
                );
                assert_eq!(reply.code(), "forbidden");
            }
        }
    }
}

#[tokio::test]
async fn the_token_name_is_the_actor_of_the_audit_record() {
    let redis = RedisServer::start();
    write_failed(
        &mut connect(&redis),
        &[RawJob::new("j-2", NETWORK_TB, 1_700_000_000_000)],
    );
    let (token, entry) = api::auth::new_token("ops-alice", Role::Operate).unwrap();
    let mut c = config(&redis);
    c.auth.tokens = vec![entry];
    let app = api::router(state_with(c).await);
    let reply = call(
        &app,
        "POST",
        "/api/v1/jobs/failed/j-2/retry?dry_run=true",
        Some(&token),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    let records: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("retryguard:audit:outbox")
        .arg("-")
        .arg("+")
        .query(&mut connect(&redis))
        .unwrap();
    assert_eq!(records.len(), 1);
    assert!(
        retryguard::audit::encoding::pairs(&records[0].1)
            .contains(&("user_or_system".to_string(), "ops-alice".to_string())),
        "{records:?}"
    );
}

#[test]
fn a_non_loopback_listen_address_needs_tokens() {
    let mut c = retryguard::config::Config::default();
    c.server.listen = "0.0.0.0:8000".into();
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("no [auth] tokens"), "{e}");
    let (_, entry) = api::auth::new_token("ops", Role::Read).unwrap();
    c.auth.tokens = vec![entry.clone(), entry];
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("two tokens are named"), "{e}");
    c.auth.tokens.pop();
    c.validate().unwrap();
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let redis = RedisServer::start();
    let (token, entry) = api::auth::new_token("ops", Role::Read).unwrap();
    let mut c = config(&redis);
    c.auth.tokens = vec![entry];
    let app = api::router(state_with(c).await);
    for scheme in ["Bearer", "bearer", "BEARER", "bEArer"] {
        let request = Request::builder()
            .uri("/api/v1/jobs/stats")
            .header("authorization", format!("{scheme} {token}"))
            .body(Body::empty())
            .unwrap();
        let reply = send_request(&app, request).await;
        assert_eq!(reply.status, StatusCode::OK, "{scheme}: {}", reply.json);
    }
    let request = Request::builder()
        .uri("/api/v1/jobs/stats")
        .header("authorization", format!("Basic {token}"))
        .body(Body::empty())
        .unwrap();
    let reply = send_request(&app, request).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.json);
}

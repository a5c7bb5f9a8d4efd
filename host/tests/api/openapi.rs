//! `/openapi.json`: the generated OpenAPI 3.1 document covers exactly the routes the app
//! serves (`api::ROUTES`, which the router is checked against here), and live answers use
//! the status codes and error body it documents.

use std::collections::BTreeSet;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use retryguard::api;
use serde_json::Value;
use tower::ServiceExt as _;

use crate::common::{RedisServer, app, send};

/// `template` with every `{name}` segment replaced by a sample value.
fn sample_path(template: &str) -> String {
    template
        .split('/')
        .map(|s| if s.starts_with('{') { "sample-1" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

/// Sends `method path` (a `{}` JSON body for POST) and returns the status and body, whatever
/// its content type.
async fn call(app: &Router, method: &str, path: &str) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(path);
    // `{}` to the routes that read a JSON body; no body to the rest, which refuse one.
    let route = path.split('?').next().unwrap_or(path);
    let reads_json = matches!(method, "PUT" | "PATCH")
        || (method == "POST"
            && ["/begin", "/complete", "/release", "/replay"]
                .iter()
                .any(|suffix| route.ends_with(suffix)));
    let body = if reads_json {
        request = request.header("content-type", "application/json");
        Body::from("{}")
    } else {
        Body::empty()
    };
    let response = app
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The (METHOD, path) of every operation in `doc`.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in [
            "get", "post", "put", "patch", "delete", "head", "options", "trace",
        ] {
            if item.get(method).is_some() {
                found.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    found
}

async fn document(app: &Router) -> Value {
    let reply = send(app, "GET", "/openapi.json").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    reply.json
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_lists_exactly_the_served_routes() {
    let redis = RedisServer::start();
    let app = app(&redis).await;
    let doc = document(&app).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc, serde_json::to_value(api::openapi::document()).unwrap());
    let served: BTreeSet<(String, String)> = api::ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_string(), (*p).to_string()))
        .collect();
    let documented = operations(&doc);
    let missing: Vec<_> = served.difference(&documented).collect();
    assert!(missing.is_empty(), "served but not documented: {missing:?}");
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(extra.is_empty(), "documented but not served: {extra:?}");

    // Every operation answers errors with the ErrorBody schema and names its security.
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
    let open = ["/healthz", "/readyz", "/openapi.json", "/metrics"];
    for (method, path) in &served {
        let op = &doc["paths"][path][method.to_lowercase()];
        assert!(op["responses"].is_object(), "{method} {path}");
        if !open.contains(&path.as_str()) {
            assert_eq!(
                op["security"],
                serde_json::json!([{"bearerAuth": []}]),
                "{method} {path}"
            );
            for status in ["401", "403"] {
                let schema = &op["responses"][status]["content"]["application/json"]["schema"];
                assert_eq!(
                    schema["$ref"], "#/components/schemas/ErrorBody",
                    "{method} {path} {status}"
                );
            }
        }
        // Path parameters are declared, one per `{name}`.
        for segment in path.split('/').filter(|s| s.starts_with('{')) {
            let name = segment.trim_matches(['{', '}']);
            let declared = op["parameters"].as_array().is_some_and(|ps| {
                ps.iter()
                    .any(|p| p["name"] == name && p["in"] == "path" && p["required"] == true)
            });
            assert!(declared, "{method} {path}: path parameter {name}");
        }
    }
}

#[tokio::test]
async fn the_router_serves_every_listed_route_with_a_documented_status_and_no_other_method() {
    let redis = RedisServer::start();
    let app = app(&redis).await;
    let doc = document(&app).await;
    let templates: BTreeSet<&str> = api::ROUTES.iter().map(|(_, p)| *p).collect();
    for template in templates {
        let path = sample_path(template);
        assert_eq!(api::route_template(&path), template, "{path}");
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            let listed = api::ROUTES.contains(&(method, template));
            let (status, body) = call(&app, method, &path).await;
            if !listed {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is served but not in api::ROUTES: {body}"
                );
                continue;
            }
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert!(
                !(status == StatusCode::NOT_FOUND
                    && body["error"]["message"] == "no such endpoint"),
                "{method} {path} is listed but not routed"
            );
            let responses = &doc["paths"][template][method.to_lowercase()]["responses"];
            assert!(
                responses.get(status.as_str()).is_some(),
                "{method} {path} answered {status}, not documented in {responses}: {body}"
            );
            if !status.is_success() {
                assert!(body["error"]["code"].is_string(), "{method} {path}: {body}");
                assert!(
                    body["error"]["message"].is_string(),
                    "{method} {path}: {body}"
                );
            }
        }
    }
}

#[tokio::test]
async fn documented_errors_are_the_ones_answered() {
    let redis = RedisServer::start();
    let app = app(&redis).await;
    let doc = document(&app).await;
    let cases = [
        (
            "GET",
            "/api/v1/jobs/failed?limit=0",
            "/api/v1/jobs/failed",
            400,
            "invalid_query",
        ),
        (
            "GET",
            "/api/v1/jobs/failed?nope=1",
            "/api/v1/jobs/failed",
            400,
            "invalid_query",
        ),
        (
            "GET",
            "/api/v1/jobs/failed/nope",
            "/api/v1/jobs/failed/{id}",
            404,
            "not_found",
        ),
        (
            "POST",
            "/api/v1/jobs/failed/nope/retry?force=true",
            "/api/v1/jobs/failed/{id}/retry",
            400,
            "force_requires_reason",
        ),
        (
            "GET",
            "/api/v1/operations/nope",
            "/api/v1/operations/{id}",
            404,
            "not_found",
        ),
        (
            "GET",
            "/api/v1/jobs/retry-audit",
            "/api/v1/jobs/retry-audit",
            503,
            "audit_not_configured",
        ),
        (
            "POST",
            "/api/v1/idempotency/k/complete",
            "/api/v1/idempotency/{key}/complete",
            400,
            "invalid_json",
        ),
    ];
    for (method, uri, template, status, code) in cases {
        let (got, body) = call(&app, method, uri).await;
        assert_eq!(got.as_u16(), status, "{method} {uri}: {body}");
        assert_eq!(body["error"]["code"], code, "{method} {uri}");
        let response =
            &doc["paths"][template][method.to_lowercase()]["responses"][status.to_string()];
        assert!(
            response.is_object(),
            "{method} {template}: {status} not documented"
        );
    }
    // The documented query parameters are the ones accepted (unknown ones are refused).
    let params = doc["paths"]["/api/v1/jobs/failed"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let names: Vec<&str> = params.iter().map(|p| p["name"].as_str().unwrap()).collect();
    for name in &names {
        let value = match *name {
            "retryable" => "true",
            "limit" => "5",
            "failure_type" => "network_error",
            "failed_after" | "failed_before" => "2026-11-29T12:00:00Z",
            "cursor" => "",
            "group" => "0123456789abcdef",
            _ => "x",
        };
        let uri = format!("/api/v1/jobs/failed?{name}={value}");
        let (got, body) = call(&app, "GET", &uri).await;
        assert_eq!(got, StatusCode::OK, "{uri}: {body}");
    }
    assert_eq!(names.len(), 10, "{names:?}");
}

//! `GET /api/v1/jobs/retry-audit`: the audit trail, newest first, filtered and paged. The
//! handler checks the parameters and calls `audit::query::query`.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiQuery, ErrorBody, NoBody};
use super::views::parse_rfc3339;
use crate::audit::query::{self, AuditQuery, DEFAULT_LIMIT, MAX_LIMIT, QueryError};
use crate::audit::{AuditReader, AuditRecord};
use crate::clock::format_rfc3339;

/// Longest job id, actor or operation id accepted.
const MAX_NAME_BYTES: usize = 512;
/// Latest time accepted (9999-12-31T23:59:59.999Z), so a time fits every format.
const MAX_TIME_MS: u64 = 253_402_300_799_999;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(retry_audit))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(default, deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AuditParams {
    /// Only this job's records.
    job_id: Option<String>,
    /// Records at or after this time: RFC 3339 or epoch milliseconds.
    since: Option<String>,
    /// Records at or before this time: RFC 3339 or epoch milliseconds.
    until: Option<String>,
    /// Only this actor's records (a token name, `local`, `system`).
    actor: Option<String>,
    /// Only this decision (`[a-z0-9_]{1,64}`, e.g. `blocked_cooldown`).
    decision: Option<String>,
    /// Only this failure type (`[a-z0-9_]{1,64}`).
    failure_type: Option<String>,
    /// Only this retry-all operation's records.
    operation_id: Option<String>,
    /// Only dry-run records (`true`) or only real ones (`false`).
    dry_run: Option<bool>,
    /// Records per page (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page, unchanged.
    cursor: Option<String>,
}

/// One page of audit records, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct AuditPage {
    /// The records: every column of the audit trail (`record_id`, `job_id`, `decision`,
    /// `actor`, …), with `timestamp` in RFC 3339.
    #[schema(value_type = Vec<Object>)]
    records: Vec<serde_json::Value>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// The retry audit trail, newest first, filtered and paged (role `read`).
#[utoipa::path(
    get,
    path = "/api/v1/jobs/retry-audit",
    tag = "audit",
    params(AuditParams),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "One page of records", body = AuditPage),
        (status = 400, description = "A malformed parameter (`invalid_query`, `invalid_cursor`)", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "The token's role is below `read`", body = ErrorBody),
        (status = 500, description = "Internal error (unreadable audit files)", body = ErrorBody),
        (status = 503, description = "No audit directory configured (`audit_not_configured`), Redis unavailable or request timeout", body = ErrorBody),
    )
)]
async fn retry_audit(
    State(audit): State<AuditReader>,
    ApiQuery(params): ApiQuery<AuditParams>,
    _: NoBody,
) -> Result<Json<AuditPage>, ApiError> {
    let q = audit_query(params)?;
    let page = audit.query(&q).await?.ok_or(ApiError::AuditNotConfigured)?;
    Ok(Json(AuditPage {
        records: page.records.iter().map(record_json).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// A record as the API shows it: its columns, `timestamp` in RFC 3339.
pub fn record_json(r: &AuditRecord) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(fields) = v.as_object_mut() {
        fields.remove("timestamp_us");
        let ms = u64::try_from(r.timestamp_us / 1000).unwrap_or(0);
        fields.insert("timestamp".into(), format_rfc3339(ms).into());
    }
    v
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::InvalidCursor => ApiError::bad_request("invalid_cursor", e.to_string()),
            QueryError::Invalid(message) => ApiError::bad_request("invalid_query", message),
            QueryError::Redis(q) => q.into(),
            QueryError::Io(e) => ApiError::Internal(format!("audit files: {e}")),
        }
    }
}

/// Checks every parameter; a bad one is a 400 naming it.
fn audit_query(p: AuditParams) -> Result<AuditQuery, ApiError> {
    let limit = p
        .limit
        .map_or(DEFAULT_LIMIT, |l| usize::try_from(l).unwrap_or(usize::MAX));
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be 1..={MAX_LIMIT}, not {limit}"),
        ));
    }
    let since_ms = time("since", p.since)?;
    let until_ms = time("until", p.until)?;
    if let (Some(since), Some(until)) = (since_ms, until_ms)
        && since > until
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            "since must not be after until",
        ));
    }
    let cursor = p.cursor.filter(|c| !c.is_empty());
    if let Some(c) = &cursor {
        query::parse_cursor(c)?;
    }
    Ok(AuditQuery {
        job_id: name("job_id", p.job_id)?,
        since_ms,
        until_ms,
        actor: name("actor", p.actor)?,
        decision: word("decision", p.decision)?,
        failure_type: word("failure_type", p.failure_type)?,
        operation_id: name("operation_id", p.operation_id)?,
        dry_run: p.dry_run,
        limit,
        cursor,
    })
}

/// A job id, actor or operation id: bounded, no control characters; empty means unset.
fn name(param: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(v) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if v.len() > MAX_NAME_BYTES || v.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("{param} must be at most {MAX_NAME_BYTES} bytes without control characters"),
        ));
    }
    Ok(Some(v))
}

/// A decision or failure type: `[a-z0-9_]{1,64}`, e.g. `blocked_cooldown`.
fn word(param: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(v) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let ok = v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !ok {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("{param} is 1-64 characters of [a-z0-9_], e.g. blocked_cooldown"),
        ));
    }
    Ok(Some(v))
}

/// A time: RFC 3339 (`2026-11-29T12:00:00Z`) or epoch milliseconds.
fn time(param: &str, value: Option<String>) -> Result<Option<u64>, ApiError> {
    let Some(v) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let ms = if v.bytes().all(|b| b.is_ascii_digit()) {
        v.parse::<u64>().ok()
    } else {
        parse_rfc3339(&v)
    };
    ms.filter(|&ms| ms <= MAX_TIME_MS).map(Some).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_query",
            format!(
                "{param} must be an RFC 3339 time such as 2026-11-29T12:00:00Z, or epoch \
                 milliseconds"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_checked() {
        let ok = audit_query(AuditParams {
            job_id: Some("j1".into()),
            since: Some("2026-11-29T12:00:00Z".into()),
            until: Some("1795953600001".into()),
            decision: Some("retried".into()),
            cursor: Some("1795953600000-0".into()),
            ..AuditParams::default()
        })
        .unwrap();
        assert_eq!(ok.since_ms, Some(1_795_953_600_000));
        assert_eq!(ok.until_ms, Some(1_795_953_600_001));
        assert_eq!(ok.limit, DEFAULT_LIMIT);
        let bad = [
            AuditParams {
                limit: Some(0),
                ..AuditParams::default()
            },
            AuditParams {
                limit: Some(1001),
                ..AuditParams::default()
            },
            AuditParams {
                since: Some("yesterday".into()),
                ..AuditParams::default()
            },
            AuditParams {
                until: Some("99999999999999999999".into()),
                ..AuditParams::default()
            },
            AuditParams {
                since: Some("2".into()),
                until: Some("1".into()),
                ..AuditParams::default()
            },
            AuditParams {
                decision: Some("Retried".into()),
                ..AuditParams::default()
            },
            AuditParams {
                job_id: Some("a\nb".into()),
                ..AuditParams::default()
            },
            AuditParams {
                actor: Some("x".repeat(513)),
                ..AuditParams::default()
            },
        ];
        for p in bad {
            let e = audit_query(p).unwrap_err();
            assert_eq!(e.code(), "invalid_query", "{e}");
        }
        let e = audit_query(AuditParams {
            cursor: Some("nope".into()),
            ..AuditParams::default()
        })
        .unwrap_err();
        assert_eq!(e.code(), "invalid_cursor");
    }

    #[test]
    fn records_show_an_rfc3339_timestamp() {
        let r = AuditRecord::from_entry(
            crate::audit::StreamId {
                ms: 1_795_953_601_234,
                seq: 0,
            },
            &[("decision".into(), "retried".into())],
        );
        let v = record_json(&r);
        assert_eq!(v["timestamp"], "2026-11-29T12:00:01.234000Z");
        assert_eq!(v["record_id"], "1795953601234-0");
        assert!(v.get("timestamp_us").is_none());
        assert_eq!(v["job_id"], serde_json::Value::Null);
    }
}

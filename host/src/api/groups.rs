//! `/api/v1/jobs/failed/groups…`: failed jobs grouped by cause, from the failure index
//! (`crate::triage`), and its rebuild. Every answer costs O(groups), never O(failed jobs).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiPath, ApiQuery, ErrorBody, NoBody, NoQuery};
use super::jobs::{failure_type, name};
use crate::triage::read::{
    self, Group, GroupCursor, GroupDetail, GroupQuery, GroupSort, IndexState,
};

/// Most groups one page returns.
pub const MAX_GROUPS_PAGE: u32 = 500;
/// Groups a page returns when `limit` is not given.
pub const DEFAULT_GROUPS_PAGE: u32 = 50;
/// Longest search text accepted.
pub const MAX_SEARCH_BYTES: usize = 256;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(rebuild))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(default, deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct GroupsQuery {
    /// Only groups with failed jobs on this queue.
    queue: Option<String>,
    /// Only job types matching this glob (e.g. `app.tasks.*`).
    job_type: Option<String>,
    /// Only this failure type (`[a-z0-9_]{1,64}`).
    failure_type: Option<String>,
    /// Only retryable (or only non-retryable) groups.
    retryable: Option<bool>,
    /// Case-insensitive text in the job type, exception type, parameterized message or top
    /// frame (at most 256 bytes).
    q: Option<String>,
    /// `count` (default: most jobs first) or `last_seen` (newest failure first).
    sort: Option<String>,
    /// Groups per page, 1..=500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page, unchanged.
    cursor: Option<String>,
}

/// What `GET /api/v1/jobs/failed/groups` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct GroupsPage {
    groups: Vec<Group>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
    /// Failed jobs the index counts, over every group (not only this page's).
    total_jobs: u64,
    /// More groups exist than one query reads (20,000): narrow the filters.
    truncated: bool,
    /// The index's state: `built` is false until its first full pass has completed.
    index: IndexState,
}

/// Failed jobs grouped by cause, with counts, filters and search (role `read`).
#[utoipa::path(
    get,
    path = "/api/v1/jobs/failed/groups",
    tag = "groups",
    params(GroupsQuery),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "One page of groups", body = GroupsPage),
        (status = 400, description = "A malformed parameter (`invalid_query`, `invalid_cursor`)", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "The token's role is below `read`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Redis unavailable or request timeout", body = ErrorBody),
    )
)]
async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<GroupsQuery>,
    _: NoBody,
) -> Result<Json<GroupsPage>, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_GROUPS_PAGE);
    if !(1..=MAX_GROUPS_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be 1..={MAX_GROUPS_PAGE}, not {limit}"),
        ));
    }
    let sort = match q.sort.as_deref().unwrap_or("count") {
        "count" | "" => GroupSort::Count,
        "last_seen" => GroupSort::LastSeen,
        other => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("sort is `count` or `last_seen`, not {other:?}"),
            ));
        }
    };
    let query = GroupQuery {
        queue: name("queue", q.queue)?,
        job_type: name("job_type", q.job_type)?,
        failure_type: failure_type(q.failure_type)?,
        retryable: q.retryable,
        q: search(q.q)?,
        sort,
        limit: limit as usize,
        after: q
            .cursor
            .filter(|c| !c.is_empty())
            .map(|c| decode_group_cursor(&c))
            .transpose()?,
    };
    let mut conn = state.backend.connection();
    let page = read::groups(&mut conn, &query).await?;
    let index = read::state(&mut conn).await?;
    Ok(Json(GroupsPage {
        groups: page.groups,
        next_cursor: page.next_cursor.as_ref().map(encode_group_cursor),
        total_jobs: page.total_jobs,
        truncated: page.truncated,
        index,
    }))
}

/// One group: its example traceback and its failures per hour over the last 24 hours
/// (role `read`). Its jobs: `GET /api/v1/jobs/failed?group=`.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/failed/groups/{fingerprint}",
    tag = "groups",
    params(("fingerprint" = String, Path, description = "The group's fingerprint (16 hex characters)")),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The group", body = GroupDetail),
        (status = 400, description = "Not a fingerprint (`invalid_fingerprint`)", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "The token's role is below `read`", body = ErrorBody),
        (status = 404, description = "The index knows no such group (`not_found`)", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Redis unavailable or request timeout", body = ErrorBody),
    )
)]
async fn show(
    State(state): State<AppState>,
    ApiPath(fp): ApiPath<String>,
    _: ApiQuery<NoQuery>,
    _: NoBody,
) -> Result<Json<GroupDetail>, ApiError> {
    let fp = fingerprint(&fp)?;
    let mut conn = state.backend.connection();
    match read::group(&mut conn, &fp, crate::clock::now_ms()).await? {
        Some(g) => Ok(Json(g)),
        None => Err(ApiError::NotFound(format!("no failure group {fp}"))),
    }
}

/// What `POST /api/v1/jobs/failed/groups/rebuild` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Rebuild {
    /// When the rebuild was asked for (epoch ms); the reconciler holding the lease starts it
    /// at its next pass, and `index.built` is false until it completes.
    requested_ms: u64,
}

/// Rebuild the failure index from the failed registries, from scratch (role `admin`).
/// Counts read from the index are incomplete until the rebuild's first full pass ends.
#[utoipa::path(
    post,
    path = "/api/v1/jobs/failed/groups/rebuild",
    tag = "groups",
    security(("bearerAuth" = [])),
    responses(
        (status = 202, description = "The rebuild is asked for", body = Rebuild),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "The token's role is below `admin`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Redis unavailable or request timeout", body = ErrorBody),
    )
)]
async fn rebuild(
    State(state): State<AppState>,
    _: ApiQuery<NoQuery>,
    _: NoBody,
) -> Result<(StatusCode, Json<Rebuild>), ApiError> {
    let now = crate::clock::now_ms();
    let mut conn = state.backend.connection();
    read::request_rebuild(&mut conn, now).await?;
    Ok((StatusCode::ACCEPTED, Json(Rebuild { requested_ms: now })))
}

/// A fingerprint: 16 lowercase hex characters.
pub(crate) fn fingerprint(value: &str) -> Result<String, ApiError> {
    if value.len() == 16
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Ok(value.to_string());
    }
    Err(ApiError::bad_request(
        "invalid_fingerprint",
        "a group fingerprint is 16 lowercase hex characters, as the groups listing shows",
    ))
}

/// Search text: at most 256 bytes without control characters; empty means unset.
pub(crate) fn search(value: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(v) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    if v.len() > MAX_SEARCH_BYTES || v.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("q must be at most {MAX_SEARCH_BYTES} bytes without control characters"),
        ));
    }
    Ok(Some(v))
}

pub(crate) fn encode_group_cursor(c: &GroupCursor) -> String {
    let text = format!("{}:{}", c.key, c.fingerprint);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

pub(crate) fn decode_group_cursor(cursor: &str) -> Result<GroupCursor, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid_cursor",
            "cursor is not one this API returned (pass next_cursor unchanged)",
        )
    };
    if cursor.len() > 128 {
        return Err(bad());
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (key, fp) = text.split_once(':').ok_or_else(bad)?;
    let key: f64 = key.parse().map_err(|_| bad())?;
    if !key.is_finite() {
        return Err(bad());
    }
    Ok(GroupCursor {
        key,
        fingerprint: fingerprint(fp).map_err(|_| bad())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_cursors_round_trip_and_refuse_anything_else() {
        let c = GroupCursor {
            key: 42.0,
            fingerprint: "0123456789abcdef".into(),
        };
        assert_eq!(decode_group_cursor(&encode_group_cursor(&c)).unwrap(), c);
        for bad in ["", "x", "MTI6eno", &"A".repeat(200)] {
            assert!(decode_group_cursor(bad).is_err(), "{bad}");
        }
        assert!(fingerprint("0123456789ABCDEF").is_err());
        assert!(fingerprint("0123456789abcde").is_err());
    }
}

//! `/ui/groups` (the causes, filtered and paged) and `/ui/groups/{fingerprint}` (one cause:
//! its traceback, its policy and what it decides now, its jobs, and the actions).

use crate::redis_link::Link;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::jobs::JobRow;
use super::{Chrome, PAGE_ROWS, filled, html, pager};
use crate::api::groups as api_groups;
use crate::api::jobs as api_jobs;
use crate::triage::read::{self, Group, GroupQuery, GroupSort};
use crate::ui::format::{self, When, failure_label, thousands};
use crate::ui::{UiError, UiState, Viewer, svg};

/// A group as a row of a table.
pub struct GroupRow {
    pub fingerprint: String,
    pub job_type: String,
    pub exc_type: String,
    pub failure_type: String,
    pub failure_label: String,
    pub retryable: bool,
    pub count: String,
    pub last_seen: Option<When>,
    pub message: String,
    pub top_frame: String,
    pub spark: String,
    pub broken: bool,
}

impl GroupRow {
    /// The rows of a page of groups, with their sparklines (one pipelined read).
    pub async fn page(conn: &mut Link, groups: Vec<Group>, now: u64) -> Result<Vec<Self>, UiError> {
        let fps: Vec<String> = groups.iter().map(|g| g.fingerprint.clone()).collect();
        let hours = read::groups_hourly(conn, &fps, now).await?;
        Ok(groups
            .into_iter()
            .zip(hours)
            .map(|(g, h)| Self {
                failure_label: failure_label(&g.failure_type),
                count: thousands(g.count),
                last_seen: When::of_rfc3339(&g.last_seen, now),
                message: format::truncate(&g.message, 160),
                spark: svg::sparkline(&h, 96, 22),
                fingerprint: g.fingerprint,
                job_type: g.job_type,
                exc_type: g.exc_type,
                failure_type: g.failure_type,
                retryable: g.retryable,
                top_frame: g.top_frame,
                broken: g.broken,
            })
            .collect())
    }
}

/// The list's filters, as they appear in the URL.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct GroupFilters {
    pub queue: String,
    pub job_type: String,
    pub failure_type: String,
    /// `""`, `true` or `false`.
    pub retryable: String,
    pub q: String,
    /// `count` (default) or `last_seen`.
    pub sort: String,
    pub cursor: String,
}

impl GroupFilters {
    /// The query string of these filters (no cursor).
    fn query(&self) -> String {
        format::query(&[
            ("queue", &self.queue),
            ("job_type", &self.job_type),
            ("failure_type", &self.failure_type),
            ("retryable", &self.retryable),
            ("q", &self.q),
            ("sort", &self.sort),
        ])
    }
}

#[derive(Template)]
#[template(path = "groups.html")]
struct GroupsPage {
    chrome: Chrome,
    f: GroupFilters,
    rows: Vec<GroupRow>,
    total_jobs: String,
    next: Option<String>,
    first: Option<String>,
    queues: Vec<String>,
    failure_types: Vec<String>,
    truncated: bool,
}

pub fn retryable_filter(value: &str) -> Result<Option<bool>, UiError> {
    match value {
        "" => Ok(None),
        "true" => Ok(Some(true)),
        "false" => Ok(Some(false)),
        other => Err(UiError::bad_request(format!(
            "retryable is true, false or empty, not {other:?}"
        ))),
    }
}

pub async fn list(
    State(ui): UiState,
    viewer: Viewer,
    Query(f): Query<GroupFilters>,
) -> Result<Response, UiError> {
    let now = crate::clock::now_ms();
    let sort = match f.sort.as_str() {
        "" | "count" => GroupSort::Count,
        "last_seen" => GroupSort::LastSeen,
        other => {
            return Err(UiError::bad_request(format!(
                "sort is count or last_seen, not {other:?}"
            )));
        }
    };
    let query = GroupQuery {
        queue: api_jobs::name("queue", filled(&f.queue))?,
        job_type: api_jobs::name("job_type", filled(&f.job_type))?,
        failure_type: api_jobs::failure_type(filled(&f.failure_type))?,
        retryable: retryable_filter(&f.retryable)?,
        q: api_groups::search(filled(&f.q))?,
        sort,
        limit: PAGE_ROWS,
        after: filled(&f.cursor)
            .map(|c| api_groups::decode_group_cursor(&c))
            .transpose()?,
    };
    let mut conn = ui.app.backend.connection();
    let page = read::groups(&mut conn, &query).await?;
    let counts = read::counts(&mut conn).await?;
    let rows = GroupRow::page(&mut conn, page.groups, now).await?;
    let (first, next) = pager(
        "/ui/groups",
        &f.query(),
        &f.cursor,
        page.next_cursor
            .as_ref()
            .map(api_groups::encode_group_cursor),
    );
    Ok(html(&GroupsPage {
        chrome: Chrome::new(viewer, "groups", "Groups"),
        rows,
        total_jobs: thousands(page.total_jobs),
        next,
        first,
        queues: counts.by_queue().into_keys().collect(),
        failure_types: counts.by_type().into_keys().collect(),
        truncated: page.truncated,
        f,
    }))
}

/// What the bound policy decides for a page of the group's jobs, counted.
pub struct DecisionTally {
    pub label: String,
    pub count: u64,
    pub class: &'static str,
}

#[derive(Template)]
#[template(path = "group.html")]
struct GroupPage {
    chrome: Chrome,
    g: GroupRow,
    first_seen: Option<When>,
    queues: Vec<(String, String)>,
    traceback: String,
    example_job_id: String,
    policy_name: String,
    policy_digest: String,
    policy_params: String,
    tallies: Vec<DecisionTally>,
    tally_of: usize,
    jobs: Vec<JobRow>,
    next: Option<String>,
    chart: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Cursor {
    cursor: String,
}

pub async fn show(
    State(ui): UiState,
    viewer: Viewer,
    Path(fp): Path<String>,
    Query(c): Query<Cursor>,
) -> Result<Response, UiError> {
    let now = crate::clock::now_ms();
    let fp = api_groups::fingerprint(&fp)?;
    let mut conn = ui.app.backend.connection();
    let Some(detail) = read::group(&mut conn, &fp, now).await? else {
        return Err(UiError::not_found(format!(
            "The failure index knows no group {fp}: its jobs may have been retried or deleted."
        )));
    };
    let hourly: Vec<u64> = detail.hourly.iter().map(|h| h.count).collect();
    let group = detail.group;
    let table = ui.app.service.table();
    let binding = table.resolve(&group.job_type);
    let policy = &binding.active.policy;
    let filter = crate::retry::JobFilter {
        group: Some(fp.clone()),
        ..crate::retry::JobFilter::default()
    };
    let cursor = (!c.cursor.is_empty())
        .then(|| crate::api::views::decode_cursor(&c.cursor))
        .transpose()?;
    let page = ui
        .app
        .service
        .list(&filter, cursor, PAGE_ROWS)
        .await
        .map_err(crate::api::ApiError::from)?;
    let next = page.next_cursor.as_ref().map(|r| {
        format!(
            "/ui/groups/{fp}?cursor={}",
            format::url_encode(&crate::api::views::encode_cursor(r))
        )
    });
    let jobs: Vec<JobRow> = page.jobs.into_iter().map(|v| JobRow::new(v, now)).collect();
    let tallies = DecisionTally::of(&jobs);
    let queues = group
        .queues
        .iter()
        .map(|(q, n)| (q.clone(), thousands(*n)))
        .collect();
    let first_seen = When::of_rfc3339(&group.first_seen, now);
    let mut rows = GroupRow::page(&mut conn, vec![group], now).await?;
    let g = rows
        .pop()
        .ok_or_else(|| UiError::internal("a group row went missing"))?;
    Ok(html(&GroupPage {
        chrome: Chrome::new(viewer, "groups", format!("Group {fp}")),
        first_seen,
        queues,
        traceback: detail.sample_traceback,
        example_job_id: detail.example_job_id,
        policy_name: format!("{} {}", policy.info().name, policy.info().version),
        policy_digest: policy.digest().to_string(),
        policy_params: binding.active.params_json.clone(),
        tally_of: jobs.len(),
        tallies,
        jobs,
        next,
        chart: svg::hour_bars(
            &hourly
                .iter()
                .enumerate()
                .map(|(i, n)| svg::HourBar {
                    label: detail
                        .hourly
                        .get(i)
                        .and_then(|h| h.hour.get(11..16))
                        .unwrap_or("")
                        .to_string(),
                    failures: *n,
                    retries: 0,
                })
                .collect::<Vec<_>>(),
        ),
        g,
    }))
}

impl DecisionTally {
    /// "retry now", "wait until …", "hold: reason" over `jobs`, most common first.
    fn of(jobs: &[JobRow]) -> Vec<Self> {
        let mut map: std::collections::BTreeMap<(String, &'static str), u64> = Default::default();
        for j in jobs {
            *map.entry((j.decision_summary(), j.action_class()))
                .or_default() += 1;
        }
        let mut out: Vec<Self> = map
            .into_iter()
            .map(|((label, class), count)| Self {
                label,
                count,
                class,
            })
            .collect();
        out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.label.cmp(&b.label)));
        out
    }
}

//! Shadow experiments: how a binding's shadow policy would have decided, next to what its
//! acting policy decided, from the audit trail (each decision record of a binding with a
//! shadow carries `shadow_policy_digest` and `shadow_decision`; see `retry::service`).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::redis_link::Link;
use serde::{Deserialize, Serialize};

use crate::audit::AuditStore;
use crate::audit::query::{self, AuditQuery, QueryError};

/// Most records one report examines (newest first); `complete` says whether that covered
/// the whole window.
pub const MAX_EXAMINED: u64 = 200_000;
/// Examples kept per experiment.
pub const MAX_EXAMPLES: usize = 10;

/// What a decision does, for comparing two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Retry,
    Hold,
    Error,
}

fn action(outcome: &str) -> Option<Action> {
    match outcome {
        "retried" | "blocked_cooldown" => Some(Action::Retry),
        "blocked_max_attempts"
        | "blocked_non_retryable"
        | "blocked_unknown"
        | "blocked_by_policy" => Some(Action::Hold),
        "policy_error" => Some(Action::Error),
        _ => None,
    }
}

/// How two decisions differ; `None` when they agree (same action, and for a retry the same
/// time; for a hold the same kind).
pub fn compare(
    active: &str,
    active_at: Option<u64>,
    shadow: &str,
    shadow_at: Option<u64>,
) -> Option<&'static str> {
    match (action(active)?, action(shadow)?) {
        (Action::Retry, Action::Retry) if active_at == shadow_at => None,
        (Action::Retry, Action::Retry) => Some("different_time"),
        (Action::Retry, Action::Hold) => Some("active_retries_shadow_holds"),
        (Action::Hold, Action::Retry) => Some("active_holds_shadow_retries"),
        (Action::Hold, Action::Hold) if active == shadow => None,
        (Action::Hold, Action::Hold) => Some("different_hold"),
        (Action::Error, Action::Error) => None,
        (Action::Error, _) => Some("active_error"),
        (_, Action::Error) => Some("shadow_error"),
    }
}

/// The shadow's side of one record, as `retry::ShadowDecision` writes it.
#[derive(Debug, Clone, Deserialize)]
struct Shadow {
    digest: String,
    pattern: String,
    outcome: String,
    retry_at_ms: Option<u64>,
    active_outcome: String,
    active_retry_at_ms: Option<u64>,
}

/// One disagreement, as an example.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Example {
    pub record_id: String,
    pub job_id: Option<String>,
    pub job_type: Option<String>,
    pub kind: String,
    pub active_outcome: String,
    pub active_retry_at_ms: Option<u64>,
    pub shadow_outcome: String,
    pub shadow_retry_at_ms: Option<u64>,
}

/// One binding's experiment: its acting and shadow policies.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Experiment {
    pub pattern: String,
    pub policy_digest: String,
    pub shadow_digest: String,
    /// Decisions with both verdicts (dry runs included).
    pub decisions: u64,
    pub agreed: u64,
    /// `agreed / decisions`.
    pub agreement_rate: f64,
    /// Disagreements by kind: `active_retries_shadow_holds`, `active_holds_shadow_retries`,
    /// `different_time`, `different_hold`, `active_error`, `shadow_error`.
    pub disagreements: BTreeMap<String, u64>,
    /// The newest disagreements, at most 10.
    pub examples: Vec<Example>,
}

/// `GET /api/v1/policies/experiments`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ExperimentReport {
    pub since_ms: u64,
    /// Records read (newest first).
    pub examined: u64,
    /// Whether every record since `since_ms` was read (false past 200,000).
    pub complete: bool,
    pub experiments: Vec<Experiment>,
}

/// Adds records to experiments; a pure fold, tested without Redis.
#[derive(Debug, Default)]
pub struct Tally {
    by_key: BTreeMap<(String, String, String), Experiment>,
}

impl Tally {
    /// Adds one record's shadow (the `shadow_decision` JSON); records without one are ignored.
    pub fn add(
        &mut self,
        record_id: &str,
        job_id: Option<&str>,
        job_type: Option<&str>,
        policy_digest: Option<&str>,
        shadow_decision: Option<&str>,
    ) {
        let Some(shadow) = shadow_decision.and_then(|j| serde_json::from_str::<Shadow>(j).ok())
        else {
            return;
        };
        let policy = policy_digest.unwrap_or_default().to_string();
        let e = self
            .by_key
            .entry((
                shadow.pattern.clone(),
                policy.clone(),
                shadow.digest.clone(),
            ))
            .or_insert_with(|| Experiment {
                pattern: shadow.pattern.clone(),
                policy_digest: policy,
                shadow_digest: shadow.digest.clone(),
                decisions: 0,
                agreed: 0,
                agreement_rate: 0.0,
                disagreements: BTreeMap::new(),
                examples: Vec::new(),
            });
        e.decisions += 1;
        match compare(
            &shadow.active_outcome,
            shadow.active_retry_at_ms,
            &shadow.outcome,
            shadow.retry_at_ms,
        ) {
            None => e.agreed += 1,
            Some(kind) => {
                *e.disagreements.entry(kind.to_string()).or_default() += 1;
                if e.examples.len() < MAX_EXAMPLES {
                    e.examples.push(Example {
                        record_id: record_id.to_string(),
                        job_id: job_id.map(str::to_string),
                        job_type: job_type.map(str::to_string),
                        kind: kind.to_string(),
                        active_outcome: shadow.active_outcome,
                        active_retry_at_ms: shadow.active_retry_at_ms,
                        shadow_outcome: shadow.outcome,
                        shadow_retry_at_ms: shadow.retry_at_ms,
                    });
                }
            }
        }
        e.agreement_rate = e.agreed as f64 / e.decisions as f64;
    }

    pub fn finish(self) -> Vec<Experiment> {
        self.by_key.into_values().collect()
    }
}

/// The experiments of every binding with a shadow, from the audit records since `since_ms`.
pub async fn report(
    conn: &mut Link,
    dir: &Arc<AuditStore>,
    since_ms: u64,
) -> Result<ExperimentReport, QueryError> {
    let mut tally = Tally::default();
    let mut q = AuditQuery {
        since_ms: Some(since_ms),
        limit: query::MAX_LIMIT,
        ..AuditQuery::default()
    };
    let mut examined = 0u64;
    let complete = loop {
        let page = query::query(conn, dir, &q).await?;
        for r in &page.records {
            examined += 1;
            tally.add(
                &r.record_id,
                r.job_id.as_deref(),
                r.job_type.as_deref(),
                r.policy_digest.as_deref(),
                r.shadow_decision.as_deref(),
            );
        }
        match page.next_cursor {
            Some(c) if examined < MAX_EXAMINED => q.cursor = Some(c),
            Some(_) => break false,
            None => break true,
        }
    };
    Ok(ExperimentReport {
        since_ms,
        examined,
        complete,
        experiments: tally.finish(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_whether_and_when() {
        let cases = [
            ("retried", Some(1), "retried", Some(1), None),
            ("retried", Some(1), "blocked_cooldown", Some(1), None),
            (
                "retried",
                Some(1),
                "blocked_cooldown",
                Some(9),
                Some("different_time"),
            ),
            (
                "retried",
                Some(1),
                "blocked_max_attempts",
                None,
                Some("active_retries_shadow_holds"),
            ),
            (
                "blocked_non_retryable",
                None,
                "retried",
                Some(1),
                Some("active_holds_shadow_retries"),
            ),
            (
                "blocked_non_retryable",
                None,
                "blocked_non_retryable",
                None,
                None,
            ),
            (
                "blocked_non_retryable",
                None,
                "blocked_max_attempts",
                None,
                Some("different_hold"),
            ),
            (
                "policy_error",
                None,
                "retried",
                Some(1),
                Some("active_error"),
            ),
            (
                "retried",
                Some(1),
                "policy_error",
                None,
                Some("shadow_error"),
            ),
        ];
        for (a, at, s, st, want) in cases {
            assert_eq!(compare(a, at, s, st), want, "{a} {s}");
        }
    }

    #[test]
    fn tallies_per_binding_with_examples() {
        let mut t = Tally::default();
        let shadow = |outcome: &str, at: Option<u64>| {
            serde_json::json!({
                "digest": "s", "pattern": "payments.*", "outcome": outcome, "retry_at_ms": at,
                "failure_type": null, "reason": "", "active_outcome": "retried",
                "active_retry_at_ms": 5,
            })
            .to_string()
        };
        t.add(
            "1-0",
            Some("a"),
            Some("payments.x"),
            Some("p"),
            Some(&shadow("retried", Some(5))),
        );
        t.add(
            "2-0",
            Some("b"),
            Some("payments.x"),
            Some("p"),
            Some(&shadow("blocked_unknown", None)),
        );
        t.add(
            "3-0",
            Some("c"),
            Some("payments.x"),
            Some("p"),
            Some(&shadow("retried", Some(6))),
        );
        t.add("4-0", Some("d"), Some("reports.x"), Some("p"), None);
        t.add(
            "5-0",
            Some("e"),
            Some("reports.x"),
            Some("p"),
            Some("not json"),
        );
        let out = t.finish();
        assert_eq!(out.len(), 1);
        let e = &out[0];
        assert_eq!((e.decisions, e.agreed), (3, 1));
        assert!((e.agreement_rate - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(e.disagreements["active_retries_shadow_holds"], 1);
        assert_eq!(e.disagreements["different_time"], 1);
        assert_eq!(e.examples.len(), 2);
        assert_eq!(e.examples[0].job_id.as_deref(), Some("b"));
    }
}

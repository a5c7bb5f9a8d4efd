//! Replay (`POST /api/v1/policies/{digest}/replay`): how a candidate policy's decisions would
//! differ from the bound policies' decisions — over the failed jobs in Redis now
//! (`RetryService::replay`) and over the policy decisions recorded in the audit trail
//! (`recorded`). Changes nothing and writes no audit record.
//!
//! A recorded decision is replayed from its record alone: the failure input columns, the
//! traceback (by `traceback_sha256`, from the audit directory's `_blobs/` or, before the
//! writer moved it, the Redis hash `retryguard:audit:blobs`), its `seed`, `params` and the
//! clock it was given (`now_ms`). The candidate is evaluated on that input at that clock.
//! Its opposite is the policy's verdict the record stands for: the record's `decision` is
//! what happened after the operator's options (`force`, `retry_only_retryable=false`) and the
//! atomic requeue (`already_requeued`, …), and a record carries no retry time, so the
//! recorded policy (`policy_digest`, never deleted from the registry) is evaluated again on
//! the same input at the same clock — policies are pure — and that verdict must agree with
//! what the record says (its `decision` and, with a shadow, the acting verdict recorded in
//! `shadow_decision`); a record it does not reproduce is `unreplayable`, never guessed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use crate::audit::query::{self, AuditQuery, QueryError};
use crate::audit::schema::AuditRecord;
use crate::audit::{AuditReader, AuditStore};
use crate::clock::now_ms;
use crate::policy::{Params, PolicyEngine};
use crate::queue::FailedJob;
use crate::queue::{JobRef, QueueBackend};
use crate::registry::{Bound, Registry, RegistryError};
use crate::retry::JobFilter;
use crate::retry::Outcome;
use crate::retry::RetryService;
use crate::retry::evaluate::{evaluate_cached, view_of};
use crate::retry::{JobView, RetryError};

/// Differing jobs or records shown per section.
pub const MAX_EXAMPLES: usize = 20;
/// Unreplayable records shown.
pub const MAX_UNREPLAYABLE_EXAMPLES: usize = 10;
/// Most audit records one replay reads (decisions or not), like the experiments' cap.
pub const MAX_EXAMINED: u64 = crate::analytics::experiments::MAX_EXAMINED;

/// `POST /api/v1/policies/{digest}/replay`: the candidate against the current failed jobs
/// and against the decisions recorded in the audit trail.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReplayReport {
    /// The candidate policy's digest.
    pub candidate: String,
    /// The candidate's params.
    pub params: BTreeMap<String, String>,
    /// The current failed jobs (`null` when `source` is `audit`).
    pub current: Option<CurrentReplay>,
    /// The decisions recorded in the audit trail (`null` when `source` is `current`).
    pub recorded: Option<RecordedReplay>,
}

/// How a candidate's decisions differ from the bound ones: one section of a replay.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReplayTally {
    /// Decisions compared: current jobs evaluated by both, or recorded decisions replayed.
    pub jobs: u64,
    pub agreed: u64,
    /// Differences by kind (`active_retries_shadow_holds` = the bound policy would retry
    /// and the candidate hold, and so on: the kinds of `/api/v1/policies/experiments`;
    /// `shadow_error` = the candidate failed).
    pub differences: BTreeMap<String, u64>,
    /// The candidate's outcomes (`retried`, `blocked_cooldown`, …) and the bound ones'.
    pub candidate_outcomes: BTreeMap<String, u64>,
    pub bound_outcomes: BTreeMap<String, u64>,
    /// Up to 20 differences (for the audit: the newest).
    pub examples: Vec<ReplayExample>,
    /// False when a cap (`max_jobs`, `audit.max_records`, 200,000 records read) stopped it
    /// before everything was seen.
    pub complete: bool,
}

impl Default for ReplayTally {
    fn default() -> Self {
        Self {
            jobs: 0,
            agreed: 0,
            differences: BTreeMap::new(),
            candidate_outcomes: BTreeMap::new(),
            bound_outcomes: BTreeMap::new(),
            examples: Vec::new(),
            complete: true,
        }
    }
}

/// The current failed jobs, each beside the policy its job type is bound to now.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct CurrentReplay {
    /// The clock both were evaluated at.
    pub now_ms: u64,
    #[serde(flatten)]
    pub tally: ReplayTally,
}

/// The policy decisions recorded in the audit trail, each replayed at its recorded clock
/// beside the verdict it records ("bound" = the policy that made the decision).
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct RecordedReplay {
    /// False when the server has no audit directory: nothing was replayed.
    pub configured: bool,
    /// Why nothing was replayed, when so.
    pub message: Option<String>,
    /// The window (record times): inclusive, epoch ms.
    pub since_ms: u64,
    /// Exclusive, epoch ms.
    pub until_ms: u64,
    /// Records read in the window (newest first).
    pub examined: u64,
    /// Records that are not policy decisions: operator actions, retry outcomes, binding
    /// changes, decisions on jobs already gone (no input recorded).
    pub skipped: u64,
    /// Policy decisions the filter (queue, job type) left out.
    pub filtered_out: u64,
    /// Policy decisions that could not be replayed, by reason (`traceback_missing`,
    /// `traceback_mismatch`, `bad_record`, `bound_policy_unavailable`, `not_reproduced`).
    pub unreplayable: u64,
    pub unreplayable_reasons: BTreeMap<String, u64>,
    /// The newest unreplayable records, at most 10.
    pub unreplayable_examples: Vec<Unreplayable>,
    #[serde(flatten)]
    pub tally: ReplayTally,
}

/// A recorded decision that could not be replayed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Unreplayable {
    pub record_id: String,
    pub job_id: Option<String>,
    pub reason: String,
    pub detail: String,
}

/// One job (or recorded decision) on which the candidate differs from the bound policy.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReplayExample {
    /// The audit record replayed (`null` for a current job).
    pub record_id: Option<String>,
    /// What the record says happened (its `decision`), for a recorded decision.
    pub recorded_decision: Option<String>,
    /// The clock both were evaluated at (a record's `now_ms`).
    pub at_ms: u64,
    pub job_id: String,
    pub job_type: String,
    pub kind: String,
    pub bound_digest: String,
    pub bound_outcome: String,
    pub bound_retry_at_ms: Option<u64>,
    pub bound_failure_type: Option<String>,
    pub candidate_outcome: String,
    pub candidate_retry_at_ms: Option<u64>,
    pub candidate_failure_type: Option<String>,
    pub candidate_reason: String,
}

/// Where a compared decision came from, for its example.
#[derive(Debug, Clone, Copy)]
struct Origin<'a> {
    pub record_id: Option<&'a str>,
    pub recorded_decision: Option<&'a str>,
    pub at_ms: u64,
}

impl ReplayTally {
    /// Counts one decision of both policies on the same input at the same clock.
    fn add(&mut self, bound: &JobView, candidate: &JobView, origin: Origin<'_>) {
        self.jobs += 1;
        *self
            .bound_outcomes
            .entry(bound.outcome.as_str().to_string())
            .or_default() += 1;
        *self
            .candidate_outcomes
            .entry(candidate.outcome.as_str().to_string())
            .or_default() += 1;
        let Some(kind) = crate::analytics::experiments::compare(
            bound.outcome.as_str(),
            bound.retry_at_ms,
            candidate.outcome.as_str(),
            candidate.retry_at_ms,
        ) else {
            self.agreed += 1;
            return;
        };
        *self.differences.entry(kind.to_string()).or_default() += 1;
        if self.examples.len() < MAX_EXAMPLES {
            let failure_type =
                |v: &JobView| v.classification.as_ref().map(|c| c.failure_type.clone());
            self.examples.push(ReplayExample {
                record_id: origin.record_id.map(str::to_string),
                recorded_decision: origin.recorded_decision.map(str::to_string),
                at_ms: origin.at_ms,
                job_id: bound.job.id.clone(),
                job_type: bound.job.job_type.clone(),
                kind: kind.to_string(),
                bound_digest: bound.policy_digest.clone(),
                bound_outcome: bound.outcome.as_str().to_string(),
                bound_retry_at_ms: bound.retry_at_ms,
                bound_failure_type: failure_type(bound),
                candidate_outcome: candidate.outcome.as_str().to_string(),
                candidate_retry_at_ms: candidate.retry_at_ms,
                candidate_failure_type: failure_type(candidate),
                candidate_reason: candidate.reason.clone(),
            });
        }
    }
}

impl RecordedReplay {
    /// The section of a server without an audit directory.
    pub fn not_configured(since_ms: u64, until_ms: u64) -> Self {
        Self {
            configured: false,
            message: Some(
                "no audit directory is configured (`[audit] path`): no recorded decision to replay"
                    .into(),
            ),
            since_ms,
            until_ms,
            ..Self::default()
        }
    }

    fn unreplayable(&mut self, record: &AuditRecord, reason: &'static str, detail: String) {
        self.unreplayable += 1;
        *self
            .unreplayable_reasons
            .entry(reason.to_string())
            .or_default() += 1;
        if self.unreplayable_examples.len() < MAX_UNREPLAYABLE_EXAMPLES {
            self.unreplayable_examples.push(Unreplayable {
                record_id: record.record_id.clone(),
                job_id: record.job_id.clone(),
                reason: reason.to_string(),
                detail,
            });
        }
    }
}

/// Which recorded decisions a replay reads.
#[derive(Debug, Clone)]
pub struct RecordedWindow {
    /// Inclusive, epoch ms.
    pub since_ms: u64,
    /// Exclusive, epoch ms.
    pub until_ms: u64,
    /// Queue and job-type glob (the other fields are ignored).
    pub filter: JobFilter,
    /// Most decisions replayed (unreplayable ones included).
    pub max_records: u64,
}

/// Why a replay of recorded decisions failed as a whole (a record's own problem is counted
/// in the report instead).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Retry(#[from] RetryError),
}

/// What a record is to a replay.
enum Kind {
    /// Not a policy decision (or one without its input).
    Skip,
    /// A decision the filter leaves out.
    Filtered,
    Decision,
}

fn kind_of(r: &AuditRecord, filter: &JobFilter) -> Kind {
    let decision = r.seed.is_some()
        && r.job_id.is_some()
        && r.policy_digest.is_some()
        && r.now_ms.is_some()
        && r.params.is_some();
    if !decision {
        return Kind::Skip;
    }
    let queue = r.queue.as_deref().unwrap_or_default();
    let job_type = r.job_type.as_deref().unwrap_or_default();
    if filter.matches_job(queue, job_type, None) {
        Kind::Decision
    } else {
        Kind::Filtered
    }
}

/// Whether the re-evaluated verdict `bound` is the one the record stands for: the acting
/// verdict of its `shadow_decision` exactly, else one its `decision` allows (given `forced`).
fn reproduced(r: &AuditRecord, bound: &JobView) -> Result<(), String> {
    let verdict = bound.outcome;
    if let Some(shadow) = r
        .shadow_decision
        .as_deref()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
    {
        let outcome = shadow["active_outcome"].as_str().unwrap_or_default();
        let at = shadow["active_retry_at_ms"].as_u64();
        if outcome != verdict.as_str() || at != bound.retry_at_ms {
            return Err(format!(
                "the record's acting verdict was {outcome} (retry at {at:?}); {} now gives {} (retry at {:?})",
                bound.policy_digest,
                verdict.as_str(),
                bound.retry_at_ms
            ));
        }
        return Ok(());
    }
    let ok = match r.decision.as_str() {
        // Nothing overrides a hold that was recorded as one.
        d @ ("blocked_cooldown"
        | "blocked_max_attempts"
        | "blocked_non_retryable"
        | "blocked_unknown"
        | "blocked_by_policy"
        | "policy_error") => d == verdict.as_str(),
        // A force retries over any verdict.
        _ if r.forced => true,
        // Went to the requeue: the verdict was a retry due now, or a non-retryable hold
        // let through (`retry_only_retryable=false`).
        "retried" | "already_requeued" | "stale_decision" | "not_found" | "unknown" => {
            matches!(verdict, Outcome::Retried | Outcome::BlockedNonRetryable)
        }
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the record says {}; {} now gives {}",
            r.decision,
            bound.policy_digest,
            verdict.as_str()
        ))
    }
}

/// What-if over the present: evaluates `candidate` over the current failed jobs matching
/// `filter` (at most `max_jobs`) beside the policy each is bound to now, and reports how their
/// decisions differ. Changes nothing and writes no audit record.
pub async fn current<B: QueueBackend>(
    service: &RetryService<B>,
    candidate: &Bound,
    filter: &JobFilter,
    max_jobs: usize,
) -> Result<CurrentReplay, RetryError> {
    let now = now_ms();
    let mut queues = service.backend().failed_queues().await?;
    if let Some(q) = &filter.queue {
        queues.retain(|name| name == q);
    }
    let mut report = CurrentReplay {
        now_ms: now,
        ..CurrentReplay::default()
    };
    'queues: for queue in queues {
        let mut after: Option<JobRef> = None;
        loop {
            let (evaluated, last) = service
                .evaluate_page(&queue, after.as_ref(), filter, now)
                .await?;
            let Some(last) = last else { break };
            after = Some(last);
            let engine = Arc::clone(service.engine());
            let cache = Arc::clone(service.cache());
            let candidate = candidate.clone();
            let compared: Vec<_> = tokio::task::spawn_blocking(move || {
                evaluated
                    .into_iter()
                    .map(|e| {
                        let eval = evaluate_cached(
                            &engine,
                            &cache,
                            &e.view.job,
                            &e.input,
                            &candidate,
                            now,
                        );
                        let c = view_of(
                            e.view.job.clone(),
                            e.view.attempts,
                            &candidate.policy,
                            eval,
                            now,
                        );
                        (e, c)
                    })
                    .collect()
            })
            .await
            .map_err(|err| RetryError::Engine(err.to_string()))?;
            let origin = Origin {
                record_id: None,
                recorded_decision: None,
                at_ms: now,
            };
            for (e, c) in compared {
                report.tally.add(&e.view, &c, origin);
                if report.tally.jobs as usize >= max_jobs {
                    report.tally.complete = false;
                    break 'queues;
                }
            }
        }
    }
    Ok(report)
}

/// One decision record made ready: its input and the policy that made it.
struct Ready {
    record: AuditRecord,
    input: crate::policy::FailureInput,
    now: u64,
    bound: Bound,
}

/// Replays the candidate over the policy decisions recorded in `window`, newest first.
pub async fn recorded(
    engine: &Arc<PolicyEngine>,
    audit: &AuditReader,
    dir: &Arc<AuditStore>,
    registry: &Registry,
    candidate: &Bound,
    window: &RecordedWindow,
) -> Result<RecordedReplay, ReplayError> {
    let mut out = RecordedReplay {
        configured: true,
        since_ms: window.since_ms,
        until_ms: window.until_ms,
        ..RecordedReplay::default()
    };
    // The recorded policies with their recorded params, by (digest, params JSON).
    let mut policies: HashMap<(String, String), Result<Bound, String>> = HashMap::new();
    let mut q = AuditQuery {
        since_ms: Some(window.since_ms),
        until_ms: Some(window.until_ms),
        limit: query::MAX_LIMIT,
        ..AuditQuery::default()
    };
    let mut attempted = 0u64;
    loop {
        let page = query::query(&mut audit.connection(), dir, &q).await?;
        let read = page.records.len();
        let mut decisions = Vec::new();
        let mut capped = false;
        for (i, r) in page.records.into_iter().enumerate() {
            out.examined += 1;
            match kind_of(&r, &window.filter) {
                Kind::Skip => out.skipped += 1,
                Kind::Filtered => out.filtered_out += 1,
                Kind::Decision => {
                    decisions.push(r);
                    attempted += 1;
                }
            }
            let more = i + 1 < read || page.next_cursor.is_some();
            if more && (attempted >= window.max_records || out.examined >= MAX_EXAMINED) {
                capped = true;
                break;
            }
        }
        let shas: HashSet<String> = decisions
            .iter()
            .filter_map(|r| r.traceback_sha256.clone())
            .collect();
        let texts = audit.tracebacks(shas.into_iter().collect()).await?;
        let mut ready = Vec::new();
        for r in decisions {
            let Some(sha) = r.traceback_sha256.as_deref() else {
                out.unreplayable(&r, "bad_record", "no traceback_sha256".into());
                continue;
            };
            let Some(text) = texts.get(sha) else {
                out.unreplayable(
                    &r,
                    "traceback_missing",
                    format!("traceback {sha} is in neither the audit directory nor Redis"),
                );
                continue;
            };
            if sha256_hex(text) != sha {
                out.unreplayable(
                    &r,
                    "traceback_mismatch",
                    format!("the stored traceback does not hash to {sha}"),
                );
                continue;
            }
            let Some(now) = r.now_ms.and_then(|n| u64::try_from(n).ok()) else {
                out.unreplayable(&r, "bad_record", "now_ms is negative".into());
                continue;
            };
            let params_json = r.params.clone().unwrap_or_default();
            let Ok(params) = serde_json::from_str::<BTreeMap<String, String>>(&params_json) else {
                out.unreplayable(
                    &r,
                    "bad_record",
                    format!("params {params_json} is not a JSON object of strings"),
                );
                continue;
            };
            let digest = r.policy_digest.clone().unwrap_or_default();
            let key = (digest, params_json);
            if !policies.contains_key(&key) {
                let params: Params = params.into_iter().collect();
                let loaded = match registry.candidate(&key.0, &params).await {
                    Ok(b) => Ok(b),
                    Err(RegistryError::Redis(e)) => return Err(RetryError::Redis(e).into()),
                    Err(e) => Err(e.to_string()),
                };
                policies.insert(key.clone(), loaded);
            }
            let bound = match &policies[&key] {
                Ok(b) => b.clone(),
                Err(e) => {
                    out.unreplayable(&r, "bound_policy_unavailable", e.clone());
                    continue;
                }
            };
            let Some(input) = r.failure_input(text.clone()) else {
                out.unreplayable(&r, "bad_record", "no failure input".into());
                continue;
            };
            ready.push(Ready {
                record: r,
                input,
                now,
                bound,
            });
        }
        let engine = Arc::clone(engine);
        let candidate = candidate.clone();
        let compared: Vec<(AuditRecord, JobView, JobView)> =
            tokio::task::spawn_blocking(move || {
                ready
                    .into_iter()
                    .map(
                        |Ready {
                             record,
                             input,
                             now,
                             bound,
                         }| {
                            let eval = |b: &Bound| {
                                let e =
                                    engine.evaluate_with(&b.policy, &input, &b.params, now, None);
                                view_of(job_of(&input), input.attempts, &b.policy, e, now)
                            };
                            let b = eval(&bound);
                            let c = eval(&candidate);
                            (record, b, c)
                        },
                    )
                    .collect()
            })
            .await
            .map_err(|e| RetryError::Engine(e.to_string()))?;
        for (record, bound, candidate) in compared {
            if let Err(why) = reproduced(&record, &bound) {
                out.unreplayable(&record, "not_reproduced", why);
                continue;
            }
            let origin = Origin {
                record_id: Some(&record.record_id),
                recorded_decision: Some(&record.decision),
                at_ms: record
                    .now_ms
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0),
            };
            out.tally.add(&bound, &candidate, origin);
        }
        match page.next_cursor {
            _ if capped => {
                out.tally.complete = false;
                break;
            }
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    Ok(out)
}

/// What `view_of` needs of a job, from a recorded input.
fn job_of(input: &crate::policy::FailureInput) -> FailedJob {
    FailedJob {
        id: input.job_id.clone(),
        queue: input.queue.clone(),
        job_type: input.job_type.clone(),
        status: input.job_status.clone(),
        created_at: String::new(),
        failed_at_ms: Some(input.failed_at_ms),
        exc_type: input.exc_type.clone(),
        exc_message: input.exc_message.clone(),
        traceback: String::new(),
        result_id: String::new(),
        retries_left: input.queue_retries_left,
        failure_ttl_seconds: None,
    }
}

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest as _, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(decision: &str, forced: bool, shadow: Option<&str>) -> AuditRecord {
        AuditRecord {
            record_id: "1-0".into(),
            decision: decision.into(),
            forced,
            shadow_decision: shadow.map(str::to_string),
            ..AuditRecord::default()
        }
    }

    fn view(outcome: Outcome, retry_at_ms: Option<u64>) -> JobView {
        JobView {
            job: job_of(&crate::policy::FailureInput::default()),
            attempts: 0,
            policy_digest: "p".into(),
            classification: None,
            outcome,
            reason: String::new(),
            retry_at_ms,
            hold_kind: None,
        }
    }

    #[test]
    fn a_verdict_must_reproduce_what_the_record_says() {
        let retry = view(Outcome::Retried, Some(5));
        let hold = view(Outcome::BlockedNonRetryable, None);
        let cooldown = view(Outcome::BlockedCooldown, Some(9));
        assert!(reproduced(&record("retried", false, None), &retry).is_ok());
        assert!(reproduced(&record("already_requeued", false, None), &retry).is_ok());
        // retry_only_retryable=false lets a non-retryable hold through.
        assert!(reproduced(&record("retried", false, None), &hold).is_ok());
        assert!(reproduced(&record("retried", false, None), &cooldown).is_err());
        assert!(reproduced(&record("retried", true, None), &cooldown).is_ok());
        assert!(reproduced(&record("blocked_cooldown", false, None), &cooldown).is_ok());
        assert!(reproduced(&record("blocked_cooldown", false, None), &retry).is_err());
        assert!(reproduced(&record("blocked_non_retryable", false, None), &hold).is_ok());
        let shadow = r#"{"active_outcome":"blocked_cooldown","active_retry_at_ms":9}"#;
        assert!(reproduced(&record("blocked_cooldown", false, Some(shadow)), &cooldown).is_ok());
        let later = view(Outcome::BlockedCooldown, Some(10));
        assert!(reproduced(&record("blocked_cooldown", false, Some(shadow)), &later).is_err());
    }

    #[test]
    fn only_decisions_with_their_input_are_replayed() {
        let filter = JobFilter {
            job_type: Some("payments.*".into()),
            ..JobFilter::default()
        };
        let decision = AuditRecord {
            job_id: Some("j".into()),
            job_type: Some("payments.charge".into()),
            queue: Some("default".into()),
            policy_digest: Some("p".into()),
            seed: Some(1),
            now_ms: Some(1),
            params: Some("{}".into()),
            decision: "retried".into(),
            ..AuditRecord::default()
        };
        assert!(matches!(kind_of(&decision, &filter), Kind::Decision));
        let other = AuditRecord {
            job_type: Some("reports.daily".into()),
            ..decision.clone()
        };
        assert!(matches!(kind_of(&other, &filter), Kind::Filtered));
        let started = AuditRecord {
            decision: "operation_started".into(),
            now_ms: Some(1),
            ..AuditRecord::default()
        };
        assert!(matches!(kind_of(&started, &filter), Kind::Skip));
        let gone = AuditRecord {
            seed: None,
            ..decision
        };
        assert!(matches!(kind_of(&gone, &filter), Kind::Skip));
    }
}

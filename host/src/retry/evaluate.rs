//! Evaluation: a failed job and its retry state become the policy's input, the bound policy
//! (and its shadow) judge it — the classification cached per policy — and the verdict is put
//! in the outcomes' vocabulary; `enforce` then applies the operator's options. Pure code over
//! the policy engine: no Redis, no queue.

use std::sync::Arc;

use super::filter::JobFilter;
use super::outcome::{JobOutcome, Outcome};
use super::state::RetryState;
use super::types::{JobView, RetryError, RetryOptions, ShadowDecision};
use crate::brake;
use crate::policy::types::derive_seed;
use crate::policy::{
    Classification, Decision, Digest, EvalError, Evaluation, FailureInput, HoldKind, Policy,
    PolicyEngine,
};
use crate::queue::FailedJob;
use crate::registry::{ActiveBinding, Bound, Table};

/// Classifications by (job id, results entry id, policy digest): a failure is classified
/// once per policy, so listing 100,000 failed jobs again does not re-run `classify` for each
/// (the decision still runs every time: it depends on the clock and the attempts).
#[derive(Debug, Default)]
pub struct ClassificationCache {
    entries: std::sync::Mutex<std::collections::HashMap<(String, String, Digest), Classification>>,
}

impl ClassificationCache {
    /// Most entries kept; the cache is emptied when it would grow past this. An entry is
    /// about 250 bytes (ids, digest, the classification's strings): at most ~12 MB.
    pub const CAPACITY: usize = 50_000;

    pub fn get(&self, key: &(String, String, Digest)) -> Option<Classification> {
        self.entries.lock().ok()?.get(key).cloned()
    }

    pub fn put(&self, key: (String, String, Digest), value: Classification) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= Self::CAPACITY {
                entries.clear();
            }
            entries.insert(key, value);
        }
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A job evaluated by the binding of its job type: what the list shows and the retry acts on.
#[derive(Debug, Clone)]
pub struct Evaluated {
    pub view: JobView,
    pub input: FailureInput,
    pub binding: Arc<ActiveBinding>,
    /// What the binding's shadow policy says of the same input (decisions only, not lists).
    pub shadow: Option<ShadowDecision>,
}

pub fn check_options(options: &RetryOptions) -> Result<(), RetryError> {
    if options.force
        && options
            .reason
            .as_deref()
            .is_none_or(|r| r.trim().is_empty())
    {
        return Err(RetryError::ForceWithoutReason);
    }
    Ok(())
}

pub fn not_found(job_id: &str, options: &RetryOptions, policy: &Policy) -> JobOutcome {
    JobOutcome {
        job_id: job_id.to_string(),
        queue: String::new(),
        job_type: String::new(),
        outcome: Outcome::NotFound,
        reason: "no such failed job".into(),
        classification: None,
        attempt: 0,
        policy_digest: policy.digest().to_string(),
        retry_at_ms: None,
        dry_run: options.dry_run,
        forced: false,
    }
}

/// Jobs in at most one chunk per core (and at least 64 jobs a chunk: below that a second
/// task costs more than it saves), in order.
pub fn split_for_cores<T>(jobs: Vec<T>) -> Vec<Vec<T>> {
    const MIN_CHUNK: usize = 64;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunks = cores.min(jobs.len().div_ceil(MIN_CHUNK)).max(1);
    let size = jobs.len().div_ceil(chunks).max(1);
    let mut out = Vec::with_capacity(chunks);
    let mut rest = jobs.into_iter();
    loop {
        let chunk: Vec<T> = rest.by_ref().take(size).collect();
        if chunk.is_empty() {
            break;
        }
        out.push(chunk);
    }
    out
}

/// One job: its binding's verdict, the filter, and (when asked) the shadow's verdict.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site; a struct would only rename them"
)]
pub fn evaluate_one(
    engine: &PolicyEngine,
    cache: &ClassificationCache,
    table: &Table,
    filter: &JobFilter,
    job: FailedJob,
    state: &RetryState,
    now: u64,
    shadows: bool,
    brakes: &brake::Snapshot,
) -> Option<Evaluated> {
    if !filter.matches_job(&job.queue, &job.job_type, job.failed_at_ms)
        || !filter.matches_failure(
            &job.job_type,
            &job.exc_type,
            &job.exc_message,
            &job.traceback,
        )
    {
        return None;
    }
    let binding = Arc::clone(table.resolve(&job.job_type));
    if filter.auto_retry_only && !binding.brakes.auto_retry {
        return None;
    }
    let mut input = failure_input(&job, state);
    let mut eval = evaluate_cached(engine, cache, &job, &input, &binding.active, now);
    // The brakes' state is the policy's to see: once the failure type (and so the breaker)
    // is known, judged again with it (the classification comes from the cache).
    if let Ok(e) = &eval {
        let key = brake::breaker_key(&binding.pattern, &e.classification.failure_type);
        let attributes = brake::attributes(brakes, &key, &binding.pattern);
        if !attributes.is_empty() {
            input.attributes = attributes;
            eval = evaluate_cached(engine, cache, &job, &input, &binding.active, now);
        }
    }
    let mut view = view_of(job, state.attempts, &binding.active.policy, eval, now);
    hold_if_open(&mut view, &binding, brakes, now);
    let matches = match &view.classification {
        Some(c) => filter.matches_classification(&c.failure_type, c.retryable),
        None => !filter.needs_classification(),
    };
    if !matches {
        return None;
    }
    // Same input, same clock; never acted on.
    let shadow = binding.shadow.as_ref().filter(|_| shadows).map(|s| {
        let eval = evaluate_cached(engine, cache, &view.job, &input, s, now);
        let v = verdict_of(eval, now);
        ShadowDecision {
            digest: s.policy.digest().to_string(),
            pattern: binding.pattern.clone(),
            outcome: v.outcome.as_str().to_string(),
            retry_at_ms: v.retry_at_ms,
            failure_type: v.classification.map(|c| c.failure_type),
            reason: v.reason,
            active_outcome: view.outcome.as_str().to_string(),
            active_retry_at_ms: view.retry_at_ms,
        }
    });
    Some(Evaluated {
        view,
        input,
        binding,
        shadow,
    })
}

/// A job the policy lets go now (or after a cooldown that ends sooner than the breaker lets
/// probes through) is held while its breaker is open (`circuit_open`, until then). Read-only: the breaker's transitions are made when a
/// retry asks it (`retry::brakes`).
fn hold_if_open(view: &mut JobView, binding: &ActiveBinding, brakes: &brake::Snapshot, now: u64) {
    let waits = matches!(view.outcome, Outcome::Retried | Outcome::BlockedCooldown);
    if !waits || brakes.breakers.is_empty() {
        return;
    }
    let Some(c) = &view.classification else {
        return;
    };
    let key = brake::breaker_key(&binding.pattern, &c.failure_type);
    let Some(b) = brakes.breakers.get(&key).filter(|b| b.holds_at(now)) else {
        return;
    };
    let (retry_at, reason) = match b.half_open_at_ms.filter(|_| b.manual.is_none()) {
        // Opened by hand: looked at again after `open_seconds`, held until closed by hand.
        None => {
            let open = binding.brakes.breaker.unwrap_or_default().open_seconds;
            (
                now + u64::from(open) * 1000,
                format!(
                    "the circuit breaker {key} was opened by hand ({}): held until it is closed",
                    b.manual.as_deref().unwrap_or("no reason given")
                ),
            )
        }
        Some(at) => (
            at,
            format!(
                "the circuit breaker {key} is open ({:.0} % of {} retries failed again): probes in {} s",
                b.failure_rate * 100.0,
                b.outcomes,
                at.saturating_sub(now).div_ceil(1000)
            ),
        ),
    };
    // A cooldown that ends after the breaker lets probes through stays a cooldown.
    if view.outcome == Outcome::BlockedCooldown && view.retry_at_ms.is_some_and(|t| t >= retry_at) {
        return;
    }
    view.outcome = Outcome::BlockedCircuitOpen;
    view.hold_kind = Some(HoldKind::CircuitOpen);
    view.retry_at_ms = Some(retry_at);
    view.reason = reason;
}

/// Evaluates `job` with a bound policy, its classification taken from / put in `cache` (a
/// failure is classified once per policy; the decision runs every time).
pub fn evaluate_cached(
    engine: &PolicyEngine,
    cache: &ClassificationCache,
    job: &FailedJob,
    input: &FailureInput,
    bound: &Bound,
    now: u64,
) -> Result<Evaluation, EvalError> {
    let cacheable = !job.result_id.is_empty();
    let key = (job.id.clone(), job.result_id.clone(), bound.policy.digest());
    let known = cacheable.then(|| cache.get(&key)).flatten();
    let eval = engine.evaluate_with(&bound.policy, input, &bound.params, now, known.as_ref());
    if let (Ok(e), None, true) = (&eval, &known, cacheable) {
        cache.put(key, e.classification.clone());
    }
    eval
}

/// The policy's input for a job.
pub fn failure_input(job: &FailedJob, state: &RetryState) -> FailureInput {
    let failed_at = job.failed_at_ms.unwrap_or(0);
    FailureInput {
        job_id: job.id.clone(),
        job_type: job.job_type.clone(),
        queue: job.queue.clone(),
        job_status: job.status.clone(),
        exc_type: job.exc_type.clone(),
        exc_message: job.exc_message.clone(),
        traceback: job.traceback.clone(),
        failed_at_ms: failed_at,
        first_failed_at_ms: state.first_failed_ms.unwrap_or(failed_at),
        attempts: state.attempts,
        last_attempt_at_ms: state.last_attempt_ms,
        queue_retries_left: job.retries_left,
        seed: derive_seed(&job.id, state.attempts),
        attributes: Vec::new(),
    }
}

/// A policy's evaluation as the retry service shows it (also what a replay compares).
pub fn view_of(
    job: FailedJob,
    attempts: u32,
    policy: &Policy,
    eval: Result<Evaluation, EvalError>,
    now: u64,
) -> JobView {
    let v = verdict_of(eval, now);
    JobView {
        job,
        attempts,
        policy_digest: policy.digest().to_string(),
        classification: v.classification,
        outcome: v.outcome,
        reason: v.reason,
        retry_at_ms: v.retry_at_ms,
        hold_kind: v.hold_kind,
    }
}

/// What an evaluation means at `now`, in the outcomes' vocabulary.
#[derive(Debug)]
pub struct Verdict {
    pub classification: Option<Classification>,
    pub outcome: Outcome,
    pub reason: String,
    pub retry_at_ms: Option<u64>,
    pub hold_kind: Option<HoldKind>,
}

pub fn verdict_of(eval: Result<Evaluation, EvalError>, now: u64) -> Verdict {
    let eval = match eval {
        Ok(eval) => eval,
        Err(e) => {
            return Verdict {
                classification: None,
                outcome: Outcome::PolicyError,
                reason: format!("policy error: {e}"),
                retry_at_ms: None,
                hold_kind: None,
            };
        }
    };
    let (outcome, reason, retry_at_ms, hold_kind) = match eval.decision {
        Decision::RetryAt { at_ms } if at_ms <= now => {
            (Outcome::Retried, "due now".to_string(), Some(at_ms), None)
        }
        Decision::RetryAt { at_ms } => (
            Outcome::BlockedCooldown,
            format!("cooling down for {} s more", (at_ms - now).div_ceil(1000)),
            Some(at_ms),
            None,
        ),
        Decision::Hold { kind, reason } => {
            let outcome = match kind {
                HoldKind::MaxAttempts => Outcome::BlockedMaxAttempts,
                HoldKind::NonRetryable => Outcome::BlockedNonRetryable,
                HoldKind::UnknownFailure => Outcome::BlockedUnknown,
                HoldKind::PolicySaysNo => Outcome::BlockedByPolicy,
                HoldKind::CircuitOpen => Outcome::BlockedCircuitOpen,
                HoldKind::Budget => Outcome::BlockedBudget,
            };
            (outcome, reason, None, Some(kind))
        }
    };
    Verdict {
        classification: Some(eval.classification),
        outcome,
        reason,
        retry_at_ms,
        hold_kind,
    }
}

/// The outcome of a job whose enforced verdict needs no requeue (a hold, a wait, or any
/// verdict in a dry run): what is recorded for it.
pub fn decided(
    view: &JobView,
    outcome: Outcome,
    reason: String,
    options: &RetryOptions,
) -> JobOutcome {
    let job = &view.job;
    JobOutcome {
        job_id: job.id.clone(),
        queue: job.queue.clone(),
        job_type: job.job_type.clone(),
        outcome,
        reason,
        classification: view.classification.clone(),
        attempt: if outcome == Outcome::Retried {
            view.attempts + 1
        } else {
            view.attempts
        },
        policy_digest: view.policy_digest.clone(),
        retry_at_ms: view.retry_at_ms,
        dry_run: options.dry_run,
        forced: options.force && outcome == Outcome::Retried,
    }
}

/// The host enforces the policy's decision, with the operator's options.
pub fn enforce(view: &JobView, options: &RetryOptions, _now: u64) -> (Outcome, String) {
    if options.force {
        return (
            Outcome::Retried,
            format!(
                "forced over {}: {}",
                view.outcome.as_str(),
                options.reason.clone().unwrap_or_default()
            ),
        );
    }
    match view.outcome {
        // Let a non-retryable hold through when asked; never max attempts or cooldown.
        Outcome::BlockedNonRetryable if !options.retry_only_retryable => (
            Outcome::Retried,
            format!(
                "retry_only_retryable=false lets a non-retryable failure through: {}",
                view.reason
            ),
        ),
        outcome => (outcome, view.reason.clone()),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::{Arc, LazyLock};

    use super::*;
    use crate::policy::{EngineConfig, LoadOptions, Params, builtin};

    /// The engine and the built-in default policy, compiled once for these tests.
    pub(in crate::retry) fn default_policy() -> (Arc<PolicyEngine>, Arc<Policy>) {
        static LOADED: LazyLock<(Arc<PolicyEngine>, Arc<Policy>)> = LazyLock::new(|| {
            let engine = Arc::new(PolicyEngine::new(EngineConfig::default()).unwrap());
            let policy = engine
                .load(builtin::DEFAULT_POLICY, &LoadOptions::default())
                .unwrap();
            (engine, policy)
        });
        (Arc::clone(&LOADED.0), Arc::clone(&LOADED.1))
    }

    /// A failed RQ job as the adapter reads it.
    pub(in crate::retry) fn job(id: &str, exc_type: &str, failed_at_ms: u64) -> FailedJob {
        FailedJob {
            id: id.into(),
            queue: "default".into(),
            job_type: "app.tasks.charge".into(),
            status: "failed".into(),
            created_at: "2026-12-01T00:00:00.000000Z".into(),
            failed_at_ms: Some(failed_at_ms),
            exc_type: exc_type.into(),
            exc_message: "it failed".into(),
            traceback: format!("Traceback (most recent call last):\n{exc_type}: it failed"),
            result_id: format!("{failed_at_ms}-0"),
            retries_left: None,
            failure_ttl_seconds: None,
        }
    }

    const NOW: u64 = 1_800_000_000_000;

    fn table() -> Table {
        let (_, policy) = default_policy();
        Table::single(policy, Params::new())
    }

    #[test]
    fn the_input_carries_the_retry_state_and_a_seed_per_attempt() {
        let j = job("j1", "ConnectionError", NOW - 5_000);
        let fresh = failure_input(&j, &RetryState::default());
        assert_eq!(
            fresh.first_failed_at_ms,
            NOW - 5_000,
            "first failure is this one"
        );
        assert_eq!(fresh.attempts, 0);
        let state = RetryState {
            attempts: 2,
            first_failed_ms: Some(NOW - 90_000),
            last_attempt_ms: Some(NOW - 60_000),
        };
        let again = failure_input(&j, &state);
        assert_eq!(again.first_failed_at_ms, NOW - 90_000);
        assert_eq!(again.attempts, 2);
        assert_eq!(again.last_attempt_at_ms, Some(NOW - 60_000));
        assert_ne!(fresh.seed, again.seed, "each attempt gets its own seed");
        assert_eq!(again.seed, failure_input(&j, &state).seed, "deterministic");
    }

    #[test]
    fn a_network_error_past_its_cooldown_is_due_and_its_classification_is_cached_once() {
        let (engine, _) = default_policy();
        let cache = ClassificationCache::default();
        let table = table();
        let e = evaluate_one(
            &engine,
            &cache,
            &table,
            &JobFilter::default(),
            job("j1", "ConnectionError", NOW - 120_000),
            &RetryState::default(),
            NOW,
            true,
            &brake::Snapshot::default(),
        )
        .unwrap();
        assert_eq!(e.view.outcome, Outcome::Retried, "{:?}", e.view);
        assert_eq!(e.view.reason, "due now");
        let c = e.view.classification.as_ref().unwrap();
        assert_eq!(
            (c.failure_type.as_str(), c.retryable),
            ("network_error", true)
        );
        assert_eq!(e.binding.pattern, "*");
        assert!(e.shadow.is_none(), "the binding has no shadow");
        assert_eq!(cache.len(), 1);
        // Evaluated again (another clock): the classification comes from the cache.
        evaluate_one(
            &engine,
            &cache,
            &table,
            &JobFilter::default(),
            job("j1", "ConnectionError", NOW - 120_000),
            &RetryState::default(),
            NOW + 1,
            false,
            &brake::Snapshot::default(),
        )
        .unwrap();
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_fresh_failure_waits_and_a_validation_error_is_held() {
        let (engine, _) = default_policy();
        let cache = ClassificationCache::default();
        let table = table();
        let eval = |j: FailedJob, state: &RetryState| {
            evaluate_one(
                &engine,
                &cache,
                &table,
                &JobFilter::default(),
                j,
                state,
                NOW,
                false,
                &brake::Snapshot::default(),
            )
            .unwrap()
            .view
        };
        let cooling = eval(
            job("j1", "ConnectionError", NOW - 1_000),
            &RetryState::default(),
        );
        assert_eq!(cooling.outcome, Outcome::BlockedCooldown);
        assert_eq!(cooling.retry_at_ms, Some(NOW - 1_000 + 60_000));
        assert_eq!(cooling.reason, "cooling down for 59 s more");
        let held = eval(
            job("j2", "ValueError", NOW - 600_000),
            &RetryState::default(),
        );
        assert_eq!(held.outcome, Outcome::BlockedNonRetryable);
        assert_eq!(held.hold_kind, Some(HoldKind::NonRetryable));
        let spent = RetryState {
            attempts: 3,
            ..RetryState::default()
        };
        let max = eval(job("j3", "ConnectionError", NOW - 7_200_000), &spent);
        assert_eq!(max.outcome, Outcome::BlockedMaxAttempts);
    }

    #[test]
    fn the_filter_drops_jobs_before_and_after_classification() {
        let (engine, _) = default_policy();
        let cache = ClassificationCache::default();
        let table = table();
        let other_queue = JobFilter {
            queue: Some("other".into()),
            ..JobFilter::default()
        };
        let j = || job("j1", "ConnectionError", NOW - 120_000);
        let none = evaluate_one(
            &engine,
            &cache,
            &table,
            &other_queue,
            j(),
            &RetryState::default(),
            NOW,
            false,
            &brake::Snapshot::default(),
        );
        assert!(none.is_none());
        assert_eq!(cache.len(), 0, "filtered out before the policy ran");
        let only_validation = JobFilter {
            failure_type: Some("validation_error".into()),
            ..JobFilter::default()
        };
        let none = evaluate_one(
            &engine,
            &cache,
            &table,
            &only_validation,
            j(),
            &RetryState::default(),
            NOW,
            false,
            &brake::Snapshot::default(),
        );
        assert!(none.is_none());
    }

    #[test]
    fn verdicts_speak_the_outcomes_vocabulary() {
        let v = |d: Decision| {
            verdict_of(
                Ok(Evaluation {
                    classification: Classification {
                        failure_type: "timeout".into(),
                        retryable: true,
                        reason: String::new(),
                    },
                    decision: d,
                    fuel_used: 0,
                }),
                NOW,
            )
        };
        assert_eq!(
            v(Decision::RetryAt { at_ms: NOW }).outcome,
            Outcome::Retried
        );
        let wait = v(Decision::RetryAt { at_ms: NOW + 1_001 });
        assert_eq!(wait.outcome, Outcome::BlockedCooldown);
        assert_eq!(wait.reason, "cooling down for 2 s more");
        for (kind, outcome) in [
            (HoldKind::MaxAttempts, Outcome::BlockedMaxAttempts),
            (HoldKind::NonRetryable, Outcome::BlockedNonRetryable),
            (HoldKind::UnknownFailure, Outcome::BlockedUnknown),
            (HoldKind::PolicySaysNo, Outcome::BlockedByPolicy),
        ] {
            let held = v(Decision::Hold {
                kind,
                reason: "no".into(),
            });
            assert_eq!((held.outcome, held.hold_kind), (outcome, Some(kind)));
        }
        let failed = verdict_of(Err(EvalError::Trap("unreachable".into())), NOW);
        assert_eq!(failed.outcome, Outcome::PolicyError);
        assert!(failed.classification.is_none());
    }

    fn view(outcome: Outcome) -> JobView {
        JobView {
            job: job("j1", "ValueError", NOW),
            attempts: 1,
            policy_digest: "sha256:ab".into(),
            classification: None,
            outcome,
            reason: "held".into(),
            retry_at_ms: None,
            hold_kind: None,
        }
    }

    #[test]
    fn the_operator_s_options_are_enforced_but_never_past_cooldown_or_max_attempts() {
        let defaults = RetryOptions::new();
        assert_eq!(
            enforce(&view(Outcome::BlockedNonRetryable), &defaults, NOW).0,
            Outcome::BlockedNonRetryable
        );
        let lenient = RetryOptions {
            retry_only_retryable: false,
            ..RetryOptions::new()
        };
        assert_eq!(
            enforce(&view(Outcome::BlockedNonRetryable), &lenient, NOW).0,
            Outcome::Retried
        );
        for held in [Outcome::BlockedCooldown, Outcome::BlockedMaxAttempts] {
            assert_eq!(enforce(&view(held), &lenient, NOW).0, held);
        }
        let forced = RetryOptions {
            force: true,
            reason: Some("INC-7".into()),
            ..RetryOptions::new()
        };
        let (outcome, reason) = enforce(&view(Outcome::BlockedMaxAttempts), &forced, NOW);
        assert_eq!(outcome, Outcome::Retried);
        assert_eq!(reason, "forced over blocked_max_attempts: INC-7");
        let o = decided(&view(Outcome::Retried), Outcome::Retried, reason, &forced);
        assert!(o.forced);
        assert_eq!(o.attempt, 2, "the attempt a retry would be");
        assert!(check_options(&forced).is_ok());
        let unexplained = RetryOptions {
            force: true,
            reason: Some("  ".into()),
            ..RetryOptions::new()
        };
        assert!(matches!(
            check_options(&unexplained),
            Err(RetryError::ForceWithoutReason)
        ));
    }

    fn breaker(state: &str, half_open_at_ms: Option<u64>) -> brake::Snapshot {
        let key = brake::breaker_key("*", "network_error");
        let view = brake::BreakerView {
            key: key.clone(),
            pattern: "*".into(),
            failure_type: "network_error".into(),
            state: state.into(),
            failure_rate: 0.8,
            outcomes: 10,
            opened_at_ms: Some(NOW - 1_000),
            half_open_at_ms,
            probes_left: 0,
            manual: None,
        };
        brake::Snapshot {
            breakers: [(key, view)].into_iter().collect(),
            budget_left: Default::default(),
        }
    }

    #[test]
    fn an_open_breaker_holds_what_the_policy_lets_go_and_the_policy_sees_its_state() {
        let (engine, _) = default_policy();
        let cache = ClassificationCache::default();
        let table = table();
        let eval = |j: FailedJob, brakes: &brake::Snapshot| {
            evaluate_one(
                &engine,
                &cache,
                &table,
                &JobFilter::default(),
                j,
                &RetryState::default(),
                NOW,
                false,
                brakes,
            )
            .unwrap()
        };
        // Open until NOW + 30 s: a job due now is held until then, no attempt used.
        let open = breaker("open", Some(NOW + 30_000));
        let e = eval(job("j1", "ConnectionError", NOW - 120_000), &open);
        assert_eq!(e.view.outcome, Outcome::BlockedCircuitOpen);
        assert_eq!(e.view.hold_kind, Some(HoldKind::CircuitOpen));
        assert_eq!(e.view.retry_at_ms, Some(NOW + 30_000));
        assert!(
            e.view.reason.contains("*|network_error"),
            "{}",
            e.view.reason
        );
        assert!(
            e.input
                .attributes
                .contains(&(brake::ATTR_BREAKER_STATE.into(), "open".into())),
            "{:?}",
            e.input.attributes
        );
        // A cooldown (60 s here) ending before the probes is held too; one ending after them
        // stays a cooldown.
        let longer = breaker("open", Some(NOW + 90_000));
        let cooling = eval(job("j2", "ConnectionError", NOW - 1_000), &longer);
        assert_eq!(cooling.view.outcome, Outcome::BlockedCircuitOpen);
        let later = breaker("open", Some(NOW + 10_000));
        let after = eval(job("j3", "ConnectionError", NOW - 1_000), &later);
        assert_eq!(after.view.outcome, Outcome::BlockedCooldown);
        // Half-open: the policy's verdict stands (the probes are counted when retries ask).
        let half = breaker("half_open", None);
        let e = eval(job("j4", "ConnectionError", NOW - 120_000), &half);
        assert_eq!(e.view.outcome, Outcome::Retried);
        assert!(
            e.input
                .attributes
                .contains(&(brake::ATTR_BREAKER_FAILURE_RATE.into(), "0.800".into()))
        );
        // Another failure type's breaker holds nothing here, and adds no attributes.
        let e = eval(job("j5", "ValueError", NOW - 120_000), &open);
        assert_eq!(e.view.outcome, Outcome::BlockedNonRetryable);
        assert!(e.input.attributes.is_empty());
    }

    #[test]
    fn jobs_split_over_cores_in_order() {
        let chunks = split_for_cores((0..1000).collect::<Vec<_>>());
        assert!(!chunks.is_empty() && chunks.iter().all(|c| c.len() >= 64 || chunks.len() == 1));
        assert_eq!(chunks.concat(), (0..1000).collect::<Vec<_>>());
        assert_eq!(split_for_cores((0..10).collect::<Vec<_>>()).len(), 1);
        assert!(split_for_cores(Vec::<u8>::new()).is_empty());
    }
}

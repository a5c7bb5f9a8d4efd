//! The brakes on a batch's requeues (docs/auto-retry.md), applied after the policy and the
//! operator's options let a job go:
//!
//! 1. the circuit breaker of each job's binding pattern × failure type: while open, the job
//!    is held (`blocked_circuit_open`); half-open, only its probes go;
//! 2. the binding's retry budget (automatic retries; manual ones with `apply_to_manual`):
//!    past it, the job is held (`blocked_budget`) until the next minute;
//! 3. the binding's `max_requeues_per_second`: the requeues wait their turn ([`pace`]).
//!
//! A hold uses no attempt and carries when to try again. `force` (with a reason) passes
//! every brake, audited as forced. A dry run asks the same questions and changes nothing.

use std::collections::HashMap;
use std::time::Duration;

use crate::redis_link::Link;

use super::evaluate::{Evaluated, decided};
use super::outcome::{JobOutcome, Outcome};
use super::records::Context;
use super::requeue::requeue;
use super::types::{RetryOptions, ServiceConfig};
use crate::brake::{self, Transition, state};
use crate::clock::now_ms;
use crate::queue::QueueBackend;
use crate::redis_error::RedisError;

/// The jobs that may be requeued (with why), and those the brakes held.
#[derive(Debug, Default)]
pub(super) struct Gated {
    pub go: Vec<(Evaluated, String)>,
    pub held: Vec<(JobOutcome, Evaluated)>,
}

/// Jobs' indices grouped by a key, in the order each key was first seen.
fn group_by<K: std::hash::Hash + Eq + Clone>(
    keys: impl Iterator<Item = Option<K>>,
) -> Vec<(K, Vec<usize>)> {
    let mut groups: Vec<(K, Vec<usize>)> = Vec::new();
    let mut at: HashMap<K, usize> = HashMap::new();
    for (i, key) in keys.enumerate() {
        let Some(key) = key else { continue };
        let g = *at.entry(key.clone()).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(i);
    }
    groups
}

/// Applies the breakers and the budgets to `candidates` (jobs the policy and the options
/// let go).
pub(super) async fn gate(
    conn: &mut Link,
    candidates: Vec<(Evaluated, String)>,
    options: &RetryOptions,
    now: u64,
) -> Result<Gated, RedisError> {
    if options.force || candidates.is_empty() {
        return Ok(Gated {
            go: candidates,
            held: Vec::new(),
        });
    }
    let mut held: Vec<Option<(Outcome, u64, String)>> = vec![None; candidates.len()];

    // 1. Breakers.
    let keys: Vec<Option<String>> = candidates
        .iter()
        .map(|(e, _)| {
            e.binding.brakes.breaker?;
            let c = e.view.classification.as_ref()?;
            Some(brake::breaker_key(&e.binding.pattern, &c.failure_type))
        })
        .collect();
    let groups = group_by(keys.iter().cloned());
    let asks: Vec<state::Ask<'_>> = groups
        .iter()
        .map(|(key, members)| {
            let (e, _) = &candidates[members[0]];
            let failure_type = e
                .view
                .classification
                .as_ref()
                .map_or("", |c| c.failure_type.as_str());
            state::Ask {
                key,
                pattern: &e.binding.pattern,
                failure_type,
                config: e.binding.brakes.breaker.unwrap_or_default(),
                wanted: members.len(),
            }
        })
        .collect();
    let admissions = state::admit(conn, &asks, now, options.dry_run).await?;
    let mut transitions = Vec::new();
    for ((key, members), a) in groups.iter().zip(admissions) {
        let retry_at = a.retry_at_ms.unwrap_or(now + 1000);
        for &i in members.iter().skip(a.admitted) {
            let why = if a.state == "half_open" {
                format!(
                    "the circuit breaker {key} is half-open and its probes are out: tried again when they are back"
                )
            } else {
                format!("the circuit breaker {key} is open")
            };
            held[i] = Some((Outcome::BlockedCircuitOpen, retry_at, why));
        }
        transitions.extend(a.transition);
    }
    meter(&transitions);

    // 2. Budgets, over what the breakers let through.
    let patterns: Vec<Option<String>> = candidates
        .iter()
        .zip(&held)
        .map(|((e, _), h)| {
            if h.is_some() {
                return None;
            }
            e.binding.brakes.budget_for(options.automatic)?;
            Some(e.binding.pattern.clone())
        })
        .collect();
    let groups = group_by(patterns.into_iter());
    let asks: Vec<(&str, state::Limit, usize)> = groups
        .iter()
        .map(|(pattern, members)| {
            let budget = candidates[members[0]]
                .0
                .binding
                .brakes
                .budget
                .unwrap_or_default();
            (
                pattern.as_str(),
                state::Limit::Budget(budget),
                members.len(),
            )
        })
        .collect();
    let allowed = state::take(conn, &asks, now, options.dry_run).await?;
    let next_minute = (now / 60_000 + 1) * 60_000;
    for ((pattern, members), allowed) in groups.iter().zip(allowed) {
        for &i in members.iter().skip(allowed) {
            // Spread over the next minute's first seconds, not all at its first millisecond.
            let at = next_minute + jitter(&candidates[i].0.view.job.id, 5_000);
            held[i] = Some((
                Outcome::BlockedBudget,
                at,
                format!("the retry budget of {pattern} for this minute is spent"),
            ));
        }
    }

    let mut gated = Gated::default();
    for ((e, reason), h) in candidates.into_iter().zip(held) {
        match h {
            None => gated.go.push((e, reason)),
            Some((outcome, retry_at, why)) => {
                let mut o = decided(&e.view, outcome, why, options);
                o.retry_at_ms = Some(retry_at);
                gated.held.push((o, e));
            }
        }
    }
    Ok(gated)
}

/// Requeues `jobs` (exactly once each, as `requeue::requeue`), no faster than their
/// bindings' `max_requeues_per_second`: the rest wait for the next second.
pub(super) async fn requeue_paced<B: QueueBackend>(
    backend: &B,
    conn: &mut Link,
    jobs: Vec<Evaluated>,
    cx: Context<'_>,
    config: &ServiceConfig,
) -> Result<Vec<JobOutcome>, RedisError> {
    let mut outcomes = Vec::with_capacity(jobs.len());
    let mut pending = jobs;
    while !pending.is_empty() {
        let (go, later) = pace(conn, pending, now_ms()).await?;
        if !go.is_empty() {
            outcomes.extend(requeue(backend, &go, cx, config).await);
        }
        if !later.is_empty() {
            let into_second = now_ms() % 1000;
            tokio::time::sleep(Duration::from_millis(1000 - into_second)).await;
        }
        pending = later;
    }
    Ok(outcomes)
}

/// Splits requeues into those their bindings' `max_requeues_per_second` lets go in this
/// second and those that wait for the next.
async fn pace(
    conn: &mut Link,
    jobs: Vec<Evaluated>,
    now: u64,
) -> Result<(Vec<Evaluated>, Vec<Evaluated>), RedisError> {
    let patterns = jobs.iter().map(|e| {
        e.binding
            .brakes
            .max_requeues_per_second
            .map(|n| (e.binding.pattern.clone(), n))
    });
    let groups = group_by(patterns);
    if groups.is_empty() {
        return Ok((jobs, Vec::new()));
    }
    let asks: Vec<(&str, state::Limit, usize)> = groups
        .iter()
        .map(|((pattern, n), members)| {
            (pattern.as_str(), state::Limit::PerSecond(*n), members.len())
        })
        .collect();
    let allowed = state::take(conn, &asks, now, false).await?;
    let mut waits = vec![false; jobs.len()];
    for ((_, members), allowed) in groups.iter().zip(allowed) {
        for &i in members.iter().skip(allowed) {
            waits[i] = true;
        }
    }
    let (later, go): (Vec<_>, Vec<_>) = jobs.into_iter().zip(waits).partition(|(_, w)| *w);
    Ok((
        go.into_iter().map(|(e, _)| e).collect(),
        later.into_iter().map(|(e, _)| e).collect(),
    ))
}

/// A job's own spread in `0..span` ms (stable per job id, so a job held again lands at the
/// same offset).
pub fn jitter(job_id: &str, span: u64) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    job_id.hash(&mut h);
    h.finish() % span.max(1)
}

/// Counts and logs breaker transitions.
pub fn meter(transitions: &[Transition]) {
    for t in transitions {
        crate::metrics::global().breaker_transition(&t.to);
        tracing::warn!(breaker = %t.key, to = %t.to, "circuit breaker changed state");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_keep_first_seen_order_and_skip_none() {
        let g = group_by(
            [Some("b"), None, Some("a"), Some("b")]
                .into_iter()
                .map(|k| k.map(str::to_string)),
        );
        assert_eq!(
            g,
            vec![("b".to_string(), vec![0, 3]), ("a".to_string(), vec![2])]
        );
    }

    #[test]
    fn jitter_stays_in_its_span_and_is_stable() {
        for id in ["a", "b", "job-123"] {
            assert!(jitter(id, 200) < 200);
            assert_eq!(jitter(id, 200), jitter(id, 200));
        }
        assert_eq!(jitter("x", 0), 0);
    }
}

//! Delete-all: deletes every failed job a filter matches, as RQ 2.12's `job.delete()` does,
//! exactly once and audited per job. The walk is retry-all's: each queue's failed registry
//! snapshotted, read in pages, each job through the same filter (`evaluate_jobs`, so every
//! `JobFilter` field applies), progress and cancel after each page.
//!
//! With `expected_count`, a counting pass (read, filter, delete nothing) runs first over the
//! same snapshots; a count off by more than `max_difference` ends the operation with
//! `RetryError::CountMismatch`, nothing deleted. Each delete is one atomic script
//! (`queue::rq`'s `delete.lua`) that re-checks the job (still in the failed registry, status
//! `failed`/`stopped`, same newest result, same `created_at`) and appends the `deleted` record:
//! a job requeued meanwhile is `already_requeued` or `stale_decision`, never deleted.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::evaluate::{Evaluated, not_found};
use super::filter::JobFilter;
use super::outcome::{JobOutcome, Outcome};
use super::records::{self, Context};
use super::service::{Loaded, RetryService};
use super::state;
use super::types::{DeleteOptions, Progress, RetryError, RetryOptions, Summary};
use crate::audit::{NewRecord, Verdict};
use crate::clock::now_ms;
use crate::keyspace;
use crate::queue::{Delete, DeleteResult, QueueBackend, QueueError};

/// One queue's snapshot: its name, key and size.
use super::snapshot::Snapshot;

impl<B: QueueBackend> RetryService<B> {
    /// Deletes every failed job matching `filter` (or, in a dry run, records what it would
    /// delete). Returns the per-outcome summary (`deleted` for each job deleted).
    pub async fn delete_all(
        &self,
        filter: &JobFilter,
        options: &DeleteOptions,
        actor: &str,
        operation_id: &str,
        progress: &Progress,
    ) -> Result<Summary, RetryError> {
        let reason = options.reason.clone().filter(|r| !r.trim().is_empty());
        if !options.dry_run && reason.is_none() {
            return Err(RetryError::DeleteWithoutReason);
        }
        let retry_options = RetryOptions {
            dry_run: options.dry_run,
            reason,
            ..RetryOptions::default()
        };
        let mut conn = self.conn.clone();
        state::append_audit(
            &mut conn,
            &records::operation_started(operation_id, actor, &retry_options, filter, now_ms()),
        )
        .await?;
        let snapshots = self.snapshots(filter, operation_id, progress).await?;
        let limit = filter.limit.unwrap_or(u64::MAX);
        if let Some(expected) = options.expected_count {
            let found = self
                .count_matching(filter, &snapshots, limit, progress)
                .await?;
            if found.abs_diff(expected) > options.max_difference {
                let e = RetryError::CountMismatch {
                    expected,
                    found,
                    max_difference: options.max_difference,
                };
                let summary = summary(operation_id, 0, progress, options.dry_run);
                let mut record = records::operation_finished(&summary, actor, filter, now_ms());
                record.verdict = Some(Verdict {
                    decision: "operation_finished".into(),
                    error_message: Some(e.to_string()),
                    ..Verdict::default()
                });
                state::append_audit(&mut conn, &record).await?;
                return Err(e);
            }
        }
        let cx = Context {
            actor,
            options: &retry_options,
            operation_id,
            now_ms: now_ms(),
        };
        let mut matched: u64 = 0;
        let batch = self.config.batch_size as u64;
        'queues: for (queue, key, size) in &snapshots {
            let mut start = 0;
            while start < *size {
                if progress.cancelled.load(Ordering::Relaxed) || matched >= limit {
                    break 'queues;
                }
                let count = batch.min(size - start);
                let loaded = self.load_page(queue, key, start, count).await?;
                start += count;
                let remaining = usize::try_from(limit - matched).unwrap_or(usize::MAX);
                let outcomes = self
                    .delete_loaded(loaded, filter, options, cx, remaining)
                    .await?;
                matched += outcomes.len() as u64;
                progress.add(&outcomes);
            }
        }
        let summary = summary(operation_id, matched, progress, options.dry_run);
        state::append_audit(
            &mut conn,
            &records::operation_finished(&summary, actor, filter, now_ms()),
        )
        .await?;
        Ok(summary)
    }

    /// Deletes one failed job (in a dry run, records what it would do): `delete_all`'s
    /// per-job step for a single id, with the same atomic re-checks and audit record, under
    /// an operation id of its own. `None` when the job is not in a failed registry.
    pub async fn delete_one(
        &self,
        job_id: &str,
        options: &DeleteOptions,
        actor: &str,
    ) -> Result<Option<JobOutcome>, RetryError> {
        let reason = options.reason.clone().filter(|r| !r.trim().is_empty());
        if !options.dry_run && reason.is_none() {
            return Err(RetryError::DeleteWithoutReason);
        }
        let Some(job) = self.backend().find_failed(job_id).await? else {
            return Ok(None);
        };
        let r = crate::queue::JobRef {
            queue: job.queue.clone(),
            id: job.id.clone(),
            score: 0.0,
        };
        let loaded = self.load(vec![r]).await?;
        let retry_options = RetryOptions {
            dry_run: options.dry_run,
            reason,
            ..RetryOptions::default()
        };
        let operation_id = crate::clock::new_operation_id();
        let cx = Context {
            actor,
            options: &retry_options,
            operation_id: &operation_id,
            now_ms: now_ms(),
        };
        let mut outcomes = self
            .delete_loaded(loaded, &JobFilter::default(), options, cx, 1)
            .await?;
        Ok(outcomes.pop())
    }

    /// The counting pass: how many jobs of the snapshots the filter matches now (at most
    /// `limit`), reading and filtering each, deleting nothing.
    async fn count_matching(
        &self,
        filter: &JobFilter,
        snapshots: &[Snapshot],
        limit: u64,
        progress: &Progress,
    ) -> Result<u64, RetryError> {
        let now = now_ms();
        let batch = self.config.batch_size as u64;
        let mut found = 0u64;
        for (queue, key, size) in snapshots {
            let mut start = 0;
            while start < *size && found < limit {
                if progress.cancelled.load(Ordering::Relaxed) {
                    return Ok(found);
                }
                let count = batch.min(size - start);
                let Loaded { jobs, states, .. } = self.load_page(queue, key, start, count).await?;
                start += count;
                let present: Vec<_> = jobs
                    .into_iter()
                    .zip(states)
                    .filter_map(|(j, s)| j.map(|j| (j, s)))
                    .collect();
                let evaluated = self.evaluate_jobs(present, filter, now, false).await?;
                found += evaluated.iter().flatten().count() as u64;
            }
        }
        Ok(found.min(limit))
    }

    /// Filters one page and deletes (or, in a dry run, records) at most `max` of the jobs it
    /// matches; jobs gone since the snapshot are `not_found`. Returns their outcomes.
    async fn delete_loaded(
        &self,
        loaded: Loaded,
        filter: &JobFilter,
        options: &DeleteOptions,
        cx: Context<'_>,
        max: usize,
    ) -> Result<Vec<JobOutcome>, RetryError> {
        let Loaded { refs, jobs, states } = loaded;
        let mut gone = Vec::new();
        let mut present = Vec::new();
        for (r, (job, state)) in refs.iter().zip(jobs.into_iter().zip(states)) {
            match job {
                Some(job) => present.push((job, state)),
                None if filter.queue.as_deref().is_none_or(|q| q == r.queue) => {
                    gone.push(r.id.clone());
                }
                None => {}
            }
        }
        let evaluated = self.evaluate_jobs(present, filter, now_ms(), false).await?;
        let fallback = Arc::clone(self.table().default_binding());
        let mut budget = max;
        let mut outcomes: Vec<JobOutcome> = Vec::new();
        for id in gone {
            if budget == 0 {
                break;
            }
            budget -= 1;
            outcomes.push(not_found(&id, cx.options, &fallback.active.policy));
        }
        let mut conn = self.conn.clone();
        let gone_records: Vec<_> = outcomes
            .iter()
            .map(|o| records::job_record(o, cx, None, None))
            .collect();
        state::append_audits(&mut conn, &gone_records).await?;

        let chosen: Vec<Evaluated> = evaluated.into_iter().flatten().take(budget).collect();
        if chosen.is_empty() {
            return Ok(outcomes);
        }
        // Tracebacks go in by digest: stored before any record that names them.
        let tracebacks: Vec<&str> = chosen.iter().map(|e| e.input.traceback.as_str()).collect();
        state::stash_blobs(&mut conn, &tracebacks).await?;
        let planned: Vec<JobOutcome> = chosen.iter().map(|e| deleted(e, options)).collect();
        if options.dry_run {
            let records: Vec<NewRecord> = planned
                .iter()
                .zip(&chosen)
                .map(|(o, e)| delete_record(o, e, cx, true))
                .collect();
            state::append_audits(&mut conn, &records).await?;
        } else {
            outcomes.extend(self.delete_jobs(&chosen, planned, options, cx).await);
            record_metrics(&outcomes);
            return Ok(outcomes);
        }
        outcomes.extend(planned);
        record_metrics(&outcomes);
        Ok(outcomes)
    }

    /// The atomic deletes of `jobs` (one script each, pipelined); one outcome per job.
    async fn delete_jobs(
        &self,
        jobs: &[Evaluated],
        planned: Vec<JobOutcome>,
        options: &DeleteOptions,
        cx: Context<'_>,
    ) -> Vec<JobOutcome> {
        let audits: Vec<Vec<(&'static str, String)>> = planned
            .iter()
            .zip(jobs)
            .map(|(o, e)| delete_record(o, e, cx, false).fields())
            .collect();
        let dependent = NewRecord {
            actor: cx.actor.to_string(),
            retry_reason: Some(cx.options.reason.clone().unwrap_or_default()),
            operation_id: Some(cx.operation_id.to_string()),
            now_ms: Some(cx.now_ms),
            ..NewRecord::default()
        }
        .fields();
        let states: Vec<String> = jobs
            .iter()
            .map(|e| keyspace::job_state(&e.view.job.id))
            .collect();
        let reason = cx.options.reason.clone().unwrap_or_default();
        let batch: Vec<Delete<'_>> = jobs
            .iter()
            .zip(&audits)
            .zip(&states)
            .map(|((e, audit), state_key)| Delete {
                job: &e.view.job,
                state_key,
                outbox_key: keyspace::AUDIT_OUTBOX,
                blobs_key: keyspace::AUDIT_BLOBS,
                delete_dependents: options.delete_dependents,
                reason: &reason,
                audit,
                dependent_audit: &dependent,
            })
            .collect();
        match self.backend().delete(&batch).await {
            Ok(results) => planned
                .into_iter()
                .zip(results)
                .map(|(o, r)| apply_delete_result(o, r))
                .collect(),
            Err(e) => planned
                .into_iter()
                .map(|o| {
                    apply_delete_result(
                        o,
                        DeleteResult::Unknown {
                            why: unconfirmed(&e),
                        },
                    )
                })
                .collect(),
        }
    }
}

fn unconfirmed(e: &QueueError) -> String {
    format!("the delete was sent but not confirmed: {e}")
}

fn summary(operation_id: &str, total: u64, progress: &Progress, dry_run: bool) -> Summary {
    Summary {
        operation_id: operation_id.to_string(),
        total,
        counts: progress.counts(),
        cancelled: progress.cancelled.load(Ordering::Relaxed),
        dry_run,
    }
}

fn record_metrics(outcomes: &[JobOutcome]) {
    for o in outcomes {
        crate::metrics::global().retry_outcome(o.outcome.as_str(), o.dry_run);
    }
}

/// The outcome a job gets if it is deleted (or, in a dry run, would be).
fn deleted(e: &Evaluated, options: &DeleteOptions) -> JobOutcome {
    let view = &e.view;
    JobOutcome {
        job_id: view.job.id.clone(),
        queue: view.job.queue.clone(),
        job_type: view.job.job_type.clone(),
        outcome: Outcome::Deleted,
        reason: if options.dry_run {
            "would be deleted (dry run: nothing changed)".into()
        } else {
            options.reason.clone().unwrap_or_default()
        },
        classification: view.classification.clone(),
        attempt: view.attempts,
        policy_digest: view.policy_digest.clone(),
        retry_at_ms: None,
        dry_run: options.dry_run,
        forced: false,
    }
}

/// A job's `deleted` record: the verdict in a dry run (the script writes it otherwise), the
/// failure input (its traceback by digest) and the operator's reason.
fn delete_record(o: &JobOutcome, e: &Evaluated, cx: Context<'_>, with_verdict: bool) -> NewRecord {
    let failure = Some((&e.input, e.binding.active.params_json.as_str()));
    NewRecord {
        verdict: with_verdict.then(|| Verdict {
            decision: o.outcome.as_str().to_string(),
            success: Some(o.outcome == Outcome::Deleted),
            error_message: Some(o.reason.clone()),
            attempt_number: Some(o.attempt),
        }),
        ..records::requeue_record(o, cx, failure, None)
    }
}

/// The outcome once the script has answered for the job.
fn apply_delete_result(mut o: JobOutcome, r: DeleteResult) -> JobOutcome {
    match r {
        DeleteResult::Deleted { dependents: 0 } => {}
        DeleteResult::Deleted { dependents } => {
            o.reason = format!("{} (and {dependents} dependent jobs)", o.reason);
        }
        DeleteResult::AlreadyRequeued => {
            o.outcome = Outcome::AlreadyRequeued;
            o.reason = "not in the failed registry any more: requeued (or deleted) by someone else; not deleted".into();
        }
        DeleteResult::Stale { why } => {
            o.outcome = Outcome::StaleDecision;
            o.reason = format!("the decision is stale, not deleted: {why}");
        }
        DeleteResult::NotFound => {
            o.outcome = Outcome::NotFound;
            o.reason = "the job is gone".into();
        }
        DeleteResult::Unknown { why } => {
            o.outcome = Outcome::Unknown;
            o.reason = format!(
                "{why}; run a dry run again to see whether the job is still there (a delete re-checks atomically)"
            );
        }
    }
    o
}

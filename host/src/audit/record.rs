//! The one way an audit record is written: a typed [`NewRecord`], turned into its fields by
//! [`NewRecord::fields`] under the column names of `schema`, and into the outbox entry's one
//! value by [`NewRecord::encoded`] (`encoding`; `AuditRecord::from_entry` reads it back). The
//! retry service, the requeue script's arguments and the outcome tracker all build records
//! with it; docs/audit.md documents every column.
//!
//! A record's time is its stream id, given by Redis when the record enters the outbox.

use sha2::{Digest as _, Sha256};

use crate::policy::FailureInput;

/// What happened, in a record's `decision`, `success`, `error_message` and `attempt_number`
/// columns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// `retried`, `blocked_cooldown`, …, `operation_started`, `succeeded`, …
    pub decision: String,
    pub success: Option<bool>,
    pub error_message: Option<String>,
    pub attempt_number: Option<u32>,
}

/// The failure input of a decision (for replay): the policy's input but the traceback, which
/// goes in by digest (`traceback_sha256`; the text is stored once, as a blob).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailureColumns {
    pub seed: u64,
    pub job_status: String,
    pub exc_type: String,
    pub exc_message: String,
    pub traceback_sha256: String,
    pub failed_at_ms: u64,
    pub first_failed_at_ms: u64,
    pub prior_attempts: u32,
    pub last_attempt_at_ms: Option<u64>,
    pub queue_retries_left: Option<u32>,
    /// A JSON array of `[key, value]` pairs; `None` when there are none.
    pub attributes: Option<String>,
}

impl FailureColumns {
    /// The columns of a policy input.
    pub fn of(f: &FailureInput) -> Self {
        Self {
            seed: f.seed,
            job_status: f.job_status.clone(),
            exc_type: f.exc_type.clone(),
            exc_message: f.exc_message.clone(),
            traceback_sha256: hex::encode(Sha256::digest(f.traceback.as_bytes())),
            failed_at_ms: f.failed_at_ms,
            first_failed_at_ms: f.first_failed_at_ms,
            prior_attempts: f.attempts,
            last_attempt_at_ms: f.last_attempt_at_ms,
            queue_retries_left: f.queue_retries_left,
            attributes: (!f.attributes.is_empty())
                .then(|| serde_json::to_string(&f.attributes).unwrap_or_default()),
        }
    }
}

/// A record about to enter the outbox. A field that is `None` is not written (null in
/// parquet); `Some("")` is written as an empty value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewRecord {
    /// `user_or_system`: the API token's name, `local`, or `retryguard` for its own records.
    pub actor: String,
    /// `None` only in a record handed to the requeue script, which writes the verdict it
    /// reaches itself, atomically with the requeue (`queue::rq`'s `requeue.lua`).
    pub verdict: Option<Verdict>,
    pub job_id: Option<String>,
    pub job_type: Option<String>,
    pub queue: Option<String>,
    pub retry_reason: Option<String>,
    pub failure_type: Option<String>,
    pub retryable: Option<bool>,
    pub operation_id: Option<String>,
    pub policy_digest: Option<String>,
    /// The shadow policy's digest and its verdict (a JSON object).
    pub shadow: Option<(String, String)>,
    pub dry_run: bool,
    pub forced: bool,
    /// The policy params of the decision, a JSON object.
    pub params: Option<String>,
    pub failure: Option<FailureColumns>,
    /// For `operation_*` records: the filter, a JSON object.
    pub filter: Option<String>,
    /// For `operation_finished`: the per-outcome counts (a JSON object) and whether it was
    /// cancelled.
    pub counts: Option<String>,
    pub cancelled: Option<bool>,
    /// For outcome records: milliseconds from the requeue to the outcome.
    pub time_to_outcome_ms: Option<u64>,
    /// The `now` of the decision (epoch ms).
    pub now_ms: Option<u64>,
    /// For `deleted` records: the sha256 of the job's hash as a JSON object (a blob).
    pub job_blob_sha256: Option<String>,
}

impl NewRecord {
    /// The value of the outbox entry's one field `encoding::RECORD_FIELD`: the fields as a
    /// JSON object of strings.
    pub fn encoded(&self) -> String {
        super::encoding::encode(&self.fields())
    }

    /// The record's fields, by column name (the requeue and delete scripts take them as
    /// arguments and encode them with their own verdict).
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut f: Vec<(&'static str, String)> = Vec::with_capacity(32);
        let opt = |f: &mut Vec<(&'static str, String)>, k, v: &Option<String>| {
            if let Some(v) = v {
                f.push((k, v.clone()));
            }
        };
        opt(&mut f, "job_id", &self.job_id);
        opt(&mut f, "job_type", &self.job_type);
        opt(&mut f, "queue", &self.queue);
        f.push(("user_or_system", self.actor.clone()));
        opt(&mut f, "retry_reason", &self.retry_reason);
        if let Some(v) = &self.verdict {
            f.push(("decision", v.decision.clone()));
            if let Some(s) = v.success {
                f.push(("success", s.to_string()));
            }
            if let Some(m) = &v.error_message {
                f.push(("error_message", m.clone()));
            }
            if let Some(n) = v.attempt_number {
                f.push(("attempt_number", n.to_string()));
            }
        }
        opt(&mut f, "failure_type", &self.failure_type);
        if let Some(r) = self.retryable {
            f.push(("retryable", r.to_string()));
        }
        opt(&mut f, "operation_id", &self.operation_id);
        opt(&mut f, "policy_digest", &self.policy_digest);
        if let Some((digest, decision)) = &self.shadow {
            f.push(("shadow_policy_digest", digest.clone()));
            f.push(("shadow_decision", decision.clone()));
        }
        f.push(("dry_run_flag", self.dry_run.to_string()));
        f.push(("forced", self.forced.to_string()));
        opt(&mut f, "params", &self.params);
        if let Some(c) = &self.failure {
            f.push(("seed", c.seed.to_string()));
            f.push(("job_status", c.job_status.clone()));
            f.push(("exc_type", c.exc_type.clone()));
            f.push(("exc_message", c.exc_message.clone()));
            f.push(("traceback_sha256", c.traceback_sha256.clone()));
            f.push(("failed_at_ms", c.failed_at_ms.to_string()));
            f.push(("first_failed_at_ms", c.first_failed_at_ms.to_string()));
            f.push(("prior_attempts", c.prior_attempts.to_string()));
            if let Some(t) = c.last_attempt_at_ms {
                f.push(("last_attempt_at_ms", t.to_string()));
            }
            if let Some(n) = c.queue_retries_left {
                f.push(("queue_retries_left", n.to_string()));
            }
            opt(&mut f, "attributes", &c.attributes);
        }
        opt(&mut f, "filter", &self.filter);
        opt(&mut f, "counts", &self.counts);
        if let Some(c) = self.cancelled {
            f.push(("cancelled", c.to_string()));
        }
        opt(&mut f, "job_blob_sha256", &self.job_blob_sha256);
        if let Some(t) = self.time_to_outcome_ms {
            f.push(("time_to_outcome_ms", t.to_string()));
        }
        if let Some(t) = self.now_ms {
            f.push(("now_ms", t.to_string()));
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::schema::{AuditRecord, StreamId};

    fn input() -> FailureInput {
        FailureInput {
            job_id: "j1".into(),
            job_type: "app.charge".into(),
            queue: "default".into(),
            job_status: "failed".into(),
            exc_type: "ConnectionError".into(),
            exc_message: "refused".into(),
            traceback: "Traceback …\nConnectionError: refused".into(),
            failed_at_ms: 1_000,
            first_failed_at_ms: 500,
            attempts: 2,
            last_attempt_at_ms: Some(900),
            queue_retries_left: None,
            seed: 42,
            attributes: vec![("tenant".into(), "acme".into())],
        }
    }

    #[test]
    fn a_record_reads_back_as_the_columns_it_was_built_with() {
        let f = input();
        let record = NewRecord {
            actor: "ops".into(),
            verdict: Some(Verdict {
                decision: "blocked_cooldown".into(),
                success: Some(false),
                error_message: Some("cooling down".into()),
                attempt_number: Some(2),
            }),
            job_id: Some("j1".into()),
            job_type: Some("app.charge".into()),
            queue: Some("default".into()),
            retry_reason: Some(String::new()),
            failure_type: Some("network_error".into()),
            retryable: Some(true),
            operation_id: Some("op-1".into()),
            policy_digest: Some("sha256:ab".into()),
            shadow: Some(("sha256:cd".into(), "{}".into())),
            params: Some("{\"max_attempts\":\"3\"}".into()),
            failure: Some(FailureColumns::of(&f)),
            now_ms: Some(1_234),
            ..NewRecord::default()
        };
        let fields: Vec<(String, String)> = record
            .fields()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let back = AuditRecord::from_entry(StreamId { ms: 5, seq: 0 }, &fields);
        assert_eq!(back.user_or_system, "ops");
        assert_eq!(back.decision, "blocked_cooldown");
        assert_eq!(back.success, Some(false));
        assert_eq!(back.attempt_number, Some(2));
        assert_eq!(back.retry_reason, None, "an empty reason reads as none");
        assert_eq!(back.retryable, Some(true));
        assert_eq!(back.shadow_policy_digest.as_deref(), Some("sha256:cd"));
        assert_eq!(back.now_ms, Some(1_234));
        assert_eq!(back.failure_input(f.traceback.clone()), Some(f));
    }

    #[test]
    fn both_entry_formats_read_back_as_the_same_record() {
        let f = FailureInput {
            exc_message: "refused: \"db/primary\" \\ line\nnext \u{1} é ✓".into(),
            queue_retries_left: Some(3),
            ..input()
        };
        let full = NewRecord {
            actor: "ops/alice".into(),
            verdict: Some(Verdict {
                decision: "retried".into(),
                success: Some(true),
                error_message: Some("due now".into()),
                attempt_number: Some(3),
            }),
            job_id: Some("j/1".into()),
            job_type: Some("app.charge".into()),
            queue: Some(String::new()),
            retry_reason: Some("forced: \"why\"".into()),
            failure_type: Some("network_error".into()),
            retryable: Some(false),
            operation_id: Some("op-1".into()),
            policy_digest: Some("ab".into()),
            shadow: Some(("cd".into(), "{\"action\":\"hold\"}".into())),
            dry_run: true,
            forced: true,
            params: Some("{\"max_attempts\":\"3\"}".into()),
            failure: Some(FailureColumns::of(&f)),
            filter: Some("{\"queue\":\"q\"}".into()),
            counts: Some("{\"retried\":2}".into()),
            cancelled: Some(true),
            time_to_outcome_ms: Some(77),
            now_ms: Some(u64::from(u32::MAX) + 5),
            job_blob_sha256: Some("ef".into()),
        };
        let sparse = NewRecord {
            actor: "retryguard".into(),
            ..NewRecord::default()
        };
        let id = StreamId { ms: 9, seq: 2 };
        for record in [full, sparse] {
            let old: Vec<(String, String)> = record
                .fields()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            let new = vec![(
                crate::audit::encoding::RECORD_FIELD.to_string(),
                record.encoded(),
            )];
            let want = AuditRecord::from_entry(id, &old);
            assert_eq!(AuditRecord::from_entry(id, &new), want);
            assert_eq!(AuditRecord::from_owned_entry(id, new.clone()), want);
            assert_eq!(AuditRecord::from_owned_entry(id, old.clone()), want);
            assert_eq!(crate::audit::encoding::pairs(&new), old);
        }
        let back = AuditRecord::from_entry(
            id,
            &[(
                crate::audit::encoding::RECORD_FIELD.to_string(),
                NewRecord {
                    job_id: Some(f.job_id.clone()),
                    job_type: Some(f.job_type.clone()),
                    queue: Some(f.queue.clone()),
                    failure: Some(FailureColumns::of(&f)),
                    ..NewRecord::default()
                }
                .encoded(),
            )],
        );
        assert_eq!(back.decision, "unknown", "no decision field");
        assert_eq!(back.failure_input(f.traceback.clone()), Some(f));
    }

    #[test]
    fn a_record_for_the_requeue_script_has_no_verdict_columns() {
        let record = NewRecord {
            actor: "ops".into(),
            job_id: Some("j1".into()),
            ..NewRecord::default()
        };
        let names: Vec<&str> = record.fields().iter().map(|(k, _)| *k).collect();
        for verdict in ["decision", "success", "error_message", "attempt_number"] {
            assert!(!names.contains(&verdict), "{verdict} in {names:?}");
        }
    }
}

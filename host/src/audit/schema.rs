//! The one audit record schema: the Rust type, its arrow schema, and the conversions from an
//! outbox stream entry and to/from arrow record batches. Every column is documented in
//! `docs/audit.md`; a column added here must be added there.

use std::borrow::Cow;
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
    UInt64Builder,
};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

use super::encoding;
use crate::policy::FailureInput;

/// A Redis stream id `<ms>-<seq>`: the outbox entry's id, and so the record's unique,
/// ordered id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub fn parse(s: &str) -> Option<Self> {
        let (ms, seq) = s.split_once('-')?;
        Some(Self {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    /// The id right after this one.
    pub fn next(self) -> Self {
        match self.seq.checked_add(1) {
            Some(seq) => Self { ms: self.ms, seq },
            None => Self {
                ms: self.ms + 1,
                seq: 0,
            },
        }
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// One audit record: a decision of the retry service, an operator action, or the outcome of
/// a retry. Fields that do not apply to a kind of record are `None` (null in parquet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The outbox stream id `<ms>-<seq>`: unique, and ordered like the records.
    pub record_id: String,
    /// When Redis committed the change the record describes (the stream id's time), in
    /// microseconds since the epoch, UTC.
    pub timestamp_us: i64,
    pub job_id: Option<String>,
    pub job_type: Option<String>,
    pub queue: Option<String>,
    /// The actor: the API token's name, `local`, or `retryguard` for its own records.
    pub user_or_system: String,
    pub retry_reason: Option<String>,
    pub attempt_number: Option<i32>,
    pub failure_type: Option<String>,
    pub retryable: Option<bool>,
    /// What happened: an outcome of the retry service (`retried`, `blocked_cooldown`, …),
    /// `operation_started`/`operation_finished`, or a retry's outcome (`succeeded`,
    /// `failed_again`, `lost`).
    pub decision: String,
    pub operation_id: Option<String>,
    pub policy_digest: Option<String>,
    pub shadow_policy_digest: Option<String>,
    pub shadow_decision: Option<String>,
    pub dry_run_flag: bool,
    pub forced: bool,
    pub success: Option<bool>,
    pub error_message: Option<String>,
    /// The policy params of the decision, a JSON object.
    pub params: Option<String>,
    /// The `now` the policy was given (epoch ms).
    pub now_ms: Option<i64>,
    /// The seed the policy was given.
    pub seed: Option<u64>,
    // The failure input of the decision, for replay.
    pub job_status: Option<String>,
    pub exc_type: Option<String>,
    pub exc_message: Option<String>,
    /// sha256 of the traceback; the text is stored once under `_blobs/` (`AuditStore::blob`).
    pub traceback_sha256: Option<String>,
    pub failed_at_ms: Option<i64>,
    pub first_failed_at_ms: Option<i64>,
    pub prior_attempts: Option<i32>,
    pub last_attempt_at_ms: Option<i64>,
    pub queue_retries_left: Option<i32>,
    /// The failure's attributes, a JSON array of `[key, value]` pairs.
    pub attributes: Option<String>,
    /// For `operation_*` records: the filter, a JSON object.
    pub filter: Option<String>,
    /// For `operation_finished`: the per-outcome counts, a JSON object.
    pub counts: Option<String>,
    /// For outcome records: milliseconds from the requeue to the outcome.
    pub time_to_outcome_ms: Option<i64>,
    /// For `deleted` records: the sha256 of the deleted job's hash (a JSON object of its
    /// fields), kept as a blob like tracebacks.
    pub job_blob_sha256: Option<String>,
}

/// Column names, in schema order.
pub const COLUMNS: [&str; 37] = [
    "record_id",
    "timestamp",
    "job_id",
    "job_type",
    "queue",
    "user_or_system",
    "retry_reason",
    "attempt_number",
    "failure_type",
    "retryable",
    "decision",
    "operation_id",
    "policy_digest",
    "shadow_policy_digest",
    "shadow_decision",
    "dry_run_flag",
    "forced",
    "success",
    "error_message",
    "params",
    "now_ms",
    "seed",
    "job_status",
    "exc_type",
    "exc_message",
    "traceback_sha256",
    "failed_at_ms",
    "first_failed_at_ms",
    "prior_attempts",
    "last_attempt_at_ms",
    "queue_retries_left",
    "attributes",
    "filter",
    "counts",
    "time_to_outcome_ms",
    "job_blob_sha256",
    "schema_version",
];

/// The schema version written into every record (column `schema_version`).
pub const SCHEMA_VERSION: i32 = 1;

/// The arrow schema of the parquet files (the hive `date` partition is in the path only).
pub fn schema() -> SchemaRef {
    use DataType::{Boolean, Int32, Int64, UInt64, Utf8};
    let f = |name: &str, ty: DataType, nullable: bool| Field::new(name, ty, nullable);
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        f("record_id", Utf8, false),
        f("timestamp", ts, false),
        f("job_id", Utf8, true),
        f("job_type", Utf8, true),
        f("queue", Utf8, true),
        f("user_or_system", Utf8, false),
        f("retry_reason", Utf8, true),
        f("attempt_number", Int32, true),
        f("failure_type", Utf8, true),
        f("retryable", Boolean, true),
        f("decision", Utf8, false),
        f("operation_id", Utf8, true),
        f("policy_digest", Utf8, true),
        f("shadow_policy_digest", Utf8, true),
        f("shadow_decision", Utf8, true),
        f("dry_run_flag", Boolean, false),
        f("forced", Boolean, false),
        f("success", Boolean, true),
        f("error_message", Utf8, true),
        f("params", Utf8, true),
        f("now_ms", Int64, true),
        f("seed", UInt64, true),
        f("job_status", Utf8, true),
        f("exc_type", Utf8, true),
        f("exc_message", Utf8, true),
        f("traceback_sha256", Utf8, true),
        f("failed_at_ms", Int64, true),
        f("first_failed_at_ms", Int64, true),
        f("prior_attempts", Int32, true),
        f("last_attempt_at_ms", Int64, true),
        f("queue_retries_left", Int32, true),
        f("attributes", Utf8, true),
        f("filter", Utf8, true),
        f("counts", Utf8, true),
        f("time_to_outcome_ms", Int64, true),
        f("job_blob_sha256", Utf8, true),
        f("schema_version", Int32, false),
    ]))
}

impl AuditRecord {
    /// The record an outbox entry holds, in either format (`encoding`: one field `r`, or
    /// the earlier one field per column). Parsing is lenient — a field that does not parse
    /// is kept as null rather than losing the record — and unknown fields are ignored, so
    /// an older writer reads a newer instance's entries.
    pub fn from_entry(id: StreamId, fields: &[(String, String)]) -> Self {
        let mut r = Self::of_id(id);
        match encoding::encoded(fields) {
            Some(json) => encoding::decode(json, |k, v| r.set(k, v)),
            None => {
                for (k, v) in fields {
                    r.set(k, Cow::Borrowed(v));
                }
            }
        }
        r.finish()
    }

    /// `from_entry`, moving the values of an entry of the earlier format instead of copying
    /// them (the writer's path; an encoded entry is decoded straight into the record).
    pub fn from_owned_entry(id: StreamId, fields: Vec<(String, String)>) -> Self {
        if encoding::encoded(&fields).is_some() {
            return Self::from_entry(id, &fields);
        }
        let mut r = Self::of_id(id);
        for (k, v) in fields {
            r.set(&k, Cow::Owned(v));
        }
        r.finish()
    }

    /// A record with only its id and time.
    fn of_id(id: StreamId) -> Self {
        AuditRecord {
            record_id: id.to_string(),
            timestamp_us: i64::try_from(id.ms)
                .unwrap_or(i64::MAX)
                .saturating_mul(1000),
            ..AuditRecord::default()
        }
    }

    /// Sets the column `k` from an outbox field's text (leniently; unknown names ignored).
    fn set(&mut self, k: &str, v: Cow<'_, str>) {
        let b = || v.parse::<bool>().ok();
        let i64_ = || v.parse::<i64>().ok();
        let i32_ = || v.parse::<i32>().ok();
        let r = self;
        match k {
            "job_id" => r.job_id = Some(v.into_owned()),
            "job_type" => r.job_type = Some(v.into_owned()),
            "queue" => r.queue = Some(v.into_owned()),
            "user_or_system" => r.user_or_system = v.into_owned(),
            "retry_reason" => r.retry_reason = non_empty(v),
            "attempt_number" => r.attempt_number = i32_(),
            "failure_type" => r.failure_type = non_empty(v),
            "retryable" => r.retryable = b(),
            "decision" => r.decision = v.into_owned(),
            "operation_id" => r.operation_id = non_empty(v),
            "policy_digest" => r.policy_digest = non_empty(v),
            "shadow_policy_digest" => r.shadow_policy_digest = non_empty(v),
            "shadow_decision" => r.shadow_decision = non_empty(v),
            "dry_run_flag" => r.dry_run_flag = b().unwrap_or(false),
            "forced" => r.forced = b().unwrap_or(false),
            "success" => r.success = b(),
            "error_message" => r.error_message = non_empty(v),
            "params" => r.params = Some(v.into_owned()),
            "now_ms" => r.now_ms = i64_(),
            "seed" => r.seed = v.parse().ok(),
            "job_status" => r.job_status = Some(v.into_owned()),
            "exc_type" => r.exc_type = Some(v.into_owned()),
            "exc_message" => r.exc_message = Some(v.into_owned()),
            "traceback_sha256" => r.traceback_sha256 = non_empty(v),
            "failed_at_ms" => r.failed_at_ms = i64_(),
            "first_failed_at_ms" => r.first_failed_at_ms = i64_(),
            "prior_attempts" => r.prior_attempts = i32_(),
            "last_attempt_at_ms" => r.last_attempt_at_ms = i64_(),
            "queue_retries_left" => r.queue_retries_left = i32_(),
            "attributes" => r.attributes = non_empty(v),
            "filter" => r.filter = Some(v.into_owned()),
            "counts" => r.counts = Some(v.into_owned()),
            "time_to_outcome_ms" => r.time_to_outcome_ms = i64_(),
            "job_blob_sha256" => r.job_blob_sha256 = non_empty(v),
            _ => {}
        }
    }

    /// A record without a `decision` says so.
    fn finish(mut self) -> Self {
        if self.decision.is_empty() {
            self.decision = "unknown".into();
        }
        self
    }

    /// The failure input a replay gives the policy, given the traceback text (from
    /// `blobs`). `None` for records without one (operator actions, outcomes).
    pub fn failure_input(&self, traceback: String) -> Option<FailureInput> {
        let job_id = self.job_id.clone()?;
        self.seed?;
        let attributes = self
            .attributes
            .as_deref()
            .and_then(|a| serde_json::from_str(a).ok())
            .unwrap_or_default();
        let u = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
        Some(FailureInput {
            job_id,
            job_type: self.job_type.clone().unwrap_or_default(),
            queue: self.queue.clone().unwrap_or_default(),
            job_status: self.job_status.clone().unwrap_or_default(),
            exc_type: self.exc_type.clone().unwrap_or_default(),
            exc_message: self.exc_message.clone().unwrap_or_default(),
            traceback,
            failed_at_ms: u(self.failed_at_ms),
            first_failed_at_ms: u(self.first_failed_at_ms),
            attempts: self
                .prior_attempts
                .and_then(|a| u32::try_from(a).ok())
                .unwrap_or(0),
            last_attempt_at_ms: self.last_attempt_at_ms.and_then(|v| u64::try_from(v).ok()),
            queue_retries_left: self.queue_retries_left.and_then(|v| u32::try_from(v).ok()),
            seed: self.seed.unwrap_or(0),
            attributes,
        })
    }

    /// The policy params of the record, as pairs.
    pub fn params_pairs(&self) -> Vec<(String, String)> {
        self.params
            .as_deref()
            .and_then(|p| {
                serde_json::from_str::<std::collections::BTreeMap<String, String>>(p).ok()
            })
            .map(|m| m.into_iter().collect())
            .unwrap_or_default()
    }

    /// The UTC date (`YYYY-MM-DD`) of the record: its partition.
    pub fn date(&self) -> String {
        date_of_ms(u64::try_from(self.timestamp_us / 1000).unwrap_or(0))
    }
}

fn non_empty(v: Cow<'_, str>) -> Option<String> {
    (!v.is_empty()).then(|| v.into_owned())
}

pub use crate::clock::{date_of_ms, day_of_ms, ms_of_date};

/// Converts records to one arrow batch in the schema's column order.
pub fn to_batch(records: &[AuditRecord]) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let n = records.len();
    let strs = |get: &dyn Fn(&AuditRecord) -> Option<&str>| -> ArrayRef {
        let mut b = StringBuilder::with_capacity(n, n * 16);
        for r in records {
            b.append_option(get(r));
        }
        Arc::new(b.finish())
    };
    let i64s = |get: &dyn Fn(&AuditRecord) -> Option<i64>| -> ArrayRef {
        let mut b = Int64Builder::with_capacity(n);
        for r in records {
            b.append_option(get(r));
        }
        Arc::new(b.finish())
    };
    let i32s = |get: &dyn Fn(&AuditRecord) -> Option<i32>| -> ArrayRef {
        let mut b = Int32Builder::with_capacity(n);
        for r in records {
            b.append_option(get(r));
        }
        Arc::new(b.finish())
    };
    let bools = |get: &dyn Fn(&AuditRecord) -> Option<bool>| -> ArrayRef {
        let mut b = BooleanBuilder::with_capacity(n);
        for r in records {
            b.append_option(get(r));
        }
        Arc::new(b.finish())
    };
    let mut ts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut seeds = UInt64Builder::with_capacity(n);
    for r in records {
        ts.append_value(r.timestamp_us);
        seeds.append_option(r.seed);
    }
    let columns: Vec<ArrayRef> = vec![
        strs(&|r| Some(&r.record_id)),
        Arc::new(ts.finish()),
        strs(&|r| r.job_id.as_deref()),
        strs(&|r| r.job_type.as_deref()),
        strs(&|r| r.queue.as_deref()),
        strs(&|r| Some(&r.user_or_system)),
        strs(&|r| r.retry_reason.as_deref()),
        i32s(&|r| r.attempt_number),
        strs(&|r| r.failure_type.as_deref()),
        bools(&|r| r.retryable),
        strs(&|r| Some(&r.decision)),
        strs(&|r| r.operation_id.as_deref()),
        strs(&|r| r.policy_digest.as_deref()),
        strs(&|r| r.shadow_policy_digest.as_deref()),
        strs(&|r| r.shadow_decision.as_deref()),
        bools(&|r| Some(r.dry_run_flag)),
        bools(&|r| Some(r.forced)),
        bools(&|r| r.success),
        strs(&|r| r.error_message.as_deref()),
        strs(&|r| r.params.as_deref()),
        i64s(&|r| r.now_ms),
        Arc::new(seeds.finish()),
        strs(&|r| r.job_status.as_deref()),
        strs(&|r| r.exc_type.as_deref()),
        strs(&|r| r.exc_message.as_deref()),
        strs(&|r| r.traceback_sha256.as_deref()),
        i64s(&|r| r.failed_at_ms),
        i64s(&|r| r.first_failed_at_ms),
        i32s(&|r| r.prior_attempts),
        i64s(&|r| r.last_attempt_at_ms),
        i32s(&|r| r.queue_retries_left),
        strs(&|r| r.attributes.as_deref()),
        strs(&|r| r.filter.as_deref()),
        strs(&|r| r.counts.as_deref()),
        i64s(&|r| r.time_to_outcome_ms),
        strs(&|r| r.job_blob_sha256.as_deref()),
        i32s(&|_| Some(SCHEMA_VERSION)),
    ];
    RecordBatch::try_new(schema(), columns)
}

/// Reads records back from a batch (any projection of the schema's columns; columns not
/// present are left empty).
pub fn from_batch(batch: &RecordBatch) -> Vec<AuditRecord> {
    let n = batch.num_rows();
    let col = |name: &str| batch.column_by_name(name);
    let strs = |name: &str| col(name).and_then(|c| c.as_any().downcast_ref::<StringArray>());
    let i64s = |name: &str| col(name).and_then(|c| c.as_any().downcast_ref::<Int64Array>());
    let i32s = |name: &str| col(name).and_then(|c| c.as_any().downcast_ref::<Int32Array>());
    let bools = |name: &str| col(name).and_then(|c| c.as_any().downcast_ref::<BooleanArray>());
    let s = |a: Option<&StringArray>, i: usize| {
        a.and_then(|a| (!a.is_null(i)).then(|| a.value(i).to_string()))
    };
    let l = |a: Option<&Int64Array>, i: usize| a.and_then(|a| (!a.is_null(i)).then(|| a.value(i)));
    let w = |a: Option<&Int32Array>, i: usize| a.and_then(|a| (!a.is_null(i)).then(|| a.value(i)));
    let b =
        |a: Option<&BooleanArray>, i: usize| a.and_then(|a| (!a.is_null(i)).then(|| a.value(i)));
    let ts = col("timestamp").and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>());
    let seed = col("seed").and_then(|c| c.as_any().downcast_ref::<UInt64Array>());
    let (record_id, job_id, job_type, queue, actor, reason) = (
        strs("record_id"),
        strs("job_id"),
        strs("job_type"),
        strs("queue"),
        strs("user_or_system"),
        strs("retry_reason"),
    );
    let (failure_type, decision, operation_id, policy_digest) = (
        strs("failure_type"),
        strs("decision"),
        strs("operation_id"),
        strs("policy_digest"),
    );
    let (shadow_digest, shadow_decision, error_message, params) = (
        strs("shadow_policy_digest"),
        strs("shadow_decision"),
        strs("error_message"),
        strs("params"),
    );
    let (job_status, exc_type, exc_message, tb, attributes, filter, counts) = (
        strs("job_status"),
        strs("exc_type"),
        strs("exc_message"),
        strs("traceback_sha256"),
        strs("attributes"),
        strs("filter"),
        strs("counts"),
    );
    let (attempt, prior, retries_left) = (
        i32s("attempt_number"),
        i32s("prior_attempts"),
        i32s("queue_retries_left"),
    );
    let job_blob = strs("job_blob_sha256");
    let (now, failed_at, first_failed, last_attempt, tto) = (
        i64s("now_ms"),
        i64s("failed_at_ms"),
        i64s("first_failed_at_ms"),
        i64s("last_attempt_at_ms"),
        i64s("time_to_outcome_ms"),
    );
    let (retryable, dry_run, forced, success) = (
        bools("retryable"),
        bools("dry_run_flag"),
        bools("forced"),
        bools("success"),
    );
    (0..n)
        .map(|i| AuditRecord {
            record_id: s(record_id, i).unwrap_or_default(),
            timestamp_us: ts.map(|t| t.value(i)).unwrap_or(0),
            job_id: s(job_id, i),
            job_type: s(job_type, i),
            queue: s(queue, i),
            user_or_system: s(actor, i).unwrap_or_default(),
            retry_reason: s(reason, i),
            attempt_number: w(attempt, i),
            failure_type: s(failure_type, i),
            retryable: b(retryable, i),
            decision: s(decision, i).unwrap_or_default(),
            operation_id: s(operation_id, i),
            policy_digest: s(policy_digest, i),
            shadow_policy_digest: s(shadow_digest, i),
            shadow_decision: s(shadow_decision, i),
            dry_run_flag: b(dry_run, i).unwrap_or(false),
            forced: b(forced, i).unwrap_or(false),
            success: b(success, i),
            error_message: s(error_message, i),
            params: s(params, i),
            now_ms: l(now, i),
            seed: seed.and_then(|a| (!a.is_null(i)).then(|| a.value(i))),
            job_status: s(job_status, i),
            exc_type: s(exc_type, i),
            exc_message: s(exc_message, i),
            traceback_sha256: s(tb, i),
            failed_at_ms: l(failed_at, i),
            first_failed_at_ms: l(first_failed, i),
            prior_attempts: w(prior, i),
            last_attempt_at_ms: l(last_attempt, i),
            queue_retries_left: w(retries_left, i),
            attributes: s(attributes, i),
            filter: s(filter, i),
            counts: s(counts, i),
            time_to_outcome_ms: l(tto, i),
            job_blob_sha256: s(job_blob, i),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(date_of_ms(0), "1970-01-01");
        assert_eq!(date_of_ms(1_732_924_800_000), "2024-11-30");
        assert_eq!(date_of_ms(951_782_400_000), "2000-02-29");
        for date in ["1970-01-01", "2000-02-29", "2024-11-30", "2026-12-31"] {
            assert_eq!(date_of_ms(ms_of_date(date).unwrap()), date);
            if date != "1970-01-01" {
                assert!(date_of_ms(ms_of_date(date).unwrap() - 1).as_str() < date);
            }
        }
        assert_eq!(ms_of_date("2024-13-01"), None);
    }

    #[test]
    fn stream_ids_order_and_parse() {
        let a = StreamId::parse("1732924800000-9").unwrap();
        let b = StreamId::parse("1732924800000-10").unwrap();
        assert!(a < b);
        assert_eq!(a.to_string(), "1732924800000-9");
        assert_eq!(a.next(), StreamId { ms: a.ms, seq: 10 });
        assert_eq!(StreamId::parse("x-1"), None);
    }

    #[test]
    fn entry_to_batch_and_back_keeps_every_column() {
        let failure = FailureInput {
            job_id: "j1".into(),
            job_type: "app.tasks.charge".into(),
            queue: "default".into(),
            job_status: "failed".into(),
            exc_type: "ConnectionError".into(),
            exc_message: "refused".into(),
            traceback: "Traceback ...".into(),
            failed_at_ms: 10,
            first_failed_at_ms: 5,
            attempts: 1,
            last_attempt_at_ms: Some(7),
            queue_retries_left: Some(2),
            seed: u64::MAX - 3,
            attributes: vec![("k".into(), "v".into())],
        };
        let mut fields: Vec<(String, String)> = [
            ("job_id", "j1"),
            ("job_type", "app.tasks.charge"),
            ("queue", "default"),
            ("user_or_system", "ops"),
            ("attempt_number", "2"),
            ("failure_type", "network"),
            ("retryable", "true"),
            ("decision", "retried"),
            ("operation_id", "op1"),
            ("policy_digest", "sha256:ab"),
            ("dry_run_flag", "false"),
            ("forced", "false"),
            ("success", "true"),
            ("params", "{\"max_attempts\":\"3\"}"),
            ("now_ms", "12"),
            ("some_future_field", "ignored"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let failure_only = crate::audit::NewRecord {
            failure: Some(crate::audit::FailureColumns::of(&failure)),
            ..crate::audit::NewRecord::default()
        };
        fields.extend(
            failure_only
                .fields()
                .into_iter()
                .filter(|(k, _)| !["user_or_system", "dry_run_flag", "forced"].contains(k))
                .map(|(k, v)| (k.to_string(), v)),
        );
        let id = StreamId::parse("1732924800123-4").unwrap();
        let record = AuditRecord::from_entry(id, &fields);
        assert_eq!(record.timestamp_us, 1_732_924_800_123_000);
        assert_eq!(record.date(), "2024-11-30");
        let batch = to_batch(std::slice::from_ref(&record)).unwrap();
        assert_eq!(batch.num_columns(), COLUMNS.len());
        for (field, name) in batch.schema().fields().iter().zip(COLUMNS) {
            assert_eq!(field.name(), name);
        }
        let back = from_batch(&batch);
        assert_eq!(back, vec![record.clone()]);
        let replayed = record.failure_input("Traceback ...".into()).unwrap();
        assert_eq!(replayed, failure);
        assert_eq!(
            record.params_pairs(),
            vec![("max_attempts".to_string(), "3".to_string())]
        );
    }
}

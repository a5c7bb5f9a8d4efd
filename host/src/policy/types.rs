//! The host's own view of the policy contract: plain data with serde, no wasmtime types.

use serde::{Deserialize, Serialize};

use super::bindings;

/// Caps on text the host passes into a policy, so one huge traceback cannot make an
/// evaluation slow or exhaust a policy's memory.
pub mod input_caps {
    /// Job id, job type, queue, status and exception type: at most this many bytes each.
    pub const SHORT_FIELD_BYTES: usize = 1024;
    /// Exception message: at most this many bytes.
    pub const MESSAGE_BYTES: usize = 16 * 1024;
    /// Traceback: at most this many bytes (the tail is kept: the outermost exception is last).
    pub const TRACEBACK_BYTES: usize = 64 * 1024;
    /// Attributes: at most this many pairs.
    pub const ATTRIBUTES: usize = 64;
}

/// Caps on what a policy may return; anything beyond them is malformed output.
pub mod output_caps {
    /// A failure type: `[a-z0-9_]`, at most this many bytes.
    pub const FAILURE_TYPE_BYTES: usize = 64;
    /// A reason: at most this many bytes.
    pub const REASON_BYTES: usize = 1024;
}

/// Everything a policy is told about one failed job (the contract's `failure` record).
///
/// As JSON (`retryguard policy eval --failure FILE`) every field is snake_case and optional
/// except none: missing fields take their empty default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FailureInput {
    pub job_id: String,
    pub job_type: String,
    pub queue: String,
    pub job_status: String,
    pub exc_type: String,
    pub exc_message: String,
    pub traceback: String,
    pub failed_at_ms: u64,
    pub first_failed_at_ms: u64,
    pub attempts: u32,
    pub last_attempt_at_ms: Option<u64>,
    pub queue_retries_left: Option<u32>,
    pub seed: u64,
    pub attributes: Vec<(String, String)>,
}

impl FailureInput {
    /// Applies the input caps: long texts are cut on a character boundary (a traceback
    /// keeps its tail, where the outermost exception is), extra attributes dropped. The
    /// engine applies them to every input it passes to a policy.
    pub fn capped(&self) -> Self {
        use input_caps::*;
        let head = |s: &str, max| truncate_head(s, max).to_string();
        Self {
            job_id: head(&self.job_id, SHORT_FIELD_BYTES),
            job_type: head(&self.job_type, SHORT_FIELD_BYTES),
            queue: head(&self.queue, SHORT_FIELD_BYTES),
            job_status: head(&self.job_status, SHORT_FIELD_BYTES),
            exc_type: head(&self.exc_type, SHORT_FIELD_BYTES),
            exc_message: head(&self.exc_message, MESSAGE_BYTES),
            traceback: truncate_tail(&self.traceback, TRACEBACK_BYTES).to_string(),
            attributes: self
                .attributes
                .iter()
                .take(ATTRIBUTES)
                .map(|(k, v)| (head(k, SHORT_FIELD_BYTES), head(v, SHORT_FIELD_BYTES)))
                .collect(),
            ..*self
        }
    }
}

/// The first `max` bytes of `s`, cut on a character boundary.
fn truncate_head(s: &str, max: usize) -> &str {
    &s[..s.floor_char_boundary(max.min(s.len()))]
}

/// The last `max` bytes of `s`, cut on a character boundary.
fn truncate_tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    &s[s.ceil_char_boundary(s.len() - max)..]
}

/// Why a job failed, as a policy reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Classification {
    pub failure_type: String,
    pub retryable: bool,
    pub reason: String,
}

/// Why a policy refuses to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HoldKind {
    MaxAttempts,
    NonRetryable,
    UnknownFailure,
    PolicySaysNo,
    /// The host's: the circuit breaker is open (never a policy's verdict).
    CircuitOpen,
    /// The host's: the binding's retry budget is spent (never a policy's verdict).
    Budget,
}

/// What a policy decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Retry at this time (epoch ms); at or before `now` means now.
    RetryAt { at_ms: u64 },
    /// Do not retry: a person needs to look.
    Hold { kind: HoldKind, reason: String },
}

/// One parameter a policy accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamSpec {
    pub name: String,
    pub default_value: String,
    pub description: String,
}

/// What a policy says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub params: Vec<ParamSpec>,
}

/// Per-binding params: key/value text pairs.
pub type Params = Vec<(String, String)>;

impl From<&FailureInput> for bindings::Failure {
    /// The contract's record, with the input caps applied.
    fn from(f: &FailureInput) -> Self {
        let f = f.capped();
        Self {
            job_id: f.job_id,
            job_type: f.job_type,
            queue: f.queue,
            job_status: f.job_status,
            exc_type: f.exc_type,
            exc_message: f.exc_message,
            traceback: f.traceback,
            failed_at_ms: f.failed_at_ms,
            first_failed_at_ms: f.first_failed_at_ms,
            attempts: f.attempts,
            last_attempt_at_ms: f.last_attempt_at_ms,
            queue_retries_left: f.queue_retries_left,
            seed: f.seed,
            attributes: f.attributes,
        }
    }
}

impl From<&Classification> for bindings::Classification {
    fn from(c: &Classification) -> Self {
        Self {
            failure_type: c.failure_type.clone(),
            retryable: c.retryable,
            reason: c.reason.clone(),
        }
    }
}

impl From<bindings::HoldKind> for HoldKind {
    fn from(kind: bindings::HoldKind) -> Self {
        match kind {
            bindings::HoldKind::MaxAttempts => Self::MaxAttempts,
            bindings::HoldKind::NonRetryable => Self::NonRetryable,
            bindings::HoldKind::UnknownFailure => Self::UnknownFailure,
            bindings::HoldKind::PolicySaysNo => Self::PolicySaysNo,
        }
    }
}

impl From<bindings::PolicyInfo> for PolicyInfo {
    fn from(info: bindings::PolicyInfo) -> Self {
        Self {
            name: info.name,
            version: info.version,
            description: info.description,
            params: info
                .params
                .into_iter()
                .map(|p| ParamSpec {
                    name: p.name,
                    default_value: p.default_value,
                    description: p.description,
                })
                .collect(),
        }
    }
}

impl FailureInput {
    /// Fills an empty `exc_type` (and `exc_message`) by parsing the traceback: the
    /// outermost exception of a chain, as Python prints it last.
    pub fn fill_exception_from_traceback(&mut self) {
        if !self.exc_type.is_empty() {
            return;
        }
        if let Some(parsed) = retryguard_policy_default::traceback::parse_outermost(&self.traceback)
        {
            self.exc_type = parsed.exc_type.to_string();
            if self.exc_message.is_empty() {
                self.exc_message = parsed.message;
            }
        }
    }
}

/// The seed a policy gets for jitter: derived from the job id and the attempt number, so
/// the same job and attempt always get the same seed (and a replay the same decision).
pub fn derive_seed(job_id: &str, attempt: u32) -> u64 {
    use sha2::{Digest as _, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(job_id.as_bytes());
    hasher.update([0]);
    hasher.update(attempt.to_le_bytes());
    let hash = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_cut_long_inputs_on_char_boundaries() {
        let f = FailureInput {
            job_id: "é".repeat(input_caps::SHORT_FIELD_BYTES),
            exc_message: "m".repeat(input_caps::MESSAGE_BYTES + 10),
            traceback: format!(
                "{}ValueError: last line",
                "ü".repeat(input_caps::TRACEBACK_BYTES)
            ),
            attributes: vec![("k".into(), "v".into()); input_caps::ATTRIBUTES + 5],
            attempts: 3,
            ..FailureInput::default()
        };
        let c = f.capped();
        assert!(c.job_id.len() <= input_caps::SHORT_FIELD_BYTES);
        assert!(c.job_id.chars().all(|ch| ch == 'é'));
        assert_eq!(c.exc_message.len(), input_caps::MESSAGE_BYTES);
        assert!(c.traceback.len() <= input_caps::TRACEBACK_BYTES);
        assert!(
            c.traceback.ends_with("ValueError: last line"),
            "the tail is kept"
        );
        assert_eq!(c.attributes.len(), input_caps::ATTRIBUTES);
        assert_eq!(c.attempts, 3);
        let small = FailureInput::default();
        assert_eq!(small.capped(), small);
    }

    #[test]
    fn seeds_are_stable_and_differ_by_attempt() {
        assert_eq!(derive_seed("job-1", 0), derive_seed("job-1", 0));
        assert_ne!(derive_seed("job-1", 0), derive_seed("job-1", 1));
        assert_ne!(derive_seed("job-1", 0), derive_seed("job-2", 0));
    }
}

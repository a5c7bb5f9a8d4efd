//! The default policy's logic over outside text, natively: traceback parsing
//! (`parse_outermost`), classification, binding params and the decision.
//!
//! Asserts: no panic; a parsed exception type is a non-empty, plausible class name (at most
//! 512 bytes) taken from the text, its message has no trailing whitespace; classifying with
//! the parsed type and message (as the host sends them) equals classifying the traceback
//! alone; the failure type is one of the known names, matches `[a-z0-9_]{1,64}`, and its
//! `retryable` flag is that type's; reasons are at most `MAX_REASON_BYTES`; accepted params
//! are within their documented ranges; a retry is only ever of a retryable (or, with
//! `retry_unknown`, unknown) failure under `max_attempts`, no earlier than the failure and
//! no later than the longest cooldown after it.
//!
//! Input: the traceback's bytes (so the corpus holds real tracebacks), then optionally a
//! `0xFF` byte (never in UTF-8) and the rest of the failure and the params, read with
//! `arbitrary`.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use retryguard_policy_default::params::{MAX_ATTEMPTS_LIMIT, MAX_COOLDOWN_LIMIT_SECONDS};
use retryguard_policy_default::traceback::parse_outermost;
use retryguard_policy_default::{
    Decision, FailureType, FailureView, MAX_REASON_BYTES, Params, classify, decide,
};

#[derive(Debug, Default, Arbitrary)]
struct Rest<'a> {
    job_status: Status<'a>,
    params: Vec<(ParamKey<'a>, &'a str)>,
    failed_at_ms: u64,
    attempts: u32,
}

#[derive(Debug, Default, Arbitrary)]
enum Status<'a> {
    #[default]
    Failed,
    Stopped,
    Other(&'a str),
}

#[derive(Debug, Arbitrary)]
enum ParamKey<'a> {
    Known(u8),
    Other(&'a str),
}

const PARAM_KEYS: [&str; 5] = [
    "max_attempts",
    "cooldown_seconds",
    "exponential_backoff",
    "max_cooldown_seconds",
    "retry_unknown",
];

fn is_failure_type_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fuzz_target!(|data: &[u8]| {
    let (text, rest) = match data.iter().rposition(|&b| b == 0xff) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let text = String::from_utf8_lossy(text);
    let text = text.as_ref();
    let input = Rest::arbitrary_take_rest(Unstructured::new(rest)).unwrap_or_default();
    let parsed = parse_outermost(text);
    if let Some(p) = &parsed {
        let t = p.exc_type;
        assert!(!t.is_empty() && t.len() <= 512, "{t:?}");
        assert!(
            t.chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '<' | '>')),
            "{t:?}"
        );
        // Borrowed from the text itself.
        let range = text.as_bytes().as_ptr_range();
        assert!(range.contains(&t.as_ptr()));
        assert_eq!(p.message.trim_end(), p.message);
        assert!(p.message.len() <= text.len());
    }

    let job_status = match input.job_status {
        Status::Failed => "failed",
        Status::Stopped => "stopped",
        Status::Other(s) => s,
    };
    let view = FailureView {
        job_type: "app.tasks.fuzz",
        job_status,
        traceback: text,
        failed_at_ms: input.failed_at_ms,
        attempts: input.attempts,
        ..FailureView::default()
    };
    let c = classify(&view);
    assert!(is_failure_type_name(c.failure_type), "{:?}", c.failure_type);
    let ft = FailureType::ALL
        .into_iter()
        .find(|t| t.as_str() == c.failure_type)
        .expect("a known failure type");
    assert_eq!(c.retryable, ft.is_retryable());
    assert!(c.reason.len() <= MAX_REASON_BYTES);
    assert!(!c.reason.is_empty());
    if let Some(p) = &parsed {
        // What the host sends (type and message parsed by the host) classifies the same.
        let with_exception = FailureView {
            exc_type: p.exc_type,
            exc_message: &p.message,
            ..view
        };
        assert_eq!(classify(&with_exception), c);
    }

    let pairs: Vec<(&str, &str)> = input
        .params
        .iter()
        .map(|(k, v)| {
            let k = match k {
                ParamKey::Known(i) => PARAM_KEYS[usize::from(*i) % PARAM_KEYS.len()],
                ParamKey::Other(k) => k,
            };
            (k, *v)
        })
        .collect();
    let p = match Params::parse(pairs.iter().copied()) {
        Ok(p) => p,
        Err(message) => {
            assert!(!message.is_empty());
            Params::default()
        }
    };
    assert!(p.max_attempts <= MAX_ATTEMPTS_LIMIT);
    assert!(p.cooldown_seconds <= p.max_cooldown_seconds);
    assert!(p.max_cooldown_seconds <= MAX_COOLDOWN_LIMIT_SECONDS);

    match decide(&view, c.failure_type, c.retryable, &p, input.failed_at_ms) {
        Decision::RetryAt(at) => {
            assert!(c.retryable || (c.failure_type == "unknown" && p.retry_unknown));
            assert!(input.attempts < p.max_attempts);
            assert!(at >= input.failed_at_ms);
            let longest = p.max_cooldown_seconds * 1000;
            assert!(at <= input.failed_at_ms.saturating_add(longest));
        }
        Decision::Hold { reason, .. } => {
            assert!(!reason.is_empty() && reason.len() <= MAX_REASON_BYTES);
        }
    }
});

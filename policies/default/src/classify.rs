//! Classification: why did a job fail, and could a later attempt succeed?
//!
//! Only the outermost exception decides (the one that escaped the job; see
//! [`crate::traceback`]). The tables and the order they are consulted in are in
//! [`crate::rules`]. The judgement is conservative: a non-retryable match beats a retryable
//! one, and anything not recognised is `unknown`, which the default policy does not retry.

use crate::rules::{
    HTTP_CONTEXT_PHRASES, HTTP_CONTEXT_TYPES, HTTP_STATUS_RULES, INTERRUPTED_TYPES, MESSAGE_RULES,
    MessageRule, PHRASE_INDEX, RQ_NO_EXCEPTION_TEXTS, TYPE_RULES,
};
use crate::{FailureView, bound_reason, traceback, truncate_on_char_boundary};
use core::fmt;

/// How much of a message is searched for phrases, in bytes. Messages are short in practice;
/// this bounds the work for a pathological one (notes at the very end of a huge message are
/// not seen).
pub const MAX_MESSAGE_SCAN: usize = 16 * 1024;
/// How much of an exception type is quoted in a reason, in bytes.
const MAX_TYPE_IN_REASON: usize = 256;

/// The failure types the default policy knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureType {
    /// The network failed: refused, reset, DNS, TLS cut short… (retryable)
    NetworkError,
    /// Something took too long, including RQ's job timeout. (retryable)
    Timeout,
    /// A service asked us to slow down (HTTP 429 and friends). (retryable)
    RateLimit,
    /// A database lock, deadlock or serialization conflict. (retryable)
    DatabaseLock,
    /// A service is briefly unavailable (HTTP 502/503, Redis loading, failover, an
    /// idempotency key held by another run). (retryable)
    TemporaryError,
    /// The job's input is invalid. (not retryable)
    ValidationError,
    /// A bug in the job's code. (not retryable)
    LogicError,
    /// What the job works on does not exist. (not retryable)
    DataNotFound,
    /// The job is not allowed to do what it tried. (not retryable)
    PermissionError,
    /// The deployment is misconfigured (settings, imports, schema). (not retryable)
    ConfigurationError,
    /// Nothing recognised, or the job was interrupted and its side effects are unknown.
    /// Not retryable unless the binding sets `retry_unknown`.
    Unknown,
}

impl FailureType {
    /// Every failure type, retryable ones first.
    pub const ALL: [FailureType; 11] = [
        Self::NetworkError,
        Self::Timeout,
        Self::RateLimit,
        Self::DatabaseLock,
        Self::TemporaryError,
        Self::ValidationError,
        Self::LogicError,
        Self::DataNotFound,
        Self::PermissionError,
        Self::ConfigurationError,
        Self::Unknown,
    ];

    /// The contract's name for it, e.g. `network_error`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NetworkError => "network_error",
            Self::Timeout => "timeout",
            Self::RateLimit => "rate_limit",
            Self::DatabaseLock => "database_lock",
            Self::TemporaryError => "temporary_error",
            Self::ValidationError => "validation_error",
            Self::LogicError => "logic_error",
            Self::DataNotFound => "data_not_found",
            Self::PermissionError => "permission_error",
            Self::ConfigurationError => "configuration_error",
            Self::Unknown => "unknown",
        }
    }

    /// Whether a failure of this type can succeed on a later attempt.
    pub const fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::NetworkError
                | Self::Timeout
                | Self::RateLimit
                | Self::DatabaseLock
                | Self::TemporaryError
        )
    }
}

impl fmt::Display for FailureType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of [`classify`]: the contract's `classification` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// The failure type's name (see [`FailureType::as_str`]).
    pub failure_type: &'static str,
    /// Whether it can succeed on a later attempt (`false` for `unknown`).
    pub retryable: bool,
    /// One line saying what matched, at most [`crate::MAX_REASON_BYTES`].
    pub reason: String,
}

impl Classification {
    fn new(failure_type: FailureType, reason: String) -> Self {
        Self {
            failure_type: failure_type.as_str(),
            retryable: failure_type.is_retryable(),
            reason: bound_reason(reason),
        }
    }
}

/// Classifies a failure.
///
/// 1. A job whose status is `stopped` was interrupted on purpose: `unknown` (it may have
///    partly run).
/// 2. The outermost exception is `f.exc_type`/`f.exc_message`, or, when `exc_type` is empty,
///    whatever [`traceback::parse_outermost`] finds in `f.traceback`.
/// 3. With no exception at all, RQ's own failure texts (a killed work-horse, an abandoned
///    job, …) are recognised as `unknown` with the reason why; anything else is `unknown`.
/// 4. Otherwise the rule tables decide (see [`crate::rules`]).
pub fn classify(f: &FailureView<'_>) -> Classification {
    if f.job_status.trim().eq_ignore_ascii_case("stopped") {
        return Classification::new(
            FailureType::Unknown,
            "job status is stopped: it was interrupted on purpose while it ran, so it may have \
             partly run and its side effects are unknown"
                .to_owned(),
        );
    }
    let exc_type = f.exc_type.trim();
    if !exc_type.is_empty() {
        let message = truncate_on_char_boundary(f.exc_message, MAX_MESSAGE_SCAN);
        return classify_exception(exc_type, &message.to_ascii_lowercase());
    }
    match traceback::parse_outermost(f.traceback) {
        Some(parsed) => {
            let mut message = parsed.message;
            let kept = truncate_on_char_boundary(&message, MAX_MESSAGE_SCAN).len();
            message.truncate(kept);
            message.make_ascii_lowercase();
            classify_exception(parsed.exc_type, &message)
        }
        None => classify_without_exception(f.traceback),
    }
}

/// A failure with no Python exception: one of RQ's own texts, or nothing to go on.
fn classify_without_exception(text: &str) -> Classification {
    for (needle, explanation) in RQ_NO_EXCEPTION_TEXTS {
        if text.contains(needle) {
            return Classification::new(FailureType::Unknown, (*explanation).to_owned());
        }
    }
    let reason = if text.trim().is_empty() {
        "no exception and no failure text were recorded: nothing matched"
    } else {
        "no Python exception found in the failure text: nothing matched"
    };
    Classification::new(FailureType::Unknown, reason.to_owned())
}

/// What a rule matched on, for the reason text.
#[derive(Debug, Clone, Copy)]
enum Hit {
    Type(FailureType),
    Message(FailureType, &'static str),
    Status(FailureType, &'static str),
}

impl Hit {
    fn failure_type(self) -> FailureType {
        match self {
            Self::Type(ft) | Self::Message(ft, _) | Self::Status(ft, _) => ft,
        }
    }

    fn describe(self, exc_type: &str) -> String {
        match self {
            Self::Type(ft) => format!("type {exc_type} matches {ft}"),
            Self::Message(ft, phrase) => format!("message matches {ft} (\"{phrase}\")"),
            Self::Status(ft, code) => format!("HTTP status {code} matches {ft}"),
        }
    }
}

/// The best hit of each retryability: the first found, types being tried before messages.
#[derive(Debug, Default)]
struct Hits {
    non_retryable: Option<Hit>,
    retryable: Option<Hit>,
}

impl Hits {
    fn offer(&mut self, hit: Hit) {
        let slot = if hit.failure_type().is_retryable() {
            &mut self.retryable
        } else {
            &mut self.non_retryable
        };
        if slot.is_none() {
            *slot = Some(hit);
        }
    }

    fn full(&self) -> bool {
        self.non_retryable.is_some() && self.retryable.is_some()
    }
}

/// Classifies an exception by its type and its lower-cased message.
fn classify_exception(exc_type: &str, message: &str) -> Classification {
    let shown = truncate_on_char_boundary(exc_type, MAX_TYPE_IN_REASON);
    if INTERRUPTED_TYPES
        .iter()
        .any(|name| type_matches(exc_type, name))
    {
        return Classification::new(
            FailureType::Unknown,
            format!(
                "type {shown} means the job was interrupted while it ran: it may have partly \
                 run and its side effects are unknown"
            ),
        );
    }

    let mut hits = Hits::default();
    let last = last_component(exc_type);
    for rule in TYPE_RULES {
        // `type_matches`, with the last component found once.
        if exc_type.eq_ignore_ascii_case(rule.name) || last.eq_ignore_ascii_case(rule.name) {
            hits.offer(Hit::Type(rule.failure_type));
        }
    }
    let scan = scan_message(message);
    for rule in [scan.best_non_retryable, scan.best_retryable]
        .into_iter()
        .filter_map(MessageScan::rule)
    {
        hits.offer(Hit::Message(rule.failure_type, rule.phrase));
    }
    if !hits.full()
        && (scan.http_context
            || HTTP_CONTEXT_TYPES
                .iter()
                .any(|f| contains_ignore_case(exc_type, f)))
    {
        for_each_status_token(message, |code| {
            if let Some(rule) = HTTP_STATUS_RULES.iter().find(|r| r.code == code) {
                hits.offer(Hit::Status(rule.failure_type, rule.code));
            }
        });
    }

    match (hits.non_retryable, hits.retryable) {
        (Some(hold), Some(retry)) => Classification::new(
            hold.failure_type(),
            format!(
                "{}; non-retryable wins over: {}",
                hold.describe(shown),
                retry.describe(shown)
            ),
        ),
        (Some(hit), None) | (None, Some(hit)) => {
            Classification::new(hit.failure_type(), hit.describe(shown))
        }
        (None, None) => Classification::new(
            FailureType::Unknown,
            format!("nothing matched type {shown} or its message"),
        ),
    }
}

/// Whether the printed type `exc_type` is the class `name` (see [`crate::rules`]): a dotted
/// `name` must equal the whole type, a plain one its last component; ASCII case ignored.
fn type_matches(exc_type: &str, name: &str) -> bool {
    // The last component has no dot, so only a plain `name` can equal it.
    exc_type.eq_ignore_ascii_case(name) || last_component(exc_type).eq_ignore_ascii_case(name)
}

/// `Order.DoesNotExist` of `app.models.Order.DoesNotExist`: after the last dot.
fn last_component(exc_type: &str) -> &str {
    exc_type.rsplit_once('.').map_or(exc_type, |(_, last)| last)
}

/// What one pass over the lower-cased message found.
#[derive(Debug, Default)]
struct MessageScan {
    /// The earliest row of [`MESSAGE_RULES`] that matched, of each retryability.
    best_non_retryable: Option<usize>,
    best_retryable: Option<usize>,
    /// Whether a phrase of [`HTTP_CONTEXT_PHRASES`] occurs.
    http_context: bool,
}

impl MessageScan {
    fn rule(row: Option<usize>) -> Option<&'static MessageRule> {
        MESSAGE_RULES.get(row?)
    }
}

/// Looks for every phrase at every word start of `message` in one pass. A phrase matches only
/// where a word starts (not after an ASCII letter or digit), so "rate limit" does not match
/// "accurate limit". Each word is compared only with the phrases sharing its first byte
/// ([`PHRASE_INDEX`]), and no searcher is built per phrase.
fn scan_message(message: &str) -> MessageScan {
    let mut scan = MessageScan::default();
    let bytes = message.as_bytes();
    let mut previous_is_alphanumeric = false;
    for (at, &byte) in bytes.iter().enumerate() {
        let word_start = !previous_is_alphanumeric && byte.is_ascii_alphanumeric();
        previous_is_alphanumeric = byte.is_ascii_alphanumeric();
        if !word_start {
            continue;
        }
        let rest = bytes.get(at..).unwrap_or_default();
        for &row in PHRASE_INDEX.rows_starting_with(byte) {
            let row = usize::from(row);
            let Some(rule) = MESSAGE_RULES.get(row) else {
                continue;
            };
            if rest.starts_with(rule.phrase.as_bytes()) {
                let slot = if rule.failure_type.is_retryable() {
                    &mut scan.best_retryable
                } else {
                    &mut scan.best_non_retryable
                };
                // Earlier rows rank higher.
                if slot.is_none_or(|best| row < best) {
                    *slot = Some(row);
                }
            }
        }
        if !scan.http_context {
            scan.http_context = HTTP_CONTEXT_PHRASES
                .iter()
                .any(|p| p.as_bytes().first() == Some(&byte) && rest.starts_with(p.as_bytes()));
        }
    }
    scan
}

/// Whether `haystack` contains `needle`, ASCII case ignored.
fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    !needle.is_empty()
        && haystack
            .as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Calls `found` with every standalone three-digit token of `message`: a run of exactly three
/// ASCII digits preceded by the start, whitespace or one of `'"([=`, and followed by the end,
/// whitespace or one of `'"),:;.]`. So `429` is found in "429 Client Error", "HTTP Error 429:
/// …" and "status_code=429", but not in "4290", "port :429", "/orders/429" or "1.429".
fn for_each_status_token(message: &str, mut found: impl FnMut(&str)) {
    let bytes = message.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        if !bytes.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
            continue;
        }
        let start = at;
        while bytes.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        let before_ok = start
            .checked_sub(1)
            .and_then(|before| bytes.get(before))
            .is_none_or(|&b| b.is_ascii_whitespace() || b"'\"([=".contains(&b));
        let after_ok = bytes
            .get(at)
            .is_none_or(|&b| b.is_ascii_whitespace() || b"'\"),:;.]".contains(&b));
        if at - start == 3
            && before_ok
            && after_ok
            && let Some(token) = message.get(start..at)
        {
            found(token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exc(exc_type: &str, message: &str) -> Classification {
        classify(&FailureView {
            job_status: "failed",
            exc_type,
            exc_message: message,
            ..FailureView::default()
        })
    }

    fn ft(exc_type: &str, message: &str) -> &'static str {
        exc(exc_type, message).failure_type
    }

    #[test]
    fn names_and_retryability() {
        let retryable: Vec<_> = FailureType::ALL
            .iter()
            .filter(|t| t.is_retryable())
            .map(|t| t.as_str())
            .collect();
        assert_eq!(
            retryable,
            [
                "network_error",
                "timeout",
                "rate_limit",
                "database_lock",
                "temporary_error"
            ]
        );
        for t in FailureType::ALL {
            assert!(t.as_str().len() <= 64);
            assert!(
                t.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
            );
        }
    }

    #[test]
    fn type_rules() {
        assert_eq!(
            ft("ConnectionRefusedError", "[Errno 111] x"),
            "network_error"
        );
        assert_eq!(
            ft("requests.exceptions.ConnectionError", ""),
            "network_error"
        );
        assert_eq!(ft("redis.exceptions.ConnectionError", ""), "network_error");
        assert_eq!(ft("redis.exceptions.TimeoutError", ""), "timeout");
        assert_eq!(
            ft("redis.exceptions.BusyLoadingError", ""),
            "temporary_error"
        );
        assert_eq!(ft("redis.exceptions.ReadOnlyError", ""), "temporary_error");
        assert_eq!(
            ft("redis.exceptions.AuthenticationError", ""),
            "permission_error"
        );
        assert_eq!(ft("socket.timeout", "timed out"), "timeout");
        assert_eq!(ft("socket.gaierror", "[Errno -2] x"), "network_error");
        assert_eq!(
            ft("rq.timeouts.JobTimeoutException", "Task exceeded"),
            "timeout"
        );
        assert_eq!(ft("psycopg2.errors.LockNotAvailable", ""), "database_lock");
        assert_eq!(ft("orders.models.Order.DoesNotExist", ""), "data_not_found");
        assert_eq!(ft("KeyError", "'order_id'"), "data_not_found");
        assert_eq!(ft("ZeroDivisionError", "division by zero"), "logic_error");
        assert_eq!(ft("json.decoder.JSONDecodeError", ""), "validation_error");
        assert_eq!(
            ft("django.core.exceptions.ImproperlyConfigured", ""),
            "configuration_error"
        );
        assert_eq!(
            ft("ModuleNotFoundError", "No module named 'x'"),
            "configuration_error"
        );
        assert_eq!(
            ft("billing.guard.GuardInProgress", "key held"),
            "temporary_error"
        );
        assert!(exc("GuardInProgress", "").retryable);
        // Case-insensitive.
        assert_eq!(ft("CONNECTIONREFUSEDERROR", ""), "network_error");
        assert_eq!(ft("mylib.timeouts", ""), "unknown");
    }

    #[test]
    fn type_name_matching() {
        assert!(type_matches(
            "requests.exceptions.ConnectionError",
            "connectionerror"
        ));
        assert!(type_matches("ConnectionError", "ConnectionError"));
        assert!(!type_matches(
            "requests.exceptions.ConnectionErrors",
            "ConnectionError"
        ));
        assert!(!type_matches("ConnectionError.x", "ConnectionError"));
        // A dotted name is matched whole.
        assert!(type_matches("Socket.Timeout", "socket.timeout"));
        assert!(!type_matches("x.socket.timeout", "socket.timeout"));
        assert!(!type_matches("", "x"));
        assert!(!type_matches(".", "x"));
    }

    #[test]
    fn message_rules() {
        assert_eq!(
            ft("sqlite3.OperationalError", "database is locked"),
            "database_lock"
        );
        assert_eq!(
            ft(
                "pymysql.err.OperationalError",
                "(1205, 'Lock wait timeout exceeded; try restarting transaction')"
            ),
            "database_lock"
        );
        assert_eq!(
            ft(
                "sqlalchemy.exc.OperationalError",
                "(psycopg2.errors.SerializationFailure) could not serialize access due to concurrent update"
            ),
            "database_lock"
        );
        assert_eq!(
            ft(
                "redis.exceptions.ResponseError",
                "WRONGTYPE Operation against a key holding the wrong kind of value"
            ),
            "logic_error"
        );
        assert_eq!(
            ft("redis.exceptions.ResponseError", "unknown command 'FOO'"),
            "unknown"
        );
        assert_eq!(
            ft("OSError", "[Errno 101] Network is unreachable"),
            "network_error"
        );
        // Word start: "accurate limit" is not "rate limit".
        assert_eq!(ft("RuntimeError", "accurate limit reached"), "unknown");
        assert_eq!(ft("RuntimeError", "hit the rate limit"), "rate_limit");
        assert_eq!(ft("RuntimeError", "Rate limit"), "rate_limit");
    }

    #[test]
    fn non_retryable_wins_and_says_so() {
        let c = exc(
            "psycopg2.OperationalError",
            "connection to server at \"db\" failed: FATAL:  password authentication failed for user \"app\"\nconnection refused",
        );
        assert_eq!(c.failure_type, "permission_error");
        assert!(!c.retryable);
        assert!(c.reason.contains("non-retryable wins over"), "{}", c.reason);
        // A non-retryable message beats a retryable type.
        let c = exc(
            "requests.exceptions.SSLError",
            "HTTPSConnectionPool(host='x', port=443): [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed",
        );
        assert_eq!(c.failure_type, "configuration_error");
        assert_eq!(
            c.reason,
            "message matches configuration_error (\"certificate verify failed\"); non-retryable wins over: type requests.exceptions.SSLError matches network_error"
        );
        // A non-retryable type beats a retryable message.
        let c = exc("KeyError", "'connection refused'");
        assert_eq!(c.failure_type, "data_not_found");
        assert_eq!(
            c.reason,
            "type KeyError matches data_not_found; non-retryable wins over: message matches network_error (\"connection refused\")"
        );
    }

    #[test]
    fn type_ranks_above_message_within_a_retryability() {
        // TimeoutError (type) over "connection refused" (message): both retryable.
        let c = exc("TimeoutError", "connection refused while waiting");
        assert_eq!(c.failure_type, "timeout");
        assert_eq!(c.reason, "type TimeoutError matches timeout");
        // ValueError (type) over "permission denied" (message): both non-retryable.
        assert_eq!(ft("ValueError", "permission denied"), "validation_error");
    }

    #[test]
    fn http_status_tokens() {
        let http = "requests.exceptions.HTTPError";
        assert_eq!(
            ft(http, "429 Client Error: for url: http://x/"),
            "rate_limit"
        );
        assert_eq!(
            ft(http, "503 Server Error: for url: http://x/"),
            "temporary_error"
        );
        assert_eq!(ft(http, "502 Server Error"), "temporary_error");
        assert_eq!(ft(http, "504 Server Error"), "timeout");
        assert_eq!(ft(http, "401 Client Error"), "permission_error");
        assert_eq!(ft(http, "403 Client Error"), "permission_error");
        assert_eq!(ft(http, "404 Client Error"), "data_not_found");
        assert_eq!(ft(http, "422 Client Error"), "validation_error");
        assert_eq!(ft(http, "500 Server Error"), "unknown");
        assert_eq!(
            ft("urllib.error.HTTPError", "HTTP Error 429: x"),
            "rate_limit"
        );
        assert_eq!(
            ft(
                "aiohttp.client_exceptions.ClientResponseError",
                "503, message='x', url='http://h/'"
            ),
            "temporary_error"
        );
        assert_eq!(
            ft("RuntimeError", "upstream returned status_code=429"),
            "rate_limit"
        );
        // Not standalone tokens.
        assert_eq!(ft(http, "4290 Client Error"), "unknown");
        assert_eq!(
            ft(http, "x Client Error for url: http://h/orders/404"),
            "unknown"
        );
        assert_eq!(ft(http, "Server Error at http://h:503/"), "unknown");
        assert_eq!(ft(http, "Server Error v1.404"), "unknown");
        assert_eq!(ft(http, "Server Error 4040"), "unknown");
        // No HTTP context: bare numbers mean nothing.
        assert_eq!(ft("RuntimeError", "got 429 items"), "unknown");
        assert_eq!(ft("RuntimeError", "429"), "unknown");
        // A URL path number does not override the real status.
        assert_eq!(
            ft(
                http,
                "503 Server Error: Service Unavailable for url: http://h/orders/404"
            ),
            "temporary_error"
        );
    }

    #[test]
    fn status_token_edges() {
        let tokens = |m: &str| {
            let mut v = Vec::new();
            for_each_status_token(m, |t| v.push(t.to_owned()));
            v
        };
        assert_eq!(tokens("429"), ["429"]);
        assert_eq!(tokens("(429)"), ["429"]);
        assert_eq!(tokens("x [503]"), ["503"]);
        assert_eq!(tokens("'503 service unavailable' 404."), ["503", "404"]);
        assert!(tokens("14290").is_empty());
        assert!(tokens("a429").is_empty());
        assert!(tokens("429b").is_empty());
        assert!(tokens("42").is_empty());
        assert!(tokens("").is_empty());
        assert!(tokens("é429é").is_empty());
        assert!(tokens("/429 :429 1.429 429-").is_empty());
    }

    #[test]
    fn message_scan_prefers_earlier_rows_and_word_starts() {
        let scan = scan_message("timed out waiting: lock wait timeout exceeded");
        // "lock wait timeout exceeded" (database_lock) is listed before "timed out".
        assert_eq!(
            MessageScan::rule(scan.best_retryable).map(|r| r.phrase),
            Some("lock wait timeout exceeded")
        );
        assert!(scan.best_non_retryable.is_none());
        assert!(!scan.http_context);
        let scan = scan_message("xtimed out, accurate limit, preforbidden");
        assert!(scan.best_retryable.is_none() && scan.best_non_retryable.is_none());
        assert!(scan_message("got status code 429").http_context);
        assert!(scan_message("").best_retryable.is_none());
    }

    #[test]
    fn interrupted_and_stopped_are_unknown() {
        let c = exc(
            "rq.exceptions.ShutDownImminentException",
            "shut down imminent (signal: SIGTERM)",
        );
        assert_eq!(c.failure_type, "unknown");
        assert!(!c.retryable);
        assert!(c.reason.contains("side effects are unknown"));
        let c = classify(&FailureView {
            job_status: "stopped",
            exc_type: "ConnectionError",
            ..FailureView::default()
        });
        assert_eq!(c.failure_type, "unknown");
        assert!(c.reason.contains("may have partly run"));
    }

    #[test]
    fn rq_texts_without_exception() {
        for (text, needle) in [
            (
                "Work-horse terminated unexpectedly; waitpid returned 9 (signal 9); ",
                "work-horse",
            ),
            (
                "Moved to FailedJobRegistry, due to AbandonedJobError, at 2026-11-29 12:00:00.123456",
                "abandoned",
            ),
            (
                "Job stopped by user, work-horse terminated.",
                "stopped on purpose",
            ),
            ("Job was stuck in intermediate queue.", "intermediate queue"),
        ] {
            let c = classify(&FailureView {
                job_status: "failed",
                traceback: text,
                ..FailureView::default()
            });
            assert_eq!(c.failure_type, "unknown");
            assert!(!c.retryable);
            assert!(c.reason.contains(needle), "{}", c.reason);
            assert!(
                c.reason
                    .contains("may have partly run and its side effects are unknown")
            );
        }
        let c = classify(&FailureView::default());
        assert_eq!(c.failure_type, "unknown");
        assert!(c.reason.contains("nothing matched"));
        let c = classify(&FailureView {
            traceback: "something odd happened",
            ..FailureView::default()
        });
        assert!(c.reason.contains("nothing matched"));
    }

    #[test]
    fn parses_the_traceback_when_no_type_is_given() {
        let tb = "Traceback (most recent call last):\n  File \"a.py\", line 1, in f\nConnectionRefusedError: [Errno 111] Connection refused\n\nThe above exception was the direct cause of the following exception:\n\nTraceback (most recent call last):\n  File \"a.py\", line 3, in g\nValueError: bad order\n";
        let c = classify(&FailureView {
            traceback: tb,
            ..FailureView::default()
        });
        assert_eq!(c.failure_type, "validation_error");
        assert_eq!(c.reason, "type ValueError matches validation_error");
    }

    #[test]
    fn unmatched_is_unknown_and_reasons_are_bounded() {
        let c = exc(
            "billing.errors.GatewayQuirk",
            "the gateway said something new",
        );
        assert_eq!(c.failure_type, "unknown");
        assert_eq!(
            c.reason,
            "nothing matched type billing.errors.GatewayQuirk or its message"
        );
        let long_type = "a".repeat(10_000);
        let c = exc(&long_type, &"é".repeat(100_000));
        assert!(c.reason.len() <= crate::MAX_REASON_BYTES);
        let c = exc(&"é".repeat(5000), "");
        assert!(c.reason.len() <= crate::MAX_REASON_BYTES);
    }
}

//! Classification: why did a job fail, and could a later attempt succeed?
//!
//! Only the outermost exception decides (the one that escaped the job; see
//! [`crate::traceback`]). The tables and the order they are consulted in are in
//! [`crate::rules`]. The judgement is conservative: a non-retryable match beats a retryable
//! one, and anything not recognised is `unknown`, which the default policy does not retry.

use crate::index::{
    PHRASE_INDEX, PhraseEntry, TYPE_INDEX, TypeEntry, Wanted, raw_at, status_rule, word_bytes8,
};
use crate::rules::{
    FailureType, HTTP_CONTEXT_TYPES, MESSAGE_RULES, MessageRule, RQ_NO_EXCEPTION_TEXTS, StatusRule,
    TYPE_RULES, TypeRule,
};
use crate::{FailureView, traceback, truncate_on_char_boundary};
/// The outcome of [`classify`]: the contract's `classification` record, from the SDK.
pub use retryguard_policy_sdk::Classification;

/// How much of a message is searched for phrases, in bytes. Messages are short in practice;
/// this bounds the work for a pathological one (notes at the very end of a huge message are
/// not seen).
pub const MAX_MESSAGE_SCAN: usize = 16 * 1024;
/// How much of an exception type is quoted in a reason, in bytes.
const MAX_TYPE_IN_REASON: usize = 256;

/// A classification of one of the default policy's failure types, its reason cut to
/// [`crate::MAX_REASON_BYTES`].
fn classified(failure_type: FailureType, reason: String) -> Classification {
    Classification::new(failure_type.as_str(), failure_type.is_retryable(), reason)
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
    if trim(f.job_status).eq_ignore_ascii_case("stopped") {
        return classified(
            FailureType::Unknown,
            "job status is stopped: it was interrupted on purpose while it ran, so it may have \
             partly run and its side effects are unknown"
                .to_owned(),
        );
    }
    let exc_type = trim(f.exc_type);
    if !exc_type.is_empty() {
        return classify_exception(exc_type, f.exc_message);
    }
    match traceback::parse_outermost(f.traceback) {
        Some(parsed) => classify_exception(parsed.exc_type, &parsed.message),
        None => classify_without_exception(f.traceback),
    }
}

/// `s.trim()`, with a shortcut for the usual case of nothing to trim: `str::trim` decodes a
/// UTF-8 character at each end, which costs more than the rest of a short field's handling.
fn trim(s: &str) -> &str {
    let kept = |b: Option<&u8>| b.is_some_and(|&b| b.is_ascii() && !char::from(b).is_whitespace());
    if kept(s.as_bytes().first()) && kept(s.as_bytes().last()) {
        s
    } else {
        s.trim()
    }
}

/// A failure with no Python exception: one of RQ's own texts, or nothing to go on.
fn classify_without_exception(text: &str) -> Classification {
    for (needle, explanation) in RQ_NO_EXCEPTION_TEXTS {
        if text.contains(needle) {
            return classified(FailureType::Unknown, (*explanation).to_owned());
        }
    }
    let reason = if text.trim().is_empty() {
        "no exception and no failure text were recorded: nothing matched"
    } else {
        "no Python exception found in the failure text: nothing matched"
    };
    classified(FailureType::Unknown, reason.to_owned())
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

    /// What matched, as pieces to be joined: e.g. `type `, `ValueError`, ` matches `,
    /// `validation_error`.
    fn describe(self, exc_type: &str) -> [&str; 5] {
        match self {
            Self::Type(ft) => ["type ", exc_type, " matches ", ft.as_str(), ""],
            Self::Message(ft, phrase) => ["message matches ", ft.as_str(), " (\"", phrase, "\")"],
            Self::Status(ft, code) => ["HTTP status ", code, " matches ", ft.as_str(), ""],
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

/// Classifies an exception by its type and its message (ASCII case ignored in both).
fn classify_exception(exc_type: &str, message: &str) -> Classification {
    let shown = truncate_on_char_boundary(exc_type, MAX_TYPE_IN_REASON);
    let entries = TYPE_INDEX.lookup(exc_type);
    if entries.contains(&Some(TypeEntry::Interrupted)) {
        let reason = [
            "type ",
            shown,
            " means the job was interrupted while it ran: it may have partly run and its side \
             effects are unknown",
        ];
        return classified(FailureType::Unknown, reason.concat());
    }

    let mut hits = Hits::default();
    for rule in type_rules_in_order(entries) {
        hits.offer(Hit::Type(rule.failure_type));
    }
    // A side the type has decided cannot change: the type's hit ranks above any phrase's.
    let wanted = Wanted {
        retryable: hits.retryable.is_none(),
        non_retryable: hits.non_retryable.is_none(),
    };
    let scan = scan_message(truncate_on_char_boundary(message, MAX_MESSAGE_SCAN), wanted);
    for rule in [scan.best_non_retryable, scan.best_retryable]
        .into_iter()
        .filter_map(MessageScan::rule)
    {
        hits.offer(Hit::Message(rule.failure_type, rule.phrase));
    }
    let statuses = [scan.first_status_non_retryable, scan.first_status_retryable];
    if !hits.full()
        && statuses.iter().any(Option::is_some)
        && (scan.http_context
            || HTTP_CONTEXT_TYPES
                .iter()
                .any(|f| contains_ignore_case(exc_type, f)))
    {
        for rule in statuses.into_iter().flatten() {
            hits.offer(Hit::Status(rule.failure_type, rule.code));
        }
    }

    // Reasons are joined from pieces (`concat`: one allocation, of the exact size) rather than
    // built by `format!`, whose `core::fmt` machinery is slow in wasm.
    let (failure_type, reason) = match (hits.non_retryable, hits.retryable) {
        (Some(hold), Some(retry)) => {
            let [a, b, c, d, e] = hold.describe(shown);
            let [f, g, h, i, j] = retry.describe(shown);
            let wins = "; non-retryable wins over: ";
            let reason = [a, b, c, d, e, wins, f, g, h, i, j].concat();
            (hold.failure_type(), reason)
        }
        (Some(hit), None) | (None, Some(hit)) => (hit.failure_type(), hit.describe(shown).concat()),
        (None, None) => {
            let reason = ["nothing matched type ", shown, " or its message"];
            (FailureType::Unknown, reason.concat())
        }
    };
    classified(failure_type, reason)
}

/// The type rules of `entries` (see [`crate::index::TypeIndex::lookup`]), earlier rows first.
fn type_rules_in_order(entries: [Option<TypeEntry>; 2]) -> impl Iterator<Item = &'static TypeRule> {
    let mut rows = entries.map(|entry| match entry {
        Some(TypeEntry::Rule(row)) => Some(row),
        _ => None,
    });
    if let [Some(a), Some(b)] = rows
        && b < a
    {
        rows = [Some(b), Some(a)];
    }
    rows.into_iter()
        .flatten()
        .filter_map(|row| TYPE_RULES.get(row))
}

/// What one pass over the message found.
#[derive(Debug, Default)]
struct MessageScan {
    /// The earliest row of [`MESSAGE_RULES`] that matched, of each retryability (always `None`
    /// for a retryability the scan did not look for, see [`Wanted`]).
    best_non_retryable: Option<usize>,
    best_retryable: Option<usize>,
    /// Whether a phrase of [`crate::rules::HTTP_CONTEXT_PHRASES`] occurs.
    http_context: bool,
    /// The first HTTP status code of each retryability, in message order (see [`status_at`]).
    first_status_non_retryable: Option<&'static StatusRule>,
    first_status_retryable: Option<&'static StatusRule>,
}

impl MessageScan {
    fn rule(row: Option<usize>) -> Option<&'static MessageRule> {
        MESSAGE_RULES.get(row?)
    }

    fn found_phrase(&mut self, entry: PhraseEntry) {
        let row = match entry {
            PhraseEntry::HttpContext => {
                self.http_context = true;
                return;
            }
            PhraseEntry::Rule(row) => row,
        };
        let Some(rule) = MESSAGE_RULES.get(row) else {
            return;
        };
        let slot = if rule.failure_type.is_retryable() {
            &mut self.best_retryable
        } else {
            &mut self.best_non_retryable
        };
        // Earlier rows rank higher.
        if slot.is_none_or(|best| row < best) {
            *slot = Some(row);
        }
    }

    fn found_status(&mut self, rule: &'static StatusRule) {
        let slot = if rule.failure_type.is_retryable() {
            &mut self.first_status_retryable
        } else {
            &mut self.first_status_non_retryable
        };
        slot.get_or_insert(rule);
    }
}

/// Looks for every `wanted` phrase and every HTTP status code at every word start of
/// `message`, in one pass. A phrase matches only where a word starts (not after an ASCII letter
/// or digit), so "rate limit" does not match "accurate limit"; so does a status code (see
/// [`status_at`]).
///
/// At each word start, the next eight bytes are read as one integer ([`raw_at`]) and compared
/// only with the few phrases of their bucket of [`PHRASE_INDEX`] (usually none), so the cost
/// is a handful of integer operations per word, whatever the number of phrases; the message is
/// neither copied nor lower-cased.
fn scan_message(message: &str, wanted: Wanted) -> MessageScan {
    let mut scan = MessageScan::default();
    let text = message.as_bytes();
    for_each_word_start(text, |at| {
        let raw = raw_at(text, at);
        PHRASE_INDEX.for_each_match_at(text, at, raw, wanted, |entry| scan.found_phrase(entry));
        if (raw as u8).is_ascii_digit()
            && let Some(rule) = status_at(text, at)
        {
            scan.found_status(rule);
        }
    });
    scan
}

/// Calls `visit` with every position in `text` where a word starts (an ASCII letter or digit
/// not preceded by one), in order.
///
/// The text is read eight bytes at a time; [`word_bytes8`] marks the letters and digits of
/// each group of eight (the top bit of each such byte), and a word starts at a marked byte
/// whose predecessor is not marked: shifting the marks left by one byte lines each byte's mark
/// up with its successor's, the previous group's last mark coming in at the bottom.
fn for_each_word_start(text: &[u8], mut visit: impl FnMut(usize)) {
    let mut previous = 0u64;
    let mut base = 0;
    while base < text.len() {
        let marks = word_bytes8(raw_at(text, base));
        let mut starts = marks & !((marks << 8) | (previous >> 56));
        previous = marks;
        while starts != 0 {
            visit(base + (starts.trailing_zeros() / 8) as usize);
            starts &= starts - 1; // clears the lowest mark
        }
        base += 8;
    }
}

/// Whether `haystack` contains `needle`, ASCII case ignored.
fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    !needle.is_empty()
        && haystack
            .as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// The rule of the HTTP status code at `at`, a word start, if there is a standalone
/// three-digit token there: exactly three ASCII digits preceded by the start, whitespace or
/// one of `'"([=`, and followed by the end, whitespace or one of `'"),:;.]`. So `429` is
/// found in "429 Client Error", "HTTP Error 429: …" and "status_code=429", but not in "4290",
/// "port :429", "/orders/429" or "1.429".
fn status_at(text: &[u8], at: usize) -> Option<&'static StatusRule> {
    let token = text.get(at..)?.first_chunk::<3>()?;
    let before_ok = at
        .checked_sub(1)
        .and_then(|before| text.get(before))
        .is_none_or(|&b| b.is_ascii_whitespace() || matches!(b, b'\'' | b'"' | b'(' | b'[' | b'='));
    let after_ok = text.get(at + 3).is_none_or(|&b| {
        b.is_ascii_whitespace()
            || matches!(b, b'\'' | b'"' | b')' | b',' | b':' | b';' | b'.' | b']')
    });
    if !(before_ok && after_ok && token.iter().all(u8::is_ascii_digit)) {
        return None;
    }
    status_rule(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::HTTP_STATUS_RULES;

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

    /// The definition of a type match (see [`crate::rules`]), checked the slow way: a dotted
    /// `name` must equal the whole type, a plain one its last component; ASCII case ignored.
    fn type_matches(exc_type: &str, name: &str) -> bool {
        let last = exc_type.rsplit_once('.').map_or(exc_type, |(_, last)| last);
        exc_type.eq_ignore_ascii_case(name) || last.eq_ignore_ascii_case(name)
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
    fn type_index_agrees_with_the_definition() {
        use crate::rules::INTERRUPTED_TYPES;
        let mut printed = vec![String::new(), ".".into(), "x.".into(), "a..b".into()];
        for name in INTERRUPTED_TYPES
            .iter()
            .copied()
            .chain(TYPE_RULES.iter().map(|r| r.name))
        {
            for variant in [
                name.to_owned(),
                name.to_ascii_uppercase(),
                name.to_ascii_lowercase(),
                format!("pkg.mod.{name}"),
                format!("{name}.x"),
                format!("{name}s"),
                name[1..].to_owned(),
                format!("é{name}"),
            ] {
                printed.push(variant);
            }
        }
        for exc_type in &printed {
            let entries = TYPE_INDEX.lookup(exc_type);
            let interrupted = INTERRUPTED_TYPES.iter().any(|n| type_matches(exc_type, n));
            assert_eq!(
                entries.contains(&Some(TypeEntry::Interrupted)),
                interrupted,
                "{exc_type}"
            );
            let expected: Vec<_> = TYPE_RULES
                .iter()
                .filter(|r| type_matches(exc_type, r.name))
                .collect();
            let got: Vec<_> = type_rules_in_order(entries).collect();
            assert_eq!(got, expected, "{exc_type}");
        }
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
            let mut codes = Vec::new();
            for_each_word_start(m.as_bytes(), |at| {
                codes.extend(status_at(m.as_bytes(), at).map(|rule| rule.code));
            });
            codes
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
        // Only the codes of the table.
        assert!(tokens("500 200").is_empty());
    }

    /// The scan the index replaces, done the slow way: lower-case the message, then try every
    /// phrase at every word start.
    fn reference_scan(message: &str) -> (Option<usize>, Option<usize>, bool, Vec<&'static str>) {
        use crate::rules::HTTP_CONTEXT_PHRASES;
        let lower = message.to_ascii_lowercase();
        let bytes = lower.as_bytes();
        let (mut non_retryable, mut retryable, mut http_context) = (None, None, false);
        let mut statuses = Vec::new();
        for at in 0..bytes.len() {
            let word_start = bytes[at].is_ascii_alphanumeric()
                && (at == 0 || !bytes[at - 1].is_ascii_alphanumeric());
            if !word_start {
                continue;
            }
            let rest = &bytes[at..];
            for (row, rule) in MESSAGE_RULES.iter().enumerate() {
                if rest.starts_with(rule.phrase.as_bytes()) {
                    let slot = if rule.failure_type.is_retryable() {
                        &mut retryable
                    } else {
                        &mut non_retryable
                    };
                    if slot.is_none_or(|best| row < best) {
                        *slot = Some(row);
                    }
                }
            }
            http_context |= HTTP_CONTEXT_PHRASES
                .iter()
                .any(|p| rest.starts_with(p.as_bytes()));
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            let after_ok = rest
                .get(digits)
                .is_none_or(|&b| b.is_ascii_whitespace() || b"'\"),:;.]".contains(&b));
            let before_ok = at == 0
                || bytes[at - 1].is_ascii_whitespace()
                || b"'\"([=".contains(&bytes[at - 1]);
            if digits == 3
                && before_ok
                && after_ok
                && let Some(rule) = HTTP_STATUS_RULES
                    .iter()
                    .find(|r| r.code.as_bytes() == &rest[..3])
            {
                statuses.push(rule.code);
            }
        }
        (non_retryable, retryable, http_context, statuses)
    }

    #[test]
    fn message_scan_agrees_with_the_slow_way() {
        use crate::rules::HTTP_CONTEXT_PHRASES;
        let mut pieces: Vec<String> = MESSAGE_RULES.iter().map(|r| r.phrase.to_owned()).collect();
        pieces.extend(HTTP_CONTEXT_PHRASES.iter().map(|p| (*p).to_owned()));
        pieces.extend(HTTP_STATUS_RULES.iter().map(|r| r.code.to_owned()));
        for extra in [
            " ",
            "  ",
            "\n",
            "x",
            "(",
            "'",
            ".",
            "=",
            "4290",
            "/404",
            "é",
            "\u{1F600}",
            "500",
        ] {
            pieces.push(extra.to_owned());
        }
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            usize::try_from(state % n as u64).unwrap_or(0)
        };
        for _ in 0..20_000 {
            let mut message = String::new();
            for _ in 0..next(12) {
                let piece = &pieces[next(pieces.len())];
                match next(5) {
                    0 => message.push_str(&piece.to_ascii_uppercase()),
                    // Cut short, on a char boundary.
                    1 => message.push_str(truncate_on_char_boundary(piece, next(piece.len() + 1))),
                    _ => message.push_str(piece),
                }
                if next(2) == 0 {
                    message.push(' ');
                }
            }
            let scan = scan_message(&message, Wanted::ALL);
            let (non_retryable, retryable, http_context, statuses) = reference_scan(&message);
            assert_eq!(scan.best_non_retryable, non_retryable, "{message:?}");
            assert_eq!(scan.best_retryable, retryable, "{message:?}");
            assert_eq!(scan.http_context, http_context, "{message:?}");
            let first = |retryable: bool| {
                statuses.iter().copied().find(|code| {
                    HTTP_STATUS_RULES
                        .iter()
                        .any(|r| r.code == *code && r.failure_type.is_retryable() == retryable)
                })
            };
            assert_eq!(
                scan.first_status_retryable.map(|r| r.code),
                first(true),
                "{message:?}"
            );
            assert_eq!(
                scan.first_status_non_retryable.map(|r| r.code),
                first(false),
                "{message:?}"
            );
        }
    }

    #[test]
    fn trim_is_str_trim() {
        for s in [
            "",
            " ",
            "a",
            " a",
            "a ",
            "\u{b}a",
            "a\u{b}",
            "\u{a0}a\u{2003}",
            "éa",
            "aé",
            "a b",
            "\t\nx\r\n",
        ] {
            assert_eq!(trim(s), s.trim(), "{s:?}");
        }
    }

    #[test]
    fn word_starts() {
        let starts = |text: &str| {
            let mut v = Vec::new();
            for_each_word_start(text.as_bytes(), |at| v.push(at));
            v
        };
        assert_eq!(starts(""), [0usize; 0]);
        assert_eq!(starts("a"), [0]);
        assert_eq!(starts("ab cd"), [0, 3]);
        assert_eq!(starts("  x1,y_z(9)éa"), [2, 5, 7, 9, 13]);
        assert_eq!(starts("abcdefgh ijklmnop"), [0, 9]);
        assert_eq!(starts("abcdefg hijklmno"), [0, 8]);
        assert_eq!(starts("abcdefgh"), [0]);
        assert_eq!(starts("abcdefghi"), [0]);
        assert_eq!(starts("abcdefg.i"), [0, 8]);
        let long = "Word, WORD w0rd 42 -x".repeat(7);
        let expected: Vec<usize> = (0..long.len())
            .filter(|&i| {
                long.as_bytes()[i].is_ascii_alphanumeric()
                    && (i == 0 || !long.as_bytes()[i - 1].is_ascii_alphanumeric())
            })
            .collect();
        assert_eq!(starts(&long), expected);
    }

    #[test]
    fn message_scan_prefers_earlier_rows_and_word_starts() {
        let scan = scan_message("timed out waiting: lock wait timeout exceeded", Wanted::ALL);
        // "lock wait timeout exceeded" (database_lock) is listed before "timed out".
        assert_eq!(
            MessageScan::rule(scan.best_retryable).map(|r| r.phrase),
            Some("lock wait timeout exceeded")
        );
        assert!(scan.best_non_retryable.is_none());
        assert!(!scan.http_context);
        let scan = scan_message("xtimed out, accurate limit, preforbidden", Wanted::ALL);
        assert!(scan.best_retryable.is_none() && scan.best_non_retryable.is_none());
        assert!(scan_message("got status code 429", Wanted::ALL).http_context);
        assert!(scan_message("", Wanted::ALL).best_retryable.is_none());
        // A side that is not wanted is not looked for; HTTP context always is.
        let only_non_retryable = Wanted {
            retryable: false,
            non_retryable: true,
        };
        let scan = scan_message(
            "connection refused: permission denied, http error",
            only_non_retryable,
        );
        assert!(scan.best_retryable.is_none() && scan.best_non_retryable.is_some());
        assert!(scan.http_context);
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

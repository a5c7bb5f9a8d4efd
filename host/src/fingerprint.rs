//! Failure fingerprints: what makes two failures "the same cause".
//!
//! The host computes a fingerprint for every failed job from its type and the traceback RQ
//! stored for it (`exc_string`). Recipe, version [`VERSION`] (docs/triage.md has it with
//! examples):
//!
//! 1. the job type, as is;
//! 2. the outermost exception's type, as Python printed it (`parse_outermost`, shared with
//!    the default policy);
//! 3. the up to 3 innermost in-application frames of the outermost traceback, as
//!    `module.path:function` ([`app_frames`]): no line numbers, no frames of installed
//!    packages, of the standard library or of RQ;
//! 4. the first line of the outermost exception's message with its variable parts replaced
//!    by placeholders ([`parameterize`]).
//!
//! The id is the first 8 bytes of sha256 over those parts. A job retryguard cannot read has
//! no traceback but a note in parentheses from the host; it gets a "broken" fingerprint.
//!
//! Everything here is plain string scanning (no regex): bounded, and it never panics.
//!
//! A leaf module: the failure index (`crate::triage`) groups by it and the retry service's
//! `group` filter checks it.

use std::collections::VecDeque;

use retryguard_policy_default::traceback::parse_outermost;
use sha2::{Digest, Sha256};

mod parameterize;

pub use parameterize::parameterize;

/// Bumped whenever the recipe changes (the index stores it; a new version rebuilds the index).
pub const VERSION: u32 = 1;

/// In-application frames kept, innermost first.
const MAX_FRAMES: usize = 3;
/// Path components kept in a frame's module path (`/srv/x/y/billing/gateway.py` →
/// `y.billing.gateway`).
const MODULE_DEPTH: usize = 3;
/// Only this many bytes of a message are parameterized (the rest is dropped).
const MAX_MESSAGE_BYTES: usize = 4096;
/// Separates the parts hashed into the id; it never occurs inside a part (see [`hash_part`]).
const SEPARATOR: u8 = 0x1f;
/// The message of a job whose failure text is empty.
const NO_FAILURE: &str = "(no failure recorded)";
/// The header of a plain traceback and of every chained one.
const HEADER: &str = "Traceback (most recent call last):";
/// The header of a top-level exception group, after its leading spaces.
const GROUP_HEADER: &str = "+ Exception Group Traceback (most recent call last):";
/// Last labels that make a dotted name a hostname on their own (see [`hostname`]).
const COMMON_TLDS: [&str; 7] = ["com", "net", "org", "io", "internal", "local", "dev"];

/// The fingerprint of one failure; failures with the same `id` are grouped together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// 16 lowercase hex chars: the first 8 bytes of sha256 over the recipe's parts.
    pub id: String,
    /// The outermost exception's type (e.g. `requests.exceptions.ConnectionError` or `ValueError`); empty when none.
    pub exc_type: String,
    /// The outermost exception's message with its variable parts replaced by placeholders.
    pub message: String,
    /// The innermost in-application frame as `module.path:function` (empty when none).
    pub top_frame: String,
    /// Whether the job could not be read at all (a "broken jobs" group).
    pub broken: bool,
}

/// The fingerprint of a failure: job type + outermost exception type + top in-app frames + parameterized message.
///
/// - An empty (or blank) traceback is broken, with the message `(no failure recorded)`.
/// - A one-line text in parentheses is a note from the host about a job it could not read
///   (`(unreadable job: rq:job:abc is not a hash; …)`, `(undecodable exc_string: …)`): broken,
///   its message is the note with job ids generalized and then parameterized, so every job
///   broken the same way shares one group.
/// - A text with no recognizable exception (RQ's own "Work-horse terminated unexpectedly; …",
///   a cut-off traceback) has an empty `exc_type`; its first line is the message.
pub fn fingerprint(job_type: &str, traceback: &str) -> Fingerprint {
    let text = traceback.trim();
    if text.is_empty() {
        return broken(job_type, NO_FAILURE.to_owned());
    }
    if is_host_note(text) {
        return broken(job_type, parameterize(&generalize_job_keys(text)));
    }
    let (exc_type, message) = match parse_outermost(traceback) {
        Some(exc) => (
            exc.exc_type.to_owned(),
            parameterize(first_line(&exc.message)),
        ),
        None => (String::new(), parameterize(first_line(text))),
    };
    build(job_type, false, exc_type, app_frames(traceback), message)
}

/// The in-application frames of the outermost traceback, innermost first, as `module.path:function`.
///
/// The outermost traceback is the block after the last top-level header (a chained traceback
/// prints the outermost exception last). At most 3 frames are kept, the ones closest to the
/// raise. Dropped: `<frozen …>`, `<string>` and other `<…>` pseudo-files, anything under
/// `site-packages/` or `dist-packages/`, the standard library (`lib/python3.X/`) and RQ
/// (`/rq/`). A frame line without a function (a `SyntaxError`'s location) is not a frame.
pub fn app_frames(traceback: &str) -> Vec<String> {
    let Some((block, indent)) = outermost_block(traceback) else {
        return Vec::new();
    };
    let mut innermost = VecDeque::with_capacity(MAX_FRAMES + 1);
    for line in block.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let content = if indent.is_empty() {
            line
        } else {
            // Inside a group every line is `<indent>| <content>`; anything else ends its block.
            match line.strip_prefix(indent).and_then(|l| l.strip_prefix('|')) {
                Some(rest) => rest.strip_prefix(' ').unwrap_or(rest),
                None => break,
            }
        };
        if content.trim().is_empty() {
            continue;
        }
        if !content.starts_with([' ', '\t']) {
            break; // the exception line: no frames after it
        }
        if let Some((path, function)) = parse_frame_line(content)
            && is_app_path(path)
        {
            innermost.push_back(format!("{}:{function}", module_path(path)));
            if innermost.len() > MAX_FRAMES {
                innermost.pop_front();
            }
        }
    }
    innermost.into_iter().rev().collect()
}

/// The fingerprint of a job that could not be read: no exception, no frames.
fn broken(job_type: &str, message: String) -> Fingerprint {
    build(job_type, true, String::new(), Vec::new(), message)
}

/// Hashes the parts into the id and assembles the fingerprint.
///
/// The parts, joined with the separator byte: the version, the job type, a broken marker
/// (`broken` or empty), the exception type, each frame (innermost first), then the message.
/// Only the frames vary in number, so the separators alone tell the parts apart. The broken
/// marker keeps a broken job's id apart from a readable one with the same text.
fn build(
    job_type: &str,
    broken: bool,
    exc_type: String,
    frames: Vec<String>,
    message: String,
) -> Fingerprint {
    let mut hasher = Sha256::new();
    let version = VERSION.to_string();
    let marker = if broken { "broken" } else { "" };
    let fixed = [version.as_str(), job_type, marker, exc_type.as_str()];
    let frame_parts = frames.iter().map(String::as_str);
    let parts = fixed
        .into_iter()
        .chain(frame_parts)
        .chain([message.as_str()]);
    for (n, part) in parts.enumerate() {
        if n > 0 {
            hasher.update([SEPARATOR]);
        }
        hash_part(&mut hasher, part);
    }
    let digest = hasher.finalize();
    Fingerprint {
        id: hex::encode(&digest[..8]),
        exc_type,
        message,
        top_frame: frames.into_iter().next().unwrap_or_default(),
        broken,
    }
}

/// Feeds one part; a separator byte inside it (possible only in odd input) is hashed as
/// U+FFFD instead, so it cannot shift the parts.
fn hash_part(hasher: &mut Sha256, part: &str) {
    for (n, piece) in part.split(char::from(SEPARATOR)).enumerate() {
        if n > 0 {
            hasher.update("\u{fffd}");
        }
        hasher.update(piece);
    }
}

/// The first non-blank line, trimmed.
fn first_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default()
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Broken jobs
// ---------------------------------------------------------------------------------------

/// The host writes what it could not read as one line in parentheses (never a Python
/// exception): `(unreadable job: …)`, `(undecodable exc_string: …)`.
fn is_host_note(text: &str) -> bool {
    text.starts_with('(') && text.ends_with(')') && !text.contains('\n')
}

/// Replaces the job id in RQ keys (`rq:job:<id>`, `rq:results:<id>`) by `<id>`: job ids are
/// free-form strings, which no placeholder rule would catch.
fn generalize_job_keys(text: &str) -> String {
    const PREFIXES: [&str; 2] = ["rq:job:", "rq:results:"];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((at, prefix)) = PREFIXES
        .iter()
        .filter_map(|p| rest.find(p).map(|at| (at, *p)))
        .min()
    {
        let (before, after) = rest.split_at(at + prefix.len());
        out.push_str(before);
        out.push_str("<id>");
        let id_len = after
            .find(|c: char| c.is_whitespace() || matches!(c, ';' | ',' | ')'))
            .unwrap_or(after.len());
        rest = after.get(id_len..).unwrap_or_default();
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------

/// The lines after the last top-level header, and the indentation of a group's block (`""`
/// for a plain traceback). The same rule as `parse_outermost`.
fn outermost_block(text: &str) -> Option<(&str, &str)> {
    let mut found = None;
    let mut offset = 0;
    for line in text.split('\n') {
        let next = offset + line.len() + 1;
        let line = line.trim_end();
        if line == HEADER {
            found = Some((next, ""));
        } else if let Some(indent) = line.strip_suffix(GROUP_HEADER)
            && indent.bytes().all(|b| b == b' ')
        {
            found = Some((next, indent));
        }
        offset = next;
    }
    let (start, indent) = found?;
    Some((text.get(start..).unwrap_or_default(), indent))
}

/// `  File "<path>", line <n>, in <function>` → `(path, function)`.
fn parse_frame_line(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix("  File \"")?;
    let (path, rest) = rest.rsplit_once("\", line ")?;
    let (_line_number, function) = rest.split_once(", in ")?;
    let function = function.trim();
    (!function.is_empty()).then_some((path, function))
}

/// Whether a frame's file belongs to the application (see [`app_frames`] for what does not).
fn is_app_path(path: &str) -> bool {
    if path.starts_with('<') {
        return false; // <frozen importlib._bootstrap>, <string>, <stdin>
    }
    let mut previous = "";
    for component in path.split(['/', '\\']) {
        let stdlib = (is_python_dir(component)
            && (previous.eq_ignore_ascii_case("lib") || previous.eq_ignore_ascii_case("lib64")))
            // Windows: C:\Python311\Lib\…
            || (component.eq_ignore_ascii_case("lib") && is_python_dir(previous));
        if stdlib || matches!(component, "site-packages" | "dist-packages" | "rq") {
            return false;
        }
        previous = component;
    }
    true
}

/// `python3.11`, `python3`, `Python311`: a directory named after a Python version.
fn is_python_dir(component: &str) -> bool {
    let Some(version) = component
        .get(..6)
        .filter(|p| p.eq_ignore_ascii_case("python"))
        .and_then(|_| component.get(6..))
    else {
        return false;
    };
    version.starts_with(|c: char| c.is_ascii_digit())
        && version.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// The last up to 3 path components joined by `.`, without `.py` and `__init__`:
/// `/app/billing/gateway.py` → `app.billing.gateway`, `/srv/x/y/billing/__init__.py` →
/// `x.y.billing`.
fn module_path(path: &str) -> String {
    let mut parts: Vec<&str> = path
        .split(['/', '\\'])
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if let Some(last) = parts.last_mut() {
        for extension in [".py", ".pyc", ".pyx"] {
            if let Some(stem) = last.strip_suffix(extension) {
                *last = stem;
                break;
            }
        }
    }
    parts.retain(|c| !c.is_empty() && *c != "__init__");
    let start = parts.len().saturating_sub(MODULE_DEPTH);
    parts[start..].join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RQ's own frame, outermost in every job's traceback.
    const RQ: (&str, u32, &str) = (
        "/usr/lib/python3.11/site-packages/rq/worker.py",
        1430,
        "perform_job",
    );
    const TASK: (&str, u32, &str) = ("/app/billing/tasks.py", 42, "charge_card");
    const GATEWAY: (&str, u32, &str) = ("/app/billing/gateway.py", 17, "charge");

    /// A traceback as RQ stores it: the header, `frames` outermost first, the exception.
    fn tb(frames: &[(&str, u32, &str)], exception: &str) -> String {
        let mut t = String::from("Traceback (most recent call last):\n");
        for (path, line, function) in frames {
            t.push_str(&format!(
                "  File \"{path}\", line {line}, in {function}\n    do_something()\n"
            ));
        }
        t.push_str(exception);
        t.push('\n');
        t
    }

    /// `cause`, then `outer` chained to it (`raise … from …`).
    fn chained(cause: &str, outer: &str) -> String {
        format!(
            "{cause}\nThe above exception was the direct cause of the following exception:\n\n{outer}"
        )
    }

    fn billing(exception: &str) -> String {
        tb(&[RQ, TASK, GATEWAY], exception)
    }

    /// A job type and its traceback.
    type Failure = (&'static str, String);

    /// The contract: which failures are "the same cause".
    #[test]
    fn contract_table() {
        let declined = "billing.gateway.PaymentDeclined: card 4242 declined: amount 12.50 EUR";
        let rows: Vec<(&str, Failure, Failure, bool)> = vec![
            (
                "identical",
                ("charge", billing(declined)),
                ("charge", billing(declined)),
                true,
            ),
            (
                "ids and amounts",
                ("charge", billing(declined)),
                (
                    "charge",
                    billing("billing.gateway.PaymentDeclined: card 17 declined: amount 1200.00 EUR"),
                ),
                true,
            ),
            (
                "line numbers",
                ("charge", billing(declined)),
                (
                    "charge",
                    tb(
                        &[RQ, ("/app/billing/tasks.py", 50, "charge_card"), ("/app/billing/gateway.py", 99, "charge")],
                        declined,
                    ),
                ),
                true,
            ),
            (
                "site-packages path and Python version",
                ("charge", billing(declined)),
                (
                    "charge",
                    tb(
                        &[("/opt/venv/lib/python3.12/site-packages/rq/job.py", 1300, "perform"), TASK, GATEWAY],
                        declined,
                    ),
                ),
                true,
            ),
            (
                "library and stdlib frames under the raise",
                ("charge", billing(declined)),
                (
                    "charge",
                    tb(
                        &[
                            RQ,
                            TASK,
                            GATEWAY,
                            ("/usr/local/lib/python3.12/dist-packages/requests/api.py", 73, "post"),
                            ("/usr/lib/python3.12/json/decoder.py", 337, "decode"),
                        ],
                        declined,
                    ),
                ),
                true,
            ),
            (
                "hosts",
                ("sync", billing("psycopg.OperationalError: could not connect to db-3.prod.internal:5432")),
                ("sync", billing("psycopg.OperationalError: could not connect to db-12.prod.internal:6432")),
                true,
            ),
            (
                "IP addresses",
                ("sync", billing("redis.exceptions.ConnectionError: Error 111 connecting to 10.0.3.7:6379. Connection refused.")),
                ("sync", billing("redis.exceptions.ConnectionError: Error 111 connecting to 192.168.1.20:6380. Connection refused.")),
                true,
            ),
            (
                "IPv6 addresses",
                ("sync", billing("OSError: cannot reach fe80::1ff:fe23:4567:890a")),
                ("sync", billing("OSError: cannot reach 2001:db8::8a2e:370:7334")),
                true,
            ),
            (
                "UUIDs",
                ("ship", billing("orders.OrderMissing: order 5b0e3a52-8c1d-4c44-9a4f-2f6a0e9c1d77 not found")),
                ("ship", billing("orders.OrderMissing: order 0F8FAD5B-D9CB-469F-A165-70867728950E not found")),
                true,
            ),
            (
                "timestamps",
                ("ship", billing("LockExpired: lock expired at 2026-12-04T17:38:19.123Z")),
                ("ship", billing("LockExpired: lock expired at 2026-11-30 08:01:02+00:00")),
                true,
            ),
            (
                "emails",
                ("mail", billing("smtplib.SMTPRecipientsRefused: mailbox full for ana@example.com")),
                ("mail", billing("smtplib.SMTPRecipientsRefused: mailbox full for bob.smith+x@mail.example.org")),
                true,
            ),
            (
                "URLs",
                ("sync", billing("requests.exceptions.HTTPError: 404 Client Error: Not Found for url: https://api.example.com/v1/users/42")),
                ("sync", billing("requests.exceptions.HTTPError: 404 Client Error: Not Found for url: https://api.example.com/v1/users/7?expand=1")),
                true,
            ),
            (
                "durations",
                ("sync", billing("TimeoutError: timed out after 30s")),
                ("sync", billing("TimeoutError: timed out after 1.5 seconds")),
                true,
            ),
            (
                "quoted values",
                ("sync", billing("KeyError: 'customer_id'")),
                ("sync", billing("KeyError: \"amount\"")),
                true,
            ),
            (
                "hex addresses",
                ("sync", billing("RuntimeError: <Lock object at 0x7f3a2b1c> is held")),
                ("sync", billing("RuntimeError: <Lock object at 0x7f00aa10ff> is held")),
                true,
            ),
            (
                "a different cause under the same outermost exception",
                ("sync", chained(&tb(&[TASK], "KeyError: 'x'"), &billing(declined))),
                ("sync", chained(&tb(&[GATEWAY], "ValueError: y"), &billing(declined))),
                true,
            ),
            (
                "the message's later lines",
                ("sync", billing(&format!("{declined}\nretry id 1"))),
                ("sync", billing(&format!("{declined}\nsomething else entirely"))),
                true,
            ),
            (
                "a 4th in-app frame from the raise",
                ("sync", tb(&[RQ, ("/app/jobs/run.py", 3, "main"), TASK, GATEWAY, ("/app/billing/http.py", 9, "post")], declined)),
                ("sync", tb(&[RQ, ("/app/jobs/other.py", 3, "main"), TASK, GATEWAY, ("/app/billing/http.py", 9, "post")], declined)),
                true,
            ),
            (
                "CRLF line endings",
                ("sync", billing(declined)),
                ("sync", billing(declined).replace('\n', "\r\n")),
                true,
            ),
            (
                "RQ's own failure texts",
                ("sync", "Work-horse terminated unexpectedly; waitpid returned 9 (signal 9); ".to_owned()),
                ("sync", "Work-horse terminated unexpectedly; waitpid returned 15 (signal 15); ".to_owned()),
                true,
            ),
            (
                "unreadable jobs",
                ("", "(unreadable job: rq:job:abc is not a hash; retryguard never requeues it)".to_owned()),
                ("", "(unreadable job: rq:job:5b0e3a52-8c1d-4c44-9a4f-2f6a0e9c1d77 is not a hash; retryguard never requeues it)".to_owned()),
                true,
            ),
            (
                "undecodable failures",
                ("sync", "(undecodable exc_string: Invalid symbol 45, offset 3.)".to_owned()),
                ("sync", "(undecodable exc_string: Invalid symbol 61, offset 1200.)".to_owned()),
                true,
            ),
            (
                "empty and blank",
                ("sync", String::new()),
                ("sync", " \n\t\n".to_owned()),
                true,
            ),
            (
                "job type",
                ("charge", billing(declined)),
                ("refund", billing(declined)),
                false,
            ),
            (
                "exception type",
                ("sync", billing("ValueError: bad amount")),
                ("sync", billing("TypeError: bad amount")),
                false,
            ),
            (
                "qualified and bare exception type",
                ("sync", billing(declined)),
                ("sync", billing(&declined.replace("billing.gateway.", ""))),
                false,
            ),
            (
                "in-app function",
                ("sync", billing(declined)),
                ("sync", tb(&[RQ, TASK, ("/app/billing/gateway.py", 17, "refund")], declined)),
                false,
            ),
            (
                "in-app module",
                ("sync", billing(declined)),
                ("sync", tb(&[RQ, TASK, ("/app/billing/stripe.py", 17, "charge")], declined)),
                false,
            ),
            (
                "in-app caller",
                ("sync", billing(declined)),
                ("sync", tb(&[RQ, ("/app/billing/tasks.py", 42, "charge_invoice"), GATEWAY], declined)),
                false,
            ),
            (
                "message text",
                ("sync", billing("PaymentDeclined: card 4242 declined")),
                ("sync", billing("PaymentDeclined: card 4242 expired")),
                false,
            ),
            (
                "Python names in the message",
                ("sync", billing("ImportError: cannot import billing.gateway.charge")),
                ("sync", billing("ImportError: cannot import billing.gateway.refund")),
                false,
            ),
            (
                "no message and a message",
                ("sync", billing("StopIteration")),
                ("sync", billing("StopIteration: 3")),
                false,
            ),
            (
                "the same cause under a different outermost exception",
                ("sync", chained(&tb(&[TASK], "KeyError: 'x'"), &billing("ValueError: a"))),
                ("sync", chained(&tb(&[TASK], "KeyError: 'x'"), &billing("TypeError: a"))),
                false,
            ),
            (
                "unreadable and undecodable",
                ("", "(unreadable job: rq:job:abc is not a hash; retryguard never requeues it)".to_owned()),
                ("", "(undecodable exc_string: Incorrect padding)".to_owned()),
                false,
            ),
            (
                "a broken job and a readable one with the same text",
                ("sync", "(worker lost)".to_owned()),
                ("sync", "(worker lost)\nsecond line".to_owned()),
                false,
            ),
        ];
        assert!(rows.len() >= 20);
        for (name, (job_a, a), (job_b, b), same) in rows {
            let (fa, fb) = (fingerprint(job_a, &a), fingerprint(job_b, &b));
            assert_eq!(fa.id == fb.id, same, "{name}:\n{fa:?}\n{fb:?}");
            for f in [&fa, &fb] {
                assert_eq!(f.id.len(), 16, "{name}");
                assert!(
                    f.id.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn fields_of_a_fingerprint() {
        let f = fingerprint(
            "billing.tasks.charge_card",
            &billing(
                "billing.gateway.PaymentDeclined: card 4242 declined: amount 12.50 EUR\nsecond line",
            ),
        );
        assert_eq!(f.exc_type, "billing.gateway.PaymentDeclined");
        assert_eq!(f.message, "card <int> declined: amount <float> EUR");
        assert_eq!(f.top_frame, "app.billing.gateway:charge");
        assert!(!f.broken);

        let f = fingerprint(
            "t",
            "Work-horse terminated unexpectedly; waitpid returned 9 (signal 9); ",
        );
        assert_eq!(f.exc_type, "");
        assert_eq!(
            f.message,
            "Work-horse terminated unexpectedly; waitpid returned <int> (signal <int>);"
        );
        assert_eq!(f.top_frame, "");
        assert!(!f.broken);

        // Cut off before its exception line: the frames still count.
        let f = fingerprint(
            "t",
            "Traceback (most recent call last):\n  File \"/app/a.py\", line 1, in f\n",
        );
        assert_eq!(
            (f.exc_type.as_str(), f.message.as_str()),
            ("", "Traceback (most recent call last):")
        );
        assert_eq!(f.top_frame, "app.a:f");
    }

    /// The id of one fixed input, so that any change to the recipe is noticed (and comes with
    /// a `VERSION` bump).
    #[test]
    fn id_is_stable() {
        let f = fingerprint(
            "billing.tasks.charge_card",
            &billing("billing.gateway.PaymentDeclined: card 4242 declined: amount 12.50 EUR"),
        );
        assert_eq!(VERSION, 1);
        assert_eq!(f.id, "621f9ec00804e48b");
    }

    #[test]
    fn parameterize_table() {
        let rows = [
            // Dates, datetimes, times.
            ("expired on 2026-12-04", "expired on <date>"),
            ("at 2026-12-04T17:38:19.123Z", "at <datetime>"),
            ("at 2026-12-04 17:38:19+00:00.", "at <datetime>."),
            ("at 2026-12-04t17:38:19-0500", "at <datetime>"),
            (
                "Moved to FailedJobRegistry, due to AbandonedJobError, at 2026-11-29 12:00:00.123456",
                "Moved to FailedJobRegistry, due to AbandonedJobError, at <datetime>",
            ),
            ("2026-13-04 is no date", "<int>-<int>-<int> is no date"),
            (
                "started 17:38:19, gave up 9:05:00.5",
                "started <time>, gave up <time>",
            ),
            ("ratio 12:30", "ratio <int>:<int>"),
            // UUIDs, emails, URLs.
            (
                "job 5b0e3a52-8c1d-4c44-9a4f-2f6a0e9c1d77 failed",
                "job <uuid> failed",
            ),
            (
                "rq:job:0F8FAD5B-D9CB-469F-A165-70867728950E",
                "rq:job:<uuid>",
            ),
            (
                "no mailbox ana.b+tag@mail.example.org.",
                "no mailbox <email>.",
            ),
            ("user postgres@localhost", "user postgres@localhost"),
            (
                "GET https://api.example.com/v1/users/42?x=1 failed",
                "GET <url> failed",
            ),
            ("(see http://x.io/a).", "(see <url>)."),
            ("dsn postgres://u:pw@db.internal:5432/app", "dsn <url>"),
            // IPs and hostnames.
            (
                "connect to 10.0.3.7:6379 refused",
                "connect to <ip> refused",
            ),
            ("from 192.168.1.20.", "from <ip>."),
            (
                "bind [::1]:8000 and fe80::1ff:fe23:4567:890a",
                "bind [<ip>]:<int> and <ip>",
            ),
            (
                "::ffff:192.0.2.1 and 2001:db8:0:0:0:0:0:1, not a::b or 12:34:56:78",
                "<ip> and <ip>, not a::b or <int>:<int>:<int>:<int>",
            ),
            ("version 1.2.3.4.5", "version <float>.<float>.<int>"),
            (
                "host db-3.prod.internal:5432 down",
                "host <hostname>:<int> down",
            ),
            ("api.stripe.com timed out", "<hostname> timed out"),
            ("redis1.cache unreachable", "<hostname> unreachable"),
            (
                "billing.gateway.PaymentDeclined raised",
                "billing.gateway.PaymentDeclined raised",
            ),
            (
                "os.path.join and config.yaml",
                "os.path.join and config.yaml",
            ),
            ("file /tmp/export-42.csv", "file /tmp/export-<int>.csv"),
            // Hex, durations, numbers.
            ("<Lock object at 0x7f3a2b1c>", "<Lock object at <hex>>"),
            (
                "commit 5f3a9c2e1d is bad, deadbeef is a word",
                "commit <hex> is bad, deadbeef is a word",
            ),
            ("id 12345678", "id <int>"),
            (
                "after 30s, 1.5ms, 2m, 500 ms, 3 seconds and 10µs",
                "after <duration>, <duration>, <duration>, <duration>, <duration> and <duration>",
            ),
            ("3 s then 2 m", "<int> s then <int> m"),
            (
                "amount 12.50 EUR, ratio 1.5e-3",
                "amount <float> EUR, ratio <float>",
            ),
            ("HTTP 503 from upstream", "HTTP <int> from upstream"),
            (
                "id=123, -7, v2, abc123, 123abc",
                "id=<int>, -<int>, v2, abc123, 123abc",
            ),
            // Quoted strings.
            ("KeyError 'customer_id'", "KeyError <quoted>"),
            (
                "got \"a \\\" b\" and 'it's fine'",
                "got <quoted> and <quoted>",
            ),
            ("don't touch 'x", "don't touch 'x"),
            (
                "host='api.stripe.com', port=443",
                "host=<quoted>, port=<int>",
            ),
            ("x 'a' 'b 'c", "x <quoted> 'b 'c"),
            ("on '2026-12-04'", "on <quoted>"),
            ("'a\n'b' c", "'a\n<quoted> c"),
            // Untouched.
            ("", ""),
            (
                "plain words, punctuation; and é ü 中文 42€",
                "plain words, punctuation; and é ü 中文 42€",
            ),
        ];
        assert!(rows.len() >= 25);
        let mut failures = Vec::new();
        for (input, expected) in rows {
            let got = parameterize(input);
            if got != expected {
                failures.push(format!("{input:?}\n   got {got:?}\n  want {expected:?}"));
            }
            // Placeholders are stable under a second pass.
            assert_eq!(parameterize(&got), got, "{input:?}");
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn parameterize_reads_at_most_4096_bytes() {
        let long = "é".repeat(5000);
        let out = parameterize(&long);
        assert!(out.len() <= MAX_MESSAGE_BYTES);
        assert_eq!(out, "é".repeat(2048));
        assert_eq!(
            parameterize(&format!("{} 42", "x".repeat(4096))),
            "x".repeat(4096)
        );
    }

    #[test]
    fn app_frames_of_a_chained_traceback() {
        let cause = tb(&[RQ, ("/app/billing/old.py", 3, "fetch")], "KeyError: 'x'");
        let outer = tb(
            &[
                RQ,
                ("<frozen importlib._bootstrap>", 1387, "_gcd_import"),
                ("/srv/x/y/billing/tasks.py", 42, "charge_card"),
                ("<string>", 1, "<module>"),
                ("/usr/lib/python3.11/json/__init__.py", 346, "loads"),
                ("/app/billing/__init__.py", 5, "<module>"),
                (
                    "/home/u/.venv/lib/python3.12/site-packages/stripe/api.py",
                    10,
                    "request",
                ),
                ("/usr/lib/python3/dist-packages/six.py", 1, "reraise"),
                (
                    "/usr/local/lib64/python3.9/socket.py",
                    800,
                    "create_connection",
                ),
                ("C:\\Python311\\Lib\\json\\decoder.py", 337, "decode"),
                ("C:\\app\\billing\\gateway.py", 17, "charge"),
                ("/opt/rq/worker.py", 1, "work"),
            ],
            "ValueError: outer",
        );
        let text = format!(
            "{cause}\nDuring handling of the above exception, another exception occurred:\n\n{outer}"
        );
        assert_eq!(
            app_frames(&text),
            [
                "app.billing.gateway:charge",
                "app.billing:<module>",
                "y.billing.tasks:charge_card"
            ]
        );
        // Only the 3 innermost are kept.
        let many = tb(
            &[
                ("/a/one.py", 1, "f1"),
                ("/a/two.py", 1, "f2"),
                ("/a/three.py", 1, "f3"),
                ("/a/four.py", 1, "f4"),
            ],
            "ValueError",
        );
        assert_eq!(app_frames(&many), ["a.four:f4", "a.three:f3", "a.two:f2"]);
        // `python3.11` as an app directory is not the standard library outside `lib/`.
        assert_eq!(
            app_frames(&tb(&[("/srv/python3.11/app/tasks.py", 1, "run")], "E")),
            ["python3.11.app.tasks:run"]
        );
    }

    #[test]
    fn app_frames_edge_cases() {
        // No header, no frames.
        assert!(app_frames("ValueError: x").is_empty());
        assert!(app_frames("").is_empty());
        // Frames end at the exception line: a message that looks like a frame is not one.
        let t = "Traceback (most recent call last):\n  File \"/app/a.py\", line 1, in f\nValueError: x\n  File \"/app/b.py\", line 2, in g\n";
        assert_eq!(app_frames(t), ["app.a:f"]);
        // A SyntaxError's location has no function.
        let t = "Traceback (most recent call last):\n  File \"/app/a.py\", line 1, in f\n  File \"/app/b.py\", line 3\n    def (:\nSyntaxError: invalid syntax\n";
        assert_eq!(app_frames(t), ["app.a:f"]);
        // An exception group: its own frames, not its sub-exceptions'.
        let t = "  + Exception Group Traceback (most recent call last):
  |   File \"/app/jobs/fanout.py\", line 20, in run
  |     raise ExceptionGroup(\"eg\", errors)
  | ExceptionGroup: eg (1 sub-exception)
  +-+---------------- 1 ----------------
    | Traceback (most recent call last):
    |   File \"/app/jobs/worker.py\", line 4, in fetch
    | ConnectionError: o
    +------------------------------------
";
        assert_eq!(app_frames(t), ["app.jobs.fanout:run"]);
        let f = fingerprint("t", t);
        assert_eq!(
            (f.exc_type.as_str(), f.message.as_str()),
            ("ExceptionGroup", "eg (<int> sub-exception)")
        );
    }

    #[test]
    fn broken_jobs() {
        let f = fingerprint(
            "",
            "(unreadable job: rq:job:abc is not a hash; retryguard never requeues it)",
        );
        assert!(f.broken);
        assert_eq!(f.exc_type, "");
        assert_eq!(f.top_frame, "");
        assert_eq!(
            f.message,
            "(unreadable job: rq:job:<id> is not a hash; retryguard never requeues it)"
        );

        let f = fingerprint(
            "sync",
            "(unreadable job: rq:results:j-7 is not a stream; retryguard never requeues it)",
        );
        assert!(f.broken);
        assert_eq!(
            f.message,
            "(unreadable job: rq:results:<id> is not a stream; retryguard never requeues it)"
        );

        let f = fingerprint(
            "sync",
            "(undecodable exc_string: Invalid symbol 45, offset 3.)",
        );
        assert!(f.broken);
        assert_eq!(
            f.message,
            "(undecodable exc_string: Invalid symbol <int>, offset <int>.)"
        );

        for empty in ["", "   ", "\n\r\n"] {
            let f = fingerprint("sync", empty);
            assert!(f.broken);
            assert_eq!(
                (
                    f.exc_type.as_str(),
                    f.message.as_str(),
                    f.top_frame.as_str()
                ),
                ("", "(no failure recorded)", "")
            );
        }
        // Several lines in parentheses are not a host note.
        let f = fingerprint("t", "(x)\nmore");
        assert!(!f.broken);
        assert_eq!(f.message, "(x)");
    }

    #[test]
    fn separator_bytes_cannot_shift_parts() {
        let a = fingerprint("a\u{1f}b", "ValueError: x");
        let b = fingerprint("a", "b\u{1f}ValueError: x");
        assert_ne!(a.id, b.id);
    }

    /// Pseudo-random bytes (fixed-seed xorshift), made UTF-8 lossily, never panic; neither do
    /// texts built from the characters the scanners look at.
    #[test]
    fn never_panics() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet: Vec<char> = "0123456789abcdefxXT:-.@/ '\"\\\n\r()<>|+e_µé中\u{1f}Fmsz"
            .chars()
            .collect();
        for round in 0..3000 {
            let len = (next() % 200) as usize;
            let text = if round % 2 == 0 {
                let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            } else {
                (0..len)
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                    .collect()
            };
            for t in [
                text.clone(),
                format!(
                    "Traceback (most recent call last):\n  File \"{text}\", line 1, in {text}\n{text}"
                ),
                format!("({text})"),
            ] {
                let f = fingerprint(&text, &t);
                assert_eq!(f.id.len(), 16);
                let _ = app_frames(&t);
                let _ = parameterize(&t);
            }
        }
        // Every cut of a real traceback, on char boundaries.
        let t = billing(
            "é.PaymentDeclined: card 4242 declined at 2026-12-04T17:38:19Z from fe80::1 'é'",
        );
        for (i, _) in t.char_indices() {
            let _ = fingerprint("t", &t[..i]);
            let _ = fingerprint("t", &t[i..]);
        }
    }
}

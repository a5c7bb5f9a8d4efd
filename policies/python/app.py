"""retryguard's default retry policy, ported to Python: an example of a policy written in
Python and built into a `retry-policy` component with componentize-py (see README.md).

It classifies and decides exactly as the built-in Rust policy (policies/default) does, which
host/tests/policy/python.rs checks row by row on the contract table. The tables come from the
Rust source itself (`default_rules.py`, generated from policies/default/src/rules.rs by
gen_rules.py at build time); the logic is ported by hand, function by function, with the Rust
name of each in its docstring.

Rust works on UTF-8 bytes, Python on code points. Where it matters the port works on bytes too:
case is folded for ASCII letters only (`bytes.lower()`), length caps count UTF-8 bytes and cut
on a character boundary, and "whitespace" is Rust's `char::is_whitespace`.

Everything is built at import time. componentize-py runs the import when it builds the
component and snapshots the result, so each evaluation's fresh instance starts with the
tables ready (the contract asks for nothing to be built lazily).
"""

import re

import wit_world
from componentize_py_types import Err
from wit_world import (
    Classification,
    Decision_Hold,
    Decision_RetryAtMs,
    Hold,
    HoldKind,
    ParamSpec,
    PolicyInfo,
)

from default_rules import (
    HTTP_CONTEXT_PHRASES,
    HTTP_CONTEXT_TYPES,
    HTTP_STATUS_RULES,
    INTERRUPTED_TYPES,
    MESSAGE_RULES,
    RQ_NO_EXCEPTION_TEXTS,
    TYPE_RULES,
)

U64_MAX = (1 << 64) - 1
# The most a human-readable reason may be, in bytes (`MAX_REASON_BYTES`).
MAX_REASON_BYTES = 1024
# How much of a message is searched, in bytes (`classify::MAX_MESSAGE_SCAN`).
MAX_MESSAGE_SCAN = 16 * 1024
# How much of an exception type is quoted in a reason, in bytes.
MAX_TYPE_IN_REASON = 256
# Longest text accepted as an exception type (`traceback::MAX_TYPE_LEN`).
MAX_TYPE_LEN = 512
MAX_ATTEMPTS_LIMIT = 1000
MAX_COOLDOWN_LIMIT_SECONDS = 30 * 24 * 60 * 60

RETRYABLE = frozenset(
    ("network_error", "timeout", "rate_limit", "database_lock", "temporary_error")
)

# Rust's `char::is_whitespace` (Unicode White_Space): what `str::trim` removes.
RUST_WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
# `u8::is_ascii_whitespace` (no vertical tab).
ASCII_WHITESPACE = b" \t\n\x0c\r"
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def trim(s):
    """`str::trim`."""
    return s.strip(RUST_WHITESPACE)


def trim_end(s):
    """`str::trim_end`."""
    return s.rstrip(RUST_WHITESPACE)


def ascii_lower(s):
    """`str::to_ascii_lowercase`."""
    return s.translate(_ASCII_LOWER)


def truncate_bytes(b, limit):
    """UTF-8 bytes cut to at most `limit`, on a character boundary."""
    if len(b) <= limit:
        return b
    end = limit
    while end > 0 and (b[end] & 0xC0) == 0x80:
        end -= 1
    return b[:end]


def truncate(s, limit):
    """`truncate_on_char_boundary`: `s` cut to at most `limit` UTF-8 bytes."""
    if len(s) * 4 <= limit:
        return s
    b = s.encode("utf-8", "surrogatepass")
    if len(b) <= limit:
        return s
    return truncate_bytes(b, limit).decode("utf-8", "surrogatepass")


def bound_reason(reason):
    """`bound_reason`: a reason cut to `MAX_REASON_BYTES`."""
    return truncate(reason, MAX_REASON_BYTES)


def rust_debug(s):
    """A string as Rust's `{:?}` prints it (quoted, escaped)."""
    out = ['"']
    for c in s:
        if c == '"':
            out.append('\\"')
        elif c == "\\":
            out.append("\\\\")
        elif c == "\n":
            out.append("\\n")
        elif c == "\r":
            out.append("\\r")
        elif c == "\t":
            out.append("\\t")
        elif c == "\0":
            out.append("\\0")
        elif c.isprintable() or c == " ":
            out.append(c)
        else:
            out.append("\\u{%x}" % ord(c))
    out.append('"')
    return "".join(out)


# --- traceback.rs ---------------------------------------------------------------------------

HEADER = "Traceback (most recent call last):"
GROUP_HEADER = "+ Exception Group Traceback (most recent call last):"


def parse_outermost(text):
    """`traceback::parse_outermost`: (type, message) of the outermost exception, or None."""
    lines = text.split("\n")
    for i in range(len(lines) - 1, -1, -1):
        line = trim_end(lines[i])
        if line == HEADER:
            return parse_block(lines[i + 1 :], "")
        if line.endswith(GROUP_HEADER):
            indent = line[: -len(GROUP_HEADER)]
            if indent.strip(" ") == "":
                return parse_block(lines[i + 1 :], indent)
    return parse_single_line(text)


def parse_block(lines, indent):
    """`traceback::parse_block`."""
    exc_type = None
    message = ""
    if not lines:
        lines = [""]
    for line in lines:
        if line.endswith("\r"):
            line = line[:-1]
        if indent:
            if not line.startswith(indent + "|"):
                break
            content = line[len(indent) + 1 :]
            if content.startswith(" "):
                content = content[1:]
        else:
            content = line
        if exc_type is None:
            if trim(content) == "" or content.startswith((" ", "\t")):
                continue
            parsed = split_exception_line(content)
            if parsed is None:
                return None
            exc_type, message = parsed
        else:
            if message:
                message += "\n"
            message += content
    if exc_type is None:
        return None
    return exc_type, trim_end(message)


def parse_single_line(text):
    """`traceback::parse_single_line`."""
    line = trim(text)
    if not line or "\n" in line or ":" not in line:
        return None
    return split_exception_line(line)


def split_exception_line(line):
    """`traceback::split_exception_line`."""
    if ":" in line:
        exc_type, message = line.split(":", 1)
        if message.startswith(" "):
            message = message[1:]
    else:
        exc_type, message = trim_end(line), ""
    if not is_plausible_type(exc_type):
        return None
    return exc_type, trim_end(message)


def is_plausible_type(t):
    """`traceback::is_plausible_type`."""
    return (
        t != ""
        and len(t.encode("utf-8", "surrogatepass")) <= MAX_TYPE_LEN
        and not t.startswith(".")
        and not t.endswith(".")
        and all(c.isalnum() or c in "_.<>" for c in t)
    )


# --- classify.rs ----------------------------------------------------------------------------

# Type names, ASCII lower case, to their rows (a dotted name matches the whole printed type, a
# plain one its last component).
_TYPE_ROWS = {}
for _row, (_name, _ft) in enumerate(TYPE_RULES):
    _TYPE_ROWS.setdefault(ascii_lower(_name), []).append(_row)
_INTERRUPTED = frozenset(ascii_lower(n) for n in INTERRUPTED_TYPES)
# Phrases as lower-case bytes, with their row and side, in row order.
_PHRASES = tuple(
    (phrase.encode(), row, ft, ft in RETRYABLE)
    for row, (phrase, ft) in enumerate(MESSAGE_RULES)
)
_CONTEXT_PHRASES = tuple(p.encode() for p in HTTP_CONTEXT_PHRASES)
_STATUS = {code.encode(): (code, ft) for code, ft in HTTP_STATUS_RULES}
_ALNUM = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
# A word start: an ASCII letter or digit not preceded by one.
_STATUS_TOKEN = re.compile(rb"(?<![A-Za-z0-9])[0-9]{3}")
_STATUS_BEFORE = frozenset(b" \t\n\x0c\r'\"([=")
_STATUS_AFTER = frozenset(b" \t\n\x0c\r'\"),:;.]")


def classification(failure_type, reason):
    return Classification(failure_type, failure_type in RETRYABLE, bound_reason(reason))


def classify(job_status, exc_type, exc_message, traceback):
    """`classify::classify`."""
    if ascii_lower(trim(job_status)) == "stopped":
        return classification(
            "unknown",
            "job status is stopped: it was interrupted on purpose while it ran, so it may "
            "have partly run and its side effects are unknown",
        )
    exc_type_trimmed = trim(exc_type)
    if exc_type_trimmed:
        return classify_exception(exc_type_trimmed, exc_message)
    parsed = parse_outermost(traceback)
    if parsed is not None:
        return classify_exception(parsed[0], parsed[1])
    return classify_without_exception(traceback)


def classify_without_exception(text):
    """`classify::classify_without_exception`."""
    for needle, explanation in RQ_NO_EXCEPTION_TEXTS:
        if needle in text:
            return classification("unknown", explanation)
    if trim(text) == "":
        reason = "no exception and no failure text were recorded: nothing matched"
    else:
        reason = "no Python exception found in the failure text: nothing matched"
    return classification("unknown", reason)


def type_rows(exc_type):
    """The rows of TYPE_RULES matching `exc_type`, in order, and whether it is interrupted."""
    whole = ascii_lower(exc_type)
    last = whole.rsplit(".", 1)[-1]
    rows = set(_TYPE_ROWS.get(whole, ()))
    rows.update(_TYPE_ROWS.get(last, ()))
    interrupted = whole in _INTERRUPTED or last in _INTERRUPTED
    return sorted(rows), interrupted


def at_word_start(text, phrase):
    """Whether `phrase` occurs in `text` (both lower-case bytes) at a word start."""
    at = text.find(phrase)
    while at >= 0:
        if at == 0 or text[at - 1] not in _ALNUM:
            return True
        at = text.find(phrase, at + 1)
    return False


def describe_hit(hit, shown):
    kind, ft, what = hit
    if kind == "type":
        return "type " + shown + " matches " + ft
    if kind == "message":
        return "message matches " + ft + ' ("' + what + '")'
    return "HTTP status " + what + " matches " + ft


def classify_exception(exc_type, message):
    """`classify::classify_exception`."""
    shown = truncate(exc_type, MAX_TYPE_IN_REASON)
    rows, interrupted = type_rows(exc_type)
    if interrupted:
        return classification(
            "unknown",
            "type " + shown + " means the job was interrupted while it ran: it may have "
            "partly run and its side effects are unknown",
        )
    hits = {True: None, False: None}  # retryable side -> (kind, failure type, what)

    def offer(hit):
        side = hit[1] in RETRYABLE
        if hits[side] is None:
            hits[side] = hit

    for row in rows:
        offer(("type", TYPE_RULES[row][1], ""))

    text = truncate_bytes(message.encode("utf-8", "surrogatepass"), MAX_MESSAGE_SCAN).lower()
    # The earliest row of each side that matches (only sides the type has not decided).
    wanted = {side for side in (True, False) if hits[side] is None}
    best = {}
    for phrase, row, ft, side in _PHRASES:
        if side in wanted and side not in best and at_word_start(text, phrase):
            best[side] = (phrase, ft)
    http_context = any(at_word_start(text, p) for p in _CONTEXT_PHRASES)
    # The first status code of each side, in message order.
    statuses = {}
    for m in _STATUS_TOKEN.finditer(text):
        at = m.start()
        if at > 0 and text[at - 1] not in _STATUS_BEFORE:
            continue
        if at + 3 < len(text) and text[at + 3] not in _STATUS_AFTER:
            continue
        rule = _STATUS.get(m.group())
        if rule is not None:
            statuses.setdefault(rule[1] in RETRYABLE, rule)

    for side in (False, True):
        if side in best:
            phrase, ft = best[side]
            offer(("message", ft, phrase.decode()))
    full = hits[True] is not None and hits[False] is not None
    if (
        not full
        and statuses
        and (http_context or any(f in ascii_lower(exc_type) for f in HTTP_CONTEXT_TYPES))
    ):
        for side in (False, True):
            if side in statuses:
                code, ft = statuses[side]
                offer(("status", ft, code))

    hold, retry = hits[False], hits[True]
    if hold is not None and retry is not None:
        reason = (
            describe_hit(hold, shown)
            + "; non-retryable wins over: "
            + describe_hit(retry, shown)
        )
        return classification(hold[1], reason)
    hit = hold if hold is not None else retry
    if hit is not None:
        return classification(hit[1], describe_hit(hit, shown))
    return classification("unknown", "nothing matched type " + shown + " or its message")


# --- params.rs ------------------------------------------------------------------------------

PARAM_SPECS = (
    (
        "max_attempts",
        "3",
        "Retries retryguard may make for one job before holding it for manual "
        "intervention; 0 never retries. At most 1000.",
    ),
    (
        "cooldown_seconds",
        "60",
        "Seconds to wait before the first retry, counted from the job's most recent "
        "failure (its ended_at). At most 2592000 (30 days).",
    ),
    (
        "exponential_backoff",
        "true",
        "true doubles the wait after each retry (cooldown_seconds x 2^attempts); false "
        "waits cooldown_seconds every time.",
    ),
    (
        "max_cooldown_seconds",
        "3600",
        "The longest wait backoff may reach; at least cooldown_seconds, at most 2592000 "
        "(30 days).",
    ),
    (
        "retry_unknown",
        "false",
        "true retries failures classified unknown (including jobs killed or stopped "
        "mid-run, whose side effects are unknown); false holds them for a person.",
    ),
)
_PARAM_NAMES = tuple(spec[0] for spec in PARAM_SPECS)


class ParamError(Exception):
    pass


def parse_params(pairs):
    """`Params::parse`: a dict of the settings, or ParamError naming the key."""
    p = {
        "max_attempts": 3,
        "cooldown_seconds": 60,
        "exponential_backoff": True,
        "max_cooldown_seconds": 3600,
        "retry_unknown": False,
    }
    seen = set()
    for key, value in pairs:
        if key not in _PARAM_NAMES:
            raise ParamError(
                "unknown param `%s`; known params: max_attempts, cooldown_seconds, "
                "exponential_backoff, max_cooldown_seconds, retry_unknown" % truncate(key, 128)
            )
        if key in seen:
            raise ParamError("param `%s` is given more than once" % key)
        seen.add(key)
        if key == "max_attempts":
            p[key] = number(key, value, MAX_ATTEMPTS_LIMIT)
        elif key in ("cooldown_seconds", "max_cooldown_seconds"):
            p[key] = number(key, value, MAX_COOLDOWN_LIMIT_SECONDS)
        else:
            p[key] = boolean(key, value)
    if p["max_cooldown_seconds"] < p["cooldown_seconds"]:
        raise ParamError(
            "param `max_cooldown_seconds` (%d) is less than `cooldown_seconds` (%d); set "
            "max_cooldown_seconds to at least cooldown_seconds"
            % (p["max_cooldown_seconds"], p["cooldown_seconds"])
        )
    return p


def number(key, value, limit):
    """`params::number`: plain decimal digits, at most `limit`."""
    shown = rust_debug(truncate(value, 64))
    if value == "" or not all("0" <= c <= "9" for c in value):
        raise ParamError("param `%s` must be a whole number of digits, got %s" % (key, shown))
    n = int(value)
    if n > limit:
        raise ParamError("param `%s` must be at most %d, got %s" % (key, limit, shown))
    return n


def boolean(key, value):
    """`params::boolean`."""
    if value == "true":
        return True
    if value == "false":
        return False
    raise ParamError(
        "param `%s` must be true or false, got %s" % (key, rust_debug(truncate(value, 64)))
    )


# --- decide.rs ------------------------------------------------------------------------------


def cooldown_ms(p, attempts):
    """`decide::cooldown_ms`: saturating at u64::MAX like the Rust."""
    seconds = p["cooldown_seconds"]
    if p["exponential_backoff"]:
        seconds = 0 if seconds == 0 else min(seconds << min(attempts, 64), U64_MAX)
    seconds = min(seconds, p["max_cooldown_seconds"])
    return min(seconds * 1000, U64_MAX)


def decide(failure_type, retryable, p, failed_at_ms, attempts):
    """`decide::decide`."""
    if failure_type == "unknown":
        if not p["retry_unknown"]:
            return Decision_Hold(
                Hold(
                    HoldKind.UNKNOWN_FAILURE,
                    "failure type unknown: why the job failed, or whether its side effects "
                    "happened, is not known, and retry_unknown is false, so a person must decide",
                )
            )
    elif not retryable:
        reason = (
            "failure type "
            + truncate(failure_type, 64)
            + " is not retryable: a retry would fail the same way"
        )
        return Decision_Hold(Hold(HoldKind.NON_RETRYABLE, bound_reason(reason)))
    if attempts >= p["max_attempts"]:
        if p["max_attempts"] == 0:
            reason = "retries are disabled (max_attempts=0): manual intervention needed"
        else:
            reason = (
                "max attempts reached (%d of %d retries made): manual intervention needed"
                % (attempts, p["max_attempts"])
            )
        return Decision_Hold(Hold(HoldKind.MAX_ATTEMPTS, reason))
    return Decision_RetryAtMs(min(failed_at_ms + cooldown_ms(p, attempts), U64_MAX))


# --- the component (component.rs, and policies/sdk's exports.rs) ----------------------------

DESCRIPTION = (
    "retryguard's built-in default policy, ported to Python (componentize-py): the same "
    "classification, decisions and params. Classifies a failure by its outermost Python "
    "exception (type, then message, then HTTP status) into network_error, timeout, "
    "rate_limit, database_lock or temporary_error (retryable), validation_error, "
    "logic_error, data_not_found, permission_error or configuration_error (not retryable), "
    "or unknown; retryable failures are retried up to max_attempts times with a cooldown "
    "doubling from cooldown_seconds up to max_cooldown_seconds; everything else is held for "
    "a person."
)


class WitWorld(wit_world.WitWorld):
    def describe(self):
        return PolicyInfo(
            "default-python",
            "1.0.0",
            DESCRIPTION,
            [ParamSpec(name, default, description) for name, default, description in PARAM_SPECS],
        )

    def validate_params(self, params):
        try:
            parse_params(params)
        except ParamError as e:
            raise Err(bound_reason(str(e)))

    def classify(self, failure, params):
        return classify(
            failure.job_status, failure.exc_type, failure.exc_message, failure.traceback
        )

    def decide(self, failure, classification, params, now_ms):
        try:
            p = parse_params(params)
        except ParamError as e:
            return Decision_Hold(
                Hold(
                    HoldKind.POLICY_SAYS_NO,
                    bound_reason("invalid params for the default policy: %s" % e),
                )
            )
        return decide(
            classification.failure_type,
            classification.retryable,
            p,
            failure.failed_at_ms,
            failure.attempts,
        )

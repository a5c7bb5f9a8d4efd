//! Sentry-style parameterization of an exception message: its variable parts (times, ids,
//! addresses, numbers, quoted values) replaced by placeholders, so that one cause with
//! different values reads the same. Hand-written matchers over bytes: bounded, never panics.

use super::{COMMON_TLDS, MAX_MESSAGE_BYTES, truncate};

/// Sentry-style message parameterization.
///
/// Variable parts become placeholders, tried in this order at every word start:
/// `<datetime>`, `<date>`, `<time>`, `<uuid>`, `<email>`, `<url>`, `<ip>`, `<hostname>`,
/// `<hex>`, `<duration>`, `<float>`, `<int>`, `<quoted>`. A placeholder replaces whole words
/// only (`abc123` stays, `id=123` becomes `id=<int>`). Only the first 4096 bytes are read.
pub fn parameterize(message: &str) -> String {
    let text = truncate(message, MAX_MESSAGE_BYTES);
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut quotes = Quotes::default();
    let mut i = 0;
    while i < b.len() {
        // Placeholders replace whole words only: they start where no word byte precedes.
        let at_word_start = i == 0 || !is_word(b[i - 1]);
        let found = if at_word_start {
            placeholder_at(b, i).or_else(|| Some((quotes.quoted(b, i)?, "<quoted>")))
        } else {
            None
        };
        if let Some((end, placeholder)) = found {
            out.push_str(placeholder);
            i = end;
            continue;
        }
        // Nothing to replace here: copy a whole word (so nothing matches inside it), or one
        // ASCII character. Both end on a char boundary: every non-ASCII byte is a word byte.
        let end = if is_word(b[i]) { word_end(b, i) } else { i + 1 };
        out.push_str(text.get(i..end).unwrap_or_default());
        i = end;
    }
    out
}

// ---------------------------------------------------------------------------------------
// Parameterization: one matcher per placeholder. A matcher gets the message's bytes and a
// word start `i` and returns where its match ends (exclusive), always on an ASCII byte or at
// the end, so slicing there stays on char boundaries. Reading past the end gives 0.
// ---------------------------------------------------------------------------------------

/// A matcher: where the match starting at `i` ends, if one does.
type Matcher = fn(&[u8], usize) -> Option<usize>;

/// The placeholders in precedence order: the first matcher that matches wins. `<quoted>`
/// comes last, from [`Quotes`].
const RULES: [(&str, Matcher); 12] = [
    ("<datetime>", datetime),
    ("<date>", date),
    ("<time>", time),
    ("<uuid>", uuid),
    ("<email>", email),
    ("<url>", url),
    ("<ip>", ip),
    ("<hostname>", hostname),
    ("<hex>", hex),
    ("<duration>", duration),
    ("<float>", float),
    ("<int>", int),
];

/// The first rule matching at `i`: where its match ends, and its placeholder.
fn placeholder_at(b: &[u8], i: usize) -> Option<(usize, &'static str)> {
    RULES
        .iter()
        .find_map(|(placeholder, matcher)| matcher(b, i).map(|end| (end, *placeholder)))
}

/// Word bytes: ASCII letters, digits, `_`, and every byte of a non-ASCII character.
fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// The byte at `i`, or 0 past the end (0 is no character any matcher accepts).
fn at(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

/// Whether a match may end at `i`: no word byte follows.
fn ends_word(b: &[u8], i: usize) -> bool {
    !is_word(at(b, i))
}

/// The end of the word at `i`.
fn word_end(b: &[u8], i: usize) -> usize {
    i + b
        .get(i..)
        .unwrap_or_default()
        .iter()
        .take_while(|c| is_word(**c))
        .count()
}

/// How many bytes from `i` satisfy `pred`.
fn count(b: &[u8], i: usize, pred: impl Fn(u8) -> bool) -> usize {
    b.get(i..)
        .unwrap_or_default()
        .iter()
        .take_while(|c| pred(**c))
        .count()
}

/// Like [`count`], but `None` as soon as more than `max` bytes match (bounds the work).
fn count_at_most(b: &[u8], i: usize, max: usize, pred: impl Fn(u8) -> bool) -> Option<usize> {
    let n = b
        .get(i..)
        .unwrap_or_default()
        .iter()
        .take(max + 1)
        .take_while(|c| pred(**c))
        .count();
    (n <= max).then_some(n)
}

/// Exactly `n` digits at `i` (not followed by another digit), as a number.
fn number(b: &[u8], i: usize, n: usize) -> Option<u32> {
    if count(b, i, |c| c.is_ascii_digit()) != n {
        return None;
    }
    let digits = b.get(i..i + n)?;
    Some(digits.iter().fold(0, |v, d| v * 10 + u32::from(d - b'0')))
}

/// `YYYY-MM-DD`, returning its end.
fn date_part(b: &[u8], i: usize) -> Option<usize> {
    number(b, i, 4)?;
    let month = (at(b, i + 4) == b'-').then(|| number(b, i + 5, 2))??;
    let day = (at(b, i + 7) == b'-').then(|| number(b, i + 8, 2))??;
    ((1..=12).contains(&month) && (1..=31).contains(&day)).then_some(i + 10)
}

/// `H:MM` or `HH:MM`, then `:SS` (required when `seconds`) and a fraction `.123456`.
fn time_part(b: &[u8], i: usize, seconds: bool) -> Option<usize> {
    let hour_len = count(b, i, |c| c.is_ascii_digit());
    number(b, i, hour_len).filter(|h| (1..=2).contains(&hour_len) && *h <= 24)?;
    let mut j = i + hour_len;
    let minute = (at(b, j) == b':').then(|| number(b, j + 1, 2))??;
    if minute > 59 {
        return None;
    }
    j += 3;
    if at(b, j) == b':'
        && let Some(second) = number(b, j + 1, 2)
    {
        if second > 60 {
            return None;
        }
        j += 3;
        if at(b, j) == b'.' && at(b, j + 1).is_ascii_digit() {
            j += 1 + count(b, j + 1, |c| c.is_ascii_digit());
        }
    } else if seconds {
        return None;
    }
    Some(j)
}

/// `2026-12-04T17:38:19.123Z`, `2026-12-04 17:38:19+00:00`, `2026-12-04 17:38`.
fn datetime(b: &[u8], i: usize) -> Option<usize> {
    let j = date_part(b, i)?;
    if !matches!(at(b, j), b'T' | b't' | b' ') {
        return None;
    }
    let mut j = time_part(b, j + 1, false)?;
    // A time zone: `Z`, `+HH`, `+HHMM` or `+HH:MM` (or `-`).
    if matches!(at(b, j), b'Z' | b'z') {
        j += 1;
    } else if matches!(at(b, j), b'+' | b'-') {
        match count(b, j + 1, |c| c.is_ascii_digit()) {
            4 => j += 5,
            2 if at(b, j + 3) == b':' && number(b, j + 4, 2).is_some() => j += 6,
            2 => j += 3,
            _ => {}
        }
    }
    ends_word(b, j).then_some(j)
}

/// `2026-12-04`.
fn date(b: &[u8], i: usize) -> Option<usize> {
    date_part(b, i).filter(|&j| ends_word(b, j))
}

/// `17:38:19` (seconds required; `12:30` is not a time). Not followed by `:` and a hex digit,
/// which would make it the start of an IPv6 address.
fn time(b: &[u8], i: usize) -> Option<usize> {
    let j = time_part(b, i, true)?;
    let ipv6_like = at(b, j) == b':' && at(b, j + 1).is_ascii_hexdigit();
    (ends_word(b, j) && !ipv6_like).then_some(j)
}

/// `8-4-4-4-12` hex digits, either case.
fn uuid(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    for (n, len) in [8, 4, 4, 4, 12].into_iter().enumerate() {
        if n > 0 {
            if at(b, j) != b'-' {
                return None;
            }
            j += 1;
        }
        if count(b, j, |c| c.is_ascii_hexdigit()) != len {
            return None;
        }
        j += len;
    }
    ends_word(b, j).then_some(j)
}

/// The longest local part of an email address (RFC 5321).
const MAX_EMAIL_LOCAL: usize = 64;

/// `local@domain.tld`: a local part of letters, digits and `._%+-`, a domain of at least two
/// labels whose last is letters only (`user@localhost` is not an email).
fn email(b: &[u8], i: usize) -> Option<usize> {
    if !at(b, i).is_ascii_alphanumeric() {
        return None;
    }
    let local = count_at_most(b, i, MAX_EMAIL_LOCAL, |c| {
        c.is_ascii_alphanumeric() || b"._%+-".contains(&c)
    })?;
    if at(b, i + local) != b'@' {
        return None;
    }
    let domain = dotted(b, i + local + 1)?;
    let tld = b.get(domain.last_label.0..domain.last_label.1)?;
    let ok = domain.dots >= 1 && tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic);
    (ok && ends_word(b, domain.end)).then_some(domain.end)
}

/// The longest URL scheme accepted.
const MAX_SCHEME: usize = 32;

/// `scheme://…` up to whitespace or a quote, without trailing punctuation (`.,;:!?)]}`).
fn url(b: &[u8], i: usize) -> Option<usize> {
    if !at(b, i).is_ascii_alphabetic() {
        return None;
    }
    let scheme = count_at_most(b, i, MAX_SCHEME, |c| {
        c.is_ascii_alphanumeric() || b"+.-".contains(&c)
    })?;
    let rest = i + scheme;
    if b.get(rest..rest + 3) != Some(b"://".as_slice()) {
        return None;
    }
    let start = rest + 3;
    let mut end = start
        + count(b, start, |c| {
            !c.is_ascii_whitespace() && !c.is_ascii_control() && !b"'\"<>`".contains(&c)
        });
    while end > start && b".,;:!?)]}".contains(&at(b, end - 1)) {
        end -= 1;
    }
    (end > start).then_some(end)
}

/// IPv4 with an optional `:port`, or IPv6.
fn ip(b: &[u8], i: usize) -> Option<usize> {
    ipv4(b, i).or_else(|| ipv6(b, i))
}

/// `10.0.3.7` or `10.0.3.7:6379`; not part of a longer dotted number.
fn ipv4(b: &[u8], i: usize) -> Option<usize> {
    let mut j = ipv4_address(b, i)?;
    if at(b, j) == b'.' && at(b, j + 1).is_ascii_digit() {
        return None; // 1.2.3.4.5
    }
    let port = count(b, j + 1, |c| c.is_ascii_digit());
    if at(b, j) == b':' && (1..=5).contains(&port) {
        j += 1 + port;
    }
    ends_word(b, j).then_some(j)
}

/// Four dot-separated numbers of at most 255, returning their end.
fn ipv4_address(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    for n in 0..4 {
        if n > 0 {
            if at(b, j) != b'.' {
                return None;
            }
            j += 1;
        }
        let len = count(b, j, |c| c.is_ascii_digit());
        number(b, j, len).filter(|v| (1..=3).contains(&len) && *v <= 255)?;
        j += len;
    }
    Some(j)
}

/// The longest IPv6 address in text (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`).
const MAX_IPV6_LEN: usize = 45;

/// IPv6: groups of 1-4 hex digits separated by `:`, either 8 groups or fewer with one `::`,
/// with at least one digit (`fe80::1`, `::1`, `2001:db8:0:0:0:0:0:1`; not `a::b`); the last
/// two groups may be an IPv4 address (`::ffff:192.0.2.1`).
fn ipv6(b: &[u8], i: usize) -> Option<usize> {
    let run = count_at_most(b, i, MAX_IPV6_LEN, |c| c.is_ascii_hexdigit() || c == b':')?;
    let (mut head_end, mut end, mut v4_groups) = (i + run, i + run, 0);
    if at(b, end) == b'.' {
        // An IPv4 tail: everything after the last colon.
        let v4_start = i + b.get(i..end)?.iter().rposition(|&c| c == b':')? + 1;
        end = ipv4_address(b, v4_start)?;
        head_end = v4_start;
        v4_groups = 2;
    } else if run >= 2 && at(b, end - 1) == b':' && at(b, end - 2) != b':' {
        // A single trailing colon is punctuation (`… at fe80::1: refused`).
        head_end -= 1;
        end -= 1;
    }
    let head = std::str::from_utf8(b.get(i..head_end)?).ok()?;
    let compressed = head.matches("::").count();
    if compressed > 1 || head.contains(":::") {
        return None;
    }
    // A lone colon at either end is not part of an address (before an IPv4 tail it is).
    let lone_start = head.starts_with(':') && !head.starts_with("::");
    let lone_end = head.ends_with(':') && !head.ends_with("::") && v4_groups == 0;
    if lone_start || lone_end {
        return None;
    }
    let groups: Vec<&str> = head.split(':').filter(|g| !g.is_empty()).collect();
    let digit = v4_groups > 0 || head.bytes().any(|c| c.is_ascii_digit());
    if !digit || groups.iter().any(|g| g.len() > 4) {
        return None;
    }
    let n = groups.len() + v4_groups;
    let complete = if compressed == 1 {
        (1..=7).contains(&n)
    } else {
        n == 8
    };
    (complete && ends_word(b, end)).then_some(end)
}

/// A run of labels (`[A-Za-z0-9-]+`) separated by single dots: a hostname or a domain, if
/// its shape fits.
#[derive(Debug)]
struct Dotted {
    /// Where the run ends.
    end: usize,
    /// How many dots (labels - 1).
    dots: usize,
    /// The last label's span.
    last_label: (usize, usize),
    /// Whether some label has a digit.
    digit: bool,
    /// Whether some label has a hyphen.
    hyphen: bool,
    /// Whether some label has an uppercase letter.
    upper: bool,
    /// Whether some label starts or ends with a hyphen.
    edge_hyphen: bool,
}

/// The run of labels starting at `i`.
fn dotted(b: &[u8], i: usize) -> Option<Dotted> {
    let is_label = |c: u8| c.is_ascii_alphanumeric() || c == b'-';
    let mut d = Dotted {
        end: i,
        dots: 0,
        last_label: (i, i),
        digit: false,
        hyphen: false,
        upper: false,
        edge_hyphen: false,
    };
    loop {
        let start = d.end;
        let len = count(b, start, is_label);
        if len == 0 {
            return None;
        }
        let label = b.get(start..start + len)?;
        d.digit |= label.iter().any(u8::is_ascii_digit);
        d.hyphen |= label.contains(&b'-');
        d.upper |= label.iter().any(u8::is_ascii_uppercase);
        d.edge_hyphen |= label.first() == Some(&b'-') || label.last() == Some(&b'-');
        d.last_label = (start, start + len);
        d.end = start + len;
        // Another label only if a label character follows the dot (`api.stripe.com.` ends at `m`).
        if at(b, d.end) == b'.' && is_label(at(b, d.end + 1)) {
            d.dots += 1;
            d.end += 1;
        } else {
            return Some(d);
        }
    }
}

/// A hostname, conservatively, so that Python dotted names (`billing.gateway.PaymentDeclined`,
/// `os.path.join`) are never one:
/// - at least two labels of lowercase letters, digits and inner hyphens;
/// - the last label is letters only, at least 2;
/// - the last label is a common suffix (`com`, `net`, `org`, `io`, `internal`, `local`, `dev`)
///   or some label has a digit or a hyphen (`db-3.prod.internal`, `redis1.cache`);
/// - not a path segment or the tail of a longer name (not right after `/`, `\`, `.`, `-`, `@`).
fn hostname(b: &[u8], i: usize) -> Option<usize> {
    if i > 0 && b"/\\.-@".contains(&at(b, i - 1)) {
        return None;
    }
    let d = dotted(b, i)?;
    let tld = b.get(d.last_label.0..d.last_label.1)?;
    let shape = d.dots >= 1
        && !d.upper
        && !d.edge_hyphen
        && tld.len() >= 2
        && tld.iter().all(u8::is_ascii_lowercase);
    let common = COMMON_TLDS.iter().any(|t| t.as_bytes() == tld);
    (shape && (common || d.digit || d.hyphen) && ends_word(b, d.end)).then_some(d.end)
}

/// `0x1f`, or a word of at least 8 hex digits with both a digit and a letter (`5f3a9c2e`;
/// `12345678` is an `<int>`, `deadbeef` a word).
fn hex(b: &[u8], i: usize) -> Option<usize> {
    if at(b, i) == b'0' && matches!(at(b, i + 1), b'x' | b'X') {
        let len = count(b, i + 2, |c| c.is_ascii_hexdigit());
        let end = i + 2 + len;
        return (len > 0 && ends_word(b, end)).then_some(end);
    }
    let len = count(b, i, |c| c.is_ascii_hexdigit());
    let run = b.get(i..i + len)?;
    let mixed = run.iter().any(u8::is_ascii_digit) && run.iter().any(u8::is_ascii_alphabetic);
    (len >= 8 && mixed && ends_word(b, i + len)).then_some(i + len)
}

/// Units of a duration, space-separated. After a space only units of two letters or more
/// count (`500 ms`, `3 seconds`; `2 m` stays `<int> m`).
const DURATION_UNITS: &str = "ns us µs ms s m h d msec msecs sec secs second seconds \
    min mins minute minutes hr hrs hour hours day days millisecond milliseconds \
    microsecond microseconds nanosecond nanoseconds";

/// A number and a time unit: `30s`, `1.5ms`, `2m`, `500 ms`, `3 seconds`.
fn duration(b: &[u8], i: usize) -> Option<usize> {
    let mut j = float_end(b, i).or_else(|| digits_end(b, i))?;
    let spaced = at(b, j) == b' ';
    if spaced {
        j += 1;
    }
    // The unit is the rest of the word (`µ` is two bytes, both word bytes).
    let unit_end = word_end(b, j);
    let unit = b.get(j..unit_end)?;
    let known = DURATION_UNITS.split(' ').any(|u| u.as_bytes() == unit);
    (known && (!spaced || unit.len() >= 2)).then_some(unit_end)
}

/// The end of the digits at `i`, if any.
fn digits_end(b: &[u8], i: usize) -> Option<usize> {
    let len = count(b, i, |c| c.is_ascii_digit());
    (len > 0).then_some(i + len)
}

/// `12.50`, `1.5e-3`; the end is not checked for a word end here (`duration` reuses it).
fn float_end(b: &[u8], i: usize) -> Option<usize> {
    let int_end = digits_end(b, i)?;
    if at(b, int_end) != b'.' {
        return None;
    }
    let mut j = digits_end(b, int_end + 1)?;
    if matches!(at(b, j), b'e' | b'E') {
        let sign = usize::from(matches!(at(b, j + 1), b'+' | b'-'));
        if let Some(end) = digits_end(b, j + 1 + sign) {
            j = end;
        }
    }
    Some(j)
}

/// `12.50`, `1.5e-3`.
fn float(b: &[u8], i: usize) -> Option<usize> {
    float_end(b, i).filter(|&j| ends_word(b, j))
}

/// `42`.
fn int(b: &[u8], i: usize) -> Option<usize> {
    digits_end(b, i).filter(|&j| ends_word(b, j))
}

/// Quoted strings: `'…'` or `"…"` on one line, opened at a word start and closed by the
/// same quote at a word end (so `'it's ok'` is one quoted string), not right after a
/// backslash (`"a \" b"` is one).
///
/// Whether a quote closes does not depend on where the string opened, so once a scan finds
/// no closing quote up to the end of the line, no later opening quote on that line can find
/// one either: it remembers that, and many unclosed quotes cost one scan, not one each.
#[derive(Debug, Default)]
struct Quotes {
    /// Per quote character (`'`, `"`): below this offset, no quote can be closed.
    unclosed_until: [usize; 2],
}

impl Quotes {
    /// Where the quoted string opening at `i` ends, if it is one.
    fn quoted(&mut self, b: &[u8], i: usize) -> Option<usize> {
        let quote = at(b, i);
        let k = match quote {
            b'\'' => 0,
            b'"' => 1,
            _ => return None,
        };
        if i < self.unclosed_until[k] {
            return None;
        }
        let mut j = i + 1;
        while j < b.len() && !matches!(b[j], b'\n' | b'\r') {
            if b[j] == quote && b[j - 1] != b'\\' && ends_word(b, j + 1) {
                return Some(j + 1);
            }
            j += 1;
        }
        self.unclosed_until[k] = j;
        None
    }
}

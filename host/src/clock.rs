//! Time as retryguard writes and reads it: the wall clock in epoch milliseconds, operation
//! ids, RFC 3339 text in both directions, and UTC calendar dates (the audit partitions).
//!
//! A leaf: it uses nothing else of the crate. Every other module takes its time from here, so
//! there is one `now_ms` and one date algorithm.

use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A new operation id: time-ordered and unique enough (`op-<ms in hex>-<64 random bits>`).
pub fn new_operation_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // A randomly keyed hash of (process, counter, nanoseconds): distinct across processes
    // and calls, without a random-number crate.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u64(n);
    h.write_u32(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0),
    );
    format!("op-{:013x}-{:016x}", now_ms(), h.finish())
}

/// Formats epoch milliseconds as RFC 3339 UTC with microseconds
/// (`2026-11-29T12:00:00.123000Z`): RQ's own timestamp format, and the API's.
pub fn format_rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(i64::try_from(days).unwrap_or(i64::MAX));
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}000Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Parses a UTC time as RQ writes it (`%Y-%m-%dT%H:%M:%S.%fZ`; seconds-only, a space for
/// the `T`, and `+00:00` or no suffix accepted) into epoch milliseconds. An empty string
/// (unset) and anything else give `None`.
pub fn parse_utc(text: &str) -> Option<u64> {
    let text = text.trim();
    let text = text
        .strip_suffix('Z')
        .or_else(|| text.strip_suffix("+00:00"))
        .unwrap_or(text);
    let (date, time) = text.split_once(['T', ' '])?;
    let mut d = date.splitn(3, '-');
    let (year, month, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    let (hms, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':');
    let (hour, minute, second) = (num(t.next()?)?, num(t.next()?)?, num(t.next()?)?);
    if year < 1970
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) || fraction.len() > 9 {
        return None;
    }
    let millis = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u64, |acc, b| acc * 10 + u64::from(b - b'0'));
    let days = u64::try_from(days_from_civil(
        i64::try_from(year).ok()?,
        u32::try_from(month).ok()?,
        u32::try_from(day).ok()?,
    ))
    .ok()?;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    secs.checked_mul(1000)?.checked_add(millis)
}

/// Parses an RFC 3339 time (`2026-11-29T12:00:00Z`, `…+02:00`, fractions optional) into
/// epoch milliseconds. The offset is required, as RFC 3339 says.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.len() > 64 {
        return None;
    }
    let (local, offset_minutes) = if let Some(t) = text.strip_suffix(['Z', 'z']) {
        (t, 0i64)
    } else {
        let at = text.len().checked_sub(6)?;
        let (t, offset) = (text.get(..at)?, text.get(at..)?);
        let bytes = offset.as_bytes();
        let sign = match bytes.first()? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        if bytes.get(3) != Some(&b':') {
            return None;
        }
        let hours: i64 = offset.get(1..3)?.parse().ok()?;
        let minutes: i64 = offset.get(4..6)?.parse().ok()?;
        if hours > 23 || minutes > 59 || !offset[1..3].bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        (t, sign * (hours * 60 + minutes))
    };
    // `parse_utc` reads the date and time as UTC; the offset is applied here.
    let local = local.replace(['t'], "T");
    if !local.contains('T') {
        return None;
    }
    let ms = i64::try_from(parse_utc(&local)?).ok()?;
    u64::try_from(ms.checked_sub(offset_minutes * 60_000)?).ok()
}

/// Days since 1970-01-01 of an epoch-ms time.
pub fn day_of_ms(ms: u64) -> i64 {
    i64::try_from(ms / 86_400_000).unwrap_or(i64::MAX)
}

/// The UTC date `YYYY-MM-DD` of an epoch-ms time.
pub fn date_of_ms(ms: u64) -> String {
    let (y, m, d) = civil_from_days(day_of_ms(ms));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Epoch ms of the start of a `YYYY-MM-DD` UTC date.
pub fn ms_of_date(date: &str) -> Option<u64> {
    let mut parts = date.splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let days = days_from_civil(y, m, d);
    u64::try_from(days).ok().map(|d| d * 86_400_000)
}

fn num(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Howard Hinnant's `civil_from_days`: the proleptic Gregorian date of a day number.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Howard Hinnant's `days_from_civil`: days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_as_rq_does_and_parses_back() {
        let ms = 1_795_953_601_234; // 2026-11-29T12:00:01.234Z
        assert_eq!(format_rfc3339(ms), "2026-11-29T12:00:01.234000Z");
        assert_eq!(parse_utc("2026-11-29T12:00:01.234000Z"), Some(ms));
        assert_eq!(parse_utc("2026-11-29 12:00:01.234"), Some(ms));
        assert_eq!(parse_utc("2026-11-29T12:00:01+00:00"), Some(ms - 234));
        for ms in [0, 1, 86_399_999, 951_782_400_000, 4_102_444_800_000, ms] {
            assert_eq!(parse_utc(&format_rfc3339(ms)), Some(ms));
            assert_eq!(parse_rfc3339(&format_rfc3339(ms)), Some(ms));
        }
    }

    #[test]
    fn refuses_what_is_not_a_time() {
        for bad in [
            "",
            "nonsense",
            "2026-13-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
        assert_eq!(
            parse_rfc3339("2026-11-29T12:00:00"),
            None,
            "offset required"
        );
    }

    #[test]
    fn applies_the_offset() {
        let z = parse_rfc3339("2026-11-29T12:00:00Z").unwrap();
        assert_eq!(parse_rfc3339("2026-11-29T14:00:00+02:00"), Some(z));
        assert_eq!(parse_rfc3339("2026-11-29T11:30:00-00:30"), Some(z));
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(date_of_ms(0), "1970-01-01");
        assert_eq!(date_of_ms(951_782_400_000), "2000-02-29");
        assert_eq!(ms_of_date("2000-02-29"), Some(951_782_400_000));
        assert_eq!(ms_of_date("2000-13-01"), None);
        assert_eq!(day_of_ms(86_400_000), 1);
    }

    #[test]
    fn operation_ids_are_distinct_and_time_ordered() {
        let a = new_operation_id();
        let b = new_operation_id();
        assert_ne!(a, b);
        assert!(
            a.starts_with("op-") && a.len() == "op-".len() + 13 + 1 + 16,
            "{a}"
        );
        assert!(a[..16] <= b[..16]);
    }
}

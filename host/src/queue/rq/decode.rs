//! Decoding what RQ 2.x stores in Redis. Everything here reads outside data: it is bounded,
//! allocation-capped and never panics (the fuzz targets call these functions directly).

use std::io::Read as _;

use base64::Engine as _;
use flate2::read::ZlibDecoder;

/// The most any one field may inflate to (a traceback, a job's pickled data prefix).
pub const MAX_INFLATED_BYTES: usize = 1 << 20;

/// How much of a job's `data` is inflated to find its function name: the name comes first.
const DATA_PREFIX_BYTES: usize = 4096;

/// Why a stored field could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not valid base64")]
    Base64,
    #[error("not valid zlib data")]
    Zlib,
    #[error("inflates to more than {MAX_INFLATED_BYTES} bytes")]
    TooLarge,
}

/// Inflates zlib data, refusing output beyond `max` bytes.
pub fn inflate(data: &[u8], max: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    ZlibDecoder::new(data)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|_| DecodeError::Zlib)?;
    if out.len() > max {
        return Err(DecodeError::TooLarge);
    }
    Ok(out)
}

/// Inflates at most the first `max` bytes of zlib data; a truncated stream is fine.
fn inflate_prefix(data: &[u8], max: usize) -> Vec<u8> {
    let mut out = vec![0u8; max];
    let mut decoder = ZlibDecoder::new(data);
    let mut filled = 0;
    while filled < max {
        match decoder.read(&mut out[filled..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    out.truncate(filled);
    out
}

/// The exception text of a results-stream entry: RQ stores `exc_string` as
/// base64(zlib(utf-8)). Invalid UTF-8 is replaced, not refused.
pub fn exc_string(field: &[u8]) -> Result<String, DecodeError> {
    let compressed = base64::engine::general_purpose::STANDARD
        .decode(field)
        .map_err(|_| DecodeError::Base64)?;
    let text = inflate(&compressed, MAX_INFLATED_BYTES)?;
    Ok(String::from_utf8_lossy(&text).into_owned())
}

/// The exception text of RQ 1.x's `exc_info` hash field: zlib(utf-8), or plain text.
pub fn exc_info(field: &[u8]) -> Result<String, DecodeError> {
    let text = match inflate(field, MAX_INFLATED_BYTES) {
        Ok(text) => text,
        Err(DecodeError::Zlib) => field.to_vec(),
        Err(e) => return Err(e),
    };
    Ok(String::from_utf8_lossy(&text).into_owned())
}

/// The job's function name, best effort: `data` is zlib(pickle((func_name, instance, args,
/// kwargs))) and the name is the first string in the pickle. Only a prefix is inflated.
pub fn job_type_from_data(data: &[u8]) -> Option<String> {
    let pickle = inflate_prefix(data, DATA_PREFIX_BYTES);
    first_pickle_string(&pickle).map(str::to_string)
}

/// The first string of a pickle, skipping the opcodes that can precede it (protocol, frame,
/// mark, memo). `None` for anything else: this is not a general unpickler.
fn first_pickle_string(p: &[u8]) -> Option<&str> {
    const PROTO: u8 = 0x80;
    const FRAME: u8 = 0x95;
    const MARK: u8 = b'(';
    const MEMOIZE: u8 = 0x94;
    const SHORT_BINUNICODE: u8 = 0x8c;
    const BINUNICODE: u8 = b'X';
    const BINUNICODE8: u8 = 0x8d;
    let mut at = 0usize;
    loop {
        let op = *p.get(at)?;
        at += 1;
        let len = match op {
            PROTO => {
                at += 1;
                continue;
            }
            FRAME => {
                at += 8;
                continue;
            }
            MARK | MEMOIZE => continue,
            SHORT_BINUNICODE => {
                let n = usize::from(*p.get(at)?);
                at += 1;
                n
            }
            BINUNICODE => {
                let n = u32::from_le_bytes(p.get(at..at + 4)?.try_into().ok()?);
                at += 4;
                usize::try_from(n).ok()?
            }
            BINUNICODE8 => {
                let n = u64::from_le_bytes(p.get(at..at + 8)?.try_into().ok()?);
                at += 8;
                usize::try_from(n).ok()?
            }
            _ => return None,
        };
        let bytes = p.get(at..at.checked_add(len)?)?;
        return std::str::from_utf8(bytes).ok();
    }
}

/// Parses RQ's timestamps (`%Y-%m-%dT%H:%M:%S.%fZ`, UTC; seconds-only and `+00:00` forms
/// accepted) into epoch milliseconds. An empty string (unset) and anything else give `None`.
pub fn parse_rq_time(text: &str) -> Option<u64> {
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
    if !(1..=12).contains(&month)
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
    let days = days_from_civil(year, month, day)?;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    secs.checked_mul(1000)?.checked_add(millis)
}

/// Formats epoch milliseconds as RQ does (`2026-11-29T12:00:00.123000Z`).
pub fn format_rq_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}000Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

fn num(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    if year < 1970 {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).checked_sub(719_468)
}

/// The inverse of `days_from_civil`.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use flate2::Compression;
    use flate2::write::ZlibEncoder;

    use super::*;

    fn zlib(bytes: &[u8]) -> Vec<u8> {
        let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn finds_the_function_name_in_rq_job_data() {
        // pickle.dumps(('app.tasks.charge', None, (1,), {}), protocol=5), as RQ writes it.
        let pickle = b"\x80\x05\x95\x1e\x00\x00\x00\x00\x00\x00\x00(\x8c\x10app.tasks.charge\x94NK\x01\x85\x94}\x94t\x94.";
        assert_eq!(
            job_type_from_data(&zlib(pickle)).as_deref(),
            Some("app.tasks.charge")
        );
        // pickle.dumps(('a.b.c', None), protocol=2): BINUNICODE, no frame.
        let p2 = b"\x80\x02X\x05\x00\x00\x00a.b.cq\x00N\x86q\x01.";
        assert_eq!(job_type_from_data(&zlib(p2)).as_deref(), Some("a.b.c"));
        assert_eq!(job_type_from_data(b"not zlib"), None);
        assert_eq!(job_type_from_data(&zlib(b"\x80\x05N.")), None);
        // A length past the end is refused, not read.
        assert_eq!(
            job_type_from_data(&zlib(b"\x80\x05X\xff\xff\xff\x7fab")),
            None
        );
    }

    #[test]
    fn decodes_exc_string_and_caps_inflation() {
        let b64 = base64::engine::general_purpose::STANDARD
            .encode(zlib(b"Traceback ...\nValueError: x\n"));
        assert_eq!(
            exc_string(b64.as_bytes()).unwrap(),
            "Traceback ...\nValueError: x\n"
        );
        assert_eq!(exc_string(b"%%%"), Err(DecodeError::Base64));
        let bomb = zlib(&vec![b'a'; MAX_INFLATED_BYTES + 1]);
        assert_eq!(
            inflate(&bomb, MAX_INFLATED_BYTES),
            Err(DecodeError::TooLarge)
        );
        assert_eq!(exc_info(b"plain text").unwrap(), "plain text");
        assert_eq!(exc_info(&zlib(b"")).unwrap(), "");
    }

    #[test]
    fn parses_and_formats_rq_timestamps() {
        let ms = parse_rq_time("2026-11-29T12:00:01.234567Z").unwrap();
        assert_eq!(ms, 1_795_953_601_234);
        assert_eq!(format_rq_time(ms), "2026-11-29T12:00:01.234000Z");
        assert_eq!(
            parse_rq_time("2026-11-29T12:00:01Z"),
            Some(1_795_953_601_000)
        );
        assert_eq!(parse_rq_time("1970-01-01T00:00:00.000000Z"), Some(0));
        assert_eq!(
            parse_rq_time("2024-02-29T00:00:00Z"),
            Some(1_709_164_800_000)
        );
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-11-29T25:00:00Z",
            "1969-12-31T00:00:00Z",
            "2026-11-29T12:00:00.12x4Z",
        ] {
            assert_eq!(parse_rq_time(bad), None, "{bad}");
        }
        for ms in [
            0,
            86_399_999,
            951_782_400_000,
            1_795_953_601_234,
            4_102_444_800_000,
        ] {
            assert_eq!(parse_rq_time(&format_rq_time(ms)), Some(ms));
        }
    }
}

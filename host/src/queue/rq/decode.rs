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

/// RQ writes its timestamps as RFC 3339 UTC with microseconds; `crate::clock` reads and
/// writes them (one implementation for the whole crate).
pub use crate::clock::{format_rfc3339 as format_rq_time, parse_utc as parse_rq_time};

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

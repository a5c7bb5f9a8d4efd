//! RQ's hash fields and timestamps (`queue::rq::decode`): raw zlib, base64(zlib) results
//! entries, the pickle prefix reader, RQ's time format.
//!
//! Asserts: no panic; every output within its cap; round trips (inflate(zlib(x)) = x,
//! exc_string(b64(zlib(x))) = x, the function name written into a real pickle header is
//! read back, parse_rq_time(format_rq_time(ms)) = ms).
#![no_main]

use std::io::Write as _;

use base64::Engine as _;
use flate2::Compression;
use flate2::write::ZlibEncoder;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use retryguard::queue::rq::decode::{
    DecodeError, MAX_INFLATED_BYTES, exc_info, exc_string, format_rq_time, inflate,
    job_type_from_data, parse_rq_time,
};

/// How much of a job's data the function-name reader inflates (`DATA_PREFIX_BYTES`).
const DATA_PREFIX_BYTES: usize = 4096;
/// 10000-01-01T00:00:00Z: RQ's format has four-digit years.
const YEAR_10000_MS: u64 = 253_402_300_800_000;

#[derive(Debug, Arbitrary)]
enum Input {
    /// Bytes as stored: whatever Redis holds in the field.
    Raw {
        bytes: Vec<u8>,
        max: u16,
    },
    /// Content compressed first, so the decoders see valid zlib around fuzzed content.
    Zlib {
        content: Vec<u8>,
        max: u16,
    },
    /// A pickle whose first string is `name`, after a fuzzed opcode prefix.
    Pickle {
        prefix: Vec<u8>,
        name: String,
        tail: Vec<u8>,
        protocol: u8,
    },
    Time {
        text: String,
        ms: u64,
    },
}

fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut e = ZlibEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).expect("writing to a Vec");
    e.finish().expect("writing to a Vec")
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every decoder over stored bytes: within caps, never a panic.
fn check_stored(bytes: &[u8], max: usize) {
    match inflate(bytes, max) {
        Ok(out) => {
            assert!(out.len() <= max);
            // A larger cap inflates the same bytes.
            assert_eq!(
                inflate(bytes, max.saturating_add(1 << 16)).as_deref(),
                Ok(&out[..])
            );
        }
        Err(DecodeError::TooLarge) => {
            // More than `max` bytes come out: a larger cap never inflates to `max` or less.
            let larger = inflate(bytes, max.saturating_add(1 << 16));
            assert!(!matches!(larger, Ok(o) if o.len() <= max));
        }
        Err(DecodeError::Zlib) => {}
        Err(DecodeError::Base64) => panic!("inflate never reads base64"),
    }
    // Replacement characters at most triple the size of the inflated bytes.
    if let Ok(s) = exc_string(bytes) {
        assert!(s.len() <= 3 * MAX_INFLATED_BYTES);
    }
    match exc_info(bytes) {
        Ok(s) => assert!(s.len() <= 3 * MAX_INFLATED_BYTES.max(bytes.len())),
        Err(e) => assert_eq!(e, DecodeError::TooLarge),
    }
    if let Some(name) = job_type_from_data(bytes) {
        assert!(name.len() <= DATA_PREFIX_BYTES);
    }
}

fuzz_target!(|input: Input| {
    match input {
        Input::Raw { bytes, max } => {
            check_stored(&bytes, usize::from(max));
            // RQ 2.x's results field is base64 text: feed the bytes as that too.
            if let Ok(s) = exc_string(&bytes) {
                assert!(s.len() <= 3 * MAX_INFLATED_BYTES);
            }
        }
        Input::Zlib { content, max } => {
            let max = usize::from(max);
            let z = zlib(&content);
            check_stored(&z, max);
            let expected = if content.len() <= max {
                Ok(content.clone())
            } else {
                Err(DecodeError::TooLarge)
            };
            assert_eq!(inflate(&z, max), expected);
            if content.len() <= MAX_INFLATED_BYTES {
                assert_eq!(exc_info(&z).as_deref(), Ok(lossy(&content).as_str()));
                let b64 = base64::engine::general_purpose::STANDARD.encode(&z);
                assert_eq!(
                    exc_string(b64.as_bytes()).as_deref(),
                    Ok(lossy(&content).as_str())
                );
            }
            if let Some(name) = job_type_from_data(&z) {
                assert!(name.len() <= DATA_PREFIX_BYTES);
                let window = &content[..content.len().min(DATA_PREFIX_BYTES)];
                assert!(
                    window
                        .windows(name.len().max(1))
                        .any(|w| w == name.as_bytes())
                        || name.is_empty()
                );
            }
        }
        Input::Pickle {
            prefix,
            name,
            tail,
            protocol,
        } => {
            // What the skipping loop accepts before the first string: PROTO, FRAME, MARK,
            // MEMOIZE. Other prefix bytes make a pickle this reader refuses (None), fine.
            let mut pickle = vec![0x80, protocol];
            let clean_prefix = prefix.iter().all(|b| matches!(b, b'(' | 0x94));
            pickle.extend_from_slice(&prefix);
            let name = name.get(..name.len().min(255)).unwrap_or("");
            match name.len() % 3 {
                0 => {
                    pickle.push(0x8c);
                    pickle.push(u8::try_from(name.len()).unwrap_or(0));
                }
                1 => {
                    pickle.push(b'X');
                    pickle.extend_from_slice(&u32::try_from(name.len()).unwrap_or(0).to_le_bytes());
                }
                _ => {
                    pickle.push(0x8d);
                    pickle.extend_from_slice(&(name.len() as u64).to_le_bytes());
                }
            }
            pickle.extend_from_slice(name.as_bytes());
            pickle.extend_from_slice(&tail);
            let got = job_type_from_data(&zlib(&pickle));
            if clean_prefix && pickle.len() <= DATA_PREFIX_BYTES {
                assert_eq!(got.as_deref(), Some(name));
            }
            if let Some(got) = got {
                assert!(got.len() <= DATA_PREFIX_BYTES);
            }
        }
        Input::Time { text, ms } => {
            if let Some(parsed) = parse_rq_time(&text) {
                // Whatever parses is a time RQ's own format writes back to the same instant.
                if parsed < YEAR_10000_MS {
                    assert_eq!(
                        parse_rq_time(&format_rq_time(parsed)),
                        Some(parsed),
                        "{text:?}"
                    );
                }
            }
            let formatted = format_rq_time(ms);
            if ms < YEAR_10000_MS {
                assert_eq!(parse_rq_time(&formatted), Some(ms), "{formatted}");
            } else {
                assert_eq!(parse_rq_time(&formatted), None, "{formatted}");
            }
        }
    }
});

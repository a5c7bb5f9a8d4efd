//! A failed job as the RQ adapter reads it: the job hash (`HMGET` reply) with the newest
//! results-stream entries (`XREVRANGE` reply), both well-formed with fuzzed contents and as
//! raw RESP of any shape; the requeue script's reply; stream ids.
//!
//! Asserts: no panic; `None` exactly when the hash's `status` is nil; the job keeps its id,
//! its queue is `origin` or the ref's; `result_id` is the newest entry's id; the parsed
//! exception is the traceback's own (`parse_outermost`); the traceback is within the
//! inflation cap; a requeue reply is `Ok` only for the four words the script returns.
#![no_main]

use std::io::Write as _;

use base64::Engine as _;
use flate2::Compression;
use flate2::write::ZlibEncoder;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use retryguard::queue::RequeueResult;
use retryguard::queue::rq::decode::MAX_INFLATED_BYTES;
use retryguard::queue::rq::fuzzing::{self, Entry, HASH_FIELDS};

#[derive(Debug, Arbitrary)]
enum Field {
    Nil,
    Raw(Vec<u8>),
    /// zlib(content): what RQ writes to `data` and `exc_info`.
    Zlib(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
enum Value {
    Raw(Vec<u8>),
    /// base64(zlib(content)): what RQ writes to a results entry's `exc_string`.
    B64Zlib(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
enum Key {
    ExcString,
    Type,
    Other(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
enum Input {
    Job {
        hash: Vec<Field>,
        entries: Vec<(Vec<u8>, Vec<(Key, Value)>)>,
    },
    Resp {
        hash: Vec<u8>,
        results: Vec<u8>,
    },
    RequeueResp(Vec<u8>),
    Requeue(Vec<Vec<u8>>),
    StreamId(String),
}

fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut e = ZlibEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).expect("writing to a Vec");
    e.finish().expect("writing to a Vec")
}

fn check_job(job: &retryguard::queue::FailedJob) {
    let r = fuzzing::job_ref();
    assert_eq!(job.id, r.id);
    assert!(!job.queue.is_empty());
    assert!(job.traceback.len() <= 3 * MAX_INFLATED_BYTES);
    match retryguard_policy_default::traceback::parse_outermost(&job.traceback) {
        Some(p) => {
            assert_eq!(job.exc_type, p.exc_type);
            assert_eq!(job.exc_message, p.message);
        }
        None => {
            assert!(job.exc_type.is_empty());
            assert!(job.exc_message.is_empty());
        }
    }
}

fuzz_target!(|input: Input| {
    match input {
        Input::Job { hash, entries } => {
            let hash: Vec<Option<Vec<u8>>> = hash
                .into_iter()
                .map(|f| match f {
                    Field::Nil => None,
                    Field::Raw(b) => Some(b),
                    Field::Zlib(b) => Some(zlib(&b)),
                })
                .collect();
            let entries: Vec<Entry> = entries
                .into_iter()
                .map(|(id, kv)| {
                    let kv = kv
                        .into_iter()
                        .map(|(k, v)| {
                            let k = match k {
                                Key::ExcString => b"exc_string".to_vec(),
                                Key::Type => b"type".to_vec(),
                                Key::Other(k) => k,
                            };
                            let v = match v {
                                Value::Raw(v) => v,
                                Value::B64Zlib(v) => base64::engine::general_purpose::STANDARD
                                    .encode(zlib(&v))
                                    .into_bytes(),
                            };
                            (k, v)
                        })
                        .collect();
                    (id, kv)
                })
                .collect();
            let job = fuzzing::parse_job(&hash, &entries);
            // HMGET of a missing hash is all nils: gone exactly when `status` is nil.
            assert_eq!(job.is_some(), matches!(hash.first(), Some(Some(_))));
            let Some(job) = job else { return };
            check_job(&job);
            let origin = hash.get(1).cloned().flatten().unwrap_or_default();
            if origin.is_empty() {
                assert_eq!(job.queue, fuzzing::job_ref().queue);
            } else {
                assert_eq!(job.queue, String::from_utf8_lossy(&origin));
            }
            // Stream ids that are not UTF-8 fail the whole (typed) results reply.
            if let Some((id, _)) = entries.first()
                && entries.iter().all(|(id, kv)| {
                    std::str::from_utf8(id).is_ok()
                        && kv.iter().all(|(k, _)| std::str::from_utf8(k).is_ok())
                })
            {
                assert_eq!(job.result_id.as_bytes(), &id[..]);
            }
            if hash.len() > HASH_FIELDS {
                // Extra fields are ignored, not an error.
                let trimmed = fuzzing::parse_job(&hash[..HASH_FIELDS], &entries);
                assert_eq!(trimmed.as_ref(), Some(&job));
            }
        }
        Input::Resp { hash, results } => {
            if let Some(Some(job)) = fuzzing::parse_job_resp(&hash, &results) {
                check_job(&job);
            }
        }
        Input::RequeueResp(reply) => {
            let _ = fuzzing::parse_requeue_reply_resp(&reply);
        }
        Input::Requeue(parts) => {
            let first = parts.first().map(Vec::as_slice);
            match fuzzing::parse_requeue_reply(&parts) {
                Ok(RequeueResult::Retried { .. }) => assert_eq!(first, Some(&b"retried"[..])),
                Ok(RequeueResult::AlreadyRequeued) => {
                    assert_eq!(first, Some(&b"already_requeued"[..]))
                }
                Ok(RequeueResult::Stale { why }) => {
                    assert_eq!(first, Some(&b"stale_decision"[..]));
                    assert_eq!(parts.get(1).map_or(&b""[..], Vec::as_slice), why.as_bytes());
                }
                Ok(RequeueResult::NotFound) => assert_eq!(first, Some(&b"not_found"[..])),
                Ok(RequeueResult::Unknown { why }) => {
                    panic!("the reply parser never answers unknown (the caller does): {why}")
                }
                Err(_) => {}
            }
        }
        Input::StreamId(id) => {
            if let Some(ms) = fuzzing::stream_id_ms(&id) {
                assert!(
                    id.starts_with(&ms.to_string()) || id.starts_with('+') || id.starts_with('0')
                );
            }
        }
    }
});

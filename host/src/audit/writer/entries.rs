//! Outbox entries from `XREADGROUP` and `XRANGE` replies.

use redis::{Value, from_redis_value};

use crate::audit::encoding::RECORD_FIELD;
use crate::audit::schema::StreamId;

/// One outbox entry as read. `fields` is `None` for an entry deleted while pending. They are
/// the stream fields as stored: one field `r` holding the encoded record, or one field per
/// column in the earlier format (`audit::encoding`); `AuditRecord::from_entry` and
/// [`Entry::pairs`] read both.
#[derive(Debug, Clone)]
pub struct Entry {
    pub raw_id: String,
    pub id: Option<StreamId>,
    pub fields: Option<Vec<(String, String)>>,
}

/// Parses an `XREADGROUP`/`XRANGE` reply into entries.
pub fn parse_xread(reply: Value) -> Vec<Entry> {
    let streams = match reply {
        Value::Array(s) => s,
        Value::Map(m) => m
            .into_iter()
            .map(|(k, v)| Value::Array(vec![k, v]))
            .collect(),
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    for stream in streams {
        let Value::Array(mut parts) = stream else {
            continue;
        };
        if parts.len() != 2 {
            continue;
        }
        if let Some(entries) = parts.pop() {
            out.extend(parse_entries(entries));
        }
    }
    out
}

/// Parses an array of `[id, [field, value, …]]` (an `XRANGE` reply).
pub fn parse_entries(entries: Value) -> Vec<Entry> {
    let Value::Array(entries) = entries else {
        return Vec::new();
    };
    entries
        .into_iter()
        .filter_map(|e| {
            let Value::Array(mut pair) = e else {
                return None;
            };
            let fields_v = if pair.len() > 1 { pair.pop() } else { None };
            let raw_id: String = from_redis_value(pair.pop()?).ok()?;
            let fields = match fields_v {
                Some(Value::Array(kv)) => {
                    // Values are moved, not copied: this loop runs for every field of every
                    // record the writer moves (one, `r`, in the current format).
                    let one = kv.len() == 2;
                    let mut fields = Vec::with_capacity(kv.len() / 2);
                    let mut it = kv.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        if let Some(pair) = field(k, v, one) {
                            fields.push(pair);
                        }
                    }
                    Some(fields)
                }
                Some(Value::Map(kv)) => {
                    let one = kv.len() == 1;
                    Some(
                        kv.into_iter()
                            .filter_map(|(k, v)| field(k, v, one))
                            .collect(),
                    )
                }
                _ => None,
            };
            Some(Entry {
                id: StreamId::parse(&raw_id),
                raw_id,
                fields,
            })
        })
        .collect()
}

/// A stream field as text; `None` when it is not UTF-8. The encoded record of an entry of one
/// field is the exception: it is taken with any invalid bytes replaced (U+FFFD), so that one
/// odd byte in a value does not lose the whole record (the earlier format lost that field).
fn field(k: Value, v: Value, only: bool) -> Option<(String, String)> {
    let k: String = from_redis_value(k).ok()?;
    let v = match v {
        Value::BulkString(bytes) if only && k == RECORD_FIELD => String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        v => from_redis_value(v).ok()?,
    };
    Some((k, v))
}

impl Entry {
    /// The entry's fields as (column, value) pairs, whatever its format (tools and tests; the
    /// writer decodes an encoded entry straight into its record). `None` for an entry deleted
    /// while pending.
    pub fn pairs(&self) -> Option<Vec<(String, String)>> {
        self.fields.as_deref().map(crate::audit::encoding::pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditRecord, NewRecord, Verdict};

    fn bulk(s: impl Into<Vec<u8>>) -> Value {
        Value::BulkString(s.into())
    }

    fn entry(id: &str, fields: Vec<Value>) -> Value {
        Value::Array(vec![bulk(id), Value::Array(fields)])
    }

    fn record(job: &str) -> NewRecord {
        NewRecord {
            actor: "ops".into(),
            verdict: Some(Verdict {
                decision: "retried".into(),
                success: Some(true),
                error_message: Some("due / now".into()),
                attempt_number: Some(1),
            }),
            job_id: Some(job.into()),
            now_ms: Some(5),
            ..NewRecord::default()
        }
    }

    fn old(r: &NewRecord) -> Vec<Value> {
        r.fields()
            .into_iter()
            .flat_map(|(k, v)| [bulk(k), bulk(v)])
            .collect()
    }

    fn new(r: &NewRecord) -> Vec<Value> {
        vec![bulk(RECORD_FIELD), bulk(r.encoded())]
    }

    #[test]
    fn a_reply_of_both_formats_reads_as_the_same_records() {
        let (a, b) = (record("a"), record("b"));
        let reply = Value::Array(vec![
            entry("1-0", old(&a)),
            entry("1-1", old(&b)),
            entry("2-0", new(&a)),
            entry("2-1", new(&b)),
            // An encoded record with a byte that is not UTF-8 keeps the rest of the record.
            entry(
                "3-0",
                vec![
                    bulk(RECORD_FIELD),
                    bulk(&b"{\"decision\":\"deleted\",\"job_id\":\"x\xff\",\"queue\":\"q\"}"[..]),
                ],
            ),
            // Deleted while pending.
            Value::Array(vec![bulk("4-0"), Value::Nil]),
        ]);
        let entries = parse_entries(reply);
        assert_eq!(entries.len(), 6);
        let records: Vec<AuditRecord> = entries[..5]
            .iter()
            .cloned()
            .map(|e| AuditRecord::from_owned_entry(e.id.unwrap(), e.fields.unwrap()))
            .collect();
        for (old, new) in [(0, 2), (1, 3)] {
            let (o, n) = (&records[old], &records[new]);
            assert_eq!(
                AuditRecord {
                    record_id: n.record_id.clone(),
                    timestamp_us: n.timestamp_us,
                    ..o.clone()
                },
                *n
            );
            assert_eq!(entries[old].pairs(), entries[new].pairs());
        }
        assert_eq!(records[0].error_message.as_deref(), Some("due / now"));
        assert_eq!(records[2].job_id.as_deref(), Some("a"));
        assert_eq!(records[4].decision, "deleted");
        assert_eq!(records[4].job_id.as_deref(), Some("x\u{fffd}"));
        assert_eq!(records[4].queue.as_deref(), Some("q"));
        assert!(entries[5].fields.is_none() && entries[5].pairs().is_none());
    }
}

//! Outbox entries from `XREADGROUP` and `XRANGE` replies.

use redis::{Value, from_redis_value};

use crate::audit::schema::StreamId;

/// One outbox entry as read. `fields` is `None` for an entry deleted while pending.
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
                    // record the writer moves (the bench's largest cost after the reply parse).
                    let mut fields = Vec::with_capacity(kv.len() / 2);
                    let mut it = kv.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        if let (Ok(k), Ok(v)) =
                            (from_redis_value::<String>(k), from_redis_value::<String>(v))
                        {
                            fields.push((k, v));
                        }
                    }
                    Some(fields)
                }
                Some(Value::Map(kv)) => Some(
                    kv.into_iter()
                        .filter_map(|(k, v)| {
                            Some((from_redis_value(k).ok()?, from_redis_value(v).ok()?))
                        })
                        .collect(),
                ),
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

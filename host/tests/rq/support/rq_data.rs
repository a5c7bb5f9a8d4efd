//! Reading what RQ left in Redis, raw, with the `redis` crate's sync client: the job hash,
//! the failed registry and the results stream, decoded with the crate's own decoders.

use std::collections::HashMap;

use retryguard::queue::rq::decode;

pub fn connect(redis_url: &str) -> redis::Connection {
    redis::Client::open(redis_url)
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("cannot connect to {redis_url}: {e}"))
}

/// `GET key` as a string (lossy UTF-8); `None` when the key does not exist.
pub fn redis_get(redis_url: &str, key: &str) -> Option<String> {
    let value: Option<Vec<u8>> = redis::cmd("GET")
        .arg(key)
        .query(&mut connect(redis_url))
        .expect("GET");
    value.map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// Runs one command and parses its reply; panics with the command on error.
pub fn query<T: redis::FromRedisValue>(con: &mut redis::Connection, args: &[&str]) -> T {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(con)
        .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")))
}

/// A job hash `rq:job:<id>`, field by field (values are bytes: `data` is zlib).
#[derive(Debug, Clone)]
pub struct JobHash(pub HashMap<String, Vec<u8>>);

impl JobHash {
    pub fn read(con: &mut redis::Connection, id: &str) -> Self {
        Self(query(con, &["HGETALL", &format!("rq:job:{id}")]))
    }

    pub fn exists(&self) -> bool {
        !self.0.is_empty()
    }

    pub fn bytes(&self, field: &str) -> Option<&[u8]> {
        self.0.get(field).map(Vec::as_slice)
    }

    /// A text field (lossy UTF-8); `None` when absent.
    pub fn text(&self, field: &str) -> Option<String> {
        self.bytes(field)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// The job's function name from `data`.
    pub fn job_type(&self) -> Option<String> {
        decode::job_type_from_data(self.bytes("data")?)
    }

    /// An RQ timestamp field in epoch milliseconds; `None` when absent or empty.
    pub fn time_ms(&self, field: &str) -> Option<u64> {
        decode::parse_rq_time(&self.text(field)?)
    }
}

/// One entry of `rq:results:<id>`.
#[derive(Debug, Clone)]
pub struct ResultEntry {
    pub id: String,
    pub fields: HashMap<String, Vec<u8>>,
}

impl ResultEntry {
    /// All entries, newest first (`XREVRANGE rq:results:<id> + -`).
    pub fn all(con: &mut redis::Connection, job_id: &str) -> Vec<Self> {
        let entries: Vec<(String, HashMap<String, Vec<u8>>)> = query(
            con,
            &["XREVRANGE", &format!("rq:results:{job_id}"), "+", "-"],
        );
        entries
            .into_iter()
            .map(|(id, fields)| Self { id, fields })
            .collect()
    }

    /// The newest entry, if any.
    pub fn newest(con: &mut redis::Connection, job_id: &str) -> Option<Self> {
        Self::all(con, job_id).into_iter().next()
    }

    pub fn text(&self, field: &str) -> Option<String> {
        self.fields
            .get(field)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// `type`: 1 successful, 2 failed, 3 stopped, 4 retried, 5 max retries exceeded.
    pub fn kind(&self) -> Option<u8> {
        self.text("type")?.parse().ok()
    }

    /// The decoded `exc_string`, if the entry has one.
    pub fn exc_text(&self) -> Option<String> {
        let field = self.fields.get("exc_string")?;
        Some(decode::exc_string(field).expect("exc_string is base64(zlib(utf-8))"))
    }

    /// The millisecond part of the stream id (when RQ wrote the entry).
    pub fn at_ms(&self) -> u64 {
        self.id
            .split('-')
            .next()
            .and_then(|ms| ms.parse().ok())
            .expect("a stream id")
    }
}

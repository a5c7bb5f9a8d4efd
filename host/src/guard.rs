//! The idempotency guard (docs/guard.md): job code wraps a side effect (a
//! charge, an e-mail) in `begin` … `complete`, so a retried job replays the stored result
//! instead of doing the side effect twice.
//!
//! One record per key, a Redis hash `retryguard:idem:<key>`, changed only by one Lua script
//! per transition (`guard/begin.lua`, `guard/complete.lua`, `guard/release.lua`), so every
//! transition is atomic and concurrent callers on any number of retryguard instances agree.
//! Time is Redis's own (`TIME` inside the scripts).
//!
//! Fields of the record:
//!
//! | field            | when                    | meaning                                      |
//! |------------------|-------------------------|----------------------------------------------|
//! | `state`          | always                  | `in_progress`, `completed` or `released`     |
//! | `token`          | always                  | the fencing token of the latest owner        |
//! | `fingerprint`    | in progress, completed  | what the caller said the request was         |
//! | `lease_until_ms` | in progress             | when the lease ends (epoch ms, Redis clock)  |
//! | `result`         | completed               | the stored result, JSON text                 |
//! | `completed_ms`   | completed               | when it completed                            |
//! | `updated_ms`     | always                  | the last change                              |
//!
//! A `released` record is reported as `absent`: it only keeps the token, so the next owner's
//! token is larger.

use std::sync::LazyLock;

use crate::redis_link::Link;

use crate::config::GuardConfig;
use crate::redis_error::RedisError;

/// Longest key, in bytes (of the key itself, after any percent-decoding).
pub const MAX_KEY_BYTES: usize = 255;
/// Longest fingerprint, in bytes.
pub const MAX_FINGERPRINT_BYTES: usize = 1024;

static BEGIN: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("guard/begin.lua")));
static COMPLETE: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("guard/complete.lua")));
static RELEASE: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("guard/release.lua")));

/// Input the guard refuses (the API answers 400 or 413).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    #[error("an idempotency key is 1..={MAX_KEY_BYTES} bytes, not {0}")]
    Key(usize),
    #[error("a fingerprint is at most {MAX_FINGERPRINT_BYTES} bytes, not {0}")]
    Fingerprint(usize),
    #[error("lease_seconds must be at least 1")]
    Lease,
    #[error(
        "the result is {size} bytes of JSON, over the {max}-byte limit ([guard] max_result_bytes)"
    )]
    ResultTooLarge { size: usize, max: u64 },
}

/// Errors of a guard operation.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    #[error(transparent)]
    Redis(#[from] RedisError),
}

/// What `begin` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// The caller owns the key until `lease_until_ms`; `token` fences its later calls.
    Acquired {
        token: u64,
        lease_until_ms: u64,
        lease_seconds: u64,
    },
    /// Another owner holds the lease for `remaining_ms` more.
    InProgress {
        remaining_ms: u64,
        lease_until_ms: u64,
    },
    /// Done before: the stored result, JSON text.
    Completed { result: String, completed_ms: u64 },
    /// The key was used with another fingerprint.
    Mismatch,
}

/// What `complete` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Complete {
    /// Stored (or stored before by the same token): the result now held, JSON text.
    Completed { result: String },
    /// The token does not own the key; `state` is what the record is now.
    Stale { state: State },
}

/// What `release` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// The key is free again (or was already released by the same token).
    Released,
    /// The token does not own the key; `state` is what the record is now.
    Stale { state: State },
}

/// The state of a key as callers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Absent,
    InProgress,
    Completed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Absent => "absent",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
        }
    }

    /// The state a record's `state` field stands for (`released` and none are absent).
    fn from_field(field: Option<&str>) -> Self {
        match field {
            Some("in_progress") => Self::InProgress,
            Some("completed") => Self::Completed,
            _ => Self::Absent,
        }
    }
}

/// A key's record, as `get` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub state: State,
    /// The latest owner's token (`None` when absent and never held within the retention).
    pub token: Option<u64>,
    pub fingerprint: Option<String>,
    /// In progress: when the lease ends.
    pub lease_until_ms: Option<u64>,
    /// In progress: the lease ended and nobody took the key over yet (the next `begin` with
    /// the same fingerprint will).
    pub lease_expired: bool,
    /// Completed: the result, JSON text.
    pub result: Option<String>,
    pub completed_ms: Option<u64>,
    pub updated_ms: Option<u64>,
    /// Redis's clock when the record was read (epoch ms).
    pub now_ms: u64,
}

/// The guard over retryguard's Redis connection and the `[guard]` settings.
#[derive(Clone)]
pub struct Guard {
    conn: Link,
    config: GuardConfig,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Guard {
    pub fn new(conn: Link, config: GuardConfig) -> Self {
        Self { conn, config }
    }

    /// Checks a key: 1..=255 bytes.
    pub fn check_key(key: &str) -> Result<(), InvalidInput> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(InvalidInput::Key(key.len()));
        }
        Ok(())
    }

    /// The lease a `begin` gets: `[guard] default_lease_seconds` when none is asked for,
    /// at most `[guard] max_lease_seconds`.
    pub fn lease_seconds(&self, asked: Option<u64>) -> Result<u64, InvalidInput> {
        match asked {
            Some(0) => Err(InvalidInput::Lease),
            Some(s) => Ok(s.min(self.config.max_lease_seconds)),
            None => Ok(self.config.default_lease_seconds),
        }
    }

    fn ttl_ms(&self) -> u64 {
        self.config.ttl_seconds.saturating_mul(1000)
    }

    /// Takes the lease of `key`, or reports who has it or what it returned.
    pub async fn begin(
        &self,
        key: &str,
        fingerprint: &str,
        lease_seconds: Option<u64>,
    ) -> Result<Begin, GuardError> {
        Self::check_key(key)?;
        if fingerprint.len() > MAX_FINGERPRINT_BYTES {
            return Err(InvalidInput::Fingerprint(fingerprint.len()).into());
        }
        let lease_seconds = self.lease_seconds(lease_seconds)?;
        let reply: Vec<String> = BEGIN
            .key(crate::keyspace::idempotency_record(key))
            .arg(fingerprint)
            .arg(lease_seconds.saturating_mul(1000))
            .arg(self.ttl_ms())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(RedisError::from)?;
        let num = |i: usize| number(&reply, i);
        match reply.first().map(String::as_str) {
            Some("acquired") => Ok(Begin::Acquired {
                token: num(1)?,
                lease_until_ms: num(2)?,
                lease_seconds,
            }),
            Some("in_progress") => Ok(Begin::InProgress {
                remaining_ms: num(1)?,
                lease_until_ms: num(2)?,
            }),
            Some("completed") => Ok(Begin::Completed {
                result: reply.get(1).cloned().unwrap_or_else(|| "null".into()),
                completed_ms: num(2).unwrap_or(0),
            }),
            Some("mismatch") => Ok(Begin::Mismatch),
            _ => Err(unexpected("begin", &reply)),
        }
    }

    /// Stores `result` (a JSON text) for the owner of `token`.
    pub async fn complete(
        &self,
        key: &str,
        token: u64,
        result: &str,
    ) -> Result<Complete, GuardError> {
        Self::check_key(key)?;
        let max = self.config.max_result_bytes;
        if u64::try_from(result.len()).unwrap_or(u64::MAX) > max {
            return Err(InvalidInput::ResultTooLarge {
                size: result.len(),
                max,
            }
            .into());
        }
        let reply: Vec<String> = COMPLETE
            .key(crate::keyspace::idempotency_record(key))
            .arg(token)
            .arg(result)
            .arg(self.ttl_ms())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(RedisError::from)?;
        match reply.first().map(String::as_str) {
            Some("completed") => Ok(Complete::Completed {
                result: reply.get(1).cloned().unwrap_or_else(|| "null".into()),
            }),
            Some("stale") => Ok(Complete::Stale {
                state: State::from_field(reply.get(1).map(String::as_str)),
            }),
            _ => Err(unexpected("complete", &reply)),
        }
    }

    /// Frees `key` for the next owner, if `token` holds it.
    pub async fn release(&self, key: &str, token: u64) -> Result<Release, GuardError> {
        Self::check_key(key)?;
        let reply: Vec<String> = RELEASE
            .key(crate::keyspace::idempotency_record(key))
            .arg(token)
            .arg(self.ttl_ms())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(RedisError::from)?;
        match reply.first().map(String::as_str) {
            Some("released") => Ok(Release::Released),
            Some("stale") => Ok(Release::Stale {
                state: State::from_field(reply.get(1).map(String::as_str)),
            }),
            _ => Err(unexpected("release", &reply)),
        }
    }

    /// Reads the record of `key` (and Redis's clock, in the same transaction).
    pub async fn get(&self, key: &str) -> Result<Record, GuardError> {
        Self::check_key(key)?;
        let (fields, time): (Vec<Option<String>>, (u64, u64)) = redis::pipe()
            .atomic()
            .cmd("HMGET")
            .arg(crate::keyspace::idempotency_record(key))
            .arg(&[
                "state",
                "token",
                "fingerprint",
                "lease_until_ms",
                "result",
                "completed_ms",
                "updated_ms",
            ])
            .cmd("TIME")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(RedisError::from)?;
        let field = |i: usize| fields.get(i).cloned().flatten();
        let int = |i: usize| field(i).and_then(|v| v.parse::<u64>().ok());
        let now_ms = time.0.saturating_mul(1000) + time.1 / 1000;
        let state = State::from_field(field(0).as_deref());
        let lease_until_ms = (state == State::InProgress).then(|| int(3)).flatten();
        Ok(Record {
            state,
            token: int(1),
            fingerprint: field(2).filter(|_| state != State::Absent),
            lease_until_ms,
            lease_expired: lease_until_ms.is_some_and(|until| until <= now_ms),
            result: field(4).filter(|_| state == State::Completed),
            completed_ms: int(5),
            updated_ms: int(6),
            now_ms,
        })
    }

    /// Forgets `key` entirely (an operator's action); whether there was a record.
    ///
    /// The next owner's token still grows: its floor is the Redis clock in microseconds.
    pub async fn delete(&self, key: &str) -> Result<bool, GuardError> {
        Self::check_key(key)?;
        let deleted: u64 = redis::cmd("DEL")
            .arg(crate::keyspace::idempotency_record(key))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(RedisError::from)?;
        Ok(deleted > 0)
    }
}

/// Element `i` of a script's reply, as a number.
fn number(reply: &[String], i: usize) -> Result<u64, GuardError> {
    reply
        .get(i)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| unexpected("guard", reply))
}

fn unexpected(what: &str, reply: &[String]) -> GuardError {
    GuardError::Redis(RedisError::Failed(format!(
        "unexpected reply of the {what} script: {reply:?}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_leases_are_checked() {
        assert!(Guard::check_key("").is_err());
        assert!(Guard::check_key(&"k".repeat(255)).is_ok());
        assert_eq!(
            Guard::check_key(&"é".repeat(128)),
            Err(InvalidInput::Key(256)),
            "bytes, not characters"
        );
        assert_eq!(
            crate::keyspace::idempotency_record("order:7"),
            "retryguard:idem:order:7"
        );
        assert_eq!(State::from_field(Some("released")), State::Absent);
        assert_eq!(State::from_field(None), State::Absent);
    }
}

//! A lease in Redis: one holder at a time among the instances that share a Redis, taken with
//! `SET NX PX`, renewed and released only by its token. The token also fences the holder's
//! writes: a script that checks it first writes nothing once the lease has passed on.
//!
//! The holder counts its lease valid until a margin before the TTL Redis counts, so it stops
//! acting before a standby can take over.

use std::time::{Duration, Instant};

use crate::redis_link::Link;

use crate::redis_error::RedisError;

/// Renews the lease if it is ours. KEYS[1] lease; ARGV[1] token, ARGV[2] ttl ms.
const RENEW_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// Releases the lease if it is ours.
const RELEASE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// What [`Lease::ensure`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Someone else holds it.
    No,
    /// Taken just now: whatever an earlier holder left half-done is ours to finish.
    Taken,
    /// Ours already, renewed if due.
    Kept,
}

/// One instance's side of a lease.
#[derive(Debug)]
pub struct Lease {
    key: &'static str,
    token: String,
    ttl: Duration,
    valid_until: Option<Instant>,
    last_renew: Instant,
}

impl Lease {
    pub fn new(key: &'static str, token: String, ttl: Duration) -> Self {
        Self {
            key,
            token,
            ttl: ttl.max(Duration::from_millis(100)),
            valid_until: None,
            last_renew: Instant::now(),
        }
    }

    /// The token: the holder's name, and the fence its scripts check.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Whether this instance may act as the holder now.
    pub fn held(&self) -> bool {
        self.valid_until.is_some_and(|t| Instant::now() < t)
    }

    /// Forgets the lease locally (a fenced write found it gone).
    pub fn lost(&mut self) {
        self.valid_until = None;
    }

    /// Takes the lease if free, renews it (every third of its TTL) if ours.
    pub async fn ensure(&mut self, conn: &mut Link) -> Result<Held, RedisError> {
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let margin = self.ttl / 5;
        let started = Instant::now();
        if self.held() {
            if self.last_renew.elapsed() < self.ttl / 3 {
                return Ok(Held::Kept);
            }
            let renewed: i64 = redis::Script::new(RENEW_LUA)
                .key(self.key)
                .arg(&self.token)
                .arg(ttl_ms)
                .invoke_async(conn)
                .await?;
            if renewed == 1 {
                self.last_renew = started;
                self.valid_until = Some(started + self.ttl - margin);
                return Ok(Held::Kept);
            }
            self.valid_until = None;
            return Ok(Held::No);
        }
        let taken: Option<String> = redis::cmd("SET")
            .arg(self.key)
            .arg(&self.token)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(conn)
            .await?;
        if taken.is_none() {
            return Ok(Held::No);
        }
        self.last_renew = started;
        self.valid_until = Some(started + self.ttl - margin);
        Ok(Held::Taken)
    }

    /// Gives the lease up if it is still ours (a clean stop: a standby need not wait).
    pub async fn release(&mut self, conn: &mut Link) {
        let _: redis::RedisResult<i64> = redis::Script::new(RELEASE_LUA)
            .key(self.key)
            .arg(&self.token)
            .invoke_async(conn)
            .await;
        self.valid_until = None;
    }
}

//! The writer's lease `retryguard:audit:v2:lease`: taken, renewed and released by token, and
//! the take-over of what earlier holders left pending.

use std::sync::atomic::Ordering;
use std::time::Instant;

use redis::{Value, from_redis_value};

use super::{AuditWriter, WriteError};

/// Renews the lease if it is ours, and keeps earlier writers fenced off their lease
/// (`audit::fence_earlier_writers`). KEYS[1] lease, KEYS[2] the earlier lease; ARGV[1]
/// token, ARGV[2] ttl ms, ARGV[3] the fence.
const RENEW_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[3])
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// Releases the lease if it is ours.
const RELEASE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

impl AuditWriter {
    pub(super) fn holds_lease(&self) -> bool {
        self.lease_until.is_some_and(|t| Instant::now() < t)
    }

    /// Takes the lease if free, renews it if ours. On taking it, prepares: clears staging,
    /// reads which ranges are durable, claims every pending entry of earlier writers.
    pub(super) async fn ensure_lease(&mut self) -> Result<bool, WriteError> {
        let ttl_ms = u64::try_from(self.config.lease_ttl.as_millis()).unwrap_or(15_000);
        let margin = self.config.lease_ttl / 5;
        if self.holds_lease() {
            if self.last_renew.elapsed() < self.config.lease_ttl / 3 {
                return Ok(true);
            }
            return self.renew_lease().await;
        }
        let started = Instant::now();
        // The fence first: a writer of an earlier version must not hold its lease while
        // this one writes (`audit::fence_earlier_writers`).
        let (taken,): (Option<String>,) = redis::pipe()
            .add_command(crate::audit::fence_cmd())
            .ignore()
            .cmd("SET")
            .arg(crate::keyspace::AUDIT_LEASE)
            .arg(&self.token)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut self.conn)
            .await?;
        if taken.is_none() {
            self.status.holds_lease.store(false, Ordering::Relaxed);
            return Ok(false);
        }
        self.last_renew = started;
        self.lease_until = Some(started + self.config.lease_ttl - margin);
        if let Err(e) = self.take_over().await {
            self.release().await;
            return Err(e);
        }
        self.status.holds_lease.store(true, Ordering::Relaxed);
        tracing::info!(writer = %self.token, "audit writer: took the lease");
        Ok(true)
    }

    /// Renews the lease now (`false`: it is no longer ours).
    pub(super) async fn renew_lease(&mut self) -> Result<bool, WriteError> {
        if !self.holds_lease() {
            return Ok(false);
        }
        let ttl_ms = u64::try_from(self.config.lease_ttl.as_millis()).unwrap_or(15_000);
        let margin = self.config.lease_ttl / 5;
        let started = Instant::now();
        let renewed: i64 = redis::Script::new(RENEW_LUA)
            .key(crate::keyspace::AUDIT_LEASE)
            .key(crate::keyspace::AUDIT_LEASE_V1)
            .arg(&self.token)
            .arg(ttl_ms)
            .arg(crate::keyspace::AUDIT_FENCE)
            .invoke_async(&mut self.conn)
            .await?;
        if renewed == 1 {
            self.last_renew = started;
            self.lease_until = Some(started + self.config.lease_ttl - margin);
            return Ok(true);
        }
        tracing::warn!("audit writer: lost the lease");
        self.lease_until = None;
        self.status.holds_lease.store(false, Ordering::Relaxed);
        Ok(false)
    }

    async fn take_over(&mut self) -> Result<(), WriteError> {
        let dir = self.dir.clone();
        self.written = tokio::task::spawn_blocking(move || {
            dir.clear_staging()?;
            dir.written()
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(crate::keyspace::AUDIT_OUTBOX)
            .arg(crate::keyspace::AUDIT_GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.conn)
            .await;
        if let Err(e) = created
            && e.code() != Some("BUSYGROUP")
        {
            return Err(e.into());
        }
        // Claim every entry another consumer read and never acknowledged.
        let mut cursor = "0-0".to_string();
        loop {
            let reply: Value = redis::cmd("XAUTOCLAIM")
                .arg(crate::keyspace::AUDIT_OUTBOX)
                .arg(crate::keyspace::AUDIT_GROUP)
                .arg(&self.token)
                .arg(0)
                .arg(&cursor)
                .arg("COUNT")
                .arg(1000)
                .arg("JUSTID")
                .query_async(&mut self.conn)
                .await?;
            let next = match &reply {
                Value::Array(items) => items
                    .first()
                    .and_then(|v| from_redis_value::<String>(v.clone()).ok()),
                _ => None,
            };
            match next {
                Some(n) if n != "0-0" => cursor = n,
                _ => break,
            }
        }
        Ok(())
    }

    pub(super) async fn release(&mut self) {
        let _: redis::RedisResult<i64> = redis::Script::new(RELEASE_LUA)
            .key(crate::keyspace::AUDIT_LEASE)
            .arg(&self.token)
            .invoke_async(&mut self.conn)
            .await;
        self.lease_until = None;
        self.status.holds_lease.store(false, Ordering::Relaxed);
    }
}

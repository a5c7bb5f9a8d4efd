//! Operations in Redis: one hash per operation, `retryguard:operation:<id>`
//! (`keyspace::operation`), so that every instance behind a load balancer answers an
//! operation's progress and takes its cancel.
//!
//! The instance that runs an operation writes the whole record at most every
//! [`super::REPORT_EVERY`] (its heartbeat, `updated_ms`) and once more when it ends; the same
//! round trip reads the `cancel` flag, which any instance sets ([`OperationStore::request_cancel`]).
//! A `running` record whose heartbeat is older than [`ABANDONED_AFTER_MS`] is read as
//! [`OperationState::Abandoned`]: the instance that ran it died (or lost Redis that long).
//! Every write renews the TTL of [`RECORD_TTL_SECONDS`].

use std::collections::{BTreeMap, HashMap};

use crate::redis_link::Link;

use crate::keyspace;
use crate::redis_error::RedisError;
use crate::retry::Outcome;

/// How long a record lives after its last write: its end, or the last heartbeat of an
/// instance that died.
pub const RECORD_TTL_SECONDS: u64 = 7 * 86_400;
/// A `running` record whose heartbeat is older than this is `abandoned`.
pub const ABANDONED_AFTER_MS: u64 = 30_000;

/// What an operation does. Stored as `kind`; a new kind is a new variant here (and in
/// `ALL`), its runner, and its name in the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationKind {
    /// `POST /api/v1/jobs/failed/retry-all`.
    RetryAll,
    /// `POST /api/v1/jobs/failed/delete-all`.
    DeleteAll,
}

impl OperationKind {
    pub const ALL: [Self; 2] = [Self::RetryAll, Self::DeleteAll];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RetryAll => "retry_all",
            Self::DeleteAll => "delete_all",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// Where an operation is. `Abandoned` is never stored: it is how a reader sees a `running`
/// record without a recent heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationState {
    Running,
    /// It ended with its summary, not cancelled.
    Succeeded,
    /// An error stopped it (`OperationStatus::error`).
    Failed,
    /// It stopped early on a cancel (after its batch), with its summary so far.
    Cancelled,
    /// `running` in Redis, but no heartbeat for [`ABANDONED_AFTER_MS`]: its instance died.
    Abandoned,
    /// A delete-all whose counting pass did not find the expected count: it deleted nothing
    /// (`OperationStatus::error` says both counts).
    Conflict,
}

impl OperationState {
    /// The stored (and logged) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Abandoned => "abandoned",
            Self::Conflict => "conflict",
        }
    }

    /// A stored state (never `abandoned`, which is only read).
    fn parse(text: &str) -> Option<Self> {
        [
            Self::Running,
            Self::Succeeded,
            Self::Failed,
            Self::Cancelled,
            Self::Conflict,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// What kind of error stopped a failed operation, so any instance answers it as the one that
/// ran it would.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// Redis did not answer.
    RedisUnavailable,
    /// `force` without a reason.
    ForceRequiresReason,
    /// Anything else (a Redis error, the policy engine, a panic): details are logged.
    Internal,
    /// A delete-all's count differed from `expected_count` (state `conflict`).
    CountMismatch,
}

impl FailureKind {
    pub const ALL: [Self; 4] = [
        Self::RedisUnavailable,
        Self::ForceRequiresReason,
        Self::Internal,
        Self::CountMismatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RedisUnavailable => "redis_unavailable",
            Self::ForceRequiresReason => "force_requires_reason",
            Self::Internal => "internal",
            Self::CountMismatch => "count_mismatch",
        }
    }

    fn parse(text: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == text)
            .unwrap_or(Self::Internal)
    }
}

/// Why a failed operation stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    /// The error's text (for the log and the record; the API does not send internals).
    pub detail: String,
}

/// One operation as its instance knows it, or as its record in Redis says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationStatus {
    pub id: String,
    pub kind: OperationKind,
    pub state: OperationState,
    pub dry_run: bool,
    /// Who started it (the token's name, or `local`).
    pub actor: String,
    /// The instance that runs it (`Operations::instance`).
    pub instance: String,
    pub started_ms: u64,
    /// When it ended; `None` while it runs (and when abandoned).
    pub ended_ms: Option<u64>,
    /// When its instance last reported it: the heartbeat while it runs.
    pub updated_ms: u64,
    /// Jobs in the snapshots it walks.
    pub total: u64,
    /// Jobs that got an outcome so far.
    pub processed: u64,
    pub counts: BTreeMap<Outcome, u64>,
    /// Some instance asked it to stop.
    pub cancel_requested: bool,
    /// Why it failed (state `failed`).
    pub error: Option<Failure>,
}

impl OperationStatus {
    /// The same, `abandoned` if it is `running` without a heartbeat for
    /// [`ABANDONED_AFTER_MS`] at `now_ms`.
    pub fn judged_at(mut self, now_ms: u64) -> Self {
        if self.state == OperationState::Running
            && now_ms.saturating_sub(self.updated_ms) > ABANDONED_AFTER_MS
        {
            self.state = OperationState::Abandoned;
        }
        self
    }

    /// The hash fields of the record. `cancel` only when set (a runner never clears a
    /// cancel another instance asked for), `ended_ms` and the error only once there.
    fn fields(&self) -> Vec<(String, String)> {
        let flag = |b: bool| if b { "1" } else { "0" }.to_string();
        let mut fields = vec![
            ("kind".to_string(), self.kind.as_str().to_string()),
            ("state".to_string(), self.state.as_str().to_string()),
            ("dry_run".to_string(), flag(self.dry_run)),
            ("actor".to_string(), self.actor.clone()),
            ("instance".to_string(), self.instance.clone()),
            ("started_ms".to_string(), self.started_ms.to_string()),
            ("updated_ms".to_string(), self.updated_ms.to_string()),
            ("total".to_string(), self.total.to_string()),
            ("processed".to_string(), self.processed.to_string()),
        ];
        for outcome in Outcome::ALL {
            let n = self.counts.get(&outcome).copied().unwrap_or(0);
            fields.push((format!("count:{}", outcome.as_str()), n.to_string()));
        }
        if let Some(ended) = self.ended_ms {
            fields.push(("ended_ms".to_string(), ended.to_string()));
        }
        if let Some(failure) = &self.error {
            fields.push(("error_kind".to_string(), failure.kind.as_str().to_string()));
            fields.push(("error".to_string(), failure.detail.clone()));
        }
        if self.cancel_requested {
            fields.push(("cancel".to_string(), flag(true)));
        }
        fields
    }

    /// Reads a record's fields back; `None` for no record (an empty hash).
    fn from_fields(
        id: &str,
        mut fields: HashMap<String, String>,
    ) -> Result<Option<Self>, RedisError> {
        if fields.is_empty() {
            return Ok(None);
        }
        let malformed = |what: &str| {
            RedisError::Failed(format!(
                "{}: malformed operation record ({what})",
                keyspace::operation(id)
            ))
        };
        let mut text = |name: &str| fields.remove(name).unwrap_or_default();
        let number = |value: String, name: &str| -> Result<u64, RedisError> {
            value.parse::<u64>().map_err(|_| malformed(name))
        };
        let kind = OperationKind::parse(&text("kind")).ok_or_else(|| malformed("kind"))?;
        let state = OperationState::parse(&text("state")).ok_or_else(|| malformed("state"))?;
        let dry_run = text("dry_run") == "1";
        let actor = text("actor");
        let instance = text("instance");
        let started_ms = number(text("started_ms"), "started_ms")?;
        let updated_ms = number(text("updated_ms"), "updated_ms")?;
        let total = number(text("total"), "total")?;
        let processed = number(text("processed"), "processed")?;
        let ended_ms = match text("ended_ms") {
            t if t.is_empty() => None,
            t => Some(number(t, "ended_ms")?),
        };
        let error = match (text("error_kind"), text("error")) {
            (kind, _) if kind.is_empty() => None,
            (kind, detail) => Some(Failure {
                kind: FailureKind::parse(&kind),
                detail,
            }),
        };
        let cancel_requested = text("cancel") == "1";
        let mut counts = BTreeMap::new();
        for outcome in Outcome::ALL {
            let name = format!("count:{}", outcome.as_str());
            let n = match text(&name) {
                t if t.is_empty() => 0,
                t => number(t, &name)?,
            };
            counts.insert(outcome, n);
        }
        Ok(Some(Self {
            id: id.to_string(),
            kind,
            state,
            dry_run,
            actor,
            instance,
            started_ms,
            ended_ms,
            updated_ms,
            total,
            processed,
            counts,
            cancel_requested,
            error,
        }))
    }
}

/// Sets `cancel` on a record that is `running`; 1 if it did, 0 for no such record or one
/// that ended. KEYS[1] the record.
const REQUEST_CANCEL: &str = r"
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then
  return 0
end
redis.call('HSET', KEYS[1], 'cancel', '1')
return 1
";

/// The operations' records in Redis.
#[derive(Clone)]
pub struct OperationStore {
    conn: Link,
    request_cancel: redis::Script,
}

impl std::fmt::Debug for OperationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperationStore").finish_non_exhaustive()
    }
}

impl OperationStore {
    pub fn new(conn: Link) -> Self {
        Self {
            conn,
            request_cancel: redis::Script::new(REQUEST_CANCEL),
        }
    }

    /// Writes the record (a heartbeat when it runs) and renews its TTL, in one round trip
    /// that also reads its `cancel` flag: true when some instance asked it to stop.
    pub async fn write(&self, status: &OperationStatus) -> Result<bool, RedisError> {
        let key = keyspace::operation(&status.id);
        let mut conn = self.conn.clone();
        let (cancel,): (Option<String>,) = redis::pipe()
            .atomic()
            .cmd("HSET")
            .arg(&key)
            .arg(status.fields())
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(RECORD_TTL_SECONDS)
            .ignore()
            .cmd("HGET")
            .arg(&key)
            .arg("cancel")
            .query_async(&mut conn)
            .await?;
        Ok(cancel.as_deref() == Some("1"))
    }

    /// The record of `id` as of `now_ms` (so `abandoned` when its heartbeat is stale);
    /// `None` when there is none (never written, or expired).
    pub async fn read(&self, id: &str, now_ms: u64) -> Result<Option<OperationStatus>, RedisError> {
        let mut conn = self.conn.clone();
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(keyspace::operation(id))
            .query_async(&mut conn)
            .await?;
        Ok(OperationStatus::from_fields(id, fields)?.map(|s| s.judged_at(now_ms)))
    }

    /// Sets the `cancel` flag of a running (or abandoned) operation; false when there is no
    /// such record or it ended. The instance that runs it reads the flag with its next
    /// progress write and stops after its batch.
    pub async fn request_cancel(&self, id: &str) -> Result<bool, RedisError> {
        let mut conn = self.conn.clone();
        let set: i64 = self
            .request_cancel
            .key(keyspace::operation(id))
            .invoke_async(&mut conn)
            .await?;
        Ok(set == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> OperationStatus {
        OperationStatus {
            id: "op-1".into(),
            kind: OperationKind::RetryAll,
            state: OperationState::Running,
            dry_run: true,
            actor: "ops-alice".into(),
            instance: "host-1-0".into(),
            started_ms: 1_000,
            ended_ms: None,
            updated_ms: 2_000,
            total: 10,
            processed: 4,
            counts: Outcome::ALL.into_iter().map(|o| (o, 0)).collect(),
            cancel_requested: false,
            error: None,
        }
    }

    fn round_trip(s: &OperationStatus) -> OperationStatus {
        let fields: HashMap<String, String> = s.fields().into_iter().collect();
        OperationStatus::from_fields(&s.id, fields)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let mut s = status();
        s.counts.insert(Outcome::Retried, 3);
        s.counts.insert(Outcome::BlockedCooldown, 1);
        assert_eq!(round_trip(&s), s);

        s.state = OperationState::Failed;
        s.ended_ms = Some(3_000);
        s.cancel_requested = true;
        s.error = Some(Failure {
            kind: FailureKind::RedisUnavailable,
            detail: "redis is unavailable: timed out".into(),
        });
        assert_eq!(round_trip(&s), s);
    }

    #[test]
    fn no_fields_is_no_record_and_a_bad_one_is_an_error() {
        assert_eq!(OperationStatus::from_fields("x", HashMap::new()), Ok(None));
        let mut fields: HashMap<String, String> = status().fields().into_iter().collect();
        fields.insert("state".into(), "sleeping".into());
        assert!(OperationStatus::from_fields("x", fields).is_err());
    }

    #[test]
    fn a_running_record_without_a_recent_heartbeat_is_abandoned() {
        let s = status();
        assert_eq!(
            s.clone().judged_at(2_000 + ABANDONED_AFTER_MS).state,
            OperationState::Running
        );
        assert_eq!(
            s.clone().judged_at(2_001 + ABANDONED_AFTER_MS).state,
            OperationState::Abandoned
        );
        let ended = OperationStatus {
            state: OperationState::Succeeded,
            ended_ms: Some(2_000),
            ..s
        };
        assert_eq!(
            ended.judged_at(u64::MAX).state,
            OperationState::Succeeded,
            "only a running one is abandoned"
        );
    }

    #[test]
    fn kinds_and_failures_have_stable_names() {
        for kind in OperationKind::ALL {
            assert_eq!(OperationKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(OperationKind::RetryAll.as_str(), "retry_all");
        for kind in FailureKind::ALL {
            assert_eq!(FailureKind::parse(kind.as_str()), kind);
        }
        assert_eq!(
            FailureKind::parse("from_a_newer_version"),
            FailureKind::Internal
        );
    }
}

//! The brakes' state in Redis, shared by every instance: the breakers (one hash each, with
//! a sliding window of outcomes) and the budget and rate counters. Every change is one Lua
//! script (`lua/`); a breaker's transitions append their audit records in the same script.

use std::collections::HashMap;
use std::sync::LazyLock;

use crate::redis_link::Link;
use serde::Serialize;

use super::{BreakerConfig, BudgetConfig, split_key};
use crate::keyspace;
use crate::redis_error::RedisError;

static ADMIT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(concat!(
        include_str!("lua/common.lua"),
        include_str!("lua/admit.lua")
    ))
});
static OUTCOME: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(concat!(
        include_str!("lua/common.lua"),
        include_str!("lua/outcome.lua")
    ))
});
static MANUAL: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(concat!(
        include_str!("lua/common.lua"),
        include_str!("lua/manual.lua")
    ))
});
static BUDGET: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("lua/budget.lua")));

/// A breaker as `GET /api/v1/breakers` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct BreakerView {
    /// `<pattern>|<failure type>`.
    pub key: String,
    pub pattern: String,
    pub failure_type: String,
    /// `closed`, `open` or `half_open`.
    pub state: String,
    /// Failed-again outcomes over all outcomes in the window (0 when none).
    pub failure_rate: f64,
    /// Outcomes in the window.
    pub outcomes: u64,
    pub opened_at_ms: Option<u64>,
    /// When it lets probes through (`null` when closed, or opened by hand).
    pub half_open_at_ms: Option<u64>,
    /// Probes it still lets through (half-open).
    pub probes_left: u64,
    /// The reason it was opened by hand with, when it was.
    pub manual: Option<String>,
}

impl BreakerView {
    /// Whether it holds every retry at `now`: open, and not yet due to half-open.
    pub fn holds_at(&self, now: u64) -> bool {
        self.state == "open"
            && (self.manual.is_some() || self.half_open_at_ms.is_none_or(|t| now < t))
    }
}

/// The brakes' state a batch of decisions is made with (read once per batch).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every breaker, by key.
    pub breakers: HashMap<String, BreakerView>,
    /// Requeues left in this minute's budget, by pattern (bindings with a budget).
    pub budget_left: HashMap<String, u64>,
}

/// A breaker's change of state, as scripts report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub key: String,
    /// `opened`, `half_opened` or `closed`.
    pub to: String,
}

fn cfg_args(cmd: &mut redis::ScriptInvocation<'_>, c: &BreakerConfig) {
    cmd.arg(c.failure_rate)
        .arg(u64::from(c.window_seconds) * 1000)
        .arg(c.min_outcomes)
        .arg(u64::from(c.open_seconds) * 1000)
        .arg(u64::from(c.max_open_seconds) * 1000)
        .arg(c.half_open_probes);
}

/// Reads every breaker, and the budget left of each `(pattern, budget)`.
pub async fn snapshot(
    conn: &mut Link,
    budgets: &[(String, BudgetConfig)],
    now: u64,
) -> Result<Snapshot, RedisError> {
    let keys: Vec<String> = redis::cmd("SMEMBERS")
        .arg(keyspace::BREAKERS)
        .query_async(conn)
        .await?;
    let mut out = Snapshot::default();
    if keys.is_empty() && budgets.is_empty() {
        return Ok(out);
    }
    let mut pipe = redis::pipe();
    for key in &keys {
        pipe.cmd("HGETALL").arg(keyspace::breaker(key));
        pipe.cmd("ZCARD")
            .arg(format!("{}:ok", keyspace::breaker(key)));
        pipe.cmd("ZCARD")
            .arg(format!("{}:fail", keyspace::breaker(key)));
    }
    let minute = now / 60_000;
    for (pattern, _) in budgets {
        pipe.cmd("MGET")
            .arg(keyspace::budget(pattern, "used", minute))
            .arg(keyspace::budget(pattern, "ok", minute))
            .arg(keyspace::budget(pattern, "ok", minute.saturating_sub(1)));
    }
    let replies: Vec<redis::Value> = pipe.query_async(conn).await?;
    let mut replies = replies.into_iter();
    for key in keys {
        let (Some(h), Some(ok), Some(fail)) = (replies.next(), replies.next(), replies.next())
        else {
            break;
        };
        let h: HashMap<String, String> = redis::from_redis_value(h).unwrap_or_default();
        let ok: u64 = redis::from_redis_value(ok).unwrap_or(0);
        let fail: u64 = redis::from_redis_value(fail).unwrap_or(0);
        if let Some(view) = view_of(&key, &h, ok, fail) {
            out.breakers.insert(key, view);
        }
    }
    for (pattern, budget) in budgets {
        let Some(v) = replies.next() else { break };
        let v: Vec<Option<u64>> = redis::from_redis_value(v).unwrap_or_default();
        let get = |i: usize| v.get(i).copied().flatten().unwrap_or(0);
        let successes = get(1) + get(2);
        let limit =
            (u64::from(budget.min_per_minute)).max((budget.ratio * successes as f64) as u64);
        out.budget_left
            .insert(pattern.clone(), limit.saturating_sub(get(0)));
    }
    Ok(out)
}

fn view_of(key: &str, h: &HashMap<String, String>, ok: u64, fail: u64) -> Option<BreakerView> {
    let (pattern, failure_type) = split_key(key)?;
    let num = |f: &str| {
        h.get(f)
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
    };
    let state = h.get("state").cloned().unwrap_or_else(|| "closed".into());
    let outcomes = ok + fail;
    Some(BreakerView {
        key: key.to_string(),
        pattern: pattern.to_string(),
        failure_type: failure_type.to_string(),
        failure_rate: if outcomes == 0 {
            0.0
        } else {
            fail as f64 / outcomes as f64
        },
        outcomes,
        opened_at_ms: num("opened_at").filter(|_| state != "closed"),
        half_open_at_ms: num("half_open_at").filter(|_| state == "open"),
        probes_left: if state == "half_open" {
            num("probes_left").unwrap_or(0)
        } else {
            0
        },
        manual: h.get("manual").filter(|m| !m.is_empty()).cloned(),
        state,
    })
}

/// Every breaker, sorted by key.
pub async fn list(conn: &mut Link, now: u64) -> Result<Vec<BreakerView>, RedisError> {
    let mut all: Vec<BreakerView> = snapshot(conn, &[], now)
        .await?
        .breakers
        .into_values()
        .collect();
    all.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(all)
}

/// One group of requeues asking a breaker to let them through.
#[derive(Debug, Clone)]
pub struct Ask<'a> {
    pub key: &'a str,
    pub pattern: &'a str,
    pub failure_type: &'a str,
    pub config: BreakerConfig,
    pub wanted: usize,
}

/// A breaker's answer to an [`Ask`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// How many of the requeues may go (the first ones).
    pub admitted: usize,
    /// When the others may be tried again.
    pub retry_at_ms: Option<u64>,
    pub state: String,
    pub transition: Option<Transition>,
}

/// Asks each breaker to let its group's requeues through (a dry run changes nothing).
pub async fn admit(
    conn: &mut Link,
    asks: &[Ask<'_>],
    now: u64,
    dry_run: bool,
) -> Result<Vec<Admission>, RedisError> {
    if asks.is_empty() {
        return Ok(Vec::new());
    }
    let mut cmd = ADMIT.prepare_invoke();
    cmd.arg(now).arg(u8::from(dry_run)).arg(asks.len());
    for a in asks {
        cmd.arg(a.key).arg(a.pattern).arg(a.failure_type);
        cfg_args(&mut cmd, &a.config);
        cmd.arg(a.wanted);
    }
    let rows: Vec<(i64, i64, String, String)> = cmd.invoke_async(conn).await?;
    Ok(asks
        .iter()
        .zip(rows)
        .map(|(a, (admitted, retry_at, state, transition))| Admission {
            admitted: usize::try_from(admitted).unwrap_or(0).min(a.wanted),
            retry_at_ms: u64::try_from(retry_at).ok().filter(|t| *t > 0),
            state,
            transition: (!transition.is_empty()).then(|| Transition {
                key: a.key.to_string(),
                to: transition,
            }),
        })
        .collect())
}

/// The outcome of one retried job, for its breaker.
#[derive(Debug, Clone)]
pub struct Outcome<'a> {
    pub key: String,
    pub pattern: &'a str,
    pub failure_type: &'a str,
    pub config: BreakerConfig,
    pub succeeded: bool,
    pub job_id: &'a str,
}

/// Feeds outcomes to their breakers; returns the transitions they caused.
pub async fn record_outcomes(
    conn: &mut Link,
    outcomes: &[Outcome<'_>],
    now: u64,
) -> Result<Vec<Transition>, RedisError> {
    if outcomes.is_empty() {
        return Ok(Vec::new());
    }
    let mut cmd = OUTCOME.prepare_invoke();
    cmd.arg(now);
    for o in outcomes {
        cmd.arg(&o.key).arg(o.pattern).arg(o.failure_type);
        cfg_args(&mut cmd, &o.config);
        cmd.arg(u8::from(o.succeeded)).arg(o.job_id);
    }
    let flat: Vec<String> = cmd.invoke_async(conn).await?;
    Ok(flat
        .chunks(2)
        .filter_map(|c| match c {
            [key, to] => Some(Transition {
                key: key.clone(),
                to: to.clone(),
            }),
            _ => None,
        })
        .collect())
}

/// A change of a breaker by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ManualOp {
    Open,
    Close,
    Reset,
}

impl ManualOp {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Close => "close",
            Self::Reset => "reset",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(Self::Open),
            "close" => Some(Self::Close),
            "reset" => Some(Self::Reset),
            _ => None,
        }
    }
}

/// Opens, closes or resets breaker `key` by hand (audited with `actor` and `reason`).
pub async fn manual(
    conn: &mut Link,
    key: &str,
    op: ManualOp,
    config: &BreakerConfig,
    actor: &str,
    reason: &str,
    now: u64,
) -> Result<String, RedisError> {
    let Some((pattern, failure_type)) = split_key(key) else {
        return Err(RedisError::Failed(format!("not a breaker key: {key}")));
    };
    let mut cmd = MANUAL.prepare_invoke();
    cmd.arg(now)
        .arg(op.as_str())
        .arg(key)
        .arg(pattern)
        .arg(failure_type)
        .arg(actor)
        .arg(reason);
    cfg_args(&mut cmd, config);
    Ok(cmd.invoke_async(conn).await?)
}

/// What limits one group of requeues in [`take`].
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    Budget(BudgetConfig),
    PerSecond(u32),
}

/// Takes up to `wanted` requeues from each `(pattern, limit, wanted)`; returns how many
/// each may make now.
pub async fn take(
    conn: &mut Link,
    asks: &[(&str, Limit, usize)],
    now: u64,
    dry_run: bool,
) -> Result<Vec<usize>, RedisError> {
    if asks.is_empty() {
        return Ok(Vec::new());
    }
    let mut cmd = BUDGET.prepare_invoke();
    cmd.arg(now).arg(u8::from(dry_run)).arg(asks.len());
    for (pattern, limit, wanted) in asks {
        match limit {
            Limit::Budget(b) => cmd
                .arg("budget")
                .arg(*pattern)
                .arg(b.ratio)
                .arg(b.min_per_minute),
            Limit::PerSecond(n) => cmd.arg("rate").arg(*pattern).arg(*n).arg(0),
        };
        cmd.arg(*wanted);
    }
    let rows: Vec<(i64, i64)> = cmd.invoke_async(conn).await?;
    Ok(rows
        .into_iter()
        .zip(asks)
        .map(|((allowed, _), (_, _, wanted))| usize::try_from(allowed).unwrap_or(0).min(*wanted))
        .collect())
}

/// Counts successful completions toward `pattern`'s budget.
pub async fn count_successes(
    conn: &mut Link,
    patterns: &[(&str, u64)],
    now: u64,
) -> Result<(), RedisError> {
    if patterns.is_empty() {
        return Ok(());
    }
    let minute = now / 60_000;
    let mut pipe = redis::pipe();
    for (pattern, n) in patterns {
        let key = keyspace::budget(pattern, "ok", minute);
        pipe.cmd("INCRBY").arg(&key).arg(*n).ignore();
        pipe.cmd("EXPIRE").arg(&key).arg(180).ignore();
    }
    pipe.query_async::<()>(conn).await?;
    Ok(())
}

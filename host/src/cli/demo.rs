//! `retryguard demo --redis-url URL [--queue demo] [--count-per-family 2] [--yes]`: writes
//! realistic failed RQ 2.x jobs, in RQ 2.12's exact layout, so a newcomer can try the rest.
//!
//! The exception texts are real RQ tracebacks (the contract fixtures); the job functions are
//! `demo_jobs.<family>` (`examples/demo_jobs.py`), which succeed once retried.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher as _, Hasher as _};
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use clap::Args;

use crate::clock::format_rfc3339;
use crate::clock::now_ms;
use crate::config::redact_url;

/// `println!` that ignores a closed stdout (`… | head`) instead of panicking.
macro_rules! out {
    () => {
        let _ = writeln!(std::io::stdout());
    };
    ($($arg:tt)*) => {
        let _ = writeln!(std::io::stdout(), $($arg)*);
    };
}

/// RQ's default `failure_ttl`: one year.
const DEFAULT_FAILURE_TTL_S: u64 = 31_536_000;
/// RQ's default job timeout (seconds).
const JOB_TIMEOUT_S: u64 = 180;
/// Most jobs per family one run writes.
const MAX_PER_FAMILY: u32 = 1000;
/// How long connecting and each write may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

/// One failure family of the contract table: its name (the job function is
/// `demo_jobs.<name>`), the fixture it is shown with, and what the default policy says.
struct Family {
    name: &'static str,
    fixture: &'static str,
    traceback: &'static str,
}

macro_rules! family {
    ($name:literal, $file:literal) => {
        Family {
            name: $name,
            fixture: $file,
            traceback: include_str!(concat!("../../tests/fixtures/contract/", $file)),
        }
    };
}

/// The families written, one real traceback each (rows of `expected.tsv`).
const FAMILIES: &[Family] = &[
    family!("network_error", "01_requests_connection_refused.txt"),
    family!("timeout", "09_requests_read_timeout.txt"),
    family!("rate_limit", "14_requests_429.txt"),
    family!("temporary_error", "17_requests_503.txt"),
    family!("database_lock", "24_sqlite_database_locked.txt"),
    family!("validation_error", "31_value_error.txt"),
    family!("logic_error", "34_type_error.txt"),
    family!("data_not_found", "40_key_error.txt"),
    family!("permission_error", "45_requests_401.txt"),
    family!("configuration_error", "51_module_not_found.txt"),
    family!("unknown", "60_custom_unknown.txt"),
];

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The Redis to write to, e.g. redis://127.0.0.1:6379/15 (a database of its own).
    #[arg(long, value_name = "URL")]
    redis_url: String,
    /// The RQ queue the jobs come from.
    #[arg(long, default_value = "demo")]
    queue: String,
    /// Failed jobs per failure family (1-1000): the first failed minutes ago, the second just
    /// now (still cooling down), and so on alternately.
    #[arg(long, default_value_t = 2)]
    count_per_family: u32,
    /// Write even to database 0 of 127.0.0.1:6379, where a real RQ deployment usually is.
    #[arg(long)]
    yes: bool,
}

/// One job written.
#[derive(Debug)]
struct Written {
    id: String,
    family: &'static str,
    fixture: &'static str,
    ended_ms: u64,
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if !(1..=MAX_PER_FAMILY).contains(&args.count_per_family) {
        eprintln!("error: --count-per-family must be 1..={MAX_PER_FAMILY}");
        return Ok(ExitCode::from(2));
    }
    let queue = args.queue.trim();
    if queue.is_empty() || queue.len() > 128 || queue.chars().any(char::is_control) {
        eprintln!("error: --queue must be 1-128 characters without control characters");
        return Ok(ExitCode::from(2));
    }
    let shown = redact_url(&args.redis_url);
    let client = match redis::Client::open(args.redis_url.as_str()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: invalid --redis-url {shown}: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    if is_default_database(client.get_connection_info()) && !args.yes {
        eprintln!(
            "error: {shown} is database 0 of the default local Redis, where a real RQ \
             deployment usually keeps its jobs.\n  use a database of its own, e.g. \
             redis://127.0.0.1:6379/15, or add --yes to write there anyway"
        );
        return Ok(ExitCode::FAILURE);
    }

    let jobs = plan(queue, args.count_per_family, now_ms());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if let Err(e) = runtime.block_on(write(&client, queue, &jobs)) {
        eprintln!(
            "error: cannot write to Redis at {shown}: {e:#}\n  check that Redis is running \
             and reachable, and the URL's host, port, database number and password"
        );
        return Ok(ExitCode::FAILURE);
    }
    print_report(&shown, &args.redis_url, queue, &jobs);
    Ok(ExitCode::SUCCESS)
}

/// Whether the URL names database 0 of the default local Redis.
fn is_default_database(info: &redis::ConnectionInfo) -> bool {
    let local_default = match info.addr() {
        redis::ConnectionAddr::Tcp(host, port)
        | redis::ConnectionAddr::TcpTls { host, port, .. } => {
            *port == 6379 && matches!(host.as_str(), "127.0.0.1" | "localhost" | "::1" | "[::1]")
        }
        _ => false,
    };
    local_default && info.redis_settings().db() == 0
}

/// The jobs to write: `per_family` of each family, ending alternately minutes ago (due for
/// a retry) and seconds ago (still in the policy's cooldown).
fn plan(_queue: &str, per_family: u32, now: u64) -> Vec<Written> {
    let mut jobs = Vec::new();
    for (f, family) in (0u64..).zip(FAMILIES) {
        for n in 0..u64::from(per_family) {
            let ago_ms = if n % 2 == 0 {
                // 3 to 13 minutes ago, different per family.
                (3 + (f * 7 + n) % 11) * 60_000 + n * 1000
            } else {
                // 2 to 20 seconds ago.
                (2 + (f * 3 + n) % 19) * 1000
            };
            jobs.push(Written {
                id: uuid4(),
                family: family.name,
                fixture: family.fixture,
                ended_ms: now.saturating_sub(ago_ms),
            });
        }
    }
    jobs
}

/// Writes every job as RQ 2.12 leaves a failed one: the job hash (expiring with the default
/// failure_ttl), its failed-registry member scored ended_at + failure_ttl, its queue in
/// `rq:queues`, and a `type=2` entry in its results stream, stamped at ended_at.
async fn write(client: &redis::Client, queue: &str, jobs: &[Written]) -> anyhow::Result<()> {
    let mut con = tokio::time::timeout(REDIS_TIMEOUT, client.get_multiplexed_async_connection())
        .await
        .map_err(|_| anyhow::anyhow!("no connection within {} s", REDIS_TIMEOUT.as_secs()))??;
    let worker_name = random_hex(32);
    let mut pipe = redis::pipe();
    pipe.atomic();
    for job in jobs {
        let func = format!("demo_jobs.{}", job.family);
        let traceback = FAMILIES
            .iter()
            .find(|f| f.name == job.family)
            .map_or("", |f| f.traceback);
        let created = format_rfc3339(job.ended_ms.saturating_sub(2_000));
        let started = format_rfc3339(job.ended_ms.saturating_sub(1_200));
        let ended = format_rfc3339(job.ended_ms);
        let key = format!("rq:job:{}", job.id);
        pipe.cmd("HSET")
            .arg(&key)
            .arg("created_at")
            .arg(&created)
            .arg("data")
            .arg(zlib(&pickled_call(&func)))
            .arg("success_callback_name")
            .arg("")
            .arg("failure_callback_name")
            .arg("")
            .arg("stopped_callback_name")
            .arg("")
            .arg("started_at")
            .arg(&started)
            .arg("ended_at")
            .arg(&ended)
            .arg("last_heartbeat")
            .arg(&started)
            .arg("worker_name")
            .arg(&worker_name)
            .arg("group_id")
            .arg("")
            .arg("origin")
            .arg(queue)
            .arg("description")
            .arg(format!("{func}()"))
            .arg("enqueued_at")
            .arg(&created)
            .arg("timeout")
            .arg(JOB_TIMEOUT_S)
            .arg("status")
            .arg("failed")
            .ignore();
        pipe.cmd("EXPIRE")
            .arg(&key)
            .arg(DEFAULT_FAILURE_TTL_S)
            .ignore();
        pipe.cmd("ZADD")
            .arg(format!("rq:failed:{queue}"))
            .arg(job.ended_ms / 1000 + DEFAULT_FAILURE_TTL_S)
            .arg(&job.id)
            .ignore();
        pipe.cmd("SADD")
            .arg("rq:queues")
            .arg(format!("rq:queue:{queue}"))
            .ignore();
        let exc = base64::engine::general_purpose::STANDARD.encode(zlib(traceback.as_bytes()));
        pipe.cmd("XADD")
            .arg(format!("rq:results:{}", job.id))
            .arg("MAXLEN")
            .arg(10)
            .arg(format!("{}-0", job.ended_ms))
            .arg("type")
            .arg(2)
            .arg("worker_name")
            .arg(&worker_name)
            .arg("exc_string")
            .arg(exc)
            .arg("execution_id")
            .arg(random_hex(10))
            .ignore();
    }
    tokio::time::timeout(REDIS_TIMEOUT * 4, pipe.query_async::<()>(&mut con))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the writes took longer than {} s",
                REDIS_TIMEOUT.as_secs() * 4
            )
        })??;
    Ok(())
}

fn print_report(shown_url: &str, url: &str, queue: &str, jobs: &[Written]) {
    let now = now_ms();
    out!(
        "wrote {} failed RQ jobs to queue {queue:?} at {shown_url}:",
        jobs.len()
    );
    out!();
    out!(
        "  {:<36}  {:<30}  {:>9}  traceback",
        "job id",
        "job type",
        "failed"
    );
    for job in jobs {
        let ago = now.saturating_sub(job.ended_ms) / 1000;
        let ago = if ago >= 60 {
            format!("{} min ago", ago / 60)
        } else {
            format!("{ago} s ago")
        };
        let func = format!("demo_jobs.{}", job.family);
        out!("  {:<36}  {func:<30}  {ago:>9}  {}", job.id, job.fixture);
    }
    out!();
    out!("next:");
    out!("  RETRYGUARD_REDIS_URL={url} retryguard serve     # in another terminal");
    out!("  retryguard jobs failed");
    out!("  retryguard jobs retry-all --dry-run");
    out!("  retryguard jobs retry-all");
    out!("  pip install rq==2.12.0");
    out!("  PYTHONPATH=examples rq worker --burst --url {url} {queue}");
    out!("  retryguard jobs failed");
}

fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = e.write_all(bytes);
    e.finish().unwrap_or_default()
}

/// `pickle.dumps((func, None, (), {}), protocol=5)`, as RQ writes a job's `data` for a call
/// without arguments. `func` is at most 255 bytes (SHORT_BINUNICODE).
fn pickled_call(func: &str) -> Vec<u8> {
    let name = &func.as_bytes()[..func.len().min(255)];
    let mut body = vec![b'(', 0x8c, u8::try_from(name.len()).unwrap_or(u8::MAX)];
    body.extend_from_slice(name);
    // MEMOIZE, None, EMPTY_TUPLE, EMPTY_DICT, MEMOIZE, TUPLE, MEMOIZE, STOP
    body.extend_from_slice(b"\x94N)}\x94t\x94.");
    let mut p = vec![0x80, 0x05, 0x95];
    p.extend_from_slice(&(body.len() as u64).to_le_bytes());
    p.extend_from_slice(&body);
    p
}

/// A random u64 from the standard library's randomly seeded hasher.
fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(now_ms());
    h.finish()
}

fn random_hex(len: usize) -> String {
    let mut s = String::with_capacity(len + 16);
    while s.len() < len {
        s.push_str(&format!("{:016x}", random_u64()));
    }
    s.truncate(len);
    s
}

/// A random UUID (version 4) in RQ's default job-id form.
fn uuid4() -> String {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&random_u64().to_le_bytes());
    b[8..].copy_from_slice(&random_u64().to_le_bytes());
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pickled_call_is_what_python_writes() {
        // pickle.dumps(("demo_jobs.timeout", None, (), {}), protocol=5)
        let p = pickled_call("demo_jobs.timeout");
        assert_eq!(&p[..3], b"\x80\x05\x95");
        assert!(p.ends_with(b"\x94N)}\x94t\x94."));
        let data = zlib(&p);
        assert_eq!(
            crate::queue::rq::decode::job_type_from_data(&data).as_deref(),
            Some("demo_jobs.timeout")
        );
    }

    #[test]
    fn refuses_only_database_0_of_the_default_local_redis() {
        let default = |url: &str| {
            is_default_database(redis::Client::open(url).unwrap().get_connection_info())
        };
        assert!(default("redis://127.0.0.1:6379/0"));
        assert!(default("redis://localhost"));
        assert!(!default("redis://127.0.0.1:6379/15"));
        assert!(!default("redis://127.0.0.1:6380/0"));
    }

    #[test]
    fn plan_varies_ages_and_ids() {
        let jobs = plan("demo", 2, 10_000_000_000);
        assert_eq!(jobs.len(), FAMILIES.len() * 2);
        assert!(jobs.iter().any(|j| 10_000_000_000 - j.ended_ms >= 180_000));
        assert!(jobs.iter().any(|j| 10_000_000_000 - j.ended_ms < 60_000));
        let mut ids: Vec<_> = jobs.iter().map(|j| &j.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), jobs.len());
        assert!(uuid4().len() == 36 && uuid4() != uuid4());
    }
}

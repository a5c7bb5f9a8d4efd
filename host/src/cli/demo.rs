//! `retryguard demo --redis-url URL [--queue demo] [--count-per-family 2 | --total N] [--yes]`:
//! writes realistic failed RQ 2.x jobs, in RQ 2.12's exact layout, so a newcomer can try the
//! rest.
//!
//! The exception texts are real RQ tracebacks (the contract fixtures), their file paths made
//! neutral (`/app/demo_jobs.py`, `/usr/local/lib/python3.11/…`); the job functions are
//! `demo_jobs.<family>` (`examples/demo_jobs.py`), which succeed once retried. The jobs are
//! written in batches, each atomic and idempotent, so a batch that timed out is written again
//! and a failure reports exactly how many jobs were written.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher as _, Hasher as _};
use std::io::{IsTerminal as _, Write as _};
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
const MAX_PER_FAMILY: u32 = 100_000;
/// Most jobs one run writes with `--total`.
const MAX_TOTAL: u32 = 1_000_000;
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one batch may take (the redis crate's default, 500 ms, is too short for a busy
/// Redis).
const BATCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Jobs per batch: one MULTI/EXEC of about 6 commands each.
const BATCH_JOBS: usize = 200;
/// Tries per batch, the first included.
const BATCH_TRIES: u32 = 4;
/// Most jobs listed one by one in the report; more are summed up per family.
const LIST_JOBS: usize = 50;

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
    /// Failed jobs per failure family (1-100,000): the first failed minutes ago, the second
    /// just now (still cooling down), and so on alternately.
    #[arg(long, default_value_t = 2, value_name = "N")]
    count_per_family: u32,
    /// Failed jobs in all (1-1,000,000), spread over the families in turn, for scale trials
    /// (instead of --count-per-family).
    #[arg(long, value_name = "N", conflicts_with = "count_per_family")]
    total: Option<u32>,
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
    let total = match args.total {
        Some(n) if !(1..=MAX_TOTAL).contains(&n) => {
            eprintln!("error: --total must be 1..={MAX_TOTAL}");
            return Ok(ExitCode::from(2));
        }
        Some(n) => n as usize,
        None if !(1..=MAX_PER_FAMILY).contains(&args.count_per_family) => {
            eprintln!("error: --count-per-family must be 1..={MAX_PER_FAMILY}");
            return Ok(ExitCode::from(2));
        }
        None => args.count_per_family as usize * FAMILIES.len(),
    };
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

    let jobs = plan(total, now_ms());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let written = runtime.block_on(write(&client, queue, &jobs));
    if let Some(e) = written.error {
        let n = written.jobs;
        eprintln!("error: cannot write to Redis at {shown}: {e:#}");
        let unsure = written.unsure;
        let rest = if unsure > 0 {
            format!(
                "the next {unsure} (one batch) may have been written (its answer was an error \
                 or was lost); none after them"
            )
        } else {
            "none of the others".to_string()
        };
        if n == 0 && unsure == 0 {
            eprintln!("  no job was written");
        } else if n == 0 {
            eprintln!("  no job was written for sure; {rest}");
        } else {
            eprintln!(
                "  {n} of the {} jobs were written, each whole (listed below); {rest}",
                jobs.len()
            );
        }
        eprintln!(
            "  check that Redis is running and reachable, and the URL's host, port, database \
             number and password"
        );
        if n > 0 {
            print_report(&shown, &args.redis_url, queue, &jobs[..n]);
        }
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

/// The jobs to write: `total` of them, the families in turn, ending alternately minutes ago
/// (due for a retry) and seconds ago (still in the policy's cooldown).
fn plan(total: usize, now: u64) -> Vec<Written> {
    (0..total)
        .map(|i| {
            let (f, n) = ((i % FAMILIES.len()) as u64, (i / FAMILIES.len()) as u64);
            let family = &FAMILIES[i % FAMILIES.len()];
            let ago_ms = if n % 2 == 0 {
                // 3 to 13 minutes ago, different per family.
                (3 + (f * 7 + n) % 11) * 60_000 + (n % 60) * 1000
            } else {
                // 2 to 20 seconds ago.
                (2 + (f * 3 + n) % 19) * 1000
            };
            Written {
                id: uuid4(),
                family: family.name,
                fixture: family.fixture,
                ended_ms: now.saturating_sub(ago_ms),
            }
        })
        .collect()
}

/// What [`write`] did: how many jobs (from the first) were written whole, and why it stopped.
#[derive(Debug)]
struct WriteReport {
    jobs: usize,
    /// The jobs of the batch that failed after it was sent (a timeout, a dropped
    /// connection, an error reply): they may have been written.
    unsure: usize,
    error: Option<anyhow::Error>,
}

/// What every job of a family shares: its function, its data and its traceback, encoded once.
struct Encoded {
    func: String,
    data: Vec<u8>,
    exc: String,
}

/// Writes every job as RQ 2.12 leaves a failed one: the job hash (expiring with the default
/// failure_ttl), its failed-registry member scored ended_at + failure_ttl, its queue in
/// `rq:queues`, and a `type=2` entry in its results stream, stamped at ended_at.
///
/// In batches of [`BATCH_JOBS`], each one MULTI/EXEC: a batch is written whole or not at all.
/// Writing one again changes nothing (the results stream is rewritten, not appended to), so a
/// batch that timed out (it may have been written) is sent again on a new connection, up to
/// [`BATCH_TRIES`] times.
async fn write(client: &redis::Client, queue: &str, jobs: &[Written]) -> WriteReport {
    let encoded: Vec<Encoded> = FAMILIES
        .iter()
        .map(|f| {
            let func = format!("demo_jobs.{}", f.name);
            let traceback = neutral_paths(f.traceback, f.name);
            Encoded {
                data: zlib(&pickled_call(&func)),
                exc: base64::engine::general_purpose::STANDARD.encode(zlib(traceback.as_bytes())),
                func,
            }
        })
        .collect();
    let worker_name = random_hex(32);
    let progress = std::io::stderr().is_terminal() && jobs.len() > 10 * BATCH_JOBS;
    let mut con = None;
    let mut written = 0;
    for batch in jobs.chunks(BATCH_JOBS) {
        let pipe = batch_pipe(queue, batch, &encoded, &worker_name);
        let mut tries = 0;
        // Whether a try of this batch reached Redis and failed without an answer.
        let mut sent = false;
        loop {
            tries += 1;
            let result = match &mut con {
                Some(c) => {
                    sent = true;
                    pipe.query_async::<()>(c).await.map_err(anyhow::Error::from)
                }
                None => match connect(client).await {
                    Ok(c) => {
                        sent = true;
                        pipe.query_async::<()>(con.insert(c))
                            .await
                            .map_err(anyhow::Error::from)
                    }
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(()) => break,
                Err(e) if tries < BATCH_TRIES && retriable(&e) => {
                    // The connection may be behind the batch: start a new one.
                    con = None;
                    tokio::time::sleep(Duration::from_millis(250 * u64::from(tries))).await;
                }
                Err(e) => {
                    if progress {
                        eprintln!();
                    }
                    return WriteReport {
                        jobs: written,
                        unsure: if sent { batch.len() } else { 0 },
                        error: Some(e),
                    };
                }
            }
        }
        written += batch.len();
        if progress {
            eprint!("\rwrote {written}/{} jobs", jobs.len());
        }
    }
    if progress {
        eprintln!();
    }
    WriteReport {
        jobs: written,
        unsure: 0,
        error: None,
    }
}

/// A multiplexed connection whose answers may take [`BATCH_TIMEOUT`].
async fn connect(client: &redis::Client) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(BATCH_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| anyhow::anyhow!("no connection: {e}"))
}

/// Whether a failed batch is worth sending again: a timeout or a lost connection, not a
/// refusal (a wrong password, a read-only replica, out of memory).
fn retriable(e: &anyhow::Error) -> bool {
    match e.downcast_ref::<redis::RedisError>() {
        Some(r) => r.is_timeout() || r.is_connection_dropped() || r.is_io_error(),
        None => false,
    }
}

/// One batch as one MULTI/EXEC.
fn batch_pipe(
    queue: &str,
    batch: &[Written],
    encoded: &[Encoded],
    worker_name: &str,
) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.cmd("SADD")
        .arg("rq:queues")
        .arg(format!("rq:queue:{queue}"))
        .ignore();
    for job in batch {
        let Some(e) = FAMILIES
            .iter()
            .position(|f| f.name == job.family)
            .and_then(|i| encoded.get(i))
        else {
            continue;
        };
        let created = format_rfc3339(job.ended_ms.saturating_sub(2_000));
        let started = format_rfc3339(job.ended_ms.saturating_sub(1_200));
        let ended = format_rfc3339(job.ended_ms);
        let key = format!("rq:job:{}", job.id);
        pipe.cmd("HSET")
            .arg(&key)
            .arg("created_at")
            .arg(&created)
            .arg("data")
            .arg(&e.data)
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
            .arg(worker_name)
            .arg("group_id")
            .arg("")
            .arg("origin")
            .arg(queue)
            .arg("description")
            .arg(format!("{}()", e.func))
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
        // Rewritten, not appended to, so that a batch sent twice leaves one entry (an XADD
        // of the same id again would fail).
        let results = format!("rq:results:{}", job.id);
        pipe.cmd("DEL").arg(&results).ignore();
        pipe.cmd("XADD")
            .arg(&results)
            .arg("MAXLEN")
            .arg(10)
            .arg(format!("{}-0", job.ended_ms))
            .arg("type")
            .arg(2)
            .arg("worker_name")
            .arg(worker_name)
            .arg("exc_string")
            .arg(&e.exc)
            .arg("execution_id")
            .arg(random_hex(10))
            .ignore();
    }
    pipe
}

/// The traceback with neutral file paths instead of those of the machine the fixtures were
/// made on: the job's own frames in `/app/demo_jobs.py` (in the family's function),
/// installed packages under `/usr/local/lib/python3.11/site-packages/`, the standard library
/// under `/usr/local/lib/python3.11/`.
fn neutral_paths(traceback: &str, family: &str) -> String {
    let mut out = String::with_capacity(traceback.len());
    for line in traceback.split_inclusive('\n') {
        out.push_str(&neutral_frame(line, family).unwrap_or_else(|| line.to_string()));
    }
    out
}

/// A `  File "PATH", line N, in FUNC` line with a neutral path, or `None` to keep it.
fn neutral_frame(line: &str, family: &str) -> Option<String> {
    let rest = line.strip_prefix("  File \"")?;
    let (path, after) = rest.split_once('"')?;
    if !path.starts_with('/') {
        return None;
    }
    if path.ends_with("/generate.py") {
        let (line_no, _) = after.rsplit_once(", in ")?;
        let end = if line.ends_with('\n') { "\n" } else { "" };
        return Some(format!(
            "  File \"/app/demo_jobs.py\"{line_no}, in {family}{end}"
        ));
    }
    let neutral = if let Some((_, tail)) = path.split_once("/site-packages/") {
        format!("/usr/local/lib/python3.11/site-packages/{tail}")
    } else if let Some((_, tail)) = path.split_once("/lib/python3.11/") {
        format!("/usr/local/lib/python3.11/{tail}")
    } else {
        format!("/app/{}", path.rsplit('/').next().unwrap_or(path))
    };
    Some(format!("  File \"{neutral}\"{after}"))
}

fn print_report(shown_url: &str, url: &str, queue: &str, jobs: &[Written]) {
    let now = now_ms();
    out!(
        "wrote {} failed RQ jobs to queue {queue:?} at {shown_url}:",
        jobs.len()
    );
    out!();
    if jobs.len() > LIST_JOBS {
        // Too many to list: how many of each family, and their ids in Redis.
        for family in FAMILIES {
            let n = jobs.iter().filter(|j| j.family == family.name).count();
            if n > 0 {
                let func = format!("demo_jobs.{}", family.name);
                out!("  {func:<30}  {n:>7} jobs  {}", family.fixture);
            }
        }
    } else {
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
        let jobs = plan(2 * FAMILIES.len(), 10_000_000_000);
        assert_eq!(jobs.len(), FAMILIES.len() * 2);
        for f in FAMILIES {
            assert_eq!(jobs.iter().filter(|j| j.family == f.name).count(), 2);
        }
        assert!(jobs.iter().any(|j| 10_000_000_000 - j.ended_ms >= 180_000));
        assert!(jobs.iter().any(|j| 10_000_000_000 - j.ended_ms < 60_000));
        let mut ids: Vec<_> = jobs.iter().map(|j| &j.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), jobs.len());
        assert!(uuid4().len() == 36 && uuid4() != uuid4());
        // A total spreads over the families in turn, and every job failed within 14 minutes.
        let jobs = plan(25, 10_000_000_000);
        assert_eq!(jobs.len(), 25);
        assert_eq!(jobs[11].family, FAMILIES[0].name);
        assert!(
            jobs.iter()
                .all(|j| 10_000_000_000 - j.ended_ms < 14 * 60_000)
        );
    }

    #[test]
    fn tracebacks_name_no_build_machine_paths() {
        for f in FAMILIES {
            let tb = neutral_paths(f.traceback, f.name);
            assert_eq!(
                tb.lines().count(),
                f.traceback.lines().count(),
                "{}",
                f.name
            );
            for bad in [
                "/work/",
                "/root/",
                "/tmp/",
                "generate.py",
                "rgvenv",
                ".pyenv",
            ] {
                assert!(!tb.contains(bad), "{}: {bad} in\n{tb}", f.name);
            }
            assert!(
                tb.contains("File \"/app/demo_jobs.py\", line "),
                "{}: {tb}",
                f.name
            );
            assert!(
                tb.contains(&format!(", in {}\n", f.name)),
                "{}: {tb}",
                f.name
            );
            // The exception itself is untouched: the policy classifies it as before.
            assert_eq!(tb.lines().last(), f.traceback.lines().last());
        }
        assert_eq!(
            neutral_paths(
                "  File \"/tmp/v/lib/python3.11/site-packages/rq/job.py\", line 3, in perform\n  \
                 File \"<frozen importlib._bootstrap>\", line 1, in _find\n",
                "x"
            ),
            "  File \"/usr/local/lib/python3.11/site-packages/rq/job.py\", line 3, in perform\n  \
             File \"<frozen importlib._bootstrap>\", line 1, in _find\n"
        );
    }
}

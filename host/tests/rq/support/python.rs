//! The Python side of the harness: the test venv (`.venv-test/`, made by scripts/test.sh) with
//! RQ 2.12, the job module `host/tests/rq/jobs.py` and the `make_failed.py` CLI.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The RQ version the harness is pinned to (host/tests/rq/requirements.txt).
pub const RQ_VERSION: &str = "2.12.0";

/// The repo root (the workspace, one up from `host/`).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
}

/// `host/tests/rq`: jobs.py, make_failed.py; on `PYTHONPATH` for every worker.
pub fn jobs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rq")
}

/// The test venv's interpreter.
#[derive(Debug)]
pub struct Python {
    python: PathBuf,
}

impl Python {
    /// `$RETRYGUARD_TEST_PYTHON`, else `<repo>/.venv-test/bin/python`; checked once per test
    /// binary to import RQ at the pinned version. Panics with the command that makes it.
    pub fn venv() -> &'static Python {
        static PYTHON: OnceLock<Python> = OnceLock::new();
        PYTHON.get_or_init(|| {
            let python = std::env::var_os("RETRYGUARD_TEST_PYTHON")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo_root().join(".venv-test/bin/python"));
            let make = format!(
                "cd {} && python3 -m venv .venv-test && .venv-test/bin/pip install -r \
                 host/tests/rq/requirements.txt   (or run scripts/test.sh)",
                repo_root().display()
            );
            if !python.exists() {
                panic!(
                    "the RQ test venv is missing ({} does not exist); make it with:\n    {make}",
                    python.display()
                );
            }
            let out = Command::new(&python)
                .args(["-c", "import rq; print(rq.__version__)"])
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
            let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !out.status.success() || version != RQ_VERSION {
                panic!(
                    "{} has rq {version:?}, not {RQ_VERSION} ({}); refresh the venv with:\n    \
                     {make}",
                    python.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Python { python }
        })
    }

    pub fn path(&self) -> &Path {
        &self.python
    }

    /// A command running this interpreter with `jobs` importable and the counting jobs
    /// pointed at `redis_url`.
    pub fn command(&self, redis_url: &str) -> Command {
        let mut cmd = Command::new(&self.python);
        cmd.current_dir(jobs_dir())
            .env("PYTHONPATH", jobs_dir())
            .env("RQ_TEST_REDIS_URL", redis_url)
            .env("PYTHONDONTWRITEBYTECODE", "1");
        cmd
    }

    /// Makes `count` failed jobs of `func` (`"jobs.<name>"`, one string argument `arg`, or
    /// none when `arg` is empty) on `queue` with RQ's API and in-process `SimpleWorker`s;
    /// returns their ids in enqueue order. Panics unless every one ended `failed`.
    pub fn make_failed(
        &self,
        redis_url: &str,
        queue: &str,
        count: usize,
        func: &str,
        arg: &str,
    ) -> Vec<String> {
        let mut make = MakeFailed::new(queue, count, func);
        if !arg.is_empty() {
            make = make.arg(arg);
        }
        make.run(self, redis_url)
    }

    /// Runs a real forking `rq worker --burst` on `queues` until they are empty.
    pub fn run_worker_burst(&self, redis_url: &str, queues: &[&str]) -> Output {
        let mut args = vec![
            "worker",
            "--burst",
            "--url",
            redis_url,
            "--logging_level",
            "WARNING",
        ];
        args.extend_from_slice(queues);
        self.rq(redis_url, &args)
    }

    /// Runs RQ's own CLI (`python -m rq.cli ARGS`); panics on a non-zero exit.
    pub fn rq(&self, redis_url: &str, args: &[&str]) -> Output {
        let out = self
            .command(redis_url)
            .args(["-m", "rq.cli"])
            .args(args)
            .output()
            .expect("rq runs");
        check(&out, &format!("rq {}", args.join(" ")));
        out
    }
}

/// Options of `make_failed.py`; [`Python::make_failed`] is the common case.
#[derive(Debug, Clone)]
pub struct MakeFailed {
    queue: String,
    count: usize,
    func: String,
    args: Vec<String>,
    failure_ttl: Option<i64>,
    retry: Option<u32>,
    job_id_prefix: Option<String>,
    fork: bool,
    enqueue_only: bool,
    expect: Option<String>,
}

impl MakeFailed {
    pub fn new(queue: &str, count: usize, func: &str) -> Self {
        Self {
            queue: queue.into(),
            count,
            func: func.into(),
            args: Vec::new(),
            failure_ttl: None,
            retry: None,
            job_id_prefix: None,
            fork: false,
            enqueue_only: false,
            expect: None,
        }
    }

    /// One more positional string argument for the job.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.into());
        self
    }

    /// RQ's `failure_ttl` (seconds; `-1` never expires).
    pub fn failure_ttl(mut self, seconds: i64) -> Self {
        self.failure_ttl = Some(seconds);
        self
    }

    /// Enqueue with RQ's own `Retry(max=n)`.
    pub fn rq_retry(mut self, max: u32) -> Self {
        self.retry = Some(max);
        self
    }

    /// Job ids `<prefix>-0`, `<prefix>-1`, … instead of RQ's uuid4 hex.
    pub fn job_id_prefix(mut self, prefix: &str) -> Self {
        self.job_id_prefix = Some(prefix.into());
        self
    }

    /// Run a forking `rq worker --burst` (needed for work-horse deaths and stops).
    pub fn fork(mut self) -> Self {
        self.fork = true;
        self
    }

    /// Only enqueue: no worker runs.
    pub fn enqueue_only(mut self) -> Self {
        self.enqueue_only = true;
        self
    }

    /// The status every job must end in: `failed` (default; `queued` when only enqueueing),
    /// `stopped`, `finished`, `queued`, `any`.
    pub fn expect(mut self, status: &str) -> Self {
        self.expect = Some(status.into());
        self
    }

    pub fn run(&self, python: &Python, redis_url: &str) -> Vec<String> {
        let mut cmd = python.command(redis_url);
        cmd.arg("make_failed.py")
            .args(["--redis-url", redis_url, "--queue", &self.queue])
            .args(["--count", &self.count.to_string(), "--func", &self.func]);
        if let Some(status) = &self.expect {
            cmd.arg(format!("--expect={status}"));
        }
        for arg in &self.args {
            cmd.arg(format!("--arg={arg}"));
        }
        if let Some(ttl) = self.failure_ttl {
            cmd.arg(format!("--failure-ttl={ttl}"));
        }
        if let Some(max) = self.retry {
            cmd.arg(format!("--retry={max}"));
        }
        if let Some(prefix) = &self.job_id_prefix {
            cmd.arg(format!("--job-id-prefix={prefix}"));
        }
        if self.fork {
            cmd.arg("--fork");
        }
        if self.enqueue_only {
            cmd.arg("--no-work");
        }
        let out = cmd.output().expect("make_failed.py runs");
        check(
            &out,
            &format!("make_failed.py {} x {}", self.count, self.func),
        );
        let ids: Vec<String> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "make_failed.py printed no JSON list of ids ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        assert_eq!(ids.len(), self.count, "make_failed.py made every job");
        ids
    }
}

fn check(out: &Output, what: &str) {
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

//! Prometheus metrics: one process-wide registry, rendered as the text exposition format at
//! `/metrics` (`api::metrics`). Counters and histograms are plain atomics and small maps; no
//! metrics crate. Gauges that describe Redis (failed jobs, audit backlog) are read at scrape
//! time by the endpoint, not kept here.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Histogram bucket bounds, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    5.0,
];

/// A latency histogram.
#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (bound, n) in LATENCY_BUCKETS.iter().zip(self.buckets.iter_mut()) {
            if seconds <= *bound {
                *n += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, n) in LATENCY_BUCKETS.iter().zip(self.buckets) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// The process's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// (route template, method, status) → requests.
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// (route template, method) → latency.
    request_latency: Mutex<BTreeMap<(String, String), Histogram>>,
    /// (outcome, dry run) → jobs.
    retry_outcomes: Mutex<BTreeMap<(&'static str, bool), u64>>,
    /// outcome of a requeued job (`succeeded`, `failed_again`, `lost`) → jobs.
    retry_results: Mutex<BTreeMap<&'static str, u64>>,
    /// (policy digest, `ok` or error code) → evaluations.
    evaluations: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// policy digest → evaluation latency.
    evaluation_latency: Mutex<BTreeMap<String, Histogram>>,
    redis_errors: AtomicU64,
    redis_reconnects: AtomicU64,
    requeues_unreplicated: AtomicU64,
    audit_records_written: AtomicU64,
    /// The bindings revision of the live table, and swaps that succeeded / failed.
    bindings_revision: AtomicU64,
    bindings_swaps: AtomicU64,
    bindings_swap_failures: AtomicU64,
    /// Compiled-policy cache lookups by result (`hit`, `miss`, `rejected`).
    policy_artifacts: Mutex<BTreeMap<&'static str, u64>>,
    /// Circuit breaker transitions this process made, by state entered.
    breaker_transitions: Mutex<BTreeMap<String, u64>>,
    /// The auto-retry sweeper: jobs it looked at, requeued, and its lag (due → requeued).
    sweeper_looked_at: AtomicU64,
    sweeper_requeued: AtomicU64,
    sweeper_lag: Mutex<Histogram>,
}

/// The registry of this process.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::default)
}

impl Metrics {
    pub fn request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((route.to_string(), method.to_string(), status))
                .or_default() += 1;
        }
        if let Ok(mut m) = self.request_latency.lock() {
            m.entry((route.to_string(), method.to_string()))
                .or_default()
                .observe(elapsed.as_secs_f64());
        }
    }

    pub fn retry_outcome(&self, outcome: &'static str, dry_run: bool) {
        if let Ok(mut m) = self.retry_outcomes.lock() {
            *m.entry((outcome, dry_run)).or_default() += 1;
        }
    }

    /// A circuit breaker entered `to` (`opened`, `half_opened`, `closed`).
    pub fn breaker_transition(&self, to: &str) {
        if let Ok(mut m) = self.breaker_transitions.lock() {
            *m.entry(to.to_string()).or_default() += 1;
        }
    }

    /// One sweep of the auto-retry sweeper: jobs looked at, requeued, and each requeue's lag.
    pub fn sweep(&self, looked_at: u64, lags: &[Duration]) {
        self.sweeper_looked_at
            .fetch_add(looked_at, Ordering::Relaxed);
        self.sweeper_requeued
            .fetch_add(lags.len() as u64, Ordering::Relaxed);
        if let Ok(mut h) = self.sweeper_lag.lock() {
            for lag in lags {
                h.observe(lag.as_secs_f64());
            }
        }
    }

    pub fn retry_result(&self, result: &'static str, n: u64) {
        if let Ok(mut m) = self.retry_results.lock() {
            *m.entry(result).or_default() += n;
        }
    }

    /// One policy evaluation: `result` is `ok` or the error's code.
    pub fn evaluation(&self, digest: &str, result: &'static str, elapsed: Duration) {
        if let Ok(mut m) = self.evaluations.lock() {
            match m.get_mut(&(digest.to_string(), result)) {
                Some(n) => *n += 1,
                None => {
                    m.insert((digest.to_string(), result), 1);
                }
            }
        }
        if let Ok(mut m) = self.evaluation_latency.lock() {
            match m.get_mut(digest) {
                Some(h) => h.observe(elapsed.as_secs_f64()),
                None => {
                    let mut h = Histogram::default();
                    h.observe(elapsed.as_secs_f64());
                    m.insert(digest.to_string(), h);
                }
            }
        }
    }

    pub fn redis_error(&self) {
        self.redis_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection moved to a new primary (Sentinel failover) or a new password.
    pub fn redis_failover(&self) {
        self.redis_reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// A requeue batch that fewer replicas than `[redis] wait_replicas` acknowledged in time.
    pub fn requeue_unreplicated(&self) {
        self.requeues_unreplicated.fetch_add(1, Ordering::Relaxed);
    }

    /// A new bindings table went live.
    pub fn bindings_swapped(&self, revision: u64) {
        self.bindings_revision.store(revision, Ordering::Relaxed);
        self.bindings_swaps.fetch_add(1, Ordering::Relaxed);
    }

    /// A bindings table failed to build; the last good one stays.
    pub fn bindings_swap_failed(&self) {
        self.bindings_swap_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A lookup in the compiled-policy cache: `hit`, `miss` or `rejected`.
    pub fn policy_artifact(&self, result: &'static str) {
        if let Ok(mut m) = self.policy_artifacts.lock() {
            *m.entry(result).or_default() += 1;
        }
    }

    pub fn audit_written(&self, n: u64) {
        self.audit_records_written.fetch_add(n, Ordering::Relaxed);
    }

    /// The text exposition format of everything kept here.
    pub fn render(&self, out: &mut String) {
        header(
            out,
            "retryguard_http_requests_total",
            "counter",
            "HTTP requests by route template, method and status.",
        );
        if let Ok(m) = self.requests.lock() {
            for ((route, method, status), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "retryguard_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
                    escape(route)
                );
            }
        }
        header(
            out,
            "retryguard_http_request_duration_seconds",
            "histogram",
            "HTTP request latency by route template and method.",
        );
        if let Ok(m) = self.request_latency.lock() {
            for ((route, method), h) in m.iter() {
                let labels = format!("route=\"{}\",method=\"{method}\"", escape(route));
                h.render(out, "retryguard_http_request_duration_seconds", &labels);
            }
        }
        header(
            out,
            "retryguard_retry_outcomes_total",
            "counter",
            "Jobs by the retry service's outcome (retried, blocked_cooldown, blocked_max_attempts, blocked_non_retryable, …), dry runs apart.",
        );
        if let Ok(m) = self.retry_outcomes.lock() {
            for ((outcome, dry_run), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "retryguard_retry_outcomes_total{{outcome=\"{outcome}\",dry_run=\"{dry_run}\"}} {n}"
                );
            }
        }
        header(
            out,
            "retryguard_retry_results_total",
            "counter",
            "What became of requeued jobs: succeeded, failed_again, lost (recorded by this process).",
        );
        if let Ok(m) = self.retry_results.lock() {
            for (result, n) in m.iter() {
                let _ = writeln!(
                    out,
                    "retryguard_retry_results_total{{result=\"{result}\"}} {n}"
                );
            }
        }
        header(
            out,
            "retryguard_policy_evaluations_total",
            "counter",
            "Policy evaluations by policy digest and result (ok or the error code).",
        );
        if let Ok(m) = self.evaluations.lock() {
            for ((digest, result), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "retryguard_policy_evaluations_total{{policy=\"{}\",result=\"{result}\"}} {n}",
                    escape(digest)
                );
            }
        }
        header(
            out,
            "retryguard_policy_evaluation_duration_seconds",
            "histogram",
            "Policy evaluation latency (classify + decide, instantiation included) by digest.",
        );
        if let Ok(m) = self.evaluation_latency.lock() {
            for (digest, h) in m.iter() {
                let labels = format!("policy=\"{}\"", escape(digest));
                h.render(
                    out,
                    "retryguard_policy_evaluation_duration_seconds",
                    &labels,
                );
            }
        }
        header(
            out,
            "retryguard_redis_errors_total",
            "counter",
            "Redis calls of the retry service that failed.",
        );
        let _ = writeln!(
            out,
            "retryguard_redis_errors_total {}",
            self.redis_errors.load(Ordering::Relaxed)
        );
        header(
            out,
            "retryguard_redis_primary_changes_total",
            "counter",
            "Connections moved to a new Redis primary (Sentinel failover) or password.",
        );
        let _ = writeln!(
            out,
            "retryguard_redis_primary_changes_total {}",
            self.redis_reconnects.load(Ordering::Relaxed)
        );
        header(
            out,
            "retryguard_requeue_unreplicated_total",
            "counter",
            "Requeue batches not acknowledged by [redis] wait_replicas replicas in time.",
        );
        let _ = writeln!(
            out,
            "retryguard_requeue_unreplicated_total {}",
            self.requeues_unreplicated.load(Ordering::Relaxed)
        );
        header(
            out,
            "retryguard_audit_records_written_total",
            "counter",
            "Audit records this process wrote to parquet.",
        );
        let _ = writeln!(
            out,
            "retryguard_audit_records_written_total {}",
            self.audit_records_written.load(Ordering::Relaxed)
        );
        for (name, kind, help, value) in [
            (
                "retryguard_bindings_revision",
                "gauge",
                "The policy bindings revision this instance's live table is at.",
                &self.bindings_revision,
            ),
            (
                "retryguard_bindings_swaps_total",
                "counter",
                "Bindings tables swapped in by this process.",
                &self.bindings_swaps,
            ),
            (
                "retryguard_bindings_swap_failures_total",
                "counter",
                "Bindings tables that failed to build (the last good one stayed live).",
                &self.bindings_swap_failures,
            ),
        ] {
            header(out, name, kind, help);
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        header(
            out,
            "retryguard_breaker_transitions_total",
            "counter",
            "Circuit breaker transitions this process made, by the state entered (opened, \
             half_opened, closed).",
        );
        if let Ok(m) = self.breaker_transitions.lock() {
            for (to, n) in m.iter() {
                let _ = writeln!(
                    out,
                    "retryguard_breaker_transitions_total{{to=\"{}\"}} {n}",
                    escape(to)
                );
            }
        }
        for (name, help, value) in [
            (
                "retryguard_auto_retry_looked_at_total",
                "Due jobs the auto-retry sweeper of this process looked at.",
                &self.sweeper_looked_at,
            ),
            (
                "retryguard_auto_retry_requeued_total",
                "Jobs the auto-retry sweeper of this process requeued.",
                &self.sweeper_requeued,
            ),
        ] {
            header(out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        header(
            out,
            "retryguard_auto_retry_lag_seconds",
            "histogram",
            "From a job's retry time to its automatic requeue.",
        );
        if let Ok(h) = self.sweeper_lag.lock() {
            h.render(out, "retryguard_auto_retry_lag_seconds", "");
        }
        header(
            out,
            "retryguard_policy_artifact_cache_total",
            "counter",
            "Lookups in the on-disk compiled-policy cache by result (hit, miss, rejected: \
             a torn, corrupt or incompatible file, compiled again).",
        );
        if let Ok(m) = self.policy_artifacts.lock() {
            for (result, n) in m.iter() {
                let _ = writeln!(
                    out,
                    "retryguard_policy_artifact_cache_total{{result=\"{result}\"}} {n}"
                );
            }
        }
    }
}

/// `# HELP` and `# TYPE` lines.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value with `\`, `"` and newlines escaped.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_histograms() {
        let m = Metrics::default();
        m.request("/api/v1/jobs/failed", "GET", 200, Duration::from_millis(3));
        m.request("/api/v1/jobs/failed", "GET", 200, Duration::from_millis(30));
        m.retry_outcome("retried", false);
        m.evaluation("sha256:ab\"c", "ok", Duration::from_micros(10));
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains(
            "retryguard_http_requests_total{route=\"/api/v1/jobs/failed\",method=\"GET\",status=\"200\"} 2"
        ));
        assert!(out.contains(
            "retryguard_http_request_duration_seconds_bucket{route=\"/api/v1/jobs/failed\",method=\"GET\",le=\"0.005\"} 1"
        ));
        assert!(out.contains(
            "retryguard_http_request_duration_seconds_bucket{route=\"/api/v1/jobs/failed\",method=\"GET\",le=\"+Inf\"} 2"
        ));
        assert!(
            out.contains(
                "retryguard_retry_outcomes_total{outcome=\"retried\",dry_run=\"false\"} 1"
            )
        );
        assert!(out.contains("policy=\"sha256:ab\\\"c\""));
        assert!(out.contains("# TYPE retryguard_redis_errors_total counter"));
    }
}

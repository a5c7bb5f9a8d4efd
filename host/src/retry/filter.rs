//! Which failed jobs a listing or a retry-all covers.

use serde::{Deserialize, Serialize};

/// Filters over failed jobs; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobFilter {
    /// Only this queue.
    pub queue: Option<String>,
    /// Job type glob: `*` matches any run of characters (`payments.*`, `*.charge_card`).
    pub job_type: Option<String>,
    /// Only this failure type (as classified by the bound policy).
    pub failure_type: Option<String>,
    /// Only retryable (or only non-retryable) failures.
    pub retryable: Option<bool>,
    /// Only jobs that failed at or after / before this time (epoch ms).
    pub failed_after_ms: Option<u64>,
    pub failed_before_ms: Option<u64>,
    /// At most this many matching jobs.
    pub limit: Option<u64>,
    /// Only jobs of this failure group (its fingerprint, `crate::fingerprint`): the group's
    /// jobs are read from the failure index, and each is checked to still carry the
    /// fingerprint.
    pub group: Option<String>,
    /// Only jobs whose text holds this, case-insensitively: job type, exception type, raw
    /// message, or the group's parameterized message and top frame.
    pub q: Option<String>,
    /// Only jobs whose binding has `auto_retry` (the sweeper's; never from a request).
    #[serde(skip)]
    pub auto_retry_only: bool,
}

impl JobFilter {
    /// Whether the job-level fields match (those known before classification).
    pub fn matches_job(&self, queue: &str, job_type: &str, failed_at_ms: Option<u64>) -> bool {
        if self.queue.as_deref().is_some_and(|q| q != queue) {
            return false;
        }
        if self
            .job_type
            .as_deref()
            .is_some_and(|g| !glob_match(g, job_type))
        {
            return false;
        }
        let at = failed_at_ms.unwrap_or(0);
        if self.failed_after_ms.is_some_and(|after| at < after) {
            return false;
        }
        if self.failed_before_ms.is_some_and(|before| at >= before) {
            return false;
        }
        true
    }

    /// Whether the failure's own fields match (`group`, `q`): these need the traceback.
    pub fn matches_failure(
        &self,
        job_type: &str,
        exc_type: &str,
        exc_message: &str,
        traceback: &str,
    ) -> bool {
        if self.group.is_none() && self.q.is_none() {
            return true;
        }
        let needle = self.q.as_ref().map(|q| q.to_lowercase());
        let raw_match = needle.as_ref().is_none_or(|n| {
            [job_type, exc_type, exc_message]
                .iter()
                .any(|h| h.to_lowercase().contains(n.as_str()))
        });
        if raw_match && self.group.is_none() {
            return true;
        }
        let fp = crate::fingerprint::fingerprint(job_type, traceback);
        if self.group.as_ref().is_some_and(|g| *g != fp.id) {
            return false;
        }
        raw_match
            || needle.is_some_and(|n| {
                [&fp.message, &fp.top_frame]
                    .iter()
                    .any(|h| h.to_lowercase().contains(n.as_str()))
            })
    }

    /// Whether the classification-level fields match.
    pub fn matches_classification(&self, failure_type: &str, retryable: bool) -> bool {
        self.failure_type
            .as_deref()
            .is_none_or(|t| t == failure_type)
            && self.retryable.is_none_or(|r| r == retryable)
    }

    /// Whether any field needs the classification.
    pub fn needs_classification(&self) -> bool {
        self.failure_type.is_some() || self.retryable.is_some()
    }
}

/// `*` matches any run of characters (including none); everything else literally.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return pattern == text;
    };
    if parts.len() == 1 {
        return pattern == text;
    }
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("payments.*", "payments.charge"));
        assert!(glob_match("*", ""));
        assert!(glob_match("*.charge_card", "app.tasks.charge_card"));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(!glob_match("payments.*", "payment.charge"));
        assert!(!glob_match("a*bc", "abc_x"));
        assert!(!glob_match("ab*ba", "aba"));
    }

    #[test]
    fn filters() {
        let f = JobFilter {
            queue: Some("q".into()),
            job_type: Some("app.*".into()),
            failed_after_ms: Some(10),
            failed_before_ms: Some(20),
            ..JobFilter::default()
        };
        assert!(f.matches_job("q", "app.x", Some(10)));
        assert!(!f.matches_job("q", "app.x", Some(20)));
        assert!(!f.matches_job("r", "app.x", Some(15)));
        assert!(!f.matches_job("q", "lib.x", Some(15)));
        let c = JobFilter {
            failure_type: Some("timeout".into()),
            retryable: Some(true),
            ..JobFilter::default()
        };
        assert!(c.needs_classification());
        assert!(c.matches_classification("timeout", true));
        assert!(!c.matches_classification("timeout", false));
    }
}

//! RQ 2.x's key names, in one place.

/// RQ 2.x's fixed key layout (prefix `rq:`).
#[derive(Debug, Clone, Copy)]
pub struct RqKeys;

impl RqKeys {
    /// The set of queue keys (`rq:queue:<name>`).
    pub const QUEUES: &'static str = "rq:queues";
    /// Matches every failed registry.
    pub const FAILED_PATTERN: &'static str = "rq:failed:*";

    pub fn queue(name: &str) -> String {
        format!("rq:queue:{name}")
    }
    pub fn failed(queue: &str) -> String {
        Self::registry("failed", queue)
    }
    /// `rq:<registry>:<queue>`: `failed`, `finished`, `wip` (started), `deferred`, `scheduled`.
    pub fn registry(registry: &str, queue: &str) -> String {
        format!("rq:{registry}:{queue}")
    }
    pub fn job(id: &str) -> String {
        format!("rq:job:{id}")
    }
    pub fn results(id: &str) -> String {
        format!("rq:results:{id}")
    }
    pub fn dependents(id: &str) -> String {
        format!("rq:job:{id}:dependents")
    }
    /// The job's execution registry (RQ 2.x): a ZSET of execution ids.
    pub fn executions(id: &str) -> String {
        format!("rq:executions:{id}")
    }
    /// `default` of `rq:queue:default`.
    pub fn queue_name(key: &str) -> Option<String> {
        key.strip_prefix("rq:queue:").map(str::to_string)
    }
    /// `default` of `rq:failed:default`.
    pub fn failed_queue_name(key: &str) -> Option<String> {
        key.strip_prefix("rq:failed:").map(str::to_string)
    }
}

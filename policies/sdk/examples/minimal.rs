// A minimal retry policy: connection errors are retried three times, a minute after each
// failure; anything else is held for a person.
use retryguard_policy_sdk::{
    Classification, ClassificationView, Decision, FailureView, HoldKind, Policy, PolicyInfo,
    export_policy,
};

pub struct NetworkOnly;

impl Policy for NetworkOnly {
    type Params = (); // no params

    fn describe() -> PolicyInfo {
        PolicyInfo {
            name: "network-only",
            version: "0.1.0",
            description: "Retries connection errors three times, a minute apart.",
            params: &[],
        }
    }

    fn parse_params(params: &[(String, String)]) -> Result<(), String> {
        match params.first() {
            Some((key, _)) => Err(format!("unknown param `{key}`")),
            None => Ok(()),
        }
    }

    fn classify(f: &FailureView<'_>, _params: &[(String, String)]) -> Classification {
        let reason = format!("exception type {:?}", f.exc_type);
        if f.exc_type.ends_with("ConnectionError") {
            Classification::new("network_error", true, reason)
        } else {
            Classification::new("unknown", false, reason)
        }
    }

    fn decide(f: &FailureView<'_>, c: &ClassificationView<'_>, _: &(), _now: u64) -> Decision {
        match (c.failure_type, f.attempts) {
            ("network_error", 0..3) => Decision::RetryAt(f.failed_at_ms.saturating_add(60_000)),
            ("network_error", _) => Decision::hold(HoldKind::MaxAttempts, "3 retries".into()),
            (other, _) => Decision::hold(HoldKind::UnknownFailure, format!("{other}: held")),
        }
    }
}

export_policy!(NetworkOnly);

//! The default policy as the SDK's [`Policy`]: its description, its strict params, its
//! classification and decision. On `wasm32` with the feature `component` (on by default),
//! [`export_policy!`](retryguard_policy_sdk::export_policy) makes it the `retry-policy`
//! component's exports; the SDK does the rest (the contract's types, bounded reasons, the hold
//! for invalid params, and not freeing the arguments of a throw-away instance, which suits the
//! bump allocator of `alloc.rs`).

use crate::{Classification, Decision, FailureView, Params, PolicyInfo};
use retryguard_policy_sdk::{ClassificationView, Policy};

/// The default policy, as a [`Policy`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultPolicy;

impl Policy for DefaultPolicy {
    type Params = Params;

    fn describe() -> PolicyInfo {
        crate::describe()
    }

    fn parse_params(params: &[(String, String)]) -> Result<Params, String> {
        Params::parse(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    fn classify(failure: &FailureView<'_>, _params: &[(String, String)]) -> Classification {
        // The default policy's classification takes no params; they are validated when the
        // binding is written and used by `decide`.
        crate::classify(failure)
    }

    fn decide(
        failure: &FailureView<'_>,
        classification: &ClassificationView<'_>,
        params: &Params,
        now_ms: u64,
    ) -> Decision {
        crate::decide(
            failure,
            classification.failure_type,
            classification.retryable,
            params,
            now_ms,
        )
    }
}

#[cfg(feature = "component")]
retryguard_policy_sdk::export_policy!(DefaultPolicy);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HoldKind;
    use retryguard_policy_sdk::exports;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// What the component's exports answer, through the SDK: the same as the native functions,
    /// and the default policy's own words for invalid params.
    #[test]
    fn exports_answer_as_the_native_functions() {
        let f = FailureView {
            job_status: "failed",
            exc_type: "ConnectionRefusedError",
            failed_at_ms: 1_000,
            attempts: 1,
            ..FailureView::default()
        };
        let c = exports::classify::<DefaultPolicy>(&f, &[]);
        assert_eq!(c, crate::classify(&f));
        let d = exports::decide::<DefaultPolicy>(&f, &c.view(), &params(&[]), 0);
        assert_eq!(
            d,
            crate::decide(&f, c.failure_type, c.retryable, &Params::default(), 0)
        );
        assert_eq!(d, Decision::RetryAt(121_000));
        assert_eq!(
            exports::validate_params::<DefaultPolicy>(&params(&[("max_attempts", "5")])),
            Ok(())
        );
        let bad = params(&[("max_attempt", "5")]);
        let error = exports::validate_params::<DefaultPolicy>(&bad).unwrap_err();
        assert!(error.starts_with("unknown param `max_attempt`"), "{error}");
        assert_eq!(
            exports::decide::<DefaultPolicy>(&f, &c.view(), &bad, 0),
            Decision::Hold {
                kind: HoldKind::PolicySaysNo,
                reason: format!("invalid params for the default policy: {error}"),
            }
        );
    }
}

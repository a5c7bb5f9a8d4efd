//! The payments policy as the SDK's [`Policy`]; on `wasm32`,
//! [`export_policy!`](retryguard_policy_sdk::export_policy) makes it the `retry-policy`
//! component's exports (the SDK converts the contract's types, bounds the reasons and holds on
//! invalid params).

use crate::{Classification, Decision, FailureView, Params, PolicyInfo};
use retryguard_policy_sdk::{ClassificationView, Policy};

/// The payments policy, as a [`Policy`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PaymentsPolicy;

impl Policy for PaymentsPolicy {
    type Params = Params;

    fn describe() -> PolicyInfo {
        crate::describe()
    }

    fn parse_params(params: &[(String, String)]) -> Result<Params, String> {
        Params::parse(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    fn classify(failure: &FailureView<'_>, _params: &[(String, String)]) -> Classification {
        // Classification takes no params; they are validated when the binding is written
        // and used by `decide`.
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

retryguard_policy_sdk::export_policy!(PaymentsPolicy);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HoldKind;
    use retryguard_policy_sdk::exports;

    /// What the component's exports answer, through the SDK: the same as the native functions,
    /// and the payments policy's own words for invalid params.
    #[test]
    fn exports_answer_as_the_native_functions() {
        let f = FailureView {
            job_status: "failed",
            exc_type: "TooManyRequests",
            failed_at_ms: 1_000,
            seed: 7,
            ..FailureView::default()
        };
        let c = exports::classify::<PaymentsPolicy>(&f, &[]);
        assert_eq!(c, crate::classify(&f));
        assert!(!c.retryable);
        let d = exports::decide::<PaymentsPolicy>(&f, &c.view(), &[], 0);
        assert_eq!(
            d,
            crate::decide(&f, c.failure_type, c.retryable, &Params::default(), 0)
        );
        let bad = [("exponential_backoff".to_owned(), "true".to_owned())];
        let error = exports::validate_params::<PaymentsPolicy>(&bad).unwrap_err();
        assert!(
            error.starts_with("unknown param `exponential_backoff`"),
            "{error}"
        );
        assert_eq!(
            exports::decide::<PaymentsPolicy>(&f, &c.view(), &bad, 0),
            Decision::Hold {
                kind: HoldKind::PolicySaysNo,
                reason: format!("invalid params for the payments policy: {error}"),
            }
        );
    }
}

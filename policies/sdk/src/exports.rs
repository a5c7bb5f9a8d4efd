//! The component's exports as native functions: what `validate-params`, `classify` and
//! `decide` answer for a [`Policy`], before the conversion to the contract's types.
//! [`export_policy!`](crate::export_policy) calls exactly these on `wasm32`; a policy's native
//! tests can call them to check what the host will see (bounded reasons, the hold for invalid
//! params).

use crate::{
    Classification, ClassificationView, Decision, FailureView, HoldKind, Policy, bound_reason,
};

/// `validate-params`: [`Policy::parse_params`]'s verdict, its error cut to
/// [`MAX_REASON_BYTES`](crate::MAX_REASON_BYTES).
pub fn validate_params<P: Policy>(params: &[(String, String)]) -> Result<(), String> {
    P::parse_params(params).map(|_| ()).map_err(bound_reason)
}

/// `classify`: [`Policy::classify`], its reason cut to
/// [`MAX_REASON_BYTES`](crate::MAX_REASON_BYTES).
pub fn classify<P: Policy>(
    failure: &FailureView<'_>,
    params: &[(String, String)],
) -> Classification {
    let c = P::classify(failure, params);
    Classification {
        reason: bound_reason(c.reason),
        ..c
    }
}

/// `decide`: parses the params, then [`Policy::decide`], its reason cut to
/// [`MAX_REASON_BYTES`](crate::MAX_REASON_BYTES). Params the policy refuses (a binding
/// written before a stricter version of the policy, say) are a hold, [`HoldKind::PolicySaysNo`],
/// "invalid params for the NAME policy: ERROR", NAME being [`Policy::describe`]'s.
pub fn decide<P: Policy>(
    failure: &FailureView<'_>,
    classification: &ClassificationView<'_>,
    params: &[(String, String)],
    now_ms: u64,
) -> Decision {
    let p = match P::parse_params(params) {
        Ok(p) => p,
        Err(e) => {
            return Decision::hold(
                HoldKind::PolicySaysNo,
                format!("invalid params for the {} policy: {e}", P::describe().name),
            );
        }
    };
    match P::decide(failure, classification, &p, now_ms) {
        Decision::Hold { kind, reason } => Decision::hold(kind, reason),
        retry => retry,
    }
}

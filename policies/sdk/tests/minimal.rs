//! The minimal policy of the crate docs (`examples/minimal.rs`) through the exports' native
//! code paths, and the copy of it in `docs/policies.md`, which must not drift from it.

#[path = "../examples/minimal.rs"]
mod minimal;

use minimal::NetworkOnly;
use retryguard_policy_sdk::{Decision, FailureView, HoldKind, exports};

fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn minimal_policy_through_the_exports() {
    let f = FailureView {
        exc_type: "requests.exceptions.ConnectionError",
        failed_at_ms: 1_000,
        ..FailureView::default()
    };
    let c = exports::classify::<NetworkOnly>(&f, &[]);
    assert_eq!((c.failure_type, c.retryable), ("network_error", true));
    assert_eq!(
        exports::decide::<NetworkOnly>(&f, &c.view(), &[], 0),
        Decision::RetryAt(61_000)
    );
    let third = FailureView { attempts: 3, ..f };
    assert_eq!(
        exports::decide::<NetworkOnly>(&third, &c.view(), &[], 0),
        Decision::hold(HoldKind::MaxAttempts, "3 retries".to_owned())
    );
    let other = FailureView {
        exc_type: "ValueError",
        ..f
    };
    let c = exports::classify::<NetworkOnly>(&other, &[]);
    assert_eq!((c.failure_type, c.retryable), ("unknown", false));
    assert_eq!(
        exports::decide::<NetworkOnly>(&other, &c.view(), &[], 0),
        Decision::hold(HoldKind::UnknownFailure, "unknown: held".to_owned())
    );

    // Params: refused by `validate-params`, and a hold naming the policy in `decide`.
    let bad = pairs(&[("max_attempts", "3")]);
    assert_eq!(exports::validate_params::<NetworkOnly>(&pairs(&[])), Ok(()));
    assert_eq!(
        exports::validate_params::<NetworkOnly>(&bad),
        Err("unknown param `max_attempts`".to_owned())
    );
    assert_eq!(
        exports::decide::<NetworkOnly>(&f, &c.view(), &bad, 0),
        Decision::hold(
            HoldKind::PolicySaysNo,
            "invalid params for the network-only policy: unknown param `max_attempts`".to_owned()
        )
    );
}

#[test]
fn reasons_are_bounded_by_the_exports() {
    let long = format!("{}ConnectionError", "é".repeat(2_000));
    let f = FailureView {
        exc_type: &long,
        ..FailureView::default()
    };
    let c = exports::classify::<NetworkOnly>(&f, &[]);
    assert!(c.reason.len() <= retryguard_policy_sdk::MAX_REASON_BYTES);
    let bad = pairs(&[(long.as_str(), "1")]);
    let error = exports::validate_params::<NetworkOnly>(&bad).unwrap_err();
    assert!(error.len() <= retryguard_policy_sdk::MAX_REASON_BYTES);
}

/// `docs/policies.md` shows the same code, in the block after its "Writing a policy in Rust
/// with the SDK" heading.
#[test]
fn the_docs_show_the_example() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let docs = std::fs::read_to_string(root.join("../../docs/policies.md")).unwrap();
    let example = std::fs::read_to_string(root.join("examples/minimal.rs")).unwrap();
    let section = docs
        .split_once("## Writing a policy in Rust with the SDK")
        .map(|(_, rest)| rest)
        .expect("the section");
    let block = section
        .split_once("```rust\n")
        .and_then(|(_, rest)| rest.split_once("```\n"))
        .map(|(code, _)| code)
        .expect("a rust block");
    assert_eq!(
        block, example,
        "docs/policies.md's example differs from examples/minimal.rs"
    );
}

//! The built-in default policy, built from `policies/default` by `build.rs`, and the
//! sample failures every policy must evaluate without error before it is accepted.

use super::types::FailureInput;

/// The default policy component's bytes.
pub static DEFAULT_POLICY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/default_policy.wasm"));

/// Sample failures for the smoke evaluation at load time: a retryable one, a
/// non-retryable one, and a failure without a Python exception.
pub fn smoke_failures() -> [(&'static str, FailureInput); 3] {
    let base = FailureInput {
        job_id: "smoke-test".into(),
        job_type: "app.tasks.smoke".into(),
        queue: "default".into(),
        job_status: "failed".into(),
        failed_at_ms: 1_764_417_600_000,
        first_failed_at_ms: 1_764_417_600_000,
        seed: 42,
        ..FailureInput::default()
    };
    [
        (
            "network error sample",
            FailureInput {
                exc_type: "ConnectionRefusedError".into(),
                exc_message: "[Errno 111] Connection refused".into(),
                traceback: "Traceback (most recent call last):\n  File \"/app/tasks.py\", line 9, in smoke\n    sock.connect(addr)\nConnectionRefusedError: [Errno 111] Connection refused\n".into(),
                ..base.clone()
            },
        ),
        (
            "validation error sample",
            FailureInput {
                exc_type: "ValueError".into(),
                exc_message: "amount must be positive".into(),
                traceback: "Traceback (most recent call last):\n  File \"/app/tasks.py\", line 3, in smoke\n    raise ValueError(\"amount must be positive\")\nValueError: amount must be positive\n".into(),
                attempts: 1,
                last_attempt_at_ms: Some(1_764_417_660_000),
                ..base.clone()
            },
        ),
        (
            "killed work-horse sample",
            FailureInput {
                traceback: "Work-horse terminated unexpectedly; waitpid returned 9 (signal 9); ".into(),
                ..base
            },
        ),
    ]
}

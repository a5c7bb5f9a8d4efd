//! Deterministic pseudo-random inputs built from traceback fragments: nothing may panic, and
//! every reason stays within the contract's 1 KiB. (Real fuzzing comes later; this catches
//! the easy mistakes on every `cargo test`.)

use retryguard_policy_default::traceback::parse_outermost;
use retryguard_policy_default::{FailureView, Params, classify, decide};

const FRAGMENTS: &[&str] = &[
    "Traceback (most recent call last):",
    "  + Exception Group Traceback (most recent call last):",
    "  | ",
    "  +-+---------------- 1 ----------------",
    "    | ",
    "  File \"x.py\", line 1, in f",
    "    ^^^^",
    "\n",
    "\r\n",
    "\n\n",
    ": ",
    ":",
    ".",
    " ",
    "ValueError",
    "requests.exceptions.HTTPError",
    "ConnectionError",
    "429",
    " 503 ",
    "Client Error",
    "status_code=",
    "connection refused",
    "permission denied",
    "The above exception was the direct cause of the following exception:",
    "During handling of the above exception, another exception occurred:",
    "Work-horse terminated unexpectedly",
    "é",
    "\u{1F600}",
    "\u{0}",
    "<locals>",
];

/// xorshift64*: a tiny deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }
}

#[test]
fn random_fragment_soup_never_panics() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let params = Params::default();
    for _ in 0..20_000 {
        let mut text = String::new();
        for _ in 0..rng.below(24) {
            text.push_str(FRAGMENTS[rng.below(FRAGMENTS.len())]);
        }
        let parsed = parse_outermost(&text);
        let (exc_type, message) = parsed
            .as_ref()
            .map_or(("", ""), |p| (p.exc_type, p.message.as_str()));
        for view in [
            FailureView {
                job_status: "failed",
                traceback: &text,
                ..FailureView::default()
            },
            FailureView {
                job_status: "failed",
                exc_type,
                exc_message: message,
                traceback: &text,
                ..FailureView::default()
            },
            FailureView {
                job_status: "failed",
                exc_type: &text,
                exc_message: &text,
                attempts: u32::try_from(rng.below(10)).unwrap_or(0),
                failed_at_ms: rng.next(),
                ..FailureView::default()
            },
        ] {
            let c = classify(&view);
            assert!(!c.reason.is_empty() && c.reason.len() <= 1024);
            let _ = decide(&view, c.failure_type, c.retryable, &params, rng.next());
        }
    }
}

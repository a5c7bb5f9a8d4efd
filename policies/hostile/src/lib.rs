//! A policy that misbehaves on purpose for chosen job types (see README.md): the fixture
//! behind the host's sandbox tests. Not shipped, only embedded in tests.
#[cfg(target_arch = "wasm32")]
mod component {
    use core::hint::black_box;

    wit_bindgen::generate!({ path: "../../wit", world: "retry-policy" });

    struct Hostile;

    impl Guest for Hostile {
        fn describe() -> PolicyInfo {
            PolicyInfo {
                name: "hostile".into(),
                version: "0.0.0".into(),
                description: "test fixture that misbehaves on purpose".into(),
                params: Vec::new(),
            }
        }

        fn validate_params(_params: Params) -> Result<(), String> {
            Ok(())
        }

        fn classify(failure: Failure, _params: Params) -> Classification {
            let mut failure_type = "temporary_error".to_string();
            let mut reason = String::new();
            match failure.job_type.as_str() {
                "hostile.loop" => loop {
                    black_box(&failure);
                },
                "hostile.alloc" => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(black_box(vec![1u8; 1 << 20]));
                    }
                }
                "hostile.recurse" => {
                    reason = recurse(black_box(1)).to_string();
                }
                "hostile.trap" => core::arch::wasm32::unreachable(),
                "hostile.bad-type" => failure_type = "Not Valid!".into(),
                "hostile.huge-reason" => reason = "x".repeat(64 * 1024),
                _ => {}
            }
            Classification {
                failure_type,
                retryable: true,
                reason,
            }
        }

        fn decide(_f: Failure, _c: Classification, _p: Params, now_ms: u64) -> Decision {
            Decision::RetryAtMs(now_ms)
        }
    }

    #[inline(never)]
    #[allow(
        unconditional_recursion,
        reason = "the fixture recurses until the sandbox stops it"
    )]
    fn recurse(depth: u64) -> u64 {
        let frame = black_box([depth; 16]);
        recurse(frame[3] + 1) + frame[7]
    }

    export!(Hostile);
}

//! A policy built for wasm32-wasip2 that pokes at everything WASI might let it reach and
//! reports what it saw (see README.md): the fixture behind the host's deny-all WASI tests.
//! Not shipped, only embedded in tests.
#[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
mod component {
    use std::collections::hash_map::RandomState;
    use std::fmt::Write as _;
    use std::hash::BuildHasher as _;
    use std::io::{self, Write as _};
    use std::time::{Duration, Instant, SystemTime};

    wit_bindgen::generate!({ path: "../../wit", world: "retry-policy" });

    struct Probe;

    impl Guest for Probe {
        fn describe() -> PolicyInfo {
            PolicyInfo {
                name: "wasi-probe".into(),
                version: "0.0.0".into(),
                description: "test fixture that reports what WASI lets it see".into(),
                params: Vec::new(),
            }
        }

        fn validate_params(_params: Params) -> Result<(), String> {
            Ok(())
        }

        fn classify(failure: Failure, _params: Params) -> Classification {
            if failure.job_type == "probe.exit" {
                std::process::exit(3);
            }
            Classification {
                failure_type: "temporary_error".into(),
                retryable: true,
                reason: report(),
            }
        }

        fn decide(_f: Failure, _c: Classification, _p: Params, now_ms: u64) -> Decision {
            Decision::RetryAtMs(now_ms)
        }
    }

    /// `key=value` pairs separated by spaces; no value contains a space.
    fn report() -> String {
        let mut out = String::new();
        let mut put = |key: &str, value: String| {
            let _ = write!(
                out,
                "{}{key}={value}",
                if out.is_empty() { "" } else { " " }
            );
        };

        let wall_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or_else(
                |_| "before-epoch".to_string(),
                |d| d.as_millis().to_string(),
            );
        put("wall_ms", wall_ms);
        put("env", std::env::vars().count().to_string());
        put("args", std::env::args().count().to_string());
        put("fs_root", outcome(std::fs::read_dir("/")));
        put("passwd", outcome(std::fs::File::open("/etc/passwd")));
        put(
            "tcp",
            outcome(std::net::TcpStream::connect("127.0.0.1:6379")),
        );
        put(
            "stdout",
            outcome(writeln!(io::stdout(), "probe: stdout").and_then(|()| io::stdout().flush())),
        );
        put(
            "stderr",
            outcome(writeln!(io::stderr(), "probe: stderr").and_then(|()| io::stderr().flush())),
        );
        // Would trap (a panic) if writing failed.
        println!("probe: println");
        eprintln!("probe: eprintln");

        // std seeds its hash keys from wasi:random/insecure-seed; getrandom reads
        // wasi:random/random.
        put(
            "hash",
            format!("{:016x}", RandomState::new().hash_one(42u64)),
        );
        let mut bytes = [0u8; 16];
        put(
            "random",
            match getrandom::fill(&mut bytes) {
                Ok(()) => bytes.iter().fold(String::new(), |mut hex, b| {
                    let _ = write!(hex, "{b:02x}");
                    hex
                }),
                Err(e) => format!("err:{}", e.raw_os_error().unwrap_or_default()),
            },
        );

        // An hour's sleep: must cost the host nothing, yet be seen to pass.
        let start = Instant::now();
        std::thread::sleep(Duration::from_secs(3600));
        put("slept_ms", start.elapsed().as_millis().to_string());
        out
    }

    fn outcome<T>(result: io::Result<T>) -> String {
        match result {
            Ok(_) => "ok".into(),
            Err(e) => format!("err:{:?}", e.kind()),
        }
    }

    export!(Probe);
}

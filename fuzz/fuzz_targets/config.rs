//! The service configuration: a TOML file's text and `RETRYGUARD_*` environment variables,
//! through `Config::from_parts` (which validates).
//!
//! Asserts: no panic; an accepted configuration passes `validate()` again, has a listen
//! address, valid sandbox limits, a request timeout above the retry-all wait, and writes
//! back to TOML that reads as the same configuration.
//!
//! Input: the file's text (none when empty; the corpus holds real config files), then
//! optionally a `0xFF` byte (never in UTF-8) and the variables, read with `arbitrary`.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use retryguard::config::{Config, KEYS, env_var};
use retryguard::policy::EngineConfig;

#[derive(Debug, Arbitrary)]
enum Var<'a> {
    /// One of the documented keys' variables.
    Key(u8),
    Listen,
    AuditStore,
    /// `RETRYGUARD_` + anything.
    Other(&'a str),
}

fuzz_target!(|data: &[u8]| {
    let (text, rest) = match data.iter().rposition(|&b| b == 0xff) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let text = String::from_utf8_lossy(text);
    let text = Some(text.as_ref()).filter(|t| !t.is_empty());
    let vars: Vec<(Var<'_>, &str)> =
        Vec::arbitrary_take_rest(Unstructured::new(rest)).unwrap_or_default();
    let env: Vec<(String, String)> = vars
        .iter()
        .map(|(var, value)| {
            let name = match var {
                Var::Key(i) => {
                    let (section, key, _) = KEYS[usize::from(*i) % KEYS.len()];
                    env_var(section, key)
                }
                Var::Listen => "RETRYGUARD_LISTEN".to_string(),
                Var::AuditStore => "RETRYGUARD_AUDIT_DIR".to_string(),
                Var::Other(s) => format!("RETRYGUARD_{s}"),
            };
            (name, (*value).to_string())
        })
        .collect();
    let Ok(config) = Config::from_parts(None, text, env) else {
        return;
    };
    assert!(config.validate().is_ok());
    assert!(config.listen_addr().is_ok());
    assert!(
        config
            .policy_limits()
            .validate(&EngineConfig::default())
            .is_ok()
    );
    assert!(config.server.retry_all_wait_seconds < config.server.request_timeout_seconds);
    // What was accepted can be written down and read back as the same configuration.
    let text = toml::to_string(&config).expect("a validated config serializes");
    let reread = Config::from_parts(None, Some(&text), Vec::new());
    assert_eq!(reread.ok().as_ref(), Some(&config), "{text}");
});

//! A policy named on the command line by its full digest, a unique digest prefix of at least
//! 8 hex characters, or its name: resolved to the full digest from the server's listing
//! (`GET /api/v1/policies`).

use std::process::ExitCode;

use serde_json::Value;

use crate::cli::jobs::{Client, Reported};

/// Shortest digest prefix accepted.
pub(super) const MIN_PREFIX: usize = 8;

/// Why a registry command failed, already said on stderr.
#[derive(Debug)]
pub(super) enum Failed {
    /// Exit 1: the server refused or could not be reached, or no policy matches.
    Reported,
    /// Exit 2: bad usage, e.g. an ambiguous name or prefix.
    Usage,
}

impl From<Reported> for Failed {
    fn from(_: Reported) -> Self {
        Self::Reported
    }
}

impl Failed {
    pub(super) fn exit_code(&self) -> ExitCode {
        match self {
            Self::Reported => ExitCode::FAILURE,
            Self::Usage => ExitCode::from(2),
        }
    }
}

/// Whether `s` is a full sha256 digest: 64 hex digits.
fn is_full_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The full digest `given` names (see the module's doc); `flag` names it in errors. A full
/// digest is returned unchanged without asking the server.
pub(super) fn digest(client: &Client, given: &str, flag: &str) -> Result<String, Failed> {
    if is_full_digest(given) {
        return Ok(given.to_string());
    }
    let (_, json) = client.call("GET", "/api/v1/policies")?;
    let policies = json["policies"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    match choose(policies, given) {
        Choice::One(digest) => Ok(digest),
        Choice::TooShort => {
            eprintln!(
                "error: {flag} {given:?}: no policy has this name, and a digest prefix needs at \
                 least {MIN_PREFIX} hex characters (`retryguard policy list`)"
            );
            Err(Failed::Usage)
        }
        Choice::None => {
            eprintln!(
                "error: {flag} {given:?}: no policy has this name or a digest starting so \
                 (`retryguard policy list`)"
            );
            Err(Failed::Reported)
        }
        Choice::Ambiguous(candidates) => {
            eprintln!(
                "error: {flag} {given:?} is ambiguous: {} policies match",
                candidates.len()
            );
            for line in candidate_lines(&candidates) {
                eprintln!("  {line}");
            }
            eprintln!(
                "  name one by more of its digest (at least {MIN_PREFIX} hex characters) or \
                 all of it"
            );
            Err(Failed::Usage)
        }
    }
}

/// What a name or prefix matches.
#[derive(Debug, PartialEq)]
enum Choice<'a> {
    One(String),
    None,
    /// Not a name, and hex but too short for a prefix.
    TooShort,
    Ambiguous(Vec<&'a Value>),
}

/// The policies `given` names: those named so, and those whose digest starts with it (when it
/// is at least [`MIN_PREFIX`] hex characters). A retired policy is chosen only when no live
/// one matches.
fn choose<'a>(policies: &'a [Value], given: &str) -> Choice<'a> {
    let lower = given.to_ascii_lowercase();
    let hex = !lower.is_empty() && lower.bytes().all(|b| b.is_ascii_hexdigit());
    let prefix = hex && lower.len() >= MIN_PREFIX;
    let matches: Vec<&Value> = policies
        .iter()
        .filter(|p| {
            p["name"].as_str() == Some(given)
                || (prefix
                    && p["digest"]
                        .as_str()
                        .is_some_and(|d| d.to_ascii_lowercase().starts_with(&lower)))
        })
        .collect();
    let live: Vec<&Value> = matches
        .iter()
        .copied()
        .filter(|p| p["retired"] != true)
        .collect();
    let chosen = if live.is_empty() { matches } else { live };
    match chosen.as_slice() {
        [one] => Choice::One(one["digest"].as_str().unwrap_or_default().to_string()),
        [] if hex && !prefix => Choice::TooShort,
        [] => Choice::None,
        _ => Choice::Ambiguous(chosen),
    }
}

/// One line per candidate: name, short digest, when uploaded (and whether retired).
fn candidate_lines(candidates: &[&Value]) -> Vec<String> {
    let rows: Vec<(String, String, String)> = candidates
        .iter()
        .map(|p| {
            let digest = p["digest"].as_str().unwrap_or("-");
            let uploaded = p["uploaded_at_ms"]
                .as_u64()
                .map_or_else(|| "-".to_string(), crate::clock::format_rfc3339);
            let retired = if p["retired"] == true {
                "  (retired)"
            } else {
                ""
            };
            (
                p["name"].as_str().unwrap_or("-").to_string(),
                digest.get(..12).unwrap_or(digest).to_string(),
                format!("uploaded {uploaded}{retired}"),
            )
        })
        .collect();
    let w = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    rows.into_iter()
        .map(|(name, digest, uploaded)| format!("{name:<w$}  {digest}  {uploaded}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policies() -> Vec<Value> {
        vec![
            json!({"digest": "aaaa1111".repeat(8), "name": "default", "uploaded_at_ms": 0}),
            json!({"digest": "aaaa1112".repeat(8), "name": "payments", "uploaded_at_ms": 1000,
                   "retired": true}),
            json!({"digest": "bbbb2222".repeat(8), "name": "payments", "uploaded_at_ms": 2000}),
            json!({"digest": "cccc3333".repeat(8), "name": "twin", "uploaded_at_ms": 3000}),
            json!({"digest": "dddd4444".repeat(8), "name": "twin", "uploaded_at_ms": 4000}),
            json!({"digest": format!("eeee5555{}", "0".repeat(56)), "name": "e0"}),
            json!({"digest": format!("eeee5555{}", "1".repeat(56)), "name": "e1"}),
        ]
    }

    #[test]
    fn names_and_prefixes_resolve_when_unique() {
        let p = policies();
        assert_eq!(choose(&p, "default"), Choice::One("aaaa1111".repeat(8)));
        // A retired policy of the same name gives way to the live one...
        assert_eq!(choose(&p, "payments"), Choice::One("bbbb2222".repeat(8)));
        assert_eq!(choose(&p, "BBBB2222"), Choice::One("bbbb2222".repeat(8)));
        // ... but is chosen when it alone matches.
        assert_eq!(choose(&p, "aaaa1112"), Choice::One("aaaa1112".repeat(8)));
        assert_eq!(choose(&p, "aaaa"), Choice::TooShort);
        assert_eq!(choose(&p, "nothing"), Choice::None);
        assert_eq!(choose(&p, "ffff6666"), Choice::None);
        assert!(is_full_digest(&"ab".repeat(32)) && !is_full_digest(&"zz".repeat(32)));
    }

    #[test]
    fn ambiguity_lists_the_candidates() {
        let p = policies();
        let Choice::Ambiguous(c) = choose(&p, "twin") else {
            panic!("twin is ambiguous")
        };
        let lines = candidate_lines(&c);
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("twin  cccc3333cccc  uploaded 1970-01-01T00:00:03"),
            "{lines:?}"
        );
        // Two live policies share an 8-character prefix; one more character tells them apart.
        let Choice::Ambiguous(c) = choose(&p, "eeee5555") else {
            panic!("eeee5555 is ambiguous")
        };
        assert_eq!(c.len(), 2);
        assert_eq!(
            choose(&p, "eeee55551"),
            Choice::One(format!("eeee5555{}", "1".repeat(56)))
        );
    }
}

//! `retryguard policy experiments`: the shadow experiments of a running server
//! (`GET /api/v1/policies/experiments`): how often each binding's shadow policy agreed with
//! the acting one over the decisions in the audit trail, and how they differed.

use std::collections::BTreeMap;
use std::io::Write as _;

use serde_json::Value;

use crate::cli::jobs::{Client, Reported, table};

/// `name (abcd1234ef01)` for a digest, or the short digest alone when no policy has it.
fn label(names: &BTreeMap<String, String>, digest: &str) -> String {
    let short = digest.get(..12).unwrap_or(digest);
    match names.get(digest) {
        Some(name) if !name.is_empty() => format!("{name} ({short})"),
        _ => short.to_string(),
    }
}

fn count(v: &Value) -> String {
    v.as_u64()
        .map_or_else(|| "-".to_string(), |n| n.to_string())
}

pub(super) fn run(client: &Client, hours: Option<u64>) -> Result<(), Reported> {
    let query = hours.map(|h| format!("?hours={h}")).unwrap_or_default();
    let (_, json) = client.call("GET", &format!("/api/v1/policies/experiments{query}"))?;
    if client.json {
        client.print_json(&json);
        return Ok(());
    }
    // The policies' names, for people (the report names digests).
    let (_, policies) = client.call("GET", "/api/v1/policies")?;
    let names: BTreeMap<String, String> = policies["policies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p["digest"].as_str()?.to_string(),
                p["name"].as_str()?.to_string(),
            ))
        })
        .collect();
    print(&json, &names);
    Ok(())
}

fn print(json: &Value, names: &BTreeMap<String, String>) {
    let experiments = json["experiments"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut stdout = std::io::stdout();
    let since = crate::clock::format_rfc3339(json["since_ms"].as_u64().unwrap_or(0));
    let complete = if json["complete"] == false {
        " (stopped at 200,000 records: the oldest were not read)"
    } else {
        ""
    };
    if experiments.is_empty() {
        let _ = writeln!(
            stdout,
            "no shadow experiments: no binding has a shadow policy (`retryguard policy bind \
             PATTERN --policy P --shadow S`)"
        );
        let _ = writeln!(
            stdout,
            "{} audit records read since {since}{complete}",
            count(&json["examined"])
        );
        return;
    }
    let rows: Vec<Vec<String>> = experiments
        .iter()
        .map(|e| {
            let decisions = e["decisions"].as_u64().unwrap_or(0);
            let rate = if decisions == 0 {
                "-".to_string()
            } else {
                format!(
                    "{:.1}%",
                    e["agreement_rate"].as_f64().unwrap_or(0.0) * 100.0
                )
            };
            let differences: Vec<String> = e["disagreements"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
                .map(|(k, n)| format!("{k}={n}"))
                .collect();
            vec![
                e["pattern"].as_str().unwrap_or("-").to_string(),
                label(names, e["policy_digest"].as_str().unwrap_or("-")),
                label(names, e["shadow_digest"].as_str().unwrap_or("-")),
                decisions.to_string(),
                count(&e["agreed"]),
                rate,
                if differences.is_empty() {
                    "none".to_string()
                } else {
                    differences.join(" ")
                },
            ]
        })
        .collect();
    table(
        &[
            "PATTERN",
            "POLICY",
            "SHADOW",
            "DECISIONS",
            "AGREED",
            "RATE",
            "DISAGREEMENTS",
        ],
        &rows,
        &[32, 40, 40, 9, 9, 6],
    );
    let _ = writeln!(stdout);
    let _ = writeln!(
        stdout,
        "{} audit records read since {since}{complete}",
        count(&json["examined"])
    );
    let examples: Vec<Vec<String>> = experiments
        .iter()
        .flat_map(|e| {
            let pattern = e["pattern"].as_str().unwrap_or("-").to_string();
            e["examples"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |x| {
                    vec![
                        pattern.clone(),
                        x["job_id"].as_str().unwrap_or("-").to_string(),
                        x["job_type"].as_str().unwrap_or("-").to_string(),
                        x["active_outcome"].as_str().unwrap_or("-").to_string(),
                        x["shadow_outcome"].as_str().unwrap_or("-").to_string(),
                        x["kind"].as_str().unwrap_or("-").to_string(),
                    ]
                })
        })
        .collect();
    if !examples.is_empty() {
        let _ = writeln!(stdout);
        let _ = writeln!(stdout, "newest disagreements:");
        table(
            &["PATTERN", "JOB", "JOB TYPE", "POLICY", "SHADOW", "KIND"],
            &examples,
            &[32, 36, 32, 22, 22],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_labelled_with_their_names() {
        let digest = "ab".repeat(32);
        let names = BTreeMap::from([(digest.clone(), "payments".to_string())]);
        assert_eq!(label(&names, &digest), "payments (abababababab)");
        assert_eq!(label(&names, &"cd".repeat(32)), "cdcdcdcdcdcd");
    }
}

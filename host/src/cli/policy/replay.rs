//! The report of `retryguard policy replay`, for people.

use std::io::Write as _;

use serde_json::Value;

macro_rules! out {
    ($($arg:tt)*) => {
        let _ = writeln!(std::io::stdout(), $($arg)*);
    };
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("-")
}

/// A replay report for people: the current jobs, then the recorded decisions.
pub(super) fn print_replay(json: &Value) {
    out!("candidate {}", str_of(json, "candidate"));
    let current = &json["current"];
    if current.is_object() {
        out!(
            "current failed jobs: {} evaluated, {} agree{}",
            current["jobs"],
            current["agreed"],
            if current["complete"] == false {
                " (stopped at --max-jobs)"
            } else {
                ""
            }
        );
        print_differences(current);
    }
    let recorded = &json["recorded"];
    if !recorded.is_object() {
        return;
    }
    if recorded["configured"] == false {
        out!(
            "recorded decisions: {}",
            recorded["message"].as_str().unwrap_or("not configured")
        );
        return;
    }
    out!(
        "recorded decisions {} .. {}: {} records read, {} replayed, {} agree, {} not decisions, {} filtered out, {} unreplayable{}",
        crate::clock::format_rfc3339(recorded["since_ms"].as_u64().unwrap_or(0)),
        crate::clock::format_rfc3339(recorded["until_ms"].as_u64().unwrap_or(0)),
        recorded["examined"],
        recorded["jobs"],
        recorded["agreed"],
        recorded["skipped"],
        recorded["filtered_out"],
        recorded["unreplayable"],
        if recorded["complete"] == false {
            " (stopped at a cap: --max-records or 200,000 records read)"
        } else {
            ""
        }
    );
    print_differences(recorded);
    for (reason, n) in recorded["unreplayable_reasons"]
        .as_object()
        .into_iter()
        .flatten()
    {
        out!("  unreplayable {reason}: {n}");
    }
    for u in recorded["unreplayable_examples"]
        .as_array()
        .into_iter()
        .flatten()
    {
        out!(
            "  record {}  {}  {}: {}",
            str_of(u, "record_id"),
            str_of(u, "job_id"),
            str_of(u, "reason"),
            str_of(u, "detail")
        );
    }
}

/// A replay section's differences and examples.
fn print_differences(section: &Value) {
    for (kind, n) in section["differences"].as_object().into_iter().flatten() {
        out!("  {kind}: {n}");
    }
    for e in section["examples"].as_array().into_iter().flatten() {
        let record = e["record_id"]
            .as_str()
            .map(|r| format!("record {r}  "))
            .unwrap_or_default();
        out!(
            "  {record}{}  {}  bound: {}  candidate: {} ({})",
            str_of(e, "job_id"),
            str_of(e, "job_type"),
            str_of(e, "bound_outcome"),
            str_of(e, "candidate_outcome"),
            str_of(e, "candidate_reason")
        );
    }
}

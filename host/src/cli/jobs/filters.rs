//! What the filters of `jobs` accept, and a warning when one names a queue or failure type
//! the server does not know (a typo would otherwise list nothing, silently).

use serde_json::Value;

use super::{Client, FilterArgs};

/// A time flag's value: an RFC 3339 time (`2026-11-29T12:00:00Z`, `…+01:00`), a date
/// (`2026-11-29`, midnight UTC), or a duration ago (`90s`, `15m`, `2h`, `7d`); given to the
/// API as RFC 3339.
pub(super) fn parse_time(text: &str) -> Result<String, String> {
    let text = text.trim();
    if crate::clock::parse_rfc3339(text).is_some() {
        return Ok(text.to_string());
    }
    let date = format!("{text}T00:00:00Z");
    if text.len() == 10 && crate::clock::parse_rfc3339(&date).is_some() {
        return Ok(date);
    }
    let unit = text
        .char_indices()
        .last()
        .map(|(i, c)| (i, c.to_ascii_lowercase()));
    let seconds = match unit {
        Some((i, c @ ('s' | 'm' | 'h' | 'd'))) if i > 0 => text[..i]
            .parse::<u64>()
            .ok()
            .and_then(|n| {
                n.checked_mul(match c {
                    's' => 1,
                    'm' => 60,
                    'h' => 3600,
                    _ => 86_400,
                })
            })
            .filter(|s| *s <= 100 * 365 * 86_400),
        _ => None,
    };
    match seconds {
        Some(s) => Ok(crate::clock::format_rfc3339(
            crate::clock::now_ms().saturating_sub(s.saturating_mul(1000)),
        )),
        None => Err(format!(
            "expected an RFC 3339 time (2026-11-29T12:00:00Z), a date (2026-11-29) or a \
             duration ago (90s, 15m, 2h, 7d), got {text:?}"
        )),
    }
}

/// After a listing that matched nothing: warns on stderr when `--queue` or
/// `--failure-type` names a value no failed job has, naming those that exist
/// (`GET /api/v1/jobs/stats`: the queues RQ knows, the failure types of the failure index).
pub(super) fn warn_unknown(client: &Client, filter: &FilterArgs) {
    warn_unknown_values(
        client,
        filter.queue.as_deref(),
        filter.failure_type.as_deref(),
    );
}

/// [`warn_unknown`] for any command's `--queue` and `--failure-type`.
pub(super) fn warn_unknown_values(
    client: &Client,
    queue: Option<&str>,
    failure_type: Option<&str>,
) {
    if queue.is_none() && failure_type.is_none() {
        return;
    }
    // Best effort: a warning never turns a listing into an error.
    let Ok((status, stats)) = client
        .server
        .request_with("GET", "/api/v1/jobs/stats", None)
    else {
        return;
    };
    let Some(stats) = (200..300)
        .contains(&status)
        .then(|| serde_json::from_slice::<Value>(&stats).ok())
        .flatten()
    else {
        return;
    };
    for warning in unknown_filters(&stats, queue, failure_type) {
        eprintln!("warning: {warning}");
    }
}

/// The warnings for `queue` and `failure_type` given the stats.
fn unknown_filters(stats: &Value, queue: Option<&str>, failure_type: Option<&str>) -> Vec<String> {
    let mut warnings = Vec::new();
    let known = |names: Vec<&str>| {
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    };
    if let Some(q) = queue {
        let queues: Vec<&str> = stats["queues"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|q| q["queue"].as_str())
            .collect();
        if !queues.contains(&q) {
            warnings.push(format!(
                "no queue is named {q:?}; the known queues: {}",
                known(queues)
            ));
        }
    }
    if let Some(t) = failure_type {
        let types: Vec<&str> = stats["failed_by_type"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
            .map(|(k, _)| k.as_str())
            .collect();
        if !types.contains(&t) {
            let building = if stats["failed_by_type_complete"].as_bool() == Some(false) {
                " (the failure index is still being built)"
            } else {
                ""
            };
            warnings.push(format!(
                "no failed job has the failure type {t:?}; the failure types of failed jobs \
                 now: {}{building}",
                known(types)
            ));
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_are_rfc3339_dates_or_durations_ago() {
        assert_eq!(
            parse_time("2026-11-29T12:00:00Z").as_deref(),
            Ok("2026-11-29T12:00:00Z")
        );
        assert_eq!(
            parse_time("2026-11-29T12:00:00+01:00").as_deref(),
            Ok("2026-11-29T12:00:00+01:00")
        );
        assert_eq!(
            parse_time("2026-11-29").as_deref(),
            Ok("2026-11-29T00:00:00Z")
        );
        let two_hours_ago = crate::clock::parse_rfc3339(&parse_time("2h").unwrap()).unwrap();
        let want = crate::clock::now_ms() - 7_200_000;
        assert!(
            two_hours_ago.abs_diff(want) < 5_000,
            "{two_hours_ago} {want}"
        );
        for bad in [
            "",
            "h",
            "yesterday",
            "2026-13-01",
            "-5m",
            "99999999999999999d",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_filters_name_the_known_values() {
        let stats = json!({
            "queues": [{"queue": "default"}, {"queue": "demo"}],
            "failed_by_type": {"network_error": 3, "timeout": 0},
            "failed_by_type_complete": true,
        });
        assert!(unknown_filters(&stats, Some("demo"), Some("network_error")).is_empty());
        let w = unknown_filters(&stats, Some("dmeo"), Some("timeout"));
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("\"dmeo\"") && w[0].contains("default, demo"),
            "{w:?}"
        );
        assert!(
            w[1].contains("network_error") && !w[1].contains("timeout,"),
            "{w:?}"
        );
    }
}

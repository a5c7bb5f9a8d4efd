//! What the pages show as text: times (relative and absolute), labels of failure types,
//! numbers, and the query strings of linkable lists. Pure functions, no I/O.

use crate::clock::format_rfc3339;

/// A time as a page shows it: `rel` ("5 min ago", "in 2 h") in the text, `utc` in the title
/// (the script replaces the title with the local time), `iso` in `datetime`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct When {
    pub iso: String,
    pub utc: String,
    pub rel: String,
}

impl When {
    pub fn of_ms(ms: u64, now_ms: u64) -> Self {
        let iso = format_rfc3339(ms);
        let utc = format!("{} UTC", iso.get(..19).unwrap_or(&iso).replace('T', " "));
        Self {
            rel: relative(ms, now_ms),
            iso,
            utc,
        }
    }

    /// The `<time>` element: relative, then the absolute UTC time beneath it; hovering shows
    /// the local time (the script puts it in the title; without the script the title is the
    /// UTC time). Built only from the numbers above, so it needs no escaping.
    pub fn html(&self) -> String {
        format!(
            r#"<time datetime="{}" title="{}">{}<span class="abs">{}</span></time>"#,
            self.iso, self.utc, self.rel, self.utc
        )
    }

    /// An RFC 3339 time of the API's views (`None` when it does not parse).
    pub fn of_rfc3339(text: &str, now_ms: u64) -> Option<Self> {
        crate::clock::parse_rfc3339(text).map(|ms| Self::of_ms(ms, now_ms))
    }
}

/// "just now", "42 s ago", "5 min ago", "3 h ago", "2 d ago"; "in …" for a future time.
pub fn relative(ms: u64, now_ms: u64) -> String {
    let (delta, future) = if ms > now_ms {
        (ms - now_ms, true)
    } else {
        (now_ms - ms, false)
    };
    let s = delta / 1000;
    let amount = match s {
        0..=4 => return "just now".to_string(),
        5..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    };
    if future {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// The readable label of a failure type id (`network_error` → "Network error"); an unknown
/// id is shown as itself, capitalised, with spaces.
pub fn failure_label(id: &str) -> String {
    let known = match id {
        "network_error" => "Network error",
        "timeout" => "Timeout",
        "rate_limit" => "Rate limited",
        "temporary_error" => "Temporary error",
        "database_lock" => "Database lock",
        "validation_error" => "Validation error",
        "logic_error" => "Logic error",
        "data_not_found" => "Data not found",
        "permission_error" => "Permission denied",
        "configuration_error" => "Configuration error",
        "custom_unknown" | "unknown" => "Unknown",
        "policy_error" => "Policy error",
        _ => "",
    };
    if !known.is_empty() {
        return known.to_string();
    }
    let spaced = id.replace('_', " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// 1234567 → "1,234,567".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate as a percentage with one decimal ("—" when there is none).
pub fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "—".to_string(), |r| format!("{:.1} %", r * 100.0))
}

/// The first 12 hex digits of a digest (`sha256:` dropped).
pub fn short_digest(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.chars().take(12).collect()
}

/// Text cut to at most `max` characters, with "…" when cut.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// Percent-encodes everything but the unreserved characters (RFC 3986).
pub fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a form value (`+` is a space); `None` for a bad escape or invalid UTF-8.
pub fn url_decode(bytes: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// A query string of the non-empty pairs, `?a=1&b=2` (empty when there is none).
pub fn query(pairs: &[(&str, &str)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", url_encode(v)))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times() {
        let now = 1_000_000_000;
        assert_eq!(relative(now, now), "just now");
        assert_eq!(relative(now - 42_000, now), "42 s ago");
        assert_eq!(relative(now - 300_000, now), "5 min ago");
        assert_eq!(relative(now - 3 * 3_600_000, now), "3 h ago");
        assert_eq!(relative(now - 3 * 86_400_000, now), "3 d ago");
        assert_eq!(relative(now + 120_000, now), "in 2 min");
        let w = When::of_ms(1_732_924_800_123, 1_732_924_800_123);
        assert_eq!(w.utc, "2024-11-30 00:00:00 UTC");
        assert!(w.iso.starts_with("2024-11-30T00:00:00"));
    }

    #[test]
    fn labels_and_numbers() {
        assert_eq!(failure_label("network_error"), "Network error");
        assert_eq!(failure_label("card_declined"), "Card declined");
        assert_eq!(failure_label(""), "");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(100), "100");
        assert_eq!(percent(Some(0.5)), "50.0 %");
        assert_eq!(percent(None), "—");
        assert_eq!(short_digest("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(truncate("hi", 2), "hi");
    }

    #[test]
    fn urls() {
        assert_eq!(url_encode("a b/é&"), "a%20b%2F%C3%A9%26");
        assert_eq!(url_decode(b"a+b%2F%C3%A9").as_deref(), Some("a b/é"));
        assert_eq!(url_decode(b"%zz"), None);
        assert_eq!(url_decode(b"%4"), None);
        assert_eq!(query(&[("q", "x y"), ("queue", "")]), "?q=x%20y");
        assert_eq!(query(&[("a", "")]), "");
    }
}

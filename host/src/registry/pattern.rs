//! Job-type patterns of policy bindings and the table that resolves a job type to its binding.
//!
//! A pattern is an exact job type (`app.tasks.charge_card`), a prefix glob (`payments.*`: every
//! job type starting with `payments.`) or `*` (every job type). The most specific match wins:
//! an exact pattern beats every glob, a longer prefix beats a shorter one, `*` comes last.

use std::collections::HashMap;
use std::fmt;

/// The longest pattern accepted, in bytes (RQ job types are dotted Python names).
pub const MAX_PATTERN_BYTES: usize = 255;

/// A validated job-type pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pattern {
    /// Exactly this job type.
    Exact(String),
    /// Every job type starting with this prefix (the pattern without its trailing `*`).
    Prefix(String),
    /// Every job type.
    Any,
}

impl Pattern {
    /// Parses a pattern, with the reason when it is not one.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(Self::Any);
        }
        if text.is_empty() {
            return Err("a pattern may not be empty (use `*` for every job type)".into());
        }
        if text.len() > MAX_PATTERN_BYTES {
            return Err(format!(
                "a pattern may be at most {MAX_PATTERN_BYTES} bytes, this one is {}",
                text.len()
            ));
        }
        let (body, glob) = match text.strip_suffix('*') {
            Some(prefix) => (prefix, true),
            None => (text, false),
        };
        if let Some(c) = body.chars().find(|c| {
            !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ':' | '<' | '>'))
        }) {
            return Err(format!(
                "`{text}`: a pattern is a job type (letters, digits, `_ . - : < >`), optionally \
                 ending in `*`; `{c}` is not allowed{}",
                if c == '*' {
                    " except as the last character"
                } else {
                    ""
                }
            ));
        }
        Ok(if glob {
            Self::Prefix(body.to_string())
        } else {
            Self::Exact(body.to_string())
        })
    }

    /// Whether `job_type` matches.
    pub fn matches(&self, job_type: &str) -> bool {
        match self {
            Self::Exact(t) => t == job_type,
            Self::Prefix(p) => job_type.starts_with(p.as_str()),
            Self::Any => true,
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(t) => f.write_str(t),
            Self::Prefix(p) => write!(f, "{p}*"),
            Self::Any => f.write_str("*"),
        }
    }
}

/// Values by pattern, resolved by the most specific match. `T` is what a binding resolves to
/// (the live table holds compiled policies; tests use plain values).
#[derive(Debug, Clone)]
pub struct Resolver<T> {
    exact: HashMap<String, T>,
    /// Longest prefix first, so the first match is the most specific.
    prefixes: Vec<(String, T)>,
    any: Option<T>,
}

impl<T> Default for Resolver<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            prefixes: Vec::new(),
            any: None,
        }
    }
}

impl<T> Resolver<T> {
    /// Builds the resolver; a pattern given twice keeps its last value.
    pub fn new(entries: impl IntoIterator<Item = (Pattern, T)>) -> Self {
        let mut r = Self::default();
        for (pattern, value) in entries {
            match pattern {
                Pattern::Exact(t) => {
                    r.exact.insert(t, value);
                }
                Pattern::Prefix(p) => {
                    r.prefixes.retain(|(q, _)| *q != p);
                    r.prefixes.push((p, value));
                }
                Pattern::Any => r.any = Some(value),
            }
        }
        // Longest first; equal lengths in name order so resolution never depends on input order.
        r.prefixes
            .sort_by(|(a, _), (b, _)| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        r
    }

    /// The value of the most specific pattern matching `job_type`, and that pattern.
    pub fn resolve(&self, job_type: &str) -> Option<(Pattern, &T)> {
        if let Some(v) = self.exact.get(job_type) {
            return Some((Pattern::Exact(job_type.to_string()), v));
        }
        if let Some((p, v)) = self
            .prefixes
            .iter()
            .find(|(p, _)| job_type.starts_with(p.as_str()))
        {
            return Some((Pattern::Prefix(p.clone()), v));
        }
        self.any.as_ref().map(|v| (Pattern::Any, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Pattern {
        Pattern::parse(text).unwrap_or_else(|e| unreachable!("{text}: {e}"))
    }

    #[test]
    fn parses_the_three_kinds_and_prints_them_back() {
        assert_eq!(p("*"), Pattern::Any);
        assert_eq!(p("payments.*"), Pattern::Prefix("payments.".into()));
        assert_eq!(
            p("app.tasks.charge_card"),
            Pattern::Exact("app.tasks.charge_card".into())
        );
        for text in ["*", "payments.*", "app.tasks.charge_card", "a*"] {
            assert_eq!(p(text).to_string(), text);
        }
    }

    #[test]
    fn refuses_what_is_not_a_pattern() {
        for bad in ["", "pay*ments", "**", "a b", "x/y", "é", &"a".repeat(256)] {
            let e = Pattern::parse(bad).err();
            assert!(e.is_some(), "{bad:?} was accepted");
        }
        assert!(
            Pattern::parse("pay*ments.*")
                .err()
                .is_some_and(|e| e.contains("last character"))
        );
    }

    #[test]
    fn the_most_specific_pattern_wins() {
        let r = Resolver::new([
            (p("*"), "default"),
            (p("payments.*"), "payments"),
            (p("payments.cards.*"), "cards"),
            (p("payments.cards.charge"), "charge"),
            (p("pay*"), "pay"),
        ]);
        let table = [
            ("payments.cards.charge", "charge", "payments.cards.charge"),
            ("payments.cards.refund", "cards", "payments.cards.*"),
            ("payments.payouts.send", "payments", "payments.*"),
            ("payroll.run", "pay", "pay*"),
            ("reports.daily", "default", "*"),
            ("", "default", "*"),
            // A prefix is a plain prefix: `payments.*` needs the dot.
            ("payments", "pay", "pay*"),
        ];
        for (job_type, want, pattern) in table {
            let (got_pattern, got) = r.resolve(job_type).unwrap_or_else(|| unreachable!());
            assert_eq!(
                (*got, got_pattern.to_string().as_str()),
                (want, pattern),
                "{job_type}"
            );
        }
    }

    #[test]
    fn nothing_matches_without_a_catch_all() {
        let r = Resolver::new([(p("payments.*"), 1)]);
        assert!(r.resolve("reports.daily").is_none());
        assert_eq!(r.resolve("payments.x").map(|(_, v)| *v), Some(1));
    }

    #[test]
    fn input_order_does_not_change_resolution() {
        let a = Resolver::new([(p("ab*"), 1), (p("ac*"), 2), (p("a*"), 3)]);
        let b = Resolver::new([(p("a*"), 3), (p("ac*"), 2), (p("ab*"), 1)]);
        for t in ["abc", "acd", "ad", "b"] {
            assert_eq!(
                a.resolve(t).map(|(_, v)| *v),
                b.resolve(t).map(|(_, v)| *v),
                "{t}"
            );
        }
    }
}

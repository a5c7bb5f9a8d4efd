//! Tables and times for people: columns aligned to their widest cell, cut to the terminal's
//! width only when stdout is a terminal (a pipe or a file gets every cell whole).

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};

/// `s` cut to at most `max` characters, with `…` when cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The terminal's width when stdout is one: `COLUMNS`, else what `stty size` says, else 120.
/// `None` when stdout is not a terminal: nothing is cut then.
fn terminal_width() -> Option<usize> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    let sane = |c: usize| (40..=1000).contains(&c);
    let columns = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|c| sane(*c))
        .or_else(|| terminal_columns().filter(|c| sane(*c)));
    Some(columns.unwrap_or(120))
}

fn terminal_columns() -> Option<usize> {
    let tty = std::fs::File::open("/dev/tty").ok()?;
    let out = std::process::Command::new("stty")
        .arg("size")
        .stdin(tty)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    String::from_utf8(out.stdout)
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The lines of a table: each column as wide as its widest cell (header included). With
/// `width` (a terminal's), the cells are first cut to `caps` and the last column to what
/// width is left; without it nothing is cut.
pub(crate) fn render(
    header: &[&str],
    rows: &[Vec<String>],
    caps: &[usize],
    width: Option<usize>,
) -> Vec<String> {
    let cut = |i: usize, c: &str| match width {
        Some(_) => truncate(c, caps.get(i).copied().unwrap_or(usize::MAX)),
        None => c.to_string(),
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().enumerate().map(|(i, c)| cut(i, c)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &cells {
        for (i, c) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let last = header.len().saturating_sub(1);
    let used: usize = widths.iter().take(last).map(|w| w + 2).sum();
    let last_width = width.map(|w| w.saturating_sub(used).max(12));
    let line = |row: &[String]| {
        let mut out = String::new();
        for (i, c) in row.iter().enumerate() {
            if i == last {
                match last_width {
                    Some(w) => out.push_str(&truncate(c, w)),
                    None => out.push_str(c),
                }
            } else {
                let w = widths.get(i).copied().unwrap_or(0);
                let _ = write!(out, "{c:<w$}  ");
            }
        }
        out.trim_end().to_string()
    };
    let mut lines = vec![line(
        &header.iter().map(|h| (*h).to_string()).collect::<Vec<_>>(),
    )];
    lines.extend(cells.iter().map(|row| line(row)));
    lines
}

/// Prints rows as aligned columns (see [`render`]); on a terminal the last column takes what
/// width is left.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>], caps: &[usize]) {
    let mut stdout = std::io::stdout().lock();
    for line in render(header, rows, caps, terminal_width()) {
        let _ = writeln!(stdout, "{line}");
    }
}

/// `key  value` lines, the keys padded to the longest.
pub(crate) fn pairs<K: AsRef<str>, V: std::fmt::Display>(items: &[(K, V)], indent: &str) {
    let w = items
        .iter()
        .map(|(k, _)| k.as_ref().chars().count())
        .max()
        .unwrap_or(0);
    let mut stdout = std::io::stdout().lock();
    for (k, v) in items {
        let _ = writeln!(stdout, "{indent}{:<w$}  {v}", k.as_ref());
    }
}

/// A duration in seconds, short: `51s`, `3m`, `2h`, `4d`.
fn short(s: u64) -> String {
    match s {
        0..=99 => format!("{s}s"),
        100..=5999 => format!("{}m", s / 60),
        6000..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// How long until an RFC 3339 time: `51s`, `3m`, `2h` (rounded up).
pub(crate) fn wait_for(at: &str) -> String {
    let Some(at_ms) = crate::clock::parse_rfc3339(at) else {
        return at.to_string();
    };
    let s = at_ms.saturating_sub(crate::clock::now_ms()).div_ceil(1000);
    match s {
        0..=99 => format!("{s}s"),
        100..=5999 => format!("{}m", s.div_ceil(60)),
        _ => format!("{}h", s.div_ceil(3600)),
    }
}

/// How long ago an RFC 3339 time was: `12s ago`, `5m ago`, `3h ago`, `2d ago`; `-` when
/// it is not one.
pub(crate) fn ago(at: &str) -> String {
    match crate::clock::parse_rfc3339(at) {
        Some(at_ms) => format!(
            "{} ago",
            short(crate::clock::now_ms().saturating_sub(at_ms) / 1000)
        ),
        None => "-".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<Vec<String>> {
        vec![
            vec!["a".into(), "short".into(), "a reason".into()],
            vec![
                "a-much-longer-id".into(),
                "x".into(),
                "a reason that is much longer than any terminal would show whole, \
                 on and on and on"
                    .into(),
            ],
        ]
    }

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let lines = render(&["ID", "KIND", "REASON"], &rows(), &[4, 4], None);
        let at = lines[0].find("REASON").unwrap();
        assert_eq!(lines[0].find("KIND"), Some("a-much-longer-id  ".len()));
        for (line, row) in lines[1..].iter().zip(rows()) {
            assert_eq!(line.find(&row[2]), Some(at), "{lines:#?}");
        }
    }

    #[test]
    fn nothing_is_cut_without_a_terminal_and_everything_fits_one() {
        let whole = render(&["ID", "KIND", "REASON"], &rows(), &[4, 4], None);
        assert!(whole[2].ends_with("on and on and on"));
        assert!(whole[2].contains("a-much-longer-id"));
        let cut = render(&["ID", "KIND", "REASON"], &rows(), &[4, 4], Some(40));
        assert!(cut.iter().all(|l| l.chars().count() <= 40), "{cut:#?}");
        assert!(cut[2].starts_with("a-m…  x     a reason"), "{cut:#?}");
        assert!(cut[2].ends_with('…'));
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(short(5), "5s");
        assert_eq!(short(600), "10m");
        assert_eq!(short(7200), "2h");
        assert_eq!(short(3 * 86_400), "3d");
        assert_eq!(ago("not a time"), "-");
        assert_eq!(truncate("abcdef", 4), "abc…");
    }
}

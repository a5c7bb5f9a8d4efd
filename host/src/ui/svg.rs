//! Charts as server-rendered SVG: a sparkline per group and the overview's 24-hour bars.
//! Only numbers and this module's own labels go in (escaped all the same); colours come
//! from classes in the stylesheet, so the themes apply and the CSP needs no inline style.

use std::fmt::Write as _;

/// Escapes text for SVG/HTML content and attributes.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A sparkline of `counts` (oldest first), `width` × `height` px, with its total as the
/// accessible label.
pub fn sparkline(counts: &[u64], width: u32, height: u32) -> String {
    let max = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let total: u64 = counts.iter().sum();
    let n = counts.len().max(2) - 1;
    let (w, h) = (f64::from(width), f64::from(height) - 2.0);
    let mut points = String::new();
    for (i, c) in counts.iter().enumerate() {
        let x = w * i as f64 / n as f64;
        let y = 1.0 + h - h * (*c as f64) / max;
        let _ = write!(points, "{x:.1},{y:.1} ");
    }
    format!(
        r#"<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{} failures in 24 hours"><polyline points="{}"/></svg>"#,
        total,
        points.trim_end()
    )
}

/// One hour of the overview chart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourBar {
    /// `HH:00`, UTC.
    pub label: String,
    pub failures: u64,
    pub retries: u64,
}

/// Failures and retries per hour, as paired bars with an axis every 6 hours and the scale's
/// top value.
pub fn hour_bars(hours: &[HourBar]) -> String {
    const W: f64 = 720.0;
    const H: f64 = 160.0;
    const TOP: f64 = 14.0;
    const BOTTOM: f64 = 20.0;
    const LEFT: f64 = 40.0;
    let max = hours
        .iter()
        .map(|h| h.failures.max(h.retries))
        .max()
        .unwrap_or(0)
        .max(1);
    let plot_h = H - TOP - BOTTOM;
    let slot = (W - LEFT) / hours.len().max(1) as f64;
    let bar = (slot - 4.0).max(2.0) / 2.0;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="Failures and retries per hour, last 24 hours">"#
    );
    let _ = write!(
        out,
        r#"<line class="axis" x1="{LEFT}" y1="{y}" x2="{W}" y2="{y}"/><text class="tick" x="{x}" y="{ty}" text-anchor="end">{max}</text><text class="tick" x="{x}" y="{y}" text-anchor="end">0</text>"#,
        y = TOP + plot_h,
        x = LEFT - 6.0,
        ty = TOP + 4.0,
        max = max
    );
    let _ = write!(
        out,
        r#"<line class="grid" x1="{LEFT}" y1="{TOP}" x2="{W}" y2="{TOP}"/>"#
    );
    for (i, h) in hours.iter().enumerate() {
        let x = LEFT + slot * i as f64 + 2.0;
        for (j, (value, class)) in [(h.failures, "bar-fail"), (h.retries, "bar-retry")]
            .into_iter()
            .enumerate()
        {
            let bh = plot_h * value as f64 / max as f64;
            let _ = write!(
                out,
                r#"<rect class="{class}" x="{:.1}" y="{:.1}" width="{bar:.1}" height="{bh:.1}"><title>{}: {value} {}</title></rect>"#,
                x + bar * j as f64,
                TOP + plot_h - bh,
                esc(&h.label),
                if j == 0 { "failures" } else { "retries" },
            );
        }
        if i % 6 == 0 || i + 1 == hours.len() {
            let _ = write!(
                out,
                r#"<text class="tick" x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                x + bar,
                H - 4.0,
                esc(&h.label)
            );
        }
    }
    out.push_str("</svg>");
    out
}

/// A horizontal bar for a share of a total (tables of counts), `width` px at 100 %.
pub fn share(value: u64, total: u64, width: u32) -> String {
    let w = if total == 0 {
        0.0
    } else {
        f64::from(width) * value as f64 / total as f64
    };
    format!(
        r#"<svg class="share" width="{width}" height="10" viewBox="0 0 {width} 10" aria-hidden="true"><rect class="share-bg" width="{width}" height="10"/><rect class="bar-fail" width="{w:.1}" height="10"/></svg>"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkline_scales_to_the_largest_hour() {
        let s = sparkline(&[0, 5, 10], 100, 22);
        assert!(
            s.contains(r#"points="0.0,21.0 50.0,11.0 100.0,1.0""#),
            "{s}"
        );
        assert!(s.contains("15 failures"));
        // No data: a flat line, not a division by zero.
        assert!(sparkline(&[], 10, 10).contains("points=\"\""));
        assert!(sparkline(&[0; 24], 48, 12).contains("0 failures"));
    }

    #[test]
    fn bars_have_a_scale_and_labels() {
        let hours: Vec<HourBar> = (0..24)
            .map(|h| HourBar {
                label: format!("{h:02}:00"),
                failures: h,
                retries: 1,
            })
            .collect();
        let s = hour_bars(&hours);
        assert_eq!(s.matches("<rect").count(), 48);
        assert!(s.contains(">23<"), "the top of the scale");
        assert!(s.contains("06:00") && s.contains("23:00"));
        assert!(s.starts_with("<svg") && s.ends_with("</svg>"));
        assert!(esc("<a href='x'>&").eq("&lt;a href=&#39;x&#39;&gt;&amp;"));
        assert!(share(1, 0, 80).contains(r#"width="0.0""#));
        assert!(share(1, 2, 80).contains(r#"width="40.0""#));
    }
}

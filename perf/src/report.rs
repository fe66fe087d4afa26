//! What people read: Markdown tables on stdout, JSON for machines, SVG charts.

use std::fmt::Write;

pub struct Table {
    pub head: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(head: &[&str]) -> Self {
        Table {
            head: head.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "| {} |", self.head.join(" | "));
        let _ = writeln!(s, "|{}|", self.head.iter().map(|_| "---").collect::<Vec<_>>().join("|"));
        for r in &self.rows {
            let _ = writeln!(s, "| {} |", r.join(" | "));
        }
        s
    }
}

pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// More gridlines than this is a bug in the step, not a chart: stop there.
const MAX_TICKS: usize = 50;

const COLORS: [&str; 6] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];

/// A line chart with markers; `log_y` plots the y axis in log10 (latency percentiles).
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series], log_y: bool) -> String {
    let (w, h, l, r, t, b) = (720.0, 420.0, 80.0, 170.0, 40.0, 60.0);
    // Points that are not finite (a median of nothing) are not drawn and do not set the axes.
    let drawable = |p: &(f64, f64)| p.0.is_finite() && p.1.is_finite() && p.1.abs() < 1e300 && p.0.abs() < 1e300;
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(drawable)
        .collect();
    let fy = |y: f64| if log_y { y.max(1e-3).log10() } else { y };
    let (mut x0, mut x1) = (f64::MAX, f64::MIN);
    let (mut y0, mut y1) = (f64::MAX, f64::MIN);
    for &(x, y) in &pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(fy(y));
        y1 = y1.max(fy(y));
    }
    if pts.is_empty() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let mut y_step = None;
    if !log_y {
        y0 = 0.0;
        // Round gridlines (1, 2 or 5 x 10^k apart), the top one at or above the largest point.
        let step = nice_step(y1 - y0, 5);
        y1 = (y1 / step).ceil().max(1.0) * step;
        y_step = Some(step);
    } else {
        y0 = y0.floor();
        y1 = y1.ceil().max(y0 + 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    let px = |x: f64| l + (x - x0) / (x1 - x0) * (w - l - r);
    let py = |y: f64| h - b - (fy(y) - y0) / (y1 - y0) * (h - t - b);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{}" y="24" font-size="15" text-anchor="middle">{title}</text>"#,
        w / 2.0
    );
    let _ = write!(
        s,
        r#"<line x1="{l}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
        h - b,
        w - r,
        h - b
    );
    let _ = write!(s, r#"<line x1="{l}" y1="{t}" x2="{l}" y2="{}" stroke="black"/>"#, h - b);
    // Whole numbers stay whole (shard counts); other ranges get round steps from the first.
    let x_step = nice_step(x1 - x0, 6);
    let x_step = if pts.iter().all(|p| p.0.fract() == 0.0) {
        x_step.max(1.0)
    } else {
        x_step
    };
    let x_ticks: Vec<f64> = (0..)
        .map(|i| (x0 / x_step).ceil() * x_step + i as f64 * x_step)
        .take_while(|&v| v <= x1 + x_step * 1e-9)
        .take(MAX_TICKS)
        .collect();
    for xv in x_ticks {
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            px(xv),
            h - b + 18.0,
            fmt_tick(xv, x_step)
        );
    }
    // Gridlines at each power of ten on a log axis, at round steps on a linear one.
    let ticks: Vec<f64> = match y_step {
        None => (y0 as i32..=y1.ceil() as i32).map(|e| 10f64.powi(e)).collect(),
        Some(step) => (0..)
            .map(|i| y0 + i as f64 * step)
            .take_while(|&v| v <= y1 + step * 1e-9)
            .take(MAX_TICKS)
            .collect(),
    };
    for yv in ticks {
        let _ = write!(
            s,
            r##"<line x1="{l}" x2="{}" y1="{y}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            w - r,
            l - 6.0,
            py(yv) + 4.0,
            y_step.map_or_else(|| fmt_num(yv), |st| fmt_tick(yv, st)),
            y = py(yv)
        );
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{x_label}</text>"#,
        (l + w - r) / 2.0,
        h - 15.0
    );
    let _ = write!(
        s,
        r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">{y_label}</text>"#,
        (t + h - b) / 2.0,
        (t + h - b) / 2.0
    );
    for (i, se) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let drawn: Vec<(f64, f64)> = se.points.iter().copied().filter(drawable).collect();
        let path: Vec<String> = drawn
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for &(x, y) in &drawn {
            let _ = write!(s, r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{c}"/>"#, px(x), py(y));
        }
        let ly = t + 10.0 + i as f64 * 18.0;
        let _ = write!(
            s,
            r#"<rect x="{}" y="{}" width="12" height="12" fill="{c}"/><text x="{}" y="{}">{}</text>"#,
            w - r + 12.0,
            ly - 10.0,
            w - r + 30.0,
            ly,
            se.name
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The middle of `sorted` (ascending), or the mean of the two middle values; NaN if empty.
pub fn median(sorted: &[f64]) -> f64 {
    debug_assert!(sorted.windows(2).all(|w| w[0].total_cmp(&w[1]).is_le()));
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// A step of 1, 2 or 5 x 10^k that divides `range` into at most `max_ticks` parts (and at
/// least about half as many): 28,000 in at most 5 parts gives 10,000 (0, 10k, 20k, 30k);
/// 2.4M in at most 6 gives 500k.
pub fn nice_step(range: f64, max_ticks: usize) -> f64 {
    if !(range.is_finite() && range > 0.0) {
        return 1.0;
    }
    let raw = range / max_ticks.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * mag)
}

/// A tick label: whole numbers below 10,000 on a whole-number step without decimals ("2",
/// not "2.0"), the rest as `fmt_num`.
fn fmt_tick(v: f64, step: f64) -> String {
    if step >= 1.0 && v.fract() == 0.0 && v.abs() < 1e4 {
        format!("{v:.0}")
    } else {
        fmt_num(v)
    }
}

pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_round_and_fit_the_tick_budget() {
        assert_eq!(nice_step(28_000.0, 5), 10_000.0);
        assert_eq!(nice_step(5_635.0, 5), 2_000.0);
        assert_eq!(nice_step(2_400_000.0, 6), 500_000.0);
        assert_eq!(nice_step(1.0, 6), 0.2);
        assert_eq!(nice_step(7.0, 6), 2.0);
        assert_eq!(nice_step(0.0, 5), 1.0);
        assert_eq!(nice_step(f64::NAN, 5), 1.0);
        for range in [0.3, 1.0, 3.7, 99.0, 1234.0, 5.5e6] {
            let s = nice_step(range, 5);
            let parts = range / s;
            assert!((1.0..=5.0 + 1e-9).contains(&parts), "{range}: step {s}, {parts} parts");
            let lead = s / 10f64.powf(s.log10().floor());
            assert!(
                [1.0, 2.0, 5.0].iter().any(|m| (lead - m).abs() < 1e-9),
                "{range}: step {s}"
            );
        }
    }

    /// Values that are not finite are left out rather than drawn or looped over (an infinite
    /// point once meant gridlines without end).
    #[test]
    fn points_that_are_not_finite_are_left_out() {
        for bad in [f64::INFINITY, f64::NAN, f64::MAX] {
            for log_y in [false, true] {
                let svg = line_chart(
                    "t",
                    "x",
                    "y",
                    &[Series {
                        name: "s".into(),
                        points: vec![(1.0, 5.0), (2.0, bad), (bad, 3.0)],
                    }],
                    log_y,
                );
                assert!(!svg.contains("NaN") && !svg.contains("inf"), "{bad} drawn: {svg}");
                assert!(svg.matches("<circle").count() == 1, "{bad}");
            }
        }
    }

    /// A shard sweep's axis is labelled at whole shard counts, and the y axis at round numbers
    /// that reach past the largest point (it was fifths of the largest: 5635, 11k, 17k...).
    #[test]
    fn shard_counts_and_rates_get_round_labels() {
        let svg = line_chart(
            "t",
            "shards",
            "records/s",
            &[Series {
                name: "records/s".into(),
                points: vec![(1.0, 11_900.0), (2.0, 28_177.0)],
            }],
            false,
        );
        let labels: Vec<&str> = svg
            .split("text-anchor=\"middle\">")
            .skip(1)
            .map(|s| s.split('<').next().unwrap())
            .collect();
        assert!(labels.contains(&"1") && labels.contains(&"2"), "{labels:?}");
        assert!(
            !labels.iter().any(|l| l.contains('.')),
            "fractional shard ticks: {labels:?}"
        );
        for want in [">0<", ">10k<", ">20k<", ">30k<"] {
            assert!(svg.contains(want), "no {want} label");
        }
        assert!(!svg.contains(">5635<"));
    }
}

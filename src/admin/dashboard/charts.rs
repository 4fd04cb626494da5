//! The dashboard's charts, drawn as inline SVG on the server so that the pages need no script and no asset from
//! anywhere: a line chart of rates over time and a histogram of a feature in training beside the same feature in
//! the drift window.

use std::fmt::Write as _;

use super::html::esc;

const W: f64 = 640.0;
const H: f64 = 200.0;
/// Room for the axis labels on the left and at the bottom.
const LEFT: f64 = 64.0;
const BOTTOM: f64 = 28.0;
const TOP: f64 = 12.0;

/// One line of a chart: its name, colour and values.
pub(crate) struct Series<'a> {
    pub(crate) name: &'a str,
    pub(crate) color: &'a str,
    pub(crate) values: Vec<f64>,
}

/// The smallest "round" number (1, 2 or 5 times a power of ten) at or above `v`, for an axis's top.
pub(crate) fn nice_max(v: f64) -> f64 {
    if !v.is_finite() || v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|m| *m >= v * (1.0 - 1e-12))
        .unwrap_or(10.0 * p)
}

/// How many grid steps divide `0..=top` into round numbers (`top` from [`nice_max`]).
fn divisions(top: f64) -> u32 {
    let lead = top / 10f64.powf(top.log10().floor());
    if (lead - 2.0).abs() < 1e-9 {
        4
    } else {
        5
    }
}

/// A number as an axis label: 1.2k, 35, 0.25.
pub(crate) fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The horizontal grid lines from 0 to `top` in round steps, each labelled on the left.
fn y_grid(svg: &mut String, top: f64, label: impl Fn(f64) -> String) {
    let plot_w = W - LEFT - 8.0;
    let plot_h = H - TOP - BOTTOM;
    let steps = divisions(top);
    for i in 0..=steps {
        let v = top * f64::from(i) / f64::from(steps);
        let y = TOP + plot_h * (1.0 - f64::from(i) / f64::from(steps));
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}"/><text class="axis" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0,
            esc(&label(v))
        );
    }
}

/// A line chart of `series` at `times` (Unix seconds, oldest first); the x axis spans the last hour.
pub(crate) fn line_chart(
    id: &str,
    title: &str,
    unit: &str,
    times: &[u64],
    series: &[Series],
) -> String {
    let mut svg = String::with_capacity(4096);
    let _ = write!(
        svg,
        r#"<figure class="chart"><figcaption>{}</figcaption><svg id="{}" class="line-chart" viewBox="0 0 {W} {H}" role="img" aria-label="{}">"#,
        esc(title),
        esc(id),
        esc(title)
    );
    let top = nice_max(
        series
            .iter()
            .flat_map(|s| s.values.iter().copied())
            .fold(0.0, f64::max),
    );
    let plot_w = W - LEFT - 8.0;
    let plot_h = H - TOP - BOTTOM;
    y_grid(&mut svg, top, |v| format!("{}{unit}", short(v)));
    for (i, label) in ["-60 min", "-45", "-30", "-15", "now"].iter().enumerate() {
        let x = LEFT + plot_w * i as f64 / 4.0;
        let _ = write!(
            svg,
            r#"<text class="axis" x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            H - 8.0
        );
    }
    let Some(&now) = times.last() else {
        let _ = write!(
            svg,
            r#"<text class="empty" x="{:.1}" y="{:.1}" text-anchor="middle">collecting data</text></svg></figure>"#,
            LEFT + plot_w / 2.0,
            TOP + plot_h / 2.0
        );
        return svg;
    };
    let x_of = |t: u64| LEFT + plot_w * (1.0 - (now.saturating_sub(t) as f64 / 3600.0).min(1.0));
    for s in series {
        let mut points = String::new();
        for (t, v) in times.iter().zip(&s.values) {
            let y = TOP + plot_h * (1.0 - (v / top).clamp(0.0, 1.0));
            let _ = write!(points, "{:.1},{y:.1} ", x_of(*t));
        }
        let _ = write!(
            svg,
            r#"<polyline class="series" fill="none" stroke="{}" stroke-width="2" points="{}"><title>{}</title></polyline>"#,
            esc(s.color),
            points.trim_end(),
            esc(s.name)
        );
        // The latest value as a dot, so a line of one point (the first minutes) still shows.
        if let (Some(t), Some(v)) = (times.last(), s.values.last()) {
            let _ = write!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"#,
                x_of(*t),
                TOP + plot_h * (1.0 - (v / top).clamp(0.0, 1.0)),
                esc(s.color)
            );
        }
    }
    svg.push_str("</svg>");
    legend(&mut svg, unit, series);
    svg.push_str("</figure>");
    svg
}

/// Each series' color, name and latest value under a chart.
fn legend(svg: &mut String, unit: &str, series: &[Series]) {
    svg.push_str("<div class=\"legend\">");
    for s in series {
        let last = s.values.last().copied().unwrap_or(0.0);
        let _ = write!(
            svg,
            r#"<span><i style="background:{}"></i>{} <b>{}{}</b></span>"#,
            esc(s.color),
            esc(s.name),
            esc(&short(last)),
            esc(unit)
        );
    }
    svg.push_str("</div>");
}

/// The distribution of a feature in training and in the drift window: a pair of bars per bin (below the training
/// range, its equal-width bins, above it).
pub(crate) fn drift_chart(
    feature: &str,
    min: f64,
    max: f64,
    train: &[f64],
    live: &[f64],
    psi: f64,
    ks: f64,
) -> String {
    let mut svg = String::with_capacity(4096);
    let title = format!("{feature}: PSI {psi:.3}, KS {ks:.3}");
    let alarm = if psi > 0.2 { " drifted" } else { "" };
    let _ = write!(
        svg,
        r#"<figure class="chart{alarm}"><figcaption>{}</figcaption><svg class="drift-chart" data-feature="{}" viewBox="0 0 {W} {H}" role="img" aria-label="{}">"#,
        esc(&title),
        esc(feature),
        esc(&title)
    );
    let bins = train.len().max(live.len()).max(1);
    let top = nice_max(train.iter().chain(live).copied().fold(0.0, f64::max));
    let plot_w = W - LEFT - 8.0;
    let plot_h = H - TOP - BOTTOM;
    y_grid(&mut svg, top, |v| format!("{:.0}%", v * 100.0));
    let slot = plot_w / bins as f64;
    let bar = slot * 0.38;
    for b in 0..bins {
        let x0 = LEFT + slot * b as f64;
        for (k, (values, class)) in [(train, "train"), (live, "live")].iter().enumerate() {
            let v = values.get(b).copied().unwrap_or(0.0);
            let h = plot_h * (v / top).clamp(0.0, 1.0);
            let _ = write!(
                svg,
                r#"<rect class="{class}" x="{:.1}" y="{:.1}" width="{bar:.1}" height="{h:.1}"><title>{class}: {:.1}%</title></rect>"#,
                x0 + slot * 0.1 + bar * k as f64,
                TOP + plot_h - h,
                v * 100.0
            );
        }
        // Bin edges: the outer bins are everything below and above the training range.
        let inner = bins.saturating_sub(2).max(1) as f64;
        let label = if b == 0 {
            format!("<{}", short(min))
        } else if b + 1 == bins {
            format!(">{}", short(max))
        } else {
            short(min + (max - min) * (b as f64 - 0.5) / inner)
        };
        let _ = write!(
            svg,
            r#"<text class="axis" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x0 + slot / 2.0,
            H - 8.0,
            esc(&label)
        );
    }
    svg.push_str(
        r#"</svg><div class="legend"><span><i class="train"></i>training</span><span><i class="live"></i>drift window</span></div></figure>"#,
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_and_shapes() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(10.0), 10.0);
        assert_eq!(nice_max(1234.0), 2000.0);
        assert_eq!(nice_max(0.3), 0.5);
        assert_eq!(short(98_765.0), "99k");
        assert_eq!(short(1500.0), "1.5k");
        assert_eq!(short(0.25), "0.25");

        let chart = line_chart(
            "t",
            "a <b>",
            "/s",
            &[100, 110, 120],
            &[Series {
                name: "x",
                color: "#123",
                values: vec![1.0, 2.0, 3.0],
            }],
        );
        assert!(chart.contains("a &lt;b&gt;"));
        assert_eq!(chart.matches("<polyline").count(), 1);
        assert!(line_chart("t", "t", "", &[], &[]).contains("collecting data"));

        let train = vec![0.0, 0.1, 0.2, 0.3, 0.2, 0.1, 0.05, 0.05, 0.0, 0.0, 0.0, 0.0];
        let live = vec![0.0; 12];
        let d = drift_chart("f\"1", 0.0, 10.0, &train, &live, 0.5, 0.3);
        assert_eq!(d.matches("<rect").count(), 24);
        assert!(d.contains("drifted") && d.contains("f&quot;1"));
    }
}

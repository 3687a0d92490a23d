//! Charts as inline SVG, drawn on the server: a line chart (values over time with an interval
//! band and a tolerance line), a pipeline's job graph, and bars. Text is escaped here.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// `<`, `>`, `&` and quotes escaped for SVG text and attributes.
pub fn escape(text: &str) -> String {
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

/// One line of a chart: `(x, y)` points in order of x; a missing y breaks the line.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    /// A CSS colour.
    pub color: &'static str,
    pub points: Vec<(f64, Option<f64>)>,
}

/// What a line chart draws besides its lines.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// An interval around the first series: `(x, lower, upper)`.
    pub band: Vec<(f64, f64, f64)>,
    /// A dashed line a series must stay under (`(x, y)`, drawn as steps).
    pub limit: Vec<(f64, f64)>,
    /// How y values read (`%`, ` ms`): the axis labels multiply by 100 for `%`.
    pub unit: &'static str,
    /// How x values read: seconds since the first point.
    pub x_label: &'static str,
}

const W: f64 = 640.0;
const H: f64 = 220.0;
const LEFT: f64 = 58.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 36.0;

fn label(value: f64, unit: &str) -> String {
    let shown = if unit == "%" { value * 100.0 } else { value };
    let digits = if shown.abs() >= 100.0 {
        0
    } else if shown.abs() >= 1.0 {
        1
    } else {
        3
    };
    format!("{shown:.digits$}{unit}")
}

/// A line chart of `series`, with `extras`, titled `title` (for screen readers too).
pub fn line_chart(title: &str, series: &[Series], extras: &Extras) -> String {
    let xs = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .chain(extras.band.iter().map(|b| b.0))
        .chain(extras.limit.iter().map(|l| l.0));
    let ys = series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|p| p.1))
        .chain(extras.band.iter().flat_map(|b| [b.1, b.2]))
        .chain(extras.limit.iter().map(|l| l.1));
    let (x0, x1) = bounds(xs);
    let highest = ys.filter(|y| y.is_finite()).fold(0.0, f64::max);
    let (y0, y1) = (0.0, if highest > 0.0 { highest * 1.1 } else { 1.0 });
    let x = |v: f64| LEFT + (v - x0) / (x1 - x0).max(1e-9) * (W - LEFT - RIGHT);
    let y = |v: f64| TOP + (1.0 - (v.clamp(y0, y1) - y0) / (y1 - y0)) * (H - TOP - BOTTOM);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg viewBox="0 0 {W} {H}" role="img" aria-label="{t}" class="chart"><title>{t}</title>"#,
        t = escape(title)
    );
    for i in 0..=4 {
        let v = y0 + (y1 - y0) * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#d0d7de"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 4.0,
            y(v) + 4.0,
            escape(&label(v, extras.unit)),
            yy = y(v)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{LEFT}" y="{}">0</text><text x="{}" y="{}" text-anchor="end">{} {}</text>"#,
        H - 18.0,
        W - RIGHT,
        H - 18.0,
        escape(&crate::duration((x1 - x0).round() as i64)),
        escape(extras.x_label)
    );
    if !extras.band.is_empty() {
        let upper: Vec<String> = extras
            .band
            .iter()
            .map(|b| format!("{:.1},{:.1}", x(b.0), y(b.2)))
            .collect();
        let lower: Vec<String> = extras
            .band
            .iter()
            .rev()
            .map(|b| format!("{:.1},{:.1}", x(b.0), y(b.1)))
            .collect();
        let _ = write!(
            svg,
            r#"<polygon points="{} {}" fill="{}" fill-opacity="0.18"><title>confidence interval</title></polygon>"#,
            upper.join(" "),
            lower.join(" "),
            series.first().map_or("#0a58ca", |s| s.color)
        );
    }
    if !extras.limit.is_empty() {
        let mut d = String::new();
        for (i, (lx, ly)) in extras.limit.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1} ",
                if i == 0 { "M" } else { "H" },
                x(*lx),
                y(*ly)
            );
            let _ = write!(d, "V{:.1} ", y(*ly));
        }
        let last = extras.limit.last().map_or(0.0, |l| l.1);
        let _ = write!(d, "H{:.1}", x(x1));
        let _ = write!(
            svg,
            r##"<path d="{d}" fill="none" stroke="#a40e26" stroke-dasharray="5 4" stroke-width="1.5"><title>tolerance {}</title></path>"##,
            escape(&label(last, extras.unit))
        );
    }
    for s in series {
        let mut d = String::new();
        let mut pen_up = true;
        for (px, py) in &s.points {
            match py {
                Some(v) if v.is_finite() => {
                    let _ = write!(d, "{}{:.1},{:.1} ", if pen_up { "M" } else { "L" }, x(*px), y(*v));
                    pen_up = false;
                }
                _ => pen_up = true,
            }
        }
        let _ = write!(
            svg,
            r#"<path d="{d}" fill="none" stroke="{}" stroke-width="2"><title>{}</title></path>"#,
            s.color,
            escape(&s.name)
        );
        for (px, py) in &s.points {
            if let Some(v) = py.filter(|v| v.is_finite()) {
                let _ = write!(
                    svg,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{}"><title>{}: {}</title></circle>"#,
                    x(*px),
                    y(v),
                    s.color,
                    escape(&s.name),
                    escape(&label(v, extras.unit))
                );
            }
        }
    }
    // The legend.
    let mut lx = LEFT;
    for s in series {
        let _ = write!(
            svg,
            r#"<rect x="{lx:.1}" y="{}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{}">{}</text>"#,
            H - 12.0,
            s.color,
            lx + 14.0,
            H - 3.0,
            escape(&s.name)
        );
        lx += 24.0 + 7.0 * s.name.chars().count() as f64;
    }
    if !extras.limit.is_empty() {
        let _ = write!(
            svg,
            r##"<line x1="{lx:.1}" x2="{:.1}" y1="{}" y2="{}" stroke="#a40e26" stroke-dasharray="5 4"/><text x="{:.1}" y="{}">tolerance</text>"##,
            lx + 12.0,
            H - 7.0,
            H - 7.0,
            lx + 16.0,
            H - 3.0
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The smallest and largest of `values`, `(0, 1)` when there are none, never an empty span.
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if lo.is_finite() {
        (lo, if hi > lo { hi } else { lo + 1.0 })
    } else {
        (0.0, 1.0)
    }
}

/// One job of a graph: its name, status (a CSS class suffix), the jobs it needs, and where its
/// box links to.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub status: String,
    pub needs: Vec<String>,
    pub href: String,
}

const NODE_W: f64 = 150.0;
const NODE_H: f64 = 34.0;
const GAP_X: f64 = 50.0;
const GAP_Y: f64 = 14.0;

/// Colours of a job's box by status: (fill, stroke).
fn node_colors(status: &str) -> (&'static str, &'static str) {
    match status {
        "success" => ("#dafbe1", "#116329"),
        "failed" => ("#ffebe9", "#a40e26"),
        "running" => ("#ddf4ff", "#0550ae"),
        "skipped" | "cancelled" => ("#fff8c5", "#7d4e00"),
        _ => ("#f6f8fa", "#57606a"),
    }
}

/// The jobs as a graph, left to right: each column holds the jobs whose longest chain of needs
/// has that length; an arrow from each need.
pub fn graph(nodes: &[Node]) -> String {
    let index: BTreeMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    // Longest chain of needs, without following a cycle (the spec refuses them anyway).
    let mut depth = vec![0usize; nodes.len()];
    for _ in 0..nodes.len() {
        for (i, n) in nodes.iter().enumerate() {
            for need in &n.needs {
                if let Some(&j) = index.get(need.as_str()) {
                    depth[i] = depth[i].max((depth[j] + 1).min(nodes.len()));
                }
            }
        }
    }
    let mut rows = vec![0usize; nodes.len() + 1];
    let mut place = vec![(0.0, 0.0); nodes.len()];
    for (i, d) in depth.iter().enumerate() {
        place[i] = (
            10.0 + *d as f64 * (NODE_W + GAP_X),
            10.0 + rows[*d] as f64 * (NODE_H + GAP_Y),
        );
        rows[*d] += 1;
    }
    let columns = depth.iter().max().map_or(1, |d| d + 1);
    let tallest = rows.iter().max().copied().unwrap_or(1).max(1);
    let width = 20.0 + columns as f64 * NODE_W + (columns - 1) as f64 * GAP_X;
    let height = 20.0 + tallest as f64 * NODE_H + (tallest - 1) as f64 * GAP_Y;
    let mut svg = format!(
        r#"<svg viewBox="0 0 {width} {height}" width="{width}" role="img" aria-label="Jobs and what they need" class="graph"><title>Jobs and what they need</title>"#
    );
    for (i, n) in nodes.iter().enumerate() {
        for need in &n.needs {
            if let Some(&j) = index.get(need.as_str()) {
                let (fx, fy) = place[j];
                let (tx, ty) = place[i];
                let _ = write!(
                    svg,
                    r##"<path d="M{:.1},{:.1} C{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}" fill="none" stroke="#8c959f" stroke-width="1.5"/>"##,
                    fx + NODE_W,
                    fy + NODE_H / 2.0,
                    fx + NODE_W + GAP_X / 2.0,
                    fy + NODE_H / 2.0,
                    tx - GAP_X / 2.0,
                    ty + NODE_H / 2.0,
                    tx,
                    ty + NODE_H / 2.0
                );
            }
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        let (x, y) = place[i];
        let (fill, stroke) = node_colors(&n.status);
        let name: String = n.name.chars().take(20).collect();
        let _ = write!(
            svg,
            r#"<a href="{}"><g class="job" data-job="{}" data-status="{}"><rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="6" fill="{fill}" stroke="{stroke}" stroke-width="1.5"/><text x="{:.1}" y="{:.1}">{}</text><text x="{:.1}" y="{:.1}" fill="{stroke}">{}</text></g></a>"#,
            escape(&n.href),
            escape(&n.name),
            escape(&n.status),
            x + 8.0,
            y + 14.0,
            escape(&name),
            x + 8.0,
            y + 28.0,
            escape(&n.status)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Bars, one per `(label, value)`, of a series over time (DORA's weeks).
pub fn bars(title: &str, values: &[(String, f64)], unit: &'static str) -> String {
    let max = values.iter().map(|v| v.1).fold(0.0, f64::max).max(1e-9);
    let (w, h) = (320.0, 120.0);
    let slot = (w - 20.0) / values.len().max(1) as f64;
    let mut svg = format!(
        r#"<svg viewBox="0 0 {w} {h}" role="img" aria-label="{t}" class="bars"><title>{t}</title>"#,
        t = escape(title)
    );
    for (i, (name, value)) in values.iter().enumerate() {
        let bar = (h - 30.0) * value / max;
        let x = 10.0 + i as f64 * slot;
        let _ = write!(
            svg,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{bar:.1}" fill="#0a58ca"><title>{}: {}</title></rect>"##,
            x + 2.0,
            h - 20.0 - bar,
            (slot - 4.0).max(1.0),
            escape(name),
            escape(&label(*value, unit))
        );
    }
    if let (Some(first), Some(last)) = (values.first(), values.last()) {
        let _ = write!(
            svg,
            r#"<text x="10" y="{}">{}</text><text x="{}" y="{}" text-anchor="end">{}</text>"#,
            h - 5.0,
            escape(&first.0),
            w - 10.0,
            h - 5.0,
            escape(&last.0)
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_in_charts_is_escaped() {
        let svg = line_chart(
            "<script>",
            &[Series {
                name: "a&b".into(),
                color: "red",
                points: vec![(0.0, Some(1.0)), (1.0, None), (2.0, Some(0.5))],
            }],
            &Extras::default(),
        );
        assert!(svg.contains("&lt;script&gt;") && svg.contains("a&amp;b"));
        assert!(!svg.contains("<script>"));
        // A missing point breaks the line: two pen-downs.
        assert_eq!(svg.matches(" M").count() + svg.matches("\"M").count(), 2);
    }

    #[test]
    fn a_graph_puts_each_job_after_its_longest_chain_of_needs() {
        let node = |name: &str, needs: &[&str]| Node {
            name: name.into(),
            status: "success".into(),
            needs: needs.iter().map(|n| n.to_string()).collect(),
            href: format!("#{name}"),
        };
        let svg = graph(&[
            node("build", &[]),
            node("test", &["build"]),
            node("lint", &[]),
            node("ship", &["test", "lint"]),
        ]);
        // ship is in the third column: x = 10 + 2 × (150 + 50).
        assert!(
            svg.contains(r#"data-job="ship" data-status="success"><rect x="410""#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"data-job="lint" data-status="success"><rect x="10" y="58""#),
            "{svg}"
        );
        assert_eq!(svg.matches("<path").count(), 3);
    }
}

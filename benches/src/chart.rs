//! Bar charts of a report as standalone SVG (no fonts or scripts fetched):
//! groups of horizontal bars, one colour per series, each bar labelled with
//! its value, and optionally a marker per group (a ceiling).

use std::fmt::Write;

/// One group of bars (e.g. a weight precision) and, optionally, a marker value drawn across it.
pub struct Group {
    pub label: String,
    /// `(series, value)`; a missing series is left out of the group.
    pub bars: Vec<(usize, f64)>,
    pub marker: Option<f64>,
}

pub struct Chart {
    pub title: String,
    pub unit: String,
    pub series: Vec<String>,
    pub groups: Vec<Group>,
    /// What the marker stands for, in the legend.
    pub marker_label: Option<String>,
}

const COLOURS: [&str; 6] = ["#2b6cb0", "#dd6b20", "#38a169", "#805ad5", "#d53f8c", "#718096"];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

impl Chart {
    pub fn svg(&self) -> String {
        let (left, width, bar, gap) = (150.0, 520.0, 16.0, 14.0);
        let max = self
            .groups
            .iter()
            .flat_map(|g| g.bars.iter().map(|b| b.1).chain(g.marker))
            .fold(0f64, f64::max)
            .max(f64::MIN_POSITIVE);
        let legend = 22.0 * (self.series.len() + usize::from(self.marker_label.is_some())) as f64;
        let body: f64 = self.groups.iter().map(|g| g.bars.len().max(1) as f64 * bar + gap).sum();
        let height = 50.0 + body + legend + 20.0;
        let total = left + width + 110.0;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="{height}" viewBox="0 0 {total} {height}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="10" y="22" font-size="15" font-weight="bold">{} ({})</text>"#,
            escape(&self.title),
            escape(&self.unit)
        );
        let mut y = 40.0;
        for g in &self.groups {
            let h = g.bars.len().max(1) as f64 * bar;
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
                left - 8.0,
                y + h / 2.0 + 4.0,
                escape(&g.label)
            );
            for (i, &(series, v)) in g.bars.iter().enumerate() {
                let w = v / max * width;
                let by = y + i as f64 * bar;
                let _ = writeln!(
                    s,
                    r#"<rect x="{left}" y="{by}" width="{w:.1}" height="{}" fill="{}"/>"#,
                    bar - 2.0,
                    COLOURS[series % COLOURS.len()]
                );
                let _ = writeln!(s, r#"<text x="{:.1}" y="{}">{}</text>"#, left + w + 4.0, by + bar - 5.0, number(v));
            }
            if let Some(m) = g.marker {
                let x = left + m / max * width;
                let _ = writeln!(
                    s,
                    r#"<line x1="{x:.1}" x2="{x:.1}" y1="{}" y2="{}" stroke="black" stroke-width="2" stroke-dasharray="4 2"/>"#,
                    y - 3.0,
                    y + h + 1.0
                );
            }
            y += h + gap;
        }
        for (i, name) in self.series.iter().enumerate() {
            let ly = y + 10.0 + 22.0 * i as f64;
            let _ = writeln!(
                s,
                r#"<rect x="{left}" y="{}" width="14" height="14" fill="{}"/>"#,
                ly - 11.0,
                COLOURS[i % COLOURS.len()]
            );
            let _ = writeln!(s, r#"<text x="{}" y="{ly}">{}</text>"#, left + 20.0, escape(name));
        }
        if let Some(m) = &self.marker_label {
            let ly = y + 10.0 + 22.0 * self.series.len() as f64;
            let _ = writeln!(
                s,
                r#"<line x1="{left}" x2="{}" y1="{}" y2="{}" stroke="black" stroke-width="2" stroke-dasharray="4 2"/>"#,
                left + 14.0,
                ly - 4.0,
                ly - 4.0
            );
            let _ = writeln!(s, r#"<text x="{}" y="{ly}">{}</text>"#, left + 20.0, escape(m));
        }
        s.push_str("</svg>\n");
        s
    }
}

fn number(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_value_and_text_is_escaped() {
        let c = Chart {
            title: "a <b>".into(),
            unit: "ms".into(),
            series: vec!["x".into(), "y".into()],
            groups: vec![Group { label: "g".into(), bars: vec![(0, 50.0), (1, 100.0)], marker: Some(25.0) }],
            marker_label: Some("ceiling".into()),
        };
        let svg = c.svg();
        assert!(svg.contains("a &lt;b&gt;") && !svg.contains("a <b>"));
        assert!(svg.contains(r#"width="260.0""#) && svg.contains(r#"width="520.0""#), "{svg}");
        assert!(svg.contains("stroke-dasharray") && svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
    }
}

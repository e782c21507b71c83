//! Charts as inline SVG: drawn by the browser with scripts off, nothing fetched. Each mark
//! carries a `<title>` with its figure, so hovering reads the value.

use std::fmt::Write;

use html_escape::encode_text as esc;

/// Monthly shares (0..=1, None: nothing to count) as bars on a 0–100 % scale.
pub fn bars(id: &str, months: &[(String, Option<f64>)]) -> String {
    let (w, h, pad) = (360.0, 120.0, 18.0);
    let step = (w - pad) / months.len().max(1) as f64;
    let mut out = format!(
        r#"<svg class="chart" data-chart="{id}" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" xmlns="http://www.w3.org/2000/svg">"#
    );
    let base = h - pad;
    for y in [0.0, 0.5, 1.0] {
        let at = base - y * (base - 4.0);
        let _ = write!(
            out,
            r##"<line x1="{pad}" x2="{w}" y1="{at:.1}" y2="{at:.1}" stroke="#ccc" stroke-width="0.5"/><text x="0" y="{:.1}" font-size="8">{:.0}</text>"##,
            at + 3.0,
            y * 100.0
        );
    }
    for (i, (label, value)) in months.iter().enumerate() {
        let x = pad + i as f64 * step + 2.0;
        let short = label.get(5..).unwrap_or(label);
        let _ = write!(out, r#"<text x="{:.1}" y="{}" font-size="8">{}</text>"#, x, h - 4.0, esc(short));
        match value {
            Some(v) => {
                let bar = v.clamp(0.0, 1.0) * (base - 4.0);
                let _ = write!(
                    out,
                    r##"<rect class="bar" x="{x:.1}" y="{:.1}" width="{:.1}" height="{bar:.1}" fill="#2b6cb0"><title>{}: {:.2} %</title></rect>"##,
                    base - bar,
                    (step - 4.0).max(1.0),
                    esc(label),
                    v * 100.0
                );
            }
            None => {
                let _ = write!(out, r#"<text x="{x:.1}" y="{:.1}" font-size="8">–</text>"#, base - 2.0);
            }
        }
    }
    out.push_str("</svg>");
    out
}

/// A small line of monthly shares, for a table cell.
pub fn sparkline(values: &[Option<f64>]) -> String {
    let (w, h) = (84.0, 20.0);
    let step = w / values.len().max(1) as f64;
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| {
            v.map(|v| {
                format!("{:.1},{:.1}", i as f64 * step + step / 2.0, h - 2.0 - v.clamp(0.0, 1.0) * (h - 4.0))
            })
        })
        .collect();
    let mut out = format!(
        r#"<svg class="spark" viewBox="0 0 {w} {h}" width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg">"#
    );
    if points.len() > 1 {
        let _ = write!(
            out,
            r##"<polyline fill="none" stroke="#2b6cb0" stroke-width="1.2" points="{}"/>"##,
            points.join(" ")
        );
    }
    if let Some(last) = points.last() {
        let (x, y) = last.split_once(',').unwrap_or(("0", "0"));
        let _ = write!(out, r##"<circle cx="{x}" cy="{y}" r="1.8" fill="#2b6cb0"/>"##);
    }
    out.push_str("</svg>");
    out
}

/// Monthly late dossiers, stacked by cause: at the source below, by synchronisation above.
pub fn late_by_cause(months: &[(String, u64, u64)], source: &str, sync: &str) -> String {
    let (w, h, pad) = (360.0, 120.0, 18.0);
    let most = months.iter().map(|(_, a, b)| a + b).max().unwrap_or(0).max(1) as f64;
    let step = (w - pad) / months.len().max(1) as f64;
    let base = h - pad;
    let mut out = format!(
        r#"<svg class="chart" data-chart="late" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" xmlns="http://www.w3.org/2000/svg">"#
    );
    let _ = write!(out, r#"<text x="0" y="10" font-size="8">{most:.0}</text>"#);
    for (i, (label, a, b)) in months.iter().enumerate() {
        let x = pad + i as f64 * step + 2.0;
        let short = label.get(5..).unwrap_or(label);
        let _ = write!(out, r#"<text x="{x:.1}" y="{}" font-size="8">{}</text>"#, h - 4.0, esc(short));
        let (ha, hb) = (*a as f64 / most * (base - 12.0), *b as f64 / most * (base - 12.0));
        let width = (step - 4.0).max(1.0);
        let _ = write!(
            out,
            r##"<rect class="bar" x="{x:.1}" y="{:.1}" width="{width:.1}" height="{ha:.1}" fill="#718096"><title>{}: {a} {}</title></rect>"##,
            base - ha,
            esc(label),
            esc(source)
        );
        let _ = write!(
            out,
            r##"<rect class="bar" x="{x:.1}" y="{:.1}" width="{width:.1}" height="{hb:.1}" fill="#c53030"><title>{}: {b} {}</title></rect>"##,
            base - ha - hb,
            esc(label),
            esc(sync)
        );
    }
    out.push_str("</svg>");
    out
}

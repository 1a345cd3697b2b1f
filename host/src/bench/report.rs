//! report.html: one self-contained page (no external file, script or font)
//! with the machine's context and warnings, the summary table, the notes and
//! failures, and every plot's SVG inlined.

use std::path::Path;

use super::output::{put, OutputError};
use super::plots::Plot;
use super::summary::Summary;

pub const REPORT_HTML: &str = "report.html";

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Writes `dir/report.html`.
pub fn write(
    dir: &Path,
    summary: &Summary,
    plots: &[Plot],
    plot_error: Option<&str>,
) -> Result<(), OutputError> {
    put(
        &dir.join(REPORT_HTML),
        html(summary, plots, plot_error).as_bytes(),
    )
}

fn html(summary: &Summary, plots: &[Plot], plot_error: Option<&str>) -> String {
    let mut h = String::new();
    h.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str(&format!(
        "<title>ember bench {}</title>",
        esc(&summary.scenario)
    ));
    h.push_str(
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px;color:#222}\
         table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}\
         td:first-child,th:first-child{text-align:left}.warn{background:#fdd;border:2px solid #c00;padding:.6em;font-weight:bold}\
         .fail{color:#a00;font-weight:bold}figure{margin:1.5em 0}svg{max-width:100%;height:auto}</style></head><body>\n",
    );
    h.push_str(&format!(
        "<h1>ember bench {}</h1>\n",
        esc(&summary.scenario)
    ));
    h.push_str(&format!(
        "<p>{} measured runs per case after {} warm-up, cases interleaved, seed {}. Ratios: median (p90) over the baseline <b>{}</b> from the same run.</p>\n",
        summary.runs,
        summary.warmup,
        summary.seed,
        esc(summary.baseline.as_deref().unwrap_or("-"))
    ));
    h.push_str(&format!(
        "<p>Machine: {}</p>\n",
        esc(&summary.context.one_line())
    ));
    for w in &summary.context.warnings {
        h.push_str(&format!("<p class=\"warn\">WARNING: {}</p>\n", esc(w)));
    }
    h.push_str("<table><tr><th>case</th><th>ok</th><th>failed</th><th>median ms</th><th>p90 ms</th><th>p99 ms</th><th>min ms</th><th>max ms</th><th>ratio</th><th>peak RSS MiB</th><th>boot timer ms</th></tr>\n");
    let f = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.2}"));
    for c in &summary.cases {
        let w = c.wall_ms;
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            esc(&c.case),
            c.ok,
            c.failed,
            f(w.map(|d| d.median)),
            f(w.map(|d| d.p90)),
            f(w.map(|d| d.p99)),
            f(w.map(|d| d.min)),
            f(w.map(|d| d.max)),
            match (c.ratio_median, c.ratio_p90) {
                (Some(m), Some(p)) => format!("{m:.2}x ({p:.2}x)"),
                _ => "-".into(),
            },
            f(c.peak_rss_mib.map(|d| d.median)),
            f(c.boot_timer_ms.map(|d| d.median)),
        ));
    }
    h.push_str("</table>\n");
    for n in &summary.notes {
        h.push_str(&format!("<p>Note: {}</p>\n", esc(n)));
    }
    for (case, why) in &summary.dropped {
        h.push_str(&format!(
            "<p class=\"fail\">FAILED: {} was dropped after repeated failures: {}</p>\n",
            esc(case),
            esc(why)
        ));
    }
    if let Some(e) = plot_error {
        h.push_str(&format!("<p class=\"fail\">No plots: {}</p>\n", esc(e)));
    }
    for p in plots {
        let svg = std::fs::read_to_string(&p.svg).unwrap_or_default();
        // Inline: drop the XML declaration, keep the <svg> element.
        let body = svg.find("<svg").map_or("", |i| &svg[i..]);
        h.push_str(&format!(
            "<figure id=\"{}\">{}<figcaption>{} (also {} and {})</figcaption></figure>\n",
            esc(&p.name),
            body,
            esc(&p.title),
            esc(&file_name(&p.svg)),
            esc(&file_name(&p.png))
        ));
    }
    h.push_str("<p>Raw per-run records: raw.jsonl, raw.csv; summary: summary.json, summary.md.</p>\n</body></html>\n");
    h
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

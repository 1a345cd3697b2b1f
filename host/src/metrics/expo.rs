//! The Prometheus text exposition format (version 0.0.4), written by hand:
//! `# HELP` / `# TYPE` headers, escaped label values, numbers as the format
//! spells them (`+Inf`, `NaN`), and cumulative histograms (`_bucket{le=}`,
//! `_sum`, `_count`).

use std::fmt::Write;
use std::time::Duration;

/// The content type a scraper negotiates for this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A histogram with fixed upper bounds (seconds). Counts are per bucket
/// (not cumulative) so an observation touches one slot; the encoder sums.
#[derive(Clone, Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        // Values above the last bound only show in `+Inf` (= `_count`).
        self.sum += v;
        self.count += 1;
    }

    pub fn observe_duration(&mut self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

/// Escapes a label value: backslash, double quote and line feed.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes `# HELP` text: backslash and line feed.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value as the format spells it.
pub fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        // Rust's shortest round-trip form ("3", "0.25", "1e-7") parses as a Go float.
        format!("{v}")
    }
}

/// Label pairs rendered as `{a="x",b="y"}` (empty when there are none).
fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// Builds one exposition document. Each metric family is opened once with
/// [`Encoder::family`], then its samples follow (the format requires a
/// family's lines to be contiguous).
#[derive(Default)]
pub struct Encoder {
    out: String,
}

impl Encoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    pub fn sample(&mut self, name: &str, pairs: &[(&str, &str)], v: f64) {
        let _ = writeln!(self.out, "{name}{} {}", labels(pairs), number(v));
    }

    /// A family of one unlabelled gauge and its value.
    pub fn gauge(&mut self, name: &str, help: &str, v: f64) {
        self.family(name, Kind::Gauge, help);
        self.sample(name, &[], v);
    }

    /// The `_bucket` (cumulative, ending with `+Inf`), `_sum` and `_count`
    /// lines of one histogram series.
    pub fn histogram(&mut self, name: &str, pairs: &[(&str, &str)], h: &Histogram) {
        let mut cumulative = 0;
        for (bound, n) in h.bounds.iter().zip(&h.counts) {
            cumulative += n;
            self.bucket(name, pairs, &number(*bound), cumulative);
        }
        self.bucket(name, pairs, "+Inf", h.count);
        self.sample(&format!("{name}_sum"), pairs, h.sum);
        self.sample(&format!("{name}_count"), pairs, h.count as f64);
    }

    fn bucket(&mut self, name: &str, pairs: &[(&str, &str)], le: &str, n: u64) {
        let mut with_le = pairs.to_vec();
        with_le.push(("le", le));
        let _ = writeln!(self.out, "{name}_bucket{} {n}", labels(&with_le));
    }

    pub fn finish(self) -> String {
        self.out
    }
}

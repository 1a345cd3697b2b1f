//! Registry and exposition-format tests: escaping, numbers, cumulative
//! histogram buckets, family grouping, the concurrency guard, forgetting a
//! deleted function's series, and the host view built from the pool list.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::expo::{escape_label, number, Encoder, Histogram, Kind};
use super::*;
use crate::pool::{EnvInfo, EnvState, VersionKey};

/// The value of the sample line starting with `prefix ` (exact series).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| match v {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap(),
        })
}

#[test]
fn label_values_are_escaped() {
    assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
    assert_eq!(escape_label("x\ny"), "x\\ny");
    let mut e = Encoder::new();
    e.family("m", Kind::Gauge, "help with \\ and\nnewline");
    e.sample("m", &[("function", "q\"\n")], 1.0);
    let out = e.finish();
    assert_eq!(
        out,
        "# HELP m help with \\\\ and\\nnewline\n# TYPE m gauge\nm{function=\"q\\\"\\n\"} 1\n"
    );
}

#[test]
fn numbers_use_the_format_spelling() {
    assert_eq!(number(3.0), "3");
    assert_eq!(number(0.25), "0.25");
    assert_eq!(number(f64::INFINITY), "+Inf");
    assert_eq!(number(f64::NAN), "NaN");
    assert_eq!(number(1e-7).parse::<f64>().unwrap(), 1e-7);
}

#[test]
fn histogram_buckets_are_cumulative_and_end_with_inf() {
    let mut h = Histogram::new(&[0.1, 1.0]);
    for v in [0.05, 0.1, 0.5, 7.0] {
        h.observe(v);
    }
    let mut e = Encoder::new();
    e.histogram("h", &[("function", "f")], &h);
    let out = e.finish();
    assert_eq!(
        value(&out, "h_bucket{function=\"f\",le=\"0.1\"}"),
        Some(2.0)
    );
    assert_eq!(value(&out, "h_bucket{function=\"f\",le=\"1\"}"), Some(3.0));
    assert_eq!(
        value(&out, "h_bucket{function=\"f\",le=\"+Inf\"}"),
        Some(4.0)
    );
    assert_eq!(value(&out, "h_count{function=\"f\"}"), Some(4.0));
    assert!((value(&out, "h_sum{function=\"f\"}").unwrap() - 7.65).abs() < 1e-9);
}

#[test]
fn invocations_errors_throttles_and_durations_are_counted_per_version() {
    let m = Metrics::new();
    let ms = Duration::from_millis;
    m.invocation("f", "$LATEST", Outcome::Success, ms(2), Some(ms(30)));
    m.invocation("f", "$LATEST", Outcome::Error, ms(4), None);
    m.invocation("f", "1", Outcome::Success, ms(600), None);
    m.throttle("f", "$LATEST");
    m.async_event_received("f", "1");
    m.async_event_age("f", "1", Duration::from_secs(2));
    m.async_event_dropped("f", "1");
    m.dead_letter_error("f", "1");
    let out = m.render(&HostView::default());
    let l = "{function=\"f\",version=\"$LATEST\"}";
    let one = "{function=\"f\",version=\"1\"}";
    assert_eq!(
        value(&out, &format!("ember_invocations_total{l}")),
        Some(2.0)
    );
    assert_eq!(value(&out, &format!("ember_errors_total{l}")), Some(1.0));
    assert_eq!(value(&out, &format!("ember_throttles_total{l}")), Some(1.0));
    assert_eq!(
        value(&out, &format!("ember_invocations_total{one}")),
        Some(1.0)
    );
    assert_eq!(
        value(&out, &format!("ember_duration_seconds_count{l}")),
        Some(2.0)
    );
    assert_eq!(
        value(&out, &format!("ember_init_duration_seconds_count{l}")),
        Some(1.0)
    );
    let b = "ember_duration_seconds_bucket{function=\"f\",version=\"1\",le=";
    assert_eq!(value(&out, &format!("{b}\"0.5\"}}")), Some(0.0));
    assert_eq!(value(&out, &format!("{b}\"1\"}}")), Some(1.0));
    for name in [
        "ember_async_events_received_total",
        "ember_async_events_dropped_total",
        "ember_dead_letter_errors_total",
        "ember_async_event_age_seconds_count",
    ] {
        assert_eq!(value(&out, &format!("{name}{one}")), Some(1.0), "{name}");
    }
    assert_eq!(m.invocations("f", "$LATEST"), 2);
}

#[test]
fn every_family_is_declared_once_and_its_lines_are_contiguous() {
    let m = Metrics::new();
    for f in ["a", "b"] {
        m.invocation(f, "$LATEST", Outcome::Success, Duration::ZERO, None);
    }
    let out = m.render(&HostView::default());
    let mut seen = std::collections::HashSet::new();
    let mut current = String::new();
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap().to_string();
            assert!(seen.insert(name.clone()), "{name} declared twice");
            current = name;
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(
                name.starts_with(&current),
                "{name} outside family {current}"
            );
        }
    }
    assert!(seen.len() >= 15, "{seen:?}");
}

#[test]
fn concurrency_guard_counts_running_invocations() {
    let m = Arc::new(Metrics::new());
    let g1 = m.executing("f", "1");
    let g2 = m.executing("f", "1");
    let series = "ember_concurrent_executions{function=\"f\",version=\"1\"}";
    assert_eq!(value(&m.render(&HostView::default()), series), Some(2.0));
    drop(g1);
    drop(g2);
    assert_eq!(value(&m.render(&HostView::default()), series), Some(0.0));
}

#[test]
fn forgetting_a_function_drops_its_series_only() {
    let m = Arc::new(Metrics::new());
    for (f, v) in [("gone", "$LATEST"), ("gone", "1"), ("kept", "1")] {
        m.invocation(f, v, Outcome::Success, Duration::ZERO, None);
    }
    m.forget("gone", Some("1"));
    let out = m.render(&HostView::default());
    assert!(!out.contains("function=\"gone\",version=\"1\""));
    assert!(out.contains("function=\"gone\",version=\"$LATEST\""));
    let guard = m.executing("gone", "$LATEST");
    m.forget("gone", None);
    drop(guard); // after the series is gone: must not bring it back
    let out = m.render(&HostView::default());
    assert!(
        !out.contains("\"gone\"") && out.contains("\"kept\""),
        "{out}"
    );
}

fn env(id: u64, version: &str, state: EnvState, provisioned: bool) -> EnvInfo {
    EnvInfo {
        id,
        key: VersionKey {
            function: "f".into(),
            version: version.into(),
            revision: "r".into(),
        },
        state,
        created: Instant::now(),
        invocations: 0,
        pid: None,
        provisioned,
    }
}

#[test]
fn host_view_counts_states_and_provisioned_utilization() {
    let envs = [
        env(1, "1", EnvState::Busy, true),
        env(2, "1", EnvState::Idle, true),
        env(3, "1", EnvState::Idle, true),
        env(4, "1", EnvState::Starting, true),
        env(5, "$LATEST", EnvState::Busy, false),
    ];
    let out = Metrics::new().render(&HostView::from_envs(&envs));
    assert_eq!(value(&out, "ember_environments{state=\"idle\"}"), Some(2.0));
    assert_eq!(value(&out, "ember_environments{state=\"busy\"}"), Some(2.0));
    assert_eq!(
        value(&out, "ember_environments{state=\"stopping\"}"),
        Some(0.0)
    );
    let u = value(
        &out,
        "ember_provisioned_concurrency_utilization{function=\"f\",version=\"1\"}",
    )
    .unwrap();
    assert!((u - 1.0 / 3.0).abs() < 1e-9, "{u}");
    assert!(!out.contains("utilization{function=\"f\",version=\"$LATEST\"}"));
}

#[test]
fn rss_of_this_process_tree_is_read_from_proc() {
    let me = std::process::id();
    let rss = host::tree_rss(me).expect("own /proc entry");
    assert!(rss > 1 << 20, "{rss}");
    assert_eq!(host::tree_rss(u32::MAX), None);
}

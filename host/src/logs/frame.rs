//! The framed text of one invocation, Lambda's shape: what the function
//! printed during its init phase (first invocation only), `START`, the
//! function's log lines, `END`, `REPORT` (durations, 1 ms billing
//! granularity, memory, `Init Duration` on cold starts only). The same lines
//! go to the on-disk log stream and, as their last 4 KB, into
//! `X-Amz-Log-Result` for `LogType: Tail`.

use std::time::Duration;

use base64::Engine;

use crate::env::Report;
use crate::invoker::call::Outcome;

/// `X-Amz-Log-Result` carries at most the last 4 KB of the log.
pub const TAIL_BYTES: usize = 4096;

/// The lines of one invocation (no trailing newlines; a function line that
/// itself holds newlines becomes several lines).
pub fn lines(o: &Outcome) -> Vec<String> {
    framed(
        &o.request_id,
        &o.version,
        &o.logs,
        o.report,
        o.elapsed,
        o.memory_size,
    )
}

/// [`lines`] from the parts. Duration is the agent's measurement (the
/// host's round trip when there is none); Max Memory Used appears only when
/// the agent measured it (not for an environment that died or never
/// started).
pub fn framed(
    request_id: &str,
    version: &str,
    logs: &[String],
    report: Report,
    elapsed: Duration,
    memory: u32,
) -> Vec<String> {
    let ms = report
        .duration_us
        .map(|us| us as f64 / 1000.0)
        .unwrap_or(elapsed.as_secs_f64() * 1000.0);
    // Lines the function printed during its init phase come before START.
    let (init, invocation) = logs.split_at(report.init_log_lines.min(logs.len()));
    let mut out = Vec::with_capacity(logs.len() + 3);
    push_lines(&mut out, init);
    out.push(format!("START RequestId: {request_id} Version: {version}"));
    push_lines(&mut out, invocation);
    out.push(format!("END RequestId: {request_id}"));
    let mut report_line = format!(
        "REPORT RequestId: {request_id}\tDuration: {ms:.2} ms\tBilled Duration: {} ms\tMemory Size: {memory} MB\t",
        billed_ms(ms)
    );
    if let Some(kib) = report.max_memory_kib {
        report_line.push_str(&format!("Max Memory Used: {} MB\t", kib.div_ceil(1024)));
    }
    if let Some(us) = report.init_us {
        report_line.push_str(&format!("Init Duration: {:.2} ms\t", us as f64 / 1000.0));
    }
    if let Some(us) = report.restore_us {
        // Lambda's SnapStart REPORT: the restore, and what it bills.
        report_line.push_str(&format!(
            "Restore Duration: {:.2} ms\tBilled Restore Duration: {} ms\t",
            us as f64 / 1000.0,
            us.div_ceil(1000)
        ));
    }
    out.push(report_line);
    out
}

/// Appends function log lines; one holding newlines becomes several.
fn push_lines(out: &mut Vec<String>, logs: &[String]) {
    for l in logs {
        out.extend(l.strip_suffix('\n').unwrap_or(l).split('\n').map(|l| {
            // A CR would let a line overwrite the frame on a terminal.
            l.strip_suffix('\r').unwrap_or(l).to_string()
        }));
    }
}

/// Billed duration: rounded up to the next millisecond, at least 1 ms.
pub fn billed_ms(ms: f64) -> u64 {
    (ms.ceil() as u64).max(1)
}

/// Base64 of the last [`TAIL_BYTES`] of the framed text (cut at a character
/// boundary), for `X-Amz-Log-Result`.
pub fn tail_base64(lines: &[String]) -> String {
    let mut text = String::new();
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    let mut start = text.len().saturating_sub(TAIL_BYTES);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    base64::engine::general_purpose::STANDARD.encode(&text.as_bytes()[start..])
}

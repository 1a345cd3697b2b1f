//! Running a VMM once as a benchmark run: exec → exit wall time, the exit
//! status, its output, and its peak RSS. Peak RSS comes from GNU time's
//! wait4 (`/usr/bin/time -f %M`) when it is installed: a child spawned by
//! this (much larger) process directly would report this process's RSS
//! high-water mark, which exec carries over. A run past its deadline is
//! killed with its whole process group.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// GNU time, the launcher that reports a child's own peak RSS.
pub const GNU_TIME: &str = "/usr/bin/time";

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("creating {0}")]
    Scratch(PathBuf, #[source] std::io::Error),
    #[error("cannot start {0}")]
    Spawn(PathBuf, #[source] std::io::Error),
    #[error("waiting for {0}")]
    Wait(PathBuf, #[source] std::io::Error),
}

/// What one run did.
#[derive(Debug, Clone)]
pub struct Ran {
    pub wall_ms: f64,
    /// Exit status; a signal's number negated; `None` when killed at the
    /// deadline.
    pub exit: Option<i32>,
    pub peak_rss_kib: Option<u64>,
    /// Its stdout then stderr (the first 64 KiB of each).
    pub output: String,
}

impl Ran {
    /// The last few lines of output, for an error message.
    pub fn tail(&self) -> String {
        let lines: Vec<&str> = self
            .output
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        lines[lines.len().saturating_sub(3)..].join(" | ")
    }
}

/// Runs `program args` once (stdin closed, output to files in `scratch`),
/// through GNU time when `gnu_time`; killed after `deadline`.
pub fn run(
    program: &Path,
    args: &[String],
    scratch: &Path,
    gnu_time: bool,
    deadline: Duration,
) -> Result<Ran, ProcessError> {
    let out_path = scratch.join("stdout");
    let err_path = scratch.join("stderr");
    let rss_path = scratch.join("rss");
    let create = |p: &Path| File::create(p).map_err(|e| ProcessError::Scratch(p.into(), e));
    let mut cmd = if gnu_time {
        let _ = std::fs::remove_file(&rss_path);
        let mut c = Command::new(GNU_TIME);
        c.arg("-f")
            .arg("%M")
            .arg("-o")
            .arg(&rss_path)
            .arg("--")
            .arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(create(&out_path)?)
        .stderr(create(&err_path)?)
        .process_group(0);
    let start = Instant::now();
    let child = cmd
        .spawn()
        .map_err(|e| ProcessError::Spawn(program.into(), e))?;
    let pid = child.id() as libc::pid_t;
    // A hung VMM must not hang the benchmark: its group is killed at the
    // deadline (the watchdog exits as soon as the wait returns).
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(deadline) == Err(mpsc::RecvTimeoutError::Timeout) {
            // SAFETY: kill(2) of the process group our own not-yet-reaped
            // child leads (process_group(0) made its pid the pgid).
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            return true;
        }
        false
    });
    let mut status = 0;
    // SAFETY: all-zero is a valid `rusage` (plain integers and timevals).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet reaped (std's `Child` is never
    // waited on); `status` and `usage` are valid, writable locals.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    let wait_err = std::io::Error::last_os_error();
    let _ = done_tx.send(());
    let killed = watchdog.join().unwrap_or(false);
    if r != pid {
        return Err(ProcessError::Wait(program.into(), wait_err));
    }
    let read = |p: &Path| {
        let bytes = std::fs::read(p).unwrap_or_default();
        String::from_utf8_lossy(&bytes[..bytes.len().min(64 << 10)]).into_owned()
    };
    let mut exit = if libc::WIFEXITED(status) {
        Some(libc::WEXITSTATUS(status))
    } else {
        Some(-libc::WTERMSIG(status))
    };
    let peak_rss_kib = if gnu_time {
        let text = read(&rss_path);
        // "Command exited with non-zero status N" / "Command terminated by
        // signal N" come first; the last line is %M.
        if let Some(sig) = text
            .lines()
            .find_map(|l| l.strip_prefix("Command terminated by signal "))
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            exit = Some(-sig);
        }
        text.lines().last().and_then(|l| l.trim().parse().ok())
    } else {
        Some(usage.ru_maxrss as u64)
    };
    if killed {
        exit = None;
    }
    Ok(Ran {
        wall_ms: wall.as_secs_f64() * 1e3,
        exit,
        peak_rss_kib,
        output: read(&out_path) + &read(&err_path),
    })
}

/// Firecracker's boot-timer line: `Guest-boot-time = <N> us` → ms.
pub fn boot_timer_ms(text: &str) -> Option<f64> {
    let rest = &text[text.find("Guest-boot-time")?..];
    let digits: String = rest
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse::<u64>().ok().map(|us| us as f64 / 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_rss_deadline_and_boot_timer() {
        let d = tempfile::tempdir().unwrap();
        let sh = Path::new("/bin/sh");
        let args = |s: &str| vec!["-c".to_string(), s.to_string()];
        let time = Path::new(GNU_TIME).exists();
        let r = run(
            sh,
            &args("echo hi; exit 7"),
            d.path(),
            time,
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(r.exit, Some(7));
        assert!(r.output.contains("hi"));
        assert!(r.peak_rss_kib.unwrap_or(0) > 0);
        let r = run(
            sh,
            &args("kill -9 $$"),
            d.path(),
            time,
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(r.exit, Some(-9));
        let t = Instant::now();
        let r = run(
            sh,
            &args("sleep 30"),
            d.path(),
            time,
            Duration::from_millis(200),
        )
        .unwrap();
        assert_eq!(r.exit, None);
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(matches!(
            run(
                Path::new("/nonexistent/vmm"),
                &[],
                d.path(),
                false,
                Duration::from_secs(1)
            ),
            Err(ProcessError::Spawn(..))
        ));
        assert_eq!(
            boot_timer_ms("x Guest-boot-time =   1234 us y"),
            Some(1.234)
        );
        assert_eq!(boot_timer_ms("nothing"), None);
    }
}

//! A small leveled logger: lines go to stderr, or to `--log-path` (a file or
//! FIFO, opened for append). Each line carries the VM id and the thread name.

use std::fmt;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

/// Log levels (Firecracker's names): `--level` and the config file's `logger.level`.
pub use ember_abi::vmm_args::LogLevel as Level;

struct Logger {
    level: Level,
    to_file: bool,
    id: String,
    sink: Mutex<Box<dyn Write + Send>>,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Sets up logging; later calls are ignored. `path`: append there instead of stderr.
pub fn init(level: Level, path: Option<&std::path::Path>, id: &str) -> std::io::Result<()> {
    let sink: Box<dyn Write + Send> = match path {
        Some(p) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)?,
        ),
        None => Box::new(std::io::stderr()),
    };
    let _ = LOGGER.set(Logger {
        level,
        to_file: path.is_some(),
        id: id.to_string(),
        sink: Mutex::new(sink),
    });
    Ok(())
}

/// An error and its sources on one line (for a log line, stderr or an API
/// `fault_message`).
pub fn error_line(e: &dyn std::error::Error) -> String {
    ember_abi::error::chain(e).replace('\n', " ")
}

/// Whether [`init`] ran (the API's `PUT /logger` may only set it up once).
pub fn initialized() -> bool {
    LOGGER.get().is_some()
}

/// Whether log lines go to a file rather than stderr.
pub fn to_file() -> bool {
    LOGGER.get().is_some_and(|l| l.to_file)
}

/// The level of lines written (to stderr) before [`init`]: warnings,
/// unless [`set_fallback_level`] said otherwise.
static FALLBACK: OnceLock<Level> = OnceLock::new();

/// Sets the level used until [`init`] runs: with `--api-sock` and no
/// logging flags, `PUT /logger` may set logging up later, and until then
/// lines at `--level` (default Info, e.g. the boot timer's) go to stderr.
pub fn set_fallback_level(level: Level) {
    let _ = FALLBACK.set(level);
}

/// Whether messages at `level` are written.
pub fn enabled(level: Level) -> bool {
    let fallback = FALLBACK.get().copied().unwrap_or(Level::Warn);
    level <= LOGGER.get().map_or(fallback, |l| l.level)
}

/// Writes one log line (use the `log_*!` macros).
pub fn log(level: Level, args: fmt::Arguments) {
    if !enabled(level) {
        return;
    }
    let thread = std::thread::current();
    let tname = thread.name().unwrap_or("?");
    match LOGGER.get() {
        Some(l) => {
            let mut sink = l.sink.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(sink, "[{}:{}] {} {}", l.id, tname, level.as_str(), args);
        }
        None => eprintln!("[ember-vmm:{}] {} {}", tname, level.as_str(), args),
    }
}

#[macro_export]
macro_rules! log_error { ($($a:tt)*) => { $crate::logger::log($crate::logger::Level::Error, format_args!($($a)*)) } }
#[macro_export]
macro_rules! log_warn { ($($a:tt)*) => { $crate::logger::log($crate::logger::Level::Warn, format_args!($($a)*)) } }
#[macro_export]
macro_rules! log_info { ($($a:tt)*) => { $crate::logger::log($crate::logger::Level::Info, format_args!($($a)*)) } }
#[macro_export]
macro_rules! log_debug { ($($a:tt)*) => { $crate::logger::log($crate::logger::Level::Debug, format_args!($($a)*)) } }

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_names() {
        assert_eq!(Level::parse("Warning"), Some(Level::Warn));
        assert_eq!(Level::parse("DEBUG"), Some(Level::Debug));
        assert_eq!(Level::parse("loud"), None);
        assert!(Level::Error < Level::Info);
    }
}

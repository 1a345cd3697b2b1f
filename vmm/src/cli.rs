//! From the command line to a VM run: `ember_abi::vmm_args` parses the
//! flags (one definition shared with `emberd`, which builds them); this file
//! merges them over the Firecracker config file (`--config-file`) into one
//! [`Invocation`]. Direct flags override the file.

use std::path::PathBuf;

use ember_abi::vmm_args::{self, VmmArgs, VmmArgsError, VmmCommand};

use crate::config::{ConfigError, ConsoleConfig, VmConfig};
use crate::device_manager::{block, net, vsock};
use crate::logger::Level;
use crate::sandbox::{self, SandboxError, TestHook};

pub use ember_abi::vmm_args::USAGE;

/// Command-line errors.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Args(#[from] VmmArgsError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    Help,
    Version,
    Run(Box<Invocation>),
}

/// A VM run: its config plus process-level settings.
#[derive(Debug)]
pub struct Invocation {
    pub config: VmConfig,
    pub level: Level,
    pub log_path: Option<PathBuf>,
    pub id: String,
    /// Process start (µs, CLOCK_MONOTONIC) as measured by a launcher.
    pub start_time_us: Option<u64>,
    /// The sandbox switches (`--no-seccomp`, `--no-landlock`, `--test-hook`).
    pub sandbox: sandbox::Options,
    /// `--api-sock`: serve Firecracker's API there.
    pub api_sock: Option<PathBuf>,
    /// With the API: start the VM at once (a config file or `--kernel` was
    /// given) rather than wait for `InstanceStart`.
    pub boot_now: bool,
    /// `--level` or `--log-path` was given (with the API, `PUT /logger` may
    /// set up logging only when neither was).
    pub log_flags: bool,
}

/// Parses the arguments (without the program name).
pub fn parse(args: &[String]) -> Result<Command, CliError> {
    match VmmArgs::parse(args)? {
        VmmCommand::Help => Ok(Command::Help),
        VmmCommand::Version => Ok(Command::Version),
        VmmCommand::Run(a) => Ok(Command::Run(Box::new(invocation(a)?))),
    }
}

fn invocation(a: VmmArgs) -> Result<Invocation, CliError> {
    let boot_now = a.config_file.is_some() || a.kernel.is_some();
    let log_flags = a.level.is_some() || a.log_path.is_some();
    let api_sock = a.api_sock.as_ref().map(PathBuf::from);
    let sandbox = sandbox::Options {
        seccomp: !a.no_seccomp,
        landlock: !a.no_landlock,
        test_hook: a.test_hook.as_deref().map(TestHook::parse).transpose()?,
        api_dir: api_sock.as_ref().map(|p| match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        }),
    };
    let mut config = match &a.config_file {
        Some(path) => VmConfig::from_file(path.as_ref())?,
        None => VmConfig::default(),
    };
    // Direct flags override the config file.
    if let Some(k) = a.kernel {
        config.kernel = k.into();
    }
    if a.initrd.is_some() {
        config.initrd = a.initrd.map(PathBuf::from);
    }
    if a.cmdline.is_some() {
        config.cmdline = a.cmdline;
    }
    if let Some(n) = a.vcpus {
        config.vcpus = n;
    }
    if let Some(m) = a.mem_mib {
        config.mem_mib = m;
    }
    if let Some(c) = a.console {
        config.console = match c {
            vmm_args::Console::Stdout => ConsoleConfig::Stdout,
            vmm_args::Console::Off => ConsoleConfig::Off,
            vmm_args::Console::File(p) => ConsoleConfig::File(p.into()),
        };
    }
    if let Some(v) = &a.vsock {
        config
            .devices
            .insert(vsock::NAME.into(), vsock::from_arg(v));
    }
    let drives = a.drives.iter().enumerate();
    append_entries(
        &mut config,
        block::NAME,
        drives.map(|(n, d)| block::from_arg(d, n)).collect(),
    );
    let nets = a.nets.iter().enumerate();
    append_entries(
        &mut config,
        net::NAME,
        nets.map(|(n, d)| net::from_arg(d, n)).collect(),
    );
    config.force_kernelless |= a.kernelless;
    config.boot_timer |= a.boot_timer;
    config.timeout_ms = a.timeout_ms.or(config.timeout_ms);
    let file_level = config.logger.level.as_deref().and_then(Level::parse);
    Ok(Invocation {
        level: a.level.or(file_level).unwrap_or(Level::Info),
        log_path: a
            .log_path
            .map(PathBuf::from)
            .or_else(|| config.logger.log_path.clone()),
        id: a.id.unwrap_or_else(|| "anonymous-instance".into()),
        start_time_us: a.start_time_us,
        sandbox,
        config,
        api_sock,
        boot_now,
        log_flags,
    })
}

/// Adds flag-made entries to a list section (after the config file's).
fn append_entries(config: &mut VmConfig, name: &str, entries: Vec<serde_json::Value>) {
    if entries.is_empty() {
        return;
    }
    let section = config
        .devices
        .entry(name.to_string())
        .or_insert_with(|| serde_json::Value::Array(Vec::new()));
    // Not a list: validation refuses it (the flags' entries are dropped).
    if let serde_json::Value::Array(list) = section {
        list.extend(entries);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Invocation, CliError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match parse(&args)? {
            Command::Run(inv) => Ok(*inv),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn direct_flags() {
        let inv = run(&[
            "--kernel",
            "/k",
            "--vcpus=4",
            "--mem-mib",
            "64",
            "--console",
            "off",
            "--cmdline",
            "a b",
        ])
        .unwrap();
        let c = &inv.config;
        assert_eq!(
            (c.vcpus, c.mem_mib, c.console.clone()),
            (4, 64, ConsoleConfig::Off)
        );
        assert_eq!(c.cmdline.as_deref(), Some("a b"));
        assert_eq!(inv.level, Level::Info);
        let inv = run(&[
            "--kernel",
            "/k",
            "--console",
            "/tmp/x",
            "--level",
            "debug",
            "--boot-timer",
        ])
        .unwrap();
        assert_eq!(inv.config.console, ConsoleConfig::File("/tmp/x".into()));
        assert!(inv.config.boot_timer);
        assert_eq!(inv.level, Level::Debug);
    }

    /// What this module adds to `ember_abi::vmm_args` (whose own tests
    /// cover every flag's typed error): its errors surface as `Args`, a
    /// config file that cannot be read as `Config`, and `--api-sock` alone
    /// waits for the API instead of booting.
    #[test]
    fn bad_flags() {
        assert!(matches!(
            run(&["--vcpus", "two"]),
            Err(CliError::Args(VmmArgsError::BadValue { .. }))
        ));
        let inv = run(&["--api-sock", "/s"]).unwrap();
        assert_eq!(inv.api_sock, Some(PathBuf::from("/s")));
        assert!(!inv.boot_now);
        assert!(matches!(
            run(&["--config-file", "/nonexistent/vm.json"]),
            Err(CliError::Config(_))
        ));
        assert!(matches!(parse(&["--help".to_string()]), Ok(Command::Help)));
    }

    #[test]
    fn device_flags_become_config_sections() {
        let inv = run(&[
            "--kernel",
            "/k",
            "--vsock",
            "3:/tmp/v.sock",
            "--drive",
            "/a.img",
            "--drive",
            "/b.img,ro",
        ])
        .unwrap();
        let d = &inv.config.devices;
        assert_eq!(d["vsock"]["guest_cid"], 3);
        assert_eq!(d["drives"].as_array().map(Vec::len), Some(2));
        assert!(!d.contains_key("network-interfaces"));
    }
}

//! Command-line parsing (hand-rolled: no parser dependency, small binary).
//! Firecracker-compatible flags (`--no-api --config-file`, `--boot-timer`,
//! `--log-path`, `--level`, `--id`) plus direct flags for quick use. Both
//! `--flag value` and `--flag=value` work.

use std::path::PathBuf;

use crate::config::{ConfigError, ConsoleConfig, VmConfig};
use crate::device_manager::{block, net};
use crate::logger::Level;

/// Usage text for `--help`.
pub const USAGE: &str = "\
usage: ember-vmm [--no-api] --config-file vm.json [flags]
       ember-vmm --kernel PATH [--initrd PATH] [--cmdline STR] [--vcpus N] [--mem-mib M] [flags]
flags:
  --console stdout|off|FILE  guest serial console (default stdout)
  --kernelless               boot PATH as a kernel-less ELF even without the EMBER note
  --drive PATH[,ro]          a virtio-block device (repeatable)
  --net TAP[,MAC]            a virtio-net device on a TAP interface (repeatable)
  --boot-timer               log `Guest-boot-time` when the guest writes 123 to 0xC000_0000
  --timeout-ms N             stop the VM after N ms (exit code 124)
  --vsock CID:PATH           virtio-vsock for guest CID, host side on Unix socket PATH
  --log-path PATH            append log lines there instead of stderr
  --level LEVEL              off|error|warn|info|debug|trace (default info)
  --id ID                    VM id shown in log lines
  --help, --version";

/// Command-line errors.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("unknown flag {0} (see --help)")]
    Unknown(String),
    #[error("flag {0} needs a value")]
    MissingValue(String),
    #[error("invalid value for {flag}: {value:?}")]
    BadValue { flag: String, value: String },
    #[error("{0} is not supported: ember-vmm has no API socket; use --no-api --config-file")]
    Api(String),
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
}

#[derive(Default)]
struct Flags {
    config_file: Option<PathBuf>,
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    cmdline: Option<String>,
    vcpus: Option<u64>,
    mem_mib: Option<u64>,
    console: Option<ConsoleConfig>,
    kernelless: bool,
    boot_timer: bool,
    timeout_ms: Option<u64>,
    log_path: Option<PathBuf>,
    level: Option<Level>,
    id: Option<String>,
    start_time_us: Option<u64>,
    vsock: Option<String>,
    drives: Vec<serde_json::Value>,
    nets: Vec<serde_json::Value>,
}

fn number(flag: &str, v: &str) -> Result<u64, CliError> {
    v.parse().map_err(|_| CliError::BadValue {
        flag: flag.into(),
        value: v.into(),
    })
}

/// Parses the arguments (without the program name).
pub fn parse(args: &[String]) -> Result<Command, CliError> {
    let mut f = Flags::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || -> Result<String, CliError> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| CliError::MissingValue(flag.into())),
            }
        };
        match flag {
            "--help" | "-h" => return Ok(Command::Help),
            "--version" => return Ok(Command::Version),
            // Accepted for Firecracker compatibility; they change nothing here.
            "--no-api" | "--show-level" | "--show-log-origin" | "--no-seccomp" => {}
            "--start-time-cpu-us" | "--parent-cpu-time-us" => {
                value()?;
            }
            "--api-sock" => return Err(CliError::Api(flag.into())),
            "--config-file" => f.config_file = Some(value()?.into()),
            "--kernel" => f.kernel = Some(value()?.into()),
            "--initrd" => f.initrd = Some(value()?.into()),
            "--cmdline" => f.cmdline = Some(value()?),
            "--vcpus" => f.vcpus = Some(number(flag, &value()?)?),
            "--mem-mib" => f.mem_mib = Some(number(flag, &value()?)?),
            "--console" => {
                f.console = Some(match value()?.as_str() {
                    "stdout" => ConsoleConfig::Stdout,
                    "off" => ConsoleConfig::Off,
                    "" => {
                        return Err(CliError::BadValue {
                            flag: flag.into(),
                            value: String::new(),
                        })
                    }
                    path => ConsoleConfig::File(path.into()),
                })
            }
            "--kernelless" => f.kernelless = true,
            "--boot-timer" => f.boot_timer = true,
            "--timeout-ms" => f.timeout_ms = Some(number(flag, &value()?)?),
            "--log-path" => f.log_path = Some(value()?.into()),
            "--level" => {
                let v = value()?;
                f.level = Some(Level::parse(&v).ok_or(CliError::BadValue {
                    flag: flag.into(),
                    value: v,
                })?);
            }
            "--id" => f.id = Some(value()?),
            "--start-time-us" => f.start_time_us = Some(number(flag, &value()?)?),
            "--drive" => {
                let v = value()?;
                let n = f.drives.len();
                f.drives
                    .push(block::from_flag(&v, n).ok_or(CliError::BadValue {
                        flag: flag.into(),
                        value: v,
                    })?);
            }
            "--net" => {
                let v = value()?;
                let n = f.nets.len();
                f.nets.push(net::from_flag(&v, n).ok_or(CliError::BadValue {
                    flag: flag.into(),
                    value: v,
                })?);
            }
            "--vsock" => f.vsock = Some(value()?),
            _ => return Err(CliError::Unknown(arg.clone())),
        }
    }
    Ok(Command::Run(Box::new(f.into_invocation()?)))
}

impl Flags {
    fn into_invocation(self) -> Result<Invocation, CliError> {
        let mut config = match &self.config_file {
            Some(path) => VmConfig::from_file(path)?,
            None => VmConfig::default(),
        };
        // Direct flags override the config file.
        if let Some(k) = self.kernel {
            config.kernel = k;
        }
        if self.initrd.is_some() {
            config.initrd = self.initrd;
        }
        if self.cmdline.is_some() {
            config.cmdline = self.cmdline;
        }
        if let Some(n) = self.vcpus {
            config.vcpus = n;
        }
        if let Some(m) = self.mem_mib {
            config.mem_mib = m;
        }
        if let Some(c) = self.console {
            config.console = c;
        }
        if let Some(v) = self.vsock {
            let section =
                crate::device_manager::vsock::from_flag(&v).ok_or_else(|| CliError::BadValue {
                    flag: "--vsock".into(),
                    value: v.clone(),
                })?;
            config
                .devices
                .insert(crate::device_manager::vsock::NAME.into(), section);
        }
        append_entries(&mut config, block::NAME, self.drives);
        append_entries(&mut config, net::NAME, self.nets);
        config.force_kernelless |= self.kernelless;
        config.boot_timer |= self.boot_timer;
        config.timeout_ms = self.timeout_ms.or(config.timeout_ms);
        let file_level = config.logger.level.as_deref().and_then(Level::parse);
        Ok(Invocation {
            level: self.level.or(file_level).unwrap_or(Level::Info),
            log_path: self.log_path.or_else(|| config.logger.log_path.clone()),
            id: self.id.unwrap_or_else(|| "anonymous-instance".into()),
            start_time_us: self.start_time_us,
            config,
        })
    }
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

    #[test]
    fn bad_flags() {
        assert!(matches!(run(&["--kernel"]), Err(CliError::MissingValue(_))));
        assert!(matches!(
            run(&["--vcpus", "two"]),
            Err(CliError::BadValue { .. })
        ));
        assert!(matches!(run(&["--frobnicate"]), Err(CliError::Unknown(_))));
        assert!(matches!(run(&["--api-sock", "/s"]), Err(CliError::Api(_))));
        assert!(matches!(
            run(&["--level", "loud"]),
            Err(CliError::BadValue { .. })
        ));
        assert!(matches!(
            run(&["--config-file", "/nonexistent/vm.json"]),
            Err(CliError::Config(_))
        ));
        assert!(matches!(parse(&["--help".to_string()]), Ok(Command::Help)));
        assert!(matches!(
            run(&["--vsock", "nope"]),
            Err(CliError::BadValue { .. })
        ));
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

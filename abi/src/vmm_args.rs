//! The `ember-vmm` command line, one definition for both sides: `emberd`
//! builds a [`VmmArgs`] and calls [`VmmArgs::to_args`]; `ember-vmm` calls
//! [`VmmArgs::parse`]. Firecracker-compatible flags (`--no-api
//! --config-file`, `--boot-timer`, `--log-path`, `--level`, `--id`) plus
//! direct flags for quick use; both `--flag value` and `--flag=value` work.
//! Paths are UTF-8 strings (the VMM reads its argv as UTF-8).
//!
//! What is checked here is the shape of each flag's value; what needs the
//! VM's whole configuration (CID range, vCPU and memory bounds, device
//! sections) is `ember-vmm`'s validation, after the config file is merged.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// Usage text for `--help`.
pub const USAGE: &str = "\
usage: ember-vmm --api-sock PATH [--config-file vm.json] [flags]
       ember-vmm [--no-api] --config-file vm.json [flags]
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
  --id ID                    VM id shown in log lines and GET /
  --api-sock PATH            serve Firecracker's API on this Unix socket
  --no-seccomp               run without the syscall filters (debugging only)
  --help, --version";

/// Why a command line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VmmArgsError {
    #[error("unknown flag {0} (see --help)")]
    Unknown(String),
    #[error("flag {0} needs a value")]
    MissingValue(String),
    #[error("invalid value for {flag}: {value:?}")]
    BadValue { flag: String, value: String },
    #[error("--api-sock and --no-api exclude each other")]
    Api(String),
}

/// What a command line asks for.
// Parsed once per process: the size of `Run` costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmmCommand {
    Help,
    Version,
    Run(VmmArgs),
}

/// Where the guest serial console goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Console {
    Stdout,
    Off,
    /// A file (created or truncated).
    File(String),
}

/// Log verbosity (`--level`), least verbose first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// Parses a level name (case-insensitive; "warning" = "warn").
    pub fn parse(s: &str) -> Option<LogLevel> {
        Some(match s.to_ascii_lowercase().as_str() {
            "off" => LogLevel::Off,
            "error" => LogLevel::Error,
            "warn" | "warning" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            _ => return None,
        })
    }

    /// The name as log lines show it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Off => "OFF",
            LogLevel::Error => "ERROR",
            LogLevel::Warn => "WARN",
            LogLevel::Info => "INFO",
            LogLevel::Debug => "DEBUG",
            LogLevel::Trace => "TRACE",
        }
    }
}

/// `--vsock CID:PATH`. The CID's range is checked with the VM's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockArg {
    pub guest_cid: u64,
    pub uds_path: String,
}

/// `--drive PATH[,ro]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriveArg {
    pub path: String,
    pub read_only: bool,
}

/// `--net TAP[,MAC]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetArg {
    pub tap: String,
    pub mac: Option<[u8; 6]>,
}

/// One `ember-vmm` run as its command line describes it. Unset options
/// leave the config file's values (or the defaults) in place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmmArgs {
    pub config_file: Option<String>,
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub cmdline: Option<String>,
    pub vcpus: Option<u64>,
    pub mem_mib: Option<u64>,
    pub console: Option<Console>,
    pub kernelless: bool,
    pub boot_timer: bool,
    pub timeout_ms: Option<u64>,
    pub vsock: Option<VsockArg>,
    pub drives: Vec<DriveArg>,
    pub nets: Vec<NetArg>,
    pub log_path: Option<String>,
    pub level: Option<LogLevel>,
    pub id: Option<String>,
    /// Process start (µs, CLOCK_MONOTONIC) as measured by a launcher.
    pub start_time_us: Option<u64>,
    /// `--api-sock PATH`: serve Firecracker's API on this Unix socket.
    pub api_sock: Option<String>,
    /// `--no-api`: Firecracker's flag for "no API socket" (the default
    /// without `--api-sock`; refused together with it).
    pub no_api: bool,
    /// `--no-seccomp`: run without the syscall filters (debugging only).
    pub no_seccomp: bool,
    /// `--no-landlock`: run without the filesystem sandbox (debugging only).
    pub no_landlock: bool,
    /// `--test-hook ACTION@THREAD` (test builds of `ember-vmm` only; the
    /// VMM parses the spec).
    pub test_hook: Option<String>,
}

fn bad(flag: &str, value: &str) -> VmmArgsError {
    VmmArgsError::BadValue {
        flag: flag.into(),
        value: value.into(),
    }
}

fn number(flag: &str, v: &str) -> Result<u64, VmmArgsError> {
    v.parse().map_err(|_| bad(flag, v))
}

/// Parses `aa:bb:cc:dd:ee:ff` (hex, either case).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

impl Console {
    fn parse(v: &str) -> Option<Console> {
        Some(match v {
            "stdout" => Console::Stdout,
            "off" => Console::Off,
            "" => return None,
            path => Console::File(path.into()),
        })
    }
}

impl VsockArg {
    fn parse(v: &str) -> Option<VsockArg> {
        let (cid, path) = v.split_once(':')?;
        let guest_cid = cid.parse().ok()?;
        (!path.is_empty()).then(|| VsockArg {
            guest_cid,
            uds_path: path.into(),
        })
    }
}

impl DriveArg {
    fn parse(v: &str) -> Option<DriveArg> {
        let (path, read_only) = match v.rsplit_once(',') {
            Some((p, "ro")) => (p, true),
            Some((p, "rw")) => (p, false),
            _ => (v, false),
        };
        (!path.is_empty()).then(|| DriveArg {
            path: path.into(),
            read_only,
        })
    }

    fn to_arg(&self) -> String {
        // A writable drive says so when its path has a comma, so that a
        // path ending in ",ro" is not read back as a read-only drive.
        match (self.read_only, self.path.contains(',')) {
            (true, _) => format!("{},ro", self.path),
            (false, true) => format!("{},rw", self.path),
            (false, false) => self.path.clone(),
        }
    }
}

impl NetArg {
    fn parse(v: &str) -> Option<NetArg> {
        let (tap, mac) = match v.split_once(',') {
            Some((t, m)) => (t, Some(parse_mac(m)?)),
            None => (v, None),
        };
        (!tap.is_empty()).then(|| NetArg {
            tap: tap.into(),
            mac,
        })
    }

    fn to_arg(&self) -> String {
        match &self.mac {
            Some(m) => format!("{},{}", self.tap, format_mac(m)),
            None => self.tap.clone(),
        }
    }
}

impl VmmArgs {
    /// Parses the arguments (without the program name).
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<VmmCommand, VmmArgsError> {
        let mut a = VmmArgs::default();
        let mut it = args.iter().map(AsRef::as_ref);
        while let Some(arg) = it.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((k, v)) if k.starts_with("--") => (k, Some(v)),
                _ => (arg, None),
            };
            let mut value = || -> Result<&str, VmmArgsError> {
                match inline {
                    Some(v) => Ok(v),
                    None => it
                        .next()
                        .ok_or_else(|| VmmArgsError::MissingValue(flag.into())),
                }
            };
            match flag {
                "--help" | "-h" => return Ok(VmmCommand::Help),
                "--version" => return Ok(VmmCommand::Version),
                "--no-api" => a.no_api = true,
                // Accepted for Firecracker compatibility; they change nothing here.
                "--show-level" | "--show-log-origin" => {}
                "--start-time-cpu-us" | "--parent-cpu-time-us" => {
                    value()?;
                }
                "--api-sock" => a.api_sock = Some(value()?.into()),
                "--no-seccomp" => a.no_seccomp = true,
                "--no-landlock" => a.no_landlock = true,
                "--test-hook" => a.test_hook = Some(value()?.into()),
                "--config-file" => a.config_file = Some(value()?.into()),
                "--kernel" => a.kernel = Some(value()?.into()),
                "--initrd" => a.initrd = Some(value()?.into()),
                "--cmdline" => a.cmdline = Some(value()?.into()),
                "--vcpus" => a.vcpus = Some(number(flag, value()?)?),
                "--mem-mib" => a.mem_mib = Some(number(flag, value()?)?),
                "--console" => {
                    let v = value()?;
                    a.console = Some(Console::parse(v).ok_or_else(|| bad(flag, v))?);
                }
                "--kernelless" => a.kernelless = true,
                "--boot-timer" => a.boot_timer = true,
                "--timeout-ms" => a.timeout_ms = Some(number(flag, value()?)?),
                "--log-path" => a.log_path = Some(value()?.into()),
                "--level" => {
                    let v = value()?;
                    a.level = Some(LogLevel::parse(v).ok_or_else(|| bad(flag, v))?);
                }
                "--id" => a.id = Some(value()?.into()),
                "--start-time-us" => a.start_time_us = Some(number(flag, value()?)?),
                "--drive" => {
                    let v = value()?;
                    a.drives
                        .push(DriveArg::parse(v).ok_or_else(|| bad(flag, v))?);
                }
                "--net" => {
                    let v = value()?;
                    a.nets.push(NetArg::parse(v).ok_or_else(|| bad(flag, v))?);
                }
                "--vsock" => {
                    let v = value()?;
                    a.vsock = Some(VsockArg::parse(v).ok_or_else(|| bad("--vsock", v))?);
                }
                _ => return Err(VmmArgsError::Unknown(arg.into())),
            }
        }
        if a.no_api && a.api_sock.is_some() {
            return Err(VmmArgsError::Api("--api-sock".into()));
        }
        Ok(VmmCommand::Run(a))
    }

    /// The command line (without the program name) that [`Self::parse`]
    /// reads back as `self`.
    pub fn to_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut opt = |flag: &str, v: Option<String>| {
            if let Some(v) = v {
                out.push(flag.to_string());
                out.push(v);
            }
        };
        let num = |n: Option<u64>| n.map(|n| n.to_string());
        opt("--config-file", self.config_file.clone());
        opt("--id", self.id.clone());
        opt("--api-sock", self.api_sock.clone());
        opt("--kernel", self.kernel.clone());
        opt("--initrd", self.initrd.clone());
        opt("--cmdline", self.cmdline.clone());
        opt("--mem-mib", num(self.mem_mib));
        opt("--vcpus", num(self.vcpus));
        opt(
            "--vsock",
            self.vsock
                .as_ref()
                .map(|v| format!("{}:{}", v.guest_cid, v.uds_path)),
        );
        opt(
            "--console",
            self.console.as_ref().map(|c| match c {
                Console::Stdout => "stdout".into(),
                Console::Off => "off".into(),
                Console::File(p) => p.clone(),
            }),
        );
        opt("--timeout-ms", num(self.timeout_ms));
        opt("--log-path", self.log_path.clone());
        opt(
            "--level",
            self.level.map(|l| l.as_str().to_ascii_lowercase()),
        );
        opt("--start-time-us", num(self.start_time_us));
        opt("--test-hook", self.test_hook.clone());
        for d in &self.drives {
            out.extend(["--drive".to_string(), d.to_arg()]);
        }
        for n in &self.nets {
            out.extend(["--net".to_string(), n.to_arg()]);
        }
        let switches = [
            (self.no_api, "--no-api"),
            (self.kernelless, "--kernelless"),
            (self.boot_timer, "--boot-timer"),
            (self.no_seccomp, "--no-seccomp"),
            (self.no_landlock, "--no-landlock"),
        ];
        for (on, flag) in switches {
            if on {
                out.push(flag.to_string());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn run(args: &[&str]) -> Result<VmmArgs, VmmArgsError> {
        match VmmArgs::parse(args)? {
            VmmCommand::Run(a) => Ok(a),
            other => panic!("{other:?}"),
        }
    }

    fn full() -> VmmArgs {
        VmmArgs {
            config_file: Some("/vm.json".into()),
            kernel: Some("/agent".into()),
            initrd: Some("/initrd".into()),
            cmdline: Some("console=ttyS0 quiet".into()),
            vcpus: Some(2),
            mem_mib: Some(560),
            console: Some(Console::File("/run/console.log".into())),
            kernelless: true,
            boot_timer: true,
            timeout_ms: Some(5000),
            vsock: Some(VsockArg {
                guest_cid: 3,
                uds_path: "/run/v.sock".into(),
            }),
            drives: vec![
                DriveArg {
                    path: "/drive0".into(),
                    read_only: true,
                },
                DriveArg {
                    path: "/odd,ro".into(),
                    read_only: false,
                },
            ],
            nets: vec![NetArg {
                tap: "tap0".into(),
                mac: Some([6, 0, 0xac, 0x10, 0, 2]),
            }],
            log_path: Some("/run/vmm.log".into()),
            level: Some(LogLevel::Debug),
            id: Some("env-1".into()),
            start_time_us: Some(123),
            api_sock: None,
            no_api: true,
            no_seccomp: true,
            no_landlock: true,
            test_hook: Some("exec@vcpu".into()),
        }
    }

    #[test]
    fn round_trips() {
        for a in [VmmArgs::default(), full()] {
            assert_eq!(run_owned(&a.to_args()), Ok(a));
        }
        let mut a = full();
        a.console = Some(Console::Off);
        a.level = Some(LogLevel::Warn);
        a.nets[0].mac = None;
        assert_eq!(run_owned(&a.to_args()), Ok(a));
    }

    fn run_owned(args: &[String]) -> Result<VmmArgs, VmmArgsError> {
        let v: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&v)
    }

    #[test]
    fn direct_and_inline_flags() {
        let a = run(&[
            "--kernel",
            "/k",
            "--vcpus=4",
            "--mem-mib",
            "64",
            "--console",
            "off",
        ])
        .unwrap();
        assert_eq!(
            (a.vcpus, a.mem_mib, a.console),
            (Some(4), Some(64), Some(Console::Off))
        );
        let a = run(&["--drive", "/a.img", "--drive=/b.img,ro", "--net", "tap1"]).unwrap();
        assert_eq!(
            a.drives,
            [
                DriveArg {
                    path: "/a.img".into(),
                    read_only: false
                },
                DriveArg {
                    path: "/b.img".into(),
                    read_only: true
                }
            ]
        );
        assert_eq!(a.nets[0].mac, None);
        assert_eq!(
            VmmArgs::parse(&["--kernel", "/k", "--help"]),
            Ok(VmmCommand::Help)
        );
        // Firecracker's no-op flags are accepted.
        assert!(run(&["--show-level", "--parent-cpu-time-us", "5"]).is_ok());
    }

    #[test]
    fn refuses_bad_input_with_typed_errors() {
        assert_eq!(
            run(&["--kernel"]),
            Err(VmmArgsError::MissingValue("--kernel".into()))
        );
        assert_eq!(run(&["--vcpus", "two"]), Err(bad("--vcpus", "two")));
        assert_eq!(
            run(&["--frobnicate"]),
            Err(VmmArgsError::Unknown("--frobnicate".into()))
        );
        assert_eq!(
            run(&["--api-sock", "/s", "--no-api"]),
            Err(VmmArgsError::Api("--api-sock".into()))
        );
        for (flag, v) in [
            ("--level", "loud"),
            ("--vsock", "nope"),
            ("--vsock", "x:/p"),
            ("--vsock", "3:"),
            ("--console", ""),
            ("--drive", ",ro"),
            ("--net", ",06:00:00:00:00:01"),
            ("--net", "tap0,06:00:00"),
            ("--net", "tap0,zz:00:00:00:00:01"),
        ] {
            assert_eq!(run(&[flag, v]), Err(bad(flag, v)), "{flag} {v}");
        }
    }

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("06:00:AC:10:00:02"),
            Some([6, 0, 0xac, 0x10, 0, 2])
        );
        assert_eq!(format_mac(&[6, 0, 0xac, 0x10, 0, 2]), "06:00:ac:10:00:02");
        for bad in [
            "",
            "06:00:ac:10:00",
            "06:00:ac:10:00:02:03",
            "6:00:ac:10:00:02",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}

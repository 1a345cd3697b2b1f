//! The VM configuration: Firecracker's JSON (`--config-file`) parsed with serde
//! (`deny_unknown_fields`), merged with the direct command-line flags into one
//! [`VmConfig`], and checked by [`VmConfig::validate`] before anything is built.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use crate::devices::Devices;
use crate::memory::{MAX_MEM_MIB, MIN_MEM_MIB};

/// Most vCPUs a VM may have.
pub const MAX_VCPUS: u64 = 32;
/// Guest memory when nothing says otherwise (Firecracker's default).
pub const DEFAULT_MEM_MIB: u64 = 128;
/// Longest command line accepted at all; each boot path has its own, smaller limit.
pub const MAX_CMDLINE: usize = 64 * 1024;

/// Errors in the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("bad config file {path}")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("no kernel given (use --kernel PATH or boot-source.kernel_image_path)")]
    NoKernel,
    #[error("vcpu_count must be between 1 and {MAX_VCPUS}, got {0}")]
    Vcpus(u64),
    #[error("smt needs an even vcpu_count (or 1), got {0}")]
    Smt(u64),
    #[error("mem_size_mib must be between {MIN_MEM_MIB} and {MAX_MEM_MIB}, got {0}")]
    Memory(u64),
    #[error("command line too long: {0} bytes (max {MAX_CMDLINE})")]
    CmdlineTooLong(usize),
    #[error("config section `{0}` is not supported by this ember-vmm")]
    UnsupportedSection(String),
    #[error("machine-config: {0} is not supported")]
    UnsupportedMachine(&'static str),
    #[error(transparent)]
    Device(#[from] crate::devices::DeviceError),
}

/// Where the guest console goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleConfig {
    Stdout,
    Off,
    File(PathBuf),
}

/// Logger settings from the config file (Firecracker's `logger` section).
/// `show_level`, `show_log_origin` and `module` are accepted for
/// compatibility and change nothing.
#[allow(dead_code)]
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggerConfig {
    pub log_path: Option<PathBuf>,
    pub level: Option<String>,
    pub show_level: Option<bool>,
    pub show_log_origin: Option<bool>,
    pub module: Option<String>,
}

/// A config that passed [`VmConfig::validate`], with its device sections
/// typed: what `vm::Vm::build` takes.
#[derive(Debug, Clone)]
pub struct ValidConfig {
    pub config: VmConfig,
    pub devices: Devices,
}

/// Everything needed to build and run one VM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// None: the boot path's default.
    pub cmdline: Option<String>,
    pub vcpus: u64,
    pub mem_mib: u64,
    pub smt: bool,
    pub console: ConsoleConfig,
    pub boot_timer: bool,
    /// Boot as a kernel-less guest even without the ELF note.
    pub force_kernelless: bool,
    /// Device sections by config key, as the file and flags gave them
    /// (typed by `validate`: `devices::Devices`).
    pub devices: BTreeMap<String, Value>,
    /// Stop the VM after this long (exit code 124).
    pub timeout_ms: Option<u64>,
    /// KVM logs the pages the guest writes (Firecracker's
    /// `track_dirty_pages`): what a diff snapshot saves.
    pub track_dirty_pages: bool,
    pub logger: LoggerConfig,
    /// Firecracker's `metrics` section: where the metrics lines go.
    pub metrics_path: Option<PathBuf>,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            kernel: PathBuf::new(),
            initrd: None,
            cmdline: None,
            vcpus: 1,
            mem_mib: DEFAULT_MEM_MIB,
            smt: false,
            console: ConsoleConfig::Stdout,
            boot_timer: false,
            force_kernelless: false,
            devices: BTreeMap::new(),
            timeout_ms: None,
            track_dirty_pages: false,
            logger: LoggerConfig::default(),
            metrics_path: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(rename = "boot-source")]
    boot_source: BootSource,
    #[serde(rename = "machine-config")]
    machine_config: Option<MachineConfig>,
    logger: Option<LoggerConfig>,
    drives: Option<Value>,
    #[serde(rename = "network-interfaces")]
    network_interfaces: Option<Value>,
    vsock: Option<Value>,
    balloon: Option<Value>,
    entropy: Option<Value>,
    #[serde(rename = "mmds-config")]
    mmds_config: Option<Value>,
    metrics: Option<MetricsSection>,
    serial: Option<SerialSection>,
    #[serde(rename = "cpu-config")]
    cpu_config: Option<Value>,
}

/// Firecracker's `metrics` section.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsSection {
    metrics_path: PathBuf,
}

/// Firecracker's `serial` section (no rate limiter here).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SerialSection {
    serial_out_path: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BootSource {
    kernel_image_path: PathBuf,
    initrd_path: Option<PathBuf>,
    boot_args: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MachineConfig {
    vcpu_count: u64,
    mem_size_mib: u64,
    #[serde(default)]
    smt: bool,
    #[serde(default)]
    track_dirty_pages: bool,
    huge_pages: Option<String>,
    cpu_template: Option<String>,
}

impl VmConfig {
    /// Parses a Firecracker JSON config. `path` is only used in messages.
    pub fn from_json(text: &str, path: &str) -> Result<VmConfig, ConfigError> {
        let file: ConfigFile = serde_json::from_str(text).map_err(|source| ConfigError::Json {
            path: path.into(),
            source,
        })?;
        let mut cfg = VmConfig {
            kernel: file.boot_source.kernel_image_path,
            initrd: file.boot_source.initrd_path,
            cmdline: file.boot_source.boot_args,
            logger: file.logger.unwrap_or_default(),
            metrics_path: file.metrics.map(|m| m.metrics_path),
            ..VmConfig::default()
        };
        if let Some(p) = file.serial.and_then(|s| s.serial_out_path) {
            cfg.console = ConsoleConfig::File(p);
        }
        if let Some(m) = file.machine_config {
            if m.huge_pages.as_deref().is_some_and(|h| h != "None") {
                return Err(ConfigError::UnsupportedMachine("huge_pages"));
            }
            if m.cpu_template.as_deref().is_some_and(|t| t != "None") {
                return Err(ConfigError::UnsupportedMachine("cpu_template"));
            }
            cfg.vcpus = m.vcpu_count;
            cfg.mem_mib = m.mem_size_mib;
            cfg.smt = m.smt;
            cfg.track_dirty_pages = m.track_dirty_pages;
        }
        let sections = [
            ("drives", file.drives),
            ("network-interfaces", file.network_interfaces),
            ("vsock", file.vsock),
            ("balloon", file.balloon),
            ("entropy", file.entropy),
            ("mmds-config", file.mmds_config),
            ("cpu-config", file.cpu_config),
        ];
        for (name, value) in sections {
            match value {
                // Firecracker configs often carry empty lists: same as absent.
                None | Some(Value::Null) => {}
                Some(Value::Array(a)) if a.is_empty() => {}
                Some(v) => {
                    cfg.devices.insert(name.to_string(), v);
                }
            }
        }
        Ok(cfg)
    }

    /// Reads and parses a config file.
    pub fn from_file(path: &std::path::Path) -> Result<VmConfig, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        Self::from_json(&text, &p)
    }

    /// Checks everything that can be checked without opening files or KVM,
    /// and parses the device sections (once): what a VM is built from.
    pub fn validate(&self) -> Result<ValidConfig, ConfigError> {
        if self.kernel.as_os_str().is_empty() {
            return Err(ConfigError::NoKernel);
        }
        if !(1..=MAX_VCPUS).contains(&self.vcpus) {
            return Err(ConfigError::Vcpus(self.vcpus));
        }
        if self.smt && self.vcpus > 1 && self.vcpus % 2 == 1 {
            return Err(ConfigError::Smt(self.vcpus));
        }
        if !(MIN_MEM_MIB..=MAX_MEM_MIB).contains(&self.mem_mib) {
            return Err(ConfigError::Memory(self.mem_mib));
        }
        let cmdline_len = self.cmdline.as_ref().map_or(0, String::len);
        if cmdline_len > MAX_CMDLINE {
            return Err(ConfigError::CmdlineTooLong(cmdline_len));
        }
        let mut devices = Devices::default();
        for (name, value) in &self.devices {
            if !devices.parse_section(name, value)? {
                return Err(ConfigError::UnsupportedSection(name.clone()));
            }
        }
        Ok(ValidConfig {
            config: self.clone(),
            devices,
        })
    }

    /// The vCPU count as the narrow type KVM code uses (after `validate`).
    pub fn vcpu_count(&self) -> u8 {
        self.vcpus.min(MAX_VCPUS) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FC: &str = r#"{
      "boot-source": { "kernel_image_path": "/k", "boot_args": "console=ttyS0", "initrd_path": null },
      "machine-config": { "vcpu_count": 2, "mem_size_mib": 256, "smt": false },
      "drives": [], "network-interfaces": []
    }"#;

    #[test]
    fn parses_a_firecracker_config() {
        let c = VmConfig::from_json(FC, "t").unwrap();
        assert_eq!(c.kernel, PathBuf::from("/k"));
        assert_eq!(c.cmdline.as_deref(), Some("console=ttyS0"));
        assert_eq!((c.vcpus, c.mem_mib), (2, 256));
        assert!(c.devices.is_empty());
        c.validate().unwrap();
    }

    #[test]
    fn refuses_unknown_keys_and_malformed_json() {
        let e = VmConfig::from_json(
            r#"{"boot-source":{"kernel_image_path":"/k"},"bogus":1}"#,
            "t",
        );
        assert!(e.unwrap_err().to_string().contains("bad config file"));
        let e = VmConfig::from_json(r#"{"boot-source":{"kernel_image_path":"/k","x":1}}"#, "t");
        assert!(matches!(e, Err(ConfigError::Json { .. })));
        assert!(VmConfig::from_json("{", "t").is_err());
        assert!(VmConfig::from_json(
            r#"{"machine-config":{"vcpu_count":1,"mem_size_mib":8}}"#,
            "t"
        )
        .is_err());
        let c = VmConfig::from_json(
            r#"{"boot-source":{"kernel_image_path":"/k"},"machine-config":{"vcpu_count":1,"mem_size_mib":8,"track_dirty_pages":true}}"#,
            "t",
        );
        assert!(c.unwrap().track_dirty_pages);
    }

    #[test]
    fn metrics_and_serial_sections() {
        let c = VmConfig::from_json(
            r#"{"boot-source":{"kernel_image_path":"/k"},"metrics":{"metrics_path":"/m"},
                "serial":{"serial_out_path":"/s"}}"#,
            "t",
        )
        .unwrap();
        assert_eq!(c.metrics_path, Some(PathBuf::from("/m")));
        assert_eq!(c.console, ConsoleConfig::File("/s".into()));
        let e = VmConfig::from_json(
            r#"{"boot-source":{"kernel_image_path":"/k"},"serial":{"rate_limiter":{}}}"#,
            "t",
        );
        assert!(matches!(e, Err(ConfigError::Json { .. })));
        let e = VmConfig::from_json(
            r#"{"boot-source":{"kernel_image_path":"/k"},"metrics":{}}"#,
            "t",
        );
        assert!(matches!(e, Err(ConfigError::Json { .. })));
    }

    #[test]
    fn validation_catches_bad_values() {
        let ok = VmConfig {
            kernel: "/k".into(),
            ..VmConfig::default()
        };
        ok.validate().unwrap();
        let bad = |c: VmConfig| c.validate().unwrap_err().to_string();
        assert!(bad(VmConfig {
            vcpus: 0,
            ..ok.clone()
        })
        .contains("vcpu_count"));
        assert!(bad(VmConfig {
            vcpus: 33,
            ..ok.clone()
        })
        .contains("vcpu_count"));
        VmConfig {
            vcpus: 32,
            ..ok.clone()
        }
        .validate()
        .unwrap();
        assert!(bad(VmConfig {
            vcpus: 3,
            smt: true,
            ..ok.clone()
        })
        .contains("smt"));
        assert!(bad(VmConfig {
            mem_mib: 1,
            ..ok.clone()
        })
        .contains("mem_size_mib"));
        assert!(bad(VmConfig {
            mem_mib: MAX_MEM_MIB + 1,
            ..ok.clone()
        })
        .contains("mem_size_mib"));
        assert!(bad(VmConfig {
            cmdline: Some("x".repeat(MAX_CMDLINE + 1)),
            ..ok.clone()
        })
        .contains("too long"));
        assert!(bad(VmConfig {
            kernel: PathBuf::new(),
            ..ok.clone()
        })
        .contains("no kernel"));
        let mut with_drive = ok.clone();
        with_drive
            .devices
            .insert("balloon".into(), serde_json::json!({"amount_mib": 1}));
        assert!(bad(with_drive).contains("`balloon` is not supported"));
    }
}

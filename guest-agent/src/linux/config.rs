//! The agent's configuration: where the runtime, code and layers live, which
//! address the Runtime API binds, and how to reach the host. PID 1 reads it
//! from the kernel command line (the kernel hands unknown `key=value` words to
//! init as environment variables); tests build it directly or pass flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How the agent reaches the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostAddr {
    /// AF_VSOCK to `cid:port` (the host is CID 2).
    Vsock { cid: u32, port: u32 },
    /// A Unix stream socket (tests, and the agent as an ordinary process).
    Unix(PathBuf),
    /// TCP (a QEMU user-network test path, where no vsock device exists).
    Tcp(SocketAddr),
}

/// Block devices PID 1 mounts before switching into the runtime image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Devices {
    /// The runtime image (squashfs or ext4), mounted read-only as the new root.
    pub runtime: PathBuf,
    /// The function code image, mounted read-only at `/var/task`.
    pub code: PathBuf,
    /// An optional layer image, mounted read-only at `/opt`.
    pub layer: PathBuf,
    /// Size limit of `/tmp` (the function's ephemeral storage), e.g. "512m".
    pub tmp_size: String,
}

impl Default for Devices {
    fn default() -> Self {
        Devices {
            runtime: "/dev/vda".into(),
            code: "/dev/vdb".into(),
            layer: "/dev/vdc".into(),
            tmp_size: "512m".into(),
        }
    }
}

/// Everything the agent needs to know before talking to the host.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub host: HostAddr,
    /// Where the Runtime API listens (Lambda: 127.0.0.1:9001; tests: port 0).
    pub runtime_api: SocketAddr,
    /// `LAMBDA_TASK_ROOT`, searched first for `bootstrap`.
    pub task_root: PathBuf,
    /// Layers directory, searched second for `bootstrap`.
    pub opt_dir: PathBuf,
    /// The runtime's own directory (`LAMBDA_RUNTIME_DIR`), searched last: the
    /// python3.11 image keeps its runtime loop there.
    pub runtime_dir: PathBuf,
    /// Whether this process is the guest's init (mounts, reaping, power-off).
    pub pid1: bool,
    pub devices: Devices,
    /// A cgroup v2 directory under which each runtime instance gets its own
    /// cgroup (for Max Memory Used); `None` reads the runtime's peak RSS.
    pub cgroup_root: Option<PathBuf>,
    /// How long `bootstrap` may take to reach its first `next` call.
    pub init_timeout: Duration,
    pub region: String,
    /// PID 1: a static IPv4 address/prefix for eth0 (only for `Tcp` hosts).
    pub eth0: Option<(std::net::Ipv4Addr, u8)>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            host: HostAddr::Vsock {
                cid: 2,
                port: ember_abi::protocol::AGENT_PORT,
            },
            runtime_api: SocketAddr::from(([127, 0, 0, 1], 9001)),
            task_root: "/var/task".into(),
            opt_dir: "/opt".into(),
            runtime_dir: "/var/runtime".into(),
            pid1: false,
            devices: Devices::default(),
            cgroup_root: None,
            init_timeout: Duration::from_secs(10),
            region: "local".into(),
            eth0: None,
        }
    }
}

/// A flag or setting the agent could not understand.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown argument {0:?}")]
    UnknownArgument(String),
    #[error("argument {0} needs a value")]
    MissingValue(String),
    #[error("invalid value {value:?} for {name}")]
    BadValue { name: String, value: String },
}

fn parse<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ConfigError> {
    value.parse().map_err(|_| ConfigError::BadValue {
        name: name.to_string(),
        value: value.to_string(),
    })
}

impl AgentConfig {
    /// Applies one setting by name; flags (`--unix`) and kernel command-line
    /// variables (`ember_unix`) share these names.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        match name {
            "unix" => self.host = HostAddr::Unix(value.into()),
            "tcp" => self.host = HostAddr::Tcp(parse(name, value)?),
            "ip" => {
                let (addr, prefix) = value.split_once('/').unwrap_or((value, "24"));
                let prefix: u8 = parse(name, prefix)?;
                if prefix > 32 {
                    return Err(ConfigError::BadValue {
                        name: name.to_string(),
                        value: value.to_string(),
                    });
                }
                self.eth0 = Some((parse(name, addr)?, prefix));
            }
            "vsock-port" => {
                self.host = HostAddr::Vsock {
                    cid: 2,
                    port: parse(name, value)?,
                }
            }
            "runtime-api" => self.runtime_api = parse(name, value)?,
            "task-root" => self.task_root = value.into(),
            "opt" => self.opt_dir = value.into(),
            "runtime-dir" => self.runtime_dir = value.into(),
            "region" => self.region = value.to_string(),
            "init-timeout-ms" => self.init_timeout = Duration::from_millis(parse(name, value)?),
            "cgroup" => self.cgroup_root = Some(value.into()),
            "runtime-dev" => self.devices.runtime = value.into(),
            "code-dev" => self.devices.code = value.into(),
            "layer-dev" => self.devices.layer = value.into(),
            "tmp-size" => self.devices.tmp_size = value.to_string(),
            other => return Err(ConfigError::UnknownArgument(other.to_string())),
        }
        Ok(())
    }

    /// Builds the configuration from `--name value` flags.
    pub fn from_args<I: IntoIterator<Item = String>>(args: I) -> Result<Self, ConfigError> {
        let mut cfg = AgentConfig::default();
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            let Some(name) = arg.strip_prefix("--") else {
                return Err(ConfigError::UnknownArgument(arg));
            };
            let value = it
                .next()
                .ok_or_else(|| ConfigError::MissingValue(arg.clone()))?;
            cfg.set(name, &value)?;
        }
        Ok(cfg)
    }

    /// PID 1 configuration: defaults plus `ember_<name>=value` words of the
    /// kernel command line (underscores in `<name>` stand for dashes).
    pub fn from_kernel_env<I: IntoIterator<Item = (String, String)>>(vars: I) -> Self {
        let mut cfg = AgentConfig {
            pid1: true,
            cgroup_root: Some("/sys/fs/cgroup".into()),
            ..AgentConfig::default()
        };
        for (key, value) in vars {
            if let Some(name) = key.strip_prefix("ember_") {
                // A bad word must not stop the guest from booting: keep the
                // default and say so on the console.
                if let Err(e) = cfg.set(&name.replace('_', "-"), &value) {
                    eprintln!("ember-agent: ignoring {key}={value}: {e}");
                }
            }
        }
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_kernel_words_share_names() {
        let args = ["--unix", "/tmp/a.sock", "--runtime-api", "127.0.0.1:0"];
        let cfg = AgentConfig::from_args(args.iter().map(|s| s.to_string())).unwrap();
        assert_eq!(cfg.host, HostAddr::Unix("/tmp/a.sock".into()));
        assert_eq!(cfg.runtime_api.port(), 0);
        let env = [
            ("ember_code_dev".to_string(), "/dev/vdc".to_string()),
            ("ember_ip".to_string(), "10.0.2.15/24".to_string()),
            ("ember_tcp".to_string(), "10.0.2.2:7000".to_string()),
        ];
        let k = AgentConfig::from_kernel_env(env);
        assert!(k.pid1);
        assert_eq!(k.devices.code, PathBuf::from("/dev/vdc"));
        assert_eq!(k.eth0, Some(([10, 0, 2, 15].into(), 24)));
        assert_eq!(k.host, HostAddr::Tcp("10.0.2.2:7000".parse().unwrap()));
        assert!(AgentConfig::from_args(["--ip".to_string(), "1.2.3.4/33".into()]).is_err());
        assert!(AgentConfig::from_args(["--nope".to_string(), "x".into()]).is_err());
        assert!(AgentConfig::from_args(["--vsock-port".to_string()]).is_err());
    }
}

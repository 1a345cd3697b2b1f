//! The `ember-jailer` command line, one definition for both sides: `emberd`
//! builds a [`JailerArgs`] and calls [`JailerArgs::to_args`]; the jailer
//! calls [`JailerArgs::parse`], which refuses anything it could not jail
//! safely (ids, jail paths, limits) with a typed [`JailerArgsError`].
//!
//! ```text
//! ember-jailer --id ID --exec-file PATH [options] -- [ember-vmm arguments]
//! ```
//! Everything after `--` goes to `ember-vmm` unchanged (build it with
//! [`crate::vmm_args::VmmArgs::to_args`]); paths in it are paths *inside*
//! the jail (`/` is the jail root).

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// Usage text printed for `--help` and after an argument error.
pub const USAGE: &str = "\
usage: ember-jailer --id ID --exec-file PATH [options] -- [ember-vmm args]
  --id ID                 VM id: 1-64 of [A-Za-z0-9-_]; names the jail and cgroups
  --exec-file PATH        the ember-vmm binary (bind-mounted read-only as /ember-vmm)
  --uid N|auto --gid N|auto   unprivileged ids for the VM (auto: unique per VM, default)
  --chroot-base DIR       jail parent (default /srv/ember/jail); jail root is DIR/ID/root
  --file SRC[:DST]        read-only bind mount of a host file into the jail (DST default /<name>)
  --file-rw SRC[:DST]     same, writable (disk images)
  --rw-dir DST            empty directory owned by the VM uid (sockets, logs)
  --dir-rw SRC:DST        bind-mount a host directory writable (e.g. the vsock socket dir);
                          it and its entries are chowned to the VM uid
  --dir-ro SRC:DST        bind-mount a host directory read-only, not chowned; files the
                          host links into it later appear in the jail
  --tun                   add /dev/net/tun (only with a network)
  --netns PATH            join this network namespace (it holds the VM's TAP)
  --cgroup-version 1|2|auto   (default auto: v1 when its memory controller is mounted)
  --mem-limit-mib N       cgroup memory limit (guest memory + overhead)
  --cpu-quota-us N        CFS quota per period (default: no quota)
  --cpu-period-us N       CFS period (default 100000)
  --all-vms-cpu-quota-us N  CFS quota per period of the `ember` cgroup that holds every
                          VM's cgroup: all jailed VMs together get no more (default: unchanged)
  --pids-max N            cgroup pids limit (default 64)
  --rlimit NAME=N         fsize|nofile|nproc|as|memlock (repeatable)
  --pid-file PATH         write the VMM's host pid here
  --keep                  leave jail dir and cgroups behind at exit (debugging)
  --timing                print the jail setup time to stderr";

/// Why the command line was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JailerArgsError {
    #[error("missing required option {0}")]
    Missing(&'static str),
    #[error("option {0} needs a value")]
    NoValue(String),
    #[error("unknown option {0} (ember-vmm arguments go after `--`)")]
    Unknown(String),
    #[error("invalid value {value:?} for {option}: {why}")]
    Invalid {
        option: String,
        value: String,
        why: &'static str,
    },
}

/// Which cgroup hierarchy to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CgroupVersion {
    /// v1 when a v1 memory controller is mounted, else v2.
    #[default]
    Auto,
    V1,
    V2,
}

/// The resources `--rlimit` may set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rlimit {
    Fsize,
    Nofile,
    Nproc,
    As,
    Memlock,
}

impl Rlimit {
    fn parse(name: &str) -> Option<Rlimit> {
        Some(match name {
            "fsize" => Rlimit::Fsize,
            "nofile" | "no-file" => Rlimit::Nofile,
            "nproc" => Rlimit::Nproc,
            "as" => Rlimit::As,
            "memlock" => Rlimit::Memlock,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Rlimit::Fsize => "fsize",
            Rlimit::Nofile => "nofile",
            Rlimit::Nproc => "nproc",
            Rlimit::As => "as",
            Rlimit::Memlock => "memlock",
        }
    }
}

/// One host file made visible inside the jail (`--file`, `--file-rw`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JailFileArg {
    /// Host path (resolved by the jailer, as root). It must not contain ':'.
    pub src: String,
    /// Path inside the jail.
    pub dst: String,
    /// Bind-mounted writable (else read-only).
    pub writable: bool,
}

/// One `ember-jailer` run as its command line describes it. `None` and
/// empty fields leave the jailer's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JailerArgs {
    pub id: String,
    pub exec_file: String,
    /// None = allocate a unique id (`auto`).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub chroot_base: Option<String>,
    pub files: Vec<JailFileArg>,
    /// Empty directories owned by the VM uid (jail paths).
    pub rw_dirs: Vec<String>,
    /// Host directories bind-mounted writable: (host path, jail path).
    pub bind_dirs: Vec<(String, String)>,
    /// Host directories bind-mounted read-only, left as they are (not
    /// chowned): (host path, jail path). Files the host links into one
    /// later appear in the jail (a restore slot's snapshot directory).
    pub ro_dirs: Vec<(String, String)>,
    pub tun: bool,
    /// Network namespace to join; None = a new, empty one.
    pub netns: Option<String>,
    pub cgroup_version: CgroupVersion,
    pub mem_limit_mib: Option<u64>,
    pub cpu_quota_us: Option<u64>,
    pub cpu_period_us: Option<u64>,
    pub all_vms_cpu_quota_us: Option<u64>,
    pub pids_max: Option<u64>,
    /// At most one entry per resource (a later `--rlimit` replaces it).
    pub rlimits: Vec<(Rlimit, u64)>,
    pub pid_file: Option<String>,
    pub keep: bool,
    pub timing: bool,
    /// `ember-vmm`'s arguments (after `--`).
    pub vmm_args: Vec<String>,
}

fn invalid(option: &str, value: &str, why: &'static str) -> JailerArgsError {
    JailerArgsError::Invalid {
        option: option.into(),
        value: value.into(),
        why,
    }
}

fn number(option: &str, value: &str, min: u64) -> Result<u64, JailerArgsError> {
    match value.parse::<u64>() {
        Ok(n) if n >= min => Ok(n),
        Ok(_) => Err(invalid(option, value, "too small")),
        Err(_) => Err(invalid(option, value, "not a number")),
    }
}

/// `auto` (None) or an unprivileged id: never 0, never above the 32-bit "nobody" range.
fn parse_id(option: &str, value: &str) -> Result<Option<u32>, JailerArgsError> {
    if value == "auto" {
        return Ok(None);
    }
    match value.parse::<u32>() {
        Ok(0) => Err(invalid(option, value, "root is not an unprivileged id")),
        Ok(n) if n < u32::MAX - 1 => Ok(Some(n)),
        _ => Err(invalid(option, value, "expected a number or auto")),
    }
}

fn validate_id(id: &str) -> Result<(), JailerArgsError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(invalid("--id", id, "expected 1-64 of [A-Za-z0-9-_]"))
    }
}

/// The components of a path as `std::path::Path` sees them (empty and `.`
/// components dropped).
fn components(p: &str) -> impl Iterator<Item = &str> {
    p.split('/').filter(|c| !c.is_empty() && *c != ".")
}

/// A path inside the jail: absolute, no `..`, not the root, not under /dev,
/// not the VMM binary's mount point.
fn jail_path(option: &str, value: &str) -> Result<String, JailerArgsError> {
    let comps: Vec<&str> = components(value).collect();
    let bad = !value.starts_with('/')
        || comps.is_empty()
        || comps.contains(&"..")
        || comps[0] == "dev"
        || comps == ["ember-vmm"];
    if bad {
        return Err(invalid(
            option,
            value,
            "jail path must be absolute, without `..`, outside /dev",
        ));
    }
    Ok(value.into())
}

fn parse_file(option: &str, value: &str, writable: bool) -> Result<JailFileArg, JailerArgsError> {
    let (src, dst) = match value.split_once(':') {
        Some((s, d)) => (s, jail_path(option, d)?),
        None => {
            let name = components(value)
                .last()
                .filter(|n| *n != "..")
                .ok_or_else(|| invalid(option, value, "no file name"))?;
            (value, jail_path(option, &format!("/{name}"))?)
        }
    };
    Ok(JailFileArg {
        src: src.into(),
        dst,
        writable,
    })
}

impl JailerArgs {
    /// Parses `ember-jailer`'s arguments (without argv[0]).
    pub fn parse<I, S>(args: I) -> Result<JailerArgs, JailerArgsError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut it = args.into_iter();
        let mut id = None;
        let mut exec_file = None;
        let mut a = JailerArgs::default();
        while let Some(arg) = it.next() {
            let arg = arg.as_ref();
            if arg == "--" {
                a.vmm_args = it.by_ref().map(|s| s.as_ref().to_string()).collect();
                break;
            }
            let mut value = |name: &str| {
                it.next()
                    .map(|v| v.as_ref().to_string())
                    .ok_or_else(|| JailerArgsError::NoValue(name.into()))
            };
            match arg {
                "--id" => id = Some(value("--id")?),
                "--exec-file" => exec_file = Some(value("--exec-file")?),
                "--uid" => a.uid = parse_id("--uid", &value("--uid")?)?,
                "--gid" => a.gid = parse_id("--gid", &value("--gid")?)?,
                "--chroot-base" => a.chroot_base = Some(value("--chroot-base")?),
                "--file" => a
                    .files
                    .push(parse_file("--file", &value("--file")?, false)?),
                "--file-rw" => {
                    let v = value("--file-rw")?;
                    a.files.push(parse_file("--file-rw", &v, true)?)
                }
                "--dir-rw" => {
                    let v = value("--dir-rw")?;
                    let (src, dst) = v
                        .split_once(':')
                        .ok_or_else(|| invalid("--dir-rw", &v, "expected SRC:DST"))?;
                    a.bind_dirs.push((src.into(), jail_path("--dir-rw", dst)?));
                }
                "--dir-ro" => {
                    let v = value("--dir-ro")?;
                    let (src, dst) = v
                        .split_once(':')
                        .ok_or_else(|| invalid("--dir-ro", &v, "expected SRC:DST"))?;
                    a.ro_dirs.push((src.into(), jail_path("--dir-ro", dst)?));
                }
                "--rw-dir" => {
                    let v = value("--rw-dir")?;
                    a.rw_dirs.push(jail_path("--rw-dir", &v)?)
                }
                "--tun" => a.tun = true,
                "--netns" => a.netns = Some(value("--netns")?),
                "--cgroup-version" => {
                    let v = value("--cgroup-version")?;
                    a.cgroup_version = match v.as_str() {
                        "1" => CgroupVersion::V1,
                        "2" => CgroupVersion::V2,
                        "auto" => CgroupVersion::Auto,
                        _ => return Err(invalid("--cgroup-version", &v, "expected 1, 2 or auto")),
                    }
                }
                "--mem-limit-mib" => {
                    let v = value("--mem-limit-mib")?;
                    a.mem_limit_mib = Some(number("--mem-limit-mib", &v, 1)?)
                }
                "--cpu-quota-us" => {
                    let v = value("--cpu-quota-us")?;
                    a.cpu_quota_us = Some(number("--cpu-quota-us", &v, 1000)?)
                }
                "--all-vms-cpu-quota-us" => {
                    let v = value("--all-vms-cpu-quota-us")?;
                    a.all_vms_cpu_quota_us = Some(number("--all-vms-cpu-quota-us", &v, 1000)?)
                }
                "--cpu-period-us" => {
                    let v = value("--cpu-period-us")?;
                    a.cpu_period_us = Some(number("--cpu-period-us", &v, 1000)?)
                }
                "--pids-max" => {
                    let v = value("--pids-max")?;
                    a.pids_max = Some(number("--pids-max", &v, 2)?)
                }
                "--rlimit" => {
                    let v = value("--rlimit")?;
                    let (name, n) = v
                        .split_once('=')
                        .ok_or_else(|| invalid("--rlimit", &v, "expected NAME=N"))?;
                    let resource = Rlimit::parse(name)
                        .ok_or_else(|| invalid("--rlimit", &v, "unknown resource"))?;
                    let n = number("--rlimit", n, 0)?;
                    a.rlimits.retain(|(r, _)| *r != resource);
                    a.rlimits.push((resource, n));
                }
                "--pid-file" => a.pid_file = Some(value("--pid-file")?),
                "--keep" => a.keep = true,
                "--timing" => a.timing = true,
                other => return Err(JailerArgsError::Unknown(other.into())),
            }
        }
        a.id = id.ok_or(JailerArgsError::Missing("--id"))?;
        a.exec_file = exec_file.ok_or(JailerArgsError::Missing("--exec-file"))?;
        validate_id(&a.id)?;
        if a.tun && a.netns.is_none() {
            // A TAP in a fresh, empty namespace could not reach anything.
            return Err(invalid(
                "--tun",
                "",
                "needs --netns (the namespace holding the TAP)",
            ));
        }
        Ok(a)
    }

    /// The command line (without the program name) that [`Self::parse`]
    /// reads back as `self`.
    pub fn to_args(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut opt = |flag: &str, v: Option<String>| {
            if let Some(v) = v {
                out.push(flag.to_string());
                out.push(v);
            }
        };
        let num = |n: Option<u64>| n.map(|n| n.to_string());
        opt("--id", Some(self.id.clone()));
        opt("--exec-file", Some(self.exec_file.clone()));
        opt("--uid", self.uid.map(|n| n.to_string()));
        opt("--gid", self.gid.map(|n| n.to_string()));
        opt("--chroot-base", self.chroot_base.clone());
        for (src, dst) in &self.bind_dirs {
            opt("--dir-rw", Some(format!("{src}:{dst}")));
        }
        for (src, dst) in &self.ro_dirs {
            opt("--dir-ro", Some(format!("{src}:{dst}")));
        }
        for d in &self.rw_dirs {
            opt("--rw-dir", Some(d.clone()));
        }
        opt("--netns", self.netns.clone());
        opt(
            "--cgroup-version",
            match self.cgroup_version {
                CgroupVersion::Auto => None,
                CgroupVersion::V1 => Some("1".into()),
                CgroupVersion::V2 => Some("2".into()),
            },
        );
        opt("--mem-limit-mib", num(self.mem_limit_mib));
        opt("--cpu-quota-us", num(self.cpu_quota_us));
        opt("--cpu-period-us", num(self.cpu_period_us));
        opt("--all-vms-cpu-quota-us", num(self.all_vms_cpu_quota_us));
        opt("--pids-max", num(self.pids_max));
        for (r, n) in &self.rlimits {
            opt("--rlimit", Some(format!("{}={n}", r.name())));
        }
        opt("--pid-file", self.pid_file.clone());
        for f in &self.files {
            let flag = if f.writable { "--file-rw" } else { "--file" };
            opt(flag, Some(format!("{}:{}", f.src, f.dst)));
        }
        for (on, flag) in [
            (self.tun, "--tun"),
            (self.keep, "--keep"),
            (self.timing, "--timing"),
        ] {
            if on {
                out.push(flag.to_string());
            }
        }
        out.push("--".into());
        out.extend(self.vmm_args.iter().cloned());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn parse_str(s: &str) -> Result<JailerArgs, JailerArgsError> {
        JailerArgs::parse(s.split_whitespace())
    }

    #[test]
    fn minimal_and_passthrough() {
        let a = parse_str("--id vm-1 --exec-file /x/ember-vmm -- --kernel /agent --mem-mib 64")
            .expect("valid");
        assert_eq!(a.id, "vm-1");
        assert_eq!(a.vmm_args, ["--kernel", "/agent", "--mem-mib", "64"]);
        assert_eq!(a.uid, None);
        assert_eq!(a.pids_max, None);
    }

    #[test]
    fn round_trips() {
        let full = JailerArgs {
            id: "env_1-a".into(),
            exec_file: "/usr/bin/ember-vmm".into(),
            uid: Some(3_000_001),
            gid: Some(3_000_002),
            chroot_base: Some("/srv/j".into()),
            files: vec![
                JailFileArg {
                    src: "/img/agent".into(),
                    dst: "/agent".into(),
                    writable: false,
                },
                JailFileArg {
                    src: "/w/console.log".into(),
                    dst: "/console".into(),
                    writable: true,
                },
            ],
            rw_dirs: vec!["/logs".into()],
            bind_dirs: vec![("/w/e1".into(), "/run".into())],
            ro_dirs: vec![("/dev/shm/s1".into(), "/snap".into())],
            tun: true,
            netns: Some("/run/netns/x".into()),
            cgroup_version: CgroupVersion::V2,
            mem_limit_mib: Some(624),
            cpu_quota_us: Some(50_000),
            cpu_period_us: Some(100_000),
            all_vms_cpu_quota_us: Some(180_000),
            pids_max: Some(32),
            rlimits: vec![(Rlimit::Fsize, 10), (Rlimit::Nofile, 64)],
            pid_file: Some("/w/pid".into()),
            keep: true,
            timing: true,
            vmm_args: vec!["--kernel".into(), "/agent".into(), "--".into()],
        };
        let minimal = JailerArgs {
            id: "a".into(),
            exec_file: "/e".into(),
            ..Default::default()
        };
        for a in [full, minimal] {
            assert_eq!(JailerArgs::parse(a.to_args()), Ok(a));
        }
    }

    #[test]
    fn refuses_bad_ids_and_paths() {
        let bad_value = |s: &str, option: &str| match parse_str(s) {
            Err(JailerArgsError::Invalid { option: o, .. }) => assert_eq!(o, option, "{s}"),
            other => panic!("{s}: {other:?}"),
        };
        bad_value("--id ../x --exec-file /e", "--id");
        bad_value("--id a --exec-file /e --uid 0", "--uid");
        bad_value("--id a --exec-file /e --rw-dir /dev/x", "--rw-dir");
        bad_value("--id a --exec-file /e --rw-dir /", "--rw-dir");
        bad_value("--id a --exec-file /e --rw-dir /ember-vmm", "--rw-dir");
        bad_value("--id a --exec-file /e --file /a:/../etc/x", "--file");
        bad_value("--id a --exec-file /e --file /a:rel", "--file");
        bad_value("--id a --exec-file /e --file /a/..", "--file");
        bad_value("--id a --exec-file /e --tun", "--tun");
        bad_value("--id a --exec-file /e --dir-rw /w", "--dir-rw");
        bad_value("--id a --exec-file /e --dir-ro /w", "--dir-ro");
        bad_value("--id a --exec-file /e --dir-ro /w:/dev/w", "--dir-ro");
        bad_value("--id a --exec-file /e --pids-max 1", "--pids-max");
        bad_value("--id a --exec-file /e --rlimit core=0", "--rlimit");
        bad_value(
            "--id a --exec-file /e --cgroup-version 3",
            "--cgroup-version",
        );
        assert_eq!(
            parse_str("--id a --exec-file /e --bogus"),
            Err(JailerArgsError::Unknown("--bogus".into()))
        );
        assert_eq!(
            parse_str("--exec-file /e"),
            Err(JailerArgsError::Missing("--id"))
        );
        assert_eq!(
            parse_str("--id a --exec-file"),
            Err(JailerArgsError::NoValue("--exec-file".into()))
        );
        // Not under /dev: a sibling whose name starts the same is fine.
        assert!(parse_str("--id a --exec-file /e --rw-dir /device").is_ok());
    }

    #[test]
    fn files_and_limits() {
        let a = parse_str(
            "--id a --exec-file /e --file /img/agent.elf --file-rw /d/tmp.ext4:/disk/tmp \
             --rlimit fsize=10 --mem-limit-mib 160 --uid 12345 --gid 12345 --dir-rw /w/e1:/run \
             --rlimit fsize=20",
        )
        .expect("valid");
        assert_eq!(a.files[0].dst, "/agent.elf");
        assert!(!a.files[0].writable);
        assert_eq!(a.files[1].dst, "/disk/tmp");
        assert!(a.files[1].writable);
        assert_eq!(a.mem_limit_mib, Some(160));
        assert_eq!(a.uid, Some(12345));
        assert_eq!(a.bind_dirs, [("/w/e1".into(), "/run".into())]);
        assert_eq!(a.rlimits, [(Rlimit::Fsize, 20)]);
    }
}

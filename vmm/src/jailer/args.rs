//! Command line of `ember-jailer`: parses argv into a validated [`JailConfig`].
//!
//! ```text
//! ember-jailer --id ID --exec-file PATH [options] -- [ember-vmm arguments]
//! ```
//! Everything after `--` goes to `ember-vmm` unchanged; paths in it are paths
//! *inside* the jail (`/` is the jail root).

use std::path::PathBuf;

use super::{CgroupVersion, JailConfig, JailFile, Limits};

/// Why the command line was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
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
  --tun                   add /dev/net/tun (only with a network)
  --netns PATH            join this network namespace (it holds the VM's TAP)
  --cgroup-version 1|2|auto   (default auto: v1 when its memory controller is mounted)
  --mem-limit-mib N       cgroup memory limit (guest memory + overhead)
  --cpu-quota-us N        CFS quota per period (default: no quota)
  --cpu-period-us N       CFS period (default 100000)
  --pids-max N            cgroup pids limit (default 64)
  --rlimit NAME=N         fsize|nofile|nproc|as|memlock (repeatable)
  --pid-file PATH         write the VMM's host pid here
  --keep                  leave jail dir and cgroups behind at exit (debugging)
  --timing                print the jail setup time to stderr";

/// Parses `ember-jailer`'s arguments (without argv[0]).
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<JailConfig, ArgsError> {
    let mut it = args.into_iter();
    let mut id = None;
    let mut exec_file = None;
    let mut cfg = JailConfig::new(String::new(), PathBuf::new());
    while let Some(arg) = it.next() {
        if arg == "--" {
            cfg.vmm_args = it.by_ref().collect();
            break;
        }
        let mut value = |name: &str| it.next().ok_or_else(|| ArgsError::NoValue(name.into()));
        match arg.as_str() {
            "--id" => id = Some(value("--id")?),
            "--exec-file" => exec_file = Some(PathBuf::from(value("--exec-file")?)),
            "--uid" => cfg.uid = parse_id("--uid", &value("--uid")?)?,
            "--gid" => cfg.gid = parse_id("--gid", &value("--gid")?)?,
            "--chroot-base" => cfg.chroot_base = PathBuf::from(value("--chroot-base")?),
            "--file" => cfg
                .files
                .push(parse_file("--file", &value("--file")?, false)?),
            "--file-rw" => {
                let v = value("--file-rw")?;
                cfg.files.push(parse_file("--file-rw", &v, true)?)
            }
            "--dir-rw" => {
                let v = value("--dir-rw")?;
                let (src, dst) = v
                    .split_once(':')
                    .ok_or_else(|| invalid("--dir-rw", &v, "expected SRC:DST"))?;
                cfg.bind_dirs
                    .push((PathBuf::from(src), jail_path("--dir-rw", dst)?));
            }
            "--rw-dir" => {
                let v = value("--rw-dir")?;
                cfg.rw_dirs.push(jail_path("--rw-dir", &v)?)
            }
            "--tun" => cfg.tun = true,
            "--netns" => cfg.netns = Some(PathBuf::from(value("--netns")?)),
            "--cgroup-version" => {
                let v = value("--cgroup-version")?;
                cfg.cgroup_version = match v.as_str() {
                    "1" => CgroupVersion::V1,
                    "2" => CgroupVersion::V2,
                    "auto" => CgroupVersion::Auto,
                    _ => return Err(invalid("--cgroup-version", &v, "expected 1, 2 or auto")),
                }
            }
            "--mem-limit-mib" => {
                let v = value("--mem-limit-mib")?;
                cfg.limits.mem_limit_mib = Some(number("--mem-limit-mib", &v, 1)?)
            }
            "--cpu-quota-us" => {
                let v = value("--cpu-quota-us")?;
                cfg.limits.cpu_quota_us = Some(number("--cpu-quota-us", &v, 1000)?)
            }
            "--cpu-period-us" => {
                let v = value("--cpu-period-us")?;
                cfg.limits.cpu_period_us = number("--cpu-period-us", &v, 1000)?
            }
            "--pids-max" => {
                let v = value("--pids-max")?;
                cfg.limits.pids_max = number("--pids-max", &v, 2)?
            }
            "--rlimit" => {
                let v = value("--rlimit")?;
                let (name, n) = v
                    .split_once('=')
                    .ok_or_else(|| invalid("--rlimit", &v, "expected NAME=N"))?;
                let resource = rlimit_resource(name)
                    .ok_or_else(|| invalid("--rlimit", &v, "unknown resource"))?;
                let n = number("--rlimit", n, 0)?;
                cfg.limits.rlimits.retain(|(r, _)| *r != resource);
                cfg.limits.rlimits.push((resource, n));
            }
            "--pid-file" => cfg.pid_file = Some(PathBuf::from(value("--pid-file")?)),
            "--keep" => cfg.keep = true,
            "--timing" => cfg.timing = true,
            other => return Err(ArgsError::Unknown(other.into())),
        }
    }
    cfg.id = id.ok_or(ArgsError::Missing("--id"))?;
    cfg.exec_file = exec_file.ok_or(ArgsError::Missing("--exec-file"))?;
    validate_id(&cfg.id)?;
    if cfg.tun && cfg.netns.is_none() {
        // A TAP in a fresh, empty namespace could not reach anything.
        return Err(invalid(
            "--tun",
            "",
            "needs --netns (the namespace holding the TAP)",
        ));
    }
    Ok(cfg)
}

fn invalid(option: &str, value: &str, why: &'static str) -> ArgsError {
    ArgsError::Invalid {
        option: option.into(),
        value: value.into(),
        why,
    }
}

fn number(option: &str, value: &str, min: u64) -> Result<u64, ArgsError> {
    match value.parse::<u64>() {
        Ok(n) if n >= min => Ok(n),
        Ok(_) => Err(invalid(option, value, "too small")),
        Err(_) => Err(invalid(option, value, "not a number")),
    }
}

/// `auto` (None) or an unprivileged id: never 0, never above the 32-bit "nobody" range.
fn parse_id(option: &str, value: &str) -> Result<Option<u32>, ArgsError> {
    if value == "auto" {
        return Ok(None);
    }
    match value.parse::<u32>() {
        Ok(0) => Err(invalid(option, value, "root is not an unprivileged id")),
        Ok(n) if n < u32::MAX - 1 => Ok(Some(n)),
        _ => Err(invalid(option, value, "expected a number or auto")),
    }
}

fn validate_id(id: &str) -> Result<(), ArgsError> {
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

/// A path inside the jail: absolute, no `..`, not the root, not under /dev.
fn jail_path(option: &str, value: &str) -> Result<PathBuf, ArgsError> {
    let p = PathBuf::from(value);
    let bad = !p.is_absolute()
        || p.components().count() < 2
        || p.components().any(|c| {
            matches!(
                c,
                std::path::Component::ParentDir | std::path::Component::CurDir
            )
        })
        || p.starts_with("/dev")
        || p == std::path::Path::new("/ember-vmm");
    if bad {
        return Err(invalid(
            option,
            value,
            "jail path must be absolute, without `..`, outside /dev",
        ));
    }
    Ok(p)
}

fn parse_file(option: &str, value: &str, writable: bool) -> Result<JailFile, ArgsError> {
    let (src, dst) = match value.split_once(':') {
        Some((s, d)) => (PathBuf::from(s), jail_path(option, d)?),
        None => {
            let src = PathBuf::from(value);
            let name = src
                .file_name()
                .ok_or_else(|| invalid(option, value, "no file name"))?;
            let dst = PathBuf::from("/").join(name);
            (src, jail_path(option, &dst.to_string_lossy())?)
        }
    };
    Ok(JailFile { src, dst, writable })
}

fn rlimit_resource(name: &str) -> Option<u32> {
    let r = match name {
        "fsize" => libc::RLIMIT_FSIZE,
        "nofile" | "no-file" => libc::RLIMIT_NOFILE,
        "nproc" => libc::RLIMIT_NPROC,
        "as" => libc::RLIMIT_AS,
        "memlock" => libc::RLIMIT_MEMLOCK,
        _ => return None,
    };
    Some(r)
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            mem_limit_mib: None,
            cpu_quota_us: None,
            cpu_period_us: 100_000,
            pids_max: 64,
            rlimits: vec![
                (libc::RLIMIT_FSIZE, 1 << 30),
                (libc::RLIMIT_NOFILE, 2048),
                (libc::RLIMIT_NPROC, 128),
                (libc::RLIMIT_CORE, 0),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<JailConfig, ArgsError> {
        parse(s.split_whitespace().map(String::from))
    }

    #[test]
    fn minimal_and_passthrough() {
        let c = parse_str("--id vm-1 --exec-file /x/ember-vmm -- --kernel /agent --mem-mib 64")
            .expect("valid");
        assert_eq!(c.id, "vm-1");
        assert_eq!(c.vmm_args, ["--kernel", "/agent", "--mem-mib", "64"]);
        assert_eq!(c.uid, None);
        assert_eq!(c.limits.pids_max, 64);
    }

    #[test]
    fn rejects_bad_ids_and_paths() {
        assert!(parse_str("--id ../x --exec-file /e").is_err());
        assert!(parse_str("--id a --exec-file /e --uid 0").is_err());
        assert!(parse_str("--id a --exec-file /e --rw-dir /dev/x").is_err());
        assert!(parse_str("--id a --exec-file /e --file /a:/../etc/x").is_err());
        assert!(parse_str("--id a --exec-file /e --file /a:rel").is_err());
        assert!(parse_str("--id a --exec-file /e --bogus").is_err());
        assert!(parse_str("--id a --exec-file /e --tun").is_err());
        assert!(parse_str("--exec-file /e").is_err());
    }

    #[test]
    fn files_and_limits() {
        let c = parse_str(
            "--id a --exec-file /e --file /img/agent.elf --file-rw /d/tmp.ext4:/disk/tmp \
             --rlimit fsize=10 --mem-limit-mib 160 --uid 12345 --gid 12345 --dir-rw /w/e1:/run",
        )
        .expect("valid");
        assert_eq!(c.files[0].dst, PathBuf::from("/agent.elf"));
        assert!(!c.files[0].writable);
        assert_eq!(c.files[1].dst, PathBuf::from("/disk/tmp"));
        assert!(c.files[1].writable);
        assert_eq!(c.limits.mem_limit_mib, Some(160));
        assert_eq!(c.uid, Some(12345));
        assert_eq!(
            c.bind_dirs,
            [(PathBuf::from("/w/e1"), PathBuf::from("/run"))]
        );
        assert!(parse_str("--id a --exec-file /e --dir-rw /w").is_err());
        let fsize: Vec<_> = c
            .limits
            .rlimits
            .iter()
            .filter(|(r, _)| *r == libc::RLIMIT_FSIZE)
            .collect();
        assert_eq!(fsize, [&(libc::RLIMIT_FSIZE, 10)]);
    }
}

//! From `ember-jailer`'s command line to a [`JailConfig`]: the flags are
//! parsed and checked by `ember_abi::jailer_args` (one definition shared
//! with `emberd`, which builds them); this file applies the jailer's
//! defaults and turns names into host types (paths, `RLIMIT_*`).

use std::path::PathBuf;

use ember_abi::jailer_args::{JailerArgs, JailerArgsError, Rlimit};

use super::{JailConfig, JailFile, Limits, DEFAULT_CHROOT_BASE};

pub use ember_abi::jailer_args::USAGE;

/// Parses `ember-jailer`'s arguments (without argv[0]).
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<JailConfig, JailerArgsError> {
    JailerArgs::parse(args).map(JailConfig::from)
}

impl From<JailerArgs> for JailConfig {
    fn from(a: JailerArgs) -> Self {
        let mut limits = Limits::default();
        limits.mem_limit_mib = a.mem_limit_mib;
        limits.cpu_quota_us = a.cpu_quota_us;
        limits.all_vms_cpu_quota_us = a.all_vms_cpu_quota_us;
        if let Some(p) = a.cpu_period_us {
            limits.cpu_period_us = p;
        }
        if let Some(n) = a.pids_max {
            limits.pids_max = n;
        }
        for (r, n) in a.rlimits {
            let resource = rlimit_resource(r);
            limits.rlimits.retain(|(have, _)| *have != resource);
            limits.rlimits.push((resource, n));
        }
        JailConfig {
            id: a.id,
            exec_file: a.exec_file.into(),
            uid: a.uid,
            gid: a.gid,
            chroot_base: PathBuf::from(a.chroot_base.as_deref().unwrap_or(DEFAULT_CHROOT_BASE)),
            files: a
                .files
                .into_iter()
                .map(|f| JailFile {
                    src: f.src.into(),
                    dst: f.dst.into(),
                    writable: f.writable,
                })
                .collect(),
            rw_dirs: a.rw_dirs.into_iter().map(PathBuf::from).collect(),
            bind_dirs: a
                .bind_dirs
                .into_iter()
                .map(|(s, d)| (s.into(), d.into()))
                .collect(),
            ro_dirs: a
                .ro_dirs
                .into_iter()
                .map(|(s, d)| (s.into(), d.into()))
                .collect(),
            tun: a.tun,
            netns: a.netns.map(PathBuf::from),
            cgroup_version: a.cgroup_version,
            limits,
            pid_file: a.pid_file.map(PathBuf::from),
            keep: a.keep,
            timing: a.timing,
            vmm_args: a.vmm_args,
        }
    }
}

fn rlimit_resource(r: Rlimit) -> u32 {
    match r {
        Rlimit::Fsize => libc::RLIMIT_FSIZE,
        Rlimit::Nofile => libc::RLIMIT_NOFILE,
        Rlimit::Nproc => libc::RLIMIT_NPROC,
        Rlimit::As => libc::RLIMIT_AS,
        Rlimit::Memlock => libc::RLIMIT_MEMLOCK,
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            mem_limit_mib: None,
            cpu_quota_us: None,
            cpu_period_us: 100_000,
            all_vms_cpu_quota_us: None,
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

    fn parse_str(s: &str) -> Result<JailConfig, JailerArgsError> {
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
        assert_eq!(c.chroot_base, PathBuf::from(DEFAULT_CHROOT_BASE));
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

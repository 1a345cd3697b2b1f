//! What `emberd` checks before it serves: that it can start environments
//! (root for the jailer, `/dev/kvm`, the VMM, agent and jailer binaries), so
//! a misconfigured host fails at start with the reason instead of answering
//! every invoke with an error.

use std::path::Path;

/// One reason `emberd` could not start environments on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem(pub String);

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Every problem found; empty when environments can start. `jailed` is
/// false under `--no-jail`; `launcher_unavailable` is what the launcher
/// reported about its binaries.
pub fn check(
    jailed: bool,
    euid: u32,
    kvm: &Path,
    launcher_unavailable: Option<&str>,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    if jailed && euid != 0 {
        problems.push(Problem(
            "the jailer needs root (chroot, namespaces, cgroups, a uid per VM): run emberd as root, \
             or pass --no-jail (debugging only: environments are not isolated)"
                .into(),
        ));
    }
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open(kvm) {
        problems.push(Problem(format!(
            "cannot open {} ({e}): KVM is needed to run microVMs",
            kvm.display()
        )));
    }
    if let Some(why) = launcher_unavailable {
        problems.push(Problem(format!(
            "{why}: build with `cargo build --release --bins` and `bash guest-agent/kernelless/build.sh`, \
             or pass --vmm/--wasm-agent/--jailer"
        )));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_without_no_jail_is_refused_with_the_way_out() {
        let p = check(true, 1000, Path::new("/dev/null"), None);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].0.contains("--no-jail"), "{}", p[0]);
        assert!(check(false, 1000, Path::new("/dev/null"), None).is_empty());
        assert!(check(true, 0, Path::new("/dev/null"), None).is_empty());
    }

    #[test]
    fn a_missing_kvm_and_missing_binaries_are_each_named() {
        let p = check(
            false,
            0,
            Path::new("/nonexistent/kvm"),
            Some("not found: /x/ember-vmm"),
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].0.contains("/nonexistent/kvm"), "{}", p[0]);
        assert!(p[1].0.contains("/x/ember-vmm"), "{}", p[1]);
    }
}

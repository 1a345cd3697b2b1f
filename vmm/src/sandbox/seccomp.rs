//! Turns the allowlists of [`super::filters`] into BPF with seccompiler at run
//! time (a few µs per filter) and installs them on the calling thread.
//! Anything not on the list: SECCOMP_RET_KILL_PROCESS (the kernel kills the
//! whole VMM with SIGSYS, so a compromised thread cannot keep going).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::{filters, SandboxError, ThreadKind};

/// One condition on a syscall argument.
#[derive(Clone, Copy, Debug)]
pub enum Cond {
    /// Argument `idx` (low 32 bits) equals the value.
    Eq(u8, u64),
    /// Argument `idx` (low 32 bits) has none of the bits of the mask.
    NoBits(u8, u64),
}

/// The allowlist of one thread kind: syscall → alternatives (any one of
/// them allows the call; each alternative is a list of conditions that must
/// all hold; an empty alternatives list allows the syscall unconditionally).
pub type Allowlist = BTreeMap<i64, Vec<Vec<Cond>>>;

fn condition(c: Cond) -> Result<SeccompCondition, seccompiler::BackendError> {
    let (idx, op, value) = match c {
        Cond::Eq(i, v) => (i, SeccompCmpOp::Eq, v),
        Cond::NoBits(i, m) => (i, SeccompCmpOp::MaskedEq(m), 0),
    };
    SeccompCondition::new(idx, SeccompCmpArgLen::Dword, op, value)
}

/// Compiles an allowlist into BPF.
pub fn compile(list: &Allowlist) -> Result<BpfProgram, seccompiler::BackendError> {
    let mut rules = BTreeMap::new();
    for (&sys, alternatives) in list {
        let mut compiled = Vec::with_capacity(alternatives.len());
        for conds in alternatives {
            let conds = conds
                .iter()
                .map(|&c| condition(c))
                .collect::<Result<Vec<_>, _>>()?;
            compiled.push(SeccompRule::new(conds)?);
        }
        rules.insert(sys, compiled);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )?;
    filter.try_into()
}

/// The second filter of every thread: `open`/`openat` fail with EACCES
/// instead of killing. glibc opens files behind the program's back (e.g.
/// /proc/sys/vm/overcommit_memory when a thread's malloc arena shrinks);
/// failing those is harmless, and Landlock plus the jail already deny every
/// path. The allowlist lets them through so that this filter decides (of
/// two filters, the kernel applies the stricter action: ERRNO over ALLOW).
pub fn compile_open_denial() -> Result<BpfProgram, seccompiler::BackendError> {
    let rules = [libc::SYS_open, libc::SYS_openat]
        .into_iter()
        .map(|s| (s, Vec::new()))
        .collect();
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EACCES as u32),
        TargetArch::x86_64,
    )?
    .try_into()
}

/// Builds and installs `kind`'s filters on the calling thread.
/// `api_files`: the main thread of an API-driven VMM, which creates
/// snapshot files (Landlock confines them to the API socket's directory):
/// its allowlist gains file creation and the open denial is left out.
pub fn install(kind: ThreadKind, api_files: bool) -> Result<(), SandboxError> {
    let mut list = filters::allowlist(kind);
    let files = api_files && kind == ThreadKind::Main;
    if files {
        filters::add_snapshot_files(&mut list);
    }
    let bpf = compile(&list).map_err(|e| SandboxError::Build(kind.name(), e))?;
    if !files {
        let deny_open = compile_open_denial().map_err(|e| SandboxError::Build(kind.name(), e))?;
        seccompiler::apply_filter(&deny_open).map_err(|e| SandboxError::Install(kind.name(), e))?;
    }
    seccompiler::apply_filter(&bpf).map_err(|e| SandboxError::Install(kind.name(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_allowlist_compiles() {
        for kind in super::super::ALL {
            let bpf = compile(&filters::allowlist(kind)).expect("compiles");
            // A BPF program is capped at 4096 instructions by the kernel.
            assert!(
                bpf.len() < 4096,
                "{} filter too long: {}",
                kind.name(),
                bpf.len()
            );
        }
    }

    /// Runs `f` in a fresh thread that first installs `kind`'s filter, in a
    /// forked child so a kill cannot take the test runner down; returns the
    /// child's wait status.
    fn in_filtered_child(kind: ThreadKind, f: fn() -> i32) -> i32 {
        let bpf = compile(&filters::allowlist(kind)).expect("compiles");
        let deny_open = compile_open_denial().expect("compiles");
        // SAFETY: the child only installs the filter, runs f and _exits; it
        // touches no lock another test thread could hold except the allocator,
        // which it does not use after fork (bpf is built before).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let applied = seccompiler::apply_filter(&deny_open)
                .and_then(|()| seccompiler::apply_filter(&bpf));
            let code = match applied {
                Ok(()) => f(),
                Err(_) => 99,
            };
            // SAFETY: _exit ends the child without running the parent's atexit handlers.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: status is a writable int; pid is our child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        status
    }

    #[test]
    fn forbidden_syscall_kills_with_sigsys() {
        for kind in super::super::ALL {
            let status = in_filtered_child(kind, || {
                // SAFETY: socket() with constant arguments touches no memory.
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
                0
            });
            assert!(libc::WIFSIGNALED(status), "{}: {status:#x}", kind.name());
            assert_eq!(libc::WTERMSIG(status), libc::SIGSYS, "{}", kind.name());
        }
    }

    #[test]
    fn opening_a_file_fails_with_eacces_without_killing() {
        for kind in super::super::ALL {
            let status = in_filtered_child(kind, || {
                // SAFETY: a valid NUL-terminated path; the fd (if any) is not used.
                let fd = unsafe { libc::open(c"/etc/hostname".as_ptr(), libc::O_RDONLY) };
                let errno = std::io::Error::last_os_error().raw_os_error();
                i32::from(!(fd < 0 && errno == Some(libc::EACCES)))
            });
            assert!(libc::WIFEXITED(status), "{}: {status:#x}", kind.name());
            assert_eq!(libc::WEXITSTATUS(status), 0, "{}", kind.name());
        }
    }

    #[test]
    fn executable_mappings_are_forbidden() {
        let status = in_filtered_child(ThreadKind::EventLoop, || {
            // SAFETY: an anonymous mapping request; the result is not used.
            unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            0
        });
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS);
        let status = in_filtered_child(ThreadKind::EventLoop, || {
            // SAFETY: an anonymous read/write mapping; unmapped by process exit.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            i32::from(p == libc::MAP_FAILED)
        });
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{status:#x}"
        );
    }
}

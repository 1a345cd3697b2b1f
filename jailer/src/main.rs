//! `ember-jailer`: runs one `ember-vmm` in a per-VM jail (chroot via
//! pivot_root, namespaces, cgroups, unique uid/gid, no capabilities, rlimits)
//! and exits the way the VMM did: same exit code, or the same fatal signal
//! (SIGSYS when seccomp killed it). Setup errors exit with code 70 (EX_SOFTWARE)
//! after one line on stderr; usage errors with 64 (EX_USAGE).

use ember_abi::exit::ExitCode;
use ember_jailer::{self as jailer, VmmExit};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args
        .iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "--help" || a == "-h")
    {
        println!("{}", jailer::USAGE);
        return;
    }
    if args.first().is_some_and(|a| a == "--version" || a == "-V") {
        println!("ember-jailer {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    let cfg = match jailer::parse(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ember-jailer: {e}\n{}", jailer::USAGE);
            std::process::exit(ExitCode::JailerUsage.code());
        }
    };
    match jailer::run(cfg) {
        Ok(VmmExit::Code(c)) => std::process::exit(c),
        Ok(VmmExit::Signal(s)) => die_by(s),
        Err(e) => {
            eprintln!("ember-jailer: {e}");
            std::process::exit(ExitCode::SetupFailed.code());
        }
    }
}

/// Ends this process with the VMM's fatal signal, so the caller's wait status
/// says e.g. "killed by SIGSYS" exactly as for an unjailed VMM.
fn die_by(sig: i32) -> ! {
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on this process's own limits, disposition and
    // mask; the set is initialised before use.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
    }
    // Signals whose default action is not fatal: fall back to the shell convention.
    std::process::exit(128 + sig)
}

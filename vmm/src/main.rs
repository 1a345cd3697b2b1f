//! `ember-vmm`: one KVM microVM per process, a thin wrapper over the
//! `ember_vmm` library. Parses the command line, sets up logging, builds and
//! runs the VM, and turns how it ended into one report line and an exit code
//! (DESIGN.md, "Exit codes").

use std::time::Instant;

use ember_abi::exit::ExitCode;
use ember_vmm::api::{self, controller::Controller};
use ember_vmm::exit::VmExit;
use ember_vmm::{cli, log_debug, log_error, log_warn, logger, sandbox, vm};

fn main() {
    let start = Instant::now();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let inv = match cli::parse(&args) {
        Ok(cli::Command::Help) => {
            println!("{}", cli::USAGE);
            std::process::exit(0);
        }
        Ok(cli::Command::Version) => {
            println!("ember-vmm {}", env!("CARGO_PKG_VERSION"));
            std::process::exit(0);
        }
        Ok(cli::Command::Run(inv)) => inv,
        Err(e) => {
            eprintln!("ember-vmm: error: {}", logger::error_line(&e));
            let code = match e {
                cli::CliError::Config(_) => ExitCode::VmmError,
                _ => ExitCode::Usage,
            };
            std::process::exit(code.code());
        }
    };
    sandbox::init(inv.sandbox.clone());
    // With the API and no logging flags, `PUT /logger` sets logging up.
    logger::set_fallback_level(inv.level);
    if inv.api_sock.is_none() || inv.log_flags {
        if let Err(e) = logger::init(inv.level, inv.log_path.as_deref(), &inv.id) {
            eprintln!("ember-vmm: error: cannot open the log file: {e}");
            std::process::exit(ExitCode::VmmError.code());
        }
    }
    if !inv.sandbox.seccomp {
        log_warn!("--no-seccomp: running without the syscall filters");
    }
    let start = inv
        .start_time_us
        .and_then(start_from_monotonic_us)
        .unwrap_or(start);
    if let Some(path) = &inv.api_sock {
        let listener = api::bind(path).unwrap_or_else(|e| fail(&e));
        let controller = Controller::new(inv.config, inv.id.clone(), start);
        let exit = api::run(listener, controller, inv.boot_now).unwrap_or_else(|e| fail(&e));
        report(&exit);
        std::process::exit(exit.exit_code().code());
    }
    let config = match inv.config.validate() {
        Ok(c) => c,
        Err(e) => fail(&e),
    };
    // The config file's `metrics` section: opened before the sandbox, one
    // line written when the VM ends.
    let mut metrics = api::metrics::ApiMetrics::default();
    if let Some(p) = &config.config.metrics_path {
        if let Err(e) = metrics.open(&p.display().to_string()) {
            eprintln!("ember-vmm: error: cannot open the metrics file: {e}");
            std::process::exit(ExitCode::VmmError.code());
        }
    }
    let exit = match vm::run(&config, start) {
        Ok(exit) => exit,
        Err(e) => fail(&e),
    };
    if let Err(e) = metrics.flush() {
        log_warn!("cannot write metrics: {e}");
    }
    report(&exit);
    std::process::exit(exit.exit_code().code());
}

/// Reports a fatal error as one line on stderr (and in the log file, if any).
fn fail(e: &dyn std::error::Error) -> ! {
    let line = logger::error_line(e);
    if logger::to_file() {
        log_error!("{line}");
    }
    eprintln!("ember-vmm: error: {line}");
    std::process::exit(ExitCode::VmmError.code())
}

fn report(exit: &VmExit) {
    match exit {
        VmExit::Guest(code) => log_debug!("guest exited with code {code}"),
        VmExit::Reset => log_debug!("guest reset: VM stopped"),
        VmExit::Shutdown => log_debug!("guest shut down"),
        VmExit::Stopped => log_debug!("VM stopped"),
        VmExit::Crash { vcpu, reason, rip } => {
            let rip = rip.map_or("unknown".to_string(), |r| format!("{r:#x}"));
            eprintln!("ember-vmm: guest crashed: vCPU {vcpu}: {reason} at RIP {rip}");
        }
        VmExit::Panic(msg) => eprintln!("ember-vmm: guest crashed: kernel panic: {msg}"),
        VmExit::Error(msg) => eprintln!("ember-vmm: error: {msg}"),
        VmExit::Timeout(ms) => {
            eprintln!("ember-vmm: timeout: the guest ran longer than {ms} ms; stopped")
        }
    }
}

/// Converts a launcher's CLOCK_MONOTONIC start time into an `Instant`.
fn start_from_monotonic_us(us: u64) -> Option<Instant> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return None;
    }
    let now_us = ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000;
    Instant::now().checked_sub(std::time::Duration::from_micros(now_us.checked_sub(us)?))
}

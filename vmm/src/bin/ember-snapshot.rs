//! `ember-snapshot`: drives `ember_vmm::snapshot` from the command line for
//! tests and benchmarks until the Firecracker API socket (`PUT
//! /snapshot/create`, `PUT /snapshot/load`) calls it. No sandbox (the
//! production path is `ember-vmm`). Subcommands:
//!
//! ```text
//! create --kernel K [--cmdline S] [--mem-mib N] [--vcpus N] --state S --mem-file F
//!        (--after-ms T | --at-line TEXT --console FILE)
//!     boots K, pauses it after T ms or once the console file holds TEXT,
//!     writes the snapshot, prints one JSON report line, exits 0
//! load --state S --mem-file F [--console FILE|off] [--timeout-ms N] [--report]
//!     loads the snapshot, resumes it, exits as `ember-vmm` would
//! boot --kernel K [--cmdline S] [--mem-mib N] [--console FILE|off] [--report]
//!     a fresh boot through the same code, the load's peer in benchmarks
//! ```
//! `--report` prints `<what>_to_exit_us=N` on stderr: from the start of the
//! load (or build) to the guest's exit port write, then `phases:` and the
//! split of that time (`ember_vmm::phases`, microseconds per step).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ember_vmm::config::{ConsoleConfig, VmConfig};
use ember_vmm::exit::VmExit;
use ember_vmm::snapshot::{self, LoadParams};
use ember_vmm::vm::Vm;

/// How long `create --at-line` waits for the guest's line.
const LINE_WAIT: Duration = Duration::from_secs(20);

/// Why the command line or the run failed.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("usage: {0}")]
    Usage(String),
    #[error(transparent)]
    Config(#[from] ember_vmm::config::ConfigError),
    #[error(transparent)]
    Vm(#[from] ember_vmm::vm::VmError),
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error("the guest never printed {0:?}")]
    NoLine(String),
}

#[derive(Default)]
struct Args {
    kernel: Option<PathBuf>,
    cmdline: Option<String>,
    mem_mib: Option<u64>,
    vcpus: Option<u64>,
    state: Option<PathBuf>,
    mem_file: Option<PathBuf>,
    after_ms: Option<u64>,
    at_line: Option<String>,
    console: Option<String>,
    timeout_ms: Option<u64>,
    report: bool,
}

fn parse(argv: &[String]) -> Result<Args, CliError> {
    let mut a = Args::default();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        if flag == "--report" {
            a.report = true;
            continue;
        }
        let value = it
            .next()
            .ok_or_else(|| CliError::Usage(format!("{flag} needs a value")))?
            .clone();
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| CliError::Usage(format!("{flag}: not a number: {v}")))
        };
        match flag.as_str() {
            "--kernel" => a.kernel = Some(value.into()),
            "--cmdline" => a.cmdline = Some(value),
            "--mem-mib" => a.mem_mib = Some(num(&value)?),
            "--vcpus" => a.vcpus = Some(num(&value)?),
            "--state" => a.state = Some(value.into()),
            "--mem-file" => a.mem_file = Some(value.into()),
            "--after-ms" => a.after_ms = Some(num(&value)?),
            "--at-line" => a.at_line = Some(value),
            "--console" => a.console = Some(value),
            "--timeout-ms" => a.timeout_ms = Some(num(&value)?),
            other => return Err(CliError::Usage(format!("unknown flag {other}"))),
        }
    }
    Ok(a)
}

fn need<T: Clone>(v: &Option<T>, flag: &str) -> Result<T, CliError> {
    v.clone()
        .ok_or_else(|| CliError::Usage(format!("{flag} is required")))
}

fn console(a: &Args) -> ConsoleConfig {
    match a.console.as_deref() {
        None | Some("stdout") => ConsoleConfig::Stdout,
        Some("off") => ConsoleConfig::Off,
        Some(path) => ConsoleConfig::File(path.into()),
    }
}

fn boot_config(a: &Args) -> Result<VmConfig, CliError> {
    Ok(VmConfig {
        kernel: need(&a.kernel, "--kernel")?,
        cmdline: a.cmdline.clone(),
        mem_mib: a.mem_mib.unwrap_or(128),
        vcpus: a.vcpus.unwrap_or(1),
        console: console(a),
        timeout_ms: a.timeout_ms,
        ..VmConfig::default()
    })
}

/// Waits until the console file holds `text`.
fn wait_for_line(path: &str, text: &str) -> Result<(), CliError> {
    let deadline = Instant::now() + LINE_WAIT;
    while Instant::now() < deadline {
        if std::fs::read_to_string(path).is_ok_and(|s| s.contains(text)) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Err(CliError::NoLine(text.to_string()))
}

fn create(a: &Args) -> Result<i32, CliError> {
    let state = need(&a.state, "--state")?;
    let mem = need(&a.mem_file, "--mem-file")?;
    let mut vm = Vm::build(&boot_config(a)?.validate()?, Instant::now())?;
    vm.start()?;
    match (&a.after_ms, &a.at_line, &a.console) {
        (Some(ms), None, _) => std::thread::sleep(Duration::from_millis(*ms)),
        (None, Some(text), Some(path)) => wait_for_line(path, text)?,
        _ => {
            return Err(CliError::Usage(
                "create needs --after-ms T or --at-line TEXT with --console FILE".into(),
            ))
        }
    }
    vm.pause(Duration::from_secs(2))?;
    let r = snapshot::create(&vm, &state, &mem)?;
    println!(
        "{{\"create_us\":{},\"state_bytes\":{},\"memory_data_bytes\":{}}}",
        r.elapsed.as_micros(),
        r.state_bytes,
        r.memory_data_bytes
    );
    vm.stop();
    Ok(0)
}

fn run(mut vm: Vm, t: Instant, what: &str, report: bool) -> Result<i32, CliError> {
    let built = t.elapsed();
    vm.start()?;
    let exit = vm.wait();
    if report {
        eprintln!(
            "{what}_to_exit_us={} built_us={} phases: {}",
            t.elapsed().as_micros(),
            built.as_micros(),
            vm.phases().describe()
        );
    }
    vm.stop();
    if let VmExit::Crash { reason, .. } | VmExit::Error(reason) = &exit {
        eprintln!("ember-snapshot: {reason}");
    }
    Ok(exit.exit_code().code())
}

fn load(a: &Args) -> Result<i32, CliError> {
    let params = LoadParams {
        state_path: need(&a.state, "--state")?,
        mem_path: need(&a.mem_file, "--mem-file")?,
        backend: snapshot::MemBackend::File,
        console: console(a),
        timeout_ms: a.timeout_ms,
        track_dirty_pages: false,
        vsock_uds_override: None,
    };
    let t = Instant::now();
    let vm = snapshot::load(&params, t)?;
    run(vm, t, "load", a.report)
}

fn boot(a: &Args) -> Result<i32, CliError> {
    let t = Instant::now();
    let vm = Vm::build(&boot_config(a)?.validate()?, t)?;
    run(vm, t, "boot", a.report)
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let result = match argv.split_first() {
        Some((cmd, rest)) => parse(rest).and_then(|a| match cmd.as_str() {
            "create" => create(&a),
            "load" => load(&a),
            "boot" => boot(&a),
            other => Err(CliError::Usage(format!("unknown subcommand {other}"))),
        }),
        None => Err(CliError::Usage(
            "ember-snapshot create|load|boot ...".into(),
        )),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("ember-snapshot: error: {}", ember_abi::error::chain(&e));
            std::process::exit(match e {
                CliError::Usage(_) => 64,
                _ => 1,
            });
        }
    }
}

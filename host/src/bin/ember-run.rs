//! `ember-run`: run a WebAssembly function in one kernel-less microVM, for
//! development. Boots one environment (`ember-vmm` + `ember-wasm-agent`),
//! loads the module, invokes it once per event read from stdin (one event
//! per line, or all of stdin with `--whole`), prints each response on stdout
//! and the cold/warm timings on stderr. By default the module is compiled
//! ahead of time (`ember-wasm-compile`, for the CPU features the guest
//! announces) and run by the guest's wasmtime; `--engine wasmi` sends it
//! inline to the interpreter instead.
//!
//!     ember-run [OPTIONS] module.wasm < events.jsonl

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ember_host::env::bench::{self, Stats};
use ember_host::env::{
    vm_memory_mib, AgentError, Code, Console, Environment, FunctionError, InitSpec, InvokeRequest,
    LaunchConfig,
};
use ember_host::util::error_chain;

const USAGE: &str = "usage: ember-run [--vmm PATH] [--agent PATH] [--memory-mib N] [--timeout-ms N]
                 [--engine wasmtime|wasmi] [--compiler PATH]
                 [--handler NAME] [--env KEY=VALUE]... [--console FILE] [--whole] [--quiet]
                 [--tree MOUNT=ZIP]... [--tmp-mib N]
                 module.wasm < events
       (--tree mounts a ZIP read-only at MOUNT, e.g. /var/task=function.zip;
        trees at one MOUNT merge in order; --tmp-mib gives a writable /tmp)
       ember-run --bench-cold N [--bench-warm M] [OPTIONS] module.wasm
                 (N cold starts, then M warm invocations; prints median/p99)";

struct Args {
    vmm: PathBuf,
    agent: PathBuf,
    module: PathBuf,
    memory_mib: u32,
    timeout_ms: u32,
    handler: String,
    env: Vec<(String, String)>,
    /// Read-only trees: (mount, ZIP file).
    trees: Vec<(String, PathBuf)>,
    tmp_mib: u32,
    console: Console,
    whole: bool,
    quiet: bool,
    bench_cold: usize,
    bench_warm: usize,
    /// Compile ahead of time for wasmtime (default), or interpret (wasmi).
    compiled: bool,
    compiler: PathBuf,
}

/// `ember-vmm` next to this binary, or on $PATH.
fn default_vmm() -> PathBuf {
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("ember-vmm")));
    match sibling {
        Some(p) if p.exists() => p,
        _ => PathBuf::from("ember-vmm"),
    }
}

/// `$EMBER_WASM_AGENT`, or where `guest-agent/kernelless/build.sh` puts it.
fn default_agent() -> PathBuf {
    if let Some(p) = std::env::var_os("EMBER_WASM_AGENT") {
        return p.into();
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../guest-agent/kernelless/target/x86_64-unknown-linux-gnu/release/ember-wasm-agent")
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        vmm: default_vmm(),
        agent: default_agent(),
        module: PathBuf::new(),
        memory_mib: 128,
        timeout_ms: 3000,
        handler: "handle".into(),
        env: Vec::new(),
        trees: Vec::new(),
        tmp_mib: 0,
        console: Console::Off,
        whole: false,
        quiet: false,
        bench_cold: 0,
        bench_warm: 0,
        compiled: true,
        compiler: ember_host::aot::default_compiler(),
    };
    let mut it = std::env::args().skip(1);
    let mut module = None;
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--vmm" => a.vmm = value()?.into(),
            "--agent" => a.agent = value()?.into(),
            "--memory-mib" => a.memory_mib = value()?.parse().map_err(|_| "bad --memory-mib")?,
            "--timeout-ms" => a.timeout_ms = value()?.parse().map_err(|_| "bad --timeout-ms")?,
            "--handler" => a.handler = value()?,
            "--env" => {
                let kv = value()?;
                let (k, v) = kv.split_once('=').ok_or("--env wants KEY=VALUE")?;
                a.env.push((k.into(), v.into()));
            }
            "--tree" => {
                let mz = value()?;
                let (m, z) = mz.split_once('=').ok_or("--tree wants MOUNT=ZIP")?;
                a.trees.push((m.into(), z.into()));
            }
            "--tmp-mib" => a.tmp_mib = value()?.parse().map_err(|_| "bad --tmp-mib")?,
            "--console" => a.console = Console::File(value()?.into()),
            "--whole" => a.whole = true,
            "--engine" => {
                a.compiled = match value()?.as_str() {
                    "wasmtime" => true,
                    "wasmi" => false,
                    e => return Err(format!("--engine {e}: wasmtime or wasmi")),
                }
            }
            "--compiler" => a.compiler = value()?.into(),
            "--quiet" => a.quiet = true,
            "--bench-cold" => a.bench_cold = value()?.parse().map_err(|_| "bad --bench-cold")?,
            "--bench-warm" => a.bench_warm = value()?.parse().map_err(|_| "bad --bench-warm")?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "-V" | "--version" => {
                println!("ember-run {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s}\n{USAGE}")),
            s => module = Some(PathBuf::from(s)),
        }
    }
    a.module = module.ok_or(USAGE)?;
    if !(1..=10_240).contains(&a.memory_mib) {
        return Err("--memory-mib must be 1..=10240".into());
    }
    Ok(a)
}

fn events(whole: bool) -> Result<Vec<Vec<u8>>, String> {
    let stdin = std::io::stdin();
    if whole {
        let mut all = Vec::new();
        stdin
            .lock()
            .read_to_end(&mut all)
            .map_err(|e| format!("reading stdin: {e}"))?;
        return Ok(vec![all]);
    }
    let mut out = Vec::new();
    for line in stdin.lock().split(b'\n') {
        let line = line.map_err(|e| format!("reading stdin: {e}"))?;
        if !line.iter().all(u8::is_ascii_whitespace) {
            out.push(line);
        }
    }
    Ok(out)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn launch_config(a: &Args) -> LaunchConfig {
    let mut cfg = LaunchConfig::kernelless(&a.vmm, &a.agent);
    cfg.mem_mib = vm_memory_mib(a.memory_mib);
    cfg.console = a.console.clone();
    cfg
}

fn init_spec(a: &Args) -> Result<InitSpec, String> {
    let code = std::fs::read(&a.module).map_err(|e| format!("{}: {e}", a.module.display()))?;
    let name = a
        .module
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned());
    let mut trees = Vec::new();
    for (mount, zip) in &a.trees {
        let archive = std::fs::read(zip).map_err(|e| format!("{}: {e}", zip.display()))?;
        trees.push(ember_abi::protocol::Tree {
            mount: mount.clone(),
            archive,
        });
    }
    Ok(InitSpec {
        function_name: name.unwrap_or_default(),
        function_version: "$LATEST".into(),
        handler: a.handler.clone(),
        code: Code::Inline(code),
        env: a.env.clone(),
        memory_mib: a.memory_mib,
        timeout_ms: a.timeout_ms,
        random_seed: None,
        trees,
        ephemeral_mib: a.tmp_mib,
    })
}

/// With `--engine wasmtime`: `spec` with its module replaced by the artefact
/// compiled for the CPU features `env`'s guest announced.
fn compile_for(a: &Args, env: &Environment, spec: &mut InitSpec) -> Result<(), String> {
    if !a.compiled {
        return Ok(());
    }
    let Code::Inline(module) = &spec.code else {
        return Ok(());
    };
    let version = &env.ready().agent_version;
    let features = ember_host::aot::guest_features(version)
        .ok_or_else(|| format!("the agent ({version}) does not announce its CPU features: rebuild it, or use --engine wasmi"))?;
    let t = Instant::now();
    let aot = ember_host::aot::Aot::new(a.compiler.clone());
    let art = aot
        .compile(module, a.memory_mib, features)
        .map_err(|e| format!("compile: {}", error_chain(&e)))?;
    if !a.quiet {
        eprintln!(
            "ember-run: compiled {} KiB of wasm into {} KiB for CPU features {features:#x} in {}",
            module.len() / 1024,
            art.len() / 1024,
            ms(t.elapsed())
        );
    }
    spec.code = Code::Compiled(art);
    Ok(())
}

fn stat_line(label: &str, s: Option<Stats>, unit_us: bool) -> String {
    let Some(s) = s else {
        return format!("bench {label} n=0");
    };
    let f = |d: Duration| {
        if unit_us {
            format!("{:.1}", d.as_secs_f64() * 1e6)
        } else {
            format!("{:.3}", d.as_secs_f64() * 1e3)
        }
    };
    let u = if unit_us { "us" } else { "ms" };
    format!(
        "bench {label} n={} median_{u}={} p99_{u}={} min_{u}={}",
        s.n,
        f(s.median),
        f(s.p99),
        f(s.min)
    )
}

/// `--bench-cold N --bench-warm M`: N full cold starts, then M invocations
/// in one warm environment. Machine-readable lines on stdout.
fn run_bench(a: &Args) -> Result<bool, String> {
    let cfg = launch_config(a);
    let mut spec = init_spec(a)?;
    if a.compiled {
        // One unmeasured boot tells the guest's CPU features.
        let probe =
            Environment::launch(&cfg).map_err(|e| format!("launch: {}", error_chain(&e)))?;
        compile_for(a, &probe, &mut spec)?;
        probe.shutdown();
    }
    let payload = b"{\"bench\":true}";
    let mut cold = Vec::new();
    for i in 0..a.bench_cold {
        let s = bench::cold_start(&cfg, &spec, payload)
            .map_err(|e| format!("cold start {i}: {}", error_chain(&e)))?;
        cold.push(s);
    }
    let pick = |f: fn(&bench::ColdSample) -> Duration| Stats::of(cold.iter().map(f).collect());
    println!("{}", stat_line("cold_total", pick(|s| s.total), false));
    println!("{}", stat_line("cold_ready", pick(|s| s.ready), false));
    println!("{}", stat_line("cold_init", pick(|s| s.init), false));
    println!(
        "{}",
        stat_line("cold_first_invoke", pick(|s| s.first_invoke), true)
    );
    if a.bench_warm > 0 {
        let mut env =
            Environment::launch(&cfg).map_err(|e| format!("launch: {}", error_chain(&e)))?;
        env.init(&spec)
            .map_err(|e| format!("init: {}", error_chain(&e)))?;
        // Unmeasured calls first: the guest's first touches of its heap.
        bench::warm(&mut env, payload, a.timeout_ms, 20)
            .map_err(|e| format!("warm-up: {}", error_chain(&e)))?;
        let rt = bench::warm(&mut env, payload, a.timeout_ms, a.bench_warm)
            .map_err(|e| format!("warm: {}", error_chain(&e)))?;
        println!("{}", stat_line("warm_round_trip", Stats::of(rt), true));
        env.shutdown();
    }
    Ok(true)
}

fn run(a: Args) -> Result<bool, String> {
    if a.bench_cold > 0 || a.bench_warm > 0 {
        return run_bench(&a);
    }
    let events = events(a.whole)?;
    let cfg = launch_config(&a);
    let mut spec = init_spec(&a)?;
    let t0 = Instant::now();
    let mut env = Environment::launch(&cfg).map_err(|e| format!("launch: {}", error_chain(&e)))?;
    let ready = env.launch_time();
    compile_for(&a, &env, &mut spec)?;
    let init = match env.init(&spec) {
        Ok(r) => r,
        Err(AgentError::InitFailed {
            error:
                FunctionError {
                    error_type,
                    message,
                    ..
                },
            logs,
            ..
        }) => {
            for l in logs.lines {
                eprintln!("[init] {}", l.line);
            }
            return Err(format!("init failed: {error_type}: {message}"));
        }
        Err(e) => return Err(format!("init: {}", error_chain(&e))),
    };
    let init_done = t0.elapsed();
    let mut ok = true;
    let mut warm = Vec::new();
    let mut first = None;
    let stdout = std::io::stdout();
    for (i, payload) in events.into_iter().enumerate() {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let req = InvokeRequest {
            request_id: format!("ember-run-{i}"),
            payload: payload.into(),
            deadline_ms: now_ms + u64::from(a.timeout_ms),
            invoked_function_arn: format!(
                "arn:aws:lambda:local:000000000000:function:{}",
                spec.function_name
            ),
            ..Default::default()
        };
        let inv = env
            .invoke(&req)
            .map_err(|e| format!("invoke {i}: {}", error_chain(&e)))?;
        for l in &inv.logs.lines {
            eprintln!("[{}] {}", req.request_id, l.line);
        }
        let mut out = stdout.lock();
        match &inv.result {
            Ok(p) => {
                let _ = out.write_all(p);
                let _ = out.write_all(b"\n");
            }
            Err(fe) => {
                ok = false;
                let _ = writeln!(
                    out,
                    "{{\"errorType\":{:?},\"errorMessage\":{:?}}}",
                    fe.error_type, fe.message
                );
            }
        }
        let _ = out.flush();
        if first.is_none() {
            first = Some(t0.elapsed());
        } else {
            warm.push(inv.round_trip);
        }
        if !env.is_usable() {
            eprintln!("ember-run: the environment must be replaced after that error; stopping");
            break;
        }
    }
    if !a.quiet {
        eprintln!(
            "ember-run: cold: spawn→ready {} (guest boot {} µs), init {} µs, spawn→init done {}, spawn→first response {}",
            ms(ready),
            env.ready().boot_us,
            init.init_us,
            ms(init_done),
            first.map(ms).unwrap_or_else(|| "-".into()),
        );
        let phases: Vec<String> = env
            .ready()
            .timings
            .iter()
            .map(|(k, v)| format!("{k}={v}µs"))
            .collect();
        eprintln!("ember-run: guest boot phases: {}", phases.join(" "));
        if !warm.is_empty() {
            warm.sort();
            let med = warm[warm.len() / 2];
            eprintln!(
                "ember-run: warm: {} invocations, median round trip {:.1} µs",
                warm.len(),
                med.as_secs_f64() * 1e6
            );
        }
    }
    let status = env.shutdown();
    if !a.quiet {
        eprintln!("ember-run: VM exited ({status})");
    }
    Ok(ok)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("ember-run: {e}");
            ExitCode::from(1)
        }
    }
}

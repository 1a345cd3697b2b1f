//! The wasm runtime of the kernel-less guest, run natively on the host: the
//! peer of the in-guest numbers in scripts/bench-wasm.sh. Compiles the
//! module exactly as emberd does (cranelift, same configuration, this CPU's
//! features), loads it into the same `Runtime` (same WASI shim) and invokes
//! it once per line of stdin, printing each response; `--engine wasmi`
//! interprets it instead.
//!
//!     cargo run --release -p ember-guest --features std,wasm,compile \
//!         --example wasm-native -- [--engine wasmtime|wasmi] [--memory-mib N] module.wasm

use std::io::BufRead;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ember_guest::protocol::Code;
use ember_guest::wasm::{aot, compiled, Clock, FunctionConfig, InvokeContext, Outcome, Runtime};

struct StdClock(Instant);

impl Clock for StdClock {
    fn realtime_ns(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    }
    fn monotonic_ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

fn main() -> Result<(), String> {
    let (mut engine, mut mib, mut path) = ("wasmtime".to_string(), 512u32, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--engine" => engine = args.next().ok_or("--engine needs a value")?,
            "--memory-mib" => {
                mib = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("bad --memory-mib")?
            }
            _ => path = Some(a),
        }
    }
    let module = std::fs::read(path.ok_or("usage: wasm-native [--engine E] module.wasm")?)
        .map_err(|e| e.to_string())?;
    let code = if engine == "wasmi" {
        Code::Inline(module)
    } else {
        let t = Instant::now();
        let art = aot::compile::compile(&module, mib, aot::features::detected(), [0; 32])
            .map_err(|e| format!("{e:#}"))?;
        eprintln!(
            "wasm-native: compiled in {:.1} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
        Code::Compiled(art)
    };
    std::thread::spawn(|| loop {
        std::thread::sleep(std::time::Duration::from_millis(2));
        compiled::tick();
    });
    let cfg = FunctionConfig {
        function_name: "native".into(),
        function_version: "$LATEST".into(),
        handler: "handle".into(),
        memory_mib: mib,
        timeout_ms: 600_000,
        env: Vec::new(),
        random_seed: [1; 32],
    };
    let clock = Arc::new(StdClock(Instant::now()));
    let (mut rt, _) = Runtime::new(&code, cfg, clock).map_err(|e| e.message)?;
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        let deadline_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
            + 600_000;
        let out = rt.invoke(&InvokeContext {
            request_id: "native",
            payload: line.as_bytes(),
            deadline_ms,
            ..Default::default()
        });
        match out.outcome {
            Outcome::Response(p) => print!("{}", String::from_utf8_lossy(&p)),
            Outcome::Error {
                error_type,
                message,
                ..
            } => println!("{{\"error\":\"{error_type}: {message}\"}}"),
        }
    }
    Ok(())
}

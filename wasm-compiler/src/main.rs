//! `ember-wasm-compile`: compiles one wasm module into a sealed artefact
//! (`ember_guest::wasm::aot`) for the kernel-less guest's wasmtime.
//!
//!     ember-wasm-compile --memory-mib N --features MASK IN.wasm OUT
//!     ember-wasm-compile --print-features
//!
//! MASK is the guest's CPU feature mask (hex, `aot::features`); OUT is
//! written whole or not at all (a temporary file renamed into place). `-`
//! for IN or OUT means stdin or stdout (emberd pipes both: no plaintext
//! code on disk).
//! `--print-features` prints this CPU's mask. Exit 0 on success; 1 with the
//! reason on stderr when the module cannot be compiled; 2 on usage errors.

use std::path::PathBuf;
use std::process::ExitCode;

use ember_guest::wasm::aot::{compile::compile, features};
use sha2::{Digest, Sha256};

const USAGE: &str = "usage: ember-wasm-compile --memory-mib N --features MASK IN.wasm OUT
       ember-wasm-compile --print-features";

struct Args {
    memory_mib: u32,
    features: u64,
    input: PathBuf,
    output: PathBuf,
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let (mut mib, mut feat, mut files) = (None, None, Vec::new());
    while let Some(a) = it.next() {
        match a.as_str() {
            "--print-features" => return Ok(None),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "-V" | "--version" => {
                println!("ember-wasm-compile {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            "--memory-mib" => {
                let v = it.next().ok_or("--memory-mib needs a value")?;
                mib = Some(
                    v.parse::<u32>()
                        .map_err(|e| format!("--memory-mib {v}: {e}"))?,
                );
            }
            "--features" => {
                let v = it.next().ok_or("--features needs a value")?;
                let hex = v.trim_start_matches("0x");
                feat =
                    Some(u64::from_str_radix(hex, 16).map_err(|e| format!("--features {v}: {e}"))?);
            }
            _ if a.starts_with('-') && a != "-" => return Err(format!("unknown option {a}")),
            _ => files.push(PathBuf::from(a)),
        }
    }
    let [input, output]: [PathBuf; 2] = files
        .try_into()
        .map_err(|_| "expected IN and OUT".to_string())?;
    Ok(Some(Args {
        memory_mib: mib.ok_or("--memory-mib is required")?,
        features: feat.ok_or("--features is required")?,
        input,
        output,
    }))
}

fn run(a: &Args) -> Result<(), String> {
    let stdio = |p: &PathBuf| p.as_os_str() == "-";
    let module = if stdio(&a.input) {
        let mut m = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut m)
            .map_err(|e| format!("stdin: {e}"))?;
        m
    } else {
        std::fs::read(&a.input).map_err(|e| format!("{}: {e}", a.input.display()))?
    };
    let sha: [u8; 32] = Sha256::digest(&module).into();
    let sealed = compile(&module, a.memory_mib, a.features, sha).map_err(|e| format!("{e:#}"))?;
    if stdio(&a.output) {
        let mut out = std::io::stdout().lock();
        return std::io::Write::write_all(&mut out, &sealed)
            .and_then(|_| std::io::Write::flush(&mut out))
            .map_err(|e| format!("stdout: {e}"));
    }
    let tmp = a.output.with_extension("partial");
    std::fs::write(&tmp, &sealed).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &a.output).map_err(|e| format!("{}: {e}", a.output.display()))
}

fn main() -> ExitCode {
    match parse(std::env::args().skip(1)) {
        Ok(None) => {
            println!("{:#x}", features::detected());
            ExitCode::SUCCESS
        }
        Ok(Some(a)) => match run(&a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ember-wasm-compile: {e}");
                ExitCode::from(1)
            }
        },
        Err(e) => {
            eprintln!("ember-wasm-compile: {e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

//! `python3.11` without a Linux guest (issue 19): which guest runs a Python
//! function (the operator's `--python-guest` and the code's native
//! extensions decide), and what the kernel-less guest is given to run it:
//! CPython's reactor build (`scripts/build-python-wasm.sh`, compiled once per
//! host and memory size by [`crate::aot`]), its stdlib and ember's Lambda
//! bootstrap at `/var/runtime`, the function's ZIP at `/var/task`, its
//! layers at `/opt`, and the environment CPython and the bootstrap read.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ember_abi::protocol::Tree;

#[cfg(test)]
mod tests;

/// The runtime name this module serves.
pub const RUNTIME: &str = "python3.11";

/// Guest memory a python3.11 VM gets beyond the function's memory: `Init`
/// holds the compiled interpreter (~22 MB), the stdlib (~4 MB) and the code,
/// and the agent's power-of-two heap rounds each block up (lazily backed:
/// only touched pages cost host memory).
pub const GUEST_OVERHEAD_MIB: u32 = 128;

/// The bootstrap (the Lambda runtime contract in Python), sent as a second
/// tree at `/var/runtime`, so changing it never rebuilds CPython.
const BOOTSTRAP: &str = include_str!("../../../images/python-wasm/ember_bootstrap.py");
/// Lambda's runtime-hooks module for SnapStart (`snapshot_restore_py`),
/// beside the bootstrap.
const HOOKS: &str = include_str!("../../../images/python-wasm/snapshot_restore_py.py");

/// `--python-guest`: which guest runs `python3.11` functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Setting {
    /// Linux where it can run and the ZIP holds native extensions, else wasm.
    Auto,
    /// Always the kernel-less guest (ZIPs with native extensions refused).
    Wasm,
    /// Always a Linux guest.
    Linux,
}

/// The guest a function runs in (GetFunction's `EmberGuest`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guest {
    Wasm,
    Linux,
}

impl Guest {
    pub fn name(self) -> &'static str {
        match self {
            Guest::Wasm => "wasm",
            Guest::Linux => "linux",
        }
    }
}

/// Why a Python function cannot run here, or the runtime files are unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PythonError {
    #[error("The deployment package holds native extension modules ({}), which the kernel-less guest (CPython for WebAssembly) cannot load{}. Remove them, or vendor pure-Python packages only.", .files.join(", "), if *.linux_refused { " and --python-guest wasm keeps this function off Linux guests" } else { ", and this host cannot run Linux guests" })]
    NativeExtensions {
        files: Vec<String>,
        linux_refused: bool,
    },
    #[error("The runtime parameter of python3.11 needs {0}.")]
    Unavailable(String),
    /// The Linux offer's own refusal.
    #[error("{0}")]
    Linux(String),
    #[error("python3.11 for the kernel-less guest: {0}")]
    Files(String),
}

/// The `*.so` files of a ZIP (native extension modules and the libraries
/// they link), sorted; an unreadable ZIP has none (it is refused elsewhere).
pub fn native_extensions(zip: &[u8]) -> Vec<String> {
    let Ok(mut z) = zip::ZipArchive::new(Cursor::new(zip)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for i in 0..z.len() {
        let Ok(e) = z.by_index_raw(i) else { continue };
        let base = e.name().rsplit('/').next().unwrap_or_default();
        if e.is_file() && (base.ends_with(".so") || base.contains(".so.")) {
            out.push(e.name().to_string());
        }
    }
    out.sort();
    out
}

/// The kernel-less python runtime's files, read once at start.
pub struct WasmRuntime {
    /// The reactor module (python-reactor.wasm).
    pub reactor: Arc<Vec<u8>>,
    /// The compiler cache's id for the reactor: `runtime:` + its SHA-256
    /// (runtime artefacts belong to the host, never collected as dead code).
    pub code_id: String,
    /// `/var/runtime`: the stdlib ZIP, then the bootstrap's.
    trees: Vec<Tree>,
}

impl WasmRuntime {
    /// Reads `dir` (a `build-python-wasm.sh` output: python-reactor.wasm,
    /// runtime.zip).
    pub fn load(dir: &Path) -> Result<Self, PythonError> {
        let read = |n: &str| {
            std::fs::read(dir.join(n))
                .map_err(|e| PythonError::Files(format!("{}: {e}", dir.join(n).display())))
        };
        let reactor = read("python-reactor.wasm")?;
        let stdlib = read("runtime.zip")?;
        let code_id = format!("runtime:{}", crate::digest::sha256_hex(&reactor));
        Ok(WasmRuntime {
            reactor: Arc::new(reactor),
            code_id,
            trees: vec![
                Tree {
                    mount: "/var/runtime".into(),
                    archive: stdlib,
                },
                Tree {
                    mount: "/var/runtime".into(),
                    archive: bootstrap_zip().map_err(PythonError::Files)?,
                },
            ],
        })
    }

    /// Where the runtime files are: `explicit`, else the newest complete
    /// build under `${EMBER_CACHE:-~/.cache/ember}/python-wasm/`.
    pub fn find(explicit: Option<&Path>) -> Option<PathBuf> {
        if let Some(d) = explicit {
            return Some(d.to_path_buf());
        }
        let cache = std::env::var_os("EMBER_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ember")))?;
        let mut builds: Vec<(std::time::SystemTime, PathBuf)> =
            std::fs::read_dir(cache.join("python-wasm"))
                .ok()?
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.join("python-reactor.wasm").is_file() && p.join("runtime.zip").is_file()
                })
                .filter_map(|p| Some((p.join("runtime.zip").metadata().ok()?.modified().ok()?, p)))
                .collect();
        builds.sort();
        builds.pop().map(|(_, p)| p)
    }

    /// The trees of a function whose code is `code` (its ZIP), before its
    /// layers: `/var/runtime` (stdlib, bootstrap) and `/var/task`.
    pub fn trees(&self, code: &[u8]) -> Vec<Tree> {
        let mut t = self.trees.clone();
        t.push(Tree {
            mount: "/var/task".into(),
            archive: code.to_vec(),
        });
        t
    }
}

/// The bootstrap and the hooks module as a stored ZIP.
fn bootstrap_zip() -> Result<Vec<u8>, String> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    w.start_file("ember_bootstrap.py", opts)
        .and_then(|_| w.write_all(BOOTSTRAP.as_bytes()).map_err(Into::into))
        .and_then(|_| w.start_file("snapshot_restore_py.py", opts))
        .and_then(|_| w.write_all(HOOKS.as_bytes()).map_err(Into::into))
        .and_then(|_| w.finish())
        .map(Cursor::into_inner)
        .map_err(|e| format!("bootstrap zip: {e}"))
}

/// Variables a function's configuration cannot override (Lambda's reserved
/// ones, and what points CPython at its stdlib).
const RESERVED: &[&str] = &[
    "PYTHONHOME",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
];

/// The environment of a python3.11 function on the kernel-less guest: the
/// runtime's variables, then the function's own `user` ones (which replace
/// the defaults but never a reserved variable). The agent adds the
/// per-invocation `AWS_LAMBDA_*` ones.
pub fn init_env(
    function_name: &str,
    version: &str,
    user: &[(String, String)],
) -> Vec<(String, String)> {
    let mut env = runtime_env(function_name, version);
    for (k, v) in user {
        if !RESERVED.contains(&k.as_str()) {
            env.retain(|(name, _)| name != k);
            env.push((k.clone(), v.clone()));
        }
    }
    env
}

/// The variables CPython and the bootstrap need, for a function named
/// `function_name` at `version`.
fn runtime_env(function_name: &str, version: &str) -> Vec<(String, String)> {
    [
        ("PYTHONHOME", "/var/runtime".to_string()),
        (
            "PYTHONPATH",
            "/var/runtime:/var/task:/opt/python/lib/python3.11/site-packages:/opt/python".into(),
        ),
        ("PYTHONDONTWRITEBYTECODE", "1".into()),
        ("LAMBDA_TASK_ROOT", "/var/task".into()),
        ("LAMBDA_RUNTIME_DIR", "/var/runtime".into()),
        ("AWS_EXECUTION_ENV", "AWS_Lambda_python3.11".into()),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{function_name}"),
        ),
        ("AWS_LAMBDA_LOG_STREAM_NAME", format!("ember/[{version}]")),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into()),
        ("LANG", "C.UTF-8".into()),
        ("TZ", ":UTC".into()),
        ("HOME", "/tmp".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// emberd's Python policy: the setting, the kernel-less runtime (if its
/// files were found), and whether a Linux guest can run `python3.11` here.
pub struct Python {
    pub setting: Setting,
    pub wasm: Option<Arc<WasmRuntime>>,
    /// Whether a Linux guest can run python3.11 here (else the Linux
    /// offer's reason, which is the message when nothing else can).
    pub linux: Result<(), String>,
}

impl Python {
    /// The guest for a python3.11 function whose ZIP holds the native
    /// extensions `native` (see [`native_extensions`]).
    pub fn choose(&self, native: &[String]) -> Result<Guest, PythonError> {
        let wasm_ok = self.wasm.is_some() && self.setting != Setting::Linux;
        let linux_ok = self.linux.is_ok() && self.setting != Setting::Wasm;
        if !native.is_empty() {
            if linux_ok {
                return Ok(Guest::Linux);
            }
            if self.setting == Setting::Linux {
                return Err(self.missing());
            }
            return Err(PythonError::NativeExtensions {
                files: native.to_vec(),
                linux_refused: self.linux.is_ok(),
            });
        }
        match (wasm_ok, linux_ok) {
            (true, _) => Ok(Guest::Wasm),
            (false, true) => Ok(Guest::Linux),
            (false, false) => Err(self.missing()),
        }
    }

    /// What is missing for python3.11 to run at all (for the message).
    fn missing(&self) -> PythonError {
        match (&self.linux, self.setting) {
            (Err(why), Setting::Linux) => PythonError::Linux(why.clone()),
            (Err(why), _) if self.wasm.is_none() => PythonError::Linux(format!(
                "{why} (CPython for the kernel-less guest is not installed either: scripts/build-python-wasm.sh builds it, --python-wasm-dir names it)"
            )),
            _ => PythonError::Unavailable(format!(
                "the kernel-less guest (--python-guest {}), whose CPython is not installed (scripts/build-python-wasm.sh builds it, --python-wasm-dir names it)",
                if self.setting == Setting::Wasm { "wasm" } else { "auto" }
            )),
        }
    }
}

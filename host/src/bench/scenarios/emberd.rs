//! The emberd a `function` or `ramp` benchmark talks to: the one at
//! `--endpoint` (SigV4-signed with the CLI's credentials), or with
//! `--throwaway` one started here on a free loopback port with a temporary
//! data directory (as scripts/throwaway-emberd.sh does), stopped with
//! SIGTERM and removed when the benchmark ends. Also the bench functions:
//! created once, with the echo module unless `--code` names another.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::ScenarioError;
use crate::auth::sigv4::Credentials;
use crate::cli::client::{function_path, Conn, Response};

/// The no-op function: the response is the event (tests/api/wat/echo.wat).
const ECHO_WAT: &str = include_str!("../../../../tests/api/wat/echo.wat");

#[derive(Debug, Clone, clap::Args)]
pub struct EmberdArgs {
    /// Start a throw-away emberd (ember-vmm and the wasm agent found next to
    /// this `ember` and in its source tree) instead of using --endpoint.
    #[arg(long)]
    pub throwaway: bool,
    /// The throw-away emberd's wasm agent (default: guest-agent/kernelless's
    /// build output in this `ember`'s source tree).
    #[arg(long, env = "EMBER_WASM_AGENT")]
    pub wasm_agent: Option<PathBuf>,
    /// The function's code: a .wasm module (default: an echo module).
    #[arg(long)]
    pub code: Option<PathBuf>,
}

/// A reachable emberd.
pub struct Emberd {
    pub endpoint: String,
    creds: Option<Credentials>,
    child: Option<Child>,
    data: Option<PathBuf>,
}

impl Emberd {
    /// Connects to `endpoint`, or starts a throw-away emberd.
    pub async fn open(endpoint: &str, a: &EmberdArgs) -> Result<Emberd, ScenarioError> {
        let e = if a.throwaway {
            start_throwaway(a)?
        } else {
            Emberd {
                endpoint: endpoint.into(),
                creds: None,
                child: None,
                data: None,
            }
        };
        // Fail now, clearly, rather than in every run.
        e.conn().await?;
        Ok(e)
    }

    /// A new connection, signed with this emberd's key.
    pub async fn conn(&self) -> Result<Conn, ScenarioError> {
        let c = Conn::connect(&self.endpoint).await.map_err(|e| {
            ScenarioError::Unreachable(self.endpoint.clone(), crate::util::error_chain(&e))
        })?;
        Ok(match &self.creds {
            Some(k) => c.with_credentials(Some(k.clone())),
            None => c,
        })
    }

    /// Creates (or replaces) function `name` with `memory` MiB.
    pub async fn create_function(
        &self,
        name: &str,
        memory: u32,
        code: &[u8],
    ) -> Result<(), ScenarioError> {
        let mut c = self.conn().await?;
        let _ = send(&mut c, "DELETE", &function_path(name, ""), Vec::new()).await;
        let body = json!({
            "FunctionName": name, "Runtime": "wasm", "Handler": "function.handler",
            "Role": "arn:aws:iam::000000000000:role/ember", "MemorySize": memory, "Timeout": 10,
            // A bare module is accepted where a ZIP is (as `ember fn create`).
            "Code": {"ZipFile": base64_encode(code)},
        });
        let r = send(
            &mut c,
            "POST",
            "/2015-03-31/functions",
            body.to_string().into_bytes(),
        )
        .await?;
        expect_ok(&r, "CreateFunction")
    }

    /// Stops a throw-away emberd.
    pub fn close(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) of our own child, not yet reaped.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let _ = child.wait();
        }
        if let Some(d) = self.data.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

impl Drop for Emberd {
    fn drop(&mut self) {
        self.close();
    }
}

/// The function code: `--code`, else the echo module.
pub fn function_code(a: &EmberdArgs) -> Result<Vec<u8>, ScenarioError> {
    match &a.code {
        Some(p) => std::fs::read(p).map_err(|e| ScenarioError::Io(p.clone(), e)),
        None => {
            wat::parse_str(ECHO_WAT).map_err(|e| ScenarioError::Api(format!("echo module: {e}")))
        }
    }
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Sends one request.
pub async fn send(
    c: &mut Conn,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<Response, ScenarioError> {
    c.send(method, path, &[], body)
        .await
        .map_err(|e| ScenarioError::Api(crate::util::error_chain(&e)))
}

/// An API call's non-2xx status as an error.
pub fn expect_ok(r: &Response, what: &str) -> Result<(), ScenarioError> {
    if r.status < 300 {
        return Ok(());
    }
    Err(ScenarioError::Api(format!(
        "{what}: HTTP {} {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    )))
}

/// Where this `ember`'s source tree keeps `rel` (target/release/ember →
/// the repository), else `rel` under the working directory.
pub fn in_tree(rel: &str) -> PathBuf {
    let from_exe = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.parent()?.join(rel)));
    from_exe
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(rel))
}

fn start_throwaway(a: &EmberdArgs) -> Result<Emberd, ScenarioError> {
    let exe = std::env::current_exe().map_err(|e| ScenarioError::Io("/proc/self/exe".into(), e))?;
    let emberd = exe.with_file_name("emberd");
    let vmm = exe.with_file_name("ember-vmm");
    let agent = a.wasm_agent.clone().unwrap_or_else(|| {
        in_tree("guest-agent/kernelless/target/x86_64-unknown-linux-gnu/release/ember-wasm-agent")
    });
    for (what, p) in [
        ("emberd", &emberd),
        ("ember-vmm", &vmm),
        ("the wasm agent", &agent),
    ] {
        if !p.exists() {
            return Err(ScenarioError::Missing(format!(
                "--throwaway needs {what} at {}",
                p.display()
            )));
        }
    }
    let data = std::env::temp_dir().join(format!("ember-bench-emberd-{}", std::process::id()));
    std::fs::create_dir_all(&data).map_err(|e| ScenarioError::Io(data.clone(), e))?;
    let log = std::fs::File::create(data.join("log"))
        .map_err(|e| ScenarioError::Io(data.join("log"), e))?;
    let mut child = Command::new(&emberd)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--vmm")
        .arg(&vmm)
        .arg("--wasm-agent")
        .arg(&agent)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| ScenarioError::Io(emberd.clone(), e))?;
    let endpoint = listening_line(&mut child);
    let mut e = Emberd {
        endpoint: endpoint.clone().unwrap_or_default(),
        creds: None,
        child: Some(child),
        data: Some(data.clone()),
    };
    if endpoint.is_none() {
        let tail = std::fs::read_to_string(data.join("log")).unwrap_or_default();
        e.close();
        return Err(ScenarioError::Unreachable(
            "a throw-away emberd".into(),
            format!("it never said it was listening: {}", tail.trim()),
        ));
    }
    e.creds = crate::cli::creds::signing_credentials(
        None,
        None,
        &data.join(crate::auth::creds::FILE_NAME),
    );
    Ok(e)
}

/// Reads emberd's stdout until its `listening on http://...` line (10 s).
fn listening_line(child: &mut Child) -> Option<String> {
    let out = child.stdout.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(i) = line.find("http://") {
                let url: String = line[i..]
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .collect();
                let _ = tx.send(url);
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .ok()
}

//! The `ember` command line: `serve`, `fn create|update|list|get|delete|publish`,
//! `invoke`, `env list`, `queue list|read|delete`, `bench` (crate::bench), talking to
//! emberd's HTTP API. Human-readable output by default, `--json` for scripts.
//! The CLI is a client: it uses the daemon only for `serve` and its defaults,
//! and nothing in the daemon uses it.

pub mod audit;
pub mod client;
pub mod creds;
pub mod logs;
pub mod queue;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use base64::Engine;
use clap::{CommandFactory, Parser, Subcommand};
use serde_json::{json, Value};

use crate::daemon::ServeArgs;
use client::{enc, function_path, ClientError, Conn, Response};

#[derive(Parser)]
#[command(
    name = "ember",
    version,
    about = "ember: run functions in microVMs, Lambda-style",
    after_help = "Exit codes: 0 success; 1 the request failed (emberd unreachable, an API error, \
a broken audit chain); 2 usage error (bad arguments); 3 `ember invoke`: the function ran and \
returned an error (its error document is printed as the payload)."
)]
pub struct Cli {
    /// emberd's address.
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:9000",
        env = "EMBER_ENDPOINT"
    )]
    endpoint: String,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Access key id to sign requests with (else the credentials file's).
    #[arg(long, global = true, env = "AWS_ACCESS_KEY_ID")]
    access_key: Option<String>,
    /// Secret access key to sign requests with.
    #[arg(
        long,
        global = true,
        env = "AWS_SECRET_ACCESS_KEY",
        hide_env_values = true
    )]
    secret_key: Option<String>,
    /// emberd's credentials file (default: credentials.json in
    /// $EMBER_DATA_DIR or the default data directory).
    #[arg(long, global = true, env = "EMBER_CREDENTIALS")]
    credentials: Option<PathBuf>,
    /// CA bundle (PEM) to check an https:// endpoint's certificate against
    /// (default: the system's).
    #[arg(long, global = true, env = "EMBER_CA_CERT")]
    ca_cert: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run emberd in the foreground.
    Serve(Box<ServeArgs>),
    /// Manage functions.
    #[command(subcommand)]
    Fn(FnCmd),
    /// Invoke a function synchronously and print its response.
    Invoke {
        name: String,
        /// JSON payload, or @FILE to read it from a file.
        #[arg(long, default_value = "{}")]
        payload: String,
        #[arg(long)]
        qualifier: Option<String>,
        /// Print the log tail (LogType Tail) to stderr.
        #[arg(long)]
        log: bool,
    },
    /// Execution environments.
    #[command(subcommand)]
    Env(EnvCmd),
    /// Access keys (edits emberd's credentials file; a running emberd picks
    /// changes up at once).
    #[command(subcommand)]
    Creds(creds::CredsCmd),
    /// Print a function's logs (START/END/REPORT-framed invocations).
    Logs(logs::LogsArgs),
    /// The audit trail (reads the data directory; needs its key).
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// emberd's local destination queues (async invocation records).
    #[command(subcommand)]
    Queue(queue::QueueCmd),
    /// The live hosts of this emberd's fleet (`emberd --cluster`).
    Fleet,
    /// Cold-start benchmarks: VMMs side by side, functions through emberd,
    /// ramps; raw records, summary, plots and report.html in --out DIR.
    #[command(subcommand)]
    Bench(crate::bench::BenchCmd),
    /// Print a shell completion script for ember, generated from this
    /// command line's own definition (bash: `source <(ember completions
    /// bash)`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum FnCmd {
    /// Create a function from a .wasm module or a ZIP holding one.
    Create {
        name: String,
        #[arg(long)]
        code: PathBuf,
        #[arg(long, default_value = "wasm")]
        runtime: String,
        #[arg(long, default_value = "function.handler")]
        handler: String,
        #[arg(long, default_value_t = 128)]
        memory: u32,
        #[arg(long, default_value_t = 3)]
        timeout: u32,
        /// Environment variable KEY=VALUE (repeatable).
        #[arg(long = "env")]
        env: Vec<String>,
        #[arg(long)]
        publish: bool,
    },
    /// Replace a function's code.
    Update {
        name: String,
        #[arg(long)]
        code: PathBuf,
        #[arg(long)]
        publish: bool,
    },
    List,
    Get {
        name: String,
        #[arg(long)]
        qualifier: Option<String>,
    },
    Delete {
        name: String,
        #[arg(long)]
        qualifier: Option<String>,
    },
    Publish {
        name: String,
        #[arg(long)]
        description: Option<String>,
    },
}

#[derive(Subcommand)]
enum EnvCmd {
    List,
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("reading {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("{0}")]
    Usage(String),
    #[error("{kind}: {message}")]
    Api { kind: String, message: String },
}

/// `ember invoke`'s exit code when the function ran and returned an error
/// (distinct from 1, a failed request, and 2, clap's usage error).
pub const EXIT_FUNCTION_ERROR: u8 = 3;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let cli = match cli.cmd {
        Cmd::Completions { shell } => {
            // Into memory first: clap_complete panics on a failed write
            // (a closed pipe), a Vec never fails.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "ember", &mut script);
            return match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            };
        }
        Cmd::Serve(args) => return crate::daemon::run(*args),
        Cmd::Audit(cmd) => return audit::run(cmd, cli.json),
        _ => cli,
    };
    let file = creds::credentials_path(cli.credentials.as_deref());
    if let Cmd::Creds(cmd) = cli.cmd {
        return match creds::run(cmd, &file, cli.json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ember: {}", crate::util::error_chain(&e));
                ExitCode::FAILURE
            }
        };
    }
    client::set_ca_bundle(cli.ca_cert.clone());
    let creds = creds::signing_credentials(cli.access_key.clone(), cli.secret_key.clone(), &file);
    let needs_key = !matches!(&cli.cmd, Cmd::Bench(b) if !b.needs_emberd());
    if creds.is_none() && needs_key {
        eprintln!(
            "ember: no credentials (--access-key/--secret-key, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or a readable {}); requests go unsigned and emberd will refuse them",
            file.display()
        );
    }
    client::set_default_credentials(creds);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ember: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ember: {}", crate::util::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// Sends one request; API errors become [`CliError::Api`].
async fn call(
    endpoint: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> Result<Response, CliError> {
    let mut c = Conn::connect(endpoint).await?;
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let r = c.send(method, path, headers, body).await?;
    if r.status >= 400 {
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        let kind = r.header("x-amzn-errortype").unwrap_or("Error").to_string();
        let message = v["message"].as_str().unwrap_or("(no message)").to_string();
        return Err(CliError::Api { kind, message });
    }
    Ok(r)
}

fn json_of(r: &Response) -> Value {
    serde_json::from_slice(&r.body).unwrap_or(Value::Null)
}

fn zip_b64(path: &PathBuf) -> Result<String, CliError> {
    let bytes = std::fs::read(path).map_err(|e| CliError::Read(path.clone(), e))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn qualifier_query(q: &Option<String>) -> String {
    q.as_ref()
        .map(|q| format!("?Qualifier={}", enc(q)))
        .unwrap_or_default()
}

fn print_config(c: &Value) {
    for k in [
        "FunctionName",
        "Version",
        "Runtime",
        "Handler",
        "MemorySize",
        "Timeout",
        "CodeSize",
        "CodeSha256",
        "LastModified",
        "State",
    ] {
        println!(
            "{k:<14} {}",
            c[k].as_str()
                .map(str::to_string)
                .unwrap_or_else(|| c[k].to_string())
        );
    }
}

async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let ep = cli.endpoint.as_str();
    match cli.cmd {
        Cmd::Serve(_) | Cmd::Creds(_) | Cmd::Audit(_) | Cmd::Completions { .. } => {
            unreachable!("handled in main")
        }
        Cmd::Bench(cmd) => {
            return crate::bench::run(ep, cmd)
                .await
                .map_err(|e| CliError::Usage(crate::util::error_chain(&e)))
        }
        Cmd::Fn(FnCmd::Create {
            name,
            code,
            runtime,
            handler,
            memory,
            timeout,
            env,
            publish,
        }) => {
            let mut vars = serde_json::Map::new();
            for kv in env {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| CliError::Usage(format!("--env {kv:?} must be KEY=VALUE")))?;
                vars.insert(k.into(), v.into());
            }
            let body = json!({
                "FunctionName": name, "Runtime": runtime, "Handler": handler, "Role": "arn:aws:iam::000000000000:role/ember",
                "MemorySize": memory, "Timeout": timeout, "Publish": publish,
                "Code": {"ZipFile": zip_b64(&code)?}, "Environment": {"Variables": vars},
            });
            let r = call(ep, "POST", "/2015-03-31/functions", &[], body).await?;
            output(cli.json, &json_of(&r), print_config);
        }
        Cmd::Fn(FnCmd::Update {
            name,
            code,
            publish,
        }) => {
            let body = json!({"ZipFile": zip_b64(&code)?, "Publish": publish});
            let r = call(ep, "PUT", &function_path(&name, "/code"), &[], body).await?;
            output(cli.json, &json_of(&r), print_config);
        }
        Cmd::Fn(FnCmd::List) => {
            let mut all = Vec::new();
            let mut marker: Option<String> = None;
            loop {
                let path = match &marker {
                    Some(m) => format!("/2015-03-31/functions/?Marker={}", enc(m)),
                    None => "/2015-03-31/functions/".into(),
                };
                let v = json_of(&call(ep, "GET", &path, &[], Value::Null).await?);
                all.extend(v["Functions"].as_array().cloned().unwrap_or_default());
                match v["NextMarker"].as_str() {
                    Some(m) => marker = Some(m.into()),
                    None => break,
                }
            }
            output(cli.json, &json!({"Functions": all}), |v| {
                println!(
                    "{:<32} {:<8} {:>6} {:>7}  LAST MODIFIED",
                    "NAME", "RUNTIME", "MEMORY", "TIMEOUT"
                );
                for f in v["Functions"].as_array().into_iter().flatten() {
                    println!(
                        "{:<32} {:<8} {:>6} {:>7}  {}",
                        f["FunctionName"].as_str().unwrap_or(""),
                        f["Runtime"].as_str().unwrap_or(""),
                        f["MemorySize"].as_u64().unwrap_or(0),
                        f["Timeout"].as_u64().unwrap_or(0),
                        f["LastModified"].as_str().unwrap_or("")
                    );
                }
            });
        }
        Cmd::Fn(FnCmd::Get { name, qualifier }) => {
            let r = call(
                ep,
                "GET",
                &function_path(&name, &qualifier_query(&qualifier)),
                &[],
                Value::Null,
            )
            .await?;
            output(cli.json, &json_of(&r), |v| {
                print_config(&v["Configuration"])
            });
        }
        Cmd::Fn(FnCmd::Delete { name, qualifier }) => {
            call(
                ep,
                "DELETE",
                &function_path(&name, &qualifier_query(&qualifier)),
                &[],
                Value::Null,
            )
            .await?;
            output(cli.json, &json!({"Deleted": name}), |_| {
                println!("deleted {name}")
            });
        }
        Cmd::Fn(FnCmd::Publish { name, description }) => {
            let body = json!({"Description": description});
            let r = call(ep, "POST", &function_path(&name, "/versions"), &[], body).await?;
            output(cli.json, &json_of(&r), |v| {
                println!(
                    "published {name} version {}",
                    v["Version"].as_str().unwrap_or("?")
                )
            });
        }
        Cmd::Invoke {
            name,
            payload,
            qualifier,
            log,
        } => return invoke(ep, cli.json, &name, &payload, &qualifier, log).await,
        Cmd::Logs(args) => {
            return logs::run(ep, cli.json, args)
                .await
                .map_err(|e| CliError::Usage(crate::util::error_chain(&e)))
        }
        Cmd::Queue(q) => queue::run(ep, cli.json, q)
            .await
            .map_err(|e| CliError::Usage(crate::util::error_chain(&e)))?,
        Cmd::Fleet => {
            let r = call(ep, "GET", "/ember/fleet", &[], Value::Null).await?;
            output(cli.json, &json_of(&r), |v| {
                println!("{:<20} {:<32} {:>10}", "NODE", "URL", "LAST BEAT");
                for h in v["Hosts"].as_array().into_iter().flatten() {
                    println!(
                        "{:<20} {:<32} {:>8}ms",
                        h["NodeId"].as_str().unwrap_or(""),
                        h["Url"].as_str().unwrap_or(""),
                        h["LastBeatAgeMs"].as_u64().unwrap_or(0)
                    );
                }
            });
        }
        Cmd::Env(EnvCmd::List) => {
            let r = call(ep, "GET", "/ember/environments", &[], Value::Null).await?;
            output(cli.json, &json_of(&r), |v| {
                println!(
                    "{:>5} {:<24} {:<8} {:<9} {:>9} {:>11} {:>8}",
                    "ID", "FUNCTION", "VERSION", "STATE", "AGE", "INVOCATIONS", "PID"
                );
                for e in v["Environments"].as_array().into_iter().flatten() {
                    let state = format!(
                        "{}{}",
                        e["State"].as_str().unwrap_or(""),
                        if e["Provisioned"] == true { "*" } else { "" }
                    );
                    println!(
                        "{:>5} {:<24} {:<8} {:<9} {:>8.1}s {:>11} {:>8}",
                        e["Id"].as_u64().unwrap_or(0),
                        e["Function"].as_str().unwrap_or(""),
                        e["Version"].as_str().unwrap_or(""),
                        state,
                        e["AgeSeconds"].as_f64().unwrap_or(0.0),
                        e["Invocations"].as_u64().unwrap_or(0),
                        e["Pid"]
                            .as_u64()
                            .map(|p| p.to_string())
                            .unwrap_or_else(|| "-".into())
                    );
                }
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn output(json: bool, v: &Value, human: impl FnOnce(&Value)) {
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        human(v);
    }
}

async fn invoke(
    ep: &str,
    json: bool,
    name: &str,
    payload: &str,
    qualifier: &Option<String>,
    log: bool,
) -> Result<ExitCode, CliError> {
    let body = match payload.strip_prefix('@') {
        Some(file) => std::fs::read(file).map_err(|e| CliError::Read(file.into(), e))?,
        None => payload.as_bytes().to_vec(),
    };
    let mut c = Conn::connect(ep).await?;
    let path = function_path(name, &format!("/invocations{}", qualifier_query(qualifier)));
    let headers: &[(&str, &str)] = if log {
        &[("x-amz-log-type", "Tail")]
    } else {
        &[]
    };
    let t = Instant::now();
    let r = c.send("POST", &path, headers, body).await?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if r.status >= 400 {
        let v = json_of(&r);
        return Err(CliError::Api {
            kind: r.header("x-amzn-errortype").unwrap_or("Error").into(),
            message: v["message"].as_str().unwrap_or("").into(),
        });
    }
    let func_err = r.header("x-amz-function-error").map(str::to_string);
    let payload = String::from_utf8_lossy(&r.body).to_string();
    if json {
        let v = json!({
            "StatusCode": r.status, "ExecutedVersion": r.header("x-amz-executed-version"), "FunctionError": func_err,
            "Payload": serde_json::from_str::<Value>(&payload).unwrap_or(Value::String(payload.clone())),
            "Environment": r.header("x-amz-ember-environment"), "ColdStart": r.header("x-amz-ember-cold-start") == Some("true"),
            "LatencyMs": ms,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        println!("{payload}");
        let cold = if r.header("x-amz-ember-cold-start") == Some("true") {
            "cold"
        } else {
            "warm"
        };
        eprintln!(
            "version {} · environment {} ({cold}) · {ms:.2} ms",
            r.header("x-amz-executed-version").unwrap_or("?"),
            r.header("x-amz-ember-environment").unwrap_or("?")
        );
    }
    if let Some(tail) = r.header("x-amz-log-result") {
        if let Ok(t) = base64::engine::general_purpose::STANDARD.decode(tail) {
            eprint!("{}", String::from_utf8_lossy(&t));
        }
    }
    Ok(if func_err.is_some() {
        ExitCode::from(EXIT_FUNCTION_ERROR)
    } else {
        ExitCode::SUCCESS
    })
}

//! The wasm agent's side of the host↔agent protocol as a pure state machine:
//! one message in, the reply messages out. The kernel-less binary feeds it
//! frames from vsock; host tests feed it directly. A hostile or confused host
//! (messages out of order, agent-only messages, a second Init) gets error
//! replies, never a crash.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use super::runtime::{FunctionConfig, InvokeContext, Outcome, Runtime};
use super::Clock;
use ember_abi::protocol::{AgentKind, LogStream, Message, VERSION};

/// What the driver should do after a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    Shutdown,
}

/// The agent: waiting for `Init`, then serving invocations.
pub struct WasmAgent {
    clock: Arc<dyn Clock>,
    runtime: Option<Runtime>,
}

impl WasmAgent {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        WasmAgent {
            clock,
            runtime: None,
        }
    }

    /// Whether Init succeeded (a restored agent says so in its `Ready`).
    pub fn is_initialized(&self) -> bool {
        self.runtime.is_some()
    }

    /// After a snapshot restore, before the first invocation: re-keys the
    /// function's random streams with the clone's fresh `seed` and runs its
    /// `ember_after_restore` hook. `Err` carries the hook's failure; the
    /// host then discards the environment. Nothing to do before Init.
    pub fn after_restore(&mut self, seed: &[u8; 32]) -> Result<Vec<(LogStream, String)>, String> {
        match self.runtime.as_mut() {
            Some(rt) => rt
                .after_restore(seed)
                .map_err(|f| format!("{}: {}", f.error_type, f.message)),
            None => Ok(Vec::new()),
        }
    }

    /// The `Ready` message announcing this agent.
    pub fn ready(boot_us: u64, timings: Vec<(String, u64)>) -> Message {
        Message::Ready {
            protocol_version: VERSION,
            agent: AgentKind::Wasm,
            // The CPU feature mask compiled code may use here: the host
            // picks (or compiles) the artefact for exactly this set.
            agent_version: format!(
                "ember-wasm-agent {} cpu={:#x}",
                env!("CARGO_PKG_VERSION"),
                super::aot::features::detected()
            ),
            boot_us,
            timings,
        }
    }

    /// Handles one message from the host, appending the replies to `out`.
    pub fn handle(&mut self, msg: Message, out: &mut Vec<Message>) -> Control {
        match msg {
            Message::Init {
                function_name,
                function_version,
                handler,
                code,
                env,
                memory_mib,
                timeout_ms,
                random_seed,
                trees,
                ephemeral_mib,
            } => {
                let start = self.clock.monotonic_ns();
                let elapsed = |c: &Arc<dyn Clock>| c.monotonic_ns().saturating_sub(start) / 1000;
                if self.runtime.is_some() {
                    out.push(Message::InitError {
                        error_type: "Runtime.AlreadyInitialized".into(),
                        message: "Init received twice".into(),
                        init_us: 0,
                        document: Vec::new(),
                    });
                    return Control::Continue;
                }
                let cfg = FunctionConfig {
                    function_name,
                    function_version,
                    handler,
                    memory_mib,
                    timeout_ms,
                    env,
                    random_seed,
                    trees: trees.into_iter().map(|t| (t.mount, t.archive)).collect(),
                    ephemeral_mib,
                };
                match Runtime::new(&code, cfg, self.clock.clone()) {
                    Ok((rt, logs)) => {
                        push_logs(out, "", logs);
                        self.runtime = Some(rt);
                        out.push(Message::InitDone {
                            init_us: elapsed(&self.clock),
                        });
                    }
                    Err(f) => {
                        push_logs(out, "", f.logs);
                        out.push(Message::InitError {
                            error_type: f.error_type.into(),
                            message: f.message,
                            init_us: elapsed(&self.clock),
                            document: f.document,
                        });
                    }
                }
            }
            Message::Invoke {
                request_id,
                payload,
                deadline_ms,
                invoked_function_arn,
                trace_id,
                client_context,
                cognito_identity,
            } => {
                let Some(rt) = self.runtime.as_mut() else {
                    out.push(Message::Error {
                        request_id,
                        error_type: "Runtime.NotInitialized".into(),
                        message: "Invoke before a successful Init".into(),
                        fatal: false,
                        duration_us: 0,
                        max_memory_kib: 0,
                        document: Vec::new(),
                    });
                    return Control::Continue;
                };
                let req = InvokeContext {
                    request_id: &request_id,
                    payload: &payload,
                    deadline_ms,
                    invoked_function_arn: &invoked_function_arn,
                    trace_id: &trace_id,
                    client_context: &client_context,
                    cognito_identity: &cognito_identity,
                };
                let r = rt.invoke(&req);
                push_logs(out, &request_id, r.logs);
                out.push(match r.outcome {
                    Outcome::Response(payload) => Message::Result {
                        request_id,
                        payload,
                        duration_us: r.duration_us,
                        max_memory_kib: r.max_memory_kib,
                    },
                    Outcome::Error {
                        error_type,
                        message,
                        fatal,
                        document,
                    } => Message::Error {
                        request_id,
                        error_type: error_type.into(),
                        message,
                        fatal,
                        duration_us: r.duration_us,
                        max_memory_kib: r.max_memory_kib,
                        document,
                    },
                });
            }
            Message::Shutdown => return Control::Shutdown,
            other => out.push(Message::Log {
                request_id: String::new(),
                stream: LogStream::Agent,
                line: format!(
                    "ignored unexpected message kind {} from the host",
                    other.kind()
                ),
            }),
        }
        Control::Continue
    }
}

fn push_logs(out: &mut Vec<Message>, request_id: &str, logs: Vec<(LogStream, String)>) {
    for (stream, line) in logs {
        out.push(Message::Log {
            request_id: request_id.into(),
            stream,
            line,
        });
    }
}

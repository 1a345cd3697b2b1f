//! The protocol's messages and the body layout of each kind. The field order
//! written here IS the wire format; DESIGN.md lists the same tables.

use alloc::string::String;
use alloc::vec::Vec;

use super::codec::{Reader, Writer};
use super::{ProtocolError, MAX_PAYLOAD};

/// Which agent sent `Ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentKind {
    /// The kernel-less WebAssembly agent (`ember-wasm-agent`).
    Wasm = 1,
    /// The Linux guest agent (`ember-agent`, Lambda Runtime API inside).
    Linux = 2,
}

/// Where the function code comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Code {
    /// The code itself (a wasm module, or a zip for the Linux agent).
    Inline(Vec<u8>),
    /// A path inside the guest where the code already is (e.g. a mounted
    /// block device at `/var/task` for the Linux agent).
    Path(String),
    /// A module compiled ahead of time by the host (`emberd`/`ember-run`
    /// only, never user bytes) for the kernel-less agent's wasmtime: a sealed
    /// artefact (`ember_abi::artefact`), at most [`super::MAX_INIT_CODE`] bytes.
    Compiled(Vec<u8>),
}

/// A read-only file tree for the kernel-less agent's WASI file system: a ZIP
/// archive mounted at `mount` (`/var/runtime`, `/var/task`, `/opt`; several
/// trees at one mount merge in order, a later file replacing an earlier
/// one, as Lambda extracts layers). The Linux agent reads its trees from
/// drives and gets none here. DESIGN.md, "File system for wasm functions".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    pub mount: String,
    pub archive: Vec<u8>,
}

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout = 0,
    Stderr = 1,
    /// Lines the agent itself writes (e.g. `INIT_START`, warnings).
    Agent = 2,
}

/// One protocol message. Direction: agent → host for `Ready`, `InitDone`,
/// `InitError`, `Result`, `Error`, `Log`, `Fatal`; host → agent for `Init`,
/// `Invoke`, `Shutdown`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// First message on a new connection: the agent is up.
    Ready {
        protocol_version: u8,
        agent: AgentKind,
        /// Free-form agent build string, e.g. "ember-wasm-agent 0.1.0".
        agent_version: String,
        /// Microseconds from guest entry (or PID 1 start) to this message.
        boot_us: u64,
        /// Named phases of the boot, in microseconds.
        timings: Vec<(String, u64)>,
    },
    /// Load the function. Sent once, after `Ready`.
    Init {
        function_name: String,
        function_version: String,
        handler: String,
        code: Code,
        /// User environment variables (the agent adds the Lambda-defined ones).
        env: Vec<(String, String)>,
        memory_mib: u32,
        timeout_ms: u32,
        /// Seed for the function's random source; fresh for each environment.
        random_seed: [u8; 32],
        /// Read-only trees mounted for a wasm function, in merge order.
        trees: Vec<Tree>,
        /// The writable `/tmp`'s size cap (`EphemeralStorage`), in MiB;
        /// 0 = no `/tmp`.
        ephemeral_mib: u32,
    },
    /// Init succeeded.
    InitDone { init_us: u64 },
    /// Init failed; the environment cannot serve invocations.
    InitError {
        error_type: String,
        message: String,
        init_us: u64,
        /// The runtime's own error document (JSON, as it posted it to the
        /// Runtime API), passed to the caller unchanged; empty when the
        /// agent made the error itself.
        document: Vec<u8>,
    },
    /// Run the function once. At most one is outstanding per connection.
    Invoke {
        request_id: String,
        payload: Vec<u8>,
        /// Deadline in milliseconds since the Unix epoch.
        deadline_ms: u64,
        invoked_function_arn: String,
        trace_id: String,
        /// Client context JSON (empty when absent).
        client_context: String,
        /// Cognito identity JSON (empty when absent).
        cognito_identity: String,
    },
    /// The invocation's response.
    Result {
        request_id: String,
        payload: Vec<u8>,
        duration_us: u64,
        max_memory_kib: u64,
    },
    /// The invocation failed (function error, trap, timeout...).
    Error {
        request_id: String,
        /// e.g. "Runtime.Trap", "Runtime.ExitError", "Sandbox.Timedout".
        error_type: String,
        message: String,
        /// The environment must be discarded after this (e.g. a timeout).
        fatal: bool,
        duration_us: u64,
        max_memory_kib: u64,
        /// The runtime's own error document (JSON, as it posted it to the
        /// Runtime API), passed to the caller unchanged; empty when the
        /// agent made the error itself (a trap, a timeout, a crash).
        document: Vec<u8>,
    },
    /// One line of output, tagged with the invocation it belongs to
    /// (empty request id during init).
    Log {
        request_id: String,
        stream: LogStream,
        line: String,
    },
    /// Stop serving and exit.
    Shutdown,
    /// The agent hit an unrecoverable error and is about to exit.
    Fatal { message: String },
}

/// Which side of the conversation sends a message kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    Host,
    Agent,
}

/// Who sends message kind `k` (`None` for kinds this version does not know).
pub fn sender(k: u8) -> Option<Sender> {
    match k {
        kind::INIT | kind::INVOKE | kind::SHUTDOWN => Some(Sender::Host),
        kind::READY
        | kind::INIT_DONE
        | kind::INIT_ERROR
        | kind::RESULT
        | kind::ERROR
        | kind::LOG
        | kind::FATAL => Some(Sender::Agent),
        _ => None,
    }
}

/// Message kind bytes (frame header byte 3).
pub(crate) mod kind {
    pub const READY: u8 = 1;
    pub const INIT: u8 = 2;
    pub const INIT_DONE: u8 = 3;
    pub const INIT_ERROR: u8 = 4;
    pub const INVOKE: u8 = 5;
    pub const RESULT: u8 = 6;
    pub const ERROR: u8 = 7;
    pub const LOG: u8 = 8;
    pub const SHUTDOWN: u8 = 9;
    pub const FATAL: u8 = 10;
}

/// The fields of an `Invoke`, borrowed: a sender encodes its own request
/// without first building a [`Message`] (the payload is copied once, into
/// the frame). One field order for both: [`Message::Invoke`] encodes
/// through this.
#[derive(Debug, Clone, Copy, Default)]
pub struct InvokeRef<'a> {
    pub request_id: &'a str,
    pub payload: &'a [u8],
    /// Deadline in milliseconds since the Unix epoch.
    pub deadline_ms: u64,
    pub invoked_function_arn: &'a str,
    pub trace_id: &'a str,
    /// Client context JSON (empty when absent).
    pub client_context: &'a str,
    /// Cognito identity JSON (empty when absent).
    pub cognito_identity: &'a str,
}

impl InvokeRef<'_> {
    /// The encoded body's length, so a frame is allocated once.
    pub(crate) fn body_len(&self) -> usize {
        let strings = [
            self.request_id,
            self.invoked_function_arn,
            self.trace_id,
            self.client_context,
            self.cognito_identity,
        ];
        strings.iter().map(|s| 4 + s.len()).sum::<usize>() + 4 + self.payload.len() + 8
    }

    pub(crate) fn write_body(&self, w: &mut Writer<'_>) -> Result<(), ProtocolError> {
        check_payload(self.payload)?;
        w.string(self.request_id);
        w.bytes(self.payload);
        w.u64(self.deadline_ms);
        w.string(self.invoked_function_arn);
        w.string(self.trace_id);
        w.string(self.client_context);
        w.string(self.cognito_identity);
        Ok(())
    }
}

fn check_payload(p: &[u8]) -> Result<(), ProtocolError> {
    if p.len() > MAX_PAYLOAD {
        return Err(ProtocolError::PayloadTooLarge { len: p.len() });
    }
    Ok(())
}

impl Message {
    /// The kind byte of this message.
    pub fn kind(&self) -> u8 {
        match self {
            Message::Ready { .. } => kind::READY,
            Message::Init { .. } => kind::INIT,
            Message::InitDone { .. } => kind::INIT_DONE,
            Message::InitError { .. } => kind::INIT_ERROR,
            Message::Invoke { .. } => kind::INVOKE,
            Message::Result { .. } => kind::RESULT,
            Message::Error { .. } => kind::ERROR,
            Message::Log { .. } => kind::LOG,
            Message::Shutdown => kind::SHUTDOWN,
            Message::Fatal { .. } => kind::FATAL,
        }
    }

    /// Appends this message's body (no header).
    pub(crate) fn write_body(&self, w: &mut Writer<'_>) -> Result<(), ProtocolError> {
        match self {
            Message::Ready {
                protocol_version,
                agent,
                agent_version,
                boot_us,
                timings,
            } => {
                w.u8(*protocol_version);
                w.u8(*agent as u8);
                w.string(agent_version);
                w.u64(*boot_us);
                w.timings(timings);
            }
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
                w.string(function_name);
                w.string(function_version);
                w.string(handler);
                match code {
                    Code::Inline(bytes) => {
                        w.u8(0);
                        w.bytes(bytes);
                    }
                    Code::Path(path) => {
                        w.u8(1);
                        w.string(path);
                    }
                    Code::Compiled(bytes) => {
                        w.u8(2);
                        w.bytes(bytes);
                    }
                }
                w.pairs(env);
                w.u32(*memory_mib);
                w.u32(*timeout_ms);
                w.raw(random_seed);
                w.trees(trees);
                w.u32(*ephemeral_mib);
            }
            Message::InitDone { init_us } => w.u64(*init_us),
            Message::InitError {
                error_type,
                message,
                init_us,
                document,
            } => {
                w.string(error_type);
                w.string(message);
                w.u64(*init_us);
                w.bytes(document);
            }
            Message::Invoke {
                request_id,
                payload,
                deadline_ms,
                invoked_function_arn,
                trace_id,
                client_context,
                cognito_identity,
            } => InvokeRef {
                request_id,
                payload,
                deadline_ms: *deadline_ms,
                invoked_function_arn,
                trace_id,
                client_context,
                cognito_identity,
            }
            .write_body(w)?,
            Message::Result {
                request_id,
                payload,
                duration_us,
                max_memory_kib,
            } => {
                check_payload(payload)?;
                w.string(request_id);
                w.bytes(payload);
                w.u64(*duration_us);
                w.u64(*max_memory_kib);
            }
            Message::Error {
                request_id,
                error_type,
                message,
                fatal,
                duration_us,
                max_memory_kib,
                document,
            } => {
                w.string(request_id);
                w.string(error_type);
                w.string(message);
                w.bool(*fatal);
                w.u64(*duration_us);
                w.u64(*max_memory_kib);
                w.bytes(document);
            }
            Message::Log {
                request_id,
                stream,
                line,
            } => {
                w.string(request_id);
                w.u8(*stream as u8);
                w.string(line);
            }
            Message::Shutdown => {}
            Message::Fatal { message } => w.string(message),
        }
        Ok(())
    }

    /// Parses one complete body of the given kind.
    pub(crate) fn read_body(kind: u8, body: &[u8]) -> Result<Message, ProtocolError> {
        let mut r = Reader::new(body);
        let msg = match kind {
            kind::READY => Message::Ready {
                protocol_version: r.u8()?,
                agent: match r.u8()? {
                    1 => AgentKind::Wasm,
                    2 => AgentKind::Linux,
                    v => {
                        return Err(ProtocolError::BadValue {
                            field: "agent",
                            value: v.into(),
                        })
                    }
                },
                agent_version: r.string()?,
                boot_us: r.u64()?,
                timings: r.timings()?,
            },
            kind::INIT => Message::Init {
                function_name: r.string()?,
                function_version: r.string()?,
                handler: r.string()?,
                code: match r.u8()? {
                    0 => Code::Inline(r.bytes()?),
                    1 => Code::Path(r.string()?),
                    2 => Code::Compiled(r.bytes()?),
                    v => {
                        return Err(ProtocolError::BadValue {
                            field: "code",
                            value: v.into(),
                        })
                    }
                },
                env: r.pairs()?,
                memory_mib: r.u32()?,
                timeout_ms: r.u32()?,
                random_seed: r.seed()?,
                trees: r.trees()?,
                ephemeral_mib: r.u32()?,
            },
            kind::INIT_DONE => Message::InitDone { init_us: r.u64()? },
            kind::INIT_ERROR => Message::InitError {
                error_type: r.string()?,
                message: r.string()?,
                init_us: r.u64()?,
                document: r.bytes()?,
            },
            kind::INVOKE => {
                let request_id = r.string()?;
                let payload = r.slice()?;
                check_payload(payload)?;
                Message::Invoke {
                    request_id,
                    payload: payload.to_vec(),
                    deadline_ms: r.u64()?,
                    invoked_function_arn: r.string()?,
                    trace_id: r.string()?,
                    client_context: r.string()?,
                    cognito_identity: r.string()?,
                }
            }
            kind::RESULT => {
                let request_id = r.string()?;
                let payload = r.slice()?;
                check_payload(payload)?;
                Message::Result {
                    request_id,
                    payload: payload.to_vec(),
                    duration_us: r.u64()?,
                    max_memory_kib: r.u64()?,
                }
            }
            kind::ERROR => Message::Error {
                request_id: r.string()?,
                error_type: r.string()?,
                message: r.string()?,
                fatal: r.bool()?,
                duration_us: r.u64()?,
                max_memory_kib: r.u64()?,
                document: r.bytes()?,
            },
            kind::LOG => Message::Log {
                request_id: r.string()?,
                stream: match r.u8()? {
                    0 => LogStream::Stdout,
                    1 => LogStream::Stderr,
                    2 => LogStream::Agent,
                    v => {
                        return Err(ProtocolError::BadValue {
                            field: "stream",
                            value: v.into(),
                        })
                    }
                },
                line: r.string()?,
            },
            kind::SHUTDOWN => Message::Shutdown,
            kind::FATAL => Message::Fatal {
                message: r.string()?,
            },
            other => return Err(ProtocolError::UnknownKind(other)),
        };
        r.finish()?;
        Ok(msg)
    }
}

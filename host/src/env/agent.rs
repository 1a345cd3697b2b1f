//! The host end of one host↔agent conversation over any byte stream:
//! wait for `Ready`, send `Init`, run invocations (collecting their `Log`
//! lines), send `Shutdown`. It knows nothing about VMs, so the Linux agent's
//! tests drive it over a Unix socket pair; `Environment` adds the VM around it.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use ember_abi::protocol::{
    read_frame_from, AgentKind, Code, FrameIoError, InvokeRef, LogStream, Message, Sender,
};

use super::AgentError;

/// Most log bytes kept per invocation (or init); later lines are counted, not kept.
pub const MAX_LOG_BYTES: usize = 1024 * 1024;
/// How long `Shutdown` may take to hand to an agent that stopped reading.
const SHUTDOWN_SEND: Duration = Duration::from_millis(100);

/// A stream the protocol can run over: bytes both ways plus I/O timeouts,
/// which is how the host's deadlines interrupt a silent or trickling agent.
pub trait Transport: Read + Write + Send {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()>;
    /// Bounds a write to an agent that stopped reading. Transports without
    /// one keep the default (writes then wait for the peer).
    fn set_write_timeout(&mut self, _timeout: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for UnixStream {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        UnixStream::set_read_timeout(self, timeout)
    }
    fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        UnixStream::set_write_timeout(self, timeout)
    }
}

/// `stream` with one deadline over every `read`/`write` call: each call gets
/// only the time left, so an agent that trickles a frame a byte at a time
/// (each byte within a per-call timeout) is still cut off at `until`.
struct Deadline<'a, T: Transport> {
    stream: &'a mut T,
    until: Instant,
}

impl<T: Transport> Deadline<'_, T> {
    fn left(&self) -> io::Result<Duration> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        Ok(left)
    }
}

impl<T: Transport> Read for Deadline<'_, T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.left()?;
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

impl<T: Transport> Write for Deadline<'_, T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.left()?;
        self.stream.set_write_timeout(Some(left))?;
        self.stream.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// What the agent said in `Ready`.
#[derive(Debug, Clone)]
pub struct ReadyInfo {
    pub agent: AgentKind,
    pub agent_version: String,
    /// Guest-measured time from entry to `Ready`.
    pub boot_us: u64,
    pub timings: Vec<(String, u64)>,
}

/// What to load into the environment.
#[derive(Debug, Clone)]
pub struct InitSpec {
    pub function_name: String,
    pub function_version: String,
    pub handler: String,
    pub code: Code,
    pub env: Vec<(String, String)>,
    pub memory_mib: u32,
    pub timeout_ms: u32,
    /// Seed of the function's random source; `None` draws a fresh one from
    /// the host's CSPRNG (the normal case: never shared between environments).
    pub random_seed: Option<[u8; 32]>,
    /// Read-only trees for a wasm function's file system (`/var/runtime`,
    /// `/var/task`, `/opt`), in merge order; empty for Linux guests.
    pub trees: Vec<ember_abi::protocol::Tree>,
    /// The writable `/tmp`'s cap in MiB (`EphemeralStorage`).
    pub ephemeral_mib: u32,
}

/// One invocation request: the one type from the invoker through the pool
/// and the environment to the agent connection, which frames it.
#[derive(Debug, Clone, Default)]
pub struct InvokeRequest {
    pub request_id: String,
    /// The request body, shared (never copied) until it is framed.
    pub payload: bytes::Bytes,
    /// Deadline in ms since the Unix epoch.
    pub deadline_ms: u64,
    pub invoked_function_arn: String,
    pub trace_id: String,
    pub client_context: String,
    pub cognito_identity: String,
}

impl InvokeRequest {
    /// The `Invoke` frame's fields, borrowed from this request.
    pub fn as_frame(&self) -> InvokeRef<'_> {
        InvokeRef {
            request_id: &self.request_id,
            payload: &self.payload,
            deadline_ms: self.deadline_ms,
            invoked_function_arn: &self.invoked_function_arn,
            trace_id: &self.trace_id,
            client_context: &self.client_context,
            cognito_identity: &self.cognito_identity,
        }
    }
}

/// One line of function output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub stream: LogStream,
    pub line: String,
}

/// Log lines gathered for one invocation or init, bounded by [`MAX_LOG_BYTES`].
#[derive(Debug, Clone, Default)]
pub struct Logs {
    pub lines: Vec<LogLine>,
    /// Lines dropped because the cap was reached.
    pub dropped: usize,
    bytes: usize,
}

impl Logs {
    fn push(&mut self, stream: LogStream, line: String) {
        if self.bytes + line.len() > MAX_LOG_BYTES {
            self.dropped += 1;
            return;
        }
        self.bytes += line.len();
        self.lines.push(LogLine { stream, line });
    }
}

/// A function-level error: the environment may still be usable (unless `fatal`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionError {
    pub error_type: String,
    pub message: String,
    /// The agent asks for the environment to be replaced (e.g. after a timeout).
    pub fatal: bool,
    /// The runtime's own error document, for the caller unchanged (empty
    /// when the agent made the error).
    pub document: Vec<u8>,
}

impl FunctionError {
    /// An error emberd or the agent made (no runtime document), which
    /// leaves the environment usable.
    pub fn new(error_type: &str, message: String) -> Self {
        FunctionError {
            error_type: error_type.to_string(),
            message,
            fatal: false,
            document: Vec::new(),
        }
    }

    /// An error the agent reported with the runtime's own `document` (a
    /// Lambda error document, `{errorMessage, errorType, ...}`): its
    /// `errorType` and `errorMessage` name the error when it has them, as
    /// AWS reads them; else `error_type` and `message` do.
    pub fn with_document(
        error_type: &str,
        message: String,
        fatal: bool,
        document: Vec<u8>,
    ) -> Self {
        let doc: Option<serde_json::Value> = serde_json::from_slice(&document).ok();
        let field = |k: &str| {
            doc.as_ref()
                .and_then(|d| d.get(k))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        FunctionError {
            error_type: field("errorType").unwrap_or_else(|| error_type.to_string()),
            message: field("errorMessage").unwrap_or(message),
            fatal,
            document,
        }
    }

    /// Lambda's timeout error: the function ran past `timeout` and its
    /// environment is replaced.
    pub fn timed_out(timeout: std::time::Duration) -> Self {
        let secs = timeout.as_secs_f64();
        FunctionError {
            fatal: true,
            ..FunctionError::new(
                "Sandbox.Timedout",
                format!("Task timed out after {secs:.2} seconds"),
            )
        }
    }

    /// The payload a caller gets: the runtime's own error document
    /// unchanged when it sent one (as AWS returns it), else Lambda's
    /// `{"errorMessage", "errorType"}` made from what the agent or emberd saw.
    pub fn payload(&self) -> Vec<u8> {
        if !self.document.is_empty() {
            return self.document.clone();
        }
        serde_json::json!({ "errorMessage": self.message, "errorType": self.error_type })
            .to_string()
            .into_bytes()
    }
}

/// A finished invocation: the function's response or its error, with logs.
#[derive(Debug, Clone)]
pub struct InvokeReply {
    pub result: Result<Vec<u8>, FunctionError>,
    pub logs: Logs,
    /// Init-phase lines (no request id) that arrived before the result: a
    /// restored agent sends its after-restore hook's lines right after its
    /// `Ready`, so the first invocation carries them, before its `START`.
    pub init_phase: Logs,
    /// Agent-measured run time of the function.
    pub duration_us: u64,
    pub max_memory_kib: u64,
    /// Host-measured time from sending `Invoke` to receiving the result.
    pub round_trip: Duration,
}

/// Result of a successful `Init`.
#[derive(Debug, Clone)]
pub struct InitReport {
    pub init_us: u64,
    pub logs: Logs,
}

/// The host end of one agent connection. After any [`AgentError`] the
/// conversation is broken and every later call fails with `Broken`.
pub struct AgentConn<T: Transport> {
    stream: T,
    ready: ReadyInfo,
    broken: bool,
}

impl<T: Transport> AgentConn<T> {
    /// Waits up to `timeout` for the agent's `Ready`.
    pub fn handshake(mut stream: T, timeout: Duration) -> Result<Self, AgentError> {
        let until = Instant::now() + timeout;
        let msg = read_until(&mut stream, until)?;
        let ready = match msg {
            Message::Ready {
                protocol_version,
                agent,
                agent_version,
                boot_us,
                timings,
            } => {
                if protocol_version != ember_abi::protocol::VERSION {
                    return Err(AgentError::Version(protocol_version));
                }
                ReadyInfo {
                    agent,
                    agent_version,
                    boot_us,
                    timings,
                }
            }
            other => return Err(unexpected("Ready", &other)),
        };
        Ok(AgentConn {
            stream,
            ready,
            broken: false,
        })
    }

    pub fn ready(&self) -> &ReadyInfo {
        &self.ready
    }

    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Sends `Init` and waits up to `timeout` for `InitDone`/`InitError`.
    pub fn init(&mut self, spec: &InitSpec, timeout: Duration) -> Result<InitReport, AgentError> {
        self.guard(|s| s.init_inner(spec, timeout))
    }

    /// Runs one invocation, waiting up to `timeout` (the host's backstop; the
    /// agent enforces the deadline itself). A timeout is an error: the caller
    /// must discard the environment.
    pub fn invoke(
        &mut self,
        req: &InvokeRequest,
        timeout: Duration,
    ) -> Result<InvokeReply, AgentError> {
        self.guard(|s| s.invoke_inner(req, timeout))
    }

    /// Asks the agent to stop. Best effort: the agent may already be gone.
    pub fn shutdown(&mut self) -> Result<(), AgentError> {
        let until = Instant::now() + SHUTDOWN_SEND;
        self.guard(|s| {
            let frame = Message::Shutdown.to_frame().map_err(AgentError::Request)?;
            s.send(&frame, until)
        })
    }

    fn guard<R>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<R, AgentError>,
    ) -> Result<R, AgentError> {
        if self.broken {
            return Err(AgentError::Broken);
        }
        let r = f(self);
        // An invalid request is refused before anything is written, so the
        // stream is still in sync; anything else leaves it in doubt.
        if r.as_ref()
            .is_err_and(|e| !matches!(e, AgentError::Request(_)))
        {
            self.broken = true;
        }
        r
    }

    /// Writes one encoded frame, giving up (`Timeout`) at `until`: an agent
    /// that stops reading cannot hold the host in `write`.
    fn send(&mut self, frame: &[u8], until: Instant) -> Result<(), AgentError> {
        let mut out = Deadline {
            stream: &mut self.stream,
            until,
        };
        out.write_all(frame)
            .and_then(|()| out.flush())
            .map_err(|e| timeout_or(e.into()))
    }

    fn init_inner(&mut self, spec: &InitSpec, timeout: Duration) -> Result<InitReport, AgentError> {
        let random_seed = match spec.random_seed {
            Some(seed) => seed,
            None => fresh_seed()?,
        };
        let msg = Message::Init {
            function_name: spec.function_name.clone(),
            function_version: spec.function_version.clone(),
            handler: spec.handler.clone(),
            code: spec.code.clone(),
            env: spec.env.clone(),
            memory_mib: spec.memory_mib,
            timeout_ms: spec.timeout_ms,
            random_seed,
            trees: spec.trees.clone(),
            ephemeral_mib: spec.ephemeral_mib,
        };
        let frame = msg.to_frame().map_err(AgentError::Request)?;
        let until = Instant::now() + timeout;
        self.send(&frame, until)?;
        let mut logs = Logs::default();
        loop {
            match read_until(&mut self.stream, until)? {
                Message::Log { stream, line, .. } => logs.push(stream, line),
                Message::InitDone { init_us } => return Ok(InitReport { init_us, logs }),
                Message::InitError {
                    error_type,
                    message,
                    init_us,
                    document,
                } => {
                    return Err(AgentError::InitFailed {
                        error: FunctionError::with_document(&error_type, message, false, document),
                        init_us,
                        logs,
                    })
                }
                Message::Fatal { message } => return Err(AgentError::AgentFatal(message)),
                other => return Err(unexpected("InitDone", &other)),
            }
        }
    }

    fn invoke_inner(
        &mut self,
        req: &InvokeRequest,
        timeout: Duration,
    ) -> Result<InvokeReply, AgentError> {
        // The payload's one copy: into the frame. An oversize request is
        // refused before touching the stream, so the environment stays usable.
        let frame = req.as_frame().to_frame().map_err(AgentError::Request)?;
        let start = Instant::now();
        let until = start + timeout;
        self.send(&frame, until)?;
        let mut logs = Logs::default();
        let mut init_phase = Logs::default();
        loop {
            let msg = read_until(&mut self.stream, until)?;
            let (result, duration_us, max_memory_kib) = match msg {
                Message::Log {
                    request_id,
                    stream,
                    line,
                } => {
                    // Lines of an earlier, abandoned request are not this one's.
                    if request_id == req.request_id {
                        logs.push(stream, line);
                    } else if request_id.is_empty() {
                        init_phase.push(stream, line);
                    }
                    continue;
                }
                Message::Result {
                    request_id,
                    payload,
                    duration_us,
                    max_memory_kib,
                } if request_id == req.request_id => (Ok(payload), duration_us, max_memory_kib),
                Message::Error {
                    request_id,
                    error_type,
                    message,
                    fatal,
                    duration_us,
                    max_memory_kib,
                    document,
                } if request_id == req.request_id => (
                    Err(FunctionError::with_document(
                        &error_type,
                        message,
                        fatal,
                        document,
                    )),
                    duration_us,
                    max_memory_kib,
                ),
                Message::Fatal { message } => return Err(AgentError::AgentFatal(message)),
                other => return Err(unexpected("Result", &other)),
            };
            return Ok(InvokeReply {
                result,
                logs,
                init_phase,
                duration_us,
                max_memory_kib,
                round_trip: start.elapsed(),
            });
        }
    }
}

/// Reads one frame sent by the agent, failing with `Timeout` once `until`
/// has passed, however the frame's bytes are spread out in time.
fn read_until<T: Transport>(stream: &mut T, until: Instant) -> Result<Message, AgentError> {
    read_frame_from(&mut Deadline { stream, until }, Sender::Agent).map_err(timeout_or)
}

/// A frame I/O error as an [`AgentError`]: a deadline that passed is `Timeout`.
fn timeout_or(e: FrameIoError) -> AgentError {
    match e {
        FrameIoError::Closed => AgentError::Closed,
        FrameIoError::Io(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            AgentError::Timeout
        }
        FrameIoError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => AgentError::Closed,
        FrameIoError::Io(e) => AgentError::Io(e),
        FrameIoError::Protocol(e) => AgentError::Protocol(e),
    }
}

fn unexpected(wanted: &'static str, got: &Message) -> AgentError {
    AgentError::Unexpected {
        wanted,
        got: got.kind(),
    }
}

/// 32 bytes from the host CSPRNG.
pub fn fresh_seed() -> Result<[u8; 32], AgentError> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| AgentError::Random(e.to_string()))?;
    Ok(seed)
}

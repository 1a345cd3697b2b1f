//! The agent's event loop. Every source of news — host frames, Runtime API
//! calls, child exits — lands in one channel as an [`Event`]; the loop runs
//! the conversation of DESIGN.md ("Host↔agent protocol"): `Ready`, `Init` →
//! start `bootstrap` until its first `next` call, then one `Invoke` at a time
//! with a deadline. A runtime that crashes or times out is killed (whole
//! process tree) and started again, as Lambda re-initialises an environment.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::config::AgentConfig;
use super::link::HostLink;
use super::reaper::{self, describe_status, Reaper};
use super::runtime::{find_bootstrap, Runtime, RuntimeSpec};
use super::runtime_api::{self, ApiEvent, ApiState, Invocation, ReportedError};
use super::transport::{Transport, TransportError};
use ember_abi::protocol::{read_frame, AgentKind, Code, FrameIoError, Message, VERSION};

/// Why the agent stopped before the host said `Shutdown`.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot reach the host")]
    Transport(#[from] TransportError),
    #[error("cannot serve the Runtime API")]
    Api(#[from] runtime_api::ApiError),
    #[error("cannot send to the host")]
    Send(#[source] FrameIoError),
    #[error("the host closed the connection before Init")]
    NoInit,
    #[error("the runtime could not be restarted: {0}")]
    Reinit(String),
}

/// One piece of news for the event loop.
#[derive(Debug)]
pub enum Event {
    Host(Message),
    /// The host connection ended (EOF or an unrecoverable frame error).
    HostGone(String),
    Api(ApiEvent),
    /// A child process was reaped (pid, raw wait status).
    Exited(u32, i32),
}

/// The host asked us to stop (or went away): unwinds out of any phase.
struct Stop;

/// Why starting the runtime failed: Lambda's error type and message.
struct InitFailure {
    error_type: String,
    message: String,
    /// The runtime's own error document (see [`ReportedError`]); empty
    /// when the agent made the error.
    document: Vec<u8>,
}

/// What an invocation came to.
enum Outcome {
    Response(Vec<u8>),
    Error(ReportedError),
    Crashed(String),
    TimedOut,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs the agent until the host says `Shutdown` or goes away. `started` is
/// when the agent (or, for PID 1, the kernel) began, for `Ready.boot_us`;
/// `timings` are the phases measured before this call.
pub fn run(
    cfg: AgentConfig,
    transport: &dyn Transport,
    started: Instant,
    mut timings: Vec<(String, u64)>,
) -> Result<(), AgentError> {
    let (tx, rx) = mpsc::channel::<Event>();
    if !cfg.pid1 {
        // Same orphan adoption as PID 1 gets for free; best effort.
        let _ = reaper::become_subreaper();
    }
    let exit_tx = tx.clone();
    let reaper = Reaper::start(Box::new(move |pid, status| {
        let _ = exit_tx.send(Event::Exited(pid, status));
    }));
    let api = Arc::new(ApiState::default());
    let api_tx = tx.clone();
    let t = Instant::now();
    let api_addr = runtime_api::serve(
        cfg.runtime_api,
        api.clone(),
        Arc::new(move |ev| {
            let _ = api_tx.send(Event::Api(ev));
        }),
    )?;
    timings.push(("runtime_api".into(), t.elapsed().as_micros() as u64));
    let t = Instant::now();
    let (reader, writer) = transport.connect()?;
    timings.push(("connect".into(), t.elapsed().as_micros() as u64));
    let link = Arc::new(HostLink::new(writer));
    spawn_host_reader(reader, tx);
    link.send(&Message::Ready {
        protocol_version: VERSION,
        agent: AgentKind::Linux,
        agent_version: concat!("ember-agent ", env!("CARGO_PKG_VERSION")).into(),
        boot_us: started.elapsed().as_micros() as u64,
        timings,
    })
    .map_err(AgentError::Send)?;

    let init = loop {
        match rx.recv() {
            Ok(Event::Host(msg @ Message::Init { .. })) => break msg,
            Ok(Event::Host(Message::Shutdown)) | Ok(Event::HostGone(_)) | Err(_) => {
                return Err(AgentError::NoInit)
            }
            Ok(_) => {}
        }
    };
    let mut session = Session::new(cfg, init, api_addr.to_string(), api, reaper, link, rx)
        .ok_or(AgentError::NoInit)?;
    session.serve()
}

fn spawn_host_reader(mut reader: Box<dyn std::io::Read + Send>, tx: Sender<Event>) {
    thread::spawn(move || loop {
        match read_frame(&mut reader) {
            Ok(msg) => {
                if tx.send(Event::Host(msg)).is_err() {
                    return;
                }
            }
            Err(FrameIoError::Protocol(e)) if e.is_recoverable() => {} // skipped frame
            Err(e) => {
                let _ = tx.send(Event::HostGone(e.to_string()));
                return;
            }
        }
    });
}

/// State from `Init` on.
struct Session {
    link: Arc<HostLink>,
    api: Arc<ApiState>,
    reaper: Arc<Reaper>,
    rx: Receiver<Event>,
    spec: Result<RuntimeSpec, InitFailure>,
    init_timeout: Duration,
    timeout_ms: u32,
    memory_mib: u32,
    version: String,
    runtime: Option<Runtime>,
    instances: u64,
}

impl Session {
    fn new(
        cfg: AgentConfig,
        init: Message,
        api_addr: String,
        api: Arc<ApiState>,
        reaper: Arc<Reaper>,
        link: Arc<HostLink>,
        rx: Receiver<Event>,
    ) -> Option<Session> {
        let Message::Init {
            function_name,
            function_version,
            handler,
            code,
            env,
            memory_mib,
            timeout_ms,
            random_seed,
            // The Linux guest's trees come on drives; its /tmp is the
            // image's own.
            ..
        } = init
        else {
            return None;
        };
        if cfg.pid1 {
            // Mixes the host's fresh seed into the kernel pool (not credited).
            let _ = std::fs::write("/dev/urandom", random_seed);
        }
        let spec = match code {
            // Code comes as a read-only image (built once per code, page
            // cached and demand-paged, not held in guest RAM), never inline.
            Code::Inline(bytes) => Err(InitFailure {
                error_type: "Runtime.InvalidCode".into(),
                message: format!(
                    "Init carried {} bytes of code inline; the Linux agent runs code only from its read-only code image (send the code path, /var/task, and attach the image made by images/code-image.sh as the code drive)",
                    bytes.len()
                ),
                document: Vec::new(),
            }),
            Code::Compiled(bytes) => Err(InitFailure {
                error_type: "Runtime.InvalidCode".into(),
                message: format!(
                    "Init carried {} bytes of compiled WebAssembly; only the kernel-less wasm agent runs those",
                    bytes.len()
                ),
                document: Vec::new(),
            }),
            Code::Path(task_root) => {
                let task_root = PathBuf::from(task_root);
                let dirs = [task_root.as_path(), cfg.opt_dir.as_path(), cfg.runtime_dir.as_path()];
                find_bootstrap(&dirs)
                    .map(|bootstrap| RuntimeSpec {
                        bootstrap,
                        env: super::env::runtime_env(&super::env::EnvInputs {
                            cfg: &cfg,
                            task_root: &task_root,
                            api_addr: &api_addr,
                            function_name: &function_name,
                            function_version: &function_version,
                            handler: &handler,
                            memory_mib,
                            user: &env,
                        }),
                        cwd: task_root.clone(),
                        cgroup_root: cfg.cgroup_root.clone(),
                    })
                    .map_err(|e| InitFailure {
                        error_type: "Runtime.InvalidEntrypoint".into(),
                        message: ember_abi::error::chain(&e),
                        document: Vec::new(),
                    })
            }
        };
        Some(Session {
            link,
            api,
            reaper,
            rx,
            spec,
            init_timeout: cfg.init_timeout,
            timeout_ms,
            memory_mib,
            version: function_version,
            runtime: None,
            instances: 0,
        })
    }

    fn send(&self, msg: Message) -> Result<(), AgentError> {
        self.link.send(&msg).map_err(AgentError::Send)
    }

    fn serve(&mut self) -> Result<(), AgentError> {
        let t = Instant::now();
        self.link.agent_log(&format!(
            "INIT_START ember-agent {}",
            env!("CARGO_PKG_VERSION")
        ));
        match self.start_runtime() {
            Err(Stop) => return Ok(()),
            Ok(Err(f)) => {
                let init_us = t.elapsed().as_micros() as u64;
                self.send(Message::InitError {
                    error_type: f.error_type,
                    message: f.message,
                    init_us,
                    document: f.document,
                })?;
                // The environment is dead; wait for the host to say so.
                while let Ok(ev) = self.rx.recv() {
                    if matches!(ev, Event::Host(Message::Shutdown) | Event::HostGone(_)) {
                        break;
                    }
                }
                return Ok(());
            }
            Ok(Ok(())) => {}
        }
        self.send(Message::InitDone {
            init_us: t.elapsed().as_micros() as u64,
        })?;
        loop {
            let Ok(ev) = self.rx.recv() else {
                return Ok(());
            };
            match ev {
                Event::Host(Message::Invoke {
                    request_id,
                    payload,
                    deadline_ms,
                    invoked_function_arn,
                    trace_id,
                    client_context,
                    cognito_identity,
                }) => {
                    let inv = Invocation {
                        request_id,
                        payload,
                        deadline_ms,
                        invoked_function_arn,
                        trace_id,
                        client_context,
                        cognito_identity,
                    };
                    if self.invoke(inv)?.is_err() {
                        return Ok(());
                    }
                }
                Event::Host(Message::Shutdown) | Event::HostGone(_) => return Ok(()),
                Event::Exited(pid, status) if self.is_runtime(pid) => {
                    // Died between invocations: start it again now.
                    self.link.agent_log(&format!(
                        "runtime exited while idle ({}); restarting",
                        describe_status(status)
                    ));
                    match self.start_runtime() {
                        Err(Stop) => return Ok(()),
                        Ok(Err(f)) => {
                            let message = format!("{}: {}", f.error_type, f.message);
                            self.send(Message::Fatal {
                                message: message.clone(),
                            })?;
                            return Err(AgentError::Reinit(message));
                        }
                        Ok(Ok(())) => {}
                    }
                }
                _ => {} // stale API calls, orphans reaped, host chatter
            }
        }
    }

    fn is_runtime(&self, pid: u32) -> bool {
        self.runtime.as_ref().is_some_and(|r| r.pid() == pid)
    }

    /// (Re)starts `bootstrap` and waits for its first `next` call.
    fn start_runtime(&mut self) -> Result<Result<(), InitFailure>, Stop> {
        self.runtime = None; // kills any previous instance
        self.api.reset();
        let spec = match &self.spec {
            Ok(spec) => spec,
            Err(f) => {
                return Ok(Err(InitFailure {
                    error_type: f.error_type.clone(),
                    message: f.message.clone(),
                    document: Vec::new(),
                }))
            }
        };
        self.instances += 1;
        let rt = match Runtime::spawn(spec, self.instances, &self.reaper, self.link.clone()) {
            Ok(rt) => rt,
            Err(e) => {
                return Ok(Err(InitFailure {
                    error_type: "Runtime.InvalidEntrypoint".into(),
                    message: ember_abi::error::chain(&e),
                    document: Vec::new(),
                }))
            }
        };
        self.runtime = Some(rt);
        let deadline = Instant::now() + self.init_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let failure = |t: &str, m: String| {
                Ok(Err(InitFailure {
                    error_type: t.into(),
                    message: m,
                    document: Vec::new(),
                }))
            };
            match self.rx.recv_timeout(left) {
                Ok(Event::Api(ApiEvent::Next)) => return Ok(Ok(())),
                Ok(Event::Api(ApiEvent::InitError(e))) => {
                    self.flush_and_kill();
                    return Ok(Err(InitFailure {
                        error_type: e.error_type,
                        message: e.message,
                        document: e.document,
                    }));
                }
                Ok(Event::Exited(pid, status)) if self.is_runtime(pid) => {
                    self.flush_and_kill();
                    let m = format!("Runtime exited with error: {}", describe_status(status));
                    return failure("Runtime.ExitError", m);
                }
                Ok(Event::Host(Message::Shutdown)) | Ok(Event::HostGone(_)) => return Err(Stop),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    self.flush_and_kill();
                    let secs = self.init_timeout.as_secs_f64();
                    return failure(
                        "Sandbox.Timedout",
                        format!("Init timed out after {secs:.2} seconds"),
                    );
                }
                Err(RecvTimeoutError::Disconnected) => return Err(Stop),
            }
        }
    }

    fn flush_and_kill(&mut self) {
        if let Some(rt) = &self.runtime {
            rt.kill();
            rt.flush_output();
        }
        self.runtime = None;
    }

    /// Runs one invocation to its result. `Ok(Err(Stop))`: the host left.
    fn invoke(&mut self, inv: Invocation) -> Result<Result<(), Stop>, AgentError> {
        let id = inv.request_id.clone();
        let started = Instant::now();
        let deadline = started + Duration::from_millis(inv.deadline_ms.saturating_sub(unix_ms()));
        self.link.set_request_id(&id);
        self.link
            .agent_log(&format!("START RequestId: {id} Version: {}", self.version));
        self.api.offer(inv);
        let outcome = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Event::Api(ApiEvent::Response { request_id, body })) if request_id == id => {
                    break Outcome::Response(body)
                }
                Ok(Event::Api(ApiEvent::ResponseTooLarge { request_id })) if request_id == id => {
                    break Outcome::Error(ReportedError {
                        error_type: "Function.ResponseSizeTooLarge".into(),
                        message: format!("Response payload size exceeded maximum allowed payload size ({} bytes).", ember_abi::protocol::MAX_PAYLOAD),
                        document: Vec::new(),
                    })
                }
                Ok(Event::Api(ApiEvent::Error { request_id, error })) if request_id == id => {
                    break Outcome::Error(error)
                }
                Ok(Event::Exited(pid, status)) if self.is_runtime(pid) => {
                    break Outcome::Crashed(describe_status(status))
                }
                Ok(Event::Host(Message::Shutdown)) | Ok(Event::HostGone(_)) => return Ok(Err(Stop)),
                Ok(Event::Host(Message::Invoke { request_id, .. })) => self.link.agent_log(&format!(
                    "protocol error: Invoke {request_id} while {id} is running; ignored"
                )),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => break Outcome::TimedOut,
                Err(RecvTimeoutError::Disconnected) => return Ok(Err(Stop)),
            }
        };
        if let Some(rt) = &self.runtime {
            if matches!(outcome, Outcome::TimedOut) {
                rt.kill();
            }
            rt.flush_output();
        }
        let duration_us = started.elapsed().as_micros() as u64;
        let max_memory_kib = self.runtime.as_ref().map_or(0, Runtime::max_memory_kib);
        self.api.finish();
        let (error_type, message) = match outcome {
            Outcome::Response(payload) => {
                self.report(&id, duration_us, max_memory_kib);
                self.send(Message::Result {
                    request_id: id.clone(),
                    payload,
                    duration_us,
                    max_memory_kib,
                })?;
                return Ok(Ok(()));
            }
            Outcome::Error(e) => {
                self.report(&id, duration_us, max_memory_kib);
                self.send(Message::Error {
                    request_id: id.clone(),
                    error_type: e.error_type,
                    message: e.message,
                    fatal: false,
                    duration_us,
                    max_memory_kib,
                    document: e.document,
                })?;
                return Ok(Ok(()));
            }
            Outcome::Crashed(how) => (
                "Runtime.ExitError".to_string(),
                format!("RequestId: {id} Error: Runtime exited with error: {how}"),
            ),
            Outcome::TimedOut => (
                "Sandbox.Timedout".to_string(),
                format!(
                    "Task timed out after {:.2} seconds",
                    f64::from(self.timeout_ms) / 1000.0
                ),
            ),
        };
        // Lambda's line: `<ISO time> <request id> Task timed out after ...`.
        let now = ember_abi::civil::iso8601_ms(unix_ms());
        self.link.agent_log(&format!("{now} {id} {message}"));
        self.report(&id, duration_us, max_memory_kib);
        // Lambda re-initialises after a crash or timeout; the error tells the
        // host whether this environment can still serve (fatal = it cannot).
        let reinit = self.start_runtime();
        let fatal = !matches!(reinit, Ok(Ok(())));
        if let Ok(Err(f)) = &reinit {
            self.link
                .agent_log(&format!("re-init failed: {}: {}", f.error_type, f.message));
        }
        self.send(Message::Error {
            request_id: id,
            error_type,
            message,
            fatal,
            duration_us,
            max_memory_kib,
            document: Vec::new(),
        })?;
        Ok(reinit.map(|_| ()))
    }

    /// Lambda's END and REPORT lines, sent before the result so the host
    /// collects them with the invocation; later output belongs to none.
    fn report(&self, id: &str, duration_us: u64, max_memory_kib: u64) {
        self.link.agent_log(&format!("END RequestId: {id}"));
        let ms = duration_us as f64 / 1000.0;
        self.link.agent_log(&format!(
            "REPORT RequestId: {id}\tDuration: {ms:.2} ms\tBilled Duration: {} ms\tMemory Size: {} MB\tMax Memory Used: {} MB",
            ms.ceil() as u64,
            self.memory_mib,
            max_memory_kib.div_ceil(1024)
        ));
        self.link.set_request_id("");
    }
}

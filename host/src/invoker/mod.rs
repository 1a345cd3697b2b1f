//! The one place an invocation runs: admission (reserved and host-wide
//! concurrency, then host memory), environment checkout (warm, or a cold start that may overlap
//! whatever the caller still has to do), the call itself, and its typed
//! [`Outcome`]. The HTTP `Invoke` path and the asynchronous event workers both
//! go through here, so everything that observes invocations (metrics, log
//! streams) has exactly one place to hook: the end of [`Ticket::run`] for
//! outcomes, [`begin`] for throttles.

pub mod call;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

pub use call::{CallResult, Outcome};

use crate::catalog::{lazy_spec, Resolved};
use crate::env::{EnvError, FunctionError, InvokeOutput, InvokeRequest, LaunchError, Report};
use crate::logs::Logs;
use crate::metrics::Metrics;
use crate::pool::policy::Throttle;
use crate::pool::{Admitted, Pool, Warm};
use crate::store::Store;
use crate::util::function_arn;

/// Lambda's response payload limit (the same for both invocation types).
pub const MAX_RESPONSE: usize = 6 * 1024 * 1024;

type Checkout = JoinHandle<Result<(Warm, bool), EnvError>>;

/// An admitted invocation whose environment is being checked out. Dropping
/// it without [`Ticket::run`] gives the environment back once it is ready
/// and releases the concurrency unit.
pub struct Ticket {
    invoker: Arc<Invoker>,
    target: Resolved,
    arn: String,
    started: Instant,
    admitted: Option<Admitted>,
    /// `concurrent_executions` held from admission to the outcome.
    executing: Option<crate::metrics::Executing>,
    checkout: Option<Checkout>,
}

/// The invocation core's services: where code is loaded from, the pool of
/// environments, and the two observers of every outcome.
pub struct Invoker {
    store: Arc<Store>,
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
    logs: Arc<Logs>,
}

impl Invoker {
    pub fn new(
        store: Arc<Store>,
        pool: Arc<Pool>,
        metrics: Arc<Metrics>,
        logs: Arc<Logs>,
    ) -> Arc<Self> {
        Arc::new(Invoker {
            store,
            pool,
            metrics,
            logs,
        })
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Admits one invocation of `target` and starts checking out an environment
    /// for it. `qualifier` is what the caller asked for (it appears in the ARN
    /// the function sees).
    pub fn begin(
        self: &Arc<Self>,
        target: Resolved,
        qualifier: Option<&str>,
    ) -> Result<Ticket, Throttle> {
        let admitted = self.pool.admit(&target.name).inspect_err(|_| {
            self.metrics.throttle(&target.name, &target.version);
        })?;
        let key = target.key();
        // A warm environment, or memory for a new one: refused here (before
        // the caller waits on anything) when the host has no room.
        let slot = self
            .pool
            .reserve(&key, target.config.memory_size)
            .inspect_err(|_| self.metrics.throttle(&target.name, &target.version))?;
        let executing = self.metrics.executing(&target.name, &target.version);
        let pool = self.pool.clone();
        let spec = lazy_spec(&self.store, &target);
        let checkout = tokio::spawn(async move { pool.start(&key, slot, spec).await });
        Ok(Ticket {
            invoker: self.clone(),
            arn: function_arn(&target.name, qualifier),
            target,
            started: Instant::now(),
            admitted: Some(admitted),
            executing: Some(executing),
            checkout: Some(checkout),
        })
    }
}

impl Ticket {
    pub fn target(&self) -> &Resolved {
        &self.target
    }

    /// Waits for the environment and runs `req` on it. The caller fills the
    /// request id, payload and client context; the ticket sets the deadline
    /// (from the function's timeout, when the environment is ready) and the
    /// invoked ARN.
    pub async fn run(mut self, mut req: InvokeRequest) -> Outcome {
        let request_id = req.request_id.clone();
        let checkout = self.checkout.take();
        let joined = match checkout {
            Some(task) => task
                .await
                .unwrap_or_else(|e| Err(EnvError::Launch(LaunchError::StartTask(e)))),
            None => Err(EnvError::Launch(LaunchError::NoCheckout)),
        };
        let (warm, cold) = match joined {
            Ok(x) => x,
            Err(e) => {
                let (result, logs) = match e {
                    EnvError::Launch(e) => (
                        CallResult::ServiceError(format!(
                            "Could not start an execution environment: {}",
                            crate::util::error_chain(&e)
                        )),
                        Vec::new(),
                    ),
                    // What the failed Init logged goes before this START.
                    EnvError::Init(f, logs) => (CallResult::FunctionError(f), logs),
                    EnvError::Restore(m) => (CallResult::SnapStartError(m), Vec::new()),
                    EnvError::Died(f) => (
                        function_error("Runtime.ExitError", crate::util::error_chain(&f)),
                        Vec::new(),
                    ),
                };
                let report = Report {
                    init_log_lines: logs.len(),
                    ..Report::default()
                };
                return self.finish(request_id, result, logs, report, None, false);
            }
        };
        let timeout = Duration::from_secs(self.target.config.timeout.into());
        let now_ms = crate::util::unix_ms();
        req.deadline_ms = now_ms + timeout.as_millis() as u64;
        req.invoked_function_arn = self.arn.clone();
        let env_id = warm.id;
        let out = self.invoker.pool.invoke(warm, req, timeout).await;
        let (result, logs, report) = match out {
            Ok(InvokeOutput {
                result,
                logs,
                report,
            }) => {
                let result = match result {
                    Ok(payload) if payload.len() > MAX_RESPONSE => {
                        let m = format!("Response payload size ({} bytes) exceeded maximum allowed payload size ({MAX_RESPONSE} bytes).", payload.len());
                        function_error("Function.ResponseSizeTooLarge", m)
                    }
                    Ok(payload) => CallResult::Success(payload),
                    Err(f) => CallResult::FunctionError(f),
                };
                (result, logs, report)
            }
            Err(e) => {
                let m = format!(
                    "RequestId: {} Error: Runtime exited: {}",
                    request_id,
                    e.detail()
                );
                (
                    function_error("Runtime.ExitError", m),
                    vec![],
                    Report::default(),
                )
            }
        };
        self.finish(request_id, result, logs, report, Some(env_id), cold)
    }

    /// Ends the invocation: releases its concurrency unit and builds the
    /// outcome. Every invocation, sync or async, passes here exactly once.
    fn finish(
        &mut self,
        request_id: String,
        result: CallResult,
        logs: Vec<String>,
        report: Report,
        env_id: Option<u64>,
        cold: bool,
    ) -> Outcome {
        self.admitted.take();
        self.executing.take();
        let outcome = Outcome {
            request_id,
            function: self.target.name.clone(),
            version: self.target.version.clone(),
            memory_size: self.target.config.memory_size,
            env_id,
            cold,
            result,
            logs,
            report,
            elapsed: self.started.elapsed(),
        };
        self.invoker.metrics.record(&outcome);
        self.invoker.logs.record(&outcome);
        outcome
    }
}

fn function_error(error_type: &str, message: String) -> CallResult {
    CallResult::FunctionError(FunctionError::new(error_type, message))
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(task) = self.checkout.take() {
            give_back(self.invoker.pool.clone(), task);
        }
    }
}

/// Gives a checked-out environment back once its start finishes, for
/// invocations abandoned after the checkout began.
fn give_back(pool: Arc<Pool>, task: Checkout) {
    tokio::spawn(async move {
        if let Ok(Ok((w, _))) = task.await {
            pool.checkin(w, true);
        }
    });
}

//! Firecracker's API socket (`--api-sock`): HTTP/1.1 over a Unix socket as
//! Firecracker's OpenAPI description (`firecracker.yaml`) defines it.
//!
//! Two threads (DESIGN.md "API socket"):
//! - the API thread ([`server`]) owns the sockets: it frames requests
//!   ([`http`]), routes them into [`request::Action`]s and answers what is
//!   not a valid request itself; its seccomp filter allows sockets and
//!   nothing else.
//! - the VMM thread (the process's main thread, [`run`]) owns the
//!   [`controller::Controller`], which holds the configuration before boot
//!   and the [`crate::vm::Vm`] after. It polls the job eventfd and the VM's
//!   stop event, applies one action at a time and sends the answer back.
//!
//! The process ends when the VM ends, with the VM's exit code.

pub mod controller;
pub mod http;
pub mod metrics;
pub mod request;
mod server;

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use crate::exit::VmExit;
use controller::{ActionError, Controller, Reply};
use http::Response;

/// How often metrics are written without a `FlushMetrics` (Firecracker's period).
const METRICS_PERIOD: Duration = Duration::from_secs(60);

/// Why the API could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot bind the API socket {0}")]
    Bind(String, #[source] std::io::Error),
    #[error("cannot create the API's eventfds")]
    EventFd(#[source] std::io::Error),
    #[error("cannot start the API thread")]
    Spawn(#[source] std::io::Error),
    #[error("the VMM thread's poll failed")]
    Poll(#[source] std::io::Error),
    #[error("the API thread ended")]
    ServerGone,
    #[error("cannot apply the configuration: {0}")]
    Boot(#[source] ActionError),
}

/// Binds the API socket (Firecracker's rule: the path must not exist).
pub fn bind(path: &Path) -> Result<UnixListener, ApiError> {
    UnixListener::bind(path).map_err(|e| ApiError::Bind(path.display().to_string(), e))
}

/// The HTTP answer to an action's outcome.
pub fn response(outcome: Result<Reply, ActionError>) -> Response {
    match outcome {
        Ok(Reply::Empty) => Response::new(204, None),
        Ok(Reply::Json(v)) => Response::json(200, &v),
        Err(e) => Response::fault(400, &e.to_string()),
    }
}

/// Serves the API on `listener` until the VM ends; `boot_now` starts the VM
/// from the controller's configuration first (`--config-file` with the
/// API). Returns how the VM ended.
pub fn run(
    listener: UnixListener,
    mut controller: Controller,
    boot_now: bool,
) -> Result<VmExit, ApiError> {
    let job_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(ApiError::EventFd)?;
    let reply_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(ApiError::EventFd)?;
    let (jobs_tx, jobs) = mpsc::channel();
    let (replies, replies_rx) = mpsc::channel();
    let channels = server::Channels {
        jobs: jobs_tx,
        job_evt: job_evt.try_clone().map_err(ApiError::EventFd)?,
        replies: replies_rx,
        reply_evt: reply_evt.try_clone().map_err(ApiError::EventFd)?,
    };
    let server = std::thread::Builder::new()
        .name("fc_api".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            crate::sandbox::enter_or_exit(crate::sandbox::ThreadKind::Api);
            server::run(listener, channels);
        })
        .map_err(ApiError::Spawn)?;
    controller.open_config_metrics().map_err(ApiError::Boot)?;
    if boot_now {
        controller.instance_start().map_err(ApiError::Boot)?;
    }
    let mut next_flush = Instant::now() + METRICS_PERIOD;
    loop {
        let mut fds = vec![libc::pollfd {
            fd: job_evt.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(stop) = controller.stop_event() {
            fds.push(libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let wait = next_flush.saturating_duration_since(Instant::now());
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs.
        let n = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                wait.as_millis().min(i32::MAX as u128) as i32,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(ApiError::Poll(e));
        }
        if Instant::now() >= next_flush {
            controller.flush_metrics();
            next_flush = Instant::now() + METRICS_PERIOD;
        }
        if fds.get(1).is_some_and(|f| f.revents != 0) {
            if let Some(exit) = controller.finish() {
                // Hang up on the API thread, which then writes out the
                // answers it holds (an answer to the request that let the
                // guest end, say) before the process exits.
                drop(replies);
                let _ = reply_evt.write(1);
                let end = Instant::now() + server::EXIT_FLUSH + Duration::from_millis(100);
                while !server.is_finished() && Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(1));
                }
                return Ok(exit);
            }
        }
        if fds[0].revents != 0 {
            let _ = job_evt.read();
            loop {
                match jobs.try_recv() {
                    Ok(job) => {
                        let answer = response(controller.handle(job.action));
                        if replies.send((job.conn, answer)).is_err() {
                            return Err(ApiError::ServerGone);
                        }
                        let _ = reply_evt.write(1);
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => return Err(ApiError::ServerGone),
                }
            }
        }
    }
}

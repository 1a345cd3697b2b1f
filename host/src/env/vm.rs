//! One execution environment: an `ember-vmm` child plus the agent connection
//! inside it. Owns the child's whole life: launch → `Ready` → `Init` →
//! invocations → shutdown, with the host-side deadline backstop, VM death
//! seen as an environment fault, and kill + reap + cleanup on drop.

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use super::agent::{AgentConn, InitReport, InitSpec, InvokeReply, InvokeRequest, ReadyInfo};
use super::jail;
use super::spawn::{self, vm_exited, LaunchConfig};
use super::AgentError;
use crate::util::OnSpawn;

/// How long `shutdown` waits for the VM to exit by itself before killing it.
const SHUTDOWN_WAIT: Duration = Duration::from_millis(200);

/// A running environment. Not `Clone`; dropping it kills and reaps the VM
/// and removes its work directory.
pub struct Environment {
    child: Child,
    conn: AgentConn<UnixStream>,
    dir: PathBuf,
    log_path: PathBuf,
    deadline_grace: Duration,
    boot_timeout: Duration,
    /// Host-measured time from spawning `ember-vmm` to the agent's `Ready`.
    launch_time: Duration,
    /// The environment must not be used again (timeout, VM death, broken stream).
    dead: bool,
    exited: bool,
    /// `child` is an `ember-jailer` (see [`jail::kill`]).
    jailed: bool,
}

impl Environment {
    /// Spawns the VM and waits for the agent's `Ready`.
    pub fn launch(cfg: &LaunchConfig) -> Result<Environment, AgentError> {
        Self::launch_with(cfg, &OnSpawn::default())
    }

    /// [`Environment::launch`], telling `on_spawn` the child's pid as soon
    /// as it exists (long before `Ready`), so that whoever must be able to
    /// kill a starting environment (shutdown, crash cleanup) knows it.
    pub fn launch_with(cfg: &LaunchConfig, on_spawn: &OnSpawn) -> Result<Environment, AgentError> {
        let start = Instant::now();
        let launched = spawn::launch(cfg, on_spawn)?;
        Self::connected(launched, cfg, start)
    }

    /// An environment restored into a restore slot's VMM (started ahead,
    /// see [`super::slots`]): `PUT /snapshot/load` of `load`, then the
    /// agent's `Ready`. Its launch time counts from this call.
    pub(crate) fn restore_into(
        started: spawn::Started,
        cfg: &LaunchConfig,
        load: &spawn::LoadPaths,
    ) -> Result<Environment, AgentError> {
        let start = Instant::now();
        let launched = spawn::finish(cfg.boot_timeout, started, Some(load))?;
        Self::connected(launched, cfg, start)
    }

    /// The agent's handshake on a launched VM's connection.
    fn connected(
        launched: spawn::Launched,
        cfg: &LaunchConfig,
        start: Instant,
    ) -> Result<Environment, AgentError> {
        // From here on, Drop cleans up whatever fails.
        let mut child = launched.child;
        let conn = match AgentConn::handshake(
            launched.stream,
            cfg.boot_timeout.saturating_sub(start.elapsed()),
        ) {
            Ok(c) => c,
            Err(e) => {
                let e = fault_reason(&mut child, &launched.log_path, cfg.jail.is_some(), e);
                jail::kill(&mut child, cfg.jail.is_some());
                let _ = child.wait();
                let _ = fs::remove_dir_all(&launched.dir);
                return Err(e);
            }
        };
        drop(launched.pidfd);
        Ok(Environment {
            child,
            conn,
            dir: launched.dir,
            log_path: launched.log_path,
            deadline_grace: cfg.deadline_grace,
            boot_timeout: cfg.boot_timeout,
            launch_time: start.elapsed(),
            dead: false,
            exited: false,
            jailed: cfg.jail.is_some(),
        })
    }

    /// What the agent reported in `Ready`.
    pub fn ready(&self) -> &ReadyInfo {
        self.conn.ready()
    }

    /// Spawn → `Ready`, measured on the host.
    pub fn launch_time(&self) -> Duration {
        self.launch_time
    }

    /// The process id of `ember-vmm`, or of its `ember-jailer` when jailed.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How long past an invocation's deadline this side waits for the
    /// agent's answer.
    pub fn deadline_grace(&self) -> Duration {
        self.deadline_grace
    }

    /// Whether the environment can take another invocation.
    pub fn is_usable(&self) -> bool {
        !self.dead && !self.conn.is_broken()
    }

    /// Loads the function. The init phase gets the function timeout (at least
    /// the boot timeout) plus the grace period.
    pub fn init(&mut self, spec: &InitSpec) -> Result<InitReport, AgentError> {
        let timeout = Duration::from_millis(spec.timeout_ms.into()).max(self.boot_timeout)
            + self.deadline_grace;
        let r = self.conn.init(spec, timeout);
        self.after(r)
    }

    /// Runs one invocation. `Ok` holds the function's result or error; `Err`
    /// is an environment fault (VM died, host backstop timeout, broken
    /// stream), after which the environment is unusable and should be dropped.
    pub fn invoke(&mut self, req: &InvokeRequest) -> Result<InvokeReply, AgentError> {
        let now_ms = crate::util::unix_ms();
        let timeout =
            Duration::from_millis(req.deadline_ms.saturating_sub(now_ms)) + self.deadline_grace;
        let r = self.conn.invoke(req, timeout);
        if let Ok(inv) = &r {
            if inv.result.as_ref().is_err_and(|e| e.fatal) {
                self.dead = true;
            }
        }
        self.after(r)
    }

    /// Pauses the VM and writes a full snapshot into its work directory
    /// through the VMM's API socket (the VMM must have been started with
    /// [`LaunchConfig::api`]). Returns the host paths of the state and
    /// memory files; the VM stays paused (drop it when done).
    pub fn snapshot(&mut self, timeout: Duration) -> Result<(PathBuf, PathBuf), AgentError> {
        let until = Instant::now() + timeout;
        let api = self.dir.join(spawn::API_SOCK);
        let mut s =
            super::vmm_api::connect(&api, &mut self.child, until).map_err(AgentError::VmmApi)?;
        let call = |s: &mut UnixStream, m, p, b: serde_json::Value| {
            super::vmm_api::call(s, m, p, &b, until).map_err(AgentError::VmmApi)
        };
        call(
            &mut s,
            "PATCH",
            "/vm",
            serde_json::json!({"state": "Paused"}),
        )?;
        // The VMM writes inside its own directory (Landlock allows the API
        // socket's directory); under a jail that directory is `/run`.
        let inside = |n: &str| match self.jailed {
            true => format!("/run/{n}"),
            false => self.dir.join(n).display().to_string(),
        };
        call(
            &mut s,
            "PUT",
            "/snapshot/create",
            serde_json::json!({
                "snapshot_type": "Full",
                "snapshot_path": inside("snap.state"),
                "mem_file_path": inside("snap.mem"),
            }),
        )?;
        self.dead = true;
        Ok((self.dir.join("snap.state"), self.dir.join("snap.mem")))
    }

    /// Asks the agent to stop, waits briefly, then kills and reaps the VM.
    /// Returns the VM's exit status as text.
    pub fn shutdown(mut self) -> String {
        let _ = self.conn.shutdown();
        let until = Instant::now() + SHUTDOWN_WAIT;
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = true;
                return status.to_string();
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        jail::kill(&mut self.child, self.jailed);
        let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
        self.exited = true;
        status
    }

    /// Marks the environment dead on faults and explains VM deaths.
    fn after<R>(&mut self, r: Result<R, AgentError>) -> Result<R, AgentError> {
        match r {
            Ok(v) => Ok(v),
            Err(e) => {
                if !matches!(e, AgentError::Request(_)) {
                    self.dead = true;
                }
                if matches!(e, AgentError::Timeout) {
                    // The backstop fired: the VM may be spinning; stop it now.
                    jail::kill(&mut self.child, self.jailed);
                }
                Err(fault_reason(
                    &mut self.child,
                    &self.log_path,
                    self.jailed,
                    e,
                ))
            }
        }
    }
}

/// How long a broken conversation waits for the VM's exit status. A jailed
/// VMM's status arrives once its jailer has removed the jail and cgroups
/// (RCU grace periods: slow on a loaded host); only faults pay this.
const FAULT_STATUS_WAIT: Duration = Duration::from_secs(3);

/// Turns an EOF/broken stream into `VmExited` with the VMM's own reason
/// when the child has exited (or does so within a moment).
fn fault_reason(
    child: &mut Child,
    log_path: &std::path::Path,
    jailed: bool,
    e: AgentError,
) -> AgentError {
    if !matches!(e, AgentError::Closed | AgentError::Io(_)) {
        return e;
    }
    let until = Instant::now() + FAULT_STATUS_WAIT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return vm_exited(status, jailed, log_path),
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_micros(500)),
            _ => return e,
        }
    }
}

impl Drop for Environment {
    fn drop(&mut self) {
        if !self.exited {
            jail::kill(&mut self.child, self.jailed);
            let _ = self.child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

//! The production [`EnvironmentLauncher`]: one `ember-vmm` child per
//! environment (jailed by `ember-jailer` unless emberd runs with --no-jail)
//! through `host::agent` (spawn → `Ready` → `Init`), adapted to the pool's
//! seam.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::agent::{
    self, AgentError, Code, InitSpec, InvokeRequest, JailConfig, LaunchConfig, LogStream,
};
use crate::pool::{
    EnvError, EnvSpec, Environment, EnvironmentLauncher, InvokeInput, InvokeOutput, Report,
};
use crate::spares::Spares;

/// Launches kernel-less wasm environments.
pub struct VmLauncher {
    base: LaunchConfig,
    /// Why no environment can start (a binary is missing), if so: emberd
    /// still serves the control plane and answers invokes with this.
    unavailable: Option<String>,
    spares: Option<Arc<Spares>>,
    /// Where VM boot times are recorded.
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl VmLauncher {
    pub fn new(vmm: PathBuf, wasm_agent: PathBuf) -> Self {
        let missing: Vec<String> = [&vmm, &wasm_agent]
            .iter()
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        let unavailable =
            (!missing.is_empty()).then(|| format!("not found: {}", missing.join(", ")));
        Self {
            base: LaunchConfig::kernelless(vmm, wasm_agent),
            unavailable,
            spares: None,
            metrics: None,
        }
    }

    /// Records each environment's VM boot time (spawn → Ready) in `m`.
    pub fn with_metrics(mut self, m: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(m);
        self
    }

    /// Runs every VMM (spares included) through `ember-jailer`; call before
    /// [`Self::with_spares`].
    pub fn with_jail(mut self, jail: Option<JailConfig>) -> Self {
        if let Some(j) = &jail {
            if !j.jailer.is_file() && self.unavailable.is_none() {
                self.unavailable = Some(format!("not found: {}", j.jailer.display()));
            }
        }
        self.base.jail = jail;
        self
    }

    /// Keeps `n` booted spare VMs of `mem_mib` MiB (see [`Spares`]).
    pub fn with_spares(mut self, n: usize, mem_mib: u32, run_dir: &Path) -> Self {
        if n > 0 && self.unavailable.is_none() {
            let mut cfg = self.base.clone();
            cfg.mem_mib = mem_mib;
            self.spares = Some(Spares::start(cfg, n, run_dir));
        }
        self
    }

    pub fn unavailable(&self) -> Option<&str> {
        self.unavailable.as_deref()
    }
}

fn chain(e: &AgentError) -> String {
    crate::util::error_chain(e)
}

impl EnvironmentLauncher for VmLauncher {
    fn close(&self) {
        if let Some(s) = &self.spares {
            s.close();
        }
    }

    fn launch(&self, spec: &EnvSpec) -> Result<Box<dyn Environment>, EnvError> {
        if let Some(why) = &self.unavailable {
            return Err(EnvError::Launch(why.clone()));
        }
        let mut cfg = self.base.clone();
        cfg.mem_mib = spec.memory_mib;
        cfg.work_root = spec.work_dir.clone();
        let spare = self
            .spares
            .as_ref()
            .filter(|s| s.mem_mib() == spec.memory_mib)
            .and_then(|s| s.take());
        let mut env = match spare {
            Some(env) => env,
            None => agent::Environment::launch(&cfg).map_err(|e| EnvError::Launch(chain(&e)))?,
        };
        // A spare's boot happened earlier; it is counted when it is used.
        if let Some(m) = &self.metrics {
            m.vmm_booted(env.launch_time());
        }
        let init = InitSpec {
            function_name: spec.function_name.clone(),
            function_version: spec.function_version.clone(),
            handler: spec.handler.clone(),
            code: Code::Inline(spec.code.to_vec()),
            env: spec
                .env_vars
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            memory_mib: spec.memory_mib,
            timeout_ms: spec.timeout_ms,
            random_seed: None,
        };
        let t = std::time::Instant::now();
        match env.init(&init) {
            Ok(report) => {
                if std::env::var_os("EMBER_TRACE_COLD").is_some() {
                    let boot = env.ready().boot_us;
                    eprintln!(
                        "emberd: env {} spawn->Ready {:?} (guest boot {boot} us), Init {:?} (agent {} us)",
                        spec.env_id,
                        env.launch_time(),
                        t.elapsed(),
                        report.init_us
                    );
                }
                Ok(Box::new(VmEnv {
                    env,
                    init_us: Some(report.init_us),
                }))
            }
            Err(AgentError::InitFailed {
                error_type,
                message,
                ..
            }) => Err(EnvError::Init {
                error_type,
                message,
            }),
            Err(e) => Err(EnvError::Died(chain(&e))),
        }
    }
}

struct VmEnv {
    env: agent::Environment,
    /// Init phase duration, reported with the first invocation.
    init_us: Option<u64>,
}

impl Environment for VmEnv {
    fn invoke(&mut self, input: &InvokeInput) -> Result<InvokeOutput, EnvError> {
        let req = InvokeRequest {
            request_id: input.request_id.clone(),
            payload: input.payload.clone(),
            deadline_ms: input.deadline_ms,
            invoked_function_arn: input.invoked_function_arn.clone(),
            client_context: input.client_context.clone(),
            ..Default::default()
        };
        let inv = self
            .env
            .invoke(&req)
            .map_err(|e| EnvError::Died(chain(&e)))?;
        let logs = inv
            .logs
            .lines
            .into_iter()
            .filter(|l| l.stream != LogStream::Agent || !l.line.is_empty())
            .map(|l| l.line)
            .collect();
        let report = Report {
            duration_us: Some(inv.duration_us),
            max_memory_kib: Some(inv.max_memory_kib),
            init_us: self.init_us.take(),
        };
        Ok(match inv.result {
            Ok(payload) => InvokeOutput::Success {
                payload,
                logs,
                report,
            },
            Err(f) => InvokeOutput::FunctionError {
                error_type: f.error_type,
                message: f.message,
                fatal: f.fatal,
                logs,
                report,
            },
        })
    }

    fn pid(&self) -> Option<u32> {
        Some(self.env.pid())
    }

    /// Alive = usable conversation and a process that is neither gone nor a
    /// zombie (`/proc/<pid>/stat` state field).
    fn is_alive(&mut self) -> bool {
        if !self.env.is_usable() {
            return false;
        }
        match std::fs::read_to_string(format!("/proc/{}/stat", self.env.pid())) {
            Ok(stat) => stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|s| s != "Z" && s != "X"),
            Err(_) => false,
        }
    }

    fn shutdown(self: Box<Self>) {
        self.env.shutdown();
    }
}

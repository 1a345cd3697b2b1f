//! The production [`EnvLauncher`]: one `ember-vmm` child per
//! environment (jailed by `ember-jailer` unless emberd runs with --no-jail)
//! through [`super::vm`] (spawn → `Ready` → `Init`), adapted to the pool's
//! seam. Kernel-less wasm environments (code compiled by [`crate::aot`] for
//! the guest's CPU, or inline for the interpreter, in `Init`) and Linux
//! environments ([`crate::linux`]: code from a mounted image) share the
//! protocol, the jail and everything after `Init`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::spares::Spares;
use super::{
    AgentError, Code, EnvError, EnvLauncher, EnvSpec, Environment, Fault, FunctionError, InitSpec,
    InvokeOutput, InvokeRequest, JailConfig, LaunchConfig, LaunchError, LogStream, OnSpawn, Report,
    RunningEnv,
};
use crate::linux::{self, LinuxGuests};

/// Launches kernel-less wasm environments, and Linux ones when offered.
pub struct VmLauncher {
    base: LaunchConfig,
    /// Why no environment can start (a binary is missing), if so: emberd
    /// still serves the control plane and answers invokes with this.
    unavailable: Option<String>,
    spares: Option<Arc<Spares>>,
    /// Where VM boot times are recorded.
    metrics: Option<Arc<crate::metrics::Metrics>>,
    linux: Option<Arc<LinuxGuests>>,
    /// MiB of function memory per core of CPU quota (0: no quota).
    mib_per_vcpu: u32,
    /// The wasm compiler (None: wasm functions are interpreted).
    aot: Option<Arc<crate::aot::Aot>>,
    /// Where python3.11 runs, and its kernel-less runtime.
    python: Option<Arc<crate::python::Python>>,
    /// Where wasm functions' layers are read from.
    store: Option<Arc<crate::store::Store>>,
    /// SnapStart snapshots (None: versions always boot + Init).
    vault: Option<Arc<crate::snapstart::vault::Vault>>,
    /// Environments restored ahead of need, per SnapStart version.
    restored: Option<Arc<super::restored::Restored>>,
    /// Jailed VMMs started ahead for cold SnapStart restores.
    pub(super) slots: Option<Arc<super::slots::Slots>>,
}

/// `base` for a function of `memory_mib`: its CPU quota set.
fn with_cpu_quota(base: &LaunchConfig, memory_mib: u32, mib_per_vcpu: u32) -> LaunchConfig {
    let mut cfg = base.clone();
    if let Some(j) = cfg.jail.as_mut() {
        j.cpu_quota_us = super::cpu_quota_us(memory_mib, mib_per_vcpu);
    }
    cfg
}

/// The launch config of a kernel-less VM for `spec`'s function (`base`
/// with its CPU quota and guest memory).
pub(super) fn kernelless_config(
    base: &LaunchConfig,
    mib_per_vcpu: u32,
    spec: &EnvSpec,
) -> LaunchConfig {
    let mut cfg = with_cpu_quota(base, spec.memory_mib, mib_per_vcpu);
    // python3.11's Init carries the compiled interpreter and its stdlib
    // (~30 MB) beside the function's linear-memory reservation.
    cfg.mem_mib = match spec.runtime == crate::python::RUNTIME {
        true => spec
            .memory_mib
            .saturating_add(crate::python::GUEST_OVERHEAD_MIB),
        false => spec.memory_mib,
    };
    cfg
}

/// Lambda's CPU-per-memory rule: 1,769 MB of memory buy one vCPU.
pub const LAMBDA_MIB_PER_VCPU: u32 = 1769;

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
            linux: None,
            mib_per_vcpu: LAMBDA_MIB_PER_VCPU,
            aot: None,
            python: None,
            store: None,
            vault: None,
            restored: None,
            slots: None,
        }
    }

    /// Every jailed VM gets a CPU quota of one core per `mib_per_vcpu` MiB
    /// of function memory (at least half a core; 0 turns quotas off). Call
    /// before [`Self::with_spares`].
    pub fn with_cpu_rule(mut self, mib_per_vcpu: u32) -> Self {
        self.mib_per_vcpu = mib_per_vcpu;
        self
    }

    /// `base` for a function of `memory_mib`: its CPU quota set.
    fn config_for(&self, base: &LaunchConfig, memory_mib: u32) -> LaunchConfig {
        with_cpu_quota(base, memory_mib, self.mib_per_vcpu)
    }

    /// Restores SnapStart versions from the snapshots in `vault`.
    pub fn with_snapstart(mut self, vault: Option<Arc<crate::snapstart::vault::Vault>>) -> Self {
        self.vault = vault;
        self
    }

    /// What restores from this launcher's vault need (None: no vault).
    pub(super) fn restorer(&self) -> Option<super::snapstart::Restorer> {
        Some(super::snapstart::Restorer {
            base: self.base.clone(),
            mib_per_vcpu: self.mib_per_vcpu,
            vault: self.vault.clone()?,
            metrics: self.metrics.clone(),
        })
    }

    /// The launch config of a kernel-less VM for `spec`'s function.
    pub(super) fn config_for_spec(&self, spec: &EnvSpec) -> LaunchConfig {
        kernelless_config(&self.base, self.mib_per_vcpu, spec)
    }

    /// Records each environment's VM boot time (spawn → Ready) in `m`.
    pub fn with_metrics(mut self, m: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(m);
        self
    }

    /// Runs wasm functions compiled ahead of time (`None`: interpreted).
    pub fn with_aot(mut self, aot: Option<Arc<crate::aot::Aot>>) -> Self {
        self.aot = aot;
        self
    }

    /// Runs python3.11 where `python` says, and gives wasm functions their
    /// layers (read from `store`) at `/opt`.
    pub fn with_python(
        mut self,
        python: Arc<crate::python::Python>,
        store: Arc<crate::store::Store>,
    ) -> Self {
        self.python = Some(python);
        self.store = Some(store);
        self
    }

    /// Lets Linux runtimes run (`None`: this host does not offer them).
    pub fn with_linux(mut self, linux: Option<Arc<LinuxGuests>>) -> Self {
        self.linux = linux;
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

    /// Tests only: every VMM gets `--test-hook SPEC` (emberd's hidden
    /// `--vmm-test-hook`; only a `test-hooks` ember-vmm accepts it). Call
    /// before [`Self::with_spares`].
    pub fn with_test_hook(mut self, spec: Option<&str>) -> Self {
        if let Some(spec) = spec {
            eprintln!("emberd: WARNING: --vmm-test-hook {spec}: every ember-vmm gets a test hook. Tests only.");
            self.base
                .extra_args
                .extend(["--test-hook".to_string(), spec.to_string()]);
        }
        self
    }

    /// How long a kernel-less VM may take from spawn to the agent's `Ready`
    /// (also the least time `Init` gets). Call before [`Self::with_spares`].
    pub fn with_boot_timeout(mut self, t: std::time::Duration) -> Self {
        self.base.boot_timeout = t;
        self
    }

    /// Keeps `n` booted spare VMs of `mem_mib` MiB (see [`Spares`]). Call
    /// after [`Self::with_aot`]: the spares tell the compiler their CPU features.
    pub fn with_spares(mut self, n: usize, mem_mib: u32, run_dir: &Path) -> Self {
        if n > 0 && self.unavailable.is_none() {
            let mut cfg = self.config_for(&self.base, mem_mib);
            cfg.mem_mib = mem_mib;
            // The compiler learns the guest's CPU features from the first
            // spare, so code created right after start is compiled for them.
            let on_ready = self.aot.clone().map(|aot| {
                Box::new(move |env: &Environment| {
                    if let Some(f) = crate::aot::guest_features(&env.ready().agent_version) {
                        aot.saw_guest(f);
                    }
                }) as super::spares::OnReady
            });
            self.spares = Some(Spares::start(cfg, n, run_dir, on_ready));
        }
        self
    }

    /// Keeps up to `per_version` environments restored ahead of need for
    /// each SnapStart version that had a cold start (see
    /// [`super::restored`]); call after [`Self::with_snapstart`] and the
    /// jail, CPU rule and boot timeout.
    pub fn with_restored_spares(mut self, per_version: usize, run_dir: &Path) -> Self {
        if per_version > 0 && self.unavailable.is_none() {
            if let Some(r) = self.restorer() {
                self.restored = Some(super::restored::Restored::start(r, per_version, run_dir));
            }
        }
        self
    }

    /// Keeps `n` restore slots (see [`super::slots`]) while SnapStart is in
    /// use; call after [`Self::with_snapstart`], the jail, CPU rule, boot
    /// timeout and metrics.
    pub fn with_restore_slots(mut self, n: usize, run_dir: &Path) -> Self {
        if n == 0 || self.unavailable.is_some() {
            return self;
        }
        if let Some(vault) = self.vault.clone() {
            let mut cfg = self.base.clone();
            // Bound to no function yet: the least memory and CPU; the
            // function's are set when a restore claims the slot.
            cfg.mem_mib = 0;
            if let Some(j) = cfg.jail.as_mut() {
                j.cpu_quota_us = super::cpu_quota_us(0, self.mib_per_vcpu);
            }
            let m = self.metrics.clone();
            self.slots = Some(super::slots::Slots::start(cfg, n, run_dir, vault, m));
        }
        self
    }

    /// The restored spares, if kept (their memory budget is set later).
    pub fn restored_spares(&self) -> Option<Arc<super::restored::Restored>> {
        self.restored.clone()
    }

    pub fn unavailable(&self) -> Option<&str> {
        self.unavailable.as_deref()
    }
}

impl VmLauncher {
    /// What `Init` carries for a wasm function: the artefact compiled for the
    /// CPU features the booted guest announced, or (no compiler, or an old
    /// agent) the module itself for the interpreter.
    fn wasm_code(&self, spec: &EnvSpec, env: &Environment) -> Result<Code, EnvError> {
        let id = if spec.code_blob.is_empty() {
            crate::store::blob::sha256_hex(&spec.code)
        } else {
            spec.code_blob.clone()
        };
        self.compiled(&id, &spec.code, spec.memory_mib, env)
    }

    /// `module` (known to the compiler's caches as `id`) as `Init` carries
    /// it: compiled for the booted guest's CPU, or inline for the interpreter.
    fn compiled(
        &self,
        id: &str,
        module: &Arc<Vec<u8>>,
        memory_mib: u32,
        env: &Environment,
    ) -> Result<Code, EnvError> {
        let inline = || Code::Inline(module.to_vec());
        let Some(aot) = &self.aot else {
            return Ok(inline());
        };
        let Some(features) = crate::aot::guest_features(&env.ready().agent_version) else {
            return Ok(inline());
        };
        aot.saw_guest(features);
        match aot.artefact(id, memory_mib, features, || Ok(module.to_vec())) {
            Ok(a) => Ok(Code::Compiled(a.to_vec())),
            Err(crate::aot::AotError::Compile(message)) => Err(EnvError::Init(
                FunctionError::new("Runtime.InvalidModule", message),
                Vec::new(),
            )),
            Err(e) => Err(EnvError::Launch(LaunchError::Compile(e))),
        }
    }

    /// `Init` for a wasm environment: its code, and its trees (python3.11:
    /// the runtime at `/var/runtime` and the ZIP at `/var/task`; every wasm
    /// function: its layers merged in order at `/opt`).
    pub(super) fn wasm_init(
        &self,
        spec: &EnvSpec,
        env: &Environment,
    ) -> Result<InitSpec, EnvError> {
        let mut init = if spec.runtime == crate::python::RUNTIME {
            let rt = self
                .python
                .as_ref()
                .and_then(|p| p.wasm.clone())
                .ok_or_else(|| {
                    EnvError::Launch(LaunchError::Unavailable(
                        "python3.11 for the kernel-less guest is not installed on this host".into(),
                    ))
                })?;
            let code = self.compiled(&rt.code_id, &rt.reactor, spec.memory_mib, env)?;
            let mut init = spec.init_spec(code);
            init.trees = rt.trees(&spec.code);
            init.env =
                crate::python::init_env(&spec.function_name, &spec.function_version, &init.env);
            init
        } else {
            spec.init_spec(self.wasm_code(spec, env)?)
        };
        init.trees.extend(self.layer_trees(&spec.layers)?);
        Ok(init)
    }

    /// The layer ZIPs of `arns`, in order, as trees at `/opt`.
    fn layer_trees(&self, arns: &[String]) -> Result<Vec<ember_abi::protocol::Tree>, EnvError> {
        if arns.is_empty() {
            return Ok(Vec::new());
        }
        let store = self.store.as_ref().ok_or_else(|| {
            EnvError::Launch(LaunchError::Unavailable("no store for layers".into()))
        })?;
        let blobs = crate::catalog::layer_blobs(store, arns)
            .map_err(|e| EnvError::Launch(LaunchError::Layers(e)))?;
        blobs
            .iter()
            .map(|b| {
                let archive = store
                    .read_blob(b)
                    .map_err(|e| EnvError::Launch(LaunchError::CodeBlob(e)))?;
                Ok(ember_abi::protocol::Tree {
                    mount: "/opt".into(),
                    archive,
                })
            })
            .collect()
    }

    /// Whether `spec` runs in a Linux guest (python3.11: as [`crate::python`] decides).
    pub(super) fn runs_on_linux(&self, spec: &EnvSpec) -> bool {
        match &self.python {
            Some(p) if spec.runtime == crate::python::RUNTIME => {
                let native = crate::python::native_extensions(&spec.code);
                p.choose(&native) == Ok(crate::python::Guest::Linux)
            }
            _ => linux::is_linux_runtime(&spec.runtime),
        }
    }

    /// A booted kernel-less VM: a spare of the right size, or a new one.
    fn launch_wasm(&self, spec: &EnvSpec, on_spawn: &OnSpawn) -> Result<Environment, EnvError> {
        let mut cfg = self.config_for_spec(spec);
        cfg.work_root = spec.work_dir.clone();
        let spare = self
            .spares
            .as_ref()
            .filter(|s| s.mem_mib() == cfg.mem_mib)
            .and_then(|s| s.take());
        match spare {
            Some(env) => {
                // It left the spare stock's pid file: the pool's takes it over.
                on_spawn.call(env.pid());
                Ok(env)
            }
            None => Environment::launch_with(&cfg, on_spawn)
                .map_err(|e| EnvError::Launch(LaunchError::Agent(e))),
        }
    }

    /// A booted Linux VM with the function's images attached (spares are
    /// kernel-less, so Linux environments always boot on demand).
    fn launch_linux(
        &self,
        spec: &EnvSpec,
        on_spawn: &OnSpawn,
    ) -> Result<(Environment, InitSpec), EnvError> {
        let l = self
            .linux
            .as_ref()
            .ok_or_else(|| EnvError::Launch(LaunchError::NoLinux(spec.runtime.clone())))?;
        let drives = l
            .drives(spec)
            .map_err(|e| EnvError::Launch(LaunchError::Images(e)))?;
        let base = self.config_for(&self.base, spec.memory_mib);
        let cfg = super::linux::launch_config(&base, l.found(), spec, &drives);
        let env = Environment::launch_with(&cfg, on_spawn).map_err(|agent| {
            let console = super::last_log_line(&spec.work_dir.join("console.log"));
            EnvError::Launch(LaunchError::LinuxBoot { agent, console })
        })?;
        Ok((env, super::linux::init_spec(spec)))
    }
}

impl EnvLauncher for VmLauncher {
    fn close(&self) {
        if let Some(s) = &self.spares {
            s.close();
        }
        if let Some(l) = &self.linux {
            l.close();
        }
        if let Some(r) = &self.restored {
            r.close();
        }
        if let Some(s) = &self.slots {
            s.close();
        }
    }

    fn take_snapshot(&self, spec: &EnvSpec, out_dir: &Path) -> Result<(), EnvError> {
        if let Some(why) = &self.unavailable {
            return Err(EnvError::Launch(LaunchError::Unavailable(why.clone())));
        }
        self.snapshot_into(spec, out_dir)
    }

    fn launch(&self, spec: &EnvSpec, on_spawn: &OnSpawn) -> Result<Box<dyn RunningEnv>, EnvError> {
        if let Some(why) = &self.unavailable {
            return Err(EnvError::Launch(LaunchError::Unavailable(why.clone())));
        }
        if let Some(key) = &spec.snapshot {
            let spare = self.restored.as_ref().and_then(|r| r.take(key, spec));
            if let Some((env, restore)) = spare {
                // It left the spares' pid file: the pool's takes it over.
                on_spawn.call(env.pid());
                if let Some(m) = &self.metrics {
                    m.snapstart_spare_taken();
                }
                return Ok(self.restored_env(env, restore, spec));
            }
            match self.restore(spec, key, on_spawn) {
                Ok(env) => {
                    let restore = env.launch_time();
                    return Ok(self.restored_env(env, restore, spec));
                }
                Err(super::snapstart::RestoreError::Hook) => {
                    return Err(EnvError::Restore(
                        "The afterRestore() runtime hook encountered an error. For more information, check the function's logs.".into(),
                    ))
                }
                Err(e) => {
                    if let Some(m) = &self.metrics {
                        m.snapstart_restore_failed();
                    }
                    let kind = match &e {
                        super::snapstart::RestoreError::Vault(v) if v.is_integrity() => {
                            "integrity error: "
                        }
                        _ => "",
                    };
                    eprintln!(
                        "emberd: ERROR: SnapStart restore of {}:{} failed ({kind}{}); booting the environment instead",
                        key.function,
                        key.version,
                        crate::util::error_chain(&e)
                    );
                }
            }
        }
        let (mut env, init) = if self.runs_on_linux(spec) {
            self.launch_linux(spec, on_spawn)?
        } else {
            let env = self.launch_wasm(spec, on_spawn)?;
            let init = self.wasm_init(spec, &env)?;
            (env, init)
        };
        // A spare's boot happened earlier; it is counted when it is used.
        if let Some(m) = &self.metrics {
            m.vmm_booted(env.launch_time());
        }
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
                    timeout_ms: spec.timeout_ms,
                    init_us: Some(report.init_us),
                    restore_us: None,
                    init_logs: log_lines(report.logs.lines).collect(),
                }))
            }
            Err(AgentError::InitFailed { error, logs, .. }) => {
                Err(EnvError::Init(error, log_lines(logs.lines).collect()))
            }
            Err(e) => Err(EnvError::Died(Fault::Agent(e))),
        }
    }
}

impl VmLauncher {
    /// A restored environment as the pool's (its restore counted).
    fn restored_env(
        &self,
        env: Environment,
        restore: std::time::Duration,
        spec: &EnvSpec,
    ) -> Box<dyn RunningEnv> {
        if let Some(m) = &self.metrics {
            m.snapstart_restored(restore);
        }
        Box::new(VmEnv {
            env,
            timeout_ms: spec.timeout_ms,
            init_us: None,
            restore_us: Some(restore.as_micros() as u64),
            init_logs: Vec::new(),
        })
    }
}

struct VmEnv {
    env: Environment,
    /// The function's timeout, for the message of a host-side timeout.
    timeout_ms: u32,
    /// Init phase duration, reported with the first invocation.
    init_us: Option<u64>,
    /// SnapStart restore duration, reported with the first invocation.
    restore_us: Option<u64>,
    /// What the function printed during init, logged before the first
    /// invocation's `START`.
    init_logs: Vec<String>,
}

/// The lines worth logging: not the agent's empty keep-alive lines, and
/// not its own `START`/`END`/`REPORT` lines (the Linux agent prints them;
/// emberd frames every invocation itself, `logs::frame`, with the init
/// duration the agent cannot know: kept, they doubled every line and hid
/// `Init Duration` behind the agent's REPORT).
pub(super) fn log_lines(lines: Vec<super::LogLine>) -> impl Iterator<Item = String> {
    lines
        .into_iter()
        .filter(|l| l.stream != LogStream::Agent || !(l.line.is_empty() || platform_line(&l.line)))
        .map(|l| l.line)
}

/// Lambda's platform lines, which emberd writes itself.
fn platform_line(line: &str) -> bool {
    ["START RequestId: ", "END RequestId: ", "REPORT RequestId: "]
        .iter()
        .any(|p| line.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::LogLine;

    #[test]
    fn the_agents_platform_lines_and_keepalives_are_dropped_the_functions_kept() {
        let line = |stream, s: &str| LogLine {
            stream,
            line: s.to_string(),
        };
        let lines = vec![
            line(LogStream::Agent, "START RequestId: r1 Version: $LATEST"),
            line(LogStream::Stdout, "py got r1"),
            line(LogStream::Agent, ""),
            line(
                LogStream::Stdout,
                "REPORT RequestId: printed by the function",
            ),
            line(
                LogStream::Agent,
                "2026-12-07T00:00:00.000Z r1 Task timed out after 3.00 seconds",
            ),
            line(LogStream::Agent, "END RequestId: r1"),
            line(LogStream::Agent, "REPORT RequestId: r1\tDuration: 1.00 ms"),
        ];
        assert_eq!(
            log_lines(lines).collect::<Vec<_>>(),
            [
                "py got r1",
                "REPORT RequestId: printed by the function",
                "2026-12-07T00:00:00.000Z r1 Task timed out after 3.00 seconds",
            ]
        );
    }
}

impl RunningEnv for VmEnv {
    fn invoke(&mut self, req: &InvokeRequest) -> Result<InvokeOutput, EnvError> {
        let inv = match self.env.invoke(req) {
            Ok(inv) => inv,
            // The host's deadline fired (the agent ignored its own, or
            // trickled its answer): Lambda's timeout, and a new environment.
            Err(AgentError::Timeout) => {
                let timeout = std::time::Duration::from_millis(self.timeout_ms.into());
                return Ok(InvokeOutput::timed_out(timeout));
            }
            Err(e) => return Err(EnvError::Died(Fault::Agent(e))),
        };
        let mut logs = std::mem::take(&mut self.init_logs);
        // A restored environment's after-restore hook lines come here.
        logs.extend(log_lines(inv.init_phase.lines));
        let init_log_lines = logs.len();
        logs.extend(log_lines(inv.logs.lines));
        let report = Report {
            duration_us: Some(inv.duration_us),
            max_memory_kib: Some(inv.max_memory_kib),
            init_us: self.init_us.take(),
            restore_us: self.restore_us.take(),
            init_log_lines,
        };
        Ok(InvokeOutput {
            result: inv.result,
            logs,
            report,
        })
    }

    fn deadline_grace(&self) -> std::time::Duration {
        self.env.deadline_grace()
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
        crate::procfs::running(self.env.pid())
    }

    fn shutdown(self: Box<Self>) {
        self.env.shutdown();
    }
}

//! The VMM side of the API: a [`Controller`] holds the configuration being
//! built before boot and the running [`Vm`] after `InstanceStart`, applies
//! one [`Action`] at a time with Firecracker's rules for what is allowed
//! before and after boot, and answers with a [`Reply`] or an
//! [`ActionError`]. It knows nothing of HTTP (the server turns both into
//! responses).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vmm_sys_util::eventfd::EventFd;

use super::metrics::ApiMetrics;
use super::request::{
    Action, BackendType, BootSource, MachineConfig, MachineConfigPatch, SnapshotCreate,
    SnapshotLoad, SnapshotType,
};
use crate::config::{ConfigError, ConsoleConfig, LoggerConfig, VmConfig, MAX_VCPUS};
use crate::device_manager::{block, entropy, net, vsock};
use crate::devices::DeviceError;
use crate::exit::VmExit;
use crate::logger::{self, error_line, Level};
use crate::memory::{MAX_MEM_MIB, MIN_MEM_MIB};
use crate::snapshot::{self, LoadParams, MemBackend};
use crate::vm::{Vm, VmError};

/// How long pausing or resuming the vCPUs may take.
const VCPU_CONTROL_TIMEOUT: Duration = Duration::from_secs(1);

/// A successful answer.
#[derive(Debug, PartialEq)]
pub enum Reply {
    /// 204.
    Empty,
    /// 200 with this body.
    Json(Value),
}

/// Why an action was refused (the `fault_message` of a 400).
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("The requested operation is not supported after starting the microVM.")]
    NotSupportedPostBoot,
    #[error("The requested operation is not supported before starting the microVM.")]
    NotSupportedPreBoot,
    /// A feature of Firecracker's API that ember-vmm does not have.
    #[error("ember-vmm does not support {0}.")]
    Unsupported(String),
    #[error("Cannot start microvm without kernel configuration.")]
    MissingKernel,
    #[error("The vCPU number is invalid: it must be between 1 and {MAX_VCPUS}, and 1 or even with SMT enabled.")]
    VcpuCount,
    #[error(
        "The memory size (MiB) is invalid: it must be between {MIN_MEM_MIB} and {MAX_MEM_MIB}."
    )]
    MemorySize,
    #[error("{0}")]
    Device(#[from] DeviceError),
    #[error("{0}")]
    Config(String),
    #[error("Cannot start the microVM: {0}")]
    Start(String),
    #[error("Cannot {0} the microVM: {1}")]
    VmState(&'static str, String),
    #[error("Cannot open {0}: {1}")]
    Open(&'static str, String),
    #[error("{0}")]
    Logger(String),
    #[error("Snapshot: {0}")]
    Snapshot(String),
    #[error("Failed to send CTRL+ALT+DEL: {0}")]
    CtrlAltDel(#[source] ember_devices::legacy::i8042::I8042Error),
}

enum Phase {
    NotStarted,
    Running { vm: Box<Vm>, paused: bool },
}

/// The VM behind one API socket, before and after boot.
pub struct Controller {
    config: VmConfig,
    id: String,
    /// Process start (the boot timer counts from it).
    start: Instant,
    phase: Phase,
    logger: Option<Value>,
    metrics: ApiMetrics,
    /// A boot-specific resource was configured (a snapshot load is then refused).
    configured: bool,
}

impl Controller {
    /// A controller for VM `id` with a starting configuration (the config
    /// file's, or the defaults).
    pub fn new(config: VmConfig, id: String, start: Instant) -> Controller {
        Controller {
            config,
            id,
            start,
            phase: Phase::NotStarted,
            logger: None,
            metrics: ApiMetrics::default(),
            configured: false,
        }
    }

    /// Opens the config file's metrics file (`metrics` section), if any.
    pub fn open_config_metrics(&mut self) -> Result<(), ActionError> {
        match self.config.metrics_path.clone() {
            Some(p) => self
                .metrics
                .open(&p.display().to_string())
                .map_err(|e| ActionError::Open("the metrics file", e)),
            None => Ok(()),
        }
    }

    /// The running VM's stop event (readable once it ended), if it runs.
    pub fn stop_event(&self) -> Option<&EventFd> {
        match &self.phase {
            Phase::Running { vm, .. } => Some(vm.stop_event()),
            Phase::NotStarted => None,
        }
    }

    /// After the stop event fired: how the VM ended, the VM stopped.
    pub fn finish(&mut self) -> Option<VmExit> {
        let Phase::Running { vm, .. } = &mut self.phase else {
            return None;
        };
        let exit = vm.wait();
        vm.stop();
        let _ = self.metrics.flush();
        Some(exit)
    }

    /// Periodic metrics flush (Firecracker writes them every 60 s).
    pub fn flush_metrics(&mut self) {
        if let Err(e) = self.metrics.flush() {
            crate::log_warn!("cannot write metrics: {e}");
        }
    }

    fn booted(&self) -> bool {
        matches!(self.phase, Phase::Running { .. })
    }

    fn state_name(&self) -> &'static str {
        match self.phase {
            Phase::NotStarted => "Not started",
            Phase::Running { paused: false, .. } => "Running",
            Phase::Running { paused: true, .. } => "Paused",
        }
    }

    /// Applies one action.
    pub fn handle(&mut self, action: Action) -> Result<Reply, ActionError> {
        self.metrics.count(&action);
        let result = self.apply(action);
        if result.is_err() {
            self.metrics.failed();
        }
        result
    }

    fn apply(&mut self, action: Action) -> Result<Reply, ActionError> {
        // Boot-specific resources (a snapshot load is refused after them).
        let configures = matches!(
            action,
            Action::PutBootSource(_)
                | Action::PutMachineConfig(_)
                | Action::PatchMachineConfig(_)
                | Action::PutDrive(_)
                | Action::PutNet(_)
                | Action::PutVsock(_)
        );
        let result = self.apply_inner(action);
        if result.is_ok() && configures {
            self.configured = true;
        }
        result
    }

    fn apply_inner(&mut self, action: Action) -> Result<Reply, ActionError> {
        use Action::*;
        let pre_boot_only = matches!(
            action,
            PutBootSource(_)
                | PutMachineConfig(_)
                | PatchMachineConfig(_)
                | PutDrive(_)
                | PutNet(_)
                | PutVsock(_)
                | PutLogger(_)
                | PutMetrics(_)
                | PutSerial(_)
                | PutEntropy(_)
                | InstanceStart
                | LoadSnapshot(_)
        );
        let post_boot_only = matches!(
            action,
            PatchDrive(_)
                | PatchNet(_)
                | Pause
                | Resume
                | SendCtrlAltDel
                | FlushMetrics
                | CreateSnapshot(_)
        );
        if pre_boot_only && self.booted() {
            return Err(ActionError::NotSupportedPostBoot);
        }
        if post_boot_only && !self.booted() {
            return Err(ActionError::NotSupportedPreBoot);
        }

        match action {
            DescribeInstance => Ok(Reply::Json(json!({
                "id": self.id,
                "state": self.state_name(),
                "vmm_version": env!("CARGO_PKG_VERSION"),
                "app_name": "ember-vmm",
            }))),
            GetVersion => Ok(Reply::Json(
                json!({ "firecracker_version": env!("CARGO_PKG_VERSION") }),
            )),
            GetMachineConfig => Ok(Reply::Json(self.machine_json())),
            GetFullConfig => Ok(Reply::Json(self.full_config())),
            PutBootSource(b) => self.boot_source(b),
            PutMachineConfig(m) => self.machine_config(m),
            PatchMachineConfig(p) => self.patch_machine_config(p),
            PutDrive(v) => self.put_list_entry(block::NAME, "drive_id", v),
            PutNet(v) => self.put_list_entry(net::NAME, "iface_id", v),
            PutVsock(v) => {
                vsock::parse(&v)?;
                self.config.devices.insert(vsock::NAME.into(), v);
                Ok(Reply::Empty)
            }
            PatchDrive(_) => Err(unsupported("updating a drive after boot")),
            PatchNet(_) => Err(unsupported("updating a network interface after boot")),
            PutLogger(l) => self.put_logger(l),
            PutMetrics(m) => {
                self.metrics
                    .open(&m.metrics_path)
                    .map_err(|e| ActionError::Open("the metrics file", e))?;
                Ok(Reply::Empty)
            }
            PutSerial(s) => {
                if s.rate_limiter.is_some() {
                    return Err(unsupported("a serial rate_limiter"));
                }
                if let Some(p) = s.serial_out_path {
                    self.config.console = ConsoleConfig::File(PathBuf::from(p));
                }
                Ok(Reply::Empty)
            }
            PutEntropy(v) => {
                entropy::parse(&v)?;
                self.config.devices.insert(entropy::NAME.into(), v);
                Ok(Reply::Empty)
            }
            InstanceStart => self.instance_start(),
            SendCtrlAltDel => self.send_ctrl_alt_del(),
            FlushMetrics => {
                self.metrics
                    .flush()
                    .map_err(|e| ActionError::Open("the metrics file", e.to_string()))?;
                Ok(Reply::Empty)
            }
            Pause => self.set_paused(true),
            Resume => self.set_paused(false),
            CreateSnapshot(c) => self.create_snapshot(c),
            LoadSnapshot(l) => self.load_snapshot(l),
            Unsupported(what) => Err(unsupported(what)),
        }
    }

    fn machine_json(&self) -> Value {
        json!({
            "vcpu_count": self.config.vcpus,
            "mem_size_mib": self.config.mem_mib,
            "smt": self.config.smt,
            "track_dirty_pages": self.config.track_dirty_pages,
            "huge_pages": "None",
        })
    }

    fn full_config(&self) -> Value {
        let c = &self.config;
        let list = |name: &str| c.devices.get(name).cloned().unwrap_or_else(|| json!([]));
        let boot = (!c.kernel.as_os_str().is_empty()).then(|| {
            json!({
                "kernel_image_path": c.kernel.display().to_string(),
                "initrd_path": c.initrd.as_ref().map(|p| p.display().to_string()),
                "boot_args": c.cmdline,
            })
        });
        json!({
            "balloon": null,
            "drives": list(block::NAME),
            "boot-source": boot,
            "cpu-config": null,
            "logger": self.logger,
            "machine-config": self.machine_json(),
            "metrics": self.metrics.path().map(|p| json!({ "metrics_path": p })),
            "memory-hotplug": null,
            "mmds-config": null,
            "network-interfaces": list(net::NAME),
            "pmem": [],
            "vsock": c.devices.get(vsock::NAME),
            "entropy": c.devices.get(entropy::NAME),
        })
    }

    fn boot_source(&mut self, b: BootSource) -> Result<Reply, ActionError> {
        if b.kernel_image_path.is_empty() {
            return Err(ActionError::MissingKernel);
        }
        self.config.kernel = b.kernel_image_path.into();
        self.config.initrd = b.initrd_path.map(PathBuf::from);
        self.config.cmdline = b.boot_args;
        Ok(Reply::Empty)
    }

    fn machine_config(&mut self, m: MachineConfig) -> Result<Reply, ActionError> {
        self.patch_machine_config(MachineConfigPatch {
            vcpu_count: Some(m.vcpu_count),
            mem_size_mib: Some(m.mem_size_mib),
            smt: Some(m.smt),
            track_dirty_pages: Some(m.track_dirty_pages),
            cpu_template: m.cpu_template,
            huge_pages: m.huge_pages,
        })
    }

    fn patch_machine_config(&mut self, p: MachineConfigPatch) -> Result<Reply, ActionError> {
        if p.huge_pages.as_deref().is_some_and(|h| h != "None") {
            return Err(unsupported("huge_pages"));
        }
        if p.cpu_template.as_deref().is_some_and(|t| t != "None") {
            return Err(unsupported("CPU templates (cpu_template)"));
        }
        let vcpus = p.vcpu_count.unwrap_or(self.config.vcpus);
        let mem = p.mem_size_mib.unwrap_or(self.config.mem_mib);
        let smt = p.smt.unwrap_or(self.config.smt);
        if !(1..=MAX_VCPUS).contains(&vcpus) || (smt && vcpus > 1 && vcpus % 2 == 1) {
            return Err(ActionError::VcpuCount);
        }
        if !(MIN_MEM_MIB..=MAX_MEM_MIB).contains(&mem) {
            return Err(ActionError::MemorySize);
        }
        self.config.vcpus = vcpus;
        self.config.mem_mib = mem;
        self.config.smt = smt;
        if let Some(t) = p.track_dirty_pages {
            self.config.track_dirty_pages = t;
        }
        Ok(Reply::Empty)
    }

    /// `PUT /drives/{id}` and `PUT /network-interfaces/{id}`: adds the entry,
    /// or replaces the one with the same id; the whole list is checked.
    fn put_list_entry(
        &mut self,
        section: &'static str,
        id_field: &str,
        entry: Value,
    ) -> Result<Reply, ActionError> {
        let id = entry.get(id_field).cloned();
        let mut list = match self.config.devices.get(section) {
            Some(Value::Array(a)) => a.clone(),
            _ => Vec::new(),
        };
        match list
            .iter_mut()
            .find(|e| id.is_some() && e.get(id_field) == id.as_ref())
        {
            Some(old) => *old = entry,
            None => list.push(entry),
        }
        let list = Value::Array(list);
        match section {
            block::NAME => drop(block::parse(&list)?),
            _ => drop(net::parse(&list)?),
        }
        self.config.devices.insert(section.into(), list);
        Ok(Reply::Empty)
    }

    fn put_logger(&mut self, l: LoggerConfig) -> Result<Reply, ActionError> {
        let level = match l.level.as_deref() {
            Some(s) => Level::parse(s)
                .ok_or_else(|| ActionError::Logger(format!("Invalid log level: {s}")))?,
            None => Level::Info,
        };
        if l.module.is_some() {
            return Err(unsupported("logger module filters"));
        }
        if logger::initialized() {
            return Err(ActionError::Logger(
                "The logger was already initialized (--log-path or an earlier PUT /logger).".into(),
            ));
        }
        logger::init(level, l.log_path.as_deref(), &self.id)
            .map_err(|e| ActionError::Open("the log file", e.to_string()))?;
        self.logger = Some(json!({
            "log_path": l.log_path,
            "level": l.level,
            "show_level": l.show_level.unwrap_or(false),
            "show_log_origin": l.show_log_origin.unwrap_or(false),
        }));
        Ok(Reply::Empty)
    }

    /// Builds and starts the VM from the configuration so far.
    pub fn instance_start(&mut self) -> Result<Reply, ActionError> {
        if self.booted() {
            return Err(ActionError::NotSupportedPostBoot);
        }
        let valid = self.config.validate().map_err(|e| match e {
            ConfigError::NoKernel => ActionError::MissingKernel,
            other => ActionError::Config(error_line(&other)),
        })?;
        let mut vm =
            Vm::build(&valid, self.start).map_err(|e| ActionError::Start(error_line(&e)))?;
        vm.start()
            .map_err(|e: VmError| ActionError::Start(error_line(&e)))?;
        self.phase = Phase::Running {
            vm: Box::new(vm),
            paused: false,
        };
        Ok(Reply::Empty)
    }

    /// `PUT /snapshot/create`: a full snapshot of the paused VM
    /// (`snapshot::create`).
    fn create_snapshot(&mut self, c: SnapshotCreate) -> Result<Reply, ActionError> {
        let kind = match c.snapshot_type {
            Some(SnapshotType::Diff) => snapshot::SnapshotType::Diff,
            _ => snapshot::SnapshotType::Full,
        };
        let Phase::Running { vm, paused } = &self.phase else {
            return Err(ActionError::NotSupportedPreBoot);
        };
        if !paused {
            return Err(ActionError::Snapshot(
                "the microVM must be paused (PATCH /vm Paused) first".into(),
            ));
        }
        let report = snapshot::create_typed(
            vm,
            Path::new(&c.snapshot_path),
            Path::new(&c.mem_file_path),
            kind,
        )
        .map_err(|e| ActionError::Snapshot(error_line(&e)))?;
        crate::log_info!(
            "snapshot created in {} us: state {} bytes, memory data {} bytes",
            report.elapsed.as_micros(),
            report.state_bytes,
            report.memory_data_bytes
        );
        Ok(Reply::Empty)
    }

    /// `PUT /snapshot/load`: only on a fresh VMM (nothing configured but
    /// logger and metrics), memory from a file (`File` backend or
    /// `mem_file_path`) or a page-fault handler (`Uffd`); running at once
    /// with `resume_vm: true`, else paused until `PATCH /vm Resumed`.
    fn load_snapshot(&mut self, l: SnapshotLoad) -> Result<Reply, ActionError> {
        if self.configured {
            return Err(ActionError::Snapshot(
                "Loading a microVM snapshot not allowed after configuring boot-specific resources."
                    .into(),
            ));
        }
        let (mem_path, backend) = match (&l.mem_file_path, &l.mem_backend) {
            (Some(p), None) => (p.clone(), MemBackend::File),
            (None, Some(b)) => (
                b.backend_path.clone(),
                match b.backend_type {
                    BackendType::File => MemBackend::File,
                    BackendType::Uffd => MemBackend::Uffd,
                },
            ),
            _ => {
                return Err(ActionError::Snapshot(
                    "exactly one of mem_backend and mem_file_path must be given".into(),
                ))
            }
        };
        if l.network_overrides.as_ref().is_some_and(|n| !n.is_empty()) {
            return Err(unsupported("network_overrides on snapshot load"));
        }
        if l.clock_realtime == Some(true) {
            return Err(unsupported("clock_realtime"));
        }
        let params = LoadParams {
            state_path: PathBuf::from(&l.snapshot_path),
            mem_path: PathBuf::from(mem_path),
            backend,
            console: self.config.console.clone(),
            timeout_ms: None,
            track_dirty_pages: l.track_dirty_pages == Some(true)
                || l.enable_diff_snapshots == Some(true),
            vsock_uds_override: l.vsock_override.map(|v| PathBuf::from(v.uds_path)),
        };
        let mut vm = snapshot::load(&params, self.start)
            .map_err(|e| ActionError::Snapshot(error_line(&e)))?;
        // Firecracker's default is a paused load: `PATCH /vm Resumed` runs it.
        let resume = l.resume_vm == Some(true);
        if resume {
            vm.start()
        } else {
            vm.start_paused(VCPU_CONTROL_TIMEOUT)
        }
        .map_err(|e| ActionError::Start(error_line(&e)))?;
        // GET /vm/config now describes the restored VM (its vCPUs, memory,
        // devices); as in Firecracker, the boot source stays empty.
        self.config = VmConfig {
            kernel: PathBuf::new(),
            initrd: None,
            cmdline: None,
            ..vm.config.clone()
        };
        self.phase = Phase::Running {
            vm: Box::new(vm),
            paused: !resume,
        };
        Ok(Reply::Empty)
    }

    /// `SendCtrlAltDel`: the key sequence through the i8042 (x86_64, after
    /// boot; the guest decides what it means).
    fn send_ctrl_alt_del(&mut self) -> Result<Reply, ActionError> {
        let Phase::Running { vm, .. } = &self.phase else {
            return Err(ActionError::NotSupportedPreBoot);
        };
        vm.send_ctrl_alt_del().map_err(ActionError::CtrlAltDel)?;
        Ok(Reply::Empty)
    }

    fn set_paused(&mut self, pause: bool) -> Result<Reply, ActionError> {
        let Phase::Running { vm, paused } = &mut self.phase else {
            return Err(ActionError::NotSupportedPreBoot);
        };
        if *paused == pause {
            return Ok(Reply::Empty);
        }
        let (verb, r) = if pause {
            ("pause", vm.pause(VCPU_CONTROL_TIMEOUT))
        } else {
            ("resume", vm.resume(VCPU_CONTROL_TIMEOUT))
        };
        r.map_err(|e| ActionError::VmState(verb, error_line(&e)))?;
        *paused = pause;
        Ok(Reply::Empty)
    }
}

fn unsupported(what: &str) -> ActionError {
    ActionError::Unsupported(what.to_string())
}

//! The [`Vm`] object: built from a [`ValidConfig`] (KVM VM and guest
//! memory, legacy devices on the port-I/O and MMIO buses, the device
//! manager's devices, the guest image, the vCPUs), then started (one thread
//! per vCPU and the event loop), paused and resumed, waited for until the
//! first [`VmExit`], and stopped. DESIGN.md "Boot sequence" lists the steps.

use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ember_devices::bus::{Bus, BusError};
use ember_devices::legacy::{boot_timer, i8042, serial, BootTimer, Console, SerialDevice, I8042};
use ember_devices::virtio::VirtioDevice;
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::abi_ports::Doorbell;
use crate::boot::kernelless::{self, KernellessError};
use crate::boot::linux::{self, LinuxBootError};
use crate::config::{ConsoleConfig, ValidConfig, VmConfig};
use crate::device_manager::VirtioSlot;
use crate::devices::{self, DeviceContext, DeviceError, EventMgr};
use crate::exit::{ExitNotifier, StopState, VmExit};
use crate::host::{self, HostKvm};
use crate::memory::{self, MemoryError};
use crate::panic_watch::PanicWatch;
use crate::phases::Phases;
use crate::snapshot::{self, Restore, RestoreError, SaveError, VcpuState};
use crate::vcpu::{VcpuEvent, VcpuHandle, VcpuResponse};
use crate::{event_loop, log_debug, log_info, log_warn};

mod irq;
mod vcpus;

use irq::{create_irqchip, irq_line, serial_irq};
use vcpus::{create_vcpus, start_vcpus, stop_vcpus, wait_for_exit};

/// Why a VM could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot open /dev/kvm")]
    Kvm(#[source] kvm_ioctls::Error),
    #[error("KVM: {0}")]
    KvmCall(&'static str, #[source] kvm_ioctls::Error),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Kernelless(#[from] KernellessError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error("device bus")]
    Bus(#[from] BusError),
    #[error("{0}")]
    Io(&'static str, #[source] std::io::Error),
    #[error(transparent)]
    Linux(#[from] LinuxBootError),
    #[error("kernel-less guests take no initrd")]
    InitrdForKernelless,
    #[error("cannot {0}: {1}")]
    State(&'static str, &'static str),
    #[error("vCPU {0} did not answer {1:?} in time")]
    VcpuUnresponsive(u8, VcpuResponse),
    #[error("cannot save vCPU {0}")]
    SaveVcpu(u8, #[source] SaveError),
    #[error("cannot restore the snapshot")]
    Restore(#[from] RestoreError),
}

/// Default command line for Linux guests (Firecracker's, minus what ember
/// does not emulate).
const DEFAULT_LINUX_CMDLINE: &str =
    "console=ttyS0 reboot=k panic=1 pci=off i8042.noaux i8042.nomux i8042.dumbkbd";

/// What was loaded: how the vCPUs start.
enum Guest {
    Kernelless(kernelless::Image),
    Linux(linux::LinuxEntry),
    /// A kernel-less guest loaded from a snapshot: its saved vCPU states.
    Snapshot(Vec<VcpuState>),
}

/// Where a VM's memory and vCPU state come from.
pub(crate) enum Origin {
    /// A fresh boot of the configured image.
    Boot,
    /// A snapshot being loaded (`snapshot::load`).
    Snapshot(Restore),
}

/// A built VM: KVM VM, guest memory, devices on their buses, the guest
/// loaded, its vCPUs created. [`Vm::start`] runs it; then [`Vm::pause`] and
/// [`Vm::resume`] hold and release every vCPU, [`Vm::wait`] blocks until the
/// VM ends, and [`Vm::stop`] stops every thread and flushes the console.
/// This is the object a snapshot or an API socket holds.
pub struct Vm {
    /// Keeps the VM (and its memory registration) alive with the vCPUs.
    _vm: VmFd,
    mem: GuestMemoryMmap,
    exits: ExitNotifier,
    exit_rx: Receiver<VmExit>,
    doorbell: Doorbell,
    pio: Bus,
    mmio: Bus,
    serial: Arc<Mutex<SerialDevice>>,
    /// The keyboard controller (`SendCtrlAltDel` types into it).
    i8042: Arc<Mutex<I8042>>,
    panics: PanicWatch,
    timeout_ms: Option<u64>,
    start: Instant,
    /// Where building and starting took its time.
    phases: Phases,
    state: State,
    /// Every virtio device with its transport (snapshots lock and save them).
    virtio_slots: Vec<VirtioSlot>,
    /// What the VM was built from, and whether it is kernel-less (snapshots
    /// save both).
    pub(crate) config: VmConfig,
    pub(crate) kernelless: bool,
}

/// Where a VM is in its life.
enum State {
    /// Built; the event manager and vCPU fds wait for [`Vm::start`].
    Built {
        em: EventMgr,
        virtio: Vec<Arc<Mutex<dyn VirtioDevice>>>,
        fds: Vec<VcpuFd>,
    },
    /// Threads running (or paused).
    Running {
        vcpus: Vec<VcpuHandle>,
        drained: Receiver<()>,
    },
    /// Stopped (or failed to start): nothing left to run.
    Stopped,
}

impl Vm {
    /// Builds the VM described by a validated config (steps 3-8 of the boot
    /// sequence). `start` is the process start (for the boot timer).
    pub fn build(valid: &ValidConfig, start: Instant) -> Result<Vm, VmError> {
        Self::build_from(valid, start, Origin::Boot)
    }

    /// [`Vm::build`], with memory and vCPU state from `origin`.
    pub(crate) fn build_from(
        valid: &ValidConfig,
        start: Instant,
        origin: Origin,
    ) -> Result<Vm, VmError> {
        let cfg = &valid.config;
        let mut restore = match origin {
            Origin::Boot => None,
            Origin::Snapshot(r) => Some(r),
        };
        let mut phases = match &mut restore {
            Some(r) => std::mem::replace(&mut r.phases, Phases::new(start)),
            None => Phases::new(start),
        };
        let host = host::detect();
        log_debug!("host: {}", host.describe());
        phases.mark("host_detect");
        let is_kernelless =
            restore.is_some() || cfg.force_kernelless || kernelless::is_kernelless(&cfg.kernel)?;
        if is_kernelless && cfg.initrd.is_some() {
            return Err(VmError::InitrdForKernelless);
        }
        if !is_kernelless && host == HostKvm::Pvm {
            log_warn!("{}", host::PVM_LINUX_WARNING);
        }
        let console = match &cfg.console {
            ConsoleConfig::Stdout => Console::Stdout,
            ConsoleConfig::Off => Console::Off,
            ConsoleConfig::File(p) => {
                Console::file(p).map_err(|e| VmError::Io("cannot open the console file", e))?
            }
        };

        let kvm = Kvm::new().map_err(VmError::Kvm)?;
        let vm = kvm
            .create_vm()
            .map_err(|e| VmError::KvmCall("create VM", e))?;
        phases.mark("kvm_create_vm");
        let mem = match &restore {
            Some(r) => r.memory.clone(),
            None => memory::create(cfg.mem_mib)?,
        };
        // KVM_SET_USER_MEMORY_REGION waits for an SRCU grace period: about
        // 0.05-0.1 ms, several ms when the host is loaded (the `memory`
        // step of `phases`). Registering on another thread while the vCPUs
        // are created and restored was tried and measured worse (1-4 ms
        // typical): the vCPU ioctls are SRCU readers the grace period waits
        // out, probably. So it stays here, before any vCPU exists.
        memory::register(&vm, &mem, cfg.track_dirty_pages)?;
        phases.mark("memory");
        // Kernel-less guests take no interrupts: no irqchip, no PIT.
        let irqchip = !is_kernelless;
        if irqchip {
            create_irqchip(&vm)?;
        }

        let stop = StopState::new().map_err(|e| VmError::Io("eventfd", e))?;
        let (exits, exit_rx) = ExitNotifier::new(stop);
        let doorbell = Doorbell::new().map_err(|e| VmError::Io("eventfd", e))?;
        let mut pio = Bus::new();
        let mut mmio = Bus::new();
        // A Linux guest's panic shows only on its console (panic_watch.rs).
        let panics = PanicWatch::default();
        let serial_irq = serial_irq(&vm, irqchip)?;
        let serial = Arc::new(Mutex::new(match &restore {
            Some(r) => SerialDevice::from_state(console, serial_irq, &r.serial)
                .map_err(RestoreError::Serial)?,
            None if is_kernelless => SerialDevice::new(console, serial_irq),
            None => SerialDevice::watched(console, serial_irq, panics.line_watch(exits.clone())),
        }));
        pio.insert(serial::COM1_BASE, serial::COM1_LEN, serial.clone())?;
        let reset = exits.clone();
        let kbd_irq = irq_line(&vm, irqchip, i8042::KBD_IRQ, "register keyboard irqfd")?;
        let i8042_dev = Arc::new(Mutex::new(I8042::with_irq(
            Box::new(move || reset.notify(VmExit::Reset)),
            kbd_irq,
        )));
        pio.insert(i8042::I8042_BASE, i8042::I8042_LEN, i8042_dev.clone())?;
        if cfg.boot_timer {
            let timer =
                BootTimer::new(start, Box::new(|us| log_info!("Guest-boot-time = {us} us")));
            mmio.insert(
                boot_timer::BOOT_TIMER_ADDR,
                boot_timer::BOOT_TIMER_LEN,
                Arc::new(Mutex::new(timer)),
            )?;
        }

        phases.mark("legacy_devices");
        let mut em = EventMgr::new()
            .map_err(|e| VmError::Io("event manager", std::io::Error::other(format!("{e:?}"))))?;
        let mut ctx = DeviceContext::new(
            &vm,
            &mem,
            &mut mmio,
            &mut pio,
            &mut em,
            &doorbell,
            irqchip,
            is_kernelless,
        );
        ctx.restore = restore
            .as_mut()
            .map(|r| std::mem::take(&mut r.virtio).into());
        devices::attach_all(&mut ctx, &valid.devices)?;
        let devices::Attached {
            mmio_devices,
            virtio_devices,
            slots,
            linux_cmdline: linux_devices,
        } = ctx.into_attached()?;
        phases.mark("virtio_devices");

        let vcpu_count = cfg.vcpu_count();
        let guest = if let Some(r) = restore {
            Guest::Snapshot(r.vcpus)
        } else if is_kernelless {
            Guest::Kernelless(kernelless::load(
                &mem,
                &cfg.kernel,
                cfg.mem_mib << 20,
                vcpu_count,
            )?)
        } else {
            let cmdline = format!(
                "{}{linux_devices}",
                cfg.cmdline.as_deref().unwrap_or(DEFAULT_LINUX_CMDLINE)
            );
            let boot = linux::LinuxBootConfig {
                kernel: &cfg.kernel,
                initrd: cfg.initrd.as_deref(),
                cmdline: &cmdline,
                vcpu_count,
            };
            let entry = linux::load(&vm, &mem, &boot)?;
            log_debug!("Linux: {entry}");
            Guest::Linux(entry)
        };
        phases.mark("guest_image");
        let fds = create_vcpus(&kvm, &vm, &guest, vcpu_count)?;
        phases.mark("vcpus");
        match &guest {
            Guest::Kernelless(image) => image.write_start_info(
                &mem,
                &fds[0],
                cfg.cmdline.as_deref().unwrap_or(""),
                &mmio_devices,
            )?,
            Guest::Snapshot(_) => snapshot::renew_start_info(&mem, &fds[0], cfg, &mmio_devices)?,
            Guest::Linux(_) => {}
        }
        phases.mark("start_info");
        Ok(Vm {
            _vm: vm,
            mem,
            exits,
            exit_rx,
            doorbell,
            pio,
            mmio,
            serial,
            i8042: i8042_dev,
            panics,
            timeout_ms: cfg.timeout_ms,
            start,
            phases,
            state: State::Built {
                em,
                virtio: virtio_devices,
                fds,
            },
            virtio_slots: slots,
            config: cfg.clone(),
            kernelless: is_kernelless,
        })
    }

    /// Starts the VM (step 9): Landlock, then the event loop and one thread
    /// per vCPU; the calling thread enters its own seccomp filter last.
    pub fn start(&mut self) -> Result<(), VmError> {
        self.start_with(false)
    }

    /// [`Vm::start`] with every vCPU paused before its first guest
    /// instruction (a snapshot loaded with `resume_vm: false`); returns once
    /// all of them answered, or an error after `timeout`. [`Vm::resume`]
    /// lets them run.
    pub fn start_paused(&mut self, timeout: Duration) -> Result<(), VmError> {
        self.start_with(true)?;
        let State::Running { vcpus, .. } = &self.state else {
            return Err(VmError::State("start paused", "the VM did not start"));
        };
        let deadline = Instant::now() + timeout;
        for h in vcpus {
            let left = deadline.saturating_duration_since(Instant::now());
            if h.response(left) != Some(VcpuResponse::Paused) {
                return Err(VmError::VcpuUnresponsive(h.index, VcpuResponse::Paused));
            }
        }
        Ok(())
    }

    fn start_with(&mut self, paused: bool) -> Result<(), VmError> {
        let State::Built { em, virtio, fds } = std::mem::replace(&mut self.state, State::Stopped)
        else {
            return Err(VmError::State("start", "the VM was already started"));
        };
        // Everything the VM needs is open: Landlock before the first thread.
        crate::sandbox::restrict_filesystem(&crate::sandbox::writable_dirs()).map_err(|e| {
            VmError::Io(
                "cannot apply the Landlock sandbox",
                std::io::Error::other(e),
            )
        })?;
        self.phases.mark("landlock");
        let drained = event_loop::start(em, self.exits.clone(), virtio)
            .map_err(|e| VmError::Io("cannot start the event loop", e))?;
        self.phases.mark("event_loop_thread");
        let vcpus = start_vcpus(
            fds,
            &self.pio,
            &self.mmio,
            &self.exits,
            &self.doorbell,
            paused,
        )?;
        self.phases.mark("vcpu_threads");
        self.state = State::Running { vcpus, drained };
        log_debug!(
            "VM built and started at {} us",
            self.start.elapsed().as_micros()
        );
        crate::sandbox::enter_or_exit(crate::sandbox::ThreadKind::Main);
        Ok(())
    }

    /// Where building and starting took its time so far: the marks of
    /// [`Vm::build`] (and of `snapshot::load` before it) and [`Vm::start`],
    /// then the first KVM_RUN and the first exit once they happened.
    pub fn phases(&self) -> Phases {
        let mut p = self.phases.clone();
        let state = self.exits.state();
        if let Some(at) = state.first_run.get() {
            p.mark_at("first_kvm_run", *at);
        }
        if let Some(at) = state.exited_at.get() {
            p.mark_at("exit_reported", *at);
        }
        p.sort();
        p
    }

    /// Becomes (and stays) readable once the VM ends: for an owner that
    /// polls other sources too (the API thread's jobs) before [`Vm::wait`].
    pub fn stop_event(&self) -> &EventFd {
        &self.exits.state().stop_evt
    }

    /// The guest's memory.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// Every virtio device with its transport, in attach order.
    pub(crate) fn virtio_slots(&self) -> &[VirtioSlot] {
        &self.virtio_slots
    }

    /// Types Ctrl+Alt+Del on the keyboard controller (Firecracker's
    /// `SendCtrlAltDel`): a Linux guest with the i8042 and atkbd drivers
    /// reboots (or signals its init), and `reboot=k` ends the VM.
    pub fn send_ctrl_alt_del(&self) -> Result<(), i8042::I8042Error> {
        self.i8042
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .trigger_ctrl_alt_del()
    }

    /// Holds every vCPU outside the guest until [`Vm::resume`]. Devices
    /// keep serving their host side. A vCPU inside an ABI wait answers
    /// when the wait ends; one that does not answer within `timeout` is an
    /// error (the others stay paused).
    pub fn pause(&self, timeout: Duration) -> Result<(), VmError> {
        self.control(VcpuEvent::Pause, VcpuResponse::Paused, timeout)
    }

    /// The registers of every vCPU of a paused VM, in index order.
    pub(crate) fn save_vcpus(&self, timeout: Duration) -> Result<Vec<VcpuState>, VmError> {
        let State::Running { vcpus, .. } = &self.state else {
            return Err(VmError::State("save the vCPUs", "the VM is not running"));
        };
        let mut states = Vec::with_capacity(vcpus.len());
        for h in vcpus {
            let (tx, rx) = std::sync::mpsc::channel();
            h.send(VcpuEvent::Save(tx));
            match rx.recv_timeout(timeout) {
                Ok(Ok(s)) => states.push(s),
                Ok(Err(e)) => return Err(VmError::SaveVcpu(h.index, e)),
                Err(_) => return Err(VmError::VcpuUnresponsive(h.index, VcpuResponse::Paused)),
            }
        }
        Ok(states)
    }

    /// Per memory region (slot), the bitmap of pages the guest wrote since
    /// the last call (or since the VM was built); clears the log. Needs
    /// `track_dirty_pages`.
    pub(crate) fn dirty_log(&self) -> Result<Vec<Vec<u64>>, VmError> {
        use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
        self.mem
            .iter()
            .enumerate()
            .map(|(slot, r)| {
                self._vm
                    .get_dirty_log(slot as u32, r.len() as usize)
                    .map_err(|e| VmError::KvmCall("get the dirty log", e))
            })
            .collect()
    }

    /// The console UART's registers.
    pub(crate) fn serial_state(&self) -> ember_devices::legacy::serial::SerialState {
        match self.serial.lock() {
            Ok(s) => s.state(),
            Err(poisoned) => poisoned.into_inner().state(),
        }
    }

    /// Lets paused vCPUs run the guest again.
    pub fn resume(&self, timeout: Duration) -> Result<(), VmError> {
        self.control(VcpuEvent::Resume, VcpuResponse::Resumed, timeout)
    }

    fn control(
        &self,
        event: VcpuEvent,
        want: VcpuResponse,
        timeout: Duration,
    ) -> Result<(), VmError> {
        let State::Running { vcpus, .. } = &self.state else {
            return Err(VmError::State("pause or resume", "the VM is not running"));
        };
        for h in vcpus {
            h.send(event.clone());
        }
        let deadline = Instant::now() + timeout;
        for h in vcpus {
            let left = deadline.saturating_duration_since(Instant::now());
            if h.response(left) != Some(want) {
                return Err(VmError::VcpuUnresponsive(h.index, want));
            }
        }
        Ok(())
    }

    /// Blocks until the VM ends (the first [`VmExit`] reported, or
    /// `--timeout-ms` after this call) and returns how.
    pub fn wait(&self) -> VmExit {
        let exit = self
            .panics
            .explain(wait_for_exit(&self.exits, &self.exit_rx, self.timeout_ms));
        log_debug!("VM exit at {} us", self.start.elapsed().as_micros());
        exit
    }

    /// Stops the VM: every vCPU leaves KVM_RUN and its thread ends (bounded
    /// by [`vcpus::STOP_GRACE`]), the event loop delivers what the guest sent
    /// before it stopped (bounded), and the console is flushed. Stopping a
    /// VM that still runs reports [`VmExit::Stopped`] to [`Vm::wait`].
    pub fn stop(&mut self) {
        self.exits.notify(VmExit::Stopped);
        let State::Running { vcpus, drained } = std::mem::replace(&mut self.state, State::Stopped)
        else {
            return;
        };
        stop_vcpus(&vcpus);
        log_debug!("vCPUs stopped at {} us", self.start.elapsed().as_micros());
        let _ = drained.recv_timeout(event_loop::DRAIN_GRACE + Duration::from_millis(100));
        // try_lock: a vCPU that never stopped may hold the console (blocked on a
        // full pipe nobody reads); its output is then lost, never waited for.
        if let Ok(mut console) = self.serial.try_lock() {
            console.flush();
        }
    }
}

impl Drop for Vm {
    /// A VM dropped while it runs is stopped first, so no vCPU thread keeps
    /// running a guest nobody holds.
    fn drop(&mut self) {
        self.stop();
    }
}

/// Builds the VM described by a validated config, runs it until it ends and
/// stops it. `start` is the process start (for the boot timer).
pub fn run(cfg: &ValidConfig, start: Instant) -> Result<VmExit, VmError> {
    let mut vm = Vm::build(cfg, start)?;
    vm.start()?;
    let exit = vm.wait();
    vm.stop();
    Ok(exit)
}

#[cfg(test)]
mod tests {
    //! In-process boots of tiny hand-assembled kernel-less guests: the whole
    //! VM core (memory, CPL3 entry, buses, ABI ports, exits) without the
    //! guest workspace. Needs /dev/kvm.
    use super::*;
    use crate::boot::elf::tests::{build_with_code, temp_file};
    use crate::config::VmConfig;
    use vm_memory::{Bytes, GuestAddress};

    fn boot(code: &[u8], tag: &str, vcpus: u64, timeout_ms: Option<u64>) -> VmExit {
        let (_, path) = temp_file(&build_with_code(Some((b"EMBER", 1)), code), tag);
        let cfg = VmConfig {
            kernel: path.clone(),
            vcpus,
            mem_mib: 16,
            console: ConsoleConfig::Off,
            timeout_ms,
            ..VmConfig::default()
        };
        let exit = run(&cfg.validate().unwrap(), Instant::now());
        std::fs::remove_file(path).unwrap();
        exit.unwrap()
    }

    #[test]
    fn exit_port_code_and_secondary_vcpus_park() {
        // test esi,esi; jz L; mov dx,0xf6; out dx,al (park); L: mov al,42; out 0xf4,al; jmp $
        let code = [
            0x85, 0xf6, 0x74, 0x05, 0x66, 0xba, 0xf6, 0x00, 0xee, 0xb0, 0x2a, 0xe6, 0xf4, 0xeb,
            0xfe,
        ];
        assert_eq!(boot(&code, "vm-exit", 1, Some(10_000)), VmExit::Guest(42));
        assert_eq!(boot(&code, "vm-exit4", 4, Some(10_000)), VmExit::Guest(42));
    }

    #[test]
    fn invalid_opcode_is_a_crash_at_its_rip() {
        // nop; ud2
        match boot(&[0x90, 0x0f, 0x0b], "vm-ud2", 1, Some(10_000)) {
            VmExit::Crash {
                vcpu: 0,
                rip,
                reason,
            } => {
                assert_eq!(rip, Some(0x40_0001), "{reason}");
                assert!(reason.contains("KVM_EXIT_SHUTDOWN"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn i8042_reset_stops_the_vm() {
        // mov al,0xfe; out 0x64,al; jmp $
        assert_eq!(
            boot(
                &[0xb0, 0xfe, 0xe6, 0x64, 0xeb, 0xfe],
                "vm-reset",
                1,
                Some(10_000)
            ),
            VmExit::Reset
        );
        assert_eq!(VmExit::Reset.exit_code().code(), 0);
    }

    #[test]
    fn endless_loop_ends_with_the_timeout() {
        assert_eq!(
            boot(&[0xeb, 0xfe], "vm-spin", 2, Some(200)),
            VmExit::Timeout(200)
        );
    }

    /// A started VM running `L: inc rax; mov [rsp],rax; jmp L` (a counter in
    /// its vCPU's stack, the top MiB of its 16 MiB).
    fn counting_vm(tag: &str) -> Vm {
        let code = [0x48, 0xff, 0xc0, 0x48, 0x89, 0x04, 0x24, 0xeb, 0xf7];
        let (_, path) = temp_file(&build_with_code(Some((b"EMBER", 1)), &code), tag);
        let cfg = VmConfig {
            kernel: path.clone(),
            mem_mib: 16,
            console: ConsoleConfig::Off,
            ..VmConfig::default()
        };
        let mut vm = Vm::build(&cfg.validate().unwrap(), Instant::now()).unwrap();
        std::fs::remove_file(path).unwrap();
        assert!(matches!(
            vm.pause(Duration::from_secs(1)),
            Err(VmError::State(..))
        ));
        vm.start().unwrap();
        assert!(grows(vm.memory(), 0), "the guest never ran");
        vm
    }

    /// The counter: nothing else writes the stack's MiB.
    fn counter(mem: &GuestMemoryMmap) -> u64 {
        (((16 << 20) - (1 << 20))..(16 << 20))
            .step_by(8)
            .filter_map(|a| mem.read_obj::<u64>(GuestAddress(a)).ok())
            .max()
            .unwrap_or(0)
    }

    /// Whether the counter passes `from` within 5 s.
    fn grows(mem: &GuestMemoryMmap, from: u64) -> bool {
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if counter(mem) > from {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn pause_holds_the_vcpus_and_resume_lets_them_run() {
        let mut vm = counting_vm("vm-pause");
        vm.pause(Duration::from_secs(2)).unwrap();
        let held = counter(vm.memory());
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(counter(vm.memory()), held, "a paused vCPU ran");
        vm.resume(Duration::from_secs(2)).unwrap();
        assert!(grows(vm.memory(), held), "the resumed guest never ran");
        assert!(matches!(vm.start(), Err(VmError::State(..))));
        vm.stop();
        assert_eq!(vm.wait(), VmExit::Stopped);
    }

    #[test]
    fn dropping_a_running_vm_stops_its_vcpus() {
        let vm = counting_vm("vm-drop");
        let mem = vm.memory().clone();
        drop(vm);
        let left = counter(&mem);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(counter(&mem), left, "a vCPU of a dropped VM still runs");
    }

    #[test]
    fn wait_with_timeout_returns_to_the_guest() {
        // mov eax,2000; mov dx,0xf5; out dx,eax (wait 2 ms); mov al,7; out 0xf4,al; jmp $
        let code = [
            0xb8, 0xd0, 0x07, 0x00, 0x00, 0x66, 0xba, 0xf5, 0x00, 0xef, 0xb0, 0x07, 0xe6, 0xf4,
            0xeb, 0xfe,
        ];
        assert_eq!(boot(&code, "vm-wait", 1, Some(10_000)), VmExit::Guest(7));
    }
}

//! One thread per vCPU: runs KVM_RUN, sends every port-I/O and MMIO exit to the
//! buses, turns faults into a [`VmExit::Crash`] report, and obeys typed control
//! messages ([`VcpuEvent`]) delivered with a kick: a real-time signal whose
//! handler sets `kvm_run.immediate_exit`, so the vCPU leaves (or never enters)
//! KVM_RUN and reads its messages, and a ring of the vCPU's kick bell, which
//! ends a sleep in the ABI ports even when the signal came just before it.

use std::cell::Cell;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Once;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ember_devices::bus::Bus;
use kvm_bindings::kvm_run;
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::abi_ports::Doorbell;
use crate::exit::{ExitNotifier, VmExit};
use crate::snapshot::vcpu_state::{SaveError, VcpuState};

/// Messages to a vCPU thread. `Pause`/`Resume` serve snapshots and an API;
/// the command-line VMM only stops. `Save` is answered only while paused
/// (a running vCPU's registers change under the reader).
#[derive(Debug, Clone)]
pub enum VcpuEvent {
    Pause,
    Resume,
    Stop,
    Save(Sender<Result<VcpuState, SaveError>>),
}

/// Replies from a vCPU thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuResponse {
    Paused,
    Resumed,
    Stopped,
}

thread_local! {
    /// This thread's kvm_run page, for the kick signal handler.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // try_with: never panic in a signal handler (the TLS may be gone at exit).
    let _ = KVM_RUN.try_with(|run| {
        let run = run.get();
        if !run.is_null() {
            // SAFETY: the pointer is this thread's live kvm_run mapping (set in
            // `Vcpu::run`, cleared before the VcpuFd is dropped); a byte store is
            // async-signal-safe.
            unsafe { std::ptr::write_volatile(&mut (*run).immediate_exit, 1) };
        }
    });
}

/// Installs the kick handler once per process.
fn install_kick_handler() -> std::io::Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = register_signal_handler(SIGRTMIN(), kick_handler).map_err(std::io::Error::from);
    });
    result
}

/// A vCPU ready to run on its own thread.
pub struct Vcpu {
    pub index: u8,
    pub fd: VcpuFd,
    /// This vCPU's port bus (shared devices plus its own ABI ports).
    pub pio: Bus,
    pub mmio: Bus,
    pub exits: ExitNotifier,
    /// Rung with every control message; the ABI ports' sleeps watch it.
    pub kick: Doorbell,
}

/// The main thread's handle on a running vCPU.
pub struct VcpuHandle {
    pub index: u8,
    events: Sender<VcpuEvent>,
    responses: Receiver<VcpuResponse>,
    kick: Doorbell,
    thread: JoinHandle<()>,
}

impl VcpuHandle {
    /// Sends `event` and kicks the vCPU out of KVM_RUN (or out of a wait/park).
    pub fn send(&self, event: VcpuEvent) {
        // A vCPU that has already stopped has dropped its receiver: nothing to do.
        if self.events.send(event).is_ok() {
            // Bell first: a vCPU between reading its messages and sleeping
            // in an ABI port would sleep through the signal, not the bell.
            let _ = self.kick.ring();
            let _ = self.thread.kill(SIGRTMIN());
        }
    }

    /// The next reply, if one comes within `timeout`.
    pub fn response(&self, timeout: Duration) -> Option<VcpuResponse> {
        match self.responses.recv_timeout(timeout) {
            Ok(r) => Some(r),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
        }
    }
}

enum Next {
    Continue,
    Exit(VmExit),
}

impl Vcpu {
    /// Starts the vCPU thread; `paused`: it answers `Paused` before running
    /// any guest instruction and waits for `Resume`.
    pub fn start(self, paused: bool) -> std::io::Result<VcpuHandle> {
        install_kick_handler()?;
        let (events_tx, events_rx) = mpsc::channel();
        if paused {
            // Queued before the thread exists: its first look at the channel
            // comes before its first KVM_RUN.
            let _ = events_tx.send(VcpuEvent::Pause);
        }
        let (resp_tx, resp_rx) = mpsc::channel();
        let index = self.index;
        let kick = self.kick.clone();
        let thread = std::thread::Builder::new()
            .name(format!("vcpu{index}"))
            .stack_size(256 * 1024)
            .spawn(move || self.run(events_rx, resp_tx))?;
        Ok(VcpuHandle {
            index,
            events: events_tx,
            responses: resp_rx,
            kick,
            thread,
        })
    }

    fn run(mut self, events: Receiver<VcpuEvent>, responses: Sender<VcpuResponse>) {
        crate::sandbox::enter_or_exit(crate::sandbox::ThreadKind::Vcpu);
        KVM_RUN.with(|run| run.set(self.fd.get_kvm_run() as *mut kvm_run));
        let _ = self.exits.state().first_run.set(Instant::now());
        loop {
            let event = if self.exits.state().is_stopping() {
                // The VM is over: wait for the main thread's Stop.
                events.recv().ok().or(Some(VcpuEvent::Stop))
            } else {
                events.try_recv().ok()
            };
            if let Some(event) = event {
                if !self.control(event, &events, &responses) {
                    break;
                }
                // The rings of the messages just read; a message sent after
                // this is found by the next look at the channel.
                self.kick.clear();
                continue;
            }
            match self.run_once() {
                Next::Continue => {}
                Next::Exit(exit) => self.exits.notify(exit),
            }
        }
        KVM_RUN.with(|run| run.set(std::ptr::null_mut()));
        let _ = responses.send(VcpuResponse::Stopped);
    }

    /// Handles one control message; false means "stop the thread".
    fn control(
        &mut self,
        mut event: VcpuEvent,
        events: &Receiver<VcpuEvent>,
        responses: &Sender<VcpuResponse>,
    ) -> bool {
        loop {
            match event {
                VcpuEvent::Stop => return false,
                VcpuEvent::Resume => {
                    let _ = responses.send(VcpuResponse::Resumed);
                    return true;
                }
                VcpuEvent::Pause => {
                    self.complete_pending_exit();
                    let _ = responses.send(VcpuResponse::Paused);
                    event = events.recv().unwrap_or(VcpuEvent::Stop);
                    while let VcpuEvent::Save(reply) = event {
                        let _ = reply.send(VcpuState::save(&self.fd));
                        event = events.recv().unwrap_or(VcpuEvent::Stop);
                    }
                }
                VcpuEvent::Save(reply) => {
                    let _ = reply.send(Err(SaveError::Running(self.index)));
                    return true;
                }
            }
        }
    }

    /// Finishes the port-I/O or MMIO exit just handled: KVM completes it
    /// (advancing RIP past the `out`, storing an `in`'s value) only on the
    /// next KVM_RUN. With `immediate_exit` set that KVM_RUN runs no guest
    /// instruction, so a paused vCPU's registers are a consistent state
    /// (KVM API, "KVM_RUN ... immediate_exit").
    fn complete_pending_exit(&mut self) {
        self.fd.set_kvm_immediate_exit(1);
        let _ = self.fd.run();
        self.fd.set_kvm_immediate_exit(0);
    }

    fn run_once(&mut self) -> Next {
        let index = self.index;
        match self.fd.run() {
            Ok(VcpuExit::IoIn(port, data)) => {
                if !self.pio.read(port as u64, data) {
                    data.fill(0xff);
                }
                Next::Continue
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                self.pio.write(port as u64, data);
                Next::Continue
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                if !self.mmio.read(addr, data) {
                    data.fill(0);
                }
                Next::Continue
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                self.mmio.write(addr, data);
                Next::Continue
            }
            Ok(VcpuExit::Intr) => Next::Continue,
            Ok(VcpuExit::SystemEvent(kind, _)) => match kind {
                kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => Next::Exit(VmExit::Shutdown),
                kvm_bindings::KVM_SYSTEM_EVENT_RESET => Next::Exit(VmExit::Reset),
                other => self.crash(format!("system event {other} (KVM_EXIT_SYSTEM_EVENT)")),
            },
            Ok(VcpuExit::Shutdown) => self.crash("triple fault (KVM_EXIT_SHUTDOWN)".into()),
            Ok(VcpuExit::Hlt) => {
                self.crash("halted with no interrupt to wake it (KVM_EXIT_HLT)".into())
            }
            Ok(VcpuExit::FailEntry(reason, _)) => self.crash(format!(
                "VM entry failed, hardware reason {reason:#x} (KVM_EXIT_FAIL_ENTRY)"
            )),
            Ok(VcpuExit::InternalError) => {
                // SAFETY: exit_reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the live union member.
                let sub = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal.suberror };
                self.crash(format!(
                    "KVM internal error, suberror {sub} (KVM_EXIT_INTERNAL_ERROR)"
                ))
            }
            Ok(VcpuExit::MemoryFault { gpa, size, .. }) => self.crash(format!(
                "memory fault at {gpa:#x}+{size:#x} (KVM_EXIT_MEMORY_FAULT)"
            )),
            Ok(other) => {
                let what = format!("unexpected exit {other:?}");
                self.crash(what)
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                // Kicked: clear the flag, then read the control messages.
                self.fd.set_kvm_immediate_exit(0);
                Next::Continue
            }
            Err(e) => Next::Exit(VmExit::Error(format!("vCPU {index}: KVM_RUN failed: {e}"))),
        }
    }

    fn crash(&self, reason: String) -> Next {
        let regs = self.fd.get_regs().ok();
        if let Some(r) = &regs {
            crate::log_debug!(
                "vCPU {}: rflags {:#x} rsp {:#x} rax {:#x}",
                self.index,
                r.rflags,
                r.rsp,
                r.rax
            );
        }
        let cr2 = self.fd.get_sregs().map(|s| s.cr2).unwrap_or(0);
        let reason = if cr2 != 0 {
            format!("{reason}, CR2 {cr2:#x}")
        } else {
            reason
        };
        Next::Exit(VmExit::Crash {
            vcpu: self.index,
            reason,
            rip: regs.map(|r| r.rip),
        })
    }
}

//! How a VM ends: the [`VmExit`] reasons and the [`ExitNotifier`] that devices
//! and vCPU threads use to report the first one. The first report wins; it
//! marks the VM as stopping (vCPUs stop re-entering the guest) and wakes every
//! vCPU blocked in the wait/park ports.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::Instant;

use ember_abi::exit::ExitCode;
use vmm_sys_util::eventfd::EventFd;

/// Why a VM stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The guest wrote this code to the exit port.
    Guest(u32),
    /// The guest asked for a reset (i8042 or a KVM system event).
    Reset,
    /// The guest powered off (KVM system event).
    Shutdown,
    /// The guest crashed: fault, triple fault, emulation failure.
    Crash {
        vcpu: u8,
        reason: String,
        rip: Option<u64>,
    },
    /// The guest kernel panicked (its console's `Kernel panic - not syncing`
    /// line; see panic_watch.rs).
    Panic(String),
    /// The VMM failed while running the guest.
    Error(String),
    /// `--timeout-ms` passed before the guest ended.
    Timeout(u64),
    /// The VM's owner stopped it (`Vm::stop`) before the guest ended.
    Stopped,
}

impl VmExit {
    /// The process exit code for this exit (see DESIGN.md, "Exit codes").
    pub fn exit_code(&self) -> ExitCode {
        match self {
            VmExit::Guest(code) => ExitCode::Guest((*code & 0xff) as u8),
            VmExit::Reset | VmExit::Shutdown | VmExit::Stopped => ExitCode::Guest(0),
            VmExit::Crash { .. } | VmExit::Panic(_) => ExitCode::GuestCrash,
            VmExit::Error(_) => ExitCode::VmmError,
            VmExit::Timeout(_) => ExitCode::Timeout,
        }
    }
}

/// VM-wide stop state shared by the exit notifier, vCPUs and the event loop.
pub struct StopState {
    stopping: AtomicBool,
    /// Becomes (and stays) readable once the VM stops; never drained.
    pub stop_evt: EventFd,
    /// When a vCPU first entered KVM_RUN, and when the first exit was
    /// reported ([`crate::phases`]).
    pub first_run: OnceLock<Instant>,
    pub exited_at: OnceLock<Instant>,
}

impl StopState {
    /// A running VM's state.
    pub fn new() -> std::io::Result<Arc<StopState>> {
        Ok(Arc::new(StopState {
            stopping: AtomicBool::new(false),
            stop_evt: EventFd::new(libc::EFD_NONBLOCK)?,
            first_run: OnceLock::new(),
            exited_at: OnceLock::new(),
        }))
    }

    /// Whether the VM is stopping.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

/// Reports VM exits to the main thread. Cheap to clone.
#[derive(Clone)]
pub struct ExitNotifier {
    state: Arc<StopState>,
    tx: mpsc::Sender<VmExit>,
}

impl ExitNotifier {
    /// A notifier and the receiver the main thread waits on.
    pub fn new(state: Arc<StopState>) -> (ExitNotifier, mpsc::Receiver<VmExit>) {
        let (tx, rx) = mpsc::channel();
        (ExitNotifier { state, tx }, rx)
    }

    /// Reports `exit`, unless another exit was reported first.
    pub fn notify(&self, exit: VmExit) {
        if self.state.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self.state.exited_at.set(Instant::now());
        // Wake vCPUs blocked in wait/park; failure only delays them until
        // their kick signal.
        let _ = self.state.stop_evt.write(1);
        // The receiver lives in main until the process exits.
        let _ = self.tx.send(exit);
    }

    /// The shared stop state.
    pub fn state(&self) -> &Arc<StopState> {
        &self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_exit_wins_and_stops_the_vm() {
        let state = StopState::new().unwrap();
        let (n, rx) = ExitNotifier::new(state.clone());
        assert!(!state.is_stopping());
        n.notify(VmExit::Guest(300));
        n.clone().notify(VmExit::Reset);
        assert!(state.is_stopping());
        assert_eq!(state.stop_evt.read().unwrap(), 1);
        assert_eq!(rx.try_recv().unwrap().exit_code().code(), 300 & 0xff);
        assert!(rx.try_recv().is_err());
    }
}

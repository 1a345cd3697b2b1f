//! Notices a Linux guest's kernel panic on its serial console, so a panic ends
//! ember-vmm as a guest crash (exit 125, DESIGN.md "Exit codes") instead of
//! looking like the clean reboot that `panic=N` turns it into. The console is
//! the only place Linux reports a panic here (no pvpanic device, no ACPI).
//! The first `Kernel panic - not syncing: ...` line is kept; the exit the
//! panic then causes (reset, shutdown, triple fault) is reported as the panic,
//! and a kernel that hangs after panicking (`panic=0`) is stopped when it
//! prints the panic's closing `---[ end Kernel panic` line. A guest that
//! prints the line itself only ends its own VM, as it could by any crash.

use std::sync::{Arc, Mutex};

use ember_devices::legacy::LineWatch;

use crate::exit::{ExitNotifier, VmExit};

const PANIC: &str = "Kernel panic - not syncing";
const END: &str = "---[ end Kernel panic";

/// The panic message seen so far, shared by the console watch and the VM builder.
#[derive(Clone, Default)]
pub struct PanicWatch {
    seen: Arc<Mutex<Option<String>>>,
}

impl PanicWatch {
    /// The serial console's line watch: records the panic line, and ends the
    /// VM at the panic's closing line (a kernel told to hang, `panic=0`).
    pub fn line_watch(&self, exits: ExitNotifier) -> LineWatch {
        let seen = self.seen.clone();
        Box::new(move |line: &[u8]| {
            let text = String::from_utf8_lossy(line);
            // The closing line also holds PANIC: test it first.
            if text.contains(END) {
                let reason = seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .unwrap_or_else(|| text.trim().to_string());
                exits.notify(VmExit::Panic(reason));
            } else if let Some(at) = text.find(PANIC) {
                let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                if s.is_none() {
                    *s = Some(text[at..].trim_end().to_string());
                }
            }
        })
    }

    /// `exit`, or the panic if the guest panicked before it ended this way.
    pub fn explain(&self, exit: VmExit) -> VmExit {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match (seen, exit) {
            (Some(msg), VmExit::Reset | VmExit::Shutdown | VmExit::Crash { .. }) => {
                VmExit::Panic(msg)
            }
            (_, exit) => exit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::StopState;

    fn feed(w: &mut LineWatch, lines: &[&str]) {
        for l in lines {
            w(l.as_bytes());
        }
    }

    #[test]
    fn a_panic_then_reboot_is_reported_as_the_panic() {
        let (exits, rx) = ExitNotifier::new(StopState::new().unwrap());
        let pw = PanicWatch::default();
        let mut w = pw.line_watch(exits);
        feed(
            &mut w,
            &[
                "[    1.0] Run /init as init process",
                "[    1.2] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100",
                "[    1.2] CPU: 0 PID: 1 Comm: init Not tainted 6.1.0 #1",
            ],
        );
        assert!(
            rx.try_recv().is_err(),
            "the reboot ends the VM, not the line"
        );
        let exit = pw.explain(VmExit::Reset);
        assert_eq!(
            exit,
            VmExit::Panic(
                "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100".into()
            )
        );
        assert_eq!(exit.exit_code(), ember_abi::exit::ExitCode::GuestCrash);
    }

    #[test]
    fn a_hanging_panic_ends_the_vm_at_its_end_line() {
        let (exits, rx) = ExitNotifier::new(StopState::new().unwrap());
        let pw = PanicWatch::default();
        let mut w = pw.line_watch(exits);
        feed(
            &mut w,
            &[
                "Kernel panic - not syncing: VFS: Unable to mount root fs",
                "---[ end Kernel panic - not syncing: VFS: Unable to mount root fs ]---",
            ],
        );
        assert_eq!(
            rx.try_recv().unwrap(),
            VmExit::Panic("Kernel panic - not syncing: VFS: Unable to mount root fs".into())
        );
    }

    #[test]
    fn without_a_panic_exits_are_unchanged() {
        let (exits, _rx) = ExitNotifier::new(StopState::new().unwrap());
        let pw = PanicWatch::default();
        let mut w = pw.line_watch(exits);
        feed(
            &mut w,
            &[
                "reboot: Restarting system",
                "kernel panic (lower case is not Linux's line)",
            ],
        );
        assert_eq!(pw.explain(VmExit::Reset), VmExit::Reset);
        assert_eq!(pw.explain(VmExit::Guest(3)), VmExit::Guest(3));
    }
}

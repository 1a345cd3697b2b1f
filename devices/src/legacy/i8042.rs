//! The i8042 keyboard controller, only as far as Linux's `reboot=k` needs: the
//! "pulse reset line" command (0xFE to port 0x64) calls the VMM's reset hook.
//! Reads return 0 (no data, input buffer empty), so the guest never waits.

use crate::bus::BusDevice;

/// First port of the controller (data port 0x60); the window covers 0x60..=0x64.
pub const I8042_BASE: u64 = 0x60;
/// Length of the port window.
pub const I8042_LEN: u64 = 5;
/// Command register offset (port 0x64) within the window.
const COMMAND_OFFSET: u64 = 4;
/// "Pulse output line 0" = CPU reset.
const CMD_RESET_CPU: u8 = 0xfe;

/// The controller; `on_reset` runs each time the guest asks for a CPU reset.
pub struct I8042 {
    on_reset: Box<dyn FnMut() + Send>,
}

impl I8042 {
    /// A controller calling `on_reset` on the reset command.
    pub fn new(on_reset: Box<dyn FnMut() + Send>) -> Self {
        I8042 { on_reset }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == COMMAND_OFFSET && data.first() == Some(&CMD_RESET_CPU) {
            (self.on_reset)();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[test]
    fn only_the_reset_command_resets() {
        let n = Arc::new(AtomicU32::new(0));
        let m = n.clone();
        let mut dev = I8042::new(Box::new(move || {
            m.fetch_add(1, Ordering::SeqCst);
        }));
        dev.write(0, &[CMD_RESET_CPU]); // data port: ignored
        dev.write(COMMAND_OFFSET, &[0xaa]);
        dev.write(COMMAND_OFFSET, &[]);
        assert_eq!(n.load(Ordering::SeqCst), 0);
        dev.write(COMMAND_OFFSET, &[CMD_RESET_CPU]);
        assert_eq!(n.load(Ordering::SeqCst), 1);
        let mut status = [0xffu8];
        dev.read(COMMAND_OFFSET, &mut status);
        assert_eq!(status, [0]);
    }
}

//! Firecracker's boot-timer device: an MMIO byte at 0xC000_0000. When the guest
//! writes 123 there, the device reports the time since the VMM process started
//! (the VMM logs it as `Guest-boot-time = <N> us`).

use std::time::Instant;

use crate::bus::BusDevice;

/// Guest-physical address of the device.
pub const BOOT_TIMER_ADDR: u64 = 0xc000_0000;
/// Length of its MMIO window (one page).
pub const BOOT_TIMER_LEN: u64 = 0x1000;
/// The byte a guest writes when it has booted.
pub const BOOT_DONE_MAGIC: u8 = 123;

/// The boot timer; `report` gets the microseconds since `start`.
pub struct BootTimer {
    start: Instant,
    report: Box<dyn FnMut(u64) + Send>,
}

impl BootTimer {
    /// A timer counting from `start`.
    pub fn new(start: Instant, report: Box<dyn FnMut(u64) + Send>) -> Self {
        BootTimer { start, report }
    }
}

impl BusDevice for BootTimer {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 0 && data.first() == Some(&BOOT_DONE_MAGIC) {
            let us = self.start.elapsed().as_micros();
            (self.report)(u64::try_from(us).unwrap_or(u64::MAX));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn reports_elapsed_time_on_magic_byte_only() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let start = Instant::now() - std::time::Duration::from_millis(5);
        let mut dev = BootTimer::new(start, Box::new(move |us| sink.lock().unwrap().push(us)));
        dev.write(0, &[1]);
        dev.write(1, &[BOOT_DONE_MAGIC]);
        assert!(got.lock().unwrap().is_empty());
        dev.write(0, &[BOOT_DONE_MAGIC]);
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 1);
        assert!(got[0] >= 5000, "{}", got[0]);
    }
}

//! The port-I/O and MMIO buses: address ranges mapped to devices, so that the
//! vCPU loop dispatches every exit by address and never names a device.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device reachable through a bus. Offsets are relative to the range base.
pub trait BusDevice: Send {
    /// Fills `data` with what the guest reads at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Takes what the guest writes at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Errors from building a bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The new range is empty or wraps around the address space.
    #[error("bus range {base:#x}+{len:#x} is empty or wraps")]
    BadRange { base: u64, len: u64 },
    /// The new range overlaps one already inserted.
    #[error("bus range {base:#x}+{len:#x} overlaps an existing device")]
    Overlap { base: u64, len: u64 },
}

/// A shared handle to a device on a bus.
pub type SharedBusDevice = Arc<Mutex<dyn BusDevice>>;

#[derive(Clone)]
struct BusRange {
    len: u64,
    device: SharedBusDevice,
}

/// Address ranges mapped to devices. Cloning shares the devices.
#[derive(Clone, Default)]
pub struct Bus {
    ranges: BTreeMap<u64, BusRange>,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `[base, base + len)` to `device`.
    pub fn insert(&mut self, base: u64, len: u64, device: SharedBusDevice) -> Result<(), BusError> {
        let end = match base.checked_add(len) {
            Some(end) if len > 0 => end,
            _ => return Err(BusError::BadRange { base, len }),
        };
        let overlaps_prev = self
            .ranges
            .range(..end)
            .next_back()
            .is_some_and(|(b, r)| b + r.len > base);
        if overlaps_prev {
            return Err(BusError::Overlap { base, len });
        }
        self.ranges.insert(base, BusRange { len, device });
        Ok(())
    }

    fn resolve(&self, addr: u64, size: usize) -> Option<(u64, &SharedBusDevice)> {
        let (base, range) = self.ranges.range(..=addr).next_back()?;
        let offset = addr - base;
        let end = offset.checked_add(size as u64)?;
        (end <= range.len).then_some((offset, &range.device))
    }

    /// Reads from the device at `addr`. Returns false when nothing is mapped
    /// there (the caller decides what an unmapped read returns).
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        let Some((offset, device)) = self.resolve(addr, data.len()) else {
            return false;
        };
        // A poisoned lock means a device thread panicked; keep serving the rest.
        let mut dev = device.lock().unwrap_or_else(|e| e.into_inner());
        dev.read(offset, data);
        true
    }

    /// Writes to the device at `addr`. Returns false when nothing is mapped there.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        let Some((offset, device)) = self.resolve(addr, data.len()) else {
            return false;
        };
        let mut dev = device.lock().unwrap_or_else(|e| e.into_inner());
        dev.write(offset, data);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Reg(u8);
    impl BusDevice for Reg {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(self.0.wrapping_add(offset as u8));
        }
        fn write(&mut self, _offset: u64, data: &[u8]) {
            self.0 = data[0];
        }
    }

    #[test]
    fn dispatches_by_address_and_refuses_overlaps() {
        let mut bus = Bus::new();
        bus.insert(0x10, 8, Arc::new(Mutex::new(Reg(1)))).unwrap();
        bus.insert(0x18, 8, Arc::new(Mutex::new(Reg(100)))).unwrap();
        assert_eq!(
            bus.insert(0x14, 2, Arc::new(Mutex::new(Reg(0)))),
            Err(BusError::Overlap { base: 0x14, len: 2 })
        );
        assert_eq!(
            bus.insert(u64::MAX, 2, Arc::new(Mutex::new(Reg(0)))),
            Err(BusError::BadRange {
                base: u64::MAX,
                len: 2
            })
        );
        let mut b = [0u8; 1];
        assert!(bus.read(0x12, &mut b));
        assert_eq!(b[0], 3);
        assert!(bus.write(0x18, &[7]));
        assert!(bus.read(0x19, &mut b));
        assert_eq!(b[0], 8);
        // Unmapped, and straddling the end of a range.
        assert!(!bus.read(0x20, &mut b));
        assert!(!bus.read(0x17, &mut [0u8; 2]));
    }
}

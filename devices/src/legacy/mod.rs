//! Legacy (non-virtio) devices, each a [`crate::bus::BusDevice`]: the 8250
//! serial console, the i8042 controller (reset and Ctrl+Alt+Del), and Firecracker's
//! boot-timer MMIO byte. Owner: the VMM core.

pub mod boot_timer;
pub mod i8042;
pub mod serial;

pub use boot_timer::BootTimer;
pub use i8042::I8042;
pub use serial::{Console, LineWatch, SerialDevice};

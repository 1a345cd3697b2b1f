//! The one way a device raises an interrupt. The VMM implements it (an irqfd
//! for Linux guests, the "wait" doorbell for kernel-less guests, or both), so a
//! device cannot tell how it is wired.

/// An interrupt line owned by one device.
pub trait IrqLine: Send + Sync {
    /// Asserts the line (edge-triggered: one call, one interrupt).
    fn trigger(&self) -> std::io::Result<()>;
}

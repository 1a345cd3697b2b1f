//! The hook between the VM builder and the device manager (virtio devices):
//! the config sections it handles (`vsock`, `drives`, `network-interfaces`,
//! `entropy`:
//! [`Devices::parse_section`]) are parsed once into [`Devices`] during validation;
//! any other section is refused there with a clear message. [`attach_all`]
//! gives each device module a [`DeviceContext`] with everything needed to
//! wire its devices into the VM.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use ember_abi::guest::MmioDevice;
use ember_devices::bus::Bus;
use ember_devices::virtio::net::NetConfig;
use ember_devices::virtio::VirtioDevice;
use event_manager::{EventManager, MutEventSubscriber};
use kvm_ioctls::VmFd;
use vm_memory::GuestMemoryMmap;

use crate::abi_ports::Doorbell;
use crate::device_manager::block::{self, DriveConfig};
use crate::device_manager::entropy::{self, EntropyConfig};
use crate::device_manager::net;
use crate::device_manager::vsock::{self, VsockConfig};
use crate::device_manager::{SavedVirtio, VirtioSlot};

/// The VM's event manager (one event-loop thread runs it).
pub type EventMgr = EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>;

/// First virtio-mmio window and the size of each.
pub const MMIO_WINDOWS_START: u64 = 0xd000_0000;
pub const MMIO_WINDOW_LEN: u64 = 0x1000;
const MMIO_WINDOWS_END: u64 = 0xfec0_0000;
/// Interrupt lines handed to devices: 5..=23 (IOAPIC pins; 4 is COM1).
const FIRST_DEVICE_IRQ: u32 = 5;
const LAST_DEVICE_IRQ: u32 = 23;

/// Why a device section could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("config section `{section}`: {message}")]
    Config { section: String, message: String },
    #[error("config section `{section}`: {what}")]
    Setup {
        section: String,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("out of {0} for devices")]
    Exhausted(&'static str),
    #[error("snapshot: the saved `{0}` device does not match the devices the config builds")]
    RestoreMismatch(String),
    #[error("config section `{section}`: cannot restore the saved device state")]
    Restore {
        section: &'static str,
        #[source]
        source: ember_devices::virtio::state::StateError,
    },
}

impl DeviceError {
    /// A refused value in config section `section`.
    pub fn config(section: &str, message: impl Into<String>) -> Self {
        DeviceError::Config {
            section: section.to_string(),
            message: message.into(),
        }
    }
}

/// Deserializes config section `section` (its serde shape does the key checks).
pub fn parse_section<T: serde::de::DeserializeOwned>(
    section: &str,
    value: &serde_json::Value,
) -> Result<T, DeviceError> {
    serde_json::from_value(value.clone()).map_err(|e| DeviceError::config(section, e.to_string()))
}

/// What an `attach` function may use and fill in.
pub struct DeviceContext<'a> {
    pub vm: &'a VmFd,
    pub mem: &'a GuestMemoryMmap,
    pub mmio_bus: &'a mut Bus,
    #[allow(dead_code)] // no port-I/O virtio transport yet; kept for devices that need ports
    pub pio_bus: &'a mut Bus,
    pub event_manager: &'a mut EventMgr,
    /// Ring it when a device interrupts a kernel-less guest.
    pub doorbell: &'a Doorbell,
    /// True when the VM has an in-kernel irqchip (Linux guests): interrupts
    /// are irqfds on the device's line; otherwise there is only the doorbell.
    pub irqchip: bool,
    /// True for a kernel-less guest.
    pub kernelless: bool,
    /// Devices announced to the guest (StartInfo `devices[]`; the VM builder
    /// also adds `virtio_mmio.device=` to a Linux command line for each).
    pub mmio_devices: Vec<MmioDevice>,
    /// Every virtio device, for the final drain when the VM stops.
    pub virtio_devices: Vec<Arc<Mutex<dyn VirtioDevice>>>,
    /// Every virtio device with its transport, for snapshots.
    pub slots: Vec<VirtioSlot>,
    /// At a snapshot load: the saved states, one per device in attach order.
    pub restore: Option<VecDeque<SavedVirtio>>,
    next_window: u64,
    next_irq: u32,
}

impl<'a> DeviceContext<'a> {
    /// A context with empty device lists.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vm: &'a VmFd,
        mem: &'a GuestMemoryMmap,
        mmio_bus: &'a mut Bus,
        pio_bus: &'a mut Bus,
        event_manager: &'a mut EventMgr,
        doorbell: &'a Doorbell,
        irqchip: bool,
        kernelless: bool,
    ) -> Self {
        DeviceContext {
            vm,
            mem,
            mmio_bus,
            pio_bus,
            event_manager,
            doorbell,
            irqchip,
            kernelless,
            mmio_devices: Vec::new(),
            virtio_devices: Vec::new(),
            slots: Vec::new(),
            restore: None,
            next_window: MMIO_WINDOWS_START,
            next_irq: FIRST_DEVICE_IRQ,
        }
    }

    /// The next free virtio-mmio window and interrupt line: (base, irq).
    pub fn allocate_window(&mut self) -> Result<(u64, u32), DeviceError> {
        if self.next_window + MMIO_WINDOW_LEN > MMIO_WINDOWS_END {
            return Err(DeviceError::Exhausted("MMIO windows"));
        }
        if self.next_irq > LAST_DEVICE_IRQ {
            return Err(DeviceError::Exhausted("interrupt lines"));
        }
        let r = (self.next_window, self.next_irq);
        self.next_window += MMIO_WINDOW_LEN;
        self.next_irq += 1;
        Ok(r)
    }

    /// Ends attaching: the device lists and the Linux command-line fragment
    /// built from the same list (one step, so the fragment can never be
    /// built from a list already moved out).
    pub fn into_attached(self) -> Result<Attached, DeviceError> {
        if let Some(left) = self.restore.as_ref().and_then(|r| r.front()) {
            // A saved device the config did not rebuild.
            return Err(DeviceError::RestoreMismatch(left.section.clone()));
        }
        Ok(Attached {
            linux_cmdline: linux_cmdline(&self.mmio_devices),
            mmio_devices: self.mmio_devices,
            virtio_devices: self.virtio_devices,
            slots: self.slots,
        })
    }
}

/// What [`DeviceContext::into_attached`] hands the VM builder.
pub struct Attached {
    /// Devices announced to a kernel-less guest (StartInfo `devices[]`).
    pub mmio_devices: Vec<MmioDevice>,
    /// Every virtio device, for the final drain.
    pub virtio_devices: Vec<Arc<Mutex<dyn VirtioDevice>>>,
    /// Every virtio device with its transport, for snapshots.
    pub slots: Vec<VirtioSlot>,
    /// ` virtio_mmio.device=<len>K@<base>:<irq>` per device, for a Linux
    /// command line (Linux finds virtio-mmio devices only through it here).
    pub linux_cmdline: String,
}

/// The Linux command-line fragment announcing `devices`.
fn linux_cmdline(devices: &[MmioDevice]) -> String {
    devices
        .iter()
        .map(|d| {
            format!(
                " virtio_mmio.device={}K@{:#x}:{}",
                d.len >> 10,
                d.base,
                d.irq
            )
        })
        .collect()
}

/// The device sections of a config, typed: parsed and checked once, by
/// [`Devices::parse_section`] during validation, then attached as they are.
#[derive(Debug, Clone, Default)]
pub struct Devices {
    pub vsock: Option<VsockConfig>,
    pub drives: Vec<DriveConfig>,
    pub nets: Vec<NetConfig>,
    pub entropy: Option<EntropyConfig>,
}

impl Devices {
    /// Parses section `name` into its typed field. `Ok(false)`: not a
    /// section the device manager handles.
    pub fn parse_section(
        &mut self,
        name: &str,
        value: &serde_json::Value,
    ) -> Result<bool, DeviceError> {
        match name {
            vsock::NAME => self.vsock = Some(vsock::parse(value)?),
            block::NAME => self.drives = block::parse(value)?,
            net::NAME => self.nets = net::parse(value)?,
            entropy::NAME => self.entropy = Some(entropy::parse(value)?),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// Attaches every configured device: vsock, drives, network interfaces,
/// entropy (in this order: a snapshot load rebuilds them the same way).
pub fn attach_all(ctx: &mut DeviceContext, devices: &Devices) -> Result<(), DeviceError> {
    if let Some(v) = &devices.vsock {
        vsock::attach(ctx, v)?;
    }
    block::attach(ctx, &devices.drives)?;
    net::attach(ctx, &devices.nets)?;
    if let Some(e) = &devices.entropy {
        entropy::attach(ctx, e)?;
    }
    Ok(())
}

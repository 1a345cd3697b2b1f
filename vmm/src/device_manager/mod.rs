//! The device manager: one file per config section (`vsock.rs`, `block.rs`,
//! `net.rs`, `entropy.rs`), each with `parse` (JSON to its typed config, once, during
//! validation) and `attach` (typed config to devices), and here the one way
//! a virtio device enters the VM ([`attach_virtio`]): a 4 KiB virtio-mmio
//! window and an interrupt line from the [`DeviceContext`], one ioeventfd
//! per queue on QueueNotify (datamatch = queue index), an [`IrqLine`] that
//! fires the line's irqfd (Linux guests) and rings the kernel-less doorbell,
//! the transport on the MMIO bus, the device on the event loop, and an entry
//! in the guest's device list (StartInfo `devices[]` / Linux command line).
//! For snapshots it keeps a [`VirtioSlot`] per device (transport and device,
//! to lock and save together) and, at a load, puts each saved state
//! ([`SavedVirtio`]) into the device rebuilt for it, in attach order.

pub mod block;
pub mod entropy;
pub mod net;
pub mod vsock;

use std::sync::{Arc, Mutex, Once};

use ember_abi::guest::MmioDevice;
use ember_devices::irq::IrqLine;
use ember_devices::virtio::mmio::{MmioTransport, MMIO_WINDOW, NOTIFY_OFFSET};
use ember_devices::virtio::state::VirtioState;
use ember_devices::virtio::VirtioDevice;
use event_manager::{MutEventSubscriber, SubscriberOps};
use kvm_ioctls::IoEventAddress;
use vmm_sys_util::eventfd::EventFd;

use crate::abi_ports::Doorbell;
use crate::devices::{DeviceContext, DeviceError};

/// A device's interrupt: its irqfd (with an in-kernel irqchip) and/or the
/// kernel-less doorbell.
struct VirtioIrq {
    irqfd: Option<EventFd>,
    doorbell: Option<Doorbell>,
}

impl IrqLine for VirtioIrq {
    fn trigger(&self) -> std::io::Result<()> {
        if let Some(evt) = &self.irqfd {
            evt.write(1)?;
        }
        if let Some(bell) = &self.doorbell {
            bell.ring()?;
        }
        Ok(())
    }
}

/// One virtio device of a snapshot: the config section it was built from
/// and its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedVirtio {
    pub section: String,
    pub state: VirtioState,
}

/// A virtio device as snapshots see it: its section, its transport and the
/// device (locked together, transport first, as a vCPU's MMIO access does).
#[derive(Clone)]
pub struct VirtioSlot {
    pub section: &'static str,
    pub transport: Arc<Mutex<MmioTransport>>,
    pub device: Arc<Mutex<dyn VirtioDevice>>,
}

fn setup_err(section: &str, what: &str, source: std::io::Error) -> DeviceError {
    DeviceError::Setup {
        section: section.to_string(),
        what: what.to_string(),
        source,
    }
}

/// Puts `device` in the VM behind a new virtio-mmio window.
pub fn attach_virtio<D>(
    ctx: &mut DeviceContext,
    section: &'static str,
    device: D,
) -> Result<(), DeviceError>
where
    D: VirtioDevice + MutEventSubscriber + Send + 'static,
{
    install_log_bridge();
    let (base, irq) = ctx.allocate_window()?;
    let device_id = device.device_type();
    let irqfd = if ctx.irqchip {
        let evt =
            EventFd::new(libc::EFD_NONBLOCK).map_err(|e| setup_err(section, "irq eventfd", e))?;
        ctx.vm.register_irqfd(&evt, irq).map_err(|e| {
            setup_err(
                section,
                "register irqfd",
                std::io::Error::from_raw_os_error(e.errno()),
            )
        })?;
        Some(evt)
    } else {
        None
    };
    let doorbell = ctx.kernelless.then(|| ctx.doorbell.clone());
    let line = Arc::new(VirtioIrq { irqfd, doorbell });
    let dev = Arc::new(Mutex::new(device));
    ctx.virtio_devices.push(dev.clone());
    let mut transport = MmioTransport::new(ctx.mem.clone(), dev.clone(), line).map_err(|e| {
        setup_err(
            section,
            "virtio-mmio transport",
            std::io::Error::other(ember_abi::error::chain(&e)),
        )
    })?;
    if let Some(saved) = ctx.restore.as_mut() {
        let s = saved
            .pop_front()
            .ok_or_else(|| DeviceError::RestoreMismatch(section.to_string()))?;
        if s.section != section {
            return Err(DeviceError::RestoreMismatch(s.section));
        }
        transport
            .restore_state(&s.state)
            .map_err(|source| DeviceError::Restore { section, source })?;
    }
    for (i, evt) in transport.queue_evts().iter().enumerate() {
        ctx.vm
            .register_ioevent(evt, &IoEventAddress::Mmio(base + NOTIFY_OFFSET), i as u32)
            .map_err(|e| {
                setup_err(
                    section,
                    "register ioeventfd",
                    std::io::Error::from_raw_os_error(e.errno()),
                )
            })?;
    }
    let transport = Arc::new(Mutex::new(transport));
    ctx.slots.push(VirtioSlot {
        section,
        transport: transport.clone(),
        device: dev.clone(),
    });
    ctx.mmio_bus
        .insert(base, MMIO_WINDOW, transport)
        .map_err(|e| setup_err(section, "MMIO bus", std::io::Error::other(e.to_string())))?;
    let sub: Arc<Mutex<dyn MutEventSubscriber + Send>> = dev;
    ctx.event_manager.add_subscriber(sub);
    ctx.mmio_devices.push(MmioDevice {
        base,
        len: MMIO_WINDOW,
        irq,
        device_id,
    });
    Ok(())
}

/// Sends the `log` records of the device crates to ember-vmm's logger.
struct LogBridge;

impl log::Log for LogBridge {
    fn enabled(&self, m: &log::Metadata) -> bool {
        crate::logger::enabled(level(m.level()))
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            crate::logger::log(level(r.level()), *r.args());
        }
    }
    fn flush(&self) {}
}

fn level(l: log::Level) -> crate::logger::Level {
    use crate::logger::Level;
    match l {
        log::Level::Error => Level::Error,
        log::Level::Warn => Level::Warn,
        log::Level::Info => Level::Info,
        log::Level::Debug => Level::Debug,
        log::Level::Trace => Level::Trace,
    }
}

fn install_log_bridge() {
    static ONCE: Once = Once::new();
    static BRIDGE: LogBridge = LogBridge;
    ONCE.call_once(|| {
        if log::set_logger(&BRIDGE).is_ok() {
            // Filter in the `log` macros already: hot paths carry trace! calls.
            use crate::logger::{enabled, Level};
            let max = [
                (Level::Trace, log::LevelFilter::Trace),
                (Level::Debug, log::LevelFilter::Debug),
                (Level::Info, log::LevelFilter::Info),
                (Level::Warn, log::LevelFilter::Warn),
                (Level::Error, log::LevelFilter::Error),
            ]
            .into_iter()
            .find(|(l, _)| enabled(*l))
            .map_or(log::LevelFilter::Off, |(_, f)| f);
            log::set_max_level(max);
        }
    });
}

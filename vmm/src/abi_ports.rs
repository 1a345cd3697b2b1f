//! The kernel-less ABI ports as one bus device per vCPU (`guest::PORT_EXIT`,
//! `PORT_WAIT`, `PORT_PARK`, `PORT_SLEEP`), and the [`Doorbell`] that device interrupts ring
//! to end a `PORT_WAIT`. One instance per vCPU, so a vCPU blocked in wait or
//! park holds only its own device lock. Every sleep also ends when the
//! vCPU's own kick bell rings (a control message is waiting for it): the kick
//! signal alone can land between the vCPU loop's look at its messages and
//! the `ppoll`, and then the sleep would outlast a pause.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use ember_abi::guest;
use ember_devices::bus::BusDevice;
use vmm_sys_util::eventfd::EventFd;

use crate::exit::{ExitNotifier, VmExit};

/// First port of the window and its length: exit, wait, park, and room for
/// a 32-bit access at the last of them (the bus refuses accesses that run
/// past a device's window).
pub const ABI_PORT_BASE: u64 = guest::PORT_EXIT as u64;
pub const ABI_PORT_LEN: u64 = 8;
const _: () = assert!(
    guest::PORT_WAIT == guest::PORT_EXIT + 1
        && guest::PORT_PARK == guest::PORT_EXIT + 2
        && guest::PORT_SLEEP == guest::PORT_EXIT + 3
);

/// The "a device needs the guest" signal of kernel-less guests: devices ring
/// it where a Linux guest would get an interrupt; `PORT_WAIT` sleeps on it.
/// A ring before the wait is remembered (eventfd counter). Cheap to clone.
#[derive(Clone)]
pub struct Doorbell(Arc<EventFd>);

impl Doorbell {
    /// A new doorbell.
    pub fn new() -> std::io::Result<Doorbell> {
        Ok(Doorbell(Arc::new(EventFd::new(libc::EFD_NONBLOCK)?)))
    }

    /// Wakes a vCPU sleeping in `PORT_WAIT` (or makes its next wait return at once).
    pub fn ring(&self) -> std::io::Result<()> {
        self.0.write(1)
    }

    /// Forgets the rings so far (never blocks).
    pub fn clear(&self) {
        let _ = self.0.read();
    }
}

/// The ABI ports of one vCPU.
pub struct AbiPorts {
    exits: ExitNotifier,
    doorbell: Doorbell,
    /// This vCPU's kick bell: rung with every control message, cleared by
    /// the vCPU loop when it reads them; it ends any sleep here.
    kick: Doorbell,
}

impl AbiPorts {
    /// The ports for one vCPU.
    pub fn new(exits: ExitNotifier, doorbell: Doorbell, kick: Doorbell) -> Self {
        AbiPorts {
            exits,
            doorbell,
            kick,
        }
    }

    fn pollfd(fd: &EventFd) -> libc::pollfd {
        libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }
    }

    /// Sleeps until the doorbell rings, the VM stops, the vCPU is kicked,
    /// or `timeout_us` passes (0 = no timeout).
    fn wait(&self, timeout_us: u32) {
        let stop = &self.exits.state().stop_evt;
        let mut fds = [
            Self::pollfd(&self.doorbell.0),
            Self::pollfd(stop),
            Self::pollfd(&self.kick.0),
        ];
        let ts = libc::timespec {
            tv_sec: (timeout_us / 1_000_000) as libc::time_t,
            tv_nsec: ((timeout_us % 1_000_000) * 1000) as libc::c_long,
        };
        let tsp = if timeout_us == 0 {
            std::ptr::null()
        } else {
            &ts as *const libc::timespec
        };
        // SAFETY: `fds` is a valid array of 3 pollfds and `tsp` is null or
        // points to `ts`; both outlive the call.
        let n = unsafe { libc::ppoll(fds.as_mut_ptr(), 3, tsp, std::ptr::null()) };
        if n > 0 && fds[0].revents & libc::POLLIN != 0 {
            // Consume the rings; another vCPU may have raced us to it (EAGAIN).
            let _ = self.doorbell.0.read();
        }
    }

    /// Sleeps until the VM stops (or the vCPU is kicked).
    fn park(&self) {
        self.sleep_until_stop(None);
    }

    /// Sleeps `us` microseconds, or until the VM stops (or the vCPU is
    /// kicked); the doorbell is left alone.
    fn sleep(&self, us: u32) {
        if us > 0 {
            self.sleep_until_stop(Some(us));
        }
    }

    fn sleep_until_stop(&self, timeout_us: Option<u32>) {
        let stop = &self.exits.state().stop_evt;
        let mut fds = [Self::pollfd(stop), Self::pollfd(&self.kick.0)];
        let ts = timeout_us.map(|us| libc::timespec {
            tv_sec: (us / 1_000_000) as libc::time_t,
            tv_nsec: ((us % 1_000_000) * 1000) as libc::c_long,
        });
        let tsp = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `fds` is a valid array of 2 pollfds; `tsp` is null or
        // points to `ts`, which outlives the call; no signal mask change.
        unsafe { libc::ppoll(fds.as_mut_ptr(), 2, tsp, std::ptr::null()) };
    }
}

fn le_u32(data: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    let n = data.len().min(4);
    b[..n].copy_from_slice(&data[..n]);
    u32::from_le_bytes(b)
}

impl BusDevice for AbiPorts {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match offset {
            0 => self.exits.notify(VmExit::Guest(le_u32(data))),
            1 => self.wait(le_u32(data)),
            2 => self.park(),
            3 => self.sleep(le_u32(data)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::StopState;
    use std::time::{Duration, Instant};

    fn ports() -> (AbiPorts, Doorbell, std::sync::mpsc::Receiver<VmExit>) {
        let (n, rx) = ExitNotifier::new(StopState::new().unwrap());
        let d = Doorbell::new().unwrap();
        (AbiPorts::new(n, d.clone(), Doorbell::new().unwrap()), d, rx)
    }

    #[test]
    fn a_kick_rung_before_the_sleep_ends_wait_park_and_sleep() {
        let (mut p, _, _rx) = ports();
        p.kick.ring().unwrap();
        let t = Instant::now();
        p.write(1, &0u32.to_le_bytes());
        p.write(2, &[0]);
        p.write(3, &10_000_000u32.to_le_bytes());
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "a sleep missed the kick"
        );
        p.kick.clear();
        let t = Instant::now();
        p.write(3, &20_000u32.to_le_bytes());
        assert!(
            t.elapsed() >= Duration::from_millis(20),
            "a cleared kick still ended the sleep"
        );
    }

    #[test]
    fn exit_port_reports_the_code() {
        let (mut p, _, rx) = ports();
        p.write(0, &42u32.to_le_bytes());
        assert_eq!(rx.try_recv().unwrap(), VmExit::Guest(42));
        let (mut p, _, rx) = ports();
        p.write(0, &[7]);
        assert_eq!(rx.try_recv().unwrap(), VmExit::Guest(7));
    }

    #[test]
    fn wait_returns_on_ring_timeout_and_remembers_early_rings() {
        let (mut p, d, _rx) = ports();
        let t = Instant::now();
        p.write(1, &20_000u32.to_le_bytes());
        assert!(t.elapsed() >= Duration::from_millis(20));
        d.ring().unwrap(); // before the wait: not lost
        let t = Instant::now();
        p.write(1, &0u32.to_le_bytes());
        assert!(t.elapsed() < Duration::from_secs(1));
        let d2 = d.clone();
        let ringer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            d2.ring().unwrap();
        });
        let t = Instant::now();
        p.write(1, &5_000_000u32.to_le_bytes());
        assert!(t.elapsed() < Duration::from_secs(4));
        ringer.join().unwrap();
    }

    #[test]
    fn sleep_lasts_its_time_and_leaves_rings_to_wait() {
        let (mut p, d, _rx) = ports();
        d.ring().unwrap();
        let t = Instant::now();
        p.write(3, &20_000u32.to_le_bytes());
        assert!(
            t.elapsed() >= Duration::from_millis(20),
            "a ring ended the sleep"
        );
        // The ring is still there for the vCPU that waits on it.
        let t = Instant::now();
        p.write(1, &5_000_000u32.to_le_bytes());
        assert!(
            t.elapsed() < Duration::from_secs(4),
            "sleep consumed the ring"
        );
        let t = Instant::now();
        p.write(3, &0u32.to_le_bytes());
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn park_and_wait_end_when_the_vm_stops() {
        let (mut p, _, rx) = ports();
        let n = p.exits.clone();
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            n.notify(VmExit::Reset);
        });
        p.write(2, &[0]);
        p.write(1, &0u32.to_le_bytes());
        let t = Instant::now();
        p.write(3, &10_000_000u32.to_le_bytes());
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "sleep outlived the VM"
        );
        stopper.join().unwrap();
        assert_eq!(rx.try_recv().unwrap(), VmExit::Reset);
    }
}

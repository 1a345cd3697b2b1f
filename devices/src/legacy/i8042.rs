//! The i8042 PS/2 controller, as far as Linux's `reboot=k` and Firecracker's
//! `SendCtrlAltDel` need (Firecracker's device does the same): the
//! controller's status, control and output-port registers, its 16-byte
//! output buffer read through port 0x60, "pulse reset line" (0xFE to port
//! 0x64) calling the VMM's reset hook, a keyboard that acknowledges every
//! command (0xFA), and [`I8042::trigger_ctrl_alt_del`], which queues the
//! set-2 make codes of Ctrl, Alt and Delete and raises IRQ 1. Linux's i8042
//! driver (with `i8042.dumbkbd`, the default command line) passes them to
//! atkbd, and the VT keyboard turns Ctrl+Alt+Del into `ctrl_alt_del()`.
//!
//! The keyboard interrupt is an eventfd (an irqfd on GSI 1) where the VM has
//! an in-kernel irqchip; without one (kernel-less guests) the bytes just
//! wait in the buffer, as on a machine whose OS never reads the keyboard.

use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;

/// First port of the controller (data port 0x60); the window covers 0x60..=0x64.
pub const I8042_BASE: u64 = 0x60;
/// Length of the port window.
pub const I8042_LEN: u64 = 5;
/// The keyboard's interrupt line (ISA IRQ 1).
pub const KBD_IRQ: u32 = 1;

/// Data port offset (0x60) and status/command port offset (0x64).
const OFS_DATA: u64 = 0;
const OFS_STATUS: u64 = 4;

/// Controller commands (written to port 0x64).
const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_READ_OUTP: u8 = 0xd0;
const CMD_WRITE_OUTP: u8 = 0xd1;
/// "Pulse output line 0" = CPU reset.
const CMD_RESET_CPU: u8 = 0xfe;

/// Status register bits.
const SB_OUT_DATA_AVAIL: u8 = 0x01;
const SB_CMD_DATA: u8 = 0x08;
const SB_KBD_ENABLED: u8 = 0x10;

/// Control register bits.
const CB_KBD_INT: u8 = 0x01;
const CB_POST_OK: u8 = 0x04;

/// The keyboard's answer to any command.
const KBD_ACK: u8 = 0xfa;
/// Scan code set 2 make codes (an extended key has 0xe0 in the high byte).
const KEY_CTRL: u16 = 0x0014;
const KEY_ALT: u16 = 0x0011;
const KEY_DEL: u16 = 0xe071;

/// Output buffer size.
const BUF_SIZE: usize = 16;

/// Why a key sequence could not be sent.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum I8042Error {
    #[error("i8042 internal buffer full.")]
    InternalBufferFull,
}

/// The controller; `on_reset` runs each time the guest asks for a CPU reset.
pub struct I8042 {
    on_reset: Box<dyn FnMut() + Send>,
    kbd_irq: Option<EventFd>,
    status: u8,
    control: u8,
    outp: u8,
    /// The command whose data byte the next write to port 0x60 is.
    cmd: u8,
    buf: std::collections::VecDeque<u8>,
}

impl I8042 {
    /// A controller calling `on_reset` on the reset command, with no
    /// keyboard interrupt wired.
    pub fn new(on_reset: Box<dyn FnMut() + Send>) -> Self {
        Self::with_irq(on_reset, None)
    }

    /// A controller whose keyboard interrupt writes `kbd_irq`.
    pub fn with_irq(on_reset: Box<dyn FnMut() + Send>, kbd_irq: Option<EventFd>) -> Self {
        I8042 {
            on_reset,
            kbd_irq,
            status: SB_KBD_ENABLED,
            control: CB_POST_OK | CB_KBD_INT,
            outp: 0,
            cmd: 0,
            buf: std::collections::VecDeque::with_capacity(BUF_SIZE),
        }
    }

    /// Queues Ctrl, Alt, Delete (4 bytes, all or nothing) and raises the
    /// keyboard interrupt after each key.
    pub fn trigger_ctrl_alt_del(&mut self) -> Result<(), I8042Error> {
        if BUF_SIZE - self.buf.len() < 4 {
            return Err(I8042Error::InternalBufferFull);
        }
        for key in [KEY_CTRL, KEY_ALT, KEY_DEL] {
            if key > 0xff {
                self.push((key >> 8) as u8);
            }
            self.push((key & 0xff) as u8);
            self.kbd_interrupt();
        }
        Ok(())
    }

    /// Bytes waiting in the output buffer.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    fn kbd_interrupt(&self) {
        if self.control & CB_KBD_INT == 0 {
            // The guest driver masked the keyboard interrupt: it polls.
            return;
        }
        if let Some(evt) = &self.kbd_irq {
            if let Err(e) = evt.write(1) {
                log::warn!("i8042: cannot raise the keyboard interrupt: {e}");
            }
        }
    }

    /// Appends a byte; a full buffer drops it (callers check room first).
    fn push(&mut self, byte: u8) {
        if self.buf.len() < BUF_SIZE {
            self.buf.push_back(byte);
        }
        self.status |= SB_OUT_DATA_AVAIL;
    }

    fn pop(&mut self) -> Option<u8> {
        let b = self.buf.pop_front();
        if self.buf.is_empty() {
            self.status &= !SB_OUT_DATA_AVAIL;
        }
        b
    }

    /// Empties the buffer so the next read of port 0x60 is a command's answer.
    fn answer(&mut self, byte: u8) {
        self.buf.clear();
        self.push(byte);
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let [first] = data else {
            return; // the ports are byte-wide
        };
        match offset {
            OFS_STATUS => *first = self.status,
            OFS_DATA => {
                *first = self.pop().unwrap_or(0);
                if self.status & SB_OUT_DATA_AVAIL != 0 {
                    // More to read: interrupt again.
                    self.kbd_interrupt();
                }
            }
            _ => {}
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let [byte] = data else {
            return;
        };
        match (offset, *byte) {
            (OFS_STATUS, CMD_RESET_CPU) => (self.on_reset)(),
            (OFS_STATUS, CMD_READ_CTR) => self.answer(self.control),
            (OFS_STATUS, CMD_READ_OUTP) => self.answer(self.outp),
            (OFS_STATUS, c @ (CMD_WRITE_CTR | CMD_WRITE_OUTP)) => {
                if c == CMD_WRITE_CTR {
                    self.buf.clear();
                    self.status &= !SB_OUT_DATA_AVAIL;
                }
                self.status |= SB_CMD_DATA;
                self.cmd = c;
            }
            (OFS_DATA, b) if self.status & SB_CMD_DATA != 0 => {
                match self.cmd {
                    CMD_WRITE_CTR => self.control = b,
                    CMD_WRITE_OUTP => self.outp = b,
                    _ => {}
                }
                self.status &= !SB_CMD_DATA;
            }
            (OFS_DATA, _) => {
                // A command to the keyboard: a dumb keyboard acknowledges it.
                self.answer(KBD_ACK);
                self.kbd_interrupt();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    fn dev() -> (I8042, Arc<AtomicU32>, EventFd) {
        let n = Arc::new(AtomicU32::new(0));
        let m = n.clone();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let d = I8042::with_irq(
            Box::new(move || {
                m.fetch_add(1, Ordering::SeqCst);
            }),
            Some(irq.try_clone().unwrap()),
        );
        (d, n, irq)
    }

    fn inb(d: &mut I8042, offset: u64) -> u8 {
        let mut b = [0xffu8];
        d.read(offset, &mut b);
        b[0]
    }

    #[test]
    fn only_the_reset_command_resets() {
        let (mut d, n, _irq) = dev();
        d.write(OFS_DATA, &[CMD_RESET_CPU]); // data port: a keyboard command
        d.write(OFS_STATUS, &[0xaa]);
        d.write(OFS_STATUS, &[]);
        d.write(OFS_STATUS, &[CMD_RESET_CPU, 0]);
        assert_eq!(n.load(Ordering::SeqCst), 0);
        d.write(OFS_STATUS, &[CMD_RESET_CPU]);
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn control_register_output_port_and_keyboard_ack() {
        let (mut d, _, irq) = dev();
        assert_eq!(inb(&mut d, OFS_STATUS), SB_KBD_ENABLED);
        d.write(OFS_STATUS, &[CMD_READ_CTR]);
        assert_eq!(
            inb(&mut d, OFS_STATUS) & SB_OUT_DATA_AVAIL,
            SB_OUT_DATA_AVAIL
        );
        assert_eq!(inb(&mut d, OFS_DATA), CB_POST_OK | CB_KBD_INT);
        assert_eq!(inb(&mut d, OFS_STATUS) & SB_OUT_DATA_AVAIL, 0);
        d.write(OFS_STATUS, &[CMD_WRITE_CTR]);
        assert_ne!(inb(&mut d, OFS_STATUS) & SB_CMD_DATA, 0);
        d.write(OFS_DATA, &[0x47]);
        d.write(OFS_STATUS, &[CMD_READ_CTR]);
        assert_eq!(inb(&mut d, OFS_DATA), 0x47);
        d.write(OFS_STATUS, &[CMD_WRITE_OUTP]);
        d.write(OFS_DATA, &[0x52]);
        d.write(OFS_STATUS, &[CMD_READ_OUTP]);
        assert_eq!(inb(&mut d, OFS_DATA), 0x52);
        assert!(irq.read().is_err(), "no interrupt for controller answers");
        d.write(OFS_DATA, &[0xff]); // keyboard reset
        assert_eq!(inb(&mut d, OFS_DATA), KBD_ACK);
        assert_eq!(irq.read().unwrap(), 1);
        // An empty buffer reads 0; wide accesses are ignored.
        assert_eq!(inb(&mut d, OFS_DATA), 0);
        let mut wide = [0xffu8; 2];
        d.read(OFS_STATUS, &mut wide);
        assert_eq!(wide, [0, 0]);
    }

    #[test]
    fn ctrl_alt_del_queues_the_set2_codes_and_interrupts() {
        let (mut d, _, irq) = dev();
        d.trigger_ctrl_alt_del().unwrap();
        assert_eq!(irq.read().unwrap(), 3, "one interrupt per key");
        let mut got = Vec::new();
        while inb(&mut d, OFS_STATUS) & SB_OUT_DATA_AVAIL != 0 {
            got.push(inb(&mut d, OFS_DATA));
        }
        assert_eq!(got, [0x14, 0x11, 0xe0, 0x71]);
        // Reading with bytes left re-raised the interrupt.
        assert_eq!(irq.read().unwrap(), 3);
        // Four sequences fill the 16-byte buffer; a fifth is refused whole.
        for _ in 0..4 {
            d.trigger_ctrl_alt_del().unwrap();
        }
        assert_eq!(d.pending(), 16);
        assert_eq!(
            d.trigger_ctrl_alt_del(),
            Err(I8042Error::InternalBufferFull)
        );
        assert_eq!(d.pending(), 16);
        // With the interrupt masked by the guest, keys still queue, silently.
        let (mut d, _, irq) = dev();
        d.write(OFS_STATUS, &[CMD_WRITE_CTR]);
        d.write(OFS_DATA, &[CB_POST_OK]);
        d.trigger_ctrl_alt_del().unwrap();
        assert!(irq.read().is_err());
        assert_eq!(d.pending(), 4);
    }
}

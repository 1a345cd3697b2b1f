//! The 8250 UART (vm-superio's model) on the port-I/O bus, writing guest output
//! to a [`Console`]: stdout, a file, or nowhere. Its interrupt line is optional
//! (an eventfd registered as an irqfd for Linux guests; kernel-less guests poll).

use std::fs::File;
use std::io::{self, LineWriter, Write};
use std::path::Path;

use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;

/// Base port of COM1 and the length of its register window.
pub const COM1_BASE: u64 = 0x3f8;
/// Length of the UART register window.
pub const COM1_LEN: u64 = 8;

/// Where guest console output goes. Output is line-buffered; call
/// [`SerialDevice::flush`] before the process exits.
pub enum Console {
    /// The VMM's stdout.
    Stdout,
    /// Nowhere.
    Off,
    /// A file (created or truncated).
    File(File),
}

impl Console {
    /// Opens `path` for console output.
    pub fn file(path: &Path) -> io::Result<Console> {
        File::create(path).map(Console::File)
    }

    fn into_writer(self) -> Box<dyn Write + Send> {
        match self {
            Console::Stdout => Box::new(LineWriter::new(io::stdout())),
            Console::Off => Box::new(io::sink()),
            Console::File(f) => Box::new(LineWriter::new(f)),
        }
    }
}

/// The UART's interrupt: an eventfd when wired to an irqfd, otherwise nothing.
pub struct SerialIrq(Option<EventFd>);

impl Trigger for SerialIrq {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        match &self.0 {
            Some(fd) => fd.write(1),
            None => Ok(()),
        }
    }
}

/// The COM1 UART as a bus device.
pub struct SerialDevice {
    uart: Serial<SerialIrq, vm_superio::serial::NoEvents, Box<dyn Write + Send>>,
}

impl SerialDevice {
    /// A UART writing to `console`, raising `irq` (if any) when the guest has
    /// enabled UART interrupts.
    pub fn new(console: Console, irq: Option<EventFd>) -> Self {
        SerialDevice {
            uart: Serial::new(SerialIrq(irq), console.into_writer()),
        }
    }

    /// Writes out buffered console output.
    pub fn flush(&mut self) {
        // Nothing useful to do if the console is gone (e.g. a closed pipe).
        let _ = self.uart.writer_mut().flush();
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (Some(first), Ok(off)) = (data.first_mut(), u8::try_from(offset)) {
            *first = self.uart.read(off);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Some(&value), Ok(off)) = (data.first(), u8::try_from(offset)) {
            // A console that fails (closed stdout, full disk) must not stop
            // the guest: the output is lost, the VM keeps running.
            let _ = self.uart.write(off, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_written_to_thr_reach_the_console_file() {
        let dir = std::env::temp_dir().join(format!("ember-serial-{}", std::process::id()));
        let console = Console::file(&dir).unwrap();
        let mut dev = SerialDevice::new(console, None);
        for b in b"hi\n" {
            dev.write(0, &[*b]);
        }
        // Line status register: transmitter empty.
        let mut lsr = [0u8];
        dev.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0);
        dev.write(0, b"x"); // not yet flushed: no newline
        dev.flush();
        assert_eq!(std::fs::read(&dir).unwrap(), b"hi\nx");
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn odd_accesses_do_not_panic() {
        let mut dev = SerialDevice::new(Console::Off, None);
        dev.write(0, &[]);
        dev.read(0, &mut []);
        dev.write(u64::MAX, &[1, 2, 3, 4]);
        let mut four = [0xffu8; 4];
        dev.read(1, &mut four);
        assert_eq!(&four[1..], &[0, 0, 0]);
    }
}

//! The 8250 UART (vm-superio's model) on the port-I/O bus, writing guest output
//! to a [`Console`]: stdout, a file (at most [`CONSOLE_FILE_CAP`] bytes), or
//! nowhere, optionally showing each line to a [`LineWatch`]. Its interrupt
//! line is optional (an eventfd registered as an irqfd for Linux guests;
//! kernel-less guests poll).

use std::fs::File;
use std::io::{self, LineWriter, Write};
use std::path::Path;

pub use vm_superio::serial::SerialState;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;

/// Base port of COM1 and the length of its register window.
pub const COM1_BASE: u64 = 0x3f8;
/// Length of the UART register window.
pub const COM1_LEN: u64 = 8;

/// Most bytes a console file receives. A guest printing without end would
/// otherwise fill the host's disk (or its jail's file-size rlimit); past the
/// cap one marker line is written and the rest is dropped. Boot messages, what
/// the console is for, come first and are kept.
pub const CONSOLE_FILE_CAP: u64 = 4 << 20;

/// Passes at most `cap` bytes to `inner`, then one marker line; later output
/// is accepted and dropped (the guest never blocks on its console).
struct Capped<W: Write> {
    inner: W,
    left: u64,
    dropped: bool,
}

impl<W: Write> Capped<W> {
    fn new(inner: W, cap: u64) -> Self {
        Self {
            inner,
            left: cap,
            dropped: false,
        }
    }
}

impl<W: Write> Write for Capped<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let take = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if take == 0 {
            if !self.dropped && !buf.is_empty() {
                self.dropped = true;
                self.inner
                    .write_all(b"\n[ember-vmm: console cap reached; later output dropped]\n")?;
            }
            return Ok(buf.len());
        }
        let n = self.inner.write(&buf[..take])?;
        self.left -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Sees each complete console line (without its line end; at most
/// [`WATCH_LINE_MAX`] bytes of it), whatever the console's destination.
pub type LineWatch = Box<dyn FnMut(&[u8]) + Send>;

/// Longest line prefix a [`LineWatch`] is shown (the rest is not kept).
pub const WATCH_LINE_MAX: usize = 512;

/// Shows every line to `watch`, then passes the bytes to `inner`.
struct Watched {
    inner: Box<dyn Write + Send>,
    line: Vec<u8>,
    watch: LineWatch,
}

impl Write for Watched {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf).unwrap_or(buf.len());
        for &b in &buf[..n] {
            match b {
                b'\n' => {
                    (self.watch)(&self.line);
                    self.line.clear();
                }
                b'\r' => {}
                _ if self.line.len() < WATCH_LINE_MAX => self.line.push(b),
                _ => {}
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

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
            Console::File(f) => Box::new(LineWriter::new(Capped::new(f, CONSOLE_FILE_CAP))),
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

/// A UART state that cannot be restored (vm-superio's reason).
#[derive(Debug, thiserror::Error)]
#[error("bad UART state: {0}")]
pub struct SerialStateError(String);

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

    /// Like [`SerialDevice::new`], with every console line also shown to
    /// `watch` (e.g. to notice a guest kernel's panic message).
    pub fn watched(console: Console, irq: Option<EventFd>, watch: LineWatch) -> Self {
        let writer = Watched {
            inner: console.into_writer(),
            line: Vec::new(),
            watch,
        };
        SerialDevice {
            uart: Serial::new(SerialIrq(irq), Box::new(writer)),
        }
    }

    /// The UART's registers and receive FIFO, for a snapshot.
    pub fn state(&self) -> SerialState {
        self.uart.state()
    }

    /// A UART like [`SerialDevice::new`] with the registers and FIFO of
    /// `state` (a snapshot's). A FIFO longer than the UART's is an error.
    pub fn from_state(
        console: Console,
        irq: Option<EventFd>,
        state: &SerialState,
    ) -> Result<Self, SerialStateError> {
        Serial::from_state(
            state,
            SerialIrq(irq),
            vm_superio::serial::NoEvents,
            console.into_writer(),
        )
        .map(|uart| SerialDevice { uart })
        .map_err(|e| SerialStateError(format!("{e:?}")))
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
    fn a_console_file_stops_at_its_cap() {
        let mut w = Capped::new(Vec::new(), 10);
        w.write_all(b"0123456").unwrap();
        w.write_all(b"789abc").unwrap();
        w.write_all(b"more and more").unwrap();
        w.write_all(b"and more").unwrap();
        let out = String::from_utf8(w.inner).unwrap();
        assert_eq!(
            out,
            "0123456789\n[ember-vmm: console cap reached; later output dropped]\n"
        );
        // Through the device: a guest printing 5 MiB leaves a file of the cap.
        let path = std::env::temp_dir().join(format!("ember-serial-cap-{}", std::process::id()));
        let mut dev = SerialDevice::new(Console::file(&path).unwrap(), None);
        let line = [b'x'; 1023];
        for _ in 0..5 * 1024 {
            for b in line.iter().chain(b"\n") {
                dev.write(0, &[*b]);
            }
        }
        dev.flush();
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::remove_file(&path).unwrap();
        assert!(
            (CONSOLE_FILE_CAP..CONSOLE_FILE_CAP + 100).contains(&len),
            "{len} bytes"
        );
    }

    #[test]
    fn a_watch_sees_whole_lines_even_with_the_console_off() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
        let sink = seen.clone();
        let watch: LineWatch = Box::new(move |l| sink.lock().unwrap().push(l.to_vec()));
        let mut dev = SerialDevice::watched(Console::Off, None, watch);
        let long = vec![b'y'; WATCH_LINE_MAX + 10];
        for b in b"one\r\ntw"
            .iter()
            .chain(b"o\n")
            .chain(&long)
            .chain(b"\nrest")
        {
            dev.write(0, &[*b]);
        }
        let got = seen.lock().unwrap().clone();
        assert_eq!(got.len(), 3, "three complete lines");
        assert_eq!(got[0], b"one");
        assert_eq!(got[1], b"two");
        assert_eq!(
            got[2],
            vec![b'y'; WATCH_LINE_MAX],
            "a long line is cut, not kept whole"
        );
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

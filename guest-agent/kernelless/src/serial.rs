//! Console output through the first 8250 UART (`abi::PORT_SERIAL`), one `out`
//! per byte (each is a VM exit, ~8 µs on PVM hosts: keep output short), and the
//! `print!`/`println!` macros.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

static LOCK: AtomicBool = AtomicBool::new(false);

/// The serial console as a `fmt::Write`.
pub struct Serial;

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_bytes(s.as_bytes());
        Ok(())
    }
}

/// Writes raw bytes to the console.
pub fn write_bytes(bytes: &[u8]) {
    for &b in bytes {
        crate::port::outb(ember_abi::guest::PORT_SERIAL, b);
    }
}

/// Nothing is buffered in the guest; kept so that `exit` documents the intent.
pub fn flush() {}

/// Releases the print lock (the panic handler may run while it is held).
pub fn force_unlock() {
    LOCK.store(false, Ordering::Release);
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments) {
    while LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    let _ = Serial.write_fmt(args);
    LOCK.store(false, Ordering::Release);
}

/// Prints to the serial console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::serial::_print(format_args!($($arg)*)) };
}

/// Prints a line to the serial console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::serial::_print(format_args!("{}\n", format_args!($($arg)*))) };
}

//! Test guest: a hostile agent (issue 13's "the guest is an adversary"). It
//! connects to the host like `ember-wasm-agent`, sends an honest `Ready`,
//! reads `Init`, and then behaves as the function's handler names:
//! - `honest`: `InitDone`, then answers every `Invoke` with its payload;
//! - `trickle-init`: answers `Init` with a frame trickled one byte every
//!   100 ms (a `Log` announcing 60,000 bytes), forever;
//! - `trickle-result`: `InitDone`, then answers `Invoke` with a trickled
//!   `Result` (announcing 1 MiB), forever;
//! - `bomb`: `InitDone`, then answers `Invoke` with the header of a 64 MiB
//!   `Init` frame (the one kind allowed that much, and only host -> agent)
//!   and nothing else;
//! - `bomb-result`: `InitDone`, then the header of the largest `Result` a
//!   frame may announce, 4 KiB of it, and silence;
//! - `flood`: `InitDone`, then answers `Invoke` with `Log` frames as fast as
//!   the host takes them, forever;
//! - `credit-storm`: `InitDone`, then answers `Invoke` by asking for a
//!   credit update again the moment the last one is answered, forever (a
//!   ping-pong of the host's vsock thread against this vCPU);
//! - `spin`: `InitDone`, then answers `Invoke` by spinning, forever.
//!
//! Silence is spent polling the device, so the VM stays alive until the host
//! kills it. Exit codes: 10 no vsock device, 11 connect failed, 13 I/O.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use ember_abi::guest::device_id;
use ember_abi::protocol::{
    AgentKind, FrameDecoder, LogStream, Message, AGENT_PORT, MAX_FRAME, VERSION,
};
use ember_guest::virtio::vsock::{ConnId, Vsock, VsockConfig};

ember_rt::entry!(main);

/// Gap between two trickled bytes.
const STEP_NS: u64 = 100_000_000;
/// Frame kinds (frame header byte 3; DESIGN.md, "Host↔agent protocol").
const KIND_INIT: u8 = 2;
const KIND_RESULT: u8 = 6;
const KIND_LOG: u8 = 8;

fn wait() {
    ember_rt::wait(10_000);
}

/// A frame header announcing `len` body bytes of `kind`.
fn header(kind: u8, len: u32) -> Vec<u8> {
    let mut h = b"EM".to_vec();
    h.extend([VERSION, kind]);
    h.extend(len.to_le_bytes());
    h
}

struct Link {
    v: Vsock,
    id: ConnId,
    dec: FrameDecoder,
    buf: Vec<u8>,
}

impl Link {
    fn send(&mut self, bytes: &[u8]) -> bool {
        self.v.send_all(self.id, bytes, &mut wait).is_ok()
    }

    fn send_msg(&mut self, m: &Message) -> bool {
        m.to_frame().is_ok_and(|f| self.send(&f))
    }

    /// The next whole message from the host (`None`: it hung up).
    fn recv(&mut self) -> Option<Message> {
        loop {
            match self.dec.next_message() {
                Ok(Some(m)) => return Some(m),
                Ok(None) => {}
                Err(_) => return None,
            }
            match self.v.recv_blocking(self.id, &mut self.buf, &mut wait) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.dec.push(&self.buf[..n]),
            }
        }
    }

    /// Waits `ns` of guest time, keeping the device serviced.
    fn pause(&mut self, ns: u64) {
        let end = ember_rt::now_ns() + ns;
        while ember_rt::now_ns() < end {
            if !self.v.poll() {
                wait();
            }
        }
    }

    /// Sends `bytes` one at a time, [`STEP_NS`] apart, then stays silent.
    fn trickle(&mut self, bytes: &[u8]) -> ! {
        for b in bytes {
            if !self.send(&[*b]) {
                break;
            }
            self.pause(STEP_NS);
        }
        self.stall()
    }

    fn stall(&mut self) -> ! {
        loop {
            self.pause(1_000_000_000);
        }
    }

    /// Waits for the next `Invoke`; returns its request id and payload.
    fn next_invoke(&mut self) -> Option<(String, Vec<u8>)> {
        loop {
            match self.recv()? {
                Message::Invoke {
                    request_id,
                    payload,
                    ..
                } => return Some((request_id, payload)),
                Message::Shutdown => return None,
                _ => {}
            }
        }
    }
}

fn main(info: &'static ember_rt::StartInfo) -> i32 {
    let Some(dev) = info
        .devices()
        .iter()
        .find(|d| d.device_id == device_id::VSOCK)
    else {
        return 10;
    };
    // SAFETY: the VMM announced a virtio-mmio vsock window at this address;
    // nothing else in this guest drives it.
    let Ok(mut v) = (unsafe { Vsock::new(dev.base as usize, VsockConfig::default()) }) else {
        return 10;
    };
    let Ok(id) = v.connect_blocking(AGENT_PORT, &mut wait) else {
        return 11;
    };
    let mut link = Link {
        v,
        id,
        dec: FrameDecoder::new(),
        buf: vec![0; 16 * 1024],
    };
    let ready = Message::Ready {
        protocol_version: VERSION,
        agent: AgentKind::Wasm,
        agent_version: String::from("hostile-agent"),
        boot_us: 0,
        timings: Vec::new(),
    };
    if !link.send_msg(&ready) {
        return 13;
    }
    let handler = loop {
        match link.recv() {
            Some(Message::Init { handler, .. }) => break handler,
            Some(_) => {}
            None => return 0,
        }
    };
    if handler == "trickle-init" {
        let mut frame = header(KIND_LOG, 60_000);
        frame.resize(frame.len() + 60_000, b'x');
        link.trickle(&frame);
    }
    if !link.send_msg(&Message::InitDone { init_us: 1 }) {
        return 13;
    }
    while let Some((request_id, payload)) = link.next_invoke() {
        match handler.as_str() {
            "trickle-result" => {
                let mut frame = header(KIND_RESULT, 1 << 20);
                frame.resize(frame.len() + (1 << 20), 0);
                link.trickle(&frame);
            }
            "bomb" => {
                link.send(&header(KIND_INIT, 64 << 20));
                link.stall();
            }
            "bomb-result" => {
                let mut frame = header(KIND_RESULT, MAX_FRAME as u32);
                frame.resize(frame.len() + 4096, 0);
                link.send(&frame);
                link.stall();
            }
            "spin" => loop {
                core::hint::spin_loop();
            },
            "credit-storm" => loop {
                if link.v.request_credit(link.id).is_err() {
                    return 13;
                }
                link.v.poll_or_wait(&mut wait);
            },
            "flood" => {
                let log = Message::Log {
                    request_id,
                    stream: LogStream::Stdout,
                    line: String::from("flood flood flood flood flood flood flood flood"),
                };
                let Ok(frame) = log.to_frame() else {
                    return 13;
                };
                let many = frame.repeat(64);
                while link.send(&many) {}
                return 13;
            }
            _ => {
                let result = Message::Result {
                    request_id,
                    payload,
                    duration_us: 1,
                    max_memory_kib: 1,
                };
                if !link.send_msg(&result) {
                    return 13;
                }
            }
        }
    }
    0
}

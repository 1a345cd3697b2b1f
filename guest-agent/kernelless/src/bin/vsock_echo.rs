//! Test guest: a vsock echo server. Arguments: `[PORT] [CONNS]` (default 52,
//! 0 = forever). Listens on PORT, serves any number of connections at once,
//! echoes every byte back, closes a connection when the host closes its
//! side; after CONNS connections have closed it exits 0. Prints
//! `vsock: echo listening cid=C port=P` when ready.
//! Exit codes: 0 done, 4 no vsock device / bad init.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;
use ember_abi::guest::device_id;
use ember_guest::virtio::vsock::{ConnId, Vsock, VsockConfig, VsockError};
use ember_rt::{println, StartInfo};

ember_rt::entry!(main);

struct Echo {
    id: ConnId,
    pending: Vec<u8>,
    off: usize,
}

/// Spins briefly before sleeping: a reply usually comes within microseconds,
/// and a PORT_WAIT round trip costs more than that.
struct Idle(u32);
impl Idle {
    fn idle(&mut self) {
        if self.0 < 2000 {
            self.0 += 1;
            core::hint::spin_loop();
        } else {
            self.0 = 0;
            ember_rt::wait(10_000);
        }
    }
}

fn main(info: &'static StartInfo) -> i32 {
    let mut args = info.args().split_whitespace();
    let port: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(52);
    let stop_after: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let Some(dev) = info
        .devices()
        .iter()
        .find(|d| d.device_id == device_id::VSOCK)
    else {
        println!("vsock: no vsock device");
        return 4;
    };
    let cfg = VsockConfig {
        rx_buffers: 64,
        tx_buffers: 64,
        ..VsockConfig::default()
    };
    // SAFETY: the VMM announced a virtio-mmio vsock window at this address;
    // nothing else in this guest drives it.
    let mut v = match unsafe { Vsock::new(dev.base as usize, cfg) } {
        Ok(v) => v,
        Err(e) => {
            println!("vsock: init failed: {e}");
            return 4;
        }
    };
    if v.listen(port).is_err() {
        return 4;
    }
    println!("vsock: echo listening cid={} port={port}", v.guest_cid());
    let mut conns: Vec<Echo> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut closed = 0usize;
    let mut closing: Vec<ConnId> = Vec::new();
    let mut idle = Idle(0);
    loop {
        let mut work = v.poll();
        while let Some(id) = v.accept(port) {
            conns.push(Echo {
                id,
                pending: Vec::with_capacity(64 * 1024),
                off: 0,
            });
            work = true;
        }
        conns.retain_mut(|c| {
            loop {
                if c.off < c.pending.len() {
                    match v.send(c.id, &c.pending[c.off..]) {
                        Ok(n) => {
                            c.off += n;
                            work = true;
                            continue;
                        }
                        Err(VsockError::WouldBlock) => return true,
                        Err(_) => break,
                    }
                }
                match v.recv(c.id, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        c.pending.clear();
                        c.pending.extend_from_slice(&buf[..n]);
                        c.off = 0;
                        work = true;
                    }
                    Err(VsockError::WouldBlock) => return true,
                    Err(_) => break,
                }
            }
            if v.close(c.id).is_ok() {
                closing.push(c.id);
            }
            closed += 1;
            work = true;
            false
        });
        if stop_after != 0 && closed >= stop_after {
            // A clean close ends with the host's RST, which the device sends
            // only after it has written every byte we sent to the host
            // socket: wait for it (bounded, ~30 s), so no echoed byte still
            // buffered in the VMM is lost when this VM ends.
            let mut sleeps = 0u32;
            while !closing.is_empty() && sleeps < 3000 {
                let progress = v.poll();
                closing.retain(|id| v.state(*id).is_some());
                if progress {
                    idle.0 = 0;
                } else if idle.0 >= 2000 {
                    sleeps += 1;
                    idle.idle();
                } else {
                    idle.idle();
                }
            }
            println!("vsock: echo done conns={closed}");
            return 0;
        }
        if work {
            idle.0 = 0;
        } else {
            idle.idle();
        }
    }
}

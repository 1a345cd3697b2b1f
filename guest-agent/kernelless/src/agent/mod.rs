//! The kernel-less wasm agent's I/O loop: one vsock connection to the host
//! (CID 2, port `protocol::AGENT_PORT`), frames in through the streaming
//! decoder, replies out, the `WasmAgent` state machine in between. Idle time
//! is spent in PORT_WAIT (the vCPU sleeps until the vsock device interrupts).
//! After a snapshot restore the device resets the transport (every
//! connection gone): the agent connects again and sends a new `Ready`
//! whose timings say it was restored (`restored_generation`) and whether
//! Init already ran (`initialized`); its Init state is kept, never re-run.
//! Before that `Ready` the function's random streams are re-keyed with the
//! clone's fresh seed and its `ember_after_restore` hook runs (SnapStart),
//! so no two restored environments share a secret drawn after restore.

pub mod clock;

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use ember_abi::protocol::{FrameDecoder, LogStream, Message, AGENT_PORT};
use ember_guest::virtio::vsock::{ConnId, Vsock, VsockConfig, VsockError};
use ember_guest::wasm::{Control, WasmAgent};

use clock::TscClock;

/// Exit codes of the agent VM (ember-vmm exits with them).
pub mod exit {
    /// The host asked for shutdown or closed the connection.
    pub const OK: i32 = 0;
    /// No vsock device, or it would not come up.
    pub const NO_DEVICE: i32 = 10;
    /// The host's listener refused the connection.
    pub const CONNECT_FAILED: i32 = 11;
    /// The host broke framing (stream out of sync); a Fatal was sent first.
    pub const PROTOCOL: i32 = 12;
    /// The connection failed mid-conversation.
    pub const IO: i32 = 13;
}

/// Buffer sizes: small enough that bring-up stays fast (every buffer page is
/// touched once, and first touches are expensive under PVM; buffers of
/// 16 KiB - 64 fit the allocator's 16 KiB class with the vsock header), large
/// enough that a 6 MiB payload streams without stalls.
const VSOCK: VsockConfig = VsockConfig {
    rx_buffers: 8,
    tx_buffers: 8,
    buf_size: 16 * 1024 - 64,
    conn_buf_alloc: 1024 * 1024,
};

/// Spin briefly (replies often arrive within microseconds during a
/// conversation), then sleep in PORT_WAIT until the device interrupts.
fn waiter() -> impl FnMut() {
    let mut spins = 0u32;
    move || {
        if spins < 1000 {
            spins += 1;
            core::hint::spin_loop();
        } else {
            spins = 0;
            // The timeout is only a safety net against a lost interrupt.
            ember_rt::wait(1_000_000);
        }
    }
}

/// Runs the agent; returns the VM's exit code.
pub fn run(info: &'static ember_rt::StartInfo) -> i32 {
    let clock = Arc::new(TscClock::new(info));
    let t_vsock = clock.since_entry_us();
    let Some(dev) = info
        .devices()
        .iter()
        .find(|d| d.device_id == ember_abi::guest::device_id::VSOCK)
    else {
        ember_rt::println!("ember-wasm-agent: no vsock device");
        return exit::NO_DEVICE;
    };
    // SAFETY: the VMM announced a virtio-mmio vsock window at this address
    // and nothing else in this guest drives it.
    let mut vsock = match unsafe { Vsock::new(dev.base as usize, VSOCK) } {
        Ok(v) => v,
        Err(e) => {
            ember_rt::println!("ember-wasm-agent: vsock init failed: {e}");
            return exit::NO_DEVICE;
        }
    };
    let t_connect = clock.since_entry_us();
    let mut w = waiter();
    let id = match vsock.connect_blocking(AGENT_PORT, &mut w) {
        Ok(id) => id,
        Err(e) => {
            ember_rt::println!("ember-wasm-agent: connect to host port {AGENT_PORT} failed: {e}");
            return exit::CONNECT_FAILED;
        }
    };
    let boot_us = clock.since_entry_us();
    let timings = vec![
        (String::from("vsock_init_start"), t_vsock),
        (String::from("connect_start"), t_connect),
        (String::from("connected"), boot_us),
    ];
    let mut conn = Conn { vsock, id };
    if conn.send(&[WasmAgent::ready(boot_us, timings)]).is_err() {
        return exit::IO;
    }
    let mut agent = WasmAgent::new(clock.clone());
    let mut generation = ember_rt::random::generation();
    loop {
        let resets = conn.vsock.transport_resets();
        match serve(&mut conn, &mut agent, resets) {
            Served::Exit(code) => return code,
            Served::TransportReset => {
                if let Err(code) = reconnect(&mut conn, &mut agent, &clock, &mut generation) {
                    return code;
                }
            }
        }
    }
}

/// After a transport reset: a new connection to the host and a `Ready`
/// saying this agent was restored and whether it is initialised.
fn reconnect(
    conn: &mut Conn,
    agent: &mut WasmAgent,
    clock: &TscClock,
    generation: &mut u64,
) -> Result<(), i32> {
    let t0 = clock.since_entry_us();
    // A restored clone: a fresh seed from the VMM. Re-key and run the hook
    // before the host can send the first invocation.
    let mut hook_logs = Vec::new();
    let mut after_restore = Vec::new();
    if let Some(seed) = ember_rt::random::new_generation(generation) {
        let h0 = clock.since_entry_us();
        let failed = match agent.after_restore(&seed) {
            Ok(logs) => {
                hook_logs = logs;
                0
            }
            Err(why) => {
                hook_logs.push((LogStream::Agent, why));
                1
            }
        };
        after_restore.push((
            String::from("after_restore_us"),
            clock.since_entry_us().saturating_sub(h0),
        ));
        after_restore.push((String::from("after_restore_failed"), failed));
    }
    let _ = conn.vsock.close(conn.id);
    let mut w = waiter();
    conn.id = match conn.vsock.connect_blocking(AGENT_PORT, &mut w) {
        Ok(id) => id,
        Err(e) => {
            ember_rt::println!("ember-wasm-agent: reconnect to host port {AGENT_PORT} failed: {e}");
            return Err(exit::CONNECT_FAILED);
        }
    };
    let reconnect_us = clock.since_entry_us().saturating_sub(t0);
    let mut timings = vec![
        (
            String::from("restored_generation"),
            ember_rt::random::generation(),
        ),
        (
            String::from("initialized"),
            u64::from(agent.is_initialized()),
        ),
        (String::from("reconnect_us"), reconnect_us),
    ];
    timings.extend(after_restore);
    // The hook's lines go after `Ready`, as init-phase logs (no request id).
    let mut msgs = vec![WasmAgent::ready(reconnect_us, timings)];
    msgs.extend(hook_logs.into_iter().map(|(stream, line)| Message::Log {
        request_id: String::new(),
        stream,
        line,
    }));
    conn.send(&msgs).map_err(|_| exit::IO)
}

/// How a conversation ended.
enum Served {
    /// The VM should exit with this code.
    Exit(i32),
    /// The device reset the transport (a snapshot restore): connect again.
    TransportReset,
}

struct Conn {
    vsock: Vsock,
    id: ConnId,
}

impl Conn {
    fn send(&mut self, msgs: &[Message]) -> Result<(), VsockError> {
        let mut out = Vec::new();
        for m in msgs {
            if let Err(e) = m.encode(&mut out) {
                // Only an oversize payload can fail, and the runtime caps those;
                // report rather than drop silently.
                let line = format!("cannot encode a reply: {e}");
                let _ = Message::Log {
                    request_id: String::new(),
                    stream: LogStream::Agent,
                    line,
                }
                .encode(&mut out);
            }
        }
        let mut w = waiter();
        self.vsock.send_all(self.id, &out, &mut w)
    }

    fn close(&mut self) {
        let mut w = waiter();
        let _ = self.vsock.close_blocking(self.id, &mut w);
    }
}

fn serve(conn: &mut Conn, agent: &mut WasmAgent, resets: u64) -> Served {
    let mut decoder = FrameDecoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut replies = Vec::new();
    let mut w = waiter();
    // An end of stream or a failure caused by a transport reset is not the
    // host's doing: reconnect instead of exiting.
    let ended = |conn: &Conn, code: i32| {
        if conn.vsock.transport_resets() != resets {
            Served::TransportReset
        } else {
            Served::Exit(code)
        }
    };
    loop {
        let n = match conn.vsock.recv_blocking(conn.id, &mut buf, &mut w) {
            Ok(0) => return ended(conn, exit::OK), // the host hung up
            Ok(n) => n,
            Err(_) => return ended(conn, exit::IO),
        };
        decoder.push(&buf[..n]);
        loop {
            let msg = match decoder.next_message() {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) if e.is_recoverable() => {
                    let line = format!("dropped a malformed frame: {e}");
                    replies.push(Message::Log {
                        request_id: String::new(),
                        stream: LogStream::Agent,
                        line,
                    });
                    continue;
                }
                Err(e) => {
                    let _ = conn.send(&[Message::Fatal {
                        message: format!("protocol error: {e}"),
                    }]);
                    conn.close();
                    return Served::Exit(exit::PROTOCOL);
                }
            };
            if agent.handle(msg, &mut replies) == Control::Shutdown {
                let _ = conn.send(&replies);
                conn.close();
                return Served::Exit(exit::OK);
            }
            if conn.send(&replies).is_err() {
                return ended(conn, exit::IO);
            }
            replies.clear();
        }
        if !replies.is_empty() {
            if conn.send(&replies).is_err() {
                return ended(conn, exit::IO);
            }
            replies.clear();
        }
    }
}

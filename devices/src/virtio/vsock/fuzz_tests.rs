//! A bounded, seeded fuzz harness for the vsock packet path and the MMIO
//! transport: an in-memory guest writes arbitrary descriptor chains (wild
//! addresses, lengths, flags, loops, indirect bits), arbitrary vsock headers
//! (lying lengths, every op, any ports) and arbitrary register writes, for a
//! fixed time. It passes if nothing panics or hangs and the device still
//! serves a real connection afterwards. `EMBER_FUZZ_SECS` / `EMBER_FUZZ_SEED`
//! run it longer or elsewhere by hand.

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use super::test_guest::{TestGuest, BUF_LEN, MEM_SIZE, QSIZE};
use super::{op, Hdr, HDR_LEN, HOST_CID, TYPE_STREAM};
use crate::bus::BusDevice;

use ember_abi::xorshift::XorShift64Star as Rng;

const CID: u64 = 5;
const SCRATCH: u64 = 0x180_0000;

fn random_hdr(r: &mut Rng) -> Hdr {
    Hdr {
        src_cid: if r.chance(950) { CID } else { r.next() },
        dst_cid: if r.chance(950) { HOST_CID } else { r.next() },
        src_port: r.below(8) as u32 + 1000,
        dst_port: if r.chance(500) { 70 } else { r.next() as u32 },
        len: match r.below(4) {
            0 => 0,
            1 => r.below(128) as u32,
            2 => r.next() as u32,
            _ => r.below(70_000) as u32,
        },
        type_: if r.chance(950) {
            TYPE_STREAM
        } else {
            r.next() as u16
        },
        op: r.below(9) as u16,
        flags: r.below(4) as u32,
        buf_alloc: r.next() as u32,
        fwd_cnt: r.next() as u32,
    }
}

fn random_addr(r: &mut Rng) -> u64 {
    match r.below(5) {
        0 => r.next(),
        1 => MEM_SIZE - r.below(64),
        _ => SCRATCH + r.below(0x10_0000),
    }
}

/// One chain of 1..4 descriptors on queue `q` (indexes may collide, loop or
/// point past the queue), then published, maybe with a lying avail index.
fn random_chain(g: &mut TestGuest, r: &mut Rng, q: usize) {
    let mut b = [0u8; HDR_LEN];
    random_hdr(r).encode(&mut b);
    let at = SCRATCH + r.below(0x10_0000);
    g.mem_write(at, &b);
    let head = r.below(u64::from(QSIZE)) as u16;
    let n = 1 + r.below(4) as u16;
    for k in 0..n {
        let idx = head.wrapping_add(k) % QSIZE;
        let addr = if k == 0 && r.chance(800) {
            at
        } else {
            random_addr(r)
        };
        let len = if r.chance(700) {
            r.below(BUF_LEN * 2) as u32
        } else {
            r.next() as u32
        };
        let mut flags = r.below(8) as u16; // NEXT | WRITE | INDIRECT in any mix
        if k + 1 == n && r.chance(700) {
            flags &= !1;
        }
        let next = if r.chance(800) {
            (idx + 1) % QSIZE
        } else {
            r.next() as u16
        };
        g.put_desc(q, idx, addr, len, flags, next);
    }
    if r.chance(10) {
        g.set_avail_idx(q, r.next() as u16);
    } else {
        g.publish(q, head);
    }
}

fn random_register(g: &mut TestGuest, r: &mut Rng) {
    let off = if r.chance(500) {
        r.below(0x100) & !3
    } else {
        r.below(0x1000)
    };
    let v = (r.next() as u32).to_le_bytes();
    let len = [1usize, 2, 4, 8][r.below(4) as usize];
    if r.chance(500) {
        g.transport.write(off, &v[..len.min(4)]);
    } else {
        let mut d = [0u8; 8];
        g.transport.read(off, &mut d[..len]);
    }
}

#[test]
fn fuzz_vsock_and_transport_for_a_bounded_time() {
    let secs: u64 = std::env::var("EMBER_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let seed: u64 = std::env::var("EMBER_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_e3be);
    let dir = std::env::temp_dir().join(format!("ember-vsock-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let uds = dir.join("v.sock");
    let listener = UnixListener::bind(format!("{}_70", uds.display())).unwrap();
    listener.set_nonblocking(true).unwrap();
    let mut g = TestGuest::new(CID, &uds);
    let mut r = Rng(seed | 1);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut rounds = 0u64;
    let mut accepted = Vec::new();
    while Instant::now() < deadline {
        rounds += 1;
        match r.below(100) {
            0..=59 => random_chain(&mut g, &mut r, 1),
            60..=79 => random_chain(&mut g, &mut r, 0),
            80..=89 => {
                let h = Hdr {
                    src_cid: CID,
                    dst_cid: HOST_CID,
                    type_: TYPE_STREAM,
                    ..random_hdr(&mut r)
                };
                let len = (h.len as usize).min(4096);
                g.send(
                    &Hdr {
                        len: len as u32,
                        ..h
                    },
                    &vec![0xab; len],
                );
            }
            90..=94 => random_register(&mut g, &mut r),
            _ => g.init(),
        }
        g.pump();
        let _ = g.take_used(0);
        let _ = g.take_used(1);
        while let Ok((s, _)) = listener.accept() {
            accepted.push(s); // keep host peers open (and unread) for a while
        }
        if accepted.len() > 32 {
            accepted.clear();
        }
    }
    // Still alive: a clean guest-initiated connection works end to end.
    g.init();
    listener.set_nonblocking(false).unwrap();
    let req = Hdr {
        src_cid: CID,
        dst_cid: HOST_CID,
        src_port: 4242,
        dst_port: 70,
        type_: TYPE_STREAM,
        op: op::REQUEST,
        buf_alloc: 65536,
        ..Hdr::default()
    };
    g.send(&req, &[]);
    let pkts = g.recv();
    assert!(
        pkts.iter()
            .any(|p| p.0.op == op::RESPONSE && p.0.dst_port == 4242),
        "rounds {rounds}: {pkts:?}"
    );
    let (mut s, _) = listener.accept().unwrap();
    g.send(
        &Hdr {
            op: op::RW,
            len: 3,
            ..req
        },
        b"abc",
    );
    let mut b = [0u8; 3];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"abc");
    eprintln!("vsock fuzz: {rounds} rounds in {secs}s, seed {seed:#x}");
}

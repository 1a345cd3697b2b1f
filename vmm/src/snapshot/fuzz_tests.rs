//! A bounded, seeded fuzz harness for the state-file parser: a valid state
//! file is mutated (bit flips, overwritten runs, cut and padded lengths,
//! random counts and lengths), half the time with its checksum recomputed so
//! the mutations reach the field decoder and the validation. It passes if
//! every input either parses into a state that validates again or is refused
//! with an error: never a panic, never an allocation the input did not pay
//! for. `EMBER_FUZZ_SECS` / `EMBER_FUZZ_SEED` run it longer or elsewhere.

use std::time::{Duration, Instant};

use kvm_bindings::{kvm_regs, kvm_sregs};
use sha2::{Digest, Sha256};

use super::memory_file::Region;
use super::state::{GuestKind, SerialRegs, VmState};
use super::vcpu_state::VcpuState;
use super::virtio_state::SavedVirtio;
use crate::boot::cpl3;
use ember_devices::virtio::state::{
    DeviceState, QueueState, TransportState, VirtioState, VsockState,
};

use ember_abi::xorshift::XorShift64Star as Rng;

/// A valid two-vCPU kernel-less state, built without KVM.
fn valid_state() -> VmState {
    let sregs = cpl3::sregs(kvm_sregs::default(), cpl3::Features::default());
    let vcpu = |i: u8| VcpuState {
        regs: kvm_regs {
            rflags: cpl3::RFLAGS,
            rip: 0x40_0000,
            rsp: (16 << 20) - 8 - i as u64 * (1 << 20),
            ..Default::default()
        },
        sregs,
        fpu: Default::default(),
        xcrs: None,
        xsave: Some(Box::new([7; 1024])),
        msrs: vec![(0x10, 12345)],
    };
    VmState {
        kind: GuestKind::Kernelless,
        mem_size: 16 << 20,
        smt: false,
        regions: vec![Region {
            guest_addr: 0,
            len: 16 << 20,
            file_offset: 0,
        }],
        vcpus: vec![vcpu(0), vcpu(1)],
        serial: SerialRegs {
            regs: [12, 0, 0, 1, 3, 0x60, 8, 0xb0, 0],
            fifo: vec![1, 2, 3],
        },
        device_config: r#"{"vsock":{"guest_cid":3,"uds_path":"/tmp/v.sock"}}"#.into(),
        virtio: vec![SavedVirtio {
            section: "vsock".into(),
            state: VirtioState {
                transport: TransportState {
                    device_type: 19,
                    status: 15,
                    activated: true,
                    driver_features: 1 << 32,
                    queues: (0..3u64)
                        .map(|i| QueueState {
                            size: 4,
                            ready: true,
                            desc: 0x10000 + i * 0x1000,
                            avail: 0x10400 + i * 0x1000,
                            used: 0x10800 + i * 0x1000,
                            next_avail: 2,
                            next_used: 1,
                        })
                        .collect(),
                    ..Default::default()
                },
                device: DeviceState::Vsock(VsockState {
                    guest_cid: 3,
                    acked_features: 1 << 32,
                }),
            },
        }],
    }
}

fn reseal(b: &mut [u8]) {
    if b.len() >= 52 {
        let sum = Sha256::digest(&b[52..]);
        b[20..52].copy_from_slice(&sum);
    }
}

fn mutate(r: &mut Rng, good: &[u8]) -> Vec<u8> {
    let mut b = good.to_vec();
    for _ in 0..1 + r.below(4) {
        let len = b.len() as u64;
        match r.below(6) {
            0 => {
                let i = r.below(len) as usize;
                b[i] ^= 1 << r.below(8);
            }
            1 => {
                // A random 1/2/4/8-byte value (counts, lengths, sizes).
                // (An earlier cut may have left fewer than `w` bytes.)
                let w = 1usize << r.below(4);
                if b.len() >= w {
                    let i = r.below((b.len() - w + 1) as u64) as usize;
                    let v = r.next().to_le_bytes();
                    b[i..i + w].copy_from_slice(&v[..w]);
                }
            }
            2 => b.truncate(r.below(len + 1) as usize),
            3 => b.extend((0..r.below(64)).map(|_| r.next() as u8)),
            4 => {
                // A body byte that decodes as a count or flag: small values.
                let i = 52 + r.below(len.saturating_sub(52)) as usize;
                if i < b.len() {
                    b[i] = r.below(4) as u8;
                }
            }
            _ => {
                let i = r.below(len) as usize;
                let n = r.below(32) as usize;
                for x in b.iter_mut().skip(i).take(n) {
                    *x = r.next() as u8;
                }
            }
        }
        if b.is_empty() {
            break;
        }
    }
    if r.below(2) == 0 {
        reseal(&mut b);
    }
    b
}

#[test]
fn the_state_parser_survives_mutated_files() {
    let secs = std::env::var("EMBER_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let seed = std::env::var("EMBER_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_5a75);
    let good = valid_state().to_bytes();
    VmState::from_bytes(&good).expect("the base state is valid");
    let mut r = Rng(seed);
    let (mut accepted, mut refused, mut runs) = (0u64, 0u64, 0u64);
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        for _ in 0..200 {
            let input = mutate(&mut r, &good);
            match VmState::from_bytes(&input) {
                Ok(state) => {
                    // Whatever parses must write back to a file that parses.
                    VmState::from_bytes(&state.to_bytes()).expect("re-encoded state");
                    accepted += 1;
                }
                Err(_) => refused += 1,
            }
            runs += 1;
        }
    }
    eprintln!("state fuzz: {runs} inputs, {accepted} accepted, {refused} refused (seed {seed:#x})");
    assert!(refused > runs / 2, "mutations rarely reached a refusal");
}

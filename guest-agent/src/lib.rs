//! The guest side of ember, as a `no_std` library: the kernel-less guest ABI
//! shared with `ember-vmm`, the host↔agent protocol shared with `emberd`, and
//! the guest-side virtio driver. The Linux agent binary builds on it with `std`.
#![cfg_attr(not(any(feature = "std", test)), no_std)]

extern crate alloc;

pub mod abi;
pub mod civil;
#[cfg(feature = "linux-agent")]
pub mod linux;
pub mod protocol;
pub mod virtio;
pub mod wasm;

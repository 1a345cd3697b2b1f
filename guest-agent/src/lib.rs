//! The guest side of ember, as a `no_std` library: the guest-side virtio
//! driver and the wasm runtime of the kernel-less agent. The Linux agent binary
//! builds on it with `std`. The contracts it speaks (guest ABI, host↔agent
//! protocol, vsock header, artefact format) live in `ember-abi`.
#![cfg_attr(not(any(feature = "std", test)), no_std)]

extern crate alloc;

#[cfg(feature = "linux-agent")]
pub mod linux;
pub mod virtio;
pub mod wasm;

//! ember's contracts, one definition each, for both sides of every seam: the
//! kernel-less guest ABI (`ember-vmm` ↔ guest, [`guest`]), the host↔agent
//! protocol (`emberd` ↔ agents, [`protocol`]), the virtio-vsock packet header
//! (device ↔ guest driver, [`vsock`]), the sealed wasm artefact (`emberd`'s
//! compiler ↔ the kernel-less agent, [`artefact`]), and the command lines
//! and exit codes `emberd` and the VMM binaries share ([`vmm_args`],
//! [`jailer_args`], [`exit`]), the one-line error format they print
//! ([`error`]), and the [`xorshift`] test stream. `no_std` + `alloc`, so
//! freestanding guests link it as is; depends on nothing of ember.
#![cfg_attr(not(any(feature = "std", test)), no_std)]

extern crate alloc;

pub mod artefact;
pub mod civil;
pub mod error;
pub mod exit;
pub mod guest;
pub mod jailer_args;
pub mod protocol;
pub mod vmm_args;
pub mod vsock;
pub mod xorshift;

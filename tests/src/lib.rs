//! Shared helpers for ember's integration tests: locating binaries and guest ELFs.

pub mod agent_snapshot;
pub mod blknet;
pub mod fc_api;
pub mod guests;
pub mod initramfs;
pub mod linux_guest;
pub mod probes;
pub mod vmm;

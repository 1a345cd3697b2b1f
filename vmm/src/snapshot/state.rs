//! The state file: everything of a paused VM that is not guest RAM, in one
//! versioned, checksummed file. Layout (little-endian):
//!
//! ```text
//! magic "EMBERSNP" | version u32 | body length u64 | SHA-256 of body (32) | body
//! body: guest kind u8 | mem size u64 | vCPU count u8 | smt u8
//!       | regions (count, then guest addr, len, file offset) | the memory file's size
//!       | vCPU states | COM1 state | device config (JSON) | virtio device states
//! ```
//!
//! Version 2 added the virtio device states (`virtio_state.rs`); version 1
//! files (no devices) are refused by version like any other.
//!
//! [`VmState::from_bytes`] checks the envelope (length, magic, version,
//! checksum), decodes every field with bounds, then validates what the
//! fields mean (memory layout, vCPU entry state, device set) before anything
//! is built: a file that fails any check restores nothing.

use sha2::{Digest, Sha256};

use super::codec::{CodecError, Reader, Writer};
use super::memory_file::Region;
use super::vcpu_state::{InvalidVcpu, VcpuState};
use super::virtio_state::{self, SavedVirtio};
use crate::boot::kernelless::STACK_SIZE;
use crate::config::MAX_VCPUS;
use crate::memory::{self, MAX_MEM_MIB, MIN_MEM_MIB, MMIO_GAP_START};

/// First bytes of every state file.
pub const MAGIC: [u8; 8] = *b"EMBERSNP";
/// The format this VMM writes and reads.
pub const VERSION: u32 = 2;
/// magic + version + body length + checksum.
const HEADER_LEN: usize = 8 + 4 + 8 + 32;
/// Largest state file accepted (a 32-vCPU state with XSAVE areas is ~200 KiB).
pub const MAX_STATE_FILE: usize = 4 << 20;
/// The config section of the vsock device (`device_manager::vsock::NAME`).
/// The config sections whose devices a snapshot holds, in the order
/// `devices::attach_all` attaches them, with their virtio device type.
const SAVEABLE: [(&str, u32); 2] = [
    (
        crate::device_manager::vsock::NAME,
        ember_devices::virtio::device_type::VSOCK,
    ),
    (
        crate::device_manager::entropy::NAME,
        ember_devices::virtio::device_type::RNG,
    ),
];
/// Most bytes of device configuration JSON.
const MAX_DEVICE_CONFIG: usize = 64 * 1024;
/// Most bytes waiting in the UART's receive FIFO (vm-superio's FIFO size).
const MAX_SERIAL_FIFO: usize = 64;

/// Which kind of guest a snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestKind {
    Kernelless = 1,
}

/// Why a state file was refused.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file too large: {0} bytes (max {MAX_STATE_FILE})")]
    TooLarge(u64),
    #[error("not an ember state file (bad magic)")]
    BadMagic,
    #[error(
        "state file version {found} is not supported (this ember-vmm reads version {VERSION})"
    )]
    WrongVersion { found: u32 },
    #[error(
        "state file truncated or padded: header says {expected} bytes of body, file has {actual}"
    )]
    Length { expected: u64, actual: u64 },
    #[error("state file checksum mismatch (corrupted)")]
    Checksum,
    #[error("state file malformed")]
    Codec(#[from] CodecError),
    #[error("state file: {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("state file: vCPU {index}")]
    Vcpu {
        index: usize,
        #[source]
        source: InvalidVcpu,
    },
}

pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> StateError {
    StateError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// The 16550 UART's registers (vm-superio's `SerialState`, kept here as
/// plain bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SerialRegs {
    /// DLL, DLH, IER, IIR, LCR, LSR, MCR, MSR, SCR.
    pub regs: [u8; 9],
    pub fifo: Vec<u8>,
}

/// A paused VM, minus its RAM.
#[derive(Debug, Clone)]
pub struct VmState {
    pub kind: GuestKind,
    pub mem_size: u64,
    pub smt: bool,
    pub regions: Vec<Region>,
    pub vcpus: Vec<VcpuState>,
    pub serial: SerialRegs,
    /// The device sections of the VM's config (`VmConfig::devices`) as JSON:
    /// what the host side of every device is rebuilt from.
    pub device_config: String,
    /// The virtio devices' states, in the order the VM attached them.
    pub virtio: Vec<SavedVirtio>,
}

impl VmState {
    /// The whole file: header and body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(self.kind as u8);
        w.u64(self.mem_size);
        w.u8(self.vcpus.len() as u8);
        w.bool(self.smt);
        w.u32(self.regions.len() as u32);
        for r in &self.regions {
            w.u64(r.guest_addr);
            w.u64(r.len);
            w.u64(r.file_offset);
        }
        for v in &self.vcpus {
            v.encode(&mut w);
        }
        w.fixed(&self.serial.regs);
        w.bytes(&self.serial.fifo);
        w.bytes(self.device_config.as_bytes());
        virtio_state::encode(&mut w, &self.virtio);
        let body = w.into_bytes();
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&Sha256::digest(&body));
        out.extend_from_slice(&body);
        out
    }

    /// Parses and validates a whole state file.
    pub fn from_bytes(file: &[u8]) -> Result<VmState, StateError> {
        if file.len() > MAX_STATE_FILE {
            return Err(StateError::TooLarge(file.len() as u64));
        }
        let mut h = Reader::new(file);
        if h.fixed("magic", 8)? != MAGIC {
            return Err(StateError::BadMagic);
        }
        let found = h.u32("version")?;
        if found != VERSION {
            return Err(StateError::WrongVersion { found });
        }
        let expected = h.u64("body length")?;
        let sum = h.fixed("checksum", 32)?;
        let body = &file[HEADER_LEN..];
        if body.len() as u64 != expected {
            return Err(StateError::Length {
                expected,
                actual: body.len() as u64,
            });
        }
        if Sha256::digest(body).as_slice() != sum {
            return Err(StateError::Checksum);
        }
        let mut r = Reader::new(body);
        let state = Self::decode(&mut r)?;
        r.finish()?;
        state.validate()?;
        Ok(state)
    }

    fn decode(r: &mut Reader) -> Result<VmState, StateError> {
        let kind = match r.u8("guest kind")? {
            1 => GuestKind::Kernelless,
            k => return Err(invalid("guest kind", format!("unknown kind {k}"))),
        };
        let mem_size = r.u64("memory size")?;
        let vcpu_count = r.u8("vCPU count")? as usize;
        if vcpu_count == 0 || vcpu_count as u64 > MAX_VCPUS {
            return Err(invalid(
                "vCPU count",
                format!("{vcpu_count} (must be 1..={MAX_VCPUS})"),
            ));
        }
        let smt = r.bool("smt")?;
        let n = r.count("region count", 2)?;
        let mut regions = Vec::with_capacity(n);
        for _ in 0..n {
            regions.push(Region {
                guest_addr: r.u64("region address")?,
                len: r.u64("region length")?,
                file_offset: r.u64("region file offset")?,
            });
        }
        let mut vcpus = Vec::with_capacity(vcpu_count);
        for _ in 0..vcpu_count {
            vcpus.push(VcpuState::decode(r)?);
        }
        let mut regs = [0u8; 9];
        regs.copy_from_slice(r.fixed("serial registers", 9)?);
        let fifo = r.bytes("serial FIFO", MAX_SERIAL_FIFO)?.to_vec();
        let device_config = std::str::from_utf8(r.bytes("device config", MAX_DEVICE_CONFIG)?)
            .map_err(|_| invalid("device config", "not UTF-8"))?
            .to_string();
        let virtio = virtio_state::decode(r)?;
        Ok(VmState {
            kind,
            mem_size,
            smt,
            regions,
            vcpus,
            serial: SerialRegs { regs, fifo },
            device_config,
            virtio,
        })
    }

    /// What the decoded fields must mean.
    fn validate(&self) -> Result<(), StateError> {
        let mib = self.mem_size >> 20;
        if self.mem_size & ((1 << 20) - 1) != 0 || !(MIN_MEM_MIB..=MAX_MEM_MIB).contains(&mib) {
            return Err(invalid(
                "memory size",
                format!(
                    "{:#x} bytes is not {MIN_MEM_MIB}..={MAX_MEM_MIB} whole MiB",
                    self.mem_size
                ),
            ));
        }
        if self.kind == GuestKind::Kernelless && self.mem_size > MMIO_GAP_START {
            return Err(invalid("memory size", "too large for a kernel-less guest"));
        }
        let stacks = self.vcpus.len() as u64 * STACK_SIZE;
        if stacks >= self.mem_size {
            return Err(invalid(
                "vCPU count",
                "the vCPU stacks do not fit in memory",
            ));
        }
        let mut offset = 0;
        let want: Vec<Region> = memory::ram_ranges(self.mem_size)
            .into_iter()
            .map(|(addr, len)| {
                let r = Region {
                    guest_addr: addr.0,
                    len: len as u64,
                    file_offset: offset,
                };
                offset += len as u64;
                r
            })
            .collect();
        if self.regions != want {
            return Err(invalid(
                "memory regions",
                format!("{:?} do not match {} MiB of RAM", self.regions, mib),
            ));
        }
        for (index, v) in self.vcpus.iter().enumerate() {
            v.validate_kernelless(self.mem_size)
                .map_err(|source| StateError::Vcpu { index, source })?;
        }
        let devices =
            serde_json::from_str::<std::collections::BTreeMap<String, serde_json::Value>>(
                &self.device_config,
            )
            .map_err(|e| invalid("device config", e.to_string()))?;
        // The device set: each config section has its saved device (only
        // vsock and entropy can be saved so far, one device each), and each
        // saved device its section, in attach order.
        let mut want = Vec::new();
        for name in devices.keys() {
            match SAVEABLE.iter().find(|(s, _)| s == name) {
                Some(&(section, kind)) => want.push((section, kind)),
                None => {
                    return Err(invalid(
                        "device set",
                        format!("the config lists `{name}` but no device state was saved"),
                    ))
                }
            }
        }
        want.sort_by_key(|(s, _)| SAVEABLE.iter().position(|(t, _)| t == s));
        let saved: Vec<(&str, u32)> = self
            .virtio
            .iter()
            .map(|d| (d.section.as_str(), d.state.transport.device_type))
            .collect();
        if saved != want {
            return Err(invalid(
                "device set",
                format!(
                    "{} saved virtio device states do not match the config's devices",
                    saved.len()
                ),
            ));
        }
        Ok(())
    }

    /// Size of the memory file this state goes with.
    pub fn memory_file_size(&self) -> u64 {
        self.regions.iter().map(|r| r.len).sum()
    }
}

//! The sealed artefact `emberd` sends in `Init` (`Code::Compiled`): a fixed
//! header naming what the code was compiled for, then wasmtime's serialized
//! module. The guest checks every header field and a checksum of the payload
//! before handing it to wasmtime, so a truncated or corrupted artefact is a
//! clean Init error rather than machine code run on trust.
//!
//! Layout (little-endian): magic "EMBERAOT" | format u32 | memory_mib u32 |
//! features u64 | wasmtime version [16] | module SHA-256 [32] |
//! payload length u64 | payload checksum u64 | payload.

use alloc::vec::Vec;

pub const MAGIC: &[u8; 8] = b"EMBERAOT";
/// Bumped whenever the layout or the engine configuration changes.
pub const FORMAT: u32 = 1;
pub const HEADER_LEN: usize = 8 + 4 + 4 + 8 + 16 + 32 + 8 + 8;
/// Largest artefact: what one `Init` may carry.
pub const MAX_LEN: usize = crate::protocol::MAX_INIT_CODE;

/// What the artefact was compiled for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The function memory the engine configuration was derived from.
    pub memory_mib: u32,
    /// CPU feature mask the code may use (`ember_guest::wasm::aot::features`).
    pub features: u64,
    /// SHA-256 of the wasm module it was compiled from.
    pub module_sha256: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtefactError {
    #[error("not a compiled artefact (bad magic)")]
    Magic,
    #[error("artefact format {0} (this runtime reads format {FORMAT})")]
    Format(u32),
    #[error("artefact built for wasmtime {0:?} (this runtime is {WASMTIME_VERSION})")]
    Version(alloc::string::String),
    #[error("artefact truncated or padded: header says {want} payload bytes, {got} present")]
    Length { want: u64, got: u64 },
    #[error("artefact checksum mismatch (corrupted in transit or at rest)")]
    Checksum,
}

/// The wasmtime release artefacts are compiled by and for.
pub const WASMTIME_VERSION: &str = "48.0.11";

fn version_field() -> [u8; 16] {
    let mut v = [0u8; 16];
    let b = WASMTIME_VERSION.as_bytes();
    v[..b.len()].copy_from_slice(b);
    v
}

/// A fast 64-bit checksum (four multiply-rotate lanes): it detects accidental
/// corruption; the artefact's authenticity comes from its only source, emberd.
pub fn checksum(data: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = [K, K ^ 1, K ^ 2, K ^ 3];
    let mut chunks = data.chunks_exact(32);
    for c in &mut chunks {
        for (i, lane) in h.iter_mut().enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&c[i * 8..i * 8 + 8]);
            *lane = (*lane ^ u64::from_le_bytes(w))
                .wrapping_mul(K)
                .rotate_left(29);
        }
    }
    let mut x = h[0] ^ h[1].rotate_left(17) ^ h[2].rotate_left(31) ^ h[3].rotate_left(47);
    x ^= data.len() as u64;
    for &b in chunks.remainder() {
        x = (x ^ u64::from(b)).wrapping_mul(K).rotate_left(23);
    }
    x.wrapping_mul(K) ^ (x >> 29)
}

/// Header + payload.
pub fn seal(h: &Header, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&h.memory_mib.to_le_bytes());
    out.extend_from_slice(&h.features.to_le_bytes());
    out.extend_from_slice(&version_field());
    out.extend_from_slice(&h.module_sha256);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&checksum(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn take<const N: usize>(b: &[u8], at: &mut usize) -> [u8; N] {
    let mut v = [0u8; N];
    v.copy_from_slice(&b[*at..*at + N]);
    *at += N;
    v
}

/// Whether `bytes` starts like an artefact (used to refuse user uploads of one).
pub fn looks_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// The header alone (no payload check): what the artefact claims to be.
pub fn header(bytes: &[u8]) -> Result<Header, ArtefactError> {
    if bytes.len() < HEADER_LEN || !looks_sealed(bytes) {
        return Err(ArtefactError::Magic);
    }
    let mut at = MAGIC.len();
    let format = u32::from_le_bytes(take(bytes, &mut at));
    if format != FORMAT {
        return Err(ArtefactError::Format(format));
    }
    let memory_mib = u32::from_le_bytes(take(bytes, &mut at));
    let features = u64::from_le_bytes(take(bytes, &mut at));
    let version: [u8; 16] = take(bytes, &mut at);
    if version != version_field() {
        let end = version.iter().position(|&b| b == 0).unwrap_or(16);
        return Err(ArtefactError::Version(
            alloc::string::String::from_utf8_lossy(&version[..end]).into_owned(),
        ));
    }
    let module_sha256 = take(bytes, &mut at);
    Ok(Header {
        memory_mib,
        features,
        module_sha256,
    })
}

/// Checks the whole artefact; returns its header and payload.
pub fn open(bytes: &[u8]) -> Result<(Header, &[u8]), ArtefactError> {
    let h = header(bytes)?;
    let mut at = HEADER_LEN - 16;
    let want = u64::from_le_bytes(take(bytes, &mut at));
    let sum = u64::from_le_bytes(take(bytes, &mut at));
    let payload = &bytes[HEADER_LEN..];
    if want != payload.len() as u64 {
        return Err(ArtefactError::Length {
            want,
            got: payload.len() as u64,
        });
    }
    if checksum(payload) != sum {
        return Err(ArtefactError::Checksum);
    }
    Ok((h, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let h = Header {
            memory_mib: 128,
            features: 0b101,
            module_sha256: [7; 32],
        };
        let payload: Vec<u8> = (0..1000u32).map(|i| (i * 31 % 251) as u8).collect();
        seal(&h, &payload)
    }

    #[test]
    fn round_trip() {
        let a = sample();
        let (h, p) = open(&a).unwrap();
        assert_eq!(h.memory_mib, 128);
        assert_eq!(h.features, 0b101);
        assert_eq!(p.len(), 1000);
    }

    #[test]
    fn every_truncation_and_every_single_bit_flip_is_refused() {
        let a = sample();
        for n in 0..a.len() {
            assert!(open(&a[..n]).is_err(), "truncated to {n}");
        }
        for i in 0..a.len() {
            for bit in 0..8 {
                let mut b = a.clone();
                b[i] ^= 1 << bit;
                let r = open(&b);
                // A flip inside the memory/features/hash fields changes what
                // the header claims, not its validity: those are checked
                // against the engine (memory, features) by the runtime.
                let claim = (12..24).contains(&i) || (40..72).contains(&i);
                assert!(r.is_err() || claim, "flip at byte {i} bit {bit} accepted");
            }
        }
    }
}

//! The vsock packet path over guest memory: reading a guest TX chain into a
//! header and a payload, and writing a packet into a guest RX chain. Bounded
//! and refusing: a descriptor in the wrong direction, a header split short,
//! a `len` larger than the chain or than [`MAX_PKT_LEN`], memory outside the
//! guest, or more than [`MAX_DESCS`] descriptors is an error, never a panic.
//! (virtio 1.x §5.10.6.)

use ember_abi::vsock::{Hdr, HDR_LEN};
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Largest payload in one packet, both directions (as Firecracker).
pub const MAX_PKT_LEN: usize = 64 * 1024;
/// Most descriptors a packet may span.
pub const MAX_DESCS: usize = 64;

/// Why a chain was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PacketError {
    /// A TX descriptor the device should write, or an RX one it should read.
    #[error("descriptor in the wrong direction")]
    WrongDirection,
    /// Fewer bytes than a header.
    #[error("chain shorter than a header ({0} bytes)")]
    ShortHeader(usize),
    /// The header's `len` exceeds the chain or the packet limit.
    #[error("header len {claimed} but chain holds {available} (max {MAX_PKT_LEN})")]
    LyingLength { claimed: u32, available: usize },
    /// A descriptor points outside guest memory.
    #[error("descriptor outside guest memory at {0:#x}")]
    Memory(u64),
    /// Too many descriptors in one chain.
    #[error("chain longer than {MAX_DESCS} descriptors")]
    TooLong,
    /// The RX chain cannot hold even a header.
    #[error("rx buffer of {0} bytes cannot hold a header")]
    RxTooSmall(usize),
}

/// The (address, length) pieces of a chain, checked for direction and count.
pub fn collect<I: Iterator<Item = Descriptor>>(
    chain: I,
    device_writes: bool,
    out: &mut Vec<(GuestAddress, usize)>,
) -> Result<usize, PacketError> {
    out.clear();
    let mut total = 0usize;
    for d in chain {
        if d.is_write_only() != device_writes {
            return Err(PacketError::WrongDirection);
        }
        if out.len() == MAX_DESCS {
            return Err(PacketError::TooLong);
        }
        out.push((d.addr(), d.len() as usize));
        total = total.saturating_add(d.len() as usize);
    }
    Ok(total)
}

/// Reads a TX packet from `descs` (device-readable pieces): returns the
/// header; the payload (exactly `hdr.len` bytes) is left in `payload`.
pub fn read_tx(
    mem: &GuestMemoryMmap,
    descs: &[(GuestAddress, usize)],
    payload: &mut Vec<u8>,
) -> Result<Hdr, PacketError> {
    let available: usize = descs.iter().map(|d| d.1).fold(0, usize::saturating_add);
    if available < HDR_LEN {
        return Err(PacketError::ShortHeader(available));
    }
    let mut hdr_bytes = [0u8; HDR_LEN];
    let mut filled = 0;
    let mut pieces = descs.iter();
    let mut rest: Option<(GuestAddress, usize)> = None;
    for &(addr, len) in pieces.by_ref() {
        let n = len.min(HDR_LEN - filled);
        mem.read_slice(&mut hdr_bytes[filled..filled + n], addr)
            .map_err(|_| PacketError::Memory(addr.0))?;
        filled += n;
        if filled == HDR_LEN {
            if n < len {
                rest = Some((GuestAddress(addr.0.wrapping_add(n as u64)), len - n));
            }
            break;
        }
    }
    let hdr = Hdr::decode(&hdr_bytes).ok_or(PacketError::ShortHeader(filled))?;
    let want = hdr.len as usize;
    if want > MAX_PKT_LEN || want > available - HDR_LEN {
        return Err(PacketError::LyingLength {
            claimed: hdr.len,
            available: available - HDR_LEN,
        });
    }
    payload.clear();
    payload.resize(want, 0);
    let mut got = 0;
    for (addr, len) in rest.into_iter().chain(pieces.copied()) {
        if got == want {
            break;
        }
        let n = len.min(want - got);
        mem.read_slice(&mut payload[got..got + n], addr)
            .map_err(|_| PacketError::Memory(addr.0))?;
        got += n;
    }
    Ok(hdr)
}

/// Writes `hdr` and `payload` into `descs` (device-writable pieces, whose
/// total the caller checked holds them); returns the bytes written.
pub fn write_rx(
    mem: &GuestMemoryMmap,
    descs: &[(GuestAddress, usize)],
    hdr: &Hdr,
    payload: &[u8],
) -> Result<u32, PacketError> {
    let mut hdr_bytes = [0u8; HDR_LEN];
    hdr.encode(&mut hdr_bytes);
    let mut sources = [&hdr_bytes[..], payload];
    let mut written = 0usize;
    for &(addr, len) in descs {
        let mut off = 0usize;
        while off < len {
            let Some(src) = sources.iter_mut().find(|s| !s.is_empty()) else {
                return Ok(written as u32);
            };
            let n = src.len().min(len - off);
            let at = GuestAddress(addr.0.wrapping_add(off as u64));
            mem.write_slice(&src[..n], at)
                .map_err(|_| PacketError::Memory(at.0))?;
            *src = &src[n..];
            off += n;
            written += n;
        }
    }
    if sources.iter().any(|s| !s.is_empty()) {
        return Err(PacketError::RxTooSmall(written));
    }
    Ok(written as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_abi::vsock::op;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    fn hdr(len: u32) -> Hdr {
        Hdr {
            src_cid: 3,
            dst_cid: 2,
            src_port: 5,
            dst_port: 6,
            len,
            type_: 1,
            op: op::RW,
            ..Hdr::default()
        }
    }

    #[test]
    fn header_and_payload_across_descriptors() {
        let m = mem();
        let h = hdr(10);
        let pieces = [
            (GuestAddress(0x100), 20),
            (GuestAddress(0x400), 30),
            (GuestAddress(0x800), 4),
        ];
        let mut rx_payload = [0u8; 10];
        rx_payload
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = i as u8 + 1);
        assert_eq!(write_rx(&m, &pieces, &h, &rx_payload), Ok(54));
        let mut p = Vec::new();
        assert_eq!(read_tx(&m, &pieces, &mut p), Ok(h));
        assert_eq!(p, rx_payload);
        // Too small for the payload.
        assert_eq!(
            write_rx(&m, &pieces[..2], &h, &rx_payload),
            Err(PacketError::RxTooSmall(50))
        );
    }

    #[test]
    fn lies_and_bad_memory_are_refused() {
        let m = mem();
        let mut p = Vec::new();
        let mut b = [0u8; HDR_LEN];
        hdr(100).encode(&mut b);
        m.write_slice(&b, GuestAddress(0x100)).unwrap();
        let e = read_tx(&m, &[(GuestAddress(0x100), HDR_LEN + 50)], &mut p);
        assert_eq!(
            e,
            Err(PacketError::LyingLength {
                claimed: 100,
                available: 50
            })
        );
        hdr(u32::MAX).encode(&mut b);
        m.write_slice(&b, GuestAddress(0x100)).unwrap();
        assert!(read_tx(&m, &[(GuestAddress(0x100), usize::MAX)], &mut p).is_err());
        assert_eq!(
            read_tx(&m, &[(GuestAddress(0x100), 43)], &mut p),
            Err(PacketError::ShortHeader(43))
        );
        assert_eq!(
            read_tx(&m, &[(GuestAddress(0xfff0), 64)], &mut p),
            Err(PacketError::Memory(0xfff0))
        );
        hdr(8).encode(&mut b);
        m.write_slice(&b, GuestAddress(0x100)).unwrap();
        let e = read_tx(
            &m,
            &[
                (GuestAddress(0x100), HDR_LEN),
                (GuestAddress(u64::MAX - 3), 8),
            ],
            &mut p,
        );
        assert_eq!(e, Err(PacketError::Memory(u64::MAX - 3)));
        assert!(write_rx(&m, &[(GuestAddress(0x20000), 100)], &hdr(0), &[]).is_err());
    }

    #[test]
    fn direction_and_count_are_checked() {
        let mut out = Vec::new();
        let w = Descriptor::new(0x100, 8, 2, 0);
        let r = Descriptor::new(0x100, 8, 0, 0);
        assert_eq!(
            collect([r, w].into_iter(), false, &mut out),
            Err(PacketError::WrongDirection)
        );
        assert_eq!(collect([w].into_iter(), true, &mut out), Ok(8));
        let many = std::iter::repeat_n(r, MAX_DESCS + 1);
        assert_eq!(collect(many, false, &mut out), Err(PacketError::TooLong));
    }
}

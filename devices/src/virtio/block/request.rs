//! virtio-block request parsing (virtio 1.x §5.2.6): turns one descriptor
//! chain into a validated [`Request`], without touching the disk. Pure: no fds,
//! so unit tests and the bounded fuzz test drive it over an in-memory guest.
//!
//! Framing follows the spec rather than a fixed descriptor layout: the
//! device-readable bytes start with the 16-byte header (type, reserved,
//! sector), the last device-writable byte is the status, and the bytes in
//! between are the data. Anything else the guest can get wrong becomes an
//! error that the device answers with IOERR or UNSUPP, never a panic.

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// Sector size the protocol counts in.
pub const SECTOR_SIZE: u64 = 512;
/// Bytes of the request header.
pub const HEADER_LEN: u64 = 16;
/// Most descriptors one request may use; longer chains are refused (the
/// queue's own bound is its size, up to 32768).
pub const MAX_SEGMENTS: usize = 1024;
/// Most data bytes in one request: bounds the work a single chain can ask for.
pub const MAX_DATA_LEN: u64 = 16 << 20;

/// Why a request was refused. [`RequestError::status`] gives the status byte.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// A descriptor points outside guest memory or wraps around.
    #[error("descriptor {addr:#x}+{len:#x} outside guest memory")]
    BadDescriptor { addr: u64, len: u32 },
    /// A device-readable descriptor follows a device-writable one.
    #[error("readable descriptor after a writable one")]
    WrongOrder,
    /// The chain has more than [`MAX_SEGMENTS`] descriptors.
    #[error("chain longer than {MAX_SEGMENTS} descriptors")]
    TooManySegments,
    /// Fewer than 16 readable bytes.
    #[error("header is {0} bytes, want 16")]
    ShortHeader(u64),
    /// Data where the request type takes none, in this direction.
    #[error("unexpected {0} data bytes for this request type")]
    UnexpectedData(u64),
    /// Data length not a multiple of 512, or above [`MAX_DATA_LEN`].
    #[error("data length {0} is not a positive multiple of 512 within bounds")]
    BadDataLen(u64),
    /// The sector range ends past the disk.
    #[error("sectors {sector}+{count} past the end of the disk ({capacity})")]
    OutOfRange {
        sector: u64,
        count: u64,
        capacity: u64,
    },
    /// A write to a read-only drive.
    #[error("write to a read-only drive")]
    ReadOnly,
    /// A request type this device does not implement.
    #[error("unsupported request type {0}")]
    Unsupported(u32),
}

impl RequestError {
    /// The status byte the guest gets for this error.
    pub fn status(&self) -> u8 {
        match self {
            RequestError::Unsupported(_) => STATUS_UNSUPP,
            _ => STATUS_IOERR,
        }
    }
}

/// Status: success.
pub const STATUS_OK: u8 = 0;
/// Status: the request failed.
pub const STATUS_IOERR: u8 = 1;
/// Status: unknown request type.
pub const STATUS_UNSUPP: u8 = 2;

/// A guest-physical buffer, already checked to lie inside guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Start.
    pub addr: GuestAddress,
    /// Length in bytes.
    pub len: u32,
}

/// What the request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// Read sectors into the guest.
    In,
    /// Write guest data to sectors.
    Out,
    /// Make written data durable.
    Flush,
    /// Return the 20-byte drive id.
    GetId,
}

/// A validated request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The operation.
    pub kind: RequestKind,
    /// First sector (In/Out).
    pub sector: u64,
    /// Data buffers: guest-readable for Out, guest-writable for In/GetId.
    pub data: Vec<Segment>,
    /// Sum of the data buffer lengths.
    pub data_len: u64,
}

/// A parsed chain: where the status byte goes (if the chain has one) and the
/// request or why it was refused.
#[derive(Debug)]
pub struct Parsed {
    /// Guest address of the status byte; `None` when the chain has no
    /// writable byte to put it in (the request is then only returned).
    pub status: Option<GuestAddress>,
    /// The request.
    pub request: Result<Request, RequestError>,
}

/// What the drive looks like to the parser.
#[derive(Clone, Copy, Debug)]
pub struct DiskGeometry {
    /// Capacity in 512-byte sectors.
    pub sectors: u64,
    /// Writes are refused.
    pub read_only: bool,
}

fn checked_segment(mem: &GuestMemoryMmap, d: &Descriptor) -> Result<Segment, RequestError> {
    let bad = || RequestError::BadDescriptor {
        addr: d.addr().0,
        len: d.len(),
    };
    if d.len() > 0 {
        let last = d
            .addr()
            .0
            .checked_add(u64::from(d.len()) - 1)
            .ok_or_else(bad)?;
        // Both ends in memory and no hole between them: `get_slices` walks
        // every region the range crosses.
        if !mem.address_in_range(GuestAddress(last)) {
            return Err(bad());
        }
        for s in mem.get_slices(d.addr(), d.len() as usize) {
            s.map_err(|_| bad())?;
        }
    }
    Ok(Segment {
        addr: d.addr(),
        len: d.len(),
    })
}

/// Splits `segs` at byte `at`: returns the part from `at` on.
fn skip_bytes(segs: &[Segment], mut at: u64) -> Vec<Segment> {
    let mut out = Vec::new();
    for s in segs {
        let len = u64::from(s.len);
        if at >= len {
            at -= len;
            continue;
        }
        // at < len <= u32::MAX, so both fit.
        out.push(Segment {
            addr: s.addr.unchecked_add(at),
            len: s.len - at as u32,
        });
        at = 0;
    }
    out
}

/// Drops the last `n` bytes of `segs`.
fn drop_tail(segs: &[Segment], mut n: u64) -> Vec<Segment> {
    let mut out = segs.to_vec();
    while n > 0 {
        let Some(last) = out.last_mut() else { break };
        let len = u64::from(last.len);
        if len > n {
            last.len -= n as u32;
            break;
        }
        n -= len;
        out.pop();
    }
    out
}

fn total(segs: &[Segment]) -> u64 {
    segs.iter().map(|s| u64::from(s.len)).sum()
}

/// Reads the header from the first 16 readable bytes, wherever they are split.
fn read_header(mem: &GuestMemoryMmap, segs: &[Segment]) -> Result<(u32, u64), RequestError> {
    let mut hdr = [0u8; HEADER_LEN as usize];
    let mut filled = 0;
    for s in segs {
        let n = (s.len as usize).min(hdr.len() - filled);
        mem.read_slice(&mut hdr[filled..filled + n], s.addr)
            .map_err(|_| RequestError::BadDescriptor {
                addr: s.addr.0,
                len: s.len,
            })?;
        filled += n;
        if filled == hdr.len() {
            break;
        }
    }
    if filled < hdr.len() {
        return Err(RequestError::ShortHeader(filled as u64));
    }
    let kind = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    let mut sector = [0u8; 8];
    sector.copy_from_slice(&hdr[8..16]);
    Ok((kind, u64::from_le_bytes(sector)))
}

/// Parses one chain. `descs` is the chain's descriptors in order (the queue
/// crate's iterator already stops at loops and bad indirect tables).
pub fn parse(
    mem: &GuestMemoryMmap,
    descs: impl Iterator<Item = Descriptor>,
    disk: DiskGeometry,
) -> Parsed {
    let mut readable = Vec::new();
    let mut writable: Vec<Segment> = Vec::new();
    let mut first_error = None;
    for (i, d) in descs.enumerate() {
        if i >= MAX_SEGMENTS {
            first_error.get_or_insert(RequestError::TooManySegments);
            break;
        }
        let seg = match checked_segment(mem, &d) {
            Ok(seg) => seg,
            Err(e) => {
                first_error.get_or_insert(e);
                // Unusable for the status byte too.
                writable.clear();
                continue;
            }
        };
        if d.is_write_only() {
            writable.push(seg);
        } else {
            if !writable.is_empty() {
                first_error.get_or_insert(RequestError::WrongOrder);
            }
            readable.push(seg);
        }
    }
    let status = writable
        .iter()
        .rev()
        .find(|s| s.len > 0)
        .map(|s| s.addr.unchecked_add(u64::from(s.len) - 1));
    let request = match first_error {
        Some(e) => Err(e),
        None => validate(mem, &readable, &drop_tail(&writable, 1), disk),
    };
    Parsed { status, request }
}

fn validate(
    mem: &GuestMemoryMmap,
    readable: &[Segment],
    writable: &[Segment],
    disk: DiskGeometry,
) -> Result<Request, RequestError> {
    let (kind, sector) = read_header(mem, readable)?;
    let out_data = skip_bytes(readable, HEADER_LEN);
    let (out_len, in_len) = (total(&out_data), total(writable));
    let kind = match kind {
        VIRTIO_BLK_T_IN => RequestKind::In,
        VIRTIO_BLK_T_OUT => RequestKind::Out,
        VIRTIO_BLK_T_FLUSH => RequestKind::Flush,
        VIRTIO_BLK_T_GET_ID => RequestKind::GetId,
        other => return Err(RequestError::Unsupported(other)),
    };
    let (data, data_len, stray) = match kind {
        RequestKind::In | RequestKind::GetId => (writable.to_vec(), in_len, out_len),
        RequestKind::Out => (out_data, out_len, in_len),
        RequestKind::Flush => (Vec::new(), 0, out_len + in_len),
    };
    if stray != 0 {
        return Err(RequestError::UnexpectedData(stray));
    }
    match kind {
        RequestKind::In | RequestKind::Out => {
            if data_len == 0 || data_len % SECTOR_SIZE != 0 || data_len > MAX_DATA_LEN {
                return Err(RequestError::BadDataLen(data_len));
            }
            let count = data_len / SECTOR_SIZE;
            let end = sector.checked_add(count);
            if end.is_none_or(|end| end > disk.sectors) {
                return Err(RequestError::OutOfRange {
                    sector,
                    count,
                    capacity: disk.sectors,
                });
            }
            if kind == RequestKind::Out && disk.read_only {
                return Err(RequestError::ReadOnly);
            }
        }
        RequestKind::GetId if data_len < u64::from(VIRTIO_BLK_ID_BYTES) => {
            return Err(RequestError::BadDataLen(data_len));
        }
        _ => {}
    }
    Ok(Request {
        kind,
        sector,
        data,
        data_len,
    })
}

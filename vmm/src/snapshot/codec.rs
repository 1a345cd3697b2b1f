//! The byte codec of the state file: little-endian integers, length-prefixed
//! byte strings and fixed-size KVM structures, written by [`Writer`] and read
//! back by [`Reader`], which never reads past its input and reports where a
//! value ran short. Every decision about what a value may be lives in the
//! callers (`state.rs`); this file only moves bytes.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs, kvm_xcrs};

/// Why bytes could not be read as the value asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("truncated: {what} needs {need} bytes at offset {offset}, {left} left")]
    Truncated {
        what: &'static str,
        offset: usize,
        need: usize,
        left: usize,
    },
    #[error("{what}: length {len} exceeds the limit {max}")]
    TooLong {
        what: &'static str,
        len: u64,
        max: u64,
    },
    #[error("{0} bytes left over after the last field")]
    Trailing(usize),
}

/// KVM structures stored as their bytes: `repr(C)` structs made only of
/// integers and integer arrays, whose explicit padding fields leave no
/// implicit holes (the size asserts below check it), so every bit pattern is
/// a value and reading their bytes reads no uninitialised memory.
///
/// # Safety
/// Only for types meeting that description.
pub unsafe trait Pod: Copy + Default {}
// SAFETY: 18 u64 fields.
unsafe impl Pod for kvm_regs {}
// SAFETY: segments (u64, u32, u16, 10 u8), descriptor tables (u64, u16,
// [u16; 3]), u64 control registers and a u64 bitmap; no implicit padding.
unsafe impl Pod for kvm_sregs {}
// SAFETY: byte arrays, u16/u8 fields with explicit pad1/pad2, u64s.
unsafe impl Pod for kvm_fpu {}
// SAFETY: u32 counts, 16 {u32, u32, u64} entries, u64 padding.
unsafe impl Pod for kvm_xcrs {}

const _: () = {
    use std::mem::size_of;
    assert!(size_of::<kvm_regs>() == 18 * 8);
    assert!(size_of::<kvm_segment>() == 8 + 4 + 2 + 10);
    assert!(size_of::<kvm_sregs>() == 8 * 24 + 2 * 16 + 7 * 8 + 4 * 8);
    assert!(size_of::<kvm_fpu>() == 128 + 8 + 16 + 256 + 8);
    assert!(size_of::<kvm_xcrs>() == 8 + 16 * 16 + 16 * 8);
};

/// Appends values to a byte vector.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn bool(&mut self, v: bool) {
        self.u8(v as u8);
    }

    /// Raw bytes of a known length (the reader must know it too).
    pub fn fixed(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }

    /// A u32 length, then the bytes.
    pub fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v);
    }

    pub fn pod<T: Pod>(&mut self, v: &T) {
        // SAFETY: `T: Pod` has no implicit padding, so all size_of::<T>()
        // bytes behind `v` are initialised; the slice lives as long as `v`.
        let bytes = unsafe {
            std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
        };
        self.buf.extend_from_slice(bytes);
    }
}

/// Reads values from a byte slice, front to back.
pub struct Reader<'a> {
    data: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data, offset: 0 }
    }

    fn take(&mut self, what: &'static str, n: usize) -> Result<&'a [u8], CodecError> {
        let left = self.data.len() - self.offset;
        if n > left {
            return Err(CodecError::Truncated {
                what,
                offset: self.offset,
                need: n,
                left,
            });
        }
        let s = &self.data[self.offset..self.offset + n];
        self.offset += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], CodecError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(what, N)?);
        Ok(a)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, CodecError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, CodecError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A byte that must be 0 or 1.
    pub fn bool(&mut self, what: &'static str) -> Result<bool, CodecError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(CodecError::TooLong {
                what,
                len: v as u64,
                max: 1,
            }),
        }
    }

    pub fn fixed(&mut self, what: &'static str, n: usize) -> Result<&'a [u8], CodecError> {
        self.take(what, n)
    }

    /// A u32 length (at most `max`), then that many bytes.
    pub fn bytes(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], CodecError> {
        let len = self.u32(what)? as usize;
        if len > max {
            return Err(CodecError::TooLong {
                what,
                len: len as u64,
                max: max as u64,
            });
        }
        self.take(what, len)
    }

    /// A count (u32) that must not exceed `max`.
    pub fn count(&mut self, what: &'static str, max: usize) -> Result<usize, CodecError> {
        let n = self.u32(what)? as usize;
        if n > max {
            return Err(CodecError::TooLong {
                what,
                len: n as u64,
                max: max as u64,
            });
        }
        Ok(n)
    }

    pub fn pod<T: Pod>(&mut self, what: &'static str) -> Result<T, CodecError> {
        let bytes = self.take(what, std::mem::size_of::<T>())?;
        let mut v = T::default();
        // SAFETY: `T: Pod` accepts every bit pattern; the source holds exactly
        // size_of::<T>() bytes and does not overlap the local `v`.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                (&mut v as *mut T).cast::<u8>(),
                bytes.len(),
            )
        };
        Ok(v)
    }

    /// Ends reading: every byte must have been used.
    pub fn finish(self) -> Result<(), CodecError> {
        match self.data.len() - self.offset {
            0 => Ok(()),
            n => Err(CodecError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_short_input_is_an_error() {
        let mut w = Writer::new();
        w.u8(1);
        w.u16(0x203);
        w.u32(0x4050607);
        w.u64(u64::MAX - 1);
        w.bool(true);
        w.bytes(b"abc");
        let regs = kvm_regs {
            rip: 0x40_1000,
            ..Default::default()
        };
        w.pod(&regs);
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8("a").unwrap(), 1);
        assert_eq!(r.u16("b").unwrap(), 0x203);
        assert_eq!(r.u32("c").unwrap(), 0x4050607);
        assert_eq!(r.u64("d").unwrap(), u64::MAX - 1);
        assert!(r.bool("e").unwrap());
        assert_eq!(r.bytes("f", 3).unwrap(), b"abc");
        assert_eq!(r.pod::<kvm_regs>("g").unwrap().rip, 0x40_1000);
        r.finish().unwrap();

        for cut in 0..bytes.len() {
            let mut r = Reader::new(&bytes[..cut]);
            let all = (|| {
                r.u8("a")?;
                r.u16("b")?;
                r.u32("c")?;
                r.u64("d")?;
                r.bool("e")?;
                r.bytes("f", 3)?;
                r.pod::<kvm_regs>("g")
            })();
            assert!(matches!(all, Err(CodecError::Truncated { .. })), "{cut}");
        }
        let mut r = Reader::new(&bytes[..10]);
        r.u8("a").unwrap();
        assert_eq!(r.finish(), Err(CodecError::Trailing(9)));
        let mut r = Reader::new(&[2]);
        assert!(r.bool("flag").is_err());
        let mut r = Reader::new(&[4, 0, 0, 0, 1, 2, 3, 4]);
        assert!(matches!(r.bytes("s", 3), Err(CodecError::TooLong { .. })));
    }
}

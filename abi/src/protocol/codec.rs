//! Field-level encoding of frame bodies: a bounds-checked reader over a
//! complete body and an appending writer. Every read checks the bytes left
//! before touching them, and no read allocates more than the body holds.

use alloc::string::String;
use alloc::vec::Vec;

use super::{ProtocolError, Tree};

/// Reads fields from one complete frame body.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if n > self.buf.len() {
            return Err(ProtocolError::Truncated {
                needed: n,
                left: self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, ProtocolError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, ProtocolError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn bool(&mut self) -> Result<bool, ProtocolError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(ProtocolError::BadValue {
                field: "bool",
                value: v.into(),
            }),
        }
    }

    pub(crate) fn seed(&mut self) -> Result<[u8; 32], ProtocolError> {
        self.array()
    }

    /// A length-prefixed byte string, borrowed from the body.
    pub(crate) fn slice(&mut self) -> Result<&'a [u8], ProtocolError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    pub(crate) fn bytes(&mut self) -> Result<Vec<u8>, ProtocolError> {
        Ok(self.slice()?.to_vec())
    }

    pub(crate) fn string(&mut self) -> Result<String, ProtocolError> {
        let raw = self.slice()?;
        core::str::from_utf8(raw)
            .map(String::from)
            .map_err(|_| ProtocolError::BadUtf8)
    }

    /// A list count, checked against the bytes left: each item takes at least
    /// `min_item` bytes, so a lying count fails here instead of looping.
    pub(crate) fn count(&mut self, min_item: usize) -> Result<usize, ProtocolError> {
        let n = self.u32()? as usize;
        let needed = n.saturating_mul(min_item);
        if needed > self.buf.len() {
            return Err(ProtocolError::Truncated {
                needed,
                left: self.buf.len(),
            });
        }
        Ok(n)
    }

    pub(crate) fn pairs(&mut self) -> Result<Vec<(String, String)>, ProtocolError> {
        let n = self.count(8)?;
        let mut out = Vec::new();
        for _ in 0..n {
            let k = self.string()?;
            let v = self.string()?;
            out.push((k, v));
        }
        Ok(out)
    }

    pub(crate) fn trees(&mut self) -> Result<Vec<Tree>, ProtocolError> {
        let n = self.count(8)?;
        let mut out = Vec::new();
        for _ in 0..n {
            let mount = self.string()?;
            let archive = self.bytes()?;
            out.push(Tree { mount, archive });
        }
        Ok(out)
    }

    pub(crate) fn timings(&mut self) -> Result<Vec<(String, u64)>, ProtocolError> {
        let n = self.count(12)?;
        let mut out = Vec::new();
        for _ in 0..n {
            let k = self.string()?;
            let v = self.u64()?;
            out.push((k, v));
        }
        Ok(out)
    }

    /// Fails unless the whole body was consumed.
    pub(crate) fn finish(self) -> Result<(), ProtocolError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::TrailingBytes(self.buf.len()))
        }
    }
}

/// Appends fields to a frame being built.
pub(crate) struct Writer<'a> {
    pub(crate) out: &'a mut Vec<u8>,
}

impl Writer<'_> {
    pub(crate) fn u8(&mut self, v: u8) {
        self.out.push(v);
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }

    pub(crate) fn raw(&mut self, v: &[u8]) {
        self.out.extend_from_slice(v);
    }

    /// A length-prefixed byte string. Lengths above u32 cannot occur: the
    /// frame cap is checked before a frame is written (see `Message::encode`).
    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.out.extend_from_slice(v);
    }

    pub(crate) fn string(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    fn count(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }

    pub(crate) fn pairs(&mut self, v: &[(String, String)]) {
        self.count(v.len());
        for (k, val) in v {
            self.string(k);
            self.string(val);
        }
    }

    pub(crate) fn trees(&mut self, v: &[Tree]) {
        self.count(v.len());
        for t in v {
            self.string(&t.mount);
            self.bytes(&t.archive);
        }
    }

    pub(crate) fn timings(&mut self, v: &[(String, u64)]) {
        self.count(v.len());
        for (k, val) in v {
            self.string(k);
            self.u64(*val);
        }
    }
}

//! xorshift64*: a deterministic, seedable stream with no dependency, for the
//! bounded fuzz harnesses and for test data two sides must regenerate alike.
//! Not for secrets.

/// The generator; the state must not be 0.
#[derive(Debug, Clone)]
pub struct XorShift64Star(pub u64);

impl XorShift64Star {
    /// The next 64-bit value (an endless stream: not an `Iterator`).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// An index in `0..len` (0 when `len` is 0).
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// True `per_mille` times in 1000.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_is_xorshift64_star() {
        let mut r = XorShift64Star(1);
        assert_eq!(r.next(), 0x47e4_ce4b_896c_dd1d);
        assert!(r.below(10) < 10);
        assert_eq!(r.index(0), 0);
    }
}

//! The function's random source for WASI `random_get`: ChaCha20 (RFC 8439)
//! keyed by the 32-byte seed the host sends in `Init`, fresh for every
//! environment, so no two environments ever share a stream; [`ChaCha20::rekey`]
//! mixes in a snapshot clone's fresh seed, so no two clones share one either.
//! Also the kernel-less runtime's own source (`ember_rt::random`).

/// A ChaCha20 keystream generator.
pub struct ChaCha20 {
    key: [u32; 8],
    nonce: [u32; 3],
    counter: u32,
    block: [u8; 64],
    /// Bytes of `block` already handed out.
    used: usize,
}

fn quarter(s: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(16);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(12);
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(8);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(7);
}

impl ChaCha20 {
    pub fn new(seed: &[u8; 32]) -> Self {
        Self::with_nonce(seed, [0; 3], 0)
    }

    fn with_nonce(seed: &[u8; 32], nonce: [u32; 3], counter: u32) -> Self {
        let mut key = [0u32; 8];
        for (k, chunk) in key.iter_mut().zip(seed.chunks_exact(4)) {
            *k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        ChaCha20 {
            key,
            nonce,
            counter,
            block: [0; 64],
            used: 64,
        }
    }

    fn refill(&mut self) {
        let mut init = [0u32; 16];
        init[..4].copy_from_slice(&[0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574]);
        init[4..12].copy_from_slice(&self.key);
        init[12] = self.counter;
        init[13..].copy_from_slice(&self.nonce);
        let mut s = init;
        for _ in 0..10 {
            quarter(&mut s, 0, 4, 8, 12);
            quarter(&mut s, 1, 5, 9, 13);
            quarter(&mut s, 2, 6, 10, 14);
            quarter(&mut s, 3, 7, 11, 15);
            quarter(&mut s, 0, 5, 10, 15);
            quarter(&mut s, 1, 6, 11, 12);
            quarter(&mut s, 2, 7, 8, 13);
            quarter(&mut s, 3, 4, 9, 14);
        }
        for (i, (w, x)) in s.iter().zip(init.iter()).enumerate() {
            self.block[i * 4..i * 4 + 4].copy_from_slice(&w.wrapping_add(*x).to_le_bytes());
        }
        // After 2^32 blocks move to the next nonce rather than repeat.
        self.counter = self.counter.wrapping_add(1);
        if self.counter == 0 {
            self.nonce[0] = self.nonce[0].wrapping_add(1);
        }
        self.used = 0;
    }

    /// Re-keys the generator with the next 32 keystream bytes XOR `seed`:
    /// the new stream depends on both the old one and `seed`, so generators
    /// that were identical (clones of one snapshot) diverge when given
    /// different seeds, and one given a known seed still keeps its secret.
    pub fn rekey(&mut self, seed: &[u8; 32]) {
        let mut key = [0u8; 32];
        self.fill(&mut key);
        for (k, s) in key.iter_mut().zip(seed) {
            *k ^= s;
        }
        *self = Self::new(&key);
    }

    /// Fills `out` with the next keystream bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        let mut done = 0;
        while done < out.len() {
            if self.used == 64 {
                self.refill();
            }
            let n = (64 - self.used).min(out.len() - done);
            out[done..done + n].copy_from_slice(&self.block[self.used..self.used + n]);
            self.used += n;
            done += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8439_block_function_vector() {
        // RFC 8439 §2.3.2: key 00..1f, nonce 00:00:00:09:00:00:00:4a:00:00:00:00, counter 1.
        let mut key = [0u8; 32];
        for (i, b) in key.iter_mut().enumerate() {
            *b = i as u8;
        }
        let mut c = ChaCha20::with_nonce(&key, [0x0900_0000, 0x4a00_0000, 0], 1);
        let mut out = [0u8; 16];
        c.fill(&mut out);
        assert_eq!(
            out,
            [
                0x10, 0xf1, 0xe7, 0xe4, 0xd1, 0x3b, 0x59, 0x15, 0x50, 0x0f, 0xdd, 0x1f, 0xa3, 0x20,
                0x71, 0xc4
            ]
        );
    }

    #[test]
    fn rekeyed_clones_diverge_and_keep_no_common_stream() {
        let (mut a, mut b) = (ChaCha20::new(&[5; 32]), ChaCha20::new(&[5; 32]));
        let mut seed_a = [0u8; 32];
        seed_a[0] = 1;
        a.rekey(&seed_a);
        b.rekey(&[0; 32]);
        let (mut x, mut y) = ([0u8; 64], [0u8; 64]);
        a.fill(&mut x);
        b.fill(&mut y);
        assert_ne!(x, y);
        let mut c = ChaCha20::new(&[5; 32]);
        c.rekey(&seed_a);
        let mut z = [0u8; 64];
        c.fill(&mut z);
        assert_eq!(x, z, "rekeying is deterministic");
    }

    #[test]
    fn different_seeds_give_different_streams_and_chunking_does_not_matter() {
        let mut a = ChaCha20::new(&[1; 32]);
        let mut b = ChaCha20::new(&[2; 32]);
        let (mut x, mut y) = ([0u8; 100], [0u8; 100]);
        a.fill(&mut x);
        b.fill(&mut y);
        assert_ne!(x, y);
        let mut c = ChaCha20::new(&[1; 32]);
        let mut z = [0u8; 100];
        c.fill(&mut z[..3]);
        c.fill(&mut z[3..70]);
        c.fill(&mut z[70..]);
        assert_eq!(x, z);
    }
}

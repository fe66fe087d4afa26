//! crc32c arithmetic: extending a segment's running `data_crc` over a frame from the frame's
//! own crc, without reading the frame's bytes a second time.
//!
//! Why: with records staged straight into DMA buffers, the two crc32c passes over every frame
//! (its own crc, then the segment's `data_crc` over the whole frame) were half of the shard's
//! time at full Synced bandwidth (perf, 4 KiB records). The second pass is redundant: crc32c
//! is linear over GF(2), so running the same bytes `M` through the crc register from two
//! states `a` and `b` gives results that differ by `(a ^ b)` times `x^(8|M|)` modulo the
//! polynomial, which is what running `|M|` zero bytes from `a ^ b` computes:
//! `R(a, M) ^ R(b, M) = R(a ^ b, 0^|M|)`. One multiplication modulo the polynomial (by a power
//! of x made once per frame length) replaces a pass over the payload: 42 ns against 200 ns for
//! a 4 KiB frame here. The crate's `crc32c_combine` does the same sum by a matrix method that
//! was measured 60x slower than the pass.
//!
//! Nothing on disk changes: the result is bit for bit the crc of the frame's bytes (tested
//! below against the two passes).

/// The Castagnoli polynomial, bit-reflected (bit 31 is the coefficient of x^0).
const POLY: u32 = 0x82F6_3B78;

/// `a * b` modulo the polynomial, in the reflected bit order the crc register uses.
const fn mul(a: u32, mut b: u32) -> u32 {
    let mut p = 0u32;
    let mut m = 1u32 << 31;
    while m != 0 {
        if a & m != 0 {
            p ^= b;
            if a & (m - 1) == 0 {
                break;
            }
        }
        m >>= 1;
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
    }
    p
}

/// `x^(2^k)` modulo the polynomial, for k in 0..32.
const X2N: [u32; 32] = {
    let mut t = [0u32; 32];
    let mut p = 1u32 << 30; // x^1
    let mut k = 0;
    while k < 32 {
        t[k] = p;
        p = mul(p, p);
        k += 1;
    }
    t
};

/// `x^(8 n)` modulo the polynomial: the operator that runs `n` zero bytes through the register.
fn zeros_operator(n: u64) -> u32 {
    let mut p = 1u32 << 31; // x^0
    let mut n = n;
    let mut k = 3; // 8 n = n << 3
    while n != 0 {
        if n & 1 != 0 {
            p = mul(X2N[k & 31], p);
        }
        n >>= 1;
        k += 1;
    }
    p
}

/// Frames at or above this many bytes take the arithmetic; below it, a second pass over the
/// frame costs less than the multiplication (`cargo bench --bench frame -- data_crc`).
pub const MIN_FRAME: usize = 512;

/// Extends running crcs over frames, by arithmetic where it pays. The operator depends on the
/// frame's length and costs a multiplication per set bit of it to make, more than a pass over
/// a frame of a few KiB, so only a length seen twice in a row gets one, kept until the length
/// changes: records of one size (common) take the arithmetic from their second frame on, and
/// mixed sizes take the pass, as before, at the cost of a comparison.
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameCrc {
    /// The covered length of the last frame.
    len: u64,
    /// `x^(8 len)`, or 0 if not made yet (no power of x is 0 modulo the polynomial).
    op: u32,
}

impl FrameCrc {
    /// `crc32c_append(data_crc, frame)` for `frame`, an encoded frame whose first four bytes
    /// are its own crc (little-endian) over `frame[4..4 + covered]`, already verified or just
    /// computed; the bytes after those are padding.
    pub fn append(&mut self, data_crc: u32, frame: &[u8], covered: usize) -> u32 {
        debug_assert!(4 + covered <= frame.len());
        let n = covered as u64;
        if frame.len() < MIN_FRAME || self.len != n {
            self.len = n;
            self.op = 0;
            return crc32c::crc32c_append(data_crc, frame);
        }
        if self.op == 0 {
            self.op = zeros_operator(n);
        }
        let (head, rest) = frame.split_at(4);
        let frame_crc = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        // The register after the frame's crc field, as `crc32c_append` would leave it (its
        // result is the complement of the register).
        let after_head = crc32c::crc32c_append(data_crc, head);
        // The frame crc ran `covered` bytes from the all-ones register; this one runs them from
        // `!after_head`. They differ by the zeros operator applied to the xor of the two.
        let register = !frame_crc ^ mul(self.op, after_head);
        crc32c::crc32c_append(!register, &rest[covered..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::frame::{encode, frame_len};
    use crate::limits::FRAME_HEADER_BYTES;

    /// The arithmetic gives exactly the crc of the frame's bytes, for every payload length
    /// around the padding and size boundaries, from varied running crcs, with the operator
    /// made, reused and replaced.
    #[test]
    fn the_arithmetic_equals_a_pass_over_the_frame() {
        let mut fc = FrameCrc::default();
        let mut data_crc = 0u32;
        let mut lens: Vec<usize> = (0..80).collect();
        lens.extend([511, 512, 513, 1000, 1024, 4095, 4096, 4097, 65536, 1 << 20]);
        for (i, len) in lens.iter().copied().chain(lens.iter().copied().rev()).enumerate() {
            let payload: Vec<u8> = (0..len).map(|j| (j * 131 + i * 7 + 1) as u8).collect();
            let mut frame = Vec::new();
            encode(
                &mut frame,
                i as u64,
                99,
                (i % 3 == 0).then_some(5),
                i % 2 == 0,
                &payload,
            );
            assert_eq!(frame.len(), frame_len(len));
            let want = crc32c::crc32c_append(data_crc, &frame);
            // A new length takes the pass; the second and third frames of it the arithmetic
            // (making the operator, then reusing it).
            for _ in 0..3 {
                let got = fc.append(data_crc, &frame, FRAME_HEADER_BYTES - 4 + len);
                assert_eq!(got, want, "payload of {len} bytes");
            }
            assert_eq!(fc.op != 0, frame.len() >= MIN_FRAME, "the arithmetic ran: {len} bytes");
            data_crc = want;
        }
    }

    #[test]
    fn the_zeros_operator_is_a_pass_over_zeros() {
        for n in [0usize, 1, 3, 8, 100, 4096, 70_000] {
            let zeros = vec![0u8; n];
            for s in [0u32, 1, 0xDEAD_BEEF, u32::MAX] {
                // `crc32c_append` complements the register on the way in and out.
                let want = !crc32c::crc32c_append(!s, &zeros);
                assert_eq!(mul(zeros_operator(n as u64), s), want, "{n} zeros from {s:#x}");
            }
        }
    }
}

//! faiss's packing of product-quantizer codes.
//!
//! faiss stores the `M` codes of one vector of `n_bits` each in `⌈M · n_bits / 8⌉` bytes as one
//! little-endian bit string: code `m` occupies bits `m · n_bits .. (m + 1) · n_bits`, least
//! significant bit first, where bit `b` of the string is bit `b mod 8` of byte `⌊b / 8⌋`
//! (`PQEncoderGeneric`; the 8- and 16-bit encoders it specialises write the same bytes). The
//! bits past the last code are zero.

/// Bytes of one packed vector: `⌈M · n_bits / 8⌉`.
pub fn code_size(n_subspaces: usize, n_bits: u32) -> usize {
    (n_subspaces * n_bits as usize).div_ceil(8)
}

/// Packs `codes` (each below `2^n_bits`, `1 ≤ n_bits ≤ 16`) into `out`, which must be
/// `code_size(codes.len(), n_bits)` bytes long.
///
/// # Panics
/// When `out` has the wrong length or `n_bits` is not in `1..=16`.
#[track_caller]
pub fn pack(codes: &[u32], n_bits: u32, out: &mut [u8]) {
    assert!((1..=16).contains(&n_bits), "n_bits must be in 1..=16");
    assert_eq!(out.len(), code_size(codes.len(), n_bits), "packed length");
    if n_bits == 8 {
        for (o, &c) in out.iter_mut().zip(codes) {
            *o = c as u8;
        }
        return;
    }
    out.fill(0);
    let mask = (1u32 << n_bits) - 1;
    let mut bit = 0usize;
    for &c in codes {
        // A code spans at most three bytes (16 bits starting at an odd bit offset).
        let value = u64::from(c & mask) << (bit % 8);
        let byte = bit / 8;
        for (k, o) in out[byte..].iter_mut().take(3).enumerate() {
            *o |= (value >> (8 * k)) as u8;
        }
        bit += n_bits as usize;
    }
}

/// Unpacks `out.len()` codes of `n_bits` each from `packed`, which must be
/// `code_size(out.len(), n_bits)` bytes long. Bits past the last code are ignored.
///
/// # Panics
/// When `packed` has the wrong length or `n_bits` is not in `1..=16`.
#[track_caller]
pub fn unpack(packed: &[u8], n_bits: u32, out: &mut [u32]) {
    assert!((1..=16).contains(&n_bits), "n_bits must be in 1..=16");
    assert_eq!(packed.len(), code_size(out.len(), n_bits), "packed length");
    if n_bits == 8 {
        for (o, &b) in out.iter_mut().zip(packed) {
            *o = u32::from(b);
        }
        return;
    }
    let mask = (1u64 << n_bits) - 1;
    let mut bit = 0usize;
    for o in out.iter_mut() {
        let byte = bit / 8;
        let mut word = 0u64;
        for (k, &b) in packed[byte..].iter().take(3).enumerate() {
            word |= u64::from(b) << (8 * k);
        }
        *o = ((word >> (bit % 8)) & mask) as u32;
        bit += n_bits as usize;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification, one bit at a time.
    fn pack_bitwise(codes: &[u32], n_bits: u32) -> Vec<u8> {
        let mut out = vec![0u8; code_size(codes.len(), n_bits)];
        for (m, &c) in codes.iter().enumerate() {
            for b in 0..n_bits as usize {
                if c >> b & 1 == 1 {
                    let at = m * n_bits as usize + b;
                    out[at / 8] |= 1 << (at % 8);
                }
            }
        }
        out
    }

    #[test]
    fn every_width_round_trips_and_matches_the_bitwise_specification() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for n_bits in 1..=16u32 {
            for m in [1usize, 2, 3, 5, 7, 8, 16, 17] {
                for _ in 0..20 {
                    let codes: Vec<u32> = (0..m)
                        .map(|_| {
                            state = state
                                .wrapping_mul(6_364_136_223_846_793_005)
                                .wrapping_add(1);
                            ((state >> 33) as u32) & ((1 << n_bits) - 1)
                        })
                        .collect();
                    let mut packed = vec![0xffu8; code_size(m, n_bits)];
                    pack(&codes, n_bits, &mut packed);
                    assert_eq!(
                        packed,
                        pack_bitwise(&codes, n_bits),
                        "n_bits {n_bits}, M {m}"
                    );
                    let mut back = vec![0u32; m];
                    unpack(&packed, n_bits, &mut back);
                    assert_eq!(back, codes, "n_bits {n_bits}, M {m}");
                }
            }
        }
    }

    #[test]
    fn known_faiss_bytes() {
        // faiss 1.15.1, ProductQuantizer(12, 3, 12).compute_codes: codes 3442, 3442, 3442.
        let mut packed = [0u8; 5];
        pack(&[3442, 3442, 3442], 12, &mut packed);
        assert_eq!(packed, [0x72, 0x2d, 0xd7, 0x72, 0x0d]);
        // 16 bits: little-endian u16 per code; 4 bits: low nibble first.
        let mut packed = [0u8; 4];
        pack(&[0x1234, 0xabcd], 16, &mut packed);
        assert_eq!(packed, [0x34, 0x12, 0xcd, 0xab]);
        let mut packed = [0u8; 2];
        pack(&[0x1, 0x2, 0x3], 4, &mut packed);
        assert_eq!(packed, [0x21, 0x03]);
    }
}

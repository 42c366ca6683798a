//! Where each element's integer level lives inside a block of the affine formats (Q4_0..Q8_0 and
//! the K-quants), and the grid it selects from.
//!
//! In these formats a block's scales (and mins) fix, for element `j`, an affine grid
//! `x_j = a_j·L + c_j` over the integers `L` in [`level_range`]; quantization is the choice of the
//! scales and then of one `L` per element. Error-compensating quantizers (GPTQ) keep ggml's
//! choice of scales and choose the levels themselves, so they need to read a block's grid and to
//! write levels into it. The grid is taken from the format's own decoder (two decodings: all
//! levels 0, all levels 1), so it is exactly what ggml's `to_float` computes.

use super::GgmlType;

/// The byte and bit positions of element `j`'s level: `(low byte, low shift, low bits)` and the
/// optional high part `(byte, shift, bits)` above it.
type Place = ((usize, u32, u32), Option<(usize, u32, u32)>);

/// The integer range of the levels of `ty`, or `None` if `ty` is not an affine block format.
pub fn level_range(ty: GgmlType) -> Option<(i32, i32)> {
    Some(match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4K => (0, 15),
        GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q5K => (0, 31),
        GgmlType::Q8_0 => (0, 255),
        GgmlType::Q2K => (0, 3),
        GgmlType::Q3K => (0, 7),
        GgmlType::Q6K => (0, 63),
        _ => return None,
    })
}

/// Element `j`'s place in a block of `ty` (ggml-common.h layouts, read off the decoders).
fn place(ty: GgmlType, j: usize) -> Place {
    match ty {
        // d, qs[16]: element j < 16 in the low nibble of qs[j], j ≥ 16 in the high one of qs[j-16].
        GgmlType::Q4_0 => ((2 + j % 16, 4 * (j / 16) as u32, 4), None),
        GgmlType::Q4_1 => ((4 + j % 16, 4 * (j / 16) as u32, 4), None),
        // d, qh[4], qs[16]: the fifth bit is bit j of qh (little-endian).
        GgmlType::Q5_0 => ((6 + j % 16, 4 * (j / 16) as u32, 4), Some((2 + j / 8, (j % 8) as u32, 1))),
        GgmlType::Q5_1 => ((8 + j % 16, 4 * (j / 16) as u32, 4), Some((4 + j / 8, (j % 8) as u32, 1))),
        // d, qs[32] as int8: the level is qs + 128 (the byte with its top bit flipped).
        GgmlType::Q8_0 => ((2 + j, 0, 8), None),
        // scales[16], qs[64], d, dmin: halves of 128, four 2-bit planes of 32 per half.
        GgmlType::Q2K => {
            let (h, r) = (j / 128, j % 128);
            ((16 + 32 * h + r % 32, 2 * (r / 32) as u32, 2), None)
        }
        // hmask[32], qs[64], ...: as Q2_K for the low two bits, the third bit in hmask.
        GgmlType::Q3K => {
            let (h, r) = (j / 128, j % 128);
            ((32 + 32 * h + r % 32, 2 * (r / 32) as u32, 2), Some((r % 32, (4 * h + r / 32) as u32, 1)))
        }
        // d, dmin, scales[12], qs[128]: groups of 64, the first 32 in low nibbles.
        GgmlType::Q4K => {
            let (p, r) = (j / 64, j % 64);
            ((16 + 32 * p + r % 32, 4 * (r / 32) as u32, 4), None)
        }
        // d, dmin, scales[12], qh[32], qs[128]: as Q4_K, the fifth bit in qh[r % 32].
        GgmlType::Q5K => {
            let (p, r) = (j / 64, j % 64);
            ((48 + 32 * p + r % 32, 4 * (r / 32) as u32, 4), Some((16 + r % 32, (2 * p + r / 32) as u32, 1)))
        }
        // ql[128], qh[64], scales[16], d: halves of 128 in quarters of 32.
        GgmlType::Q6K => {
            let (h, r) = (j / 128, j % 128);
            let (quarter, l) = (r / 32, r % 32);
            (
                (64 * h + l + 32 * (quarter % 2), 4 * (quarter / 2) as u32, 4),
                Some((128 + 32 * h + l, 2 * quarter as u32, 2)),
            )
        }
        _ => panic!("{ty} has no affine levels"),
    }
}

fn get_bits(b: &[u8], (byte, shift, bits): (usize, u32, u32)) -> i32 {
    ((b[byte] >> shift) & ((1u16 << bits) - 1) as u8) as i32
}

fn set_bits(b: &mut [u8], (byte, shift, bits): (usize, u32, u32), v: i32) {
    let mask = (((1u16 << bits) - 1) as u8) << shift;
    b[byte] = (b[byte] & !mask) | (((v as u8) << shift) & mask);
}

/// Element `j`'s level in `block` (one block of `ty`).
pub fn get_level(ty: GgmlType, block: &[u8], j: usize) -> i32 {
    let (lo, hi) = place(ty, j);
    let l = get_bits(block, lo) | hi.map_or(0, |h| get_bits(block, h) << lo.2);
    if ty == GgmlType::Q8_0 {
        l ^ 0x80
    } else {
        l
    }
}

/// Set element `j`'s level in `block` to `l` (within [`level_range`]).
pub fn set_level(ty: GgmlType, block: &mut [u8], j: usize, l: i32) {
    let l = if ty == GgmlType::Q8_0 { l ^ 0x80 } else { l };
    let (lo, hi) = place(ty, j);
    set_bits(block, lo, l);
    if let Some(h) = hi {
        set_bits(block, h, l >> lo.2);
    }
}

/// The grid of every element of `block`: `(a, c)` with `x_j = a_j·L + c_j`, from the decoder.
pub fn affine_grid(ty: GgmlType, block: &[u8]) -> (Vec<f32>, Vec<f32>) {
    let bs = ty.block_size();
    let decode = ty.info().dequantize_block.expect("affine formats decode");
    let with_all = |l: i32| {
        let mut b = block.to_vec();
        for j in 0..bs {
            set_level(ty, &mut b, j, l);
        }
        let mut y = vec![0f32; bs];
        decode(&b, &mut y);
        y
    };
    let c = with_all(0);
    let a = with_all(1).iter().zip(&c).map(|(x1, x0)| x1 - x0).collect();
    (a, c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::XorShift64;

    /// Every level of every element, written and read back, moves the decoded value of that
    /// element alone, along the grid.
    #[test]
    fn levels_round_trip_and_decode_on_the_grid() {
        let mut rng = XorShift64::new(7);
        for ty in GgmlType::ALL.iter().copied().filter(|t| level_range(*t).is_some()) {
            let bs = ty.block_size();
            let x: Vec<f32> = (0..bs).map(|_| rng.normal() as f32).collect();
            let block = crate::quant::quantize(ty, &x, bs).unwrap();
            let (lo, hi) = level_range(ty).unwrap();
            let decode = ty.info().dequantize_block.unwrap();
            let mut base = vec![0f32; bs];
            decode(&block, &mut base);
            let (a, c) = affine_grid(ty, &block);
            for j in 0..bs {
                let original = get_level(ty, &block, j);
                assert!((a[j] * original as f32 + c[j] - base[j]).abs() <= 1e-6 * base[j].abs().max(1.0), "{ty} {j}");
                for l in [lo, hi, (lo + hi) / 2, lo + 1] {
                    let mut b = block.clone();
                    set_level(ty, &mut b, j, l);
                    assert_eq!(get_level(ty, &b, j), l, "{ty} element {j} level {l}");
                    let mut y = vec![0f32; bs];
                    decode(&b, &mut y);
                    for k in 0..bs {
                        if k == j {
                            let want = a[j] * l as f32 + c[j];
                            assert!(
                                (y[k] - want).abs() <= 1e-5 * want.abs().max(a[j].abs()),
                                "{ty} {j}: {} vs {want}",
                                y[k]
                            );
                        } else {
                            assert_eq!(y[k], base[k], "{ty}: setting element {j} moved element {k}");
                        }
                    }
                }
                assert_eq!(
                    {
                        let mut b = block.clone();
                        set_level(ty, &mut b, j, original);
                        b
                    },
                    block
                );
            }
        }
    }
}

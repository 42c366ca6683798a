//! The ternary formats of BitNet b1.58 and TriLMs: TQ1_0 (1.6875 bpw, five trits per byte) and
//! TQ2_0 (2.0625 bpw, two bits per trit), super-blocks of 256 with one f16 scale (ggml
//! `ggml-common.h` layouts).
//!
//! ggml has only the reference quantizers (`quantize_tq*_0` ignore importance weights), ported bit
//! for bit, and the dequantizers `dequantize_row_tq*_0`.

// Index loops are kept where ggml has them, so the port reads side by side with the C.
#![allow(clippy::needless_range_loop)]

use super::common::{c_max, fp16, fp32, Block};
use super::kquants::QK_K;

/// ggml: `block_tq1_0`: 240 trits five to a byte in `qs`, 16 four to a byte in `qh`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockTq1_0 {
    pub qs: [u8; (QK_K - 4 * QK_K / 64) / 5],
    pub qh: [u8; QK_K / 64],
    pub d: u16,
}
const _: () = assert!(std::mem::size_of::<BlockTq1_0>() == 54);

/// ggml: `block_tq2_0`: 2 bits per trit (0, 1, 2 for -1, 0, 1).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockTq2_0 {
    pub qs: [u8; QK_K / 4],
    pub d: u16,
}
const _: () = assert!(std::mem::size_of::<BlockTq2_0>() == 66);

/// C's `int xi = lroundf(v)` with glibc: round half away from zero, the `long` truncated to `int`.
/// On x86-64, NaN, infinities and magnitudes from 2^63 up give `(long)v`, the "integer indefinite"
/// `LONG_MIN`, whose low 32 bits are 0; on aarch64 (`fcvtas`) the `long` saturates and NaN is 0,
/// which is Rust's `as i64`.
#[inline(always)]
fn lroundf_int(v: f32) -> i32 {
    if !cfg!(target_arch = "aarch64") && (v.is_nan() || v.abs() >= 9_223_372_036_854_775_808.0) {
        0
    } else {
        v.round() as i64 as i32
    }
}

/// The absolute maximum of a super-block (`MAX(amax, fabsf(v))`) and its inverse (0 for 0).
#[inline(always)]
fn ternary_scale(x: &[f32]) -> (f32, f32) {
    let mut amax = 0f32;
    for &v in &x[..QK_K] {
        amax = c_max(amax, v.abs());
    }
    let d = amax;
    (d, if d != 0.0 { 1.0 / d } else { 0.0 })
}

/// `n` trits of `x[m + k*stride]` (k = 0..n) as a base-3 number, most significant first, in the
/// C's `uint8_t` arithmetic.
#[inline(always)]
fn trits(x: &[f32], id: f32, m: usize, stride: usize, n: usize) -> u8 {
    let mut q = 0u8;
    for k in 0..n {
        let xi = lroundf_int(x[m + k * stride] * id) + 1;
        q = q.wrapping_mul(3);
        q = q.wrapping_add(xi as u8);
    }
    q
}

/// `q * 256 / 243` rounded up, truncated to a byte: the trits as a fixed-point fraction.
#[inline(always)]
fn trit_fraction(q: u8) -> u8 {
    ((q as i32 * 256 + (243 - 1)) / 243) as u8
}

/// ggml: `quantize_row_tq1_0_ref` (`quantize_tq1_0` ignores importance weights).
pub fn quantize_row_tq1_0(x: &[f32], y: &mut [u8], _quant_weights: Option<&[f32]>) {
    const TS: usize = std::mem::size_of::<BlockTq1_0>();
    assert!(x.len().is_multiple_of(QK_K), "row of {} values is not a whole number of super-blocks", x.len());
    assert_eq!(y.len(), x.len() / QK_K * TS, "output is not whole super-blocks");
    for (x, yb) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(TS)) {
        let (d, id) = ternary_scale(x);
        let mut block = BlockTq1_0 { qs: [0; 48], qh: [0; 4], d: fp16(d) };
        // 5 elements per byte, along 32 bytes
        for m in 0..32 {
            block.qs[m] = trit_fraction(trits(x, id, m, 32, 5));
        }
        let x = &x[5 * 32..];
        // along 16 bytes
        for m in 0..16 {
            block.qs[32 + m] = trit_fraction(trits(x, id, m, 16, 5));
        }
        let x = &x[5 * 16..];
        // 4 elements per byte, the first value shifted to the most significant trit
        for j in 0..4 {
            let q = trits(x, id, j, 4, 4).wrapping_mul(3);
            block.qh[j] = trit_fraction(q);
        }
        block.write_to(yb);
    }
}

/// ggml: `quantize_row_tq2_0_ref` (`quantize_tq2_0` ignores importance weights).
pub fn quantize_row_tq2_0(x: &[f32], y: &mut [u8], _quant_weights: Option<&[f32]>) {
    const TS: usize = std::mem::size_of::<BlockTq2_0>();
    assert!(x.len().is_multiple_of(QK_K), "row of {} values is not a whole number of super-blocks", x.len());
    assert_eq!(y.len(), x.len() / QK_K * TS, "output is not whole super-blocks");
    for (x, yb) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(TS)) {
        let (d, id) = ternary_scale(x);
        let mut block = BlockTq2_0 { qs: [0; 64], d: fp16(d) };
        for j in (0..64).step_by(32) {
            let x = &x[4 * j..];
            for m in 0..32 {
                let mut q = 0u8;
                for n in 0..4 {
                    let xi = lroundf_int(x[m + n * 32] * id) + 1;
                    q = q.wrapping_add(((xi & 3) << (2 * n)) as u8);
                }
                block.qs[j + m] = q;
            }
        }
        block.write_to(yb);
    }
}

/// The trit of `q` at power `p` (the fixed-point fraction times 3^p, its integer part times 3).
#[inline(always)]
fn trit_at(q: u8, p: u8) -> f32 {
    let q = q.wrapping_mul(p);
    let xi = ((q as u16 * 3) >> 8) as i16;
    (xi - 1) as f32
}

/// ggml: `dequantize_row_tq1_0` (one block)
pub fn dequantize_tq1_0(b: &[u8], y: &mut [f32]) {
    const POW3: [u8; 6] = [1, 3, 9, 27, 81, 243];
    let block = BlockTq1_0::read_from(b);
    let d = fp32(block.d);
    let mut o = 0;
    for n in 0..5 {
        for m in 0..32 {
            y[o] = trit_at(block.qs[m], POW3[n]) * d;
            o += 1;
        }
    }
    for n in 0..5 {
        for m in 0..16 {
            y[o] = trit_at(block.qs[32 + m], POW3[n]) * d;
            o += 1;
        }
    }
    for n in 0..4 {
        for j in 0..4 {
            y[o] = trit_at(block.qh[j], POW3[n]) * d;
            o += 1;
        }
    }
}

/// ggml: `dequantize_row_tq2_0` (one block)
pub fn dequantize_tq2_0(b: &[u8], y: &mut [f32]) {
    let block = BlockTq2_0::read_from(b);
    let d = fp32(block.d);
    let mut o = 0;
    for j in (0..64).step_by(32) {
        for l in 0..4 {
            for m in 0..32 {
                let q = ((block.qs[j + m] >> (l * 2)) & 3) as i8;
                y[o] = (q - 1) as f32 * d;
                o += 1;
            }
        }
    }
}

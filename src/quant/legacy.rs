//! The 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (ggml `ggml-common.h` layouts).
//!
//! Quantization mirrors ggml's `quantize_row_*_ref` (no importance weights) and the static
//! `quantize_row_*_impl` (with them) bit for bit; dequantization mirrors `dequantize_row_*`.
//! The `quantize_row_*` entry points do for one row what ggml's `quantize_*` (the function
//! `ggml_quantize_chunk` calls) does for each row.

// Index loops are kept where ggml has them, so the port reads side by side with the C.
#![allow(clippy::needless_range_loop)]

use super::common::{c_float_to_int_x8, c_max, check_row, fp16, make_qkx3_quants, make_qx_quants, Block};
use super::float::f16_bits_to_f32;

pub const QK: usize = 32;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_0 {
    pub d: u16,
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_1 {
    pub d: u16,
    pub m: u16,
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5_0 {
    pub d: u16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5_1 {
    pub d: u16,
    pub m: u16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_0 {
    pub d: u16,
    pub qs: [i8; QK],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16_bits_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// ggml: `dequantize_row_q4_0`
pub fn dequantize_q4_0(block: &[u8], y: &mut [f32]) {
    let d = f16_at(block, 0);
    let qs = &block[2..18];
    for j in 0..QK / 2 {
        let x0 = (qs[j] & 0x0F) as i32 - 8;
        let x1 = (qs[j] >> 4) as i32 - 8;
        y[j] = x0 as f32 * d;
        y[j + QK / 2] = x1 as f32 * d;
    }
}

/// ggml: `dequantize_row_q4_1`
pub fn dequantize_q4_1(block: &[u8], y: &mut [f32]) {
    let d = f16_at(block, 0);
    let m = f16_at(block, 2);
    let qs = &block[4..20];
    for j in 0..QK / 2 {
        let x0 = (qs[j] & 0x0F) as i32;
        let x1 = (qs[j] >> 4) as i32;
        y[j] = x0 as f32 * d + m;
        y[j + QK / 2] = x1 as f32 * d + m;
    }
}

/// ggml: `dequantize_row_q5_0`
pub fn dequantize_q5_0(block: &[u8], y: &mut [f32]) {
    let d = f16_at(block, 0);
    let qh = u32::from_le_bytes(block[2..6].try_into().unwrap());
    let qs = &block[6..22];
    for j in 0..QK / 2 {
        let xh_0 = ((qh >> j) << 4) & 0x10;
        let xh_1 = (qh >> (j + 12)) & 0x10;
        let x0 = ((qs[j] as u32 & 0x0F) | xh_0) as i32 - 16;
        let x1 = ((qs[j] as u32 >> 4) | xh_1) as i32 - 16;
        y[j] = x0 as f32 * d;
        y[j + QK / 2] = x1 as f32 * d;
    }
}

/// ggml: `dequantize_row_q5_1`
pub fn dequantize_q5_1(block: &[u8], y: &mut [f32]) {
    let d = f16_at(block, 0);
    let m = f16_at(block, 2);
    let qh = u32::from_le_bytes(block[4..8].try_into().unwrap());
    let qs = &block[8..24];
    for j in 0..QK / 2 {
        let xh_0 = ((qh >> j) << 4) & 0x10;
        let xh_1 = (qh >> (j + 12)) & 0x10;
        let x0 = (qs[j] as u32 & 0x0F) | xh_0;
        let x1 = (qs[j] as u32 >> 4) | xh_1;
        y[j] = x0 as f32 * d + m;
        y[j + QK / 2] = x1 as f32 * d + m;
    }
}

/// ggml: `dequantize_row_q8_0`
pub fn dequantize_q8_0(block: &[u8], y: &mut [f32]) {
    let d = f16_at(block, 0);
    for j in 0..QK {
        y[j] = block[2 + j] as i8 as f32 * d;
    }
}

// ---------------------------------------------------------------------------------------------
// Quantization
// ---------------------------------------------------------------------------------------------

/// The signed value of largest magnitude (ggml keeps the first one on ties), for the symmetric
/// formats whose scale is `max / -nmax`.
///
/// ggml scans `if (amax < fabsf(v)) { amax = fabsf(v); max = v; }`: NaNs never win, and the value
/// kept is the first whose magnitude equals the final `amax` (or the initial 0.0 when no element
/// beats 0). The magnitude is reduced in eight lanes (a maximum is order independent), then the
/// first element reaching it is picked.
#[inline(always)]
fn signed_absmax(x: &[f32; QK]) -> f32 {
    let amax = absmax_value(x);
    if amax == 0.0 {
        return 0.0;
    }
    x[first_abs_equal(x, amax)]
}

/// `max(|x|)` as ggml's `amax < fabsf(v)` scan finds it (NaNs skipped, starting from 0).
#[inline(always)]
fn absmax_value(x: &[f32; QK]) -> f32 {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx"))]
    {
        super::simd::x86_64::absmax_32(x)
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx")))]
    x.iter().fold(0f32, |m, v| if m < v.abs() { v.abs() } else { m })
}

/// The index of the first element with `|x| == a` (one exists).
#[inline(always)]
fn first_abs_equal(x: &[f32; QK], a: f32) -> usize {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx"))]
    {
        super::simd::x86_64::first_abs_equal_32(x, a)
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx")))]
    x.iter().position(|v| v.abs() == a).unwrap()
}

/// The block's minimum and maximum, starting from `FLT_MAX`/`-FLT_MAX` as ggml does.
///
/// ggml's `if (v < min) min = v;` skips NaNs and keeps the first of equal values, which matters
/// only for signed zeros: the extrema are reduced in lanes (order independent otherwise), and a
/// zero result is replaced by the first zero of the block, as the sequential scan keeps.
#[inline(always)]
fn min_max(x: &[f32; QK]) -> (f32, f32) {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx"))]
    let (mut min, mut max) = super::simd::x86_64::min_max_32(x);
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx")))]
    let (mut min, mut max) =
        x.iter().fold((f32::MAX, -f32::MAX), |(mn, mx), &v| (if v < mn { v } else { mn }, if v > mx { v } else { mx }));
    if min == 0.0 {
        min = *x.iter().find(|&&v| v == 0.0).unwrap();
    }
    if max == 0.0 {
        max = *x.iter().find(|&&v| v == 0.0).unwrap();
    }
    (min, max)
}

/// `c_float_to_int` over a block, with packed conversions.
#[inline(always)]
fn c_float_to_int_block(v: &[f32; QK]) -> [i32; QK] {
    let mut out = [0i32; QK];
    for (o, c) in out.chunks_exact_mut(8).zip(v.chunks_exact(8)) {
        o.copy_from_slice(&c_float_to_int_x8(c.try_into().unwrap()));
    }
    out
}

/// `MIN(hi, (int8_t)v)` over a block, as bytes.
#[inline(always)]
fn clamp_i8_block(v: &[i32; QK], hi: i8) -> [u8; QK] {
    let mut out = [0u8; QK];
    for j in 0..QK {
        out[j] = hi.min(v[j] as i8) as u8;
    }
    out
}

/// `x*a + b` over a block (two roundings, as C without contraction).
#[inline(always)]
fn scale_block(x: &[f32; QK], sub: f32, a: f32, b: f32) -> [f32; QK] {
    let mut out = [0f32; QK];
    for j in 0..QK {
        out[j] = (x[j] - sub) * a + b;
    }
    out
}

/// Packs 32 four-bit values, the first 16 in the low nibbles.
#[inline(always)]
fn pack_q4(q: &[u8; QK]) -> [u8; QK / 2] {
    let mut qs = [0u8; QK / 2];
    for j in 0..QK / 2 {
        qs[j] = q[j] | (q[j + QK / 2] << 4);
    }
    qs
}

/// Packs 32 five-bit values into the low nibbles (`qs`) and the fifth bits (`qh`, little-endian).
#[inline(always)]
fn pack_q5_block(q: &[u8; QK]) -> ([u8; QK / 2], [u8; 4]) {
    let mut qs = [0u8; QK / 2];
    for j in 0..QK / 2 {
        qs[j] = (q[j] & 0x0F) | ((q[j + QK / 2] & 0x0F) << 4);
    }
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    let qh = super::simd::x86_64::bit4_mask_32(q);
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2")))]
    let qh = (0..QK).fold(0u32, |h, j| h | (((q[j] as u32 & 0x10) >> 4) << j));
    (qs, qh.to_le_bytes())
}

/// `d ? 1.0f/d : 0.0f` (NaN counts as true in C, and `!= 0.0` agrees).
#[inline(always)]
fn inverse_or_zero(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

/// The importance-weighted paths weight element `j` by `qw[j] * sqrt(sigma2 + x[j]^2)`, where
/// `sigma2` is the row's mean square (summed in `float`, in order, as ggml does).
#[inline(always)]
pub fn row_sigma2(x: &[f32]) -> f32 {
    let mut sum_x2 = 0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    sum_x2 / x.len() as f32
}

#[inline(always)]
fn block_weights(xb: &[f32], qw: &[f32], sigma2: f32) -> [f32; QK] {
    let mut weight = [0f32; QK];
    for j in 0..QK {
        weight[j] = qw[j] * (sigma2 + xb[j] * xb[j]).sqrt();
    }
    weight
}

/// ggml: `quantize_row_q4_0_ref`
pub fn quantize_row_q4_0_ref(x: &[f32], y: &mut [u8]) {
    const TS: usize = std::mem::size_of::<BlockQ4_0>();
    check_row(x, y, QK, TS);
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(TS)) {
        let xb: &[f32; QK] = xb.try_into().unwrap();
        let d = signed_absmax(xb) / -8.0;
        let id = inverse_or_zero(d);
        // `(int8_t)(x*id + 8.5f)` truncates, so +8.5 rounds half up around the offset 8.
        let q = clamp_i8_block(&c_float_to_int_block(&scale_block(xb, 0.0, id, 8.5)), 15);
        BlockQ4_0 { d: fp16(d), qs: pack_q4(&q) }.write_to(yb);
    }
}

/// ggml: `quantize_row_q4_0_impl`
pub fn quantize_row_q4_0_impl(x: &[f32], y: &mut [u8], quant_weights: &[f32]) {
    quantize_blocks_q4_0_impl(x, y, quant_weights, row_sigma2(x));
}

/// [`quantize_row_q4_0_impl`]'s blocks, with the row's mean square given (an error-compensating
/// quantizer chooses one block at a time, from a row still being updated).
pub fn quantize_blocks_q4_0_impl(x: &[f32], y: &mut [u8], quant_weights: &[f32], sigma2: f32) {
    const TS: usize = std::mem::size_of::<BlockQ4_0>();
    check_row(x, y, QK, TS);
    let mut l = [0i8; QK];
    for ((xb, yb), qw) in x.chunks_exact(QK).zip(y.chunks_exact_mut(TS)).zip(quant_weights.chunks_exact(QK)) {
        let weight = block_weights(xb, qw, sigma2);
        let d = make_qx_quants(8, xb, &mut l, 1, Some(&weight));
        let mut block = BlockQ4_0 { d: fp16(d), qs: [0; QK / 2] };
        for j in 0..QK / 2 {
            block.qs[j] = (l[j] as u8) | ((l[j + QK / 2] as u8) << 4);
        }
        block.write_to(yb);
    }
}

/// ggml: `quantize_q4_0` for one row: the reference quantizer without importance weights, the
/// weighted search with them.
pub fn quantize_row_q4_0(x: &[f32], y: &mut [u8], quant_weights: Option<&[f32]>) {
    match quant_weights {
        None => quantize_row_q4_0_ref(x, y),
        Some(qw) => quantize_row_q4_0_impl(x, y, qw),
    }
}

/// ggml: `quantize_row_q4_1_ref`
pub fn quantize_row_q4_1_ref(x: &[f32], y: &mut [u8]) {
    const TS: usize = std::mem::size_of::<BlockQ4_1>();
    check_row(x, y, QK, TS);
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(TS)) {
        let xb: &[f32; QK] = xb.try_into().unwrap();
        let (min, max) = min_max(xb);
        let d = (max - min) / 15.0;
        let id = inverse_or_zero(d);
        let q = clamp_i8_block(&c_float_to_int_block(&scale_block(xb, min, id, 0.5)), 15);
        BlockQ4_1 { d: fp16(d), m: fp16(min), qs: pack_q4(&q) }.write_to(yb);
    }
}

/// ggml: `quantize_row_q4_1_impl`
pub fn quantize_row_q4_1_impl(x: &[f32], y: &mut [u8], quant_weights: &[f32]) {
    quantize_blocks_q4_1_impl(x, y, quant_weights, row_sigma2(x));
}

/// [`quantize_row_q4_1_impl`]'s blocks, with the row's mean square given (an error-compensating
/// quantizer chooses one block at a time, from a row still being updated).
pub fn quantize_blocks_q4_1_impl(x: &[f32], y: &mut [u8], quant_weights: &[f32], sigma2: f32) {
    const TS: usize = std::mem::size_of::<BlockQ4_1>();
    check_row(x, y, QK, TS);
    let (mut l, mut laux) = ([0u8; QK], [0u8; QK]);
    for ((xb, yb), qw) in x.chunks_exact(QK).zip(y.chunks_exact_mut(TS)).zip(quant_weights.chunks_exact(QK)) {
        let weight = block_weights(xb, qw, sigma2);
        let mut min = 0f32;
        let d = make_qkx3_quants(15, xb, Some(&weight), &mut l, &mut min, &mut laux, -0.9, 0.05, 36, false);
        let mut block = BlockQ4_1 { d: fp16(d), m: fp16(-min), qs: [0; QK / 2] };
        for j in 0..QK / 2 {
            block.qs[j] = l[j] | (l[j + QK / 2] << 4);
        }
        block.write_to(yb);
    }
}

/// ggml: `quantize_q4_1` for one row.
pub fn quantize_row_q4_1(x: &[f32], y: &mut [u8], quant_weights: Option<&[f32]>) {
    match quant_weights {
        None => quantize_row_q4_1_ref(x, y),
        Some(qw) => quantize_row_q4_1_impl(x, y, qw),
    }
}

/// ggml: `quantize_row_q5_0_ref`
pub fn quantize_row_q5_0_ref(x: &[f32], y: &mut [u8]) {
    const TS: usize = std::mem::size_of::<BlockQ5_0>();
    check_row(x, y, QK, TS);
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(TS)) {
        let xb: &[f32; QK] = xb.try_into().unwrap();
        let d = signed_absmax(xb) / -16.0;
        let id = inverse_or_zero(d);
        let q = clamp_i8_block(&c_float_to_int_block(&scale_block(xb, 0.0, id, 16.5)), 31);
        let (qs, qh) = pack_q5_block(&q);
        BlockQ5_0 { d: fp16(d), qh, qs }.write_to(yb);
    }
}

/// ggml: `quantize_row_q5_0_impl`
pub fn quantize_row_q5_0_impl(x: &[f32], y: &mut [u8], quant_weights: &[f32]) {
    quantize_blocks_q5_0_impl(x, y, quant_weights, row_sigma2(x));
}

/// [`quantize_row_q5_0_impl`]'s blocks, with the row's mean square given (an error-compensating
/// quantizer chooses one block at a time, from a row still being updated).
pub fn quantize_blocks_q5_0_impl(x: &[f32], y: &mut [u8], quant_weights: &[f32], sigma2: f32) {
    const TS: usize = std::mem::size_of::<BlockQ5_0>();
    check_row(x, y, QK, TS);
    let mut l = [0i8; QK];
    for ((xb, yb), qw) in x.chunks_exact(QK).zip(y.chunks_exact_mut(TS)).zip(quant_weights.chunks_exact(QK)) {
        let weight = block_weights(xb, qw, sigma2);
        let d = make_qx_quants(16, xb, &mut l, 1, Some(&weight));
        let (qs, qh) = pack_q5_block(&l.map(|v| v as u8));
        BlockQ5_0 { d: fp16(d), qh, qs }.write_to(yb);
    }
}

/// ggml: `quantize_q5_0` for one row.
pub fn quantize_row_q5_0(x: &[f32], y: &mut [u8], quant_weights: Option<&[f32]>) {
    match quant_weights {
        None => quantize_row_q5_0_ref(x, y),
        Some(qw) => quantize_row_q5_0_impl(x, y, qw),
    }
}

/// ggml: `quantize_row_q5_1_ref`
pub fn quantize_row_q5_1_ref(x: &[f32], y: &mut [u8]) {
    const TS: usize = std::mem::size_of::<BlockQ5_1>();
    check_row(x, y, QK, TS);
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(TS)) {
        let xb: &[f32; QK] = xb.try_into().unwrap();
        let (min, max) = min_max(xb);
        let d = (max - min) / 31.0;
        let id = inverse_or_zero(d);
        // `(uint8_t)(x + 0.5f)`: no clamp to 31 here, unlike the other formats.
        let qi = c_float_to_int_block(&scale_block(xb, min, id, 0.5));
        let mut q = [0u8; QK];
        for j in 0..QK {
            q[j] = qi[j] as u8;
        }
        let (qs, qh) = pack_q5_block(&q);
        BlockQ5_1 { d: fp16(d), m: fp16(min), qh, qs }.write_to(yb);
    }
}

/// ggml: `quantize_row_q5_1_impl`
pub fn quantize_row_q5_1_impl(x: &[f32], y: &mut [u8], quant_weights: &[f32]) {
    quantize_blocks_q5_1_impl(x, y, quant_weights, row_sigma2(x));
}

/// [`quantize_row_q5_1_impl`]'s blocks, with the row's mean square given (an error-compensating
/// quantizer chooses one block at a time, from a row still being updated).
pub fn quantize_blocks_q5_1_impl(x: &[f32], y: &mut [u8], quant_weights: &[f32], sigma2: f32) {
    const TS: usize = std::mem::size_of::<BlockQ5_1>();
    check_row(x, y, QK, TS);
    let (mut l, mut laux) = ([0u8; QK], [0u8; QK]);
    for ((xb, yb), qw) in x.chunks_exact(QK).zip(y.chunks_exact_mut(TS)).zip(quant_weights.chunks_exact(QK)) {
        let weight = block_weights(xb, qw, sigma2);
        let mut min = 0f32;
        let d = make_qkx3_quants(31, xb, Some(&weight), &mut l, &mut min, &mut laux, -0.9, 0.05, 36, false);
        let (qs, qh) = pack_q5_block(&l);
        BlockQ5_1 { d: fp16(d), m: fp16(-min), qh, qs }.write_to(yb);
    }
}

/// ggml: `quantize_q5_1` for one row.
pub fn quantize_row_q5_1(x: &[f32], y: &mut [u8], quant_weights: Option<&[f32]>) {
    match quant_weights {
        None => quantize_row_q5_1_ref(x, y),
        Some(qw) => quantize_row_q5_1_impl(x, y, qw),
    }
}

/// ggml: `quantize_row_q8_0_ref`
pub fn quantize_row_q8_0_ref(x: &[f32], y: &mut [u8]) {
    const TS: usize = std::mem::size_of::<BlockQ8_0>();
    check_row(x, y, QK, TS);
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(TS)) {
        let mut amax = 0f32;
        for &v in xb {
            amax = c_max(amax, v.abs());
        }
        let d = amax / 127.0;
        let id = inverse_or_zero(d);
        let mut block = BlockQ8_0 { d: fp16(d), qs: [0; QK] };
        // `roundf` (halves away from zero, as `f32::round`), then the implicit float → int8_t,
        // eight at a time (the packed conversion has C's semantics exactly).
        let mut rounded = [0f32; QK];
        for (r, &v) in rounded.iter_mut().zip(xb) {
            *r = (v * id).round();
        }
        for (q, r) in block.qs.chunks_exact_mut(8).zip(rounded.chunks_exact(8)) {
            for (qi, i) in q.iter_mut().zip(c_float_to_int_x8(r.try_into().unwrap())) {
                *qi = i as i8;
            }
        }
        block.write_to(yb);
    }
}

/// ggml: `quantize_q8_0` for one row (importance weights are accepted and ignored, as in ggml).
pub fn quantize_row_q8_0(x: &[f32], y: &mut [u8], _quant_weights: Option<&[f32]>) {
    quantize_row_q8_0_ref(x, y)
}

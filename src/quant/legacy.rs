//! The 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (ggml `ggml-common.h` layouts).
//!
//! Quantization mirrors ggml's `quantize_row_*_ref` (no importance weights) and the static
//! `quantize_row_*_impl` (with them) bit for bit; dequantization mirrors `dequantize_row_*`.
//! The `quantize_row_*` entry points do for one row what ggml's `quantize_*` (the function
//! `ggml_quantize_chunk` calls) does for each row.

// Index loops are kept where ggml has them, so the port reads side by side with the C.
#![allow(clippy::needless_range_loop)]

use super::common::{c_float_to_int, c_max, fp16, make_qkx3_quants, make_qx_quants, ByteWriter};
use super::float::f16_bits_to_f32;

pub const QK: usize = 32;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ4_0 {
    pub d: u16,
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ4_1 {
    pub d: u16,
    pub m: u16,
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ5_0 {
    pub d: u16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ5_1 {
    pub d: u16,
    pub m: u16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ8_0 {
    pub d: u16,
    pub qs: [i8; QK],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

impl BlockQ4_0 {
    pub fn write_to(&self, out: &mut [u8]) {
        let mut w = ByteWriter::new(out);
        w.u16(self.d);
        w.bytes(&self.qs);
    }
}

impl BlockQ4_1 {
    pub fn write_to(&self, out: &mut [u8]) {
        let mut w = ByteWriter::new(out);
        w.u16(self.d);
        w.u16(self.m);
        w.bytes(&self.qs);
    }
}

impl BlockQ5_0 {
    pub fn write_to(&self, out: &mut [u8]) {
        let mut w = ByteWriter::new(out);
        w.u16(self.d);
        w.bytes(&self.qh);
        w.bytes(&self.qs);
    }
}

impl BlockQ5_1 {
    pub fn write_to(&self, out: &mut [u8]) {
        let mut w = ByteWriter::new(out);
        w.u16(self.d);
        w.u16(self.m);
        w.bytes(&self.qh);
        w.bytes(&self.qs);
    }
}

impl BlockQ8_0 {
    pub fn write_to(&self, out: &mut [u8]) {
        let mut w = ByteWriter::new(out);
        w.u16(self.d);
        w.bytes(&self.qs.map(|q| q as u8));
    }
}

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

/// C's `(int8_t)f` as x86-64 compiles it (see [`c_float_to_int`]), widened back to `int` as the
/// surrounding `MIN(15, ...)` sees it.
#[inline(always)]
fn c_float_to_i8(f: f32) -> i32 {
    c_float_to_int(f) as i8 as i32
}

/// The signed value of largest magnitude (ggml keeps the first one on ties), for the symmetric
/// formats whose scale is `max / -nmax`.
#[inline(always)]
fn signed_absmax(x: &[f32]) -> f32 {
    let mut amax = 0f32;
    let mut max = 0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// The block's minimum and maximum, starting from `FLT_MAX`/`-FLT_MAX` as ggml does.
#[inline(always)]
fn min_max(x: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
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
fn row_sigma2(x: &[f32]) -> f32 {
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

/// Packs 32 five-bit values into the low nibbles (`qs`) and the fifth bits (`qh`, little-endian).
#[inline(always)]
fn pack_q5(l: impl Fn(usize) -> u8) -> ([u8; QK / 2], [u8; 4]) {
    let mut qs = [0u8; QK / 2];
    let mut qh = 0u32;
    for j in 0..QK / 2 {
        let (xi0, xi1) = (l(j), l(j + QK / 2));
        qs[j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
        qh |= ((xi0 as u32 & 0x10) >> 4) << j;
        qh |= ((xi1 as u32 & 0x10) >> 4) << (j + QK / 2);
    }
    (qs, qh.to_le_bytes())
}

fn check_row(x: &[f32], y: &[u8], type_size: usize) -> usize {
    assert!(x.len().is_multiple_of(QK), "row of {} values is not a whole number of blocks", x.len());
    let nb = x.len() / QK;
    assert_eq!(y.len(), nb * type_size, "output is not {nb} blocks");
    nb
}

/// ggml: `quantize_row_q4_0_ref`
pub fn quantize_row_q4_0_ref(x: &[f32], y: &mut [u8]) {
    const TS: usize = std::mem::size_of::<BlockQ4_0>();
    check_row(x, y, TS);
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(TS)) {
        let d = signed_absmax(xb) / -8.0;
        let id = inverse_or_zero(d);
        let mut block = BlockQ4_0 { d: fp16(d), qs: [0; QK / 2] };
        for j in 0..QK / 2 {
            // `(int8_t)(x*id + 8.5f)` truncates, so +8.5 rounds half up around the offset 8.
            let xi0 = 15.min(c_float_to_i8(xb[j] * id + 8.5)) as u8;
            let xi1 = 15.min(c_float_to_i8(xb[j + QK / 2] * id + 8.5)) as u8;
            block.qs[j] = xi0 | (xi1 << 4);
        }
        block.write_to(yb);
    }
}

/// ggml: `quantize_row_q4_0_impl`
pub fn quantize_row_q4_0_impl(x: &[f32], y: &mut [u8], quant_weights: &[f32]) {
    const TS: usize = std::mem::size_of::<BlockQ4_0>();
    check_row(x, y, TS);
    let sigma2 = row_sigma2(x);
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
    check_row(x, y, TS);
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(TS)) {
        let (min, max) = min_max(xb);
        let d = (max - min) / 15.0;
        let id = inverse_or_zero(d);
        let mut block = BlockQ4_1 { d: fp16(d), m: fp16(min), qs: [0; QK / 2] };
        for j in 0..QK / 2 {
            let xi0 = 15.min(c_float_to_i8((xb[j] - min) * id + 0.5)) as u8;
            let xi1 = 15.min(c_float_to_i8((xb[j + QK / 2] - min) * id + 0.5)) as u8;
            block.qs[j] = xi0 | (xi1 << 4);
        }
        block.write_to(yb);
    }
}

/// ggml: `quantize_row_q4_1_impl`
pub fn quantize_row_q4_1_impl(x: &[f32], y: &mut [u8], quant_weights: &[f32]) {
    const TS: usize = std::mem::size_of::<BlockQ4_1>();
    check_row(x, y, TS);
    let sigma2 = row_sigma2(x);
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
    check_row(x, y, TS);
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(TS)) {
        let d = signed_absmax(xb) / -16.0;
        let id = inverse_or_zero(d);
        let (qs, qh) = pack_q5(|j| 31.min(c_float_to_i8(xb[j] * id + 16.5)) as u8);
        BlockQ5_0 { d: fp16(d), qh, qs }.write_to(yb);
    }
}

/// ggml: `quantize_row_q5_0_impl`
pub fn quantize_row_q5_0_impl(x: &[f32], y: &mut [u8], quant_weights: &[f32]) {
    const TS: usize = std::mem::size_of::<BlockQ5_0>();
    check_row(x, y, TS);
    let sigma2 = row_sigma2(x);
    let mut l = [0i8; QK];
    for ((xb, yb), qw) in x.chunks_exact(QK).zip(y.chunks_exact_mut(TS)).zip(quant_weights.chunks_exact(QK)) {
        let weight = block_weights(xb, qw, sigma2);
        let d = make_qx_quants(16, xb, &mut l, 1, Some(&weight));
        let (qs, qh) = pack_q5(|j| l[j] as u8);
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
    check_row(x, y, TS);
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(TS)) {
        let (min, max) = min_max(xb);
        let d = (max - min) / 31.0;
        let id = inverse_or_zero(d);
        // `(uint8_t)(x + 0.5f)`: no clamp to 31 here, unlike the other formats.
        let (qs, qh) = pack_q5(|j| c_float_to_int((xb[j] - min) * id + 0.5) as u8);
        BlockQ5_1 { d: fp16(d), m: fp16(min), qh, qs }.write_to(yb);
    }
}

/// ggml: `quantize_row_q5_1_impl`
pub fn quantize_row_q5_1_impl(x: &[f32], y: &mut [u8], quant_weights: &[f32]) {
    const TS: usize = std::mem::size_of::<BlockQ5_1>();
    check_row(x, y, TS);
    let sigma2 = row_sigma2(x);
    let (mut l, mut laux) = ([0u8; QK], [0u8; QK]);
    for ((xb, yb), qw) in x.chunks_exact(QK).zip(y.chunks_exact_mut(TS)).zip(quant_weights.chunks_exact(QK)) {
        let weight = block_weights(xb, qw, sigma2);
        let mut min = 0f32;
        let d = make_qkx3_quants(31, xb, Some(&weight), &mut l, &mut min, &mut laux, -0.9, 0.05, 36, false);
        let (qs, qh) = pack_q5(|j| l[j]);
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
    check_row(x, y, TS);
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(TS)) {
        let mut amax = 0f32;
        for &v in xb {
            amax = c_max(amax, v.abs());
        }
        let d = amax / 127.0;
        let id = inverse_or_zero(d);
        let mut block = BlockQ8_0 { d: fp16(d), qs: [0; QK] };
        for j in 0..QK {
            // `roundf` (halves away from zero, as `f32::round`), then the implicit float → int8_t.
            block.qs[j] = c_float_to_int((xb[j] * id).round()) as i8;
        }
        block.write_to(yb);
    }
}

/// ggml: `quantize_q8_0` for one row (importance weights are accepted and ignored, as in ggml).
pub fn quantize_row_q8_0(x: &[f32], y: &mut [u8], _quant_weights: Option<&[f32]>) {
    quantize_row_q8_0_ref(x, y)
}

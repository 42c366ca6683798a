//! The K-quant super-block formats of 256 elements: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (ggml
//! `ggml-common.h` layouts).
//!
//! Each format has, as in ggml, a reference quantizer (`quantize_row_*_ref`, used when no
//! importance weights are given), an importance-weighted one (`quantize_row_*_impl`), a row entry
//! point that picks between them as ggml's `quantize_*` does, and a per-block dequantizer
//! mirroring `dequantize_row_*`. All are bit-exact ports; see `common` for the C semantics kept.

// Index loops are kept where ggml has them, so the port reads side by side with the C.
#![allow(clippy::needless_range_loop)]

use super::common::{
    check_row, fp16, fp32, get_scale_min_k4, make_q3_quants, make_qkx_quants_x8, make_qp_quants, make_qx_quants,
    nearest_int, sum_squares, Block, GROUP_MAX_EPS,
};

/// ggml: `QK_K`, elements per super-block.
pub const QK_K: usize = 256;
/// ggml: `K_SCALE_SIZE`, bytes of packed 6-bit scales and mins in Q4_K/Q5_K.
pub const K_SCALE_SIZE: usize = 12;

/// ggml: `block_q2_K`: 16 sub-blocks of 16, `x = d*sc*q - dmin*m` with 4-bit `sc`/`m`, 2-bit `q`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ2K {
    pub scales: [u8; QK_K / 16],
    pub qs: [u8; QK_K / 4],
    pub d: u16,
    pub dmin: u16,
}
const _: () = assert!(std::mem::size_of::<BlockQ2K>() == 84);

/// ggml: `block_q3_K`: 16 sub-blocks of 16, `x = d*(sc-32)*(q-4)` with 6-bit `sc`, 3-bit `q`
/// (low two bits in `qs`, the high bit in `hmask`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ3K {
    pub hmask: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 4],
    pub scales: [u8; 12],
    pub d: u16,
}
const _: () = assert!(std::mem::size_of::<BlockQ3K>() == 110);

/// ggml: `block_q4_K`: 8 sub-blocks of 32, `x = d*sc*q - dmin*m` with 6-bit `sc`/`m`, 4-bit `q`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4K {
    pub d: u16,
    pub dmin: u16,
    pub scales: [u8; K_SCALE_SIZE],
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);

/// ggml: `block_q5_K`: as Q4_K with a fifth bit per quant in `qh`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5K {
    pub d: u16,
    pub dmin: u16,
    pub scales: [u8; K_SCALE_SIZE],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);

/// ggml: `block_q6_K`: 16 sub-blocks of 16, `x = d*sc*(q-32)` with 8-bit signed `sc`, 6-bit `q`
/// (low four bits in `ql`, high two in `qh`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: u16,
}
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);

impl BlockQ2K {
    pub const ZERO: BlockQ2K = BlockQ2K { scales: [0; QK_K / 16], qs: [0; QK_K / 4], d: 0, dmin: 0 };
}

impl BlockQ3K {
    pub const ZERO: BlockQ3K = BlockQ3K { hmask: [0; QK_K / 8], qs: [0; QK_K / 4], scales: [0; 12], d: 0 };
}

impl BlockQ4K {
    pub const ZERO: BlockQ4K = BlockQ4K { d: 0, dmin: 0, scales: [0; K_SCALE_SIZE], qs: [0; QK_K / 2] };
}

impl BlockQ5K {
    pub const ZERO: BlockQ5K =
        BlockQ5K { d: 0, dmin: 0, scales: [0; K_SCALE_SIZE], qh: [0; QK_K / 8], qs: [0; QK_K / 2] };
}

impl BlockQ6K {
    pub const ZERO: BlockQ6K = BlockQ6K { ql: [0; QK_K / 2], qh: [0; QK_K / 4], scales: [0; QK_K / 16], d: 0 };
}

/// Packs 2-bit quants: byte `l` of each 32-byte group holds four values 32 apart (Q2_K, Q3_K).
#[inline(always)]
fn pack_2bit(l: &[u8; QK_K], qs: &mut [u8; QK_K / 4]) {
    for j in (0..QK_K).step_by(128) {
        for k in 0..32 {
            qs[j / 4 + k] = l[j + k] | (l[j + k + 32] << 2) | (l[j + k + 64] << 4) | (l[j + k + 96] << 6);
        }
    }
}

/// Packs the sixteen 6-bit sub-block scales of Q3_K: low nibbles in bytes 0..8, high two bits in
/// bytes 8..12 (`scales` must start zeroed, as ggml's `memset` ensures).
#[inline(always)]
fn pack_q3k_scale(scales: &mut [u8; 12], j: usize, l: i8) {
    if j < 8 {
        scales[j] = (l & 0xF) as u8;
    } else {
        scales[j - 8] |= ((l & 0xF) << 4) as u8;
    }
    let l = l >> 4;
    scales[j % 4 + 8] |= (l << (2 * (j / 4))) as u8;
}

/// The signed 6-bit scale of Q3_K sub-block `j`, minus its offset 32 (as the C `int8_t sc`).
#[inline(always)]
fn q3k_scale(scales: &[u8; 12], j: usize) -> i8 {
    let lo = (if j < 8 { scales[j] & 0xF } else { scales[j - 8] >> 4 }) as i8;
    (lo | (((scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4) as i8).wrapping_sub(32)
}

/// Q3_K's final pass (shared by the two quantizers): requantize against the stored scales, then
/// split the 3-bit values into `hmask` (high bit; the first 32 values into bit 0, the next 32
/// into bit 1, ...) and the 2-bit `qs`.
fn finish_q3k(x: &[f32], l: &mut [i8; QK_K], block: &mut BlockQ3K) {
    let d_all = fp32(block.d);
    for j in 0..QK_K / 16 {
        let d = d_all * q3k_scale(&block.scales, j) as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = (-4).max(3.min(nearest_int(x[16 * j + ii] / d)));
            l[16 * j + ii] = (q + 4) as i8;
        }
    }
    block.hmask = [0; QK_K / 8];
    let mut m = 0;
    let mut hm = 1u8;
    for lj in l.iter_mut() {
        if *lj > 3 {
            block.hmask[m] |= hm;
            *lj -= 4;
        }
        m += 1;
        if m == QK_K / 8 {
            m = 0;
            hm <<= 1;
        }
    }
    pack_2bit(&l.map(|v| v as u8), &mut block.qs);
}

/// Packs 6-bit scale `ls` and min `lm` of sub-block `j` into Q4_K/Q5_K's 12 scale bytes: the
/// first four pairs whole in bytes 0..8, the last four as nibbles in bytes 8..12 with their top
/// two bits in the spare high bits of bytes 0..8.
#[inline(always)]
fn pack_scale_min_k4(scales: &mut [u8; K_SCALE_SIZE], j: usize, ls: u8, lm: u8) {
    if j < 4 {
        scales[j] = ls;
        scales[j + 4] = lm;
    } else {
        scales[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
        scales[j - 4] |= (ls >> 4) << 6;
        scales[j] |= (lm >> 4) << 6;
    }
}

/// Q4_K/Q5_K: requantize each sub-block of 32 against its stored scale and min (`L in 0..=nmax`);
/// sub-blocks whose scale rounds to zero keep the search's `L`.
#[inline(always)]
fn requantize_k4(x: &[f32], d: u16, dmin: u16, scales: &[u8; K_SCALE_SIZE], nmax: i32, l: &mut [u8; QK_K]) {
    for j in 0..QK_K / 32 {
        let (sc, m) = get_scale_min_k4(j, scales);
        let d = fp32(d) * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = fp32(dmin) * m as f32;
        for ii in 0..32 {
            let q = nearest_int((x[32 * j + ii] + dm) / d);
            l[32 * j + ii] = 0.max(nmax.min(q)) as u8;
        }
    }
}

/// Q4_K/Q5_K reference: per-sub-block weights `sqrt(mean(x²)) + |x|` for `make_qkx2_quants`.
#[inline(always)]
fn k4_ref_weights(x: &[f32]) -> [f32; QK_K] {
    let mut weights = [0f32; QK_K];
    for (xs, ws) in x.chunks_exact(32).zip(weights.chunks_exact_mut(32)) {
        let av_x = (sum_squares(xs) / 32.0).sqrt();
        for l in 0..32 {
            ws[l] = av_x + xs[l].abs();
        }
    }
    weights
}

/// Q4_K/Q5_K reference: 6-bit sub-block scales and mins relative to the largest of each, returned
/// with the super-block `d` and `dmin`.
fn k4_ref_scales(scales: &[f32; 8], mins: &[f32; 8]) -> ([u8; K_SCALE_SIZE], u16, u16) {
    let mut max_scale = 0f32;
    let mut max_min = 0f32;
    for j in 0..QK_K / 32 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut packed = [0u8; K_SCALE_SIZE];
    for j in 0..QK_K / 32 {
        // `uint8_t ls = nearest_int(...)` wraps before the clamp to 63.
        let ls = 63.min(nearest_int(inv_scale * scales[j]) as u8);
        let lm = 63.min(nearest_int(inv_min * mins[j]) as u8);
        pack_scale_min_k4(&mut packed, j, ls, lm);
    }
    (packed, fp16(max_scale / 63.0), fp16(max_min / 63.0))
}

/// Q4_K/Q5_K weighted search: per-sub-block `make_qkx3_quants` with weights
/// `qw * sqrt(sigma2 + x²)`, then the scales and mins quantized by `make_qp_quants`. Returns the
/// 6-bit scales, mins and the float `d`, `dmin`.
fn k4_impl_scales(
    x: &[f32],
    qw: &[f32],
    nmax: i32,
    l: &mut [u8; QK_K],
) -> ([u8; QK_K / 32], [u8; QK_K / 32], f32, f32) {
    let sigma2 = 2.0 * sum_squares(x) / QK_K as f32;
    let mut sw = [0f32; QK_K / 32];
    let mut weights = [0f32; QK_K];
    for j in 0..QK_K / 32 {
        let xs = &x[32 * j..32 * j + 32];
        let ws = &mut weights[32 * j..32 * j + 32];
        for k in 0..32 {
            ws[k] = qw[32 * j + k] * (sigma2 + xs[k] * xs[k]).sqrt();
        }
        let mut sumw = 0f32;
        for &w in ws.iter() {
            sumw += w;
        }
        sw[j] = sumw;
    }
    let (scales, mins) = make_qkx_quants_x8::<true, false, 32>(nmax, x, &weights, l, -0.9, 0.05, 36);
    let mut ls = [0u8; QK_K / 32];
    let mut lm = [0u8; QK_K / 32];
    let d_block = make_qp_quants(63, &scales, &mut ls, &sw);
    let m_block = make_qp_quants(63, &mins, &mut lm, &sw);
    (ls, lm, d_block, m_block)
}

/// Q4_K: two sub-blocks' 4-bit quants per 32 bytes, the first in the low nibbles.
#[inline(always)]
fn pack_q4k(l: &[u8; QK_K], qs: &mut [u8; QK_K / 2]) {
    for (jq, j) in (0..QK_K).step_by(64).enumerate() {
        for k in 0..32 {
            qs[32 * jq + k] = l[j + k] | (l[j + k + 32] << 4);
        }
    }
}

/// Q5_K: as Q4_K for the low four bits; bit 4 of the values of sub-block pair `p` goes to bits
/// `2p` and `2p+1` of `qh`.
#[inline(always)]
fn pack_q5k(l: &[u8; QK_K], qh: &mut [u8; QK_K / 8], qs: &mut [u8; QK_K / 2]) {
    *qh = [0; QK_K / 8];
    let (mut m1, mut m2) = (1u8, 2u8);
    for (jq, n) in (0..QK_K).step_by(64).enumerate() {
        for j in 0..32 {
            let mut l1 = l[n + j];
            if l1 > 15 {
                l1 -= 16;
                qh[j] |= m1;
            }
            let mut l2 = l[n + j + 32];
            if l2 > 15 {
                l2 -= 16;
                qh[j] |= m2;
            }
            qs[32 * jq + j] = l1 | (l2 << 4);
        }
        m1 <<= 2;
        m2 <<= 2;
    }
}

/// Q6_K's final pass (shared by the two quantizers): the signed sub-block scales relative to the
/// largest, requantization against them, and the 4+2-bit packing. A block whose scales are all
/// (nearly) zero is stored as all-zero bytes, as ggml's `memset` does.
fn finish_q6k(x: &[f32], scales: &[f32; QK_K / 16], l: &mut [i8; QK_K]) -> BlockQ6K {
    let mut max_scale = 0f32;
    let mut max_abs_scale = 0f32;
    for &scale in scales {
        let abs_scale = scale.abs();
        if abs_scale > max_abs_scale {
            max_abs_scale = abs_scale;
            max_scale = scale;
        }
    }
    let mut block = BlockQ6K::ZERO;
    if max_abs_scale < GROUP_MAX_EPS {
        block.d = fp16(0.0);
        return block;
    }
    let iscale = -128.0 / max_scale;
    block.d = fp16(1.0 / iscale);
    for ib in 0..QK_K / 16 {
        block.scales[ib] = 127.min(nearest_int(iscale * scales[ib])) as i8;
    }
    for j in 0..QK_K / 16 {
        let d = fp32(block.d) * block.scales[j] as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = (-32).max(31.min(nearest_int(x[16 * j + ii] / d)));
            l[16 * j + ii] = (q + 32) as i8;
        }
    }
    for (jq, j) in (0..QK_K).step_by(128).enumerate() {
        let (ql, qh) = (&mut block.ql[64 * jq..64 * jq + 64], &mut block.qh[32 * jq..32 * jq + 32]);
        for k in 0..32 {
            let (l1, l2, l3, l4) = (l[j + k] as u8, l[j + k + 32] as u8, l[j + k + 64] as u8, l[j + k + 96] as u8);
            ql[k] = (l1 & 0xF) | ((l3 & 0xF) << 4);
            ql[k + 32] = (l2 & 0xF) | ((l4 & 0xF) << 4);
            qh[k] = (l1 >> 4) | ((l2 >> 4) << 2) | ((l3 >> 4) << 4) | ((l4 >> 4) << 6);
        }
    }
    block
}

// ---------------------------------------------------------------------------------------------
// Q2_K
// ---------------------------------------------------------------------------------------------

/// ggml: `quantize_row_q2_K_ref`
pub fn quantize_row_q2_k_ref(x: &[f32], y: &mut [u8]) {
    const TS: usize = std::mem::size_of::<BlockQ2K>();
    check_row(x, y, QK_K, TS);
    const Q4SCALE: f32 = 15.0;
    let mut l = [0u8; QK_K];
    for (x, yb) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(TS)) {
        let weights: [f32; QK_K] = std::array::from_fn(|k| x[k].abs());
        let (scales, mins) = q2k_search::<false, true>(x, &weights, &mut l, -0.5, 0.1, 15);
        let mut max_scale = 0f32;
        let mut max_min = 0f32;
        for j in 0..QK_K / 16 {
            if scales[j] > max_scale {
                max_scale = scales[j];
            }
            if mins[j] > max_min {
                max_min = mins[j];
            }
        }
        let mut block = BlockQ2K::ZERO;
        if max_scale > 0.0 {
            let iscale = Q4SCALE / max_scale;
            for j in 0..QK_K / 16 {
                block.scales[j] = nearest_int(iscale * scales[j]) as u8;
            }
            block.d = fp16(max_scale / Q4SCALE);
        } else {
            block.d = fp16(0.0);
        }
        if max_min > 0.0 {
            let iscale = Q4SCALE / max_min;
            for j in 0..QK_K / 16 {
                block.scales[j] |= (nearest_int(iscale * mins[j]) << 4) as u8;
            }
            block.dmin = fp16(max_min / Q4SCALE);
        } else {
            block.dmin = fp16(0.0);
        }
        requantize_q2k(x, &block, fp32(block.d), fp32(block.dmin), &mut l);
        pack_2bit(&l, &mut block.qs);
        block.write_to(yb);
    }
}

/// Q2_K's search over its sixteen sub-blocks of 16, eight at a time: each sub-block's scale and
/// `-min`, as ggml's per-sub-block `make_qkx2_quants`/`make_qkx3_quants` calls give them.
#[inline(always)]
fn q2k_search<const X3: bool, const MAD: bool>(
    x: &[f32],
    weights: &[f32; QK_K],
    l: &mut [u8; QK_K],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> ([f32; QK_K / 16], [f32; QK_K / 16]) {
    const HALF: usize = QK_K / 2;
    let (lo, hi) = l.split_at_mut(HALF);
    let (s0, m0) = make_qkx_quants_x8::<X3, MAD, 16>(3, &x[..HALF], &weights[..HALF], lo, rmin, rdelta, nstep);
    let (s1, m1) = make_qkx_quants_x8::<X3, MAD, 16>(3, &x[HALF..], &weights[HALF..], hi, rmin, rdelta, nstep);
    let join = |a: [f32; 8], b: [f32; 8]| std::array::from_fn(|j| if j < 8 { a[j] } else { b[j - 8] });
    (join(s0, s1), join(m0, m1))
}

/// Q2_K: requantize each sub-block of 16 against its stored 4-bit scale and min.
#[inline(always)]
fn requantize_q2k(x: &[f32], block: &BlockQ2K, dm: f32, mm: f32, l: &mut [u8; QK_K]) {
    for j in 0..QK_K / 16 {
        let d = dm * (block.scales[j] & 0xF) as f32;
        if d == 0.0 {
            continue;
        }
        let m = mm * (block.scales[j] >> 4) as f32;
        for ii in 0..16 {
            let q = nearest_int((x[16 * j + ii] + m) / d);
            l[16 * j + ii] = 0.max(3.min(q)) as u8;
        }
    }
}

/// ggml: `quantize_row_q2_K_impl`
pub fn quantize_row_q2_k_impl(x: &[f32], y: &mut [u8], quant_weights: &[f32]) {
    const TS: usize = std::mem::size_of::<BlockQ2K>();
    check_row(x, y, QK_K, TS);
    let mut l = [0u8; QK_K];
    for ((x, yb), qw) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(TS)).zip(quant_weights.chunks_exact(QK_K)) {
        let mut sw = [0f32; QK_K / 16];
        let sigma2 = sum_squares(x) / QK_K as f32;
        let weights: [f32; QK_K] = std::array::from_fn(|k| qw[k] * (sigma2 + x[k] * x[k]).sqrt());
        for j in 0..QK_K / 16 {
            for &w in &weights[16 * j..16 * j + 16] {
                sw[j] += w;
            }
        }
        let (scales, mins) = q2k_search::<true, false>(x, &weights, &mut l, -0.9, 0.05, 36);
        let mut ls = [0u8; QK_K / 16];
        let mut lm = [0u8; QK_K / 16];
        let dm = make_qp_quants(15, &scales, &mut ls, &sw);
        let mm = make_qp_quants(15, &mins, &mut lm, &sw);
        let mut block = BlockQ2K::ZERO;
        block.d = fp16(dm);
        block.dmin = fp16(mm);
        for j in 0..QK_K / 16 {
            block.scales[j] = ls[j] | (lm[j] << 4);
        }
        requantize_q2k(x, &block, fp32(block.d), fp32(block.dmin), &mut l);
        pack_2bit(&l, &mut block.qs);
        block.write_to(yb);
    }
}

/// ggml: `quantize_q2_K` for one row.
pub fn quantize_row_q2_k(x: &[f32], y: &mut [u8], quant_weights: Option<&[f32]>) {
    match quant_weights {
        None => quantize_row_q2_k_ref(x, y),
        Some(qw) => quantize_row_q2_k_impl(x, y, qw),
    }
}

/// ggml: `dequantize_row_q2_K` (one block)
pub fn dequantize_q2_k(b: &[u8], y: &mut [f32]) {
    let block = BlockQ2K::read_from(b);
    let d = fp32(block.d);
    let min = fp32(block.dmin);
    let mut is = 0;
    let mut out = 0;
    for n in (0..QK_K).step_by(128) {
        let q = &block.qs[n / 4..n / 4 + 32];
        for shift in (0..8).step_by(2) {
            for half in 0..2 {
                let sc = block.scales[is];
                is += 1;
                let dl = d * (sc & 0xF) as f32;
                let ml = min * (sc >> 4) as f32;
                for k in 0..16 {
                    y[out] = dl * ((q[16 * half + k] >> shift) & 3) as f32 - ml;
                    out += 1;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Q3_K
// ---------------------------------------------------------------------------------------------

/// ggml: `quantize_row_q3_K_ref`
pub fn quantize_row_q3_k_ref(x: &[f32], y: &mut [u8]) {
    const TS: usize = std::mem::size_of::<BlockQ3K>();
    check_row(x, y, QK_K, TS);
    let mut l = [0i8; QK_K];
    for (x, yb) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(TS)) {
        let mut scales = [0f32; QK_K / 16];
        let mut max_scale = 0f32;
        let mut amax = 0f32;
        for j in 0..QK_K / 16 {
            scales[j] = make_q3_quants(4, &x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16], true);
            let scale = scales[j].abs();
            if scale > amax {
                amax = scale;
                max_scale = scales[j];
            }
        }
        let mut block = BlockQ3K::ZERO;
        if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            for j in 0..QK_K / 16 {
                // `int8_t l = nearest_int(...)`: truncated to 8 bits before the clamp.
                let q = nearest_int(iscale * scales[j]) as i8 as i32;
                let q = ((-32).max(31.min(q)) + 32) as i8;
                pack_q3k_scale(&mut block.scales, j, q);
            }
            block.d = fp16(1.0 / iscale);
        } else {
            block.d = fp16(0.0);
        }
        finish_q3k(x, &mut l, &mut block);
        block.write_to(yb);
    }
}

/// ggml: `quantize_row_q3_K_impl` (with importance weights; ggml's `quantize_q3_K` never calls
/// it without them).
pub fn quantize_row_q3_k_impl(x: &[f32], y: &mut [u8], quant_weights: &[f32]) {
    const TS: usize = std::mem::size_of::<BlockQ3K>();
    check_row(x, y, QK_K, TS);
    let mut l = [0i8; QK_K];
    for ((x, yb), qw) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(TS)).zip(quant_weights.chunks_exact(QK_K)) {
        let mut scales = [0f32; QK_K / 16];
        let mut sw = [0f32; QK_K / 16];
        let sigma2 = 2.0 * sum_squares(x) / QK_K as f32;
        for j in 0..QK_K / 16 {
            let xs = &x[16 * j..16 * j + 16];
            let weight: [f32; 16] = std::array::from_fn(|k| qw[16 * j + k] * (sigma2 + xs[k] * xs[k]).sqrt());
            let mut sumw = 0f32;
            for &w in &weight {
                sumw += w;
            }
            sw[j] = sumw;
            scales[j] = make_qx_quants(4, xs, &mut l[16 * j..16 * j + 16], 1, Some(&weight));
        }
        let mut block = BlockQ3K::ZERO;
        let mut ls = [0i8; QK_K / 16];
        let d_block = make_qx_quants(32, &scales, &mut ls, 1, Some(&sw));
        for j in 0..QK_K / 16 {
            pack_q3k_scale(&mut block.scales, j, ls[j]);
        }
        block.d = fp16(d_block);
        finish_q3k(x, &mut l, &mut block);
        block.write_to(yb);
    }
}

/// ggml: `quantize_q3_K` for one row.
pub fn quantize_row_q3_k(x: &[f32], y: &mut [u8], quant_weights: Option<&[f32]>) {
    match quant_weights {
        None => quantize_row_q3_k_ref(x, y),
        Some(qw) => quantize_row_q3_k_impl(x, y, qw),
    }
}

/// ggml: `dequantize_row_q3_K` (one block)
pub fn dequantize_q3_k(b: &[u8], y: &mut [f32]) {
    let block = BlockQ3K::read_from(b);
    let d_all = fp32(block.d);
    let mut is = 0;
    let mut out = 0;
    let mut m = 1u8;
    for n in (0..QK_K).step_by(128) {
        let q = &block.qs[n / 4..n / 4 + 32];
        for shift in (0..8).step_by(2) {
            for half in 0..2 {
                let dl = d_all * q3k_scale(&block.scales, is) as f32;
                is += 1;
                for k in 0..16 {
                    let lo = ((q[16 * half + k] >> shift) & 3) as i32;
                    let hi = if block.hmask[16 * half + k] & m != 0 { 0 } else { 4 };
                    y[out] = dl * (lo - hi) as f32;
                    out += 1;
                }
            }
            m <<= 1;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Q4_K
// ---------------------------------------------------------------------------------------------

/// ggml: `quantize_row_q4_K_ref`
pub fn quantize_row_q4_k_ref(x: &[f32], y: &mut [u8]) {
    const TS: usize = std::mem::size_of::<BlockQ4K>();
    check_row(x, y, QK_K, TS);
    let mut l = [0u8; QK_K];
    for (x, yb) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(TS)) {
        let weights = k4_ref_weights(x);
        let (scales, mins) = make_qkx_quants_x8::<false, false, 32>(15, x, &weights, &mut l, -1.0, 0.1, 20);
        let (packed, d, dmin) = k4_ref_scales(&scales, &mins);
        let mut block = BlockQ4K { d, dmin, scales: packed, qs: [0; QK_K / 2] };
        requantize_k4(x, block.d, block.dmin, &block.scales, 15, &mut l);
        pack_q4k(&l, &mut block.qs);
        block.write_to(yb);
    }
}

/// ggml: `quantize_row_q4_K_impl` (with importance weights; ggml's `quantize_q4_K` never calls
/// it without them).
pub fn quantize_row_q4_k_impl(x: &[f32], y: &mut [u8], quant_weights: &[f32]) {
    const TS: usize = std::mem::size_of::<BlockQ4K>();
    check_row(x, y, QK_K, TS);
    let mut l = [0u8; QK_K];
    for ((x, yb), qw) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(TS)).zip(quant_weights.chunks_exact(QK_K)) {
        let (ls, lm, d_block, m_block) = k4_impl_scales(x, qw, 15, &mut l);
        let mut block = BlockQ4K::ZERO;
        for j in 0..QK_K / 32 {
            pack_scale_min_k4(&mut block.scales, j, ls[j], lm[j]);
        }
        block.d = fp16(d_block);
        block.dmin = fp16(m_block);
        requantize_k4(x, block.d, block.dmin, &block.scales, 15, &mut l);
        pack_q4k(&l, &mut block.qs);
        block.write_to(yb);
    }
}

/// ggml: `quantize_q4_K` for one row.
pub fn quantize_row_q4_k(x: &[f32], y: &mut [u8], quant_weights: Option<&[f32]>) {
    match quant_weights {
        None => quantize_row_q4_k_ref(x, y),
        Some(qw) => quantize_row_q4_k_impl(x, y, qw),
    }
}

/// ggml: `dequantize_row_q4_K` (one block)
pub fn dequantize_q4_k(b: &[u8], y: &mut [f32]) {
    let block = BlockQ4K::read_from(b);
    let d = fp32(block.d);
    let min = fp32(block.dmin);
    for (p, (q, y)) in block.qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let (sc, m) = get_scale_min_k4(2 * p, &block.scales);
        let (d1, m1) = (d * sc as f32, min * m as f32);
        let (sc, m) = get_scale_min_k4(2 * p + 1, &block.scales);
        let (d2, m2) = (d * sc as f32, min * m as f32);
        for k in 0..32 {
            y[k] = d1 * (q[k] & 0xF) as f32 - m1;
            y[k + 32] = d2 * (q[k] >> 4) as f32 - m2;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Q5_K
// ---------------------------------------------------------------------------------------------

/// ggml: `quantize_row_q5_K_ref`
pub fn quantize_row_q5_k_ref(x: &[f32], y: &mut [u8]) {
    const TS: usize = std::mem::size_of::<BlockQ5K>();
    check_row(x, y, QK_K, TS);
    let mut l = [0u8; QK_K];
    for (x, yb) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(TS)) {
        let weights = k4_ref_weights(x);
        let (scales, mins) = make_qkx_quants_x8::<false, false, 32>(31, x, &weights, &mut l, -0.5, 0.1, 15);
        let (packed, d, dmin) = k4_ref_scales(&scales, &mins);
        let mut block = BlockQ5K { d, dmin, scales: packed, qh: [0; QK_K / 8], qs: [0; QK_K / 2] };
        requantize_k4(x, block.d, block.dmin, &block.scales, 31, &mut l);
        pack_q5k(&l, &mut block.qh, &mut block.qs);
        block.write_to(yb);
    }
}

/// ggml: `quantize_row_q5_K_impl` (with importance weights; ggml's `quantize_q5_K` never calls
/// it without them).
pub fn quantize_row_q5_k_impl(x: &[f32], y: &mut [u8], quant_weights: &[f32]) {
    const TS: usize = std::mem::size_of::<BlockQ5K>();
    check_row(x, y, QK_K, TS);
    let mut l = [0u8; QK_K];
    for ((x, yb), qw) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(TS)).zip(quant_weights.chunks_exact(QK_K)) {
        let (ls, lm, d_block, m_block) = k4_impl_scales(x, qw, 31, &mut l);
        let mut block = BlockQ5K::ZERO;
        for j in 0..QK_K / 32 {
            // Unlike Q4_K's, this path clamps: a wrapped negative `L` becomes 63, not 255.
            pack_scale_min_k4(&mut block.scales, j, 63.min(ls[j]), 63.min(lm[j]));
        }
        block.d = fp16(d_block);
        block.dmin = fp16(m_block);
        requantize_k4(x, block.d, block.dmin, &block.scales, 31, &mut l);
        pack_q5k(&l, &mut block.qh, &mut block.qs);
        block.write_to(yb);
    }
}

/// ggml: `quantize_q5_K` for one row.
pub fn quantize_row_q5_k(x: &[f32], y: &mut [u8], quant_weights: Option<&[f32]>) {
    match quant_weights {
        None => quantize_row_q5_k_ref(x, y),
        Some(qw) => quantize_row_q5_k_impl(x, y, qw),
    }
}

/// ggml: `dequantize_row_q5_K` (one block)
pub fn dequantize_q5_k(b: &[u8], y: &mut [f32]) {
    let block = BlockQ5K::read_from(b);
    let d = fp32(block.d);
    let min = fp32(block.dmin);
    let (mut u1, mut u2) = (1u8, 2u8);
    for (p, (ql, y)) in block.qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let (sc, m) = get_scale_min_k4(2 * p, &block.scales);
        let (d1, m1) = (d * sc as f32, min * m as f32);
        let (sc, m) = get_scale_min_k4(2 * p + 1, &block.scales);
        let (d2, m2) = (d * sc as f32, min * m as f32);
        for k in 0..32 {
            let h1 = if block.qh[k] & u1 != 0 { 16 } else { 0 };
            let h2 = if block.qh[k] & u2 != 0 { 16 } else { 0 };
            y[k] = d1 * ((ql[k] & 0xF) as i32 + h1) as f32 - m1;
            y[k + 32] = d2 * ((ql[k] >> 4) as i32 + h2) as f32 - m2;
        }
        u1 <<= 2;
        u2 <<= 2;
    }
}

// ---------------------------------------------------------------------------------------------
// Q6_K
// ---------------------------------------------------------------------------------------------

/// ggml: `quantize_row_q6_K_ref`
pub fn quantize_row_q6_k_ref(x: &[f32], y: &mut [u8]) {
    const TS: usize = std::mem::size_of::<BlockQ6K>();
    check_row(x, y, QK_K, TS);
    let mut l = [0i8; QK_K];
    for (x, yb) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(TS)) {
        let mut scales = [0f32; QK_K / 16];
        for ib in 0..QK_K / 16 {
            scales[ib] = make_qx_quants(32, &x[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16], 1, None);
        }
        finish_q6k(x, &scales, &mut l).write_to(yb);
    }
}

/// ggml: `quantize_row_q6_K_impl` (with importance weights; ggml's `quantize_q6_K` never calls
/// it without them). The weights go to `make_qx_quants` as they are, without the
/// `sqrt(sigma2 + x²)` factor the other formats apply.
pub fn quantize_row_q6_k_impl(x: &[f32], y: &mut [u8], quant_weights: &[f32]) {
    const TS: usize = std::mem::size_of::<BlockQ6K>();
    check_row(x, y, QK_K, TS);
    let mut l = [0i8; QK_K];
    for ((x, yb), qw) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(TS)).zip(quant_weights.chunks_exact(QK_K)) {
        let mut scales = [0f32; QK_K / 16];
        for ib in 0..QK_K / 16 {
            let r = 16 * ib..16 * ib + 16;
            scales[ib] = make_qx_quants(32, &x[r.clone()], &mut l[r.clone()], 1, Some(&qw[r]));
        }
        finish_q6k(x, &scales, &mut l).write_to(yb);
    }
}

/// ggml: `quantize_q6_K` for one row.
pub fn quantize_row_q6_k(x: &[f32], y: &mut [u8], quant_weights: Option<&[f32]>) {
    match quant_weights {
        None => quantize_row_q6_k_ref(x, y),
        Some(qw) => quantize_row_q6_k_impl(x, y, qw),
    }
}

/// ggml: `dequantize_row_q6_K` (one block)
pub fn dequantize_q6_k(b: &[u8], y: &mut [f32]) {
    let block = BlockQ6K::read_from(b);
    let d = fp32(block.d);
    for (h, y) in y.chunks_exact_mut(128).enumerate() {
        let ql = &block.ql[64 * h..64 * h + 64];
        let qh = &block.qh[32 * h..32 * h + 32];
        let sc = &block.scales[8 * h..8 * h + 8];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * sc[is] as f32 * q1 as f32;
            y[l + 32] = d * sc[is + 2] as f32 * q2 as f32;
            y[l + 64] = d * sc[is + 4] as f32 * q3 as f32;
            y[l + 96] = d * sc[is + 6] as f32 * q4 as f32;
        }
    }
}

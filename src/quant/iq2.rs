//! The 2-bit lattice formats on super-blocks of 256: IQ2_XXS (2.0625 bpw, groups of 8 on a
//! 256-point grid, 4-bit scales per 32), IQ2_XS (2.3125 bpw, a 512-point grid, 4-bit scales per
//! 16) and IQ2_S (2.5625 bpw, a 1024-point grid, explicit signs) (ggml `ggml-common.h` layouts).
//!
//! Ports of ggml's `quantize_row_iq2_xxs_impl`, `quantize_row_iq2_xs_impl` and
//! `quantize_row_iq2_s_impl` (what `ggml_quantize_chunk` runs; the first two require importance
//! weights, see `ggml_quantize_requires_imatrix`) and of the `dequantize_row_iq2_*` decoders.
//!
//! Where ggml aborts (`GGML_ASSERT`/`GGML_ABORT` on blocks whose weights overflow to infinity or
//! NaN, e.g. values near `f32::MAX`), these ports do not: they take the first neighbour when no
//! distance is finite and grid point 0 for a point off the grid, and keep going.

// Index loops are kept where ggml has them, so the port reads side by side with the C.
#![allow(clippy::needless_range_loop)]

use super::common::{
    c_max, check_row, fp16, fp32, group_signs, make_qp_quants, nearest_int, sum_squares, Block, GROUP_MAX_EPS,
};
use super::grids::{iq2_tables, GridTables, Iq2Grid, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, KMASK_IQ2XS, KSIGNS_IQ2XS};
use super::kquants::QK_K;

/// ggml: `GROUP_MAX_EPS_IQ2_S`.
const GROUP_MAX_EPS_IQ2_S: f32 = 1e-8;

/// ggml: `block_iq2_xxs`: per 32 values, four 8-bit grid indices and a `uint32_t` of four 7-bit
/// sign groups plus a 4-bit scale (`x = d * (0.5 + s) / 4 * grid * sign`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq2Xxs {
    pub d: u16,
    pub qs: [u16; QK_K / 8],
}
const _: () = assert!(std::mem::size_of::<BlockIq2Xxs>() == 66);

/// ggml: `block_iq2_xs`: per 8 values a 9-bit grid index and 7 sign bits; 4-bit scales per 16.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq2Xs {
    pub d: u16,
    pub qs: [u16; QK_K / 8],
    pub scales: [u8; QK_K / 32],
}
const _: () = assert!(std::mem::size_of::<BlockIq2Xs>() == 74);

/// ggml: `block_iq2_s`: per 8 values a 10-bit grid index (low 8 bits in `qs[0..32]`, high 2 in
/// `qh`) and 8 sign bits (`qs[32..64]`); 4-bit scales per 16.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq2S {
    pub d: u16,
    pub qs: [u8; QK_K / 4],
    pub qh: [u8; QK_K / 32],
    pub scales: [u8; QK_K / 32],
}
const _: () = assert!(std::mem::size_of::<BlockIq2S>() == 82);

/// ggml's `kMaxQ` of the 2-bit formats: quants `l in 0..3`, values `2l+1`.
const KMAXQ: i32 = 3;

/// `weight[i] = qw[i] * sqrtf(sigma2 + xb[i]*xb[i])`.
#[inline(always)]
fn imatrix_weights(xb: &[f32], qw: &[f32], sigma2: f32, weight: &mut [f32]) {
    for i in 0..weight.len() {
        weight[i] = qw[i] * (sigma2 + xb[i] * xb[i]).sqrt();
    }
}

/// `max = xval[0]; max = MAX(max, xval[i])`.
#[inline(always)]
fn group_max(xval: &[f32]) -> f32 {
    let mut max = xval[0];
    for &v in &xval[1..] {
        max = c_max(max, v);
    }
    max
}

/// Rounds a group of 8 to quants `MAX(0, MIN(kMaxQ-1, nearest_int(0.5*(id*x-1))))` into `l`
/// and returns their packed index.
#[inline(always)]
fn round_group(xval: &[f32], id: f32, l: &mut [i8]) -> usize {
    let mut u = 0usize;
    for i in 0..8 {
        let q = nearest_int(0.5 * (id * xval[i] - 1.0));
        let q = 0.max((KMAXQ - 1).min(q));
        l[i] = q as i8;
        u |= (q as usize) << (2 * i);
    }
    u
}

/// The packed index of 8 quants, in the C's `uint16_t` arithmetic.
#[inline(always)]
fn pack_group(l: &[i8]) -> usize {
    let mut u = 0u16;
    for i in 0..8 {
        u |= ((l[i] as i32) << (2 * i)) as u16;
    }
    u as usize
}

/// Rounds a group to the grid at `id` (`1/scale`): on-grid points as they are, off-grid ones to
/// their best neighbour at `scale`. Returns whether the rounded point was on the grid.
#[inline(always)]
fn group_to_grid(t: &GridTables<8>, xval: &[f32], waux: &[f32], id: f32, scale: f32, l: &mut [i8]) -> (bool, usize) {
    let u = round_group(xval, id, l);
    let gi = t.map_entry(u);
    if gi >= 0 {
        (true, gi as usize)
    } else {
        (false, t.find_best_neighbour(t.neighbours_of(gi), xval, waux, scale, l))
    }
}

/// `Σ w·x·q` and `Σ w·q²` with `q = 2l+1`, in C order.
#[inline(always)]
fn sums_qx_q2(weight: &[f32], xval: &[f32], l: &[i8]) -> (f32, f32) {
    let mut sumqx = 0f32;
    let mut sumq2 = 0f32;
    for i in 0..weight.len() {
        let w = weight[i];
        let q = (2 * l[i] as i32 + 1) as f32;
        sumqx += w * xval[i] * q;
        sumq2 += w * q * q;
    }
    (sumqx, sumq2)
}

/// The grid index of a final group of quants; ggml aborts ("found point not on grid") when
/// there is none, which only degenerate (non-finite) blocks reach: grid point 0 here.
#[inline(always)]
fn final_index(t: &GridTables<8>, l: &[i8]) -> usize {
    let gi = t.map_entry(pack_group(l));
    if gi >= 0 {
        gi as usize
    } else {
        0
    }
}

/// The 4-bit super-block code of a sub-block scale: `MAX(0, MIN(15, nearest_int(0.5*(id*s-1))))`.
#[inline(always)]
fn scale_code(id: f32, s: f32) -> u8 {
    let l = nearest_int(0.5 * (id * s - 1.0));
    0.max(15.min(l)) as u8
}

// ---------------------------------------------------------------------------------------------
// IQ2_XXS
// ---------------------------------------------------------------------------------------------

/// ggml: `quantize_row_iq2_xxs_impl` (one row; ggml requires importance weights).
pub fn quantize_row_iq2_xxs_impl(x: &[f32], y: &mut [u8], quant_weights: &[f32]) {
    const TS: usize = std::mem::size_of::<BlockIq2Xxs>();
    check_row(x, y, QK_K, TS);
    let t = iq2_tables(Iq2Grid::Xxs);
    let mut scales = [0f32; QK_K / 32];
    let mut weight = [0f32; 32];
    let mut xval = [0f32; 32];
    let mut laux = [0i8; 32];
    let mut waux = [0f32; 32];
    let mut block_signs = [0u8; 4];
    for (ibl, (xbl, yb)) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(TS)).enumerate() {
        let mut q2 = [0u32; 2 * (QK_K / 32)];
        let mut max_scale = 0f32;
        let sumx2 = sum_squares(xbl);
        let sigma2 = sumx2 / QK_K as f32;
        for ib in 0..QK_K / 32 {
            let xb = &xbl[32 * ib..32 * ib + 32];
            let qw = &quant_weights[QK_K * ibl + 32 * ib..QK_K * ibl + 32 * ib + 32];
            imatrix_weights(xb, qw, sigma2, &mut weight);
            for i in 0..32 {
                waux[i] = weight[i].sqrt();
            }
            for k in 0..4 {
                block_signs[k] = group_signs(&xb[8 * k..], &weight[8 * k..], &mut xval[8 * k..8 * k + 8], true);
            }
            let max = group_max(&xval);
            if max < GROUP_MAX_EPS {
                scales[ib] = 0.0;
                continue;
            }
            // `make_qp_quants` writes `uint8_t` quants into the `int8_t` L.
            let mut lu = [0u8; 32];
            let mut scale = make_qp_quants(KMAXQ + 1, &xval, &mut lu, &weight);
            let mut l = lu.map(|v| v as i8);
            let eff_max = scale * KMAXQ as f32;
            if eff_max <= 0.0 {
                scales[ib] = 0.0;
                continue;
            }
            let mut best = 0f32;
            for is in -6..=6 {
                let id = ((2 * KMAXQ - 1) as f32 + is as f32 * 0.1) / eff_max;
                let this_scale = 1.0 / id;
                for k in 0..4 {
                    let r = 8 * k..8 * k + 8;
                    group_to_grid(t, &xval[r.clone()], &waux[r.clone()], id, this_scale, &mut laux[r]);
                }
                let (sumqx, sumq2) = sums_qx_q2(&weight, &xval, &laux);
                if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                    scale = sumqx / sumq2;
                    best = scale * sumqx;
                    l = laux;
                }
            }
            if scale > 0.0 {
                let id = 1.0 / scale;
                for k in 0..4 {
                    let r = 8 * k..8 * k + 8;
                    let (_, gi) = group_to_grid(t, &xval[r.clone()], &waux[r.clone()], id, scale, &mut l[r]);
                    let pg = &t.grid[gi];
                    for i in 0..8 {
                        l[8 * k + i] = (pg[i] - 1) / 2;
                    }
                }
                let (sumqx, sumq2) = sums_qx_q2(&weight, &xval, &l);
                if sumq2 > 0.0 {
                    scale = sumqx / sumq2;
                }
            }
            if scale < 0.0 {
                // "This should never happen": flip the scale positive and the signs with it.
                scale = -scale;
                for k in 0..4 {
                    block_signs[k] = !block_signs[k] & 127;
                }
            }
            for k in 0..4 {
                let gi = final_index(t, &l[8 * k..8 * k + 8]);
                q2[2 * ib] |= (gi as u32) << (8 * k);
                q2[2 * ib + 1] |= (block_signs[k] as u32) << (7 * k);
            }
            scales[ib] = scale;
            max_scale = c_max(max_scale, scale);
        }

        let mut block = BlockIq2Xxs { d: fp16(0.0), qs: [0; QK_K / 8] };
        if max_scale != 0.0 {
            let d = max_scale / 31.0;
            block.d = fp16(d);
            let id = 1.0 / d;
            for ib in 0..QK_K / 32 {
                q2[2 * ib + 1] |= (scale_code(id, scales[ib]) as u32) << 28;
            }
            for (i, q) in q2.iter().enumerate() {
                block.qs[2 * i] = *q as u16;
                block.qs[2 * i + 1] = (*q >> 16) as u16;
            }
        }
        block.write_to(yb);
    }
}

/// ggml: `quantize_iq2_xxs` (one row). ggml asserts that importance weights are given;
/// `quantize_weighted` refuses the call without them before it gets here.
pub fn quantize_row_iq2_xxs(x: &[f32], y: &mut [u8], quant_weights: Option<&[f32]>) {
    quantize_row_iq2_xxs_impl(x, y, quant_weights.expect("iq2_xxs needs an importance matrix"));
}

/// ggml: `dequantize_row_iq2_xxs` (one block)
pub fn dequantize_iq2_xxs(b: &[u8], y: &mut [f32]) {
    let block = BlockIq2Xxs::read_from(b);
    let d = fp32(block.d);
    for ib32 in 0..QK_K / 32 {
        let aux0 = block.qs[4 * ib32] as u32 | (block.qs[4 * ib32 + 1] as u32) << 16;
        let aux1 = block.qs[4 * ib32 + 2] as u32 | (block.qs[4 * ib32 + 3] as u32) << 16;
        let db = d * (0.5 + (aux1 >> 28) as f32) * 0.25;
        for l in 0..4 {
            let grid = IQ2XXS_GRID[((aux0 >> (8 * l)) & 255) as usize].to_le_bytes();
            let signs = KSIGNS_IQ2XS[((aux1 >> (7 * l)) & 127) as usize];
            let y = &mut y[32 * ib32 + 8 * l..32 * ib32 + 8 * l + 8];
            for j in 0..8 {
                y[j] = db * grid[j] as f32 * if signs & KMASK_IQ2XS[j] != 0 { -1.0 } else { 1.0 };
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// IQ2_XS and IQ2_S: sub-blocks of 16
// ---------------------------------------------------------------------------------------------

/// The scale search of `quantize_row_iq2_xs_impl` and `quantize_row_iq2_s_impl` on one
/// sub-block of 16 (`xval` the magnitudes, `max` their maximum): 19 candidate scales, then the
/// off-grid groups re-rounded at the best scale. Returns the scale and leaves the quants in `l`.
#[inline(always)]
fn search_16(
    t: &GridTables<8>,
    weight: &[f32; 16],
    waux: &[f32; 16],
    xval: &[f32; 16],
    max: f32,
    l: &mut [i8; 16],
) -> f32 {
    let mut laux = [0i8; 16];
    let mut is_on_grid = [true; 2];
    let mut is_on_grid_aux = [true; 2];
    let mut best = 0f32;
    let mut scale = max / (2 * KMAXQ - 1) as f32;
    for is in -9..=9 {
        let id = ((2 * KMAXQ - 1) as f32 + is as f32 * 0.1) / max;
        let this_scale = 1.0 / id;
        for k in 0..2 {
            let r = 8 * k..8 * k + 8;
            is_on_grid_aux[k] = group_to_grid(t, &xval[r.clone()], &waux[r.clone()], id, this_scale, &mut laux[r]).0;
        }
        let (sumqx, sumq2) = sums_qx_q2(weight, xval, &laux);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            scale = sumqx / sumq2;
            best = scale * sumqx;
            *l = laux;
            is_on_grid = is_on_grid_aux;
        }
    }
    let n_not_ongrid = is_on_grid.iter().filter(|&&g| !g).count();
    if n_not_ongrid > 0 && scale > 0.0 {
        let id = 1.0 / scale;
        for k in 0..2 {
            if is_on_grid[k] {
                continue;
            }
            let r = 8 * k..8 * k + 8;
            group_to_grid(t, &xval[r.clone()], &waux[r.clone()], id, scale, &mut l[r]);
        }
        let (sumqx, sumq2) = sums_qx_q2(weight, xval, l);
        if sumq2 > 0.0 {
            scale = sumqx / sumq2;
        }
    }
    scale
}

/// ggml: `quantize_row_iq2_xs_impl` (one row; ggml requires importance weights).
pub fn quantize_row_iq2_xs_impl(x: &[f32], y: &mut [u8], quant_weights: &[f32]) {
    const TS: usize = std::mem::size_of::<BlockIq2Xs>();
    check_row(x, y, QK_K, TS);
    let t = iq2_tables(Iq2Grid::Xs);
    let mut scales = [0f32; QK_K / 16];
    let mut weight = [0f32; 16];
    let mut xval = [0f32; 16];
    let mut waux = [0f32; 16];
    let mut block_signs = [0u8; 2];
    for (ibl, (xbl, yb)) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(TS)).enumerate() {
        let mut block = BlockIq2Xs { d: fp16(0.0), qs: [0; QK_K / 8], scales: [0; QK_K / 32] };
        let mut max_scale = 0f32;
        let sumx2 = sum_squares(xbl);
        let sigma2 = sumx2 / QK_K as f32;
        for ib in 0..QK_K / 16 {
            let xb = &xbl[16 * ib..16 * ib + 16];
            let qw = &quant_weights[QK_K * ibl + 16 * ib..QK_K * ibl + 16 * ib + 16];
            imatrix_weights(xb, qw, sigma2, &mut weight);
            for i in 0..16 {
                waux[i] = weight[i].sqrt();
            }
            for k in 0..2 {
                block_signs[k] = group_signs(&xb[8 * k..], &weight[8 * k..], &mut xval[8 * k..8 * k + 8], true);
            }
            let max = group_max(&xval);
            let mut l = [0i8; 16];
            if max < GROUP_MAX_EPS {
                scales[ib] = 0.0;
                continue;
            }
            let mut scale = search_16(t, &weight, &waux, &xval, max, &mut l);
            if scale < 0.0 {
                scale = -scale;
                for k in 0..2 {
                    block_signs[k] = !block_signs[k] & 127;
                }
            }
            for k in 0..2 {
                let gi = final_index(t, &l[8 * k..8 * k + 8]);
                block.qs[2 * ib + k] = gi as u16 | ((block_signs[k] as u16) << 9);
            }
            scales[ib] = scale;
            max_scale = c_max(max_scale, scale);
        }

        if max_scale == 0.0 {
            block.qs = [0; QK_K / 8];
        } else {
            let d = max_scale / 31.0;
            block.d = fp16(d);
            let id = 1.0 / d;
            for ib in 0..QK_K / 16 {
                let l = scale_code(id, scales[ib]);
                if ib % 2 == 0 {
                    block.scales[ib / 2] = l;
                } else {
                    block.scales[ib / 2] |= l << 4;
                }
            }
        }
        block.write_to(yb);
    }
}

/// ggml: `quantize_iq2_xs` (one row). ggml asserts that importance weights are given;
/// `quantize_weighted` refuses the call without them before it gets here.
pub fn quantize_row_iq2_xs(x: &[f32], y: &mut [u8], quant_weights: Option<&[f32]>) {
    quantize_row_iq2_xs_impl(x, y, quant_weights.expect("iq2_xs needs an importance matrix"));
}

/// ggml: `dequantize_row_iq2_xs` (one block)
pub fn dequantize_iq2_xs(b: &[u8], y: &mut [f32]) {
    let block = BlockIq2Xs::read_from(b);
    let d = fp32(block.d);
    for ib32 in 0..QK_K / 32 {
        let db =
            [d * (0.5 + (block.scales[ib32] & 0xf) as f32) * 0.25, d * (0.5 + (block.scales[ib32] >> 4) as f32) * 0.25];
        for l in 0..4 {
            let q = block.qs[4 * ib32 + l];
            let grid = IQ2XS_GRID[(q & 511) as usize].to_le_bytes();
            let signs = KSIGNS_IQ2XS[(q >> 9) as usize];
            let y = &mut y[32 * ib32 + 8 * l..32 * ib32 + 8 * l + 8];
            for j in 0..8 {
                y[j] = db[l / 2] * grid[j] as f32 * if signs & KMASK_IQ2XS[j] != 0 { -1.0 } else { 1.0 };
            }
        }
    }
}

/// ggml: `quantize_row_iq2_s_impl` (one row, weights `qw*sqrt(sigma2 + x²)` with importance
/// weights, `sigma2/4 + x²` without).
pub fn quantize_row_iq2_s(x: &[f32], y: &mut [u8], quant_weights: Option<&[f32]>) {
    const TS: usize = std::mem::size_of::<BlockIq2S>();
    check_row(x, y, QK_K, TS);
    let t = iq2_tables(Iq2Grid::S);
    let mut scales = [0f32; QK_K / 16];
    let mut weight = [0f32; 16];
    let mut xval = [0f32; 16];
    let mut waux = [0f32; 16];
    let mut block_signs = [0u8; 2];
    for (ibl, (xbl, yb)) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(TS)).enumerate() {
        let mut block = BlockIq2S { d: fp16(0.0), qs: [0; QK_K / 4], qh: [0; QK_K / 32], scales: [0; QK_K / 32] };
        let mut max_scale = 0f32;
        let sumx2 = sum_squares(xbl);
        let sigma2 = 2.0 * sumx2 / QK_K as f32;
        for ib in 0..QK_K / 16 {
            let xb = &xbl[16 * ib..16 * ib + 16];
            match quant_weights {
                Some(qw) => {
                    let qw = &qw[QK_K * ibl + 16 * ib..QK_K * ibl + 16 * ib + 16];
                    imatrix_weights(xb, qw, sigma2, &mut weight);
                }
                None => {
                    for i in 0..16 {
                        weight[i] = 0.25 * sigma2 + xb[i] * xb[i];
                    }
                }
            }
            for i in 0..16 {
                waux[i] = weight[i].sqrt();
            }
            for k in 0..2 {
                block_signs[k] = group_signs(&xb[8 * k..], &weight[8 * k..], &mut xval[8 * k..8 * k + 8], false);
            }
            let max = group_max(&xval);
            let mut l = [0i8; 16];
            if max < GROUP_MAX_EPS_IQ2_S {
                scales[ib] = 0.0;
                continue;
            }
            let mut scale = search_16(t, &weight, &waux, &xval, max, &mut l);
            if scale < 0.0 {
                scale = -scale;
                for k in 0..2 {
                    block_signs[k] = !block_signs[k];
                }
            }
            for k in 0..2 {
                let gi = final_index(t, &l[8 * k..8 * k + 8]);
                let i8 = 2 * ib + k;
                block.qs[i8] = (gi & 255) as u8;
                block.qh[i8 / 4] |= ((gi >> 8) << (2 * (i8 % 4))) as u8;
                block.qs[QK_K / 8 + i8] = block_signs[k];
            }
            scales[ib] = scale;
            max_scale = c_max(max_scale, scale);
        }

        if max_scale != 0.0 {
            let d = max_scale / 31.0;
            block.d = fp16(d * 0.9875);
            let id = 1.0 / d;
            for ib in 0..QK_K / 16 {
                let l = scale_code(id, scales[ib]);
                if ib % 2 == 0 {
                    block.scales[ib / 2] = l;
                } else {
                    block.scales[ib / 2] |= l << 4;
                }
            }
        }
        block.write_to(yb);
    }
}

/// ggml: `dequantize_row_iq2_s` (one block)
pub fn dequantize_iq2_s(b: &[u8], y: &mut [f32]) {
    let block = BlockIq2S::read_from(b);
    let d = fp32(block.d);
    for ib32 in 0..QK_K / 32 {
        let db =
            [d * (0.5 + (block.scales[ib32] & 0xf) as f32) * 0.25, d * (0.5 + (block.scales[ib32] >> 4) as f32) * 0.25];
        let qs = &block.qs[4 * ib32..4 * ib32 + 4];
        let signs = &block.qs[QK_K / 8 + 4 * ib32..QK_K / 8 + 4 * ib32 + 4];
        let qh = block.qh[ib32] as usize;
        for l in 0..4 {
            let dl = db[l / 2];
            let grid = IQ2S_GRID[qs[l] as usize | ((qh << (8 - 2 * l)) & 0x300)].to_le_bytes();
            let y = &mut y[32 * ib32 + 8 * l..32 * ib32 + 8 * l + 8];
            for j in 0..8 {
                y[j] = dl * grid[j] as f32 * if signs[l] & KMASK_IQ2XS[j] != 0 { -1.0 } else { 1.0 };
            }
        }
    }
}

//! The 3-bit lattice formats on super-blocks of 256: IQ3_XXS (3.0625 bpw, groups of 4 on a
//! 256-point grid, 7 sign bits per 8, 4-bit scales per 32) and IQ3_S (3.4375 bpw, a 512-point
//! grid, explicit signs) (ggml `ggml-common.h` layouts).
//!
//! Ports of ggml's `quantize_row_iq3_xxs_impl` and `quantize_row_iq3_s_impl` (weights
//! `qw*sqrt(sigma2 + x²)` with importance weights, `x²` without) and of the `dequantize_row_iq3_*`
//! decoders. Where ggml aborts on degenerate blocks (non-finite weights), these take the first
//! neighbour or grid point 0 and keep going, as the IQ2 ports do.

// Index loops are kept where ggml has them, so the port reads side by side with the C.
#![allow(clippy::needless_range_loop)]

use super::common::{c_max, check_row, fp16, fp32, group_signs, nearest_int, sum_squares, Block};
use super::grids::{iq3_tables, GridTables, IQ3S_GRID, IQ3XXS_GRID, KMASK_IQ2XS, KSIGNS_IQ2XS};
use super::kquants::QK_K;

/// ggml: `GROUP_MAX_EPS_IQ3_XXS`.
const GROUP_MAX_EPS_IQ3_XXS: f32 = 1e-8;

/// ggml's `kMaxQ` of the 3-bit formats: quants `l in 0..8`, values `2l+1`.
const KMAXQ: i32 = 8;

/// ggml: `block_iq3_xxs`: `qs[0..64]` the 8-bit grid indices (8 per 32 values), `qs[64..96]`
/// per 32 values a `uint32_t` of four 7-bit sign groups and a 4-bit scale.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq3Xxs {
    pub d: u16,
    pub qs: [u8; 3 * QK_K / 8],
}
const _: () = assert!(std::mem::size_of::<BlockIq3Xxs>() == 98);

/// ggml: `block_iq3_s`: 9-bit grid indices (low 8 bits in `qs`, the ninth in `qh`), 8 sign bits
/// per 8 values, 4-bit scales per 32 (`x = d * (1 + 2s) * grid * sign`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq3S {
    pub d: u16,
    pub qs: [u8; QK_K / 4],
    pub qh: [u8; QK_K / 32],
    pub signs: [u8; QK_K / 8],
    pub scales: [u8; QK_K / 64],
}
const _: () = assert!(std::mem::size_of::<BlockIq3S>() == 110);

/// The weights of a sub-block of 32 (`qw*sqrt(sigma2 + x²)`, or `x²` without importance
/// weights) and their square roots.
#[inline(always)]
fn weights_32(xb: &[f32], qw: Option<&[f32]>, sigma2: f32, weight: &mut [f32; 32], waux: &mut [f32; 32]) {
    match qw {
        Some(qw) => {
            for i in 0..32 {
                weight[i] = qw[i] * (sigma2 + xb[i] * xb[i]).sqrt();
            }
        }
        None => {
            for i in 0..32 {
                weight[i] = xb[i] * xb[i];
            }
        }
    }
    for i in 0..32 {
        waux[i] = weight[i].sqrt();
    }
}

/// Rounds a group of 4 to quants `MAX(0, MIN(7, nearest_int(0.5*(id*x-1))))` then to the grid
/// (off-grid points to their best neighbour at `scale`); returns (on grid, grid index).
#[inline(always)]
fn group_to_grid(t: &GridTables<4>, xval: &[f32], waux: &[f32], id: f32, scale: f32, l: &mut [i8]) -> (bool, usize) {
    let mut u = 0usize;
    for i in 0..4 {
        let q = nearest_int(0.5 * (id * xval[i] - 1.0));
        let q = 0.max((KMAXQ - 1).min(q));
        l[i] = q as i8;
        u |= (q as usize) << (3 * i);
    }
    let gi = t.map_entry(u);
    if gi >= 0 {
        (true, gi as usize)
    } else {
        (false, t.find_best_neighbour(t.neighbours_of(gi), xval, waux, scale, l))
    }
}

/// The grid index of a final group of 4 quants (grid point 0 where ggml aborts: off the grid).
#[inline(always)]
fn final_index(t: &GridTables<4>, l: &[i8]) -> usize {
    let mut u = 0u16;
    for i in 0..4 {
        u |= ((l[i] as i32) << (3 * i)) as u16;
    }
    let gi = t.map_entry(u as usize);
    if gi >= 0 {
        gi as usize
    } else {
        0
    }
}

/// `Σ w·x·q` and `Σ w·q²` with `q = 2l+1`, in C order.
#[inline(always)]
fn sums_qx_q2(weight: &[f32; 32], xval: &[f32; 32], l: &[i8; 32]) -> (f32, f32) {
    let mut sumqx = 0f32;
    let mut sumq2 = 0f32;
    for i in 0..32 {
        let w = weight[i];
        let q = (2 * l[i] as i32 + 1) as f32;
        sumqx += w * xval[i] * q;
        sumq2 += w * q * q;
    }
    (sumqx, sumq2)
}

/// The scale search of `quantize_row_iq3_xxs_impl` (`XXS`: 31 candidates, off-grid groups
/// start "on grid" and only those re-rounded) and `quantize_row_iq3_s_impl` (19 candidates,
/// every group re-rounded) on one sub-block of 32. Returns the scale; the quants are in `l`.
#[inline(always)]
fn search_32<const XXS: bool>(
    t: &GridTables<4>,
    weight: &[f32; 32],
    waux: &[f32; 32],
    xval: &[f32; 32],
    max: f32,
    l: &mut [i8; 32],
) -> f32 {
    let nis = if XXS { 15 } else { 9 };
    let mut laux = [0i8; 32];
    let mut is_on_grid = [XXS; 8];
    let mut is_on_grid_aux = [true; 8];
    let mut best = 0f32;
    let mut scale = max / (2 * KMAXQ - 1) as f32;
    for is in -nis..=nis {
        let id = ((2 * KMAXQ - 1) as f32 + is as f32 * 0.2) / max;
        let this_scale = 1.0 / id;
        for k in 0..8 {
            let r = 4 * k..4 * k + 4;
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
        for k in 0..8 {
            if XXS && is_on_grid[k] {
                continue;
            }
            let r = 4 * k..4 * k + 4;
            let (_, gi) = group_to_grid(t, &xval[r.clone()], &waux[r.clone()], id, scale, &mut l[r]);
            let pg = &t.grid[gi];
            for i in 0..4 {
                l[4 * k + i] = (pg[i] - 1) / 2;
            }
        }
        let (sumqx, sumq2) = sums_qx_q2(weight, xval, l);
        if sumq2 > 0.0 {
            scale = sumqx / sumq2;
        }
    }
    scale
}

/// `MAX(0, MIN(15, nearest_int(0.5*(id*s-1))))`.
#[inline(always)]
fn scale_code(id: f32, s: f32) -> u32 {
    let l = nearest_int(0.5 * (id * s - 1.0));
    0.max(15.min(l)) as u32
}

/// ggml: `quantize_row_iq3_xxs_impl(256, ..)` (one row), as `quantize_iq3_xxs` runs it.
pub fn quantize_row_iq3_xxs(x: &[f32], y: &mut [u8], quant_weights: Option<&[f32]>) {
    const TS: usize = std::mem::size_of::<BlockIq3Xxs>();
    check_row(x, y, QK_K, TS);
    let t = iq3_tables(256);
    let mut scales = [0f32; QK_K / 32];
    let mut weight = [0f32; 32];
    let mut waux = [0f32; 32];
    let mut xval = [0f32; 32];
    let mut block_signs = [0u8; 4];
    for (ibl, (xbl, yb)) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(TS)).enumerate() {
        let mut block = BlockIq3Xxs { d: fp16(0.0), qs: [0; 3 * QK_K / 8] };
        let mut scales_and_signs = [0u32; QK_K / 32];
        let mut max_scale = 0f32;
        let sumx2 = sum_squares(xbl);
        let sigma2 = 2.0 * sumx2 / QK_K as f32;
        for ib in 0..QK_K / 32 {
            let xb = &xbl[32 * ib..32 * ib + 32];
            let qw = quant_weights.map(|q| &q[QK_K * ibl + 32 * ib..QK_K * ibl + 32 * ib + 32]);
            weights_32(xb, qw, sigma2, &mut weight, &mut waux);
            for k in 0..4 {
                block_signs[k] = group_signs(&xb[8 * k..], &weight[8 * k..], &mut xval[8 * k..8 * k + 8], true);
            }
            let mut max = xval[0];
            for i in 1..32 {
                max = c_max(max, xval[i]);
            }
            let mut l = [0i8; 32];
            if max < GROUP_MAX_EPS_IQ3_XXS {
                scales[ib] = 0.0;
                continue;
            }
            let mut scale = search_32::<true>(t, &weight, &waux, &xval, max, &mut l);
            if scale < 0.0 {
                // "This should never happen": flip the scale positive and the signs with it.
                scale = -scale;
                for k in 0..4 {
                    block_signs[k] = !block_signs[k] & 127;
                }
            }
            for k in 0..8 {
                block.qs[8 * ib + k] = final_index(t, &l[4 * k..4 * k + 4]) as u8;
            }
            scales_and_signs[ib] = block_signs[0] as u32
                | (block_signs[1] as u32) << 7
                | (block_signs[2] as u32) << 14
                | (block_signs[3] as u32) << 21;
            scales[ib] = scale;
            max_scale = c_max(max_scale, scale);
        }

        if max_scale == 0.0 {
            block.qs = [0; 3 * QK_K / 8];
        } else {
            let d = max_scale / 31.0;
            block.d = fp16(d * 1.0125);
            let id = 1.0 / d;
            for ib in 0..QK_K / 32 {
                scales_and_signs[ib] |= scale_code(id, scales[ib]) << 28;
            }
            for (ib, s) in scales_and_signs.iter().enumerate() {
                block.qs[QK_K / 4 + 4 * ib..QK_K / 4 + 4 * ib + 4].copy_from_slice(&s.to_le_bytes());
            }
        }
        block.write_to(yb);
    }
}

/// ggml: `dequantize_row_iq3_xxs` (one block)
pub fn dequantize_iq3_xxs(b: &[u8], y: &mut [f32]) {
    let block = BlockIq3Xxs::read_from(b);
    let d = fp32(block.d);
    for ib32 in 0..QK_K / 32 {
        let ss = &block.qs[QK_K / 4 + 4 * ib32..QK_K / 4 + 4 * ib32 + 4];
        let aux32 = u32::from_le_bytes([ss[0], ss[1], ss[2], ss[3]]);
        let db = d * (0.5 + (aux32 >> 28) as f32) * 0.5;
        let qs = &block.qs[8 * ib32..8 * ib32 + 8];
        for l in 0..4 {
            let signs = KSIGNS_IQ2XS[((aux32 >> (7 * l)) & 127) as usize];
            let grid1 = IQ3XXS_GRID[qs[2 * l] as usize].to_le_bytes();
            let grid2 = IQ3XXS_GRID[qs[2 * l + 1] as usize].to_le_bytes();
            let y = &mut y[32 * ib32 + 8 * l..32 * ib32 + 8 * l + 8];
            for j in 0..4 {
                y[j] = db * grid1[j] as f32 * if signs & KMASK_IQ2XS[j] != 0 { -1.0 } else { 1.0 };
                y[j + 4] = db * grid2[j] as f32 * if signs & KMASK_IQ2XS[j + 4] != 0 { -1.0 } else { 1.0 };
            }
        }
    }
}

/// ggml: `quantize_iq3_s` (one row: `quantize_row_iq3_s_impl` with sub-blocks of 32).
pub fn quantize_row_iq3_s(x: &[f32], y: &mut [u8], quant_weights: Option<&[f32]>) {
    const TS: usize = std::mem::size_of::<BlockIq3S>();
    const BS: usize = 32;
    check_row(x, y, QK_K, TS);
    let t = iq3_tables(512);
    let mut scales = [0f32; QK_K / BS];
    let mut weight = [0f32; BS];
    let mut waux = [0f32; BS];
    let mut xval = [0f32; BS];
    let mut block_signs = [0u8; BS / 8];
    for (ibl, (xbl, yb)) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(TS)).enumerate() {
        let mut block = BlockIq3S {
            d: fp16(0.0),
            qs: [0; QK_K / 4],
            qh: [0; QK_K / 32],
            signs: [0; QK_K / 8],
            scales: [0; QK_K / 64],
        };
        let mut max_scale = 0f32;
        let sumx2 = sum_squares(xbl);
        let sigma2 = 2.0 * sumx2 / QK_K as f32;
        // ggml's `qs` and `signs` cursors advance only past sub-blocks that are not all zero
        // (the `continue` skips the increments), while `qh` is indexed by sub-block: the grid
        // indices and signs of later sub-blocks move down over a zero one's.
        let (mut qs_at, mut signs_at) = (0, 0);
        for ib in 0..QK_K / BS {
            let xb = &xbl[BS * ib..BS * ib + BS];
            let qw = quant_weights.map(|q| &q[QK_K * ibl + BS * ib..QK_K * ibl + BS * ib + BS]);
            weights_32(xb, qw, sigma2, &mut weight, &mut waux);
            for k in 0..BS / 8 {
                block_signs[k] = group_signs(&xb[8 * k..], &weight[8 * k..], &mut xval[8 * k..8 * k + 8], false);
            }
            let mut max = xval[0];
            for i in 1..BS {
                max = c_max(max, xval[i]);
            }
            let mut l = [0i8; BS];
            if max == 0.0 {
                scales[ib] = 0.0;
                continue;
            }
            let mut scale = search_32::<false>(t, &weight, &waux, &xval, max, &mut l);
            if scale < 0.0 {
                scale = -scale;
                for k in 0..BS / 8 {
                    block_signs[k] = !block_signs[k];
                }
            }
            for k in 0..BS / 4 {
                let gi = final_index(t, &l[4 * k..4 * k + 4]);
                block.qs[qs_at + k] = (gi & 255) as u8;
                let at = ib * (BS / 4) + k;
                block.qh[at / 8] |= ((gi >> 8) << (at % 8)) as u8;
            }
            qs_at += BS / 4;
            block.signs[signs_at..signs_at + BS / 8].copy_from_slice(&block_signs);
            signs_at += BS / 8;
            scales[ib] = scale;
            max_scale = c_max(max_scale, scale);
        }

        if max_scale != 0.0 {
            let d = max_scale / 31.0;
            block.d = fp16(d * 1.033);
            let id = 1.0 / d;
            for ib in (0..QK_K / BS).step_by(2) {
                let l1 = scale_code(id, scales[ib]);
                let l2 = scale_code(id, scales[ib + 1]);
                block.scales[ib / 2] = (l1 | (l2 << 4)) as u8;
            }
        }
        block.write_to(yb);
    }
}

/// ggml: `dequantize_row_iq3_s` (one block)
pub fn dequantize_iq3_s(b: &[u8], y: &mut [f32]) {
    let block = BlockIq3S::read_from(b);
    let d = fp32(block.d);
    let mut o = 0;
    for ib32 in (0..QK_K / 32).step_by(2) {
        let sc = block.scales[ib32 / 2];
        let dbs = [d * (1 + 2 * (sc & 0xf) as i32) as f32, d * (1 + 2 * (sc >> 4) as i32) as f32];
        for half in 0..2 {
            let db = dbs[half];
            let qh = block.qh[ib32 + half] as usize;
            let qs = &block.qs[8 * (ib32 + half)..8 * (ib32 + half) + 8];
            let signs = &block.signs[4 * (ib32 + half)..4 * (ib32 + half) + 4];
            for l in 0..4 {
                let grid1 = IQ3S_GRID[qs[2 * l] as usize | ((qh << (8 - 2 * l)) & 256)].to_le_bytes();
                let grid2 = IQ3S_GRID[qs[2 * l + 1] as usize | ((qh << (7 - 2 * l)) & 256)].to_le_bytes();
                for j in 0..4 {
                    y[o + j] = db * grid1[j] as f32 * if signs[l] & KMASK_IQ2XS[j] != 0 { -1.0 } else { 1.0 };
                    y[o + j + 4] = db * grid2[j] as f32 * if signs[l] & KMASK_IQ2XS[j + 4] != 0 { -1.0 } else { 1.0 };
                }
                o += 8;
            }
        }
    }
}

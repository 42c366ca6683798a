//! The 1-bit lattice formats on super-blocks of 256, values `{-1, 0, 1} + delta` on the 2048-point
//! `iq1s_grid`: IQ1_S (1.5625 bpw, a scale and a delta sign per 32) and IQ1_M (1.75 bpw, scales
//! per 16 and a delta sign per 8) (ggml `ggml-common.h` layouts).
//!
//! Ports of ggml's `quantize_row_iq1_s_impl` (importance weights required, see
//! `ggml_quantize_requires_imatrix`) and `quantize_row_iq1_m_impl` (weights `x²` without them),
//! with the exhaustive search over the two boundaries that split the sorted values into the three
//! levels, and of the `dequantize_row_iq1_*` decoders.
//!
//! The sort is glibc's `qsort` as ggml links it (a stable top-down merge sort for these sizes),
//! reproduced exactly so that equal values keep their order. Where ggml aborts on degenerate
//! blocks (no neighbour at a finite distance), these ports take the first neighbour and keep
//! going; see [`find_best_neighbour2`] for the one place ggml reads past the group.

// Index loops are kept where ggml has them, so the port reads side by side with the C.
#![allow(clippy::needless_range_loop)]

use super::common::{c_max, check_row, fp16, fp32, nearest_int, sum_squares, Block};
use super::grids::{iq2_tables, GridTables, Iq2Grid, IQ1S_GRID, NGRID_IQ1S};
use super::kquants::QK_K;

/// ggml: `IQ1S_DELTA` (and `IQ1M_DELTA`, the same).
pub const IQ1S_DELTA: f32 = 0.125;
/// ggml: `GROUP_MAX_EPS_IQ1_S`.
const GROUP_MAX_EPS_IQ1_S: f32 = 1e-12;
/// ggml: `GROUP_MAX_EPS_IQ1_M`.
const GROUP_MAX_EPS_IQ1_M: f32 = 1e-7;

/// ggml's `x_p`: the three levels shifted up by the delta.
const X_P: [f32; 3] = [-1.0 + IQ1S_DELTA, IQ1S_DELTA, 1.0 + IQ1S_DELTA];
/// ggml's `x_m`: the three levels shifted down by the delta.
const X_M: [f32; 3] = [-1.0 - IQ1S_DELTA, -IQ1S_DELTA, 1.0 - IQ1S_DELTA];

/// ggml: `block_iq1_s`: per 8 values an 11-bit grid index (low 8 bits in `qs`, high 3 in
/// `qh`); per 32 a `qh` word with the 3-bit scale (bits 12..15) and the delta sign (bit 15).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq1S {
    pub d: u16,
    pub qs: [u8; QK_K / 8],
    pub qh: [u16; QK_K / 32],
}
const _: () = assert!(std::mem::size_of::<BlockIq1S>() == 50);

/// ggml: `block_iq1_m`: per 8 values an 11-bit grid index (high 3 bits and a delta sign in a
/// nibble of `qh`); 3-bit scales per 16 and the f16 super-block scale spread over the top nibbles
/// of the four `uint16_t`s of `scales`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq1M {
    pub qs: [u8; QK_K / 8],
    pub qh: [u8; QK_K / 16],
    pub scales: [u8; QK_K / 32],
}
const _: () = assert!(std::mem::size_of::<BlockIq1M>() == 56);

/// `MAX(max, fabsf(x))` over a sub-block, from `fabsf(x[0])`.
#[inline(always)]
fn abs_max(xb: &[f32]) -> f32 {
    let mut max = xb[0].abs();
    for &v in &xb[1..] {
        max = c_max(max, v.abs());
    }
    max
}

/// ggml: `iq1_sort_helper`.
#[inline(always)]
fn iq1_sort_helper(l: f32, r: f32) -> i32 {
    if l < r {
        -1
    } else if l > r {
        1
    } else {
        0
    }
}

/// glibc's `qsort` of `(xb[j], j)` pairs with `iq1_sort_helper` (`<` then `>`, else equal), as
/// ggml runs it: `msort_with_tmp`, a top-down merge sort (left half `n/2`) that takes from the
/// left run unless its head compares greater, so equal values keep their order. Returns the
/// indices in sorted order.
fn glibc_msort<const N: usize>(xb: &[f32]) -> [u8; N] {
    fn msort(idx: &mut [u8], tmp: &mut [u8], key: &[f32]) {
        let n = idx.len();
        if n <= 1 {
            return;
        }
        let n1 = n / 2;
        {
            let (b1, b2) = idx.split_at_mut(n1);
            msort(b1, tmp, key);
            msort(b2, tmp, key);
        }
        let (mut i, mut j, mut o) = (0, n1, 0);
        while i < n1 && j < n {
            if iq1_sort_helper(key[idx[i] as usize], key[idx[j] as usize]) <= 0 {
                tmp[o] = idx[i];
                i += 1;
            } else {
                tmp[o] = idx[j];
                j += 1;
            }
            o += 1;
        }
        while i < n1 {
            tmp[o] = idx[i];
            i += 1;
            o += 1;
        }
        // The rest of the right run is already in place.
        idx[..o].copy_from_slice(&tmp[..o]);
    }
    let mut idx = [0u8; N];
    for (j, v) in idx.iter_mut().enumerate() {
        *v = j as u8;
    }
    let mut tmp = [0u8; N];
    msort(&mut idx, &mut tmp, &xb[..N]);
    idx
}

/// The order of [`glibc_msort`], faster: without NaN the comparator is a weak order (equal
/// meaning `==`, so -0 = +0) and every stable sort gives glibc's result, which is the sort by
/// (value, index) with the value as an order-preserving integer (-0 made +0 first). With a NaN
/// (which compares neither less nor greater) only the merge sort itself says where it goes.
fn glibc_sort_indices<const N: usize>(xb: &[f32]) -> [u8; N] {
    let xb = &xb[..N];
    if xb.iter().any(|v| v.is_nan()) {
        return glibc_msort::<N>(xb);
    }
    let mut keys = [0u64; N];
    for (j, k) in keys.iter_mut().enumerate() {
        let v = if xb[j] == 0.0 { 0.0f32 } else { xb[j] };
        let b = v.to_bits();
        let ordered = if b & 0x8000_0000 != 0 { !b } else { b | 0x8000_0000 };
        *k = (ordered as u64) << 32 | j as u64;
    }
    keys.sort_unstable();
    keys.map(|k| k as u8)
}

/// ggml: `iq1_find_best_neighbour2`: among the neighbours of an off-grid point, the one whose
/// levels `xg` at `scale` are nearest to `xval` (weighted squared distance); its quants
/// `(pg-1)/2` go to `l`.
///
/// When no neighbour is at a distance below `FLT_MAX`, ggml scans the whole grid, with a slip:
/// it compares every coordinate with `xval[i]`, `i` the grid index, so it reads up to 2047
/// values past the group (further into the row, then past it). `row_rest` is the row from the
/// group on; this reads the same elements within it and 0 beyond, where ggml's result depends on
/// whatever memory follows the row. When that scan finds nothing either, ggml aborts; here the
/// first neighbour is taken. Only blocks whose weighted distances overflow get this far.
#[allow(clippy::too_many_arguments)]
fn find_best_neighbour2(
    t: &GridTables<8>,
    neighbours: &[u16],
    row_rest: &[f32],
    weight: &[f32],
    scale: f32,
    xg: &[f32; 3],
    l: &mut [i8],
) -> usize {
    let xval = &row_rest[..8];
    let mut best_score = f32::MAX;
    let mut grid_index = -1i32;
    for &j in &neighbours[1..] {
        let pg = &t.grid[j as usize];
        let mut d2 = 0f32;
        for i in 0..8 {
            let q = xg[((pg[i] - 1) / 2) as usize];
            let w = weight[i];
            let diff = scale * q - xval[i];
            d2 += w * diff * diff;
        }
        if d2 < best_score {
            best_score = d2;
            grid_index = j as i32;
        }
    }
    if grid_index < 0 {
        for i in 0..NGRID_IQ1S {
            let grid_i = &t.grid[i];
            let xi = row_rest.get(i).copied().unwrap_or(0.0);
            let mut d2 = 0f32;
            for j in 0..8 {
                let w = weight[j];
                let q = xg[((grid_i[j] - 1) / 2) as usize];
                let diff = scale * q - xi;
                d2 += w * diff * diff;
            }
            if d2 < best_score {
                best_score = d2;
                grid_index = i as i32;
            }
        }
    }
    let grid_index = if grid_index < 0 { neighbours[1] as usize } else { grid_index as usize };
    let pg = &t.grid[grid_index];
    for i in 0..8 {
        l[i] = (pg[i] - 1) / 2;
    }
    grid_index
}

/// The grid index of a group of 8 quants `l in 0..3`, off-grid groups to their best neighbour
/// at `scale` on levels `xx`. Returns (on grid, index).
#[inline(always)]
fn group_to_grid(
    t: &GridTables<8>,
    row_rest: &[f32],
    weight: &[f32],
    scale: f32,
    xx: &[f32; 3],
    l: &mut [i8],
) -> (bool, usize) {
    let mut u = 0u16;
    for j in 0..8 {
        u |= ((l[j] as i32) << (2 * j)) as u16;
    }
    let gi = t.map_entry(u as usize);
    if gi >= 0 {
        (true, gi as usize)
    } else if gi == i32::MIN {
        // Quants outside 0..3 cannot occur (they are 0, 1 or 2 by construction).
        (false, 0)
    } else {
        (false, find_best_neighbour2(t, t.neighbours_of(gi), row_rest, weight, scale, xx, l))
    }
}

// ---------------------------------------------------------------------------------------------
// IQ1_S
// ---------------------------------------------------------------------------------------------

/// ggml: `quantize_row_iq1_s_impl` (one row; ggml requires importance weights).
pub fn quantize_row_iq1_s_impl(x: &[f32], y: &mut [u8], quant_weights: &[f32]) {
    const TS: usize = std::mem::size_of::<BlockIq1S>();
    const BS: usize = 32;
    check_row(x, y, QK_K, TS);
    let t = iq2_tables(Iq2Grid::Iq1);
    let mut scales = [0f32; QK_K / BS];
    let mut weight = [0f32; BS];
    let mut shifts = [0i8; QK_K / BS];
    let mut sumx = [0f32; BS + 1];
    let mut sumw = [0f32; BS + 1];
    let mut l = [0i8; BS];
    let mut index = [0u16; BS / 8];
    for (ibl, (xbl, yb)) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(TS)).enumerate() {
        let mut block = BlockIq1S { d: fp16(0.0), qs: [0; QK_K / 8], qh: [0; QK_K / 32] };
        let mut max_scale = 0f32;
        let sumx2 = sum_squares(xbl);
        let sigma2 = 2.0 * sumx2 / QK_K as f32;
        for ib in 0..QK_K / BS {
            let xb = &xbl[BS * ib..BS * ib + BS];
            let qw = &quant_weights[QK_K * ibl + BS * ib..QK_K * ibl + BS * ib + BS];
            for i in 0..BS {
                weight[i] = qw[i] * (sigma2 + xb[i] * xb[i]).sqrt();
            }
            let max = abs_max(xb);
            if max < GROUP_MAX_EPS_IQ1_S {
                scales[ib] = 0.0;
                shifts[ib] = 1;
                l = [1; BS];
                continue;
            }
            // The exact weighted least-squares fit over the splits of the sorted values into
            // the three levels, with prefix sums of w·x and w.
            let idx = glibc_sort_indices::<BS>(xb);
            sumx[0] = 0.0;
            sumw[0] = 0.0;
            for j in 0..BS {
                let i = idx[j] as usize;
                sumx[j + 1] = sumx[j] + weight[i] * xb[i];
                sumw[j + 1] = sumw[j] + weight[i];
            }
            let mut best_score = -f32::MAX;
            let mut scale = max;
            let (mut besti1, mut besti2, mut best_shift) = (-1i32, -1i32, 0i32);
            // For each i1, the sums of every (i1, i2) split are computed first, independently (so
            // the loop vectorizes; each is the C expression, the i1 terms hoisted), then scanned in
            // ggml's order (i2 ascending, x_p before x_m) for the running best.
            // (All i2 are computed, a fixed trip count that vectorizes; those below i1 are unused.)
            let mut qx = [[0f32; BS + 1]; 2];
            let mut q2 = [[0f32; BS + 1]; 2];
            for i1 in 0..=BS {
                for (s, xs) in [X_P, X_M].into_iter().enumerate() {
                    let a1 = (sumx[i1] - sumx[0]) * xs[0];
                    let w1 = (sumw[i1] - sumw[0]) * xs[0] * xs[0];
                    let (sx1, sw1, sxn, swn) = (sumx[i1], sumw[i1], sumx[BS], sumw[BS]);
                    let (qx, q2) = (&mut qx[s], &mut q2[s]);
                    for i2 in 0..BS + 1 {
                        qx[i2] = a1 + (sumx[i2] - sx1) * xs[1] + (sxn - sumx[i2]) * xs[2];
                        q2[i2] = w1 + (sumw[i2] - sw1) * xs[1] * xs[1] + (swn - sumw[i2]) * xs[2] * xs[2];
                    }
                }
                for i2 in i1..=BS {
                    for (s, shift) in [(0, 1), (1, -1)] {
                        let (sumqx, sumq2) = (qx[s][i2], q2[s][i2]);
                        if sumq2 > 0.0 && sumqx * sumqx > best_score * sumq2 {
                            scale = sumqx / sumq2;
                            best_score = scale * sumqx;
                            besti1 = i1 as i32;
                            besti2 = i2 as i32;
                            best_shift = shift;
                        }
                    }
                }
            }
            if besti1 < 0 || besti2 < 0 || best_shift == 0 {
                scales[ib] = 0.0;
                shifts[ib] = 1;
                l = [1; BS];
                continue;
            }
            let (b1, b2) = (besti1 as usize, besti2 as usize);
            for j in 0..b1 {
                l[idx[j] as usize] = 0;
            }
            for j in b1..b2 {
                l[idx[j] as usize] = 1;
            }
            for j in b2..BS {
                l[idx[j] as usize] = 2;
            }
            if scale < 0.0 {
                for j in 0..BS {
                    l[j] = 2 - l[j];
                }
                scale = -scale;
                best_shift = -best_shift;
            }
            let mut all_on_grid = true;
            let xx = if best_shift == 1 { &X_P } else { &X_M };
            for k in 0..BS / 8 {
                let (on, gi) = group_to_grid(
                    t,
                    &xbl[BS * ib + 8 * k..],
                    &weight[8 * k..8 * k + 8],
                    scale,
                    xx,
                    &mut l[8 * k..8 * k + 8],
                );
                all_on_grid &= on;
                index[k] = gi as u16;
            }
            if !all_on_grid {
                let mut sumqx = 0f32;
                let mut sumq2 = 0f32;
                for k in 0..BS / 8 {
                    let pg = &t.grid[index[k] as usize];
                    for j in 0..8 {
                        let w = weight[8 * k + j];
                        let q = xx[((pg[j] - 1) / 2) as usize];
                        sumqx += w * q * xb[8 * k + j];
                        sumq2 += w * q * q;
                    }
                }
                if sumqx > 0.0 && sumq2 > 0.0 {
                    scale = sumqx / sumq2;
                }
            }
            let mut h = 0u16;
            for k in 0..BS / 8 {
                block.qs[(BS / 8) * ib + k] = (index[k] & 255) as u8;
                h |= (index[k] >> 8) << (3 * k);
            }
            block.qh[ib] = h;
            scales[ib] = scale;
            shifts[ib] = best_shift as i8;
            max_scale = c_max(max_scale, scale);
        }

        if max_scale != 0.0 {
            let d = max_scale / 15.0;
            block.d = fp16(d * 1.125);
            let id = 1.0 / d;
            for ib in 0..QK_K / BS {
                let mut l = nearest_int(0.5 * (id * scales[ib] - 1.0));
                l = 0.max(7.min(l));
                if shifts[ib] == -1 {
                    l |= 8;
                }
                block.qh[ib] |= (l << 12) as u16;
            }
        }
        block.write_to(yb);
    }
}

/// ggml: `quantize_iq1_s` (one row). ggml asserts that importance weights are given;
/// `quantize_weighted` refuses the call without them before it gets here.
pub fn quantize_row_iq1_s(x: &[f32], y: &mut [u8], quant_weights: Option<&[f32]>) {
    quantize_row_iq1_s_impl(x, y, quant_weights.expect("iq1_s needs an importance matrix"));
}

/// ggml: `dequantize_row_iq1_s` (one block)
pub fn dequantize_iq1_s(b: &[u8], y: &mut [f32]) {
    let block = BlockIq1S::read_from(b);
    let d = fp32(block.d);
    for ib in 0..QK_K / 32 {
        let qh = block.qh[ib];
        let dl = d * (2 * ((qh >> 12) & 7) as i32 + 1) as f32;
        let delta = if qh & 0x8000 != 0 { -IQ1S_DELTA } else { IQ1S_DELTA };
        for l in 0..4 {
            let gi = block.qs[4 * ib + l] as usize | ((((qh >> (3 * l)) & 7) as usize) << 8);
            let grid = IQ1S_GRID[gi].to_le_bytes();
            let y = &mut y[32 * ib + 8 * l..32 * ib + 8 * l + 8];
            for j in 0..8 {
                y[j] = dl * (grid[j] as i8 as f32 + delta);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// IQ1_M
// ---------------------------------------------------------------------------------------------

/// ggml: `quantize_row_iq1_m_impl` (one row; weights `qw*sqrt(sigma2 + x²)` with importance
/// weights, `x²` without).
pub fn quantize_row_iq1_m(x: &[f32], y: &mut [u8], quant_weights: Option<&[f32]>) {
    const TS: usize = std::mem::size_of::<BlockIq1M>();
    const BS: usize = 16;
    const MASKS: [u8; 4] = [0x00, 0x80, 0x08, 0x88];
    check_row(x, y, QK_K, TS);
    let t = iq2_tables(Iq2Grid::Iq1);
    let mut scales = [0f32; QK_K / BS];
    let mut weight = [0f32; BS];
    let mut shifts = [0i8; QK_K / BS];
    let mut l = [0i8; BS];
    let mut index = [0u16; BS / 8];
    // The levels of group k (0: first 8, 1: last 8) for the sign choice `best_k`
    // (0: +,+  1: +,-  2: -,+  3: -,-).
    let levels = |best_k: i32, k: usize| -> &'static [f32; 3] {
        if k == 0 {
            if best_k < 2 {
                &X_P
            } else {
                &X_M
            }
        } else if best_k % 2 == 0 {
            &X_P
        } else {
            &X_M
        }
    };
    let weights_of = |xb: &[f32], qw: Option<&[f32]>, sigma2: f32, weight: &mut [f32; BS]| match qw {
        Some(qw) => {
            for i in 0..BS {
                weight[i] = qw[i] * (sigma2 + xb[i] * xb[i]).sqrt();
            }
        }
        None => {
            for i in 0..BS {
                weight[i] = xb[i] * xb[i];
            }
        }
    };
    for (ibl, (xbl, yb)) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(TS)).enumerate() {
        let mut block = BlockIq1M { qs: [0; QK_K / 8], qh: [0; QK_K / 16], scales: [0; QK_K / 32] };
        let mut max_scale = 0f32;
        let sumx2 = sum_squares(xbl);
        let sigma2 = 2.0 * sumx2 / QK_K as f32;
        let qw_of = |ib: usize| quant_weights.map(|q| &q[QK_K * ibl + BS * ib..QK_K * ibl + BS * ib + BS]);
        for ib in 0..QK_K / BS {
            let xb = &xbl[BS * ib..BS * ib + BS];
            weights_of(xb, qw_of(ib), sigma2, &mut weight);
            let max = abs_max(xb);
            if max < GROUP_MAX_EPS_IQ1_M {
                scales[ib] = 0.0;
                shifts[ib] = 0;
                l = [1; BS];
                continue;
            }
            let idx = glibc_sort_indices::<BS>(xb);
            let mut best_score = -f32::MAX;
            let mut scale = max;
            let (mut besti1, mut besti2, mut best_k) = (-1i32, -1i32, -1i32);
            // Prefix sums per half of the block (each half has its own delta sign); the sum of
            // a three-level split collapses to T*v[2] - px[i1] - px[i2].
            let mut px = [[0f32; BS + 1]; 2];
            let mut pw = [[0f32; BS + 1]; 2];
            for j in 0..BS {
                let i = idx[j] as usize;
                let h = if i < BS / 2 { 0 } else { 1 };
                px[h][j + 1] = px[h][j] + weight[i] * xb[i];
                px[1 - h][j + 1] = px[1 - h][j];
                pw[h][j + 1] = pw[h][j] + weight[i];
                pw[1 - h][j + 1] = pw[1 - h][j];
            }
            let txs = [px[0][BS], px[1][BS]];
            let tws = [pw[0][BS], pw[1][BS]];
            let (p2, m2) = (X_P[2], X_M[2]);
            let cp1 = X_P[0] * X_P[0] - X_P[1] * X_P[1];
            let cp2 = X_P[1] * X_P[1] - X_P[2] * X_P[2];
            let cm1 = X_M[0] * X_M[0] - X_M[1] * X_M[1];
            let cm2 = X_M[1] * X_M[1] - X_M[2] * X_M[2];
            // As for IQ1_S: per i1, every split's four candidate sums first (vectorizable, the C
            // expressions with the i1 terms hoisted), then the scan in ggml's order.
            let mut sumqx = [[0f32; BS + 1]; 4];
            let mut sumq2 = [[0f32; BS + 1]; 4];
            for i1 in 0..=BS {
                let tp = [tws[0] * p2 * p2 + pw[0][i1] * cp1, tws[1] * p2 * p2 + pw[1][i1] * cp1];
                let tm = [tws[0] * m2 * m2 + pw[0][i1] * cm1, tws[1] * m2 * m2 + pw[1][i1] * cm1];
                // (All i2, a fixed trip count that vectorizes; those below i1 are unused.)
                let (px1, tx) = ([px[0][i1], px[1][i1]], [txs[0] * p2, txs[1] * p2]);
                let txm = [txs[0] * m2, txs[1] * m2];
                for i2 in 0..BS + 1 {
                    let sx0 = px1[0] + px[0][i2];
                    let sx1 = px1[1] + px[1][i2];
                    let (qx_p0, qx_m0) = (tx[0] - sx0, txm[0] - sx0);
                    let (qx_p1, qx_m1) = (tx[1] - sx1, txm[1] - sx1);
                    let (q2_p0, q2_m0) = (tp[0] + pw[0][i2] * cp2, tm[0] + pw[0][i2] * cm2);
                    let (q2_p1, q2_m1) = (tp[1] + pw[1][i2] * cp2, tm[1] + pw[1][i2] * cm2);
                    sumqx[0][i2] = qx_p0 + qx_p1;
                    sumqx[1][i2] = qx_p0 + qx_m1;
                    sumqx[2][i2] = qx_m0 + qx_p1;
                    sumqx[3][i2] = qx_m0 + qx_m1;
                    sumq2[0][i2] = q2_p0 + q2_p1;
                    sumq2[1][i2] = q2_p0 + q2_m1;
                    sumq2[2][i2] = q2_m0 + q2_p1;
                    sumq2[3][i2] = q2_m0 + q2_m1;
                }
                for i2 in i1..=BS {
                    for k in 0..4 {
                        let (sqx, sq2) = (sumqx[k][i2], sumq2[k][i2]);
                        if sq2 > 0.0 && sqx * sqx > best_score * sq2 {
                            scale = sqx / sq2;
                            best_score = scale * sqx;
                            besti1 = i1 as i32;
                            besti2 = i2 as i32;
                            best_k = k as i32;
                        }
                    }
                }
            }
            if besti1 < 0 || besti2 < 0 || best_k < 0 {
                scales[ib] = 0.0;
                shifts[ib] = 0;
                l = [1; BS];
                continue;
            }
            let (b1, b2) = (besti1 as usize, besti2 as usize);
            for j in 0..b1 {
                l[idx[j] as usize] = 0;
            }
            for j in b1..b2 {
                l[idx[j] as usize] = 1;
            }
            for j in b2..BS {
                l[idx[j] as usize] = 2;
            }
            if scale < 0.0 {
                for j in 0..BS {
                    l[j] = 2 - l[j];
                }
                scale = -scale;
                best_k = 3 - best_k;
            }
            let mut all_on_grid = true;
            for k in 0..BS / 8 {
                let xx = levels(best_k, k);
                let (on, gi) = group_to_grid(
                    t,
                    &xbl[BS * ib + 8 * k..],
                    &weight[8 * k..8 * k + 8],
                    scale,
                    xx,
                    &mut l[8 * k..8 * k + 8],
                );
                all_on_grid &= on;
                index[k] = gi as u16;
            }
            if !all_on_grid {
                let mut sumqx_f = 0f32;
                let mut sumq2_f = 0f32;
                for k in 0..BS / 8 {
                    let xx = levels(best_k, k);
                    let pg = &t.grid[index[k] as usize];
                    for j in 0..8 {
                        let w = weight[8 * k + j];
                        let q = xx[((pg[j] - 1) / 2) as usize];
                        sumqx_f += w * q * xb[8 * k + j];
                        sumq2_f += w * q * q;
                    }
                }
                if sumqx_f > 0.0 && sumq2_f > 0.0 {
                    scale = sumqx_f / sumq2_f;
                }
            }
            block.qs[2 * ib] = (index[0] & 255) as u8;
            block.qs[2 * ib + 1] = (index[1] & 255) as u8;
            block.qh[ib] = ((index[0] >> 8) | ((index[1] >> 8) << 4)) as u8;
            scales[ib] = scale;
            shifts[ib] = best_k as i8;
            max_scale = c_max(max_scale, scale);
        }

        if max_scale != 0.0 {
            let mut sc = [0u16; 4];
            let mut d = max_scale / 15.0;
            let id = 1.0 / d;
            let mut sumqx_f = 0f32;
            let mut sumq2_f = 0f32;
            for ib in 0..QK_K / BS {
                let mut l = nearest_int(0.5 * (id * scales[ib] - 1.0));
                l = 0.max(7.min(l));
                sc[ib / 4] |= (l << (3 * (ib % 4))) as u16;
                block.qh[ib] |= MASKS[shifts[ib] as usize];
                let xb = &xbl[BS * ib..BS * ib + BS];
                weights_of(xb, qw_of(ib), sigma2, &mut weight);
                for k in 0..BS / 8 {
                    let xx = levels(shifts[ib] as i32, k);
                    let gi = block.qs[2 * ib + k] as usize + (((block.qh[ib] as usize) << (8 - 4 * k)) & 0x700);
                    let pg = &t.grid[gi];
                    for j in 0..8 {
                        let w = weight[8 * k + j];
                        let q = xx[((pg[j] - 1) / 2) as usize] * (2 * l + 1) as f32;
                        sumqx_f += w * q * xb[8 * k + j];
                        sumq2_f += w * q * q;
                    }
                }
            }
            if sumq2_f > 0.0 {
                d = sumqx_f / sumq2_f;
            }
            let s = fp16(d * 1.1125);
            sc[0] |= (s & 0x000f) << 12;
            sc[1] |= (s & 0x00f0) << 8;
            sc[2] |= (s & 0x0f00) << 4;
            sc[3] |= s & 0xf000;
            for (i, v) in sc.iter().enumerate() {
                block.scales[2 * i..2 * i + 2].copy_from_slice(&v.to_le_bytes());
            }
        }
        block.write_to(yb);
    }
}

/// ggml: `dequantize_row_iq1_m` (one block)
pub fn dequantize_iq1_m(b: &[u8], y: &mut [f32]) {
    let block = BlockIq1M::read_from(b);
    let sc: [u16; 4] = std::array::from_fn(|i| u16::from_le_bytes([block.scales[2 * i], block.scales[2 * i + 1]]));
    let scale = (sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000);
    let d = fp32(scale);
    for ib in 0..QK_K / 32 {
        let s = sc[ib / 2] as i32;
        let dl1 = d * (2 * ((s >> (6 * (ib % 2))) & 0x7) + 1) as f32;
        let dl2 = d * (2 * ((s >> (6 * (ib % 2) + 3)) & 0x7) + 1) as f32;
        let qs = &block.qs[4 * ib..4 * ib + 4];
        let qh = [block.qh[2 * ib] as usize, block.qh[2 * ib + 1] as usize];
        let idx = [
            qs[0] as usize | ((qh[0] << 8) & 0x700),
            qs[1] as usize | ((qh[0] << 4) & 0x700),
            qs[2] as usize | ((qh[1] << 8) & 0x700),
            qs[3] as usize | ((qh[1] << 4) & 0x700),
        ];
        let delta = [
            if qh[0] & 0x08 != 0 { -IQ1S_DELTA } else { IQ1S_DELTA },
            if qh[0] & 0x80 != 0 { -IQ1S_DELTA } else { IQ1S_DELTA },
            if qh[1] & 0x08 != 0 { -IQ1S_DELTA } else { IQ1S_DELTA },
            if qh[1] & 0x80 != 0 { -IQ1S_DELTA } else { IQ1S_DELTA },
        ];
        for l in 0..4 {
            let dl = if l < 2 { dl1 } else { dl2 };
            let grid = IQ1S_GRID[idx[l]].to_le_bytes();
            let y = &mut y[32 * ib + 8 * l..32 * ib + 8 * l + 8];
            for j in 0..8 {
                y[j] = dl * (grid[j] as i8 as f32 + delta[l]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The integer-key sort orders as glibc's merge sort (and as a stable sort by ggml's
    /// comparator) on values with many ties and signed zeros.
    #[test]
    fn sort_is_glibc_order() {
        let mut r = crate::util::rng::XorShift64::new(5);
        for _ in 0..20_000 {
            let mut xb = [0f32; 32];
            for v in &mut xb {
                *v = match r.next_u64() % 6 {
                    0 => 0.0,
                    1 => -0.0,
                    2 => 1.5e-30,
                    3 => -1.5,
                    _ => (r.next_u64() % 7) as f32 - 3.0,
                };
            }
            let mut stable: Vec<u8> = (0..32).collect();
            stable.sort_by(|&a, &b| iq1_sort_helper(xb[a as usize], xb[b as usize]).cmp(&0));
            assert_eq!(glibc_msort::<32>(&xb).to_vec(), stable);
            assert_eq!(glibc_sort_indices::<32>(&xb), glibc_msort::<32>(&xb), "{xb:?}");
            assert_eq!(glibc_sort_indices::<16>(&xb[8..]), glibc_msort::<16>(&xb[8..]), "{xb:?}");
        }
    }
}

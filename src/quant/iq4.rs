//! The 4-bit non-linear formats: IQ4_NL (blocks of 32, one f16 scale) and IQ4_XS (super-blocks
//! of 256 with 6-bit sub-block scales), both on the 16 levels of `kvalues_iq4nl` (ggml
//! `ggml-common.h` layouts).
//!
//! ggml quantizes both with `quantize_row_iq4_nl_impl` (weights `qw*sqrt(sigma2 + x²)` with
//! importance weights, `x²` without; a search over 15 candidate scales), which is what
//! `ggml_quantize_chunk` calls with and without importance weights; ported bit for bit here.

// Index loops are kept where ggml has them, so the port reads side by side with the C.
#![allow(clippy::needless_range_loop)]

use super::common::{fp16, fp32, nearest_int, Block, GROUP_MAX_EPS};
use super::grids::KVALUES_IQ4NL;
use super::kquants::QK_K;

/// ggml: `QK4_NL`, elements per IQ4_NL block.
pub const QK4_NL: usize = 32;

/// ggml: `block_iq4_nl`: `x = d * kvalues_iq4nl[q]`, 4-bit `q`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq4Nl {
    pub d: u16,
    pub qs: [u8; QK4_NL / 2],
}
const _: () = assert!(std::mem::size_of::<BlockIq4Nl>() == 18);

/// ggml: `block_iq4_xs`: 8 sub-blocks of 32, `x = d * (ls - 32) * kvalues_iq4nl[q]` with 6-bit
/// `ls` (low four bits in `scales_l`, high two in `scales_h`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq4Xs {
    pub d: u16,
    pub scales_h: u16,
    pub scales_l: [u8; QK_K / 64],
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockIq4Xs>() == 136);

/// ggml: `best_index_int8(16, kvalues_iq4nl, x)`: the nearest of the 16 levels, by bisection;
/// on a tie the upper one, NaN to the last. The reference for [`best_index_iq4`].
pub fn best_index_int8(val: &[i8; 16], x: f32) -> u8 {
    if x <= val[0] as f32 {
        return 0;
    }
    if x >= val[15] as f32 {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < val[mav] as f32 {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - (val[mu - 1] as f32) < val[mu] as f32 - x {
        (mu - 1) as u8
    } else {
        mu as u8
    }
}

/// The IQ4 levels as floats.
const LEVELS: [f32; 16] = {
    let mut v = [0f32; 16];
    let mut i = 0;
    while i < 16 {
        v[i] = KVALUES_IQ4NL[i] as f32;
        i += 1;
    }
    v
};

/// [`best_index_int8`] without the bisection's unpredictable branches: the bisection ends at
/// the largest `ml` with `levels[ml] <= x`, which is the count of levels 1..=14 at or below `x`
/// (the levels are increasing); the final choice between `ml` and `ml+1` is the C expression.
#[inline(always)]
pub fn best_index_iq4(x: f32) -> u8 {
    let val = &LEVELS;
    if x <= val[0] {
        return 0;
    }
    if x >= val[15] || x.is_nan() {
        return 15;
    }
    let mut ml = 0usize;
    for k in 1..15 {
        ml += (val[k] <= x) as usize;
    }
    if x - val[ml] < val[ml + 1] - x {
        ml as u8
    } else {
        (ml + 1) as u8
    }
}

/// What `quantize_row_iq4_nl_impl` writes besides the packed quants.
struct Iq4Scales {
    d: u16,
    scales_h: u16,
    scales_l: [u8; QK_K / 64],
}

/// ggml: `quantize_row_iq4_nl_impl(SB, 32, x, .., kvalues_iq4nl, quant_weights, ntry = 7)` for
/// one super-block of `SB` values (32 for IQ4_NL, 256 for IQ4_XS), as `quantize_iq4_nl` and
/// `quantize_iq4_xs` call it. `q4` receives the packed quants.
fn quantize_iq4_superblock<const SB: usize>(x: &[f32], qw: Option<&[f32]>, q4: &mut [u8]) -> Iq4Scales {
    const BS: usize = 32;
    const NTRY: i32 = 7;
    let values = &KVALUES_IQ4NL;
    let nb = SB / BS;
    let mut sigma2 = 0f32;
    for j in 0..SB {
        sigma2 += x[j] * x[j];
    }
    sigma2 *= 2.0 / SB as f32;

    let mut l_all = [0u8; QK_K];
    let mut scales = [0f32; QK_K / 32];
    let mut weight = [0f32; BS];
    let mut out = Iq4Scales { d: fp16(0.0), scales_h: 0, scales_l: [0; QK_K / 64] };

    let mut max_scale = 0f32;
    let mut amax_scale = 0f32;
    for ib in 0..nb {
        let xb = &x[ib * BS..ib * BS + BS];
        let lb = &mut l_all[ib * BS..ib * BS + BS];
        match qw {
            Some(qw) => {
                let qw = &qw[ib * BS..ib * BS + BS];
                for j in 0..BS {
                    weight[j] = qw[j] * (sigma2 + xb[j] * xb[j]).sqrt();
                }
            }
            None => {
                for j in 0..BS {
                    weight[j] = xb[j] * xb[j];
                }
            }
        }
        let mut amax = 0f32;
        let mut max = 0f32;
        for j in 0..BS {
            let ax = xb[j].abs();
            if ax > amax {
                amax = ax;
                max = xb[j];
            }
        }
        if amax < GROUP_MAX_EPS {
            scales[ib] = 0.0;
            continue;
        }
        // ntry > 0
        let mut d = -max / values[0] as f32;
        let id = 1.0 / d;
        let mut sumqx = 0f32;
        let mut sumq2 = 0f32;
        for j in 0..BS {
            let al = id * xb[j];
            let l = best_index_iq4(al);
            lb[j] = l;
            let q = values[l as usize] as f32;
            let w = weight[j];
            sumqx += w * q * xb[j];
            sumq2 += w * q * q;
        }
        d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
        let mut best = d * sumqx;
        for itry in -NTRY..=NTRY {
            let id = (itry + values[0] as i32) as f32 / max;
            let (sumqx, sumq2) = iq4_try(xb, &weight, id);
            if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
        scales[ib] = d;
        let abs_d = d.abs();
        if abs_d > amax_scale {
            amax_scale = abs_d;
            max_scale = d;
        }
    }

    if nb > 1 {
        let d = -max_scale / 32.0;
        out.d = fp16(d);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for ib in 0..nb {
            let mut l = nearest_int(id * scales[ib]);
            l = (-32).max(31.min(l));
            let dl = d * l as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            let lb = &mut l_all[ib * BS..ib * BS + BS];
            let xb = &x[ib * BS..ib * BS + BS];
            for j in 0..BS {
                lb[j] = best_index_iq4(idl * xb[j]);
            }
            l += 32;
            let l_l = (l & 0xf) as u8;
            let l_h = (l >> 4) as u16;
            if ib % 2 == 0 {
                out.scales_l[ib / 2] = l_l;
            } else {
                out.scales_l[ib / 2] |= l_l << 4;
            }
            out.scales_h |= l_h << (2 * (ib % 8));
        }
    } else {
        out.d = fp16(scales[0]);
        let id = if scales[0] != 0.0 { 1.0 / scales[0] } else { 0.0 };
        for j in 0..SB {
            l_all[j] = best_index_iq4(id * x[j]);
        }
    }

    for i in 0..SB / 32 {
        for j in 0..16 {
            q4[16 * i + j] = l_all[32 * i + j] | (l_all[32 * i + 16 + j] << 4);
        }
    }
    out
}

/// One candidate scale of the IQ4 search: the weighted sums `Σ w·q·x` and `Σ w·q²` of the
/// levels nearest to `id*x`, in C order.
#[inline(always)]
fn iq4_try(xb: &[f32], weight: &[f32; 32], id: f32) -> (f32, f32) {
    let mut sumqx = 0f32;
    let mut sumq2 = 0f32;
    for j in 0..32 {
        let al = id * xb[j];
        let l = best_index_iq4(al);
        let q = KVALUES_IQ4NL[l as usize] as f32;
        let w = weight[j];
        sumqx += w * q * xb[j];
        sumq2 += w * q * q;
    }
    (sumqx, sumq2)
}

/// ggml: `quantize_iq4_nl` (one row).
pub fn quantize_row_iq4_nl(x: &[f32], y: &mut [u8], quant_weights: Option<&[f32]>) {
    const TS: usize = std::mem::size_of::<BlockIq4Nl>();
    assert!(x.len().is_multiple_of(QK4_NL), "row of {} values is not a whole number of blocks", x.len());
    assert_eq!(y.len(), x.len() / QK4_NL * TS, "output is not whole blocks");
    for (ibl, (xb, yb)) in x.chunks_exact(QK4_NL).zip(y.chunks_exact_mut(TS)).enumerate() {
        let qw = quant_weights.map(|q| &q[QK4_NL * ibl..QK4_NL * ibl + QK4_NL]);
        let mut block = BlockIq4Nl { d: 0, qs: [0; QK4_NL / 2] };
        block.d = quantize_iq4_superblock::<QK4_NL>(xb, qw, &mut block.qs).d;
        block.write_to(yb);
    }
}

/// ggml: `quantize_iq4_xs` (one row).
pub fn quantize_row_iq4_xs(x: &[f32], y: &mut [u8], quant_weights: Option<&[f32]>) {
    const TS: usize = std::mem::size_of::<BlockIq4Xs>();
    assert!(x.len().is_multiple_of(QK_K), "row of {} values is not a whole number of super-blocks", x.len());
    assert_eq!(y.len(), x.len() / QK_K * TS, "output is not whole super-blocks");
    for (ibl, (xb, yb)) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(TS)).enumerate() {
        let qw = quant_weights.map(|q| &q[QK_K * ibl..QK_K * ibl + QK_K]);
        let mut block = BlockIq4Xs { d: 0, scales_h: 0, scales_l: [0; QK_K / 64], qs: [0; QK_K / 2] };
        let s = quantize_iq4_superblock::<QK_K>(xb, qw, &mut block.qs);
        block.d = s.d;
        block.scales_h = s.scales_h;
        block.scales_l = s.scales_l;
        block.write_to(yb);
    }
}

/// ggml: `dequantize_row_iq4_nl` (one block)
pub fn dequantize_iq4_nl(b: &[u8], y: &mut [f32]) {
    let block = BlockIq4Nl::read_from(b);
    let d = fp32(block.d);
    for j in 0..QK4_NL / 2 {
        y[j] = d * KVALUES_IQ4NL[(block.qs[j] & 0xf) as usize] as f32;
        y[j + QK4_NL / 2] = d * KVALUES_IQ4NL[(block.qs[j] >> 4) as usize] as f32;
    }
}

/// ggml: `dequantize_row_iq4_xs` (one block)
pub fn dequantize_iq4_xs(b: &[u8], y: &mut [f32]) {
    let block = BlockIq4Xs::read_from(b);
    let d = fp32(block.d);
    for ib in 0..QK_K / 32 {
        let ls = ((block.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xf) as i32
            | ((((block.scales_h >> (2 * ib)) & 3) as i32) << 4);
        let dl = d * (ls - 32) as f32;
        let qs = &block.qs[16 * ib..16 * ib + 16];
        let y = &mut y[32 * ib..32 * ib + 32];
        for j in 0..16 {
            y[j] = dl * KVALUES_IQ4NL[(qs[j] & 0xf) as usize] as f32;
            y[j + 16] = dl * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The branch-free level search equals ggml's bisection everywhere: around every level and
    /// every midpoint (ties), at the extremes, for non-finite values and on a sweep.
    #[test]
    fn best_index_matches_bisection() {
        let mut xs = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, f32::MAX, f32::MIN];
        for i in 0..16 {
            let v = KVALUES_IQ4NL[i] as f32;
            xs.extend([v, v.next_up(), v.next_down()]);
            if i < 15 {
                let m = (v + KVALUES_IQ4NL[i + 1] as f32) / 2.0;
                xs.extend([m, m.next_up(), m.next_down()]);
            }
        }
        xs.extend((-140_000..140_000).map(|i| i as f32 * 1e-3));
        for x in xs {
            assert_eq!(best_index_iq4(x), best_index_int8(&KVALUES_IQ4NL, x), "x = {x}");
        }
    }
}

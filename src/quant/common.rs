//! Helpers shared by ggml's quantizers (`ggml-quants.c`), ported so that every output bit matches.
//!
//! ggml's `ggml-quants.c` is built for baseline x86-64 without fast-math, so every `a*b + c` is
//! rounded twice (no FMA contraction) and every sum is accumulated left to right in the type the C
//! declares. The ports below keep the C expression shapes and evaluation order for that reason:
//! `w*x[i]*l` is `(w*x[i])*l`, a `float` accumulator stays `f32`, and `MIN`/`MAX` are the C macros
//! (which differ from `f32::min`/`f32::max` for NaN and signed zeros).

// Index loops are kept where ggml has them, so the port reads side by side with the C.
#![allow(clippy::needless_range_loop)]

use super::float::{f16_bits_to_f32, f32_to_f16_bits};

/// The largest group the search helpers see (a legacy block; K-quant sub-blocks are 16 or 32).
pub const MAX_GROUP: usize = 32;

/// ggml: `GROUP_MAX_EPS`, below which a group's absolute maximum counts as zero.
pub const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml: `nearest_int`: round to nearest, ties to even, by adding 1.5·2^23 and reading the
/// mantissa. Valid for |x| <= 4194303; outside that (ggml only asserts it in debug builds) the
/// result is whatever the bits say, which is what we reproduce.
#[inline(always)]
pub fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12_582_912.0;
    (val.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// C's `(int)f` as the engine's compiler emits it on this CPU, so that degenerate blocks (e.g. a
/// subnormal scale whose reciprocal is infinite) give ggml's bytes on each: on x86-64
/// (`cvttss2si`/`cvttps2dq`) truncation toward zero and the "integer indefinite" `INT_MIN` for NaN
/// and out-of-range values; on aarch64 (`fcvtzs`) truncation that saturates and maps NaN to 0,
/// which is Rust's `as`. Narrower C casts (`(int8_t)f`, `(uint8_t)f`) are this conversion followed
/// by keeping the low byte, which is what the vectorised and scalar code both do.
#[inline(always)]
pub fn c_float_to_int(f: f32) -> i32 {
    if cfg!(target_arch = "aarch64") || (-2_147_483_648.0..2_147_483_648.0).contains(&f) {
        f as i32
    } else {
        i32::MIN
    }
}

/// [`c_float_to_int`] on eight values at once (on x86-64 the packed `cvttps2dq`, which has exactly
/// the C semantics).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn c_float_to_int_x8(v: &[f32; 8]) -> [i32; 8] {
    super::simd::x86_64::cvtt_ps_x8(v)
}

/// [`c_float_to_int`] on eight values at once.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub fn c_float_to_int_x8(v: &[f32; 8]) -> [i32; 8] {
    v.map(c_float_to_int)
}

/// C's `MIN(a, b)` macro on floats: `a < b ? a : b`.
#[inline(always)]
pub fn c_min(a: f32, b: f32) -> f32 {
    if a < b {
        a
    } else {
        b
    }
}

/// C's `MAX(a, b)` macro on floats: `a > b ? a : b`.
#[inline(always)]
pub fn c_max(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// ggml: `GGML_FP32_TO_FP16`.
#[inline(always)]
pub fn fp16(f: f32) -> u16 {
    f32_to_f16_bits(f)
}

/// ggml: `GGML_FP16_TO_FP32`.
#[inline(always)]
pub fn fp32(h: u16) -> f32 {
    f16_bits_to_f32(h)
}

/// The per-element weight of `make_qx_quants` when no importance weights are given.
#[inline(always)]
fn qx_weight(rmse_type: i32, x: f32) -> f32 {
    match rmse_type {
        1 => x * x,
        2 => 1.0,
        3 => x.abs(),
        _ => x.abs().sqrt(),
    }
}

/// ggml: `make_qx_quants`: symmetric quantization of `x` to `L[i] in 0..2*nmax` (stored with the
/// `nmax` offset), returning the scale. With `rmse_type != 0` it searches 18 scales around
/// `-nmax/max` for the weighted least-squares optimum; `qw` replaces the default weights.
pub fn make_qx_quants(nmax: i32, x: &[f32], l_out: &mut [i8], mut rmse_type: i32, qw: Option<&[f32]>) -> f32 {
    let n = x.len();
    assert!(n <= MAX_GROUP && l_out.len() >= n);
    let mut max = 0f32;
    let mut amax = 0f32;
    for &xi in x {
        let ax = xi.abs();
        if ax > amax {
            amax = ax;
            max = xi;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let mut iscale = -(nmax as f32) / max;
    if rmse_type == 0 {
        for i in 0..n {
            let l = nearest_int(iscale * x[i]);
            l_out[i] = (nmax + (-nmax).max(l.min(nmax - 1))) as i8;
        }
        return 1.0 / iscale;
    }
    let mut return_early = false;
    if rmse_type < 0 {
        rmse_type = -rmse_type;
        return_early = true;
    }
    // The weights once, on the stack (ggml recomputes them per candidate; the values are equal).
    let mut weights = [0f32; MAX_GROUP];
    let w = &mut weights[..n];
    match qw {
        Some(qw) => w.copy_from_slice(&qw[..n]),
        None => w.iter_mut().zip(x).for_each(|(w, &xi)| *w = qx_weight(rmse_type, xi)),
    }
    let w = &weights[..n];
    // Every candidate scale (the first `iscale` and the 18 steps around it) depends only on `max`,
    // so all 19 sums are accumulated side by side, one lane each: every lane adds its terms in the
    // C order, so each sum is bit-identical to ggml's, and the choice below runs in ggml's order.
    let mut iscales = [-(nmax as f32) / max; QX_LANES];
    for (k, is) in (-9..=9).filter(|&is| is != 0).enumerate() {
        iscales[k + 1] = -(nmax as f32 + 0.1 * is as f32) / max;
    }
    let (sumlx, suml2) = qx_candidate_sums(nmax, x, w, &iscales);
    // C: `suml2 ? a : b` is true for NaN as well, like `!= 0.0`.
    let mut scale = if suml2[0] != 0.0 { sumlx[0] / suml2[0] } else { 0.0 };
    let mut chosen = 0;
    if return_early {
        scale = if suml2[0] > 0.0 { 0.5 * (scale + 1.0 / iscale) } else { 1.0 / iscale };
    } else {
        let mut best = scale * sumlx[0];
        for k in 1..QX_CANDIDATES {
            if suml2[k] > 0.0 && sumlx[k] * sumlx[k] > best * suml2[k] {
                scale = sumlx[k] / suml2[k];
                best = scale * sumlx[k];
                chosen = k;
            }
        }
    }
    iscale = iscales[chosen];
    for i in 0..n {
        let l = nearest_int(iscale * x[i]);
        l_out[i] = (nmax + (-nmax).max(l.min(nmax - 1))) as i8;
    }
    scale
}

/// The first pass and the 18 scale steps of `make_qx_quants`.
const QX_CANDIDATES: usize = 19;
/// Lanes of the candidate sums: `QX_CANDIDATES` rounded up to whole vectors.
const QX_LANES: usize = 24;

/// `make_qx_quants`' sums `Σ w·x·l` and `Σ w·l·l` for every candidate `iscale`, each lane in C order.
#[inline(always)]
fn qx_candidate_sums(nmax: i32, x: &[f32], w: &[f32], iscales: &[f32; QX_LANES]) -> ([f32; QX_LANES], [f32; QX_LANES]) {
    let mut sumlx = [0f32; QX_LANES];
    let mut suml2 = [0f32; QX_LANES];
    for (&xi, &wi) in x.iter().zip(w) {
        let wx = wi * xi;
        for k in 0..QX_LANES {
            let l = (-nmax).max(nearest_int(iscales[k] * xi).min(nmax - 1)) as f32;
            sumlx[k] += wx * l;
            suml2[k] += wi * l * l;
        }
    }
    (sumlx, suml2)
}

/// ggml: `make_q3_quants` (used by `quantize_row_q3_K_ref`): like `make_qx_quants` with x² weights,
/// but refined by coordinate descent on each `L[i]` when `do_rmse`.
pub fn make_q3_quants(nmax: i32, x: &[f32], l_out: &mut [i8], do_rmse: bool) -> f32 {
    let n = x.len();
    let mut max = 0f32;
    let mut amax = 0f32;
    for &xi in x {
        let ax = xi.abs();
        if ax > amax {
            amax = ax;
            max = xi;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    if do_rmse {
        let mut sumlx = 0f32;
        let mut suml2 = 0f32;
        for i in 0..n {
            let l = (-nmax).max(nearest_int(iscale * x[i]).min(nmax - 1));
            l_out[i] = l as i8;
            let w = x[i] * x[i];
            sumlx += w * x[i] * l as f32;
            suml2 += w * l as f32 * l as f32;
        }
        for _ in 0..5 {
            let mut n_changed = 0;
            for i in 0..n {
                let w = x[i] * x[i];
                let li = l_out[i] as f32;
                let mut slx = sumlx - w * x[i] * li;
                if slx > 0.0 {
                    let mut sl2 = suml2 - w * li * li;
                    let new_l = (-nmax).max(nearest_int(x[i] * sl2 / slx).min(nmax - 1));
                    if new_l != l_out[i] as i32 {
                        slx += w * x[i] * new_l as f32;
                        sl2 += w * new_l as f32 * new_l as f32;
                        if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                            l_out[i] = new_l as i8;
                            sumlx = slx;
                            suml2 = sl2;
                            n_changed += 1;
                        }
                    }
                }
            }
            if n_changed == 0 {
                break;
            }
        }
        for l in &mut l_out[..n] {
            *l = l.wrapping_add(nmax as i8);
        }
        return if suml2 > 0.0 { sumlx / suml2 } else { 0.0 };
    }
    for i in 0..n {
        let l = (-nmax).max(nearest_int(iscale * x[i]).min(nmax - 1));
        l_out[i] = (l + nmax) as i8;
    }
    1.0 / iscale
}

/// ggml: `make_qkx2_quants`: asymmetric quantization `x ≈ scale*L + min` with `L in 0..=nmax`,
/// searching `nstep+1` scales for the weighted least-squares (or least-absolute, `use_mad`) fit.
/// Returns the scale and stores `-min` in `the_min`. `laux` is scratch of `x.len()` entries.
#[allow(clippy::too_many_arguments)]
pub fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    the_min: &mut f32,
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> f32 {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out[..n].fill(0);
        *the_min = -min;
        return 0.0;
    }
    let iscale = nmax as f32 / (max - min);
    let scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min));
        l_out[i] = 0.max(nmax.min(l)) as u8;
        let mut diff = scale * l_out[i] as f32 + min - x[i];
        diff = if use_mad { diff.abs() } else { diff * diff };
        best_error += weights[i] * diff;
    }
    if nstep < 1 {
        *the_min = -min;
        return scale;
    }
    let _ = laux;
    let (scale, min) = if use_mad {
        qkx_search::<false, true>(
            nmax,
            &x[..n],
            &weights[..n],
            &mut l_out[..n],
            QkxState { min, max, sum_w, sum_x, best_error, scale },
            rmin,
            rdelta,
            nstep,
        )
    } else {
        qkx_search::<false, false>(
            nmax,
            &x[..n],
            &weights[..n],
            &mut l_out[..n],
            QkxState { min, max, sum_w, sum_x, best_error, scale },
            rmin,
            rdelta,
            nstep,
        )
    };
    *the_min = -min;
    scale
}

/// ggml: `make_qkx3_quants`: `make_qkx2_quants` as used with importance weights (x² when `None`),
/// with a guard for candidate scales that push `iscale*(x - min)` out of range.
#[allow(clippy::too_many_arguments)]
pub fn make_qkx3_quants(
    nmax: i32,
    x: &[f32],
    weights: Option<&[f32]>,
    l_out: &mut [u8],
    the_min: &mut f32,
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> f32 {
    let n = x.len();
    let weight = |i: usize| match weights {
        Some(w) => w[i],
        None => x[i] * x[i],
    };
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weight(0);
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weight(i);
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max <= min {
        l_out[..n].fill(0);
        *the_min = -min;
        return 0.0;
    }
    let iscale = nmax as f32 / (max - min);
    let scale = 1.0 / iscale;
    let mut best_mad = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min));
        l_out[i] = 0.max(nmax.min(l)) as u8;
        let mut diff = scale * l_out[i] as f32 + min - x[i];
        diff = if use_mad { diff.abs() } else { diff * diff };
        best_mad += weight(i) * diff;
    }
    if nstep < 1 {
        *the_min = -min;
        return scale;
    }
    let _ = laux;
    let mut w = [0f32; MAX_GROUP];
    for i in 0..n {
        w[i] = weight(i);
    }
    let (scale, min) = if use_mad {
        qkx_search::<true, true>(
            nmax,
            &x[..n],
            &w[..n],
            &mut l_out[..n],
            QkxState { min, max, sum_w, sum_x, best_error: best_mad, scale },
            rmin,
            rdelta,
            nstep,
        )
    } else {
        qkx_search::<true, false>(
            nmax,
            &x[..n],
            &w[..n],
            &mut l_out[..n],
            QkxState { min, max, sum_w, sum_x, best_error: best_mad, scale },
            rmin,
            rdelta,
            nstep,
        )
    };
    *the_min = -min;
    scale
}

/// The state of `make_qkx2_quants`/`make_qkx3_quants` when their scale search starts.
struct QkxState {
    min: f32,
    max: f32,
    sum_w: f32,
    sum_x: f32,
    best_error: f32,
    scale: f32,
}

/// Candidates evaluated side by side in [`qkx_search`].
const QKX_LANES: usize = 16;

/// The scale search of `make_qkx2_quants` (`X3 = false`) and `make_qkx3_quants` (`X3 = true`).
///
/// ggml tries `nstep + 1` scales in turn; a candidate that lowers the error replaces `min`, and
/// the following candidates start from it. Here up to sixteen candidates are evaluated at once, one
/// per lane, from the current `min` (each lane's sums in C order, so bit-identical to ggml's),
/// then accepted or rejected in ggml's order; after an accepted candidate that changed `min` the
/// later lanes are stale, and the search resumes right after it.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn qkx_search<const X3: bool, const MAD: bool>(
    nmax: i32,
    x: &[f32],
    w: &[f32],
    l_out: &mut [u8],
    st: QkxState,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let QkxState { mut min, max, sum_w, sum_x, best_error: mut best, mut scale } = st;
    let n = x.len();
    let w = &w[..n];
    let nmaxf = nmax as f32;
    let mut lbuf = [[0f32; QKX_LANES]; MAX_GROUP];
    let mut next = 0;
    while next <= nstep {
        let mut iscales = [0f32; QKX_LANES];
        for k in 0..QKX_LANES {
            let is = next + k as i32;
            iscales[k] = (rmin + rdelta * is as f32 + nmaxf) / (max - min);
        }
        let (mut sum_l, mut sum_l2, mut sum_xl) = ([0f32; QKX_LANES], [0f32; QKX_LANES], [0f32; QKX_LANES]);
        for i in 0..n {
            let (xi, wi) = (x[i], w[i]);
            let xm = xi - min;
            let lb = &mut lbuf[i];
            for k in 0..QKX_LANES {
                let v = iscales[k] * xm;
                let l = if X3 {
                    // `min` is the best fit so far and can sit at or near `max`, so `v` can be inf,
                    // NaN or beyond `nearest_int`'s range: ggml clamps before rounding, NaN to 0.
                    // (Branch-free: the rounding of a NaN or negative `v` is computed, then masked.)
                    nearest_int(c_min(v, nmaxf)) & -((v > 0.0) as i32)
                } else {
                    0.max(nmax.min(nearest_int(v)))
                };
                let lf = l as f32;
                lb[k] = lf;
                sum_l[k] += wi * lf;
                sum_l2[k] += wi * lf * lf;
                sum_xl[k] += wi * lf * xi;
            }
        }
        let mut d = [0f32; QKX_LANES];
        let mut this_scale = [0f32; QKX_LANES];
        let mut this_min = [0f32; QKX_LANES];
        for k in 0..QKX_LANES {
            d[k] = sum_w * sum_l2[k] - sum_l[k] * sum_l[k];
            let sc = (sum_w * sum_xl[k] - sum_x * sum_l[k]) / d[k];
            let mn = (sum_l2[k] * sum_x - sum_l[k] * sum_xl[k]) / d[k];
            let clamp = mn > 0.0;
            this_min[k] = if clamp { 0.0 } else { mn };
            this_scale[k] = if clamp { sum_xl[k] / sum_l2[k] } else { sc };
        }
        let mut err = [0f32; QKX_LANES];
        for i in 0..n {
            let (xi, wi) = (x[i], w[i]);
            let lb = &lbuf[i];
            for k in 0..QKX_LANES {
                let diff = this_scale[k] * lb[k] + this_min[k] - xi;
                let diff = if MAD { diff.abs() } else { diff * diff };
                err[k] += wi * diff;
            }
        }
        let lanes = ((nstep - next + 1) as usize).min(QKX_LANES);
        let mut resume = next + lanes as i32;
        for k in 0..lanes {
            if d[k] > 0.0 && err[k] < best {
                for i in 0..n {
                    l_out[i] = lbuf[i][k] as u8;
                }
                best = err[k];
                scale = this_scale[k];
                let moved = this_min[k].to_bits() != min.to_bits();
                min = this_min[k];
                if moved {
                    resume = next + k as i32 + 1;
                    break;
                }
            }
        }
        next = resume;
    }
    (scale, min)
}

/// Sub-blocks searched side by side by [`make_qkx_quants_x8`]: one per lane.
pub const QKX_SUBBLOCKS: usize = 8;

/// Eight lanes of `f32`, one per sub-block.
pub(crate) type Lanes = [f32; QKX_SUBBLOCKS];

/// `make_qkx2_quants` (`X3 = false`) or `make_qkx3_quants` (`X3 = true`) on eight sub-blocks of
/// `N` values at once, stored one after another in `x`, `weights` and `l_out` (a K-quant super-block
/// of 8×32, or half of one of 16×16). Returns each sub-block's scale and `-min`.
///
/// Each lane runs ggml's sequential search for its own sub-block: the same candidates in the same
/// order, every sum accumulated left to right, a candidate accepted or not by the same comparison,
/// so every lane is bit-identical to the scalar functions above (`make_qkx2_quants` stays as the
/// reference the tests hold this to; `make_qkx3_quants` also serves the single-block Q4_1/Q5_1).
/// Unlike [`qkx_search`], which evaluates the candidates of one sub-block speculatively, no work
/// is thrown away. The search runs in AVX2 where the build targets it (`simd::x86_64::qkx_steps_avx2`, the
/// default native build on such hosts), elsewhere as plain array loops over the lanes
/// ([`qkx_steps`]).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn make_qkx_quants_x8<const X3: bool, const MAD: bool, const N: usize>(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (Lanes, Lanes) {
    qkx_quants_x8::<X3, MAD, N, false>(nmax, x, weights, l_out, rmin, rdelta, nstep)
}

/// [`make_qkx_quants_x8`], with the portable search even where AVX2 is compiled in when
/// `PORTABLE` (for the tests that hold the two to each other).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn qkx_quants_x8<const X3: bool, const MAD: bool, const N: usize, const PORTABLE: bool>(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (Lanes, Lanes) {
    const S: usize = QKX_SUBBLOCKS;
    assert!(x.len() == S * N && weights.len() == S * N && l_out.len() == S * N);
    // Transposed: element `i` of every sub-block side by side.
    let mut xt = [[0f32; S]; N];
    let mut wt = [[0f32; S]; N];
    for k in 0..S {
        for i in 0..N {
            xt[i][k] = x[k * N + i];
            wt[i][k] = weights[k * N + i];
        }
    }
    let nmaxf = nmax as f32;
    let (mut min, mut max) = (xt[0], xt[0]);
    let mut sum_w = wt[0];
    let mut sum_x: Lanes = std::array::from_fn(|k| sum_w[k] * xt[0][k]);
    for i in 1..N {
        for k in 0..S {
            let xi = xt[i][k];
            min[k] = if xi < min[k] { xi } else { min[k] };
            max[k] = if xi > max[k] { xi } else { max[k] };
            sum_w[k] += wt[i][k];
            sum_x[k] += wt[i][k] * xi;
        }
    }
    let mut flat = [false; S];
    for k in 0..S {
        min[k] = if min[k] > 0.0 { 0.0 } else { min[k] };
        // qkx2 returns early for `max == min`, qkx3 for `max <= min`: L = 0, scale 0.
        flat[k] = if X3 { max[k] <= min[k] } else { max[k] == min[k] };
    }
    let mut scale: Lanes = [0.0; S];
    let mut best: Lanes = [0.0; S];
    let mut lbest = [[0f32; S]; N];
    let iscale: Lanes = std::array::from_fn(|k| nmaxf / (max[k] - min[k]));
    for k in 0..S {
        scale[k] = 1.0 / iscale[k];
    }
    for i in 0..N {
        for k in 0..S {
            let l = 0.max(nmax.min(nearest_int(iscale[k] * (xt[i][k] - min[k])))) as f32;
            lbest[i][k] = l;
            let diff = scale[k] * l + min[k] - xt[i][k];
            let diff = if MAD { diff.abs() } else { diff * diff };
            best[k] += wt[i][k] * diff;
        }
    }
    // ggml stops after the first fit when `nstep < 1`.
    if nstep >= 1 {
        let lanes =
            LaneState { min: &mut min, max, sum_w, sum_x, best: &mut best, scale: &mut scale, lbest: &mut lbest, flat };
        #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
        if !PORTABLE {
            // SAFETY: AVX2 is enabled at compile time.
            unsafe { super::simd::x86_64::qkx_steps_avx2::<X3, MAD, N>(&xt, &wt, lanes, nmax, rmin, rdelta, nstep) };
            return finish_lanes(scale, min, &lbest, flat, l_out);
        }
        qkx_steps::<X3, MAD, N>(&xt, &wt, lanes, nmax, rmin, rdelta, nstep);
    }
    finish_lanes(scale, min, &lbest, flat, l_out)
}

/// Flat sub-blocks (ggml's early return) get L = 0 and scale 0; the rest their best fit.
#[inline(always)]
fn finish_lanes<const N: usize>(
    mut scale: Lanes,
    min: Lanes,
    lbest: &[Lanes; N],
    flat: [bool; QKX_SUBBLOCKS],
    l_out: &mut [u8],
) -> (Lanes, Lanes) {
    const S: usize = QKX_SUBBLOCKS;
    for k in 0..S {
        let flat = flat[k];
        scale[k] = if flat { 0.0 } else { scale[k] };
        for i in 0..N {
            l_out[k * N + i] = if flat { 0 } else { lbest[i][k] as u8 };
        }
    }
    (scale, std::array::from_fn(|k| -min[k]))
}

/// The lanes' running state in [`make_qkx_quants_x8`]'s search.
pub(crate) struct LaneState<'a, const N: usize> {
    pub(crate) min: &'a mut Lanes,
    pub(crate) max: Lanes,
    pub(crate) sum_w: Lanes,
    pub(crate) sum_x: Lanes,
    pub(crate) best: &'a mut Lanes,
    pub(crate) scale: &'a mut Lanes,
    pub(crate) lbest: &'a mut [Lanes; N],
    pub(crate) flat: [bool; QKX_SUBBLOCKS],
}

/// The `nstep + 1` candidate scales of [`make_qkx_quants_x8`], portable: plain array loops over
/// the lanes, the reference for `simd::x86_64::qkx_steps_avx2`.
#[inline(always)]
fn qkx_steps<const X3: bool, const MAD: bool, const N: usize>(
    xt: &[Lanes; N],
    wt: &[Lanes; N],
    st: LaneState<'_, N>,
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) {
    const S: usize = QKX_SUBBLOCKS;
    let LaneState { min, max, sum_w, sum_x, best, scale, lbest, flat } = st;
    let nmaxf = nmax as f32;
    let mut laux = [[0f32; S]; N];
    for is in 0..=nstep {
        let step = rmin + rdelta * is as f32 + nmaxf;
        let iscale: Lanes = std::array::from_fn(|k| step / (max[k] - min[k]));
        let (mut sum_l, mut sum_l2, mut sum_xl) = ([0f32; S], [0f32; S], [0f32; S]);
        for i in 0..N {
            for k in 0..S {
                let (xi, wi) = (xt[i][k], wt[i][k]);
                let v = iscale[k] * (xi - min[k]);
                let l = if X3 {
                    // As in `qkx_search`: clamp before rounding, NaN and negatives to 0.
                    nearest_int(c_min(v, nmaxf)) & -((v > 0.0) as i32)
                } else {
                    0.max(nmax.min(nearest_int(v)))
                };
                let lf = l as f32;
                laux[i][k] = lf;
                sum_l[k] += wi * lf;
                sum_l2[k] += wi * lf * lf;
                sum_xl[k] += wi * lf * xi;
            }
        }
        let mut d: Lanes = [0.0; S];
        let mut this_scale: Lanes = [0.0; S];
        let mut this_min: Lanes = [0.0; S];
        for k in 0..S {
            d[k] = sum_w[k] * sum_l2[k] - sum_l[k] * sum_l[k];
            let sc = (sum_w[k] * sum_xl[k] - sum_x[k] * sum_l[k]) / d[k];
            let mn = (sum_l2[k] * sum_x[k] - sum_l[k] * sum_xl[k]) / d[k];
            let clamp = mn > 0.0;
            this_min[k] = if clamp { 0.0 } else { mn };
            this_scale[k] = if clamp { sum_xl[k] / sum_l2[k] } else { sc };
        }
        let mut err: Lanes = [0.0; S];
        for i in 0..N {
            for k in 0..S {
                let diff = this_scale[k] * laux[i][k] + this_min[k] - xt[i][k];
                let diff = if MAD { diff.abs() } else { diff * diff };
                err[k] += wt[i][k] * diff;
            }
        }
        let mut take = [false; S];
        for k in 0..S {
            take[k] = !flat[k] && d[k] > 0.0 && err[k] < best[k];
            best[k] = if take[k] { err[k] } else { best[k] };
            scale[k] = if take[k] { this_scale[k] } else { scale[k] };
            min[k] = if take[k] { this_min[k] } else { min[k] };
        }
        for i in 0..N {
            for k in 0..S {
                lbest[i][k] = if take[k] { laux[i][k] } else { lbest[i][k] };
            }
        }
    }
}

/// ggml: `make_qp_quants`: quantization of non-negative values (the sub-block scales and mins of
/// the K-quants) to `L in 0..=nmax` with a single positive scale, weighted by `quant_weights`:
/// a 9-point scale search followed by coordinate descent.
///
/// `L` is `uint8_t` in C while the candidates are `int`: a negative candidate (possible only for
/// negative inputs) wraps when stored, and the wrapped value is what later iterations read. The
/// `as u8` stores below keep that.
pub fn make_qp_quants(nmax: i32, x: &[f32], l_out: &mut [u8], quant_weights: &[f32]) -> f32 {
    let n = x.len();
    let mut max = 0f32;
    for &xi in x {
        max = c_max(max, xi);
    }
    if max < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let mut iscale = nmax as f32 / max;
    for i in 0..n {
        l_out[i] = nearest_int(iscale * x[i]) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0f32;
    for i in 0..n {
        let diff = x[i] - scale * l_out[i] as f32;
        best_mse += quant_weights[i] * diff * diff;
    }
    for is in -4..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1 * is as f32 + nmax as f32) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0f32;
        for i in 0..n {
            let l = nmax.min(nearest_int(iscale_is * x[i]));
            let diff = x[i] - scale_is * l as f32;
            mse += quant_weights[i] * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let mut sumlx = 0f32;
    let mut suml2 = 0f32;
    for i in 0..n {
        let l = nmax.min(nearest_int(iscale * x[i]));
        l_out[i] = l as u8;
        let w = quant_weights[i];
        sumlx += w * x[i] * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for i in 0..n {
            let w = quant_weights[i];
            let li = l_out[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            let mut sl2 = suml2 - w * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nmax.min(nearest_int(x[i] * sl2 / slx));
                if new_l != l_out[i] as i32 {
                    slx += w * x[i] * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l_out[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// ggml: `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` from the 12-byte packed
/// `scales` of a Q4_K/Q5_K block.
#[inline(always)]
pub fn get_scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// A ggml block as plain old data: its bytes are the C struct's, copied as ggml copies them
/// (`memcpy`, in the host's byte order, little-endian on every CPU microscale builds for). Every
/// `#[repr(C)]` block struct derives `bytemuck::Pod`, which refuses padding at compile time.
pub(crate) trait Block: bytemuck::Pod {
    /// The block at the start of `bytes` (at any alignment).
    fn read_from(bytes: &[u8]) -> Self {
        bytemuck::pod_read_unaligned(&bytes[..std::mem::size_of::<Self>()])
    }

    /// Its bytes, at the start of `out`.
    fn write_to(&self, out: &mut [u8]) {
        out[..std::mem::size_of::<Self>()].copy_from_slice(bytemuck::bytes_of(self));
    }
}

impl<T: bytemuck::Pod> Block for T {}

// GGUF's blocks are little-endian, and the copies above are the host's order.
#[cfg(target_endian = "big")]
compile_error!("microscale copies ggml blocks in the host's byte order: big-endian hosts are not supported");

/// Checks a row and its output buffer and returns the number of blocks of `block_len` values.
pub(crate) fn check_row(x: &[f32], y: &[u8], block_len: usize, type_size: usize) -> usize {
    assert!(
        x.len().is_multiple_of(block_len),
        "row of {} values is not a whole number of {block_len}-value blocks",
        x.len()
    );
    let nb = x.len() / block_len;
    assert_eq!(y.len(), nb * type_size, "output is not {nb} blocks");
    nb
}

/// Sum of squares in `float`, left to right (as ggml's loops add them).
#[inline(always)]
pub(crate) fn sum_squares(x: &[f32]) -> f32 {
    let mut s = 0f32;
    for &v in x {
        s += v * v;
    }
    s
}

/// The magnitudes of a group of 8 and its sign bits; with `even`, the sign of the element with
/// the smallest `w·x²` is flipped when the count of negatives is odd (IQ2_XXS, IQ2_XS, IQ3_XXS: 7
/// stored sign bits, the eighth implied by parity). Returns the sign byte (`& 127` when `even`).
#[inline(always)]
pub(crate) fn group_signs(xb: &[f32], weight: &[f32], xval: &mut [f32], even: bool) -> u8 {
    let mut nflip = 0;
    let mut s = 0u8;
    for i in 0..8 {
        if xb[i] >= 0.0 {
            xval[i] = xb[i];
        } else {
            xval[i] = -xb[i];
            nflip += 1;
            s |= 1 << i;
        }
    }
    if !even {
        return s;
    }
    if nflip % 2 != 0 {
        let mut imin = 0;
        let mut min = weight[imin] * xb[imin] * xb[imin];
        for i in 1..8 {
            let ax = weight[i] * xb[i] * xb[i];
            if ax < min {
                min = ax;
                imin = i;
            }
        }
        xval[imin] = -xval[imin];
        s ^= 1 << imin;
    }
    s & 127
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-0.5), 0);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(-3.7), -4);
        assert_eq!(nearest_int(4_194_303.0), 4_194_303);
    }

    /// Eight sub-blocks of `n` values of one kind (and their weights), as the K-quants see them.
    fn subblocks(kind: usize, n: usize, rng: &mut crate::util::rng::XorShift64) -> (Vec<f32>, Vec<f32>) {
        let x: Vec<f32> = (0..8 * n)
            .map(|i| {
                let u = rng.next_f32() - 0.5;
                match (kind + i / n) % 6 {
                    0 if i % 3 == 0 => 0.0,       // exact zeros among values
                    0 => u,                       // uniform around zero
                    1 => u.abs() + 0.25,          // all positive
                    2 => -0.75,                   // constant (max == min)
                    3 => 0.0,                     // zero
                    4 if i % 7 == 0 => 50.0 * u,  // outliers ...
                    4 => 1e-3 * u,                // ... among small values
                    _ => (u * 8.0).round() / 8.0, // ties
                }
            })
            .collect();
        // Some sub-blocks weigh part of their values zero (as Q2_K's |x| weights do).
        let w = x
            .iter()
            .enumerate()
            .map(|(i, v)| if (kind + i / n) % 4 == 3 && i % 2 == 0 { 0.0 } else { rng.next_f32() * (1.0 + v.abs()) })
            .collect();
        (x, w)
    }

    /// Side by side, each lane of `make_qkx_quants_x8` equals the scalar ggml port on its sub-block.
    fn lanes_equal_scalar<const X3: bool, const MAD: bool, const N: usize>(
        nmax: i32,
        rmin: f32,
        rdelta: f32,
        nstep: i32,
    ) {
        let mut rng = crate::util::rng::XorShift64::new(7);
        for kind in 0..24 {
            let (x, w) = subblocks(kind, N, &mut rng);
            let mut l8 = vec![0u8; 8 * N];
            let (scales, mins) = make_qkx_quants_x8::<X3, MAD, N>(nmax, &x, &w, &mut l8, rmin, rdelta, nstep);
            let mut l8_portable = vec![0u8; 8 * N];
            let portable = qkx_quants_x8::<X3, MAD, N, true>(nmax, &x, &w, &mut l8_portable, rmin, rdelta, nstep);
            assert_eq!(l8, l8_portable, "kind {kind}: the vector search equals the portable one");
            assert_eq!(scales.map(f32::to_bits), portable.0.map(f32::to_bits), "kind {kind}");
            assert_eq!(mins.map(f32::to_bits), portable.1.map(f32::to_bits), "kind {kind}");
            for j in 0..8 {
                let (xs, ws) = (&x[j * N..(j + 1) * N], &w[j * N..(j + 1) * N]);
                let (mut l, mut laux, mut min) = ([0u8; 32], [0u8; 32], 0f32);
                let scale = if X3 {
                    make_qkx3_quants(nmax, xs, Some(ws), &mut l[..N], &mut min, &mut laux, rmin, rdelta, nstep, MAD)
                } else {
                    make_qkx2_quants(nmax, xs, ws, &mut l[..N], &mut min, &mut laux, rmin, rdelta, nstep, MAD)
                };
                let at = format!("kind {kind}, sub-block {j}, X3 {X3}, MAD {MAD}, N {N}");
                assert_eq!(scales[j].to_bits(), scale.to_bits(), "scale, {at}");
                assert_eq!(mins[j].to_bits(), min.to_bits(), "min, {at}");
                assert_eq!(&l8[j * N..(j + 1) * N], &l[..N], "L, {at}");
            }
        }
    }

    #[test]
    fn lanes_of_the_k_quant_search_equal_the_scalar_port() {
        lanes_equal_scalar::<false, false, 32>(15, -1.0, 0.1, 20); // Q4_K
        lanes_equal_scalar::<false, false, 32>(31, -0.5, 0.1, 15); // Q5_K
        lanes_equal_scalar::<true, false, 32>(15, -0.9, 0.05, 36); // Q4_K with an imatrix
        lanes_equal_scalar::<true, false, 32>(31, -0.9, 0.05, 36); // Q5_K with an imatrix
        lanes_equal_scalar::<false, true, 16>(3, -0.5, 0.1, 15); // Q2_K
        lanes_equal_scalar::<true, false, 16>(3, -0.9, 0.05, 36); // Q2_K with an imatrix
        lanes_equal_scalar::<false, false, 16>(3, -0.5, 0.1, 0); // no search
    }

    #[test]
    #[cfg(target_arch = "aarch64")]
    fn c_float_to_int_is_aarch64_saturation() {
        assert_eq!(c_float_to_int(-7.9), -7);
        assert_eq!(c_float_to_int(f32::NAN), 0);
        assert_eq!(c_float_to_int(f32::INFINITY), i32::MAX);
        assert_eq!(c_float_to_int(-3e9), i32::MIN);
        assert_eq!(c_float_to_int(3e9), i32::MAX);
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn c_float_to_int_is_x86_truncation() {
        assert_eq!(c_float_to_int(-7.9), -7);
        assert_eq!(c_float_to_int(f32::NAN), i32::MIN);
        assert_eq!(c_float_to_int(f32::INFINITY), i32::MIN);
        assert_eq!(c_float_to_int(-2_147_483_648.0), i32::MIN);
        assert_eq!(c_float_to_int(3e9), i32::MIN);
    }
}

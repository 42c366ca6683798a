//! x86-64: SSE2 (every x86-64 CPU) and AVX/AVX2 where the build enables them (`target-cpu`).

use crate::quant::common::{LaneState, Lanes};

/// C's `(int)f` on eight values ([`crate::quant::common::c_float_to_int`]): the packed
/// `cvttps2dq` has exactly the C semantics on x86-64 (truncation, `INT_MIN` for NaN and
/// out-of-range values).
#[inline(always)]
pub(crate) fn cvtt_ps_x8(v: &[f32; 8]) -> [i32; 8] {
    let mut out = [0i32; 8];
    #[cfg(target_feature = "avx")]
    // SAFETY: AVX is enabled at compile time; loads and stores are unaligned and in bounds.
    unsafe {
        use std::arch::x86_64::*;
        let r = _mm256_cvttps_epi32(_mm256_loadu_ps(v.as_ptr()));
        _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, r);
    }
    #[cfg(not(target_feature = "avx"))]
    // SAFETY: SSE2 is part of x86-64; loads and stores are unaligned and in bounds.
    unsafe {
        use std::arch::x86_64::*;
        for h in 0..2 {
            let r = _mm_cvttps_epi32(_mm_loadu_ps(v.as_ptr().add(4 * h)));
            _mm_storeu_si128(out.as_mut_ptr().add(4 * h) as *mut __m128i, r);
        }
    }
    out
}

/// `quant::common::qkx_steps` in AVX2, one `__m256` per eight lanes: the same operations in the same order,
/// each a single IEEE rounding (no FMA), so every lane is bit-identical to the portable loop.
/// (Left to itself the compiler vectorises the portable loop along the elements and keeps the
/// sums as ordered scalar reductions, which is barely faster than scalar code.)
#[cfg(target_feature = "avx2")]
#[inline(always)]
pub(crate) unsafe fn qkx_steps_avx2<const X3: bool, const MAD: bool, const N: usize>(
    xt: &[Lanes; N],
    wt: &[Lanes; N],
    st: LaneState<'_, N>,
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) {
    use std::arch::x86_64::*;
    let LaneState { min, max, sum_w, sum_x, best, scale, lbest, flat } = st;
    let load = |a: &Lanes| _mm256_loadu_ps(a.as_ptr());
    let (x, w): ([__m256; N], [__m256; N]) =
        (std::array::from_fn(|i| load(&xt[i])), std::array::from_fn(|i| load(&wt[i])));
    let (vmax, vsum_w, vsum_x) = (load(&max), load(&sum_w), load(&sum_x));
    let (mut vmin, mut vbest, mut vscale) = (load(min), load(best), load(scale));
    let mut vlbest: [__m256; N] = std::array::from_fn(|i| load(&lbest[i]));
    let flat_mask: [i32; 8] = std::array::from_fn(|k| -(flat[k] as i32));
    let live = _mm256_castsi256_ps(_mm256_cmpeq_epi32(
        _mm256_loadu_si256(flat_mask.as_ptr() as *const __m256i),
        _mm256_setzero_si256(),
    ));
    let (zero, nmaxf) = (_mm256_setzero_ps(), _mm256_set1_ps(nmax as f32));
    let (magic, mantissa, half) =
        (_mm256_set1_ps(12_582_912.0), _mm256_set1_epi32(0x007f_ffff), _mm256_set1_epi32(0x0040_0000));
    let (izero, inmax) = (_mm256_setzero_si256(), _mm256_set1_epi32(nmax));
    let sign = _mm256_set1_ps(-0.0);
    // ggml's nearest_int: add 1.5·2^23, keep the mantissa, subtract 2^22.
    let nearest =
        |v: __m256| _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(_mm256_add_ps(v, magic)), mantissa), half);
    let mut laux = [zero; N];
    for is in 0..=nstep {
        let step = _mm256_set1_ps(rmin + rdelta * is as f32 + nmax as f32);
        let iscale = _mm256_div_ps(step, _mm256_sub_ps(vmax, vmin));
        let (mut sum_l, mut sum_l2, mut sum_xl) = (zero, zero, zero);
        for i in 0..N {
            let v = _mm256_mul_ps(iscale, _mm256_sub_ps(x[i], vmin));
            let l = if X3 {
                // c_min(v, nmax) is minps(v, nmax) exactly (the second operand on NaN and ties);
                // then zero where !(v > 0).
                let positive = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(v, zero));
                _mm256_and_si256(nearest(_mm256_min_ps(v, nmaxf)), positive)
            } else {
                _mm256_max_epi32(izero, _mm256_min_epi32(inmax, nearest(v)))
            };
            let lf = _mm256_cvtepi32_ps(l);
            laux[i] = lf;
            let wl = _mm256_mul_ps(w[i], lf);
            sum_l = _mm256_add_ps(sum_l, wl);
            sum_l2 = _mm256_add_ps(sum_l2, _mm256_mul_ps(wl, lf));
            sum_xl = _mm256_add_ps(sum_xl, _mm256_mul_ps(wl, x[i]));
        }
        let d = _mm256_sub_ps(_mm256_mul_ps(vsum_w, sum_l2), _mm256_mul_ps(sum_l, sum_l));
        let sc = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(vsum_w, sum_xl), _mm256_mul_ps(vsum_x, sum_l)), d);
        let mn = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_l2, vsum_x), _mm256_mul_ps(sum_l, sum_xl)), d);
        let clamp = _mm256_cmp_ps::<_CMP_GT_OQ>(mn, zero);
        let this_min = _mm256_blendv_ps(mn, zero, clamp);
        let this_scale = _mm256_blendv_ps(sc, _mm256_div_ps(sum_xl, sum_l2), clamp);
        let mut err = zero;
        for i in 0..N {
            let diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(this_scale, laux[i]), this_min), x[i]);
            let diff = if MAD { _mm256_andnot_ps(sign, diff) } else { _mm256_mul_ps(diff, diff) };
            err = _mm256_add_ps(err, _mm256_mul_ps(w[i], diff));
        }
        let take = _mm256_and_ps(
            live,
            _mm256_and_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(d, zero), _mm256_cmp_ps::<_CMP_LT_OQ>(err, vbest)),
        );
        vbest = _mm256_blendv_ps(vbest, err, take);
        vscale = _mm256_blendv_ps(vscale, this_scale, take);
        vmin = _mm256_blendv_ps(vmin, this_min, take);
        for i in 0..N {
            vlbest[i] = _mm256_blendv_ps(vlbest[i], laux[i], take);
        }
    }
    let store = |a: &mut Lanes, v: __m256| _mm256_storeu_ps(a.as_mut_ptr(), v);
    store(min, vmin);
    store(best, vbest);
    store(scale, vscale);
    for i in 0..N {
        store(&mut lbest[i], vlbest[i]);
    }
}

/// `max(|x|)` over a legacy block, as ggml's `amax < fabsf(v)` scan finds it (NaNs skipped, from
/// 0): the maximum is order independent, so eight lanes reduce it.
#[cfg(target_feature = "avx")]
#[inline(always)]
pub(crate) fn absmax_32(x: &[f32; 32]) -> f32 {
    // SAFETY: AVX is enabled at compile time; the loads are unaligned and in bounds.
    unsafe {
        use std::arch::x86_64::*;
        let sign = _mm256_set1_ps(-0.0);
        // `_mm256_max_ps(v, m)` is `v > m ? v : m`: a NaN `v` keeps `m`, as the C comparison does.
        let mut m = _mm256_setzero_ps();
        for k in 0..4 {
            m = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x.as_ptr().add(8 * k))), m);
        }
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
        _mm_cvtss_f32(m)
    }
}

/// The index of the first element with `|x| == a` (one exists).
#[cfg(target_feature = "avx")]
#[inline(always)]
pub(crate) fn first_abs_equal_32(x: &[f32; 32], a: f32) -> usize {
    // SAFETY: AVX is enabled at compile time; the loads are unaligned and in bounds.
    unsafe {
        use std::arch::x86_64::*;
        let sign = _mm256_set1_ps(-0.0);
        let av = _mm256_set1_ps(a);
        let mut mask = 0u32;
        for k in 0..4 {
            let v = _mm256_andnot_ps(sign, _mm256_loadu_ps(x.as_ptr().add(8 * k)));
            mask |= (_mm256_movemask_ps(_mm256_cmp_ps(v, av, _CMP_EQ_OQ)) as u32) << (8 * k);
        }
        mask.trailing_zeros() as usize
    }
}

/// The block's minimum and maximum from `FLT_MAX`/`-FLT_MAX`, reduced in lanes (NaN skipped).
#[cfg(target_feature = "avx")]
#[inline(always)]
pub(crate) fn min_max_32(x: &[f32; 32]) -> (f32, f32) {
    // SAFETY: AVX is enabled at compile time; the loads are unaligned and in bounds.
    unsafe {
        use std::arch::x86_64::*;
        // `_mm256_min_ps(v, m)` is `v < m ? v : m` (NaN `v` keeps `m`); likewise for max.
        let mut mn = _mm256_set1_ps(f32::MAX);
        let mut mx = _mm256_set1_ps(-f32::MAX);
        for k in 0..4 {
            let v = _mm256_loadu_ps(x.as_ptr().add(8 * k));
            mn = _mm256_min_ps(v, mn);
            mx = _mm256_max_ps(v, mx);
        }
        let mn = _mm_min_ps(_mm256_castps256_ps128(mn), _mm256_extractf128_ps(mn, 1));
        let mn = _mm_min_ps(mn, _mm_movehl_ps(mn, mn));
        let mn = _mm_min_ss(mn, _mm_shuffle_ps(mn, mn, 1));
        let mx = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
        let mx = _mm_max_ps(mx, _mm_movehl_ps(mx, mx));
        let mx = _mm_max_ss(mx, _mm_shuffle_ps(mx, mx, 1));
        (_mm_cvtss_f32(mn), _mm_cvtss_f32(mx))
    }
}

/// Bit 4 of each of 32 bytes, as the bits of a `u32` (Q5's fifth bits).
#[cfg(target_feature = "avx2")]
#[inline(always)]
pub(crate) fn bit4_mask_32(q: &[u8; 32]) -> u32 {
    // SAFETY: AVX2 is enabled at compile time; the load is unaligned and in bounds. Shifting the
    // 16-bit lanes left by 3 moves bit 4 of every byte to its bit 7, which `movemask` collects.
    unsafe {
        use std::arch::x86_64::*;
        let v = _mm256_loadu_si256(q.as_ptr() as *const __m256i);
        _mm256_movemask_epi8(_mm256_slli_epi16(v, 3)) as u32
    }
}

//! Healing after structured pruning (`--heal`): layer-wise distillation with the unpruned model
//! as teacher, solved in closed form from the calibration's second moments.
//!
//! When FFN channels are removed, the block's down projection loses some of its inputs; when
//! attention heads are removed, the output projection loses those heads' outputs. In one-shot
//! healing the moments are the unpruned model's, so the inputs it keeps (`x_K`) are the
//! teacher's (with `--sequential`, the partly pruned model's own: `convert::sequential`). Healing
//! refits the projection on the kept inputs so that its output matches the teacher's over the
//! calibration tokens (ridge least squares, pulled towards the plain selection W_K):
//!
//! ```text
//!   min over W', b'   Σ_t ‖ W·x_t − (W'·x_K,t + b') ‖²  +  λ‖W' − W_K‖²
//! ```
//!
//! With H = Σ_t x·xᵀ, s = Σ_t x and N tokens, the normal equations are
//!
//! ```text
//!   [W' b'] · | H_KK + λI   s_K |  =  W · [ H_·K   s ]  +  λ·[ W_K  0 ]
//!             | s_Kᵀ        N   |
//! ```
//!
//! that is, W' = W_K + W_D·(what of the dropped inputs the kept ones predict linearly), and b'
//! the mean of what is left (mean compensation). b' is added to the layer's bias tensor — which
//! llama.cpp's graphs read for LLaMA's and GPT-2's output projections when the file has one —
//! and dropped (b' = 0, the system without its last row and column) when `with_bias` is off.
//! λ is 1% of H_KK's mean diagonal, the dampening of GPTQ and SparseGPT (10% with a gap's δ in
//! the target: [`GAP_DAMPING`]). The ridge pulls towards
//! W_K, not towards zero: a direction the calibration tokens do not excite keeps the unpruned
//! weight instead of losing it (shrinking towards zero measurably hurt on the default model, whose
//! FFN activations have a few channels hundreds of times larger than the rest).
//!
//! **Dropped blocks.** When blocks l+1..=j are dropped, the residual stream after block l misses
//! what they added: δ_t = r_j,t − r_l,t, the teacher's stream after the gap minus block l's
//! output (both measured on the unpruned model). Block l's down projection, the last layer before
//! the gap, is refit to add it too — its inputs a_t are the teacher's, so this is the same ridge
//! problem with a shifted target:
//!
//! ```text
//!   min over W', b'   Σ_t ‖ W·a_t + δ_t − (W'·a_K,t + b') ‖²  +  λ‖W' − W_K‖²
//!   [W' b'] · | H_KK + λI   s_K |  =  W · [ H_·K   s ]  +  [ C_·K   Σδ ]  +  λ·[ W_K  0 ]
//!             | s_Kᵀ        N   |
//! ```
//!
//! with C = Σ_t δ·aᵀ ([`crate::calib::gaps`]); K is every input unless the block's FFN was
//! pruned too. Sequential healing solves the same problem with the partly pruned model's inputs a
//! and, for a stage's first block, δ = the teacher's stream minus the student's
//! ([`crate::calib::paired`]): the target is then the teacher's residual stream itself. The refit sees only block l's FFN output, so it can absorb the gap's average linear
//! effect given a, not what the dropped blocks computed from attention over other tokens.

use crate::calib::gaps::GapMoments;
use crate::calib::moments::InputMoments;
use crate::util::linalg::{gemm, solve_spd_right};
use anyhow::{bail, Result};

/// The dampening fraction of the ridge term.
pub const DAMPING: f64 = 0.01;

/// The dampening fraction when the target carries a gap's (or the teacher stream's) δ. That part
/// of the target is not in W's span, so the refit leans on the calibration tokens' particulars and
/// a stronger pull towards W_K generalizes better. Chosen on held-out text (the tail of WikiText-2
/// validation, disjoint from the calibration chunks), 3 blocks dropped from the default model:
/// PPL 30.20 at 0.01, 30.17 at 0.03, 30.17 at 0.1, 30.24 at 0.2, 30.32 at 0.3 (bench-results/pruning.md).
/// For the narrowed projections' own refits (no δ) 1% stays: one-shot FFN 25% healed gives the same
/// test PPL at 1% and 10%. A narrowed projection whose target carries a δ (an FFN-pruned block before
/// a gap, a sequential stage's first block) takes the 10%.
pub const GAP_DAMPING: f64 = 0.1;

/// A refit projection: the weights on the kept inputs, and the bias to add.
pub struct Refit {
    /// rows × kept, row-major.
    pub weight: Vec<f32>,
    /// Per output row, when mean compensation applies.
    pub bias_delta: Option<Vec<f32>>,
}

/// Refit `w` (`rows` × `m.n`, row-major: the unpruned projection) onto the inputs `kept`
/// (ascending), with mean compensation when `with_bias`, and adding a gap of dropped blocks
/// after it when `gap` is given.
pub fn refit_kept_inputs(
    w: &[f32],
    rows: usize,
    m: &InputMoments,
    kept: &[usize],
    with_bias: bool,
    gap: Option<&GapMoments>,
) -> Result<Refit> {
    let n = m.n;
    if w.len() != rows * n {
        bail!("a projection of {} weights is not {rows}×{n}", w.len());
    }
    check_gap(gap, rows, n)?;
    if kept.is_empty() || kept.iter().any(|&c| c >= n) || kept.windows(2).any(|p| p[0] >= p[1]) {
        bail!("the kept inputs are not an ascending subset of 0..{n}");
    }
    let k = kept.len();
    let dim = k + with_bias as usize;
    // The system's matrix: H_KK + λI, bordered by s_K and N for the bias.
    let sum: Vec<f64> = m.mean.iter().map(|&v| v * m.tokens).collect();
    let mut a = vec![0f64; dim * dim];
    for (i, &ci) in kept.iter().enumerate() {
        for (j, &cj) in kept.iter().enumerate() {
            a[i * dim + j] = m.xtx[ci * n + cj];
        }
    }
    let mean_diag = (0..k).map(|i| a[i * dim + i]).sum::<f64>() / k as f64;
    let damping = if gap.is_some() { GAP_DAMPING } else { DAMPING };
    let lambda = if mean_diag > 0.0 { damping * mean_diag } else { 1.0 };
    for i in 0..k {
        a[i * dim + i] += lambda;
    }
    if with_bias {
        for (i, &ci) in kept.iter().enumerate() {
            a[i * dim + k] = sum[ci];
            a[k * dim + i] = sum[ci];
        }
        a[k * dim + k] = m.tokens.max(1.0);
    }
    // The right-hand side: W·[H_·K  s] + [C_·K  Σδ] + λ·[W_K  0], rows × dim.
    let scale = gap_scale(m, gap);
    let wh = times_h(w, rows, m);
    let mut b = vec![0f64; rows * dim];
    for r in 0..rows {
        for (j, &cj) in kept.iter().enumerate() {
            let cross = gap.map_or(0.0, |g| scale * g.cross[r * n + cj] as f64);
            b[r * dim + j] = wh[r * n + cj] + cross + lambda * w[r * n + cj] as f64;
        }
        if with_bias {
            let w_s: f64 = w[r * n..(r + 1) * n].iter().zip(&sum).map(|(&x, &s)| x as f64 * s).sum();
            b[r * dim + k] = w_s + gap.map_or(0.0, |g| scale * g.sum[r]);
        }
    }
    let x = solve_spd_right(&a, dim, &b, rows)?;
    let weight = (0..rows * k).map(|i| x[(i / k) * dim + i % k] as f32).collect();
    let bias_delta = with_bias.then(|| (0..rows).map(|r| x[r * dim + k] as f32).collect());
    Ok(Refit { weight, bias_delta })
}

/// The factor that puts a gap's sums on the moments' token count: the gap pass may have read
/// other chunks than a reused calibration file did (the same text and count give exactly 1).
fn gap_scale(m: &InputMoments, gap: Option<&GapMoments>) -> f64 {
    gap.filter(|g| g.tokens > 0).map_or(1.0, |g| m.tokens / g.tokens as f64)
}

/// A gap's moments must be against this projection: `rows` outputs, `n` inputs.
fn check_gap(gap: Option<&GapMoments>, rows: usize, n: usize) -> Result<()> {
    match gap {
        Some(g) if g.rows != rows || g.n != n || g.cross.len() != rows * n => bail!(
            "the moments of the gap after block {} are {}×{}, its down projection is {rows}×{n}",
            g.gap.kept,
            g.rows,
            g.n
        ),
        _ => Ok(()),
    }
}

/// The relative output errors ‖Y − (W'·X_K + b')‖² / ‖Y‖² of refits (the plain selection with no
/// bias is the error of not healing), from the moments alone: the target Y is the teacher's W·X,
/// plus δ after a gap of dropped blocks. ‖Y‖² is computed once for all of them.
pub fn relative_errors(
    w: &[f32],
    rows: usize,
    m: &InputMoments,
    kept: &[usize],
    fits: &[&Refit],
    gap: Option<&GapMoments>,
) -> Vec<f64> {
    let n = m.n;
    let k = kept.len();
    if check_gap(gap, rows, n).is_err() {
        return vec![f64::NAN; fits.len()];
    }
    let sum: Vec<f64> = m.mean.iter().map(|&v| v * m.tokens).collect();
    let scale = gap_scale(m, gap);
    let cross = |r: usize| -> Vec<f64> {
        gap.map_or(vec![], |g| g.cross[r * n..(r + 1) * n].iter().map(|&v| scale * v as f64).collect())
    };
    // ‖Y‖² = Σ_r w_r·H·w_r (+ 2·w_r·C_r + Σ‖δ‖² after a gap).
    let wh = times_h(w, rows, m);
    let mut den = gap.map_or(0.0, |g| scale * g.sq);
    for r in 0..rows {
        let wr = &w[r * n..(r + 1) * n];
        den += dot32(wr, &wh[r * n..(r + 1) * n]);
        if gap.is_some() {
            den += 2.0 * dot32(wr, &cross(r));
        }
    }
    fits.iter()
        .map(|fit| {
            // The difference as one linear map of [x; 1]: D = [W − scatter(W'), −b']; per row the
            // residual is d·x + c + δ, its square summed over the tokens from the moments.
            let mut d: Vec<f32> = w.to_vec();
            for r in 0..rows {
                for (j, &c) in kept.iter().enumerate() {
                    d[r * n + c] -= fit.weight[r * k + j];
                }
            }
            let dh = times_h(&d, rows, m);
            let mut num = gap.map_or(0.0, |g| scale * g.sq);
            for r in 0..rows {
                let dr = &d[r * n..(r + 1) * n];
                let c = fit.bias_delta.as_ref().map_or(0.0, |b| -(b[r] as f64));
                num += dot32(dr, &dh[r * n..(r + 1) * n]) + 2.0 * c * dot32(dr, &sum) + c * c * m.tokens;
                if let Some(g) = gap {
                    num += 2.0 * dot32(dr, &cross(r)) + 2.0 * c * scale * g.sum[r];
                }
            }
            if den > 0.0 {
                (num / den).max(0.0)
            } else {
                0.0
            }
        })
        .collect()
}

/// `a·H` (rows × n) for `a` rows × n in f32: one blocked product instead of a scalar loop.
fn times_h(a: &[f32], rows: usize, m: &InputMoments) -> Vec<f64> {
    let n = m.n;
    let a: Vec<f64> = a.iter().map(|&v| v as f64).collect();
    let mut out = vec![0f64; rows * n];
    gemm(rows, n, n, 1.0, &a, n, &m.xtx, n, &mut out, n);
    out
}

fn dot32(a: &[f32], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(&x, y)| x as f64 * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::XorShift64 as Rng;

    /// Moments of `t` random correlated inputs of width `n` (with a non-zero mean).
    fn moments(n: usize, t: usize, seed: u64) -> InputMoments {
        let mut rng = Rng::new(seed);
        let xs: Vec<Vec<f64>> = (0..t)
            .map(|_| {
                let z: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
                (0..n).map(|i| z[i] + 0.5 * z[(i + 1) % n] + 0.3).collect()
            })
            .collect();
        let mut xtx = vec![0f64; n * n];
        let mut sum = vec![0f64; n];
        for x in &xs {
            for i in 0..n {
                sum[i] += x[i];
                for j in 0..n {
                    xtx[i * n + j] += x[i] * x[j];
                }
            }
        }
        let mean = sum.iter().map(|s| s / t as f64).collect();
        InputMoments { owner: "x".into(), n, xtx, mean, tokens: t as f64 }
    }

    #[test]
    fn refit_lowers_the_output_error_and_the_bias_lowers_it_further() {
        let (n, rows) = (12, 5);
        let m = moments(n, 400, 3);
        let mut rng = Rng::new(9);
        let w: Vec<f32> = (0..rows * n).map(|_| rng.normal() as f32).collect();
        let kept = [0, 2, 3, 5, 7, 8, 11];
        let plain = Refit {
            weight: (0..rows).flat_map(|r| kept.iter().map(move |&c| (r, c))).map(|(r, c)| w[r * n + c]).collect(),
            bias_delta: None,
        };
        let healed = refit_kept_inputs(&w, rows, &m, &kept, false, None).unwrap();
        let with_bias = refit_kept_inputs(&w, rows, &m, &kept, true, None).unwrap();
        let e = |f: &Refit| relative_errors(&w, rows, &m, &kept, &[f], None)[0];
        assert!(e(&healed) < 0.7 * e(&plain), "{} vs {}", e(&healed), e(&plain));
        assert!(e(&with_bias) < e(&healed), "{} vs {}", e(&with_bias), e(&healed));
    }

    #[test]
    fn all_inputs_kept_is_the_identity_up_to_the_ridge() {
        let (n, rows) = (8, 3);
        let m = moments(n, 300, 5);
        let w: Vec<f32> = (0..rows * n).map(|i| (i as f32 * 0.37).sin()).collect();
        let kept: Vec<usize> = (0..n).collect();
        let fit = refit_kept_inputs(&w, rows, &m, &kept, true, None).unwrap();
        for (a, b) in fit.weight.iter().zip(&w) {
            assert!((a - b).abs() < 0.05, "{a} vs {b}");
        }
    }

    #[test]
    fn bad_subsets_are_errors() {
        let m = moments(4, 10, 1);
        let w = vec![0f32; 8];
        assert!(refit_kept_inputs(&w, 2, &m, &[1, 1], false, None).is_err());
        assert!(refit_kept_inputs(&w, 2, &m, &[4], false, None).is_err());
        assert!(refit_kept_inputs(&w, 3, &m, &[0], false, None).is_err());
    }
}

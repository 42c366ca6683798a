//! GPTQ, SparseGPT and healing against independent f64 implementations written here.
//!
//! The references follow the papers' algorithms in their plainest form: H⁻¹ by Gauss–Jordan
//! elimination and its upper Cholesky factor by the textbook recurrence (microscale inverts
//! through a reversed Cholesky factor), and no lazy batches (every fixed column's error reaches
//! every later column at once — the same arithmetic the lazy form regroups). Block scales come
//! from ggml's own quantizer (`ggml_quantize_chunk`, the oracle) and results are decoded by
//! ggml's `to_float`. Then each method must beat what it compensates for on ‖W·X − Ŵ·X‖²:
//! SparseGPT against magnitude and Wanda masks, GPTQ against round to nearest, healing against
//! the plain selection.

use crate::common;

use common::ggml;
use microscale::calib::gaps::{Gap, GapMoments};
use microscale::calib::moments::InputMoments;
use microscale::prune::heal::{refit_kept_inputs, relative_errors, Refit, DAMPING as HEAL_DAMPING, GAP_DAMPING};
use microscale::prune::sparsegpt::SparseGptMask;
use microscale::prune::unstructured::{prune_row, NM};
use microscale::quant::gptq::{compensate, Grid, InverseHessian, MaskRule, DAMPING};
use microscale::quant::GgmlType;
use microscale::util::rng::XorShift64;

/// A random layer: weights, and H = X·Xᵀ of inputs whose channels are correlated, of unequal
/// scales, with a few large outlier channels (as activations are), and two dead channels.
struct Layer {
    rows: usize,
    cols: usize,
    w: Vec<f32>,
    x: Vec<Vec<f64>>,
    h: Vec<f64>,
}

fn layer(rows: usize, cols: usize, tokens: usize, seed: u64) -> Layer {
    let mut rng = XorShift64::new(seed);
    let scale: Vec<f64> = (0..cols)
        .map(|j| match j {
            3 | 77 => 0.0,
            _ if j % 41 == 7 => 6.0,
            _ => 0.3 + rng.next_f32() as f64,
        })
        .collect();
    let x: Vec<Vec<f64>> = (0..tokens)
        .map(|_| {
            let z: Vec<f64> = (0..cols).map(|_| rng.normal()).collect();
            (0..cols).map(|j| scale[j] * (z[j] + 0.6 * z[(j + 1) % cols] + 0.2)).collect()
        })
        .collect();
    let mut h = vec![0f64; cols * cols];
    for xt in &x {
        for i in 0..cols {
            for j in 0..cols {
                h[i * cols + j] += xt[i] * xt[j];
            }
        }
    }
    let w = (0..rows * cols).map(|_| (rng.normal() * 0.05) as f32).collect();
    Layer { rows, cols, w, x, h }
}

/// ‖(W − Ŵ)·X‖² over the layer's tokens, directly from the inputs.
fn output_error(l: &Layer, w_hat: &[f64]) -> f64 {
    let mut e = 0.0;
    for xt in &l.x {
        for r in 0..l.rows {
            let d: f64 = (0..l.cols).map(|j| (l.w[r * l.cols + j] as f64 - w_hat[r * l.cols + j]) * xt[j]).sum();
            e += d * d;
        }
    }
    e
}

/// The damped H the papers invert: dead inputs get a unit diagonal, then 1% of the mean diagonal.
fn damped(h: &[f64], n: usize) -> Vec<f64> {
    let mut h = h.to_vec();
    for i in 0..n {
        if h[i * n + i] == 0.0 {
            h[i * n + i] = 1.0;
        }
    }
    let mean = (0..n).map(|i| h[i * n + i]).sum::<f64>() / n as f64;
    for i in 0..n {
        h[i * n + i] += DAMPING * mean;
    }
    h
}

/// A⁻¹ by Gauss–Jordan elimination with partial pivoting.
fn inverse(a: &[f64], n: usize) -> Vec<f64> {
    let mut m = a.to_vec();
    let mut inv: Vec<f64> = (0..n * n).map(|k| (k / n == k % n) as u8 as f64).collect();
    for c in 0..n {
        let p = (c..n).max_by(|&i, &j| m[i * n + c].abs().total_cmp(&m[j * n + c].abs())).unwrap();
        for k in 0..n {
            m.swap(c * n + k, p * n + k);
            inv.swap(c * n + k, p * n + k);
        }
        let d = m[c * n + c];
        for k in 0..n {
            m[c * n + k] /= d;
            inv[c * n + k] /= d;
        }
        for r in (0..n).filter(|&r| r != c) {
            let f = m[r * n + c];
            if f != 0.0 {
                for k in 0..n {
                    m[r * n + k] -= f * m[c * n + k];
                    inv[r * n + k] -= f * inv[c * n + k];
                }
            }
        }
    }
    inv
}

/// U upper triangular with Uᵀ·U = A (the textbook Cholesky–Banachiewicz recurrence on rows of U).
fn upper_cholesky(a: &[f64], n: usize) -> Vec<f64> {
    let mut u = vec![0f64; n * n];
    for i in 0..n {
        let s: f64 = (0..i).map(|k| u[k * n + i] * u[k * n + i]).sum();
        u[i * n + i] = (a[i * n + i] - s).sqrt();
        for j in i + 1..n {
            let s: f64 = (0..i).map(|k| u[k * n + i] * u[k * n + j]).sum();
            u[i * n + j] = (a[i * n + j] - s) / u[i * n + i];
        }
    }
    u
}

/// Where a block's levels decode to, for the simple formats the reference rounds itself:
/// Q8_0 `d·q` (q in −128..127), Q4_0 `d·(L − 8)`, Q4_1 `d·L + m` (L in 0..15).
fn block_grid(ty: GgmlType, block: &[u8]) -> (f64, f64, i32, i32) {
    let f16 = |b: &[u8]| half::f16::from_le_bytes([b[0], b[1]]).to_f64();
    match ty {
        GgmlType::Q8_0 => (f16(&block[0..2]), 0.0, -128, 127),
        GgmlType::Q4_0 => (f16(&block[0..2]), -8.0 * f16(&block[0..2]), 0, 15),
        GgmlType::Q4_1 => (f16(&block[0..2]), f16(&block[2..4]), 0, 15),
        _ => unreachable!(),
    }
}

fn nearest(x: f64, (a, c, lo, hi): (f64, f64, i32, i32)) -> f64 {
    if a == 0.0 {
        return c;
    }
    a * ((x - c) / a).round().clamp(lo as f64, hi as f64) + c
}

/// What the reference prunes.
#[derive(Clone, Copy)]
enum RefMask {
    None,
    /// SparseGPT's adaptive selection: before every 128 columns, each row's lowest w²/U_cc² of the
    /// batch (exactly round(R·count), ties by position).
    Unstructured(f64),
    NM(NM),
}

/// The papers' sweep, in natural column order, optionally rounding onto `ty`'s grid (scales
/// chosen by ggml on the row as it stands when the sweep reaches a block). Returns Ŵ.
fn reference_sweep(l: &Layer, ty: Option<GgmlType>, mask: RefMask) -> (Vec<f64>, Vec<bool>) {
    let (rows, n) = (l.rows, l.cols);
    let u = upper_cholesky(&inverse(&damped(&l.h, n), n), n);
    let mut w: Vec<f64> = l.w.iter().map(|&x| x as f64).collect();
    let mut pruned = vec![false; rows * n];
    let bs = ty.map_or(1, |t| t.block_size());
    let mut grid = vec![(0.0, 0.0, 0, 0); rows];
    for i in 0..n {
        match mask {
            RefMask::Unstructured(ratio) if i % 128 == 0 => {
                let end = (i + 128).min(n);
                for r in 0..rows {
                    let mut cand: Vec<(f64, usize)> =
                        (i..end).map(|c| (w[r * n + c].powi(2) / u[c * n + c].powi(2), c)).collect();
                    cand.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                    let take = (ratio * cand.len() as f64).round() as usize;
                    for &(_, c) in &cand[..take] {
                        pruned[r * n + c] = true;
                    }
                }
            }
            RefMask::NM(nm) if i % nm.group == 0 => {
                for r in 0..rows {
                    let mut g: Vec<usize> = (i..i + nm.group).collect();
                    g.sort_by(|&a, &b| {
                        let s = |c: usize| w[r * n + c].powi(2) / u[c * n + c].powi(2);
                        s(a).total_cmp(&s(b)).then(a.cmp(&b))
                    });
                    for &c in &g[..nm.group - nm.keep] {
                        pruned[r * n + c] = true;
                    }
                }
            }
            _ => {}
        }
        if let Some(t) = ty.filter(|_| i % bs == 0) {
            for (r, g) in grid.iter_mut().enumerate() {
                let row: Vec<f32> = (0..n).map(|c| if pruned[r * n + c] { 0.0 } else { w[r * n + c] as f32 }).collect();
                let bytes = ggml::quantize(t, &row[i..i + bs], bs, None);
                *g = block_grid(t, &bytes);
            }
        }
        for r in 0..rows {
            let x = w[r * n + i];
            let target = if pruned[r * n + i] { 0.0 } else { x };
            let q = if ty.is_some() { nearest(target, grid[r]) } else { target };
            let e = (x - q) / u[i * n + i];
            for k in i + 1..n {
                w[r * n + k] -= e * u[i * n + k];
            }
            w[r * n + i] = q;
        }
    }
    (w, pruned)
}

/// GPTQ in act order, the reference way: every block's grid is ggml's choice on the original row,
/// and columns are fixed by decreasing H diagonal.
fn reference_act_order(l: &Layer, ty: GgmlType) -> Vec<f64> {
    let (rows, n) = (l.rows, l.cols);
    let hd = damped(&l.h, n);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| hd[b * n + b].total_cmp(&hd[a * n + a]).then(a.cmp(&b)));
    let hp: Vec<f64> = (0..n * n).map(|k| hd[order[k / n] * n + order[k % n]]).collect();
    let u = upper_cholesky(&inverse(&hp, n), n);
    let bs = ty.block_size();
    let grids: Vec<Vec<(f64, f64, i32, i32)>> = (0..rows)
        .map(|r| {
            let bytes = ggml::quantize(ty, &l.w[r * n..(r + 1) * n], n, None);
            bytes.chunks(ty.type_size()).map(|b| block_grid(ty, b)).collect()
        })
        .collect();
    let mut wp: Vec<f64> = (0..rows * n).map(|k| l.w[(k / n) * n + order[k % n]] as f64).collect();
    for i in 0..n {
        for r in 0..rows {
            let x = wp[r * n + i];
            let q = nearest(x, grids[r][order[i] / bs]);
            let e = (x - q) / u[i * n + i];
            for k in i + 1..n {
                wp[r * n + k] -= e * u[i * n + k];
            }
            wp[r * n + i] = q;
        }
    }
    let mut w = vec![0f64; rows * n];
    for r in 0..rows {
        for i in 0..n {
            w[r * n + order[i]] = wp[r * n + i];
        }
    }
    w
}

fn assert_close(got: &[f32], want: &[f64], what: &str) {
    let scale = want.iter().fold(0f64, |m, x| m.max(x.abs()));
    for (k, (&g, &e)) in got.iter().zip(want).enumerate() {
        assert!((g as f64 - e).abs() <= 1e-6 * scale.max(1e-30), "{what}: element {k}: {g} vs {e}");
    }
}

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn run(
    l: &Layer,
    act_order: bool,
    grid: Option<GgmlType>,
    mask: Option<&SparseGptMask>,
) -> microscale::quant::gptq::Compensated {
    let hinv = InverseHessian::with_order(&l.h, l.cols, DAMPING, act_order).unwrap();
    let grid = grid.map(|ty| Grid { ty, weights: None });
    compensate(&l.w, l.rows, l.cols, &hinv, grid, mask.map(|m| m as &dyn MaskRule)).unwrap()
}

/// Wanda's and magnitude's masks on the same layer (Wanda's norms: √diag H).
fn plain_mask(l: &Layer, ratio: f64, nm: Option<NM>, wanda: bool) -> Vec<f64> {
    let norms: Vec<f32> = (0..l.cols).map(|j| l.h[j * l.cols + j].sqrt() as f32).collect();
    let mut w = l.w.clone();
    for row in w.chunks_mut(l.cols) {
        prune_row(row, ratio, nm, wanda.then_some(&norms[..]));
    }
    to_f64(&w)
}

#[test]
fn sparsegpt_equals_the_reference_and_beats_magnitude_and_wanda() {
    let l = layer(12, 320, 900, 1);
    for (ratio, nm) in [(0.5, None), (0.25, None), (0.7, None), (0.5, Some(NM { keep: 2, group: 4 }))] {
        let what = format!("SparseGPT {ratio} {nm:?}");
        let mask = SparseGptMask::new(ratio, nm);
        let got = run(&l, false, None, Some(&mask));
        let (want, want_mask) = reference_sweep(&l, None, nm.map_or(RefMask::Unstructured(ratio), RefMask::NM));
        let got_mask: Vec<bool> = got.values.iter().map(|&x| x == 0.0).collect();
        assert_eq!(got_mask, want_mask, "{what}: masks differ");
        assert_eq!(got.pruned, want_mask.iter().filter(|&&p| p).count(), "{what}");
        assert_close(&got.values, &want, &what);
        let e = output_error(&l, &to_f64(&got.values));
        let magnitude = output_error(&l, &plain_mask(&l, ratio, nm, false));
        let wanda = output_error(&l, &plain_mask(&l, ratio, nm, true));
        assert!(e < wanda && wanda < magnitude, "{what}: {e} vs Wanda {wanda} vs magnitude {magnitude}");
    }
}

#[test]
fn gptq_equals_the_reference_on_ggml_grids_and_beats_round_to_nearest() {
    let l = layer(10, 256, 800, 2);
    for ty in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1] {
        for act_order in [false, true] {
            let what = format!("GPTQ {ty} act order {act_order}");
            let got = run(&l, act_order, Some(ty), None);
            let bytes = got.bytes.as_ref().unwrap();
            assert_eq!(ggml::dequantize(ty, bytes), got.values, "{what}: ggml's to_float decodes the bytes otherwise");
            let want =
                if act_order { reference_act_order(&l, ty) } else { reference_sweep(&l, Some(ty), RefMask::None).0 };
            assert_close(&got.values, &want, &what);
            let rtn = to_f64(&ggml::dequantize(ty, &ggml::quantize(ty, &l.w, l.cols, None)));
            let (e, e_rtn) = (output_error(&l, &to_f64(&got.values)), output_error(&l, &rtn));
            assert!(e < 0.8 * e_rtn, "{what}: {e} vs round to nearest {e_rtn}");
        }
    }
    // SparseGPT and GPTQ in one pass: pruned weights are rounded from 0.
    let mask = SparseGptMask::new(0.5, None);
    let got = run(&l, false, Some(GgmlType::Q8_0), Some(&mask));
    let (want, _) = reference_sweep(&l, Some(GgmlType::Q8_0), RefMask::Unstructured(0.5));
    assert_close(&got.values, &want, "SparseGPT + GPTQ Q8_0");
}

/// K-quant grids (super-blocks of 256, scales chosen with the importance weights): the bytes
/// are what ggml's `to_float` decodes to the returned values, each block's scales are ggml's own
/// choice for some row (so only the levels differ from ggml's), and the error is below ggml's
/// round to nearest with the same weights.
#[test]
fn gptq_on_k_quants_decodes_with_ggml_and_beats_ggml_rounding() {
    let l = layer(6, 512, 1200, 3);
    let qw: Vec<f32> = (0..l.cols).map(|j| l.h[j * l.cols + j] as f32 / 1200.0).collect();
    for ty in [GgmlType::Q2K, GgmlType::Q3K, GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K] {
        for act_order in [false, true] {
            let what = format!("GPTQ {ty} act order {act_order}");
            let hinv = InverseHessian::with_order(&l.h, l.cols, DAMPING, act_order).unwrap();
            let got = compensate(&l.w, l.rows, l.cols, &hinv, Some(Grid { ty, weights: Some(&qw) }), None).unwrap();
            let bytes = got.bytes.as_ref().unwrap();
            assert_eq!(ggml::dequantize(ty, bytes), got.values, "{what}: ggml's to_float decodes the bytes otherwise");
            let rtn = to_f64(&ggml::dequantize(ty, &ggml::quantize(ty, &l.w, l.cols, Some(&qw))));
            let (e, e_rtn) = (output_error(&l, &to_f64(&got.values)), output_error(&l, &rtn));
            assert!(e < 0.9 * e_rtn, "{what}: {e} vs ggml's rounding {e_rtn}");
        }
    }
}

/// The moments of a layer's inputs as calibration stores them.
fn moments(l: &Layer) -> InputMoments {
    let t = l.x.len() as f64;
    let mean = (0..l.cols).map(|j| l.x.iter().map(|x| x[j]).sum::<f64>() / t).collect();
    InputMoments { owner: "x".into(), n: l.cols, xtx: l.h.clone(), mean, tokens: t }
}

/// What a gap of dropped blocks would add to a layer's output, per token: partly a linear function
/// of the layer's input (what the refit can absorb), partly not.
fn gap_deltas(l: &Layer, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = XorShift64::new(seed);
    let g: Vec<f64> = (0..l.rows * l.cols).map(|_| 0.3 * rng.normal()).collect();
    l.x.iter()
        .map(|x| {
            (0..l.rows)
                .map(|r| (0..l.cols).map(|j| g[r * l.cols + j] * x[j]).sum::<f64>().tanh() + 0.2 + 0.1 * rng.normal())
                .collect()
        })
        .collect()
}

/// The gap's moments as the gap pass collects them (f32 cross moment).
fn gap_moments(l: &Layer, deltas: &[Vec<f64>]) -> GapMoments {
    let mut cross = vec![0f64; l.rows * l.cols];
    for (x, d) in l.x.iter().zip(deltas) {
        for r in 0..l.rows {
            for j in 0..l.cols {
                cross[r * l.cols + j] += d[r] * x[j];
            }
        }
    }
    GapMoments {
        gap: Gap { kept: 0, last: 1 },
        rows: l.rows,
        n: l.cols,
        cross: cross.iter().map(|&v| v as f32).collect(),
        sum: (0..l.rows).map(|r| deltas.iter().map(|d| d[r]).sum()).collect(),
        sq: deltas.iter().flatten().map(|v| v * v).sum(),
        tokens: deltas.len() as u64,
    }
}

/// Healing's refit against least squares on the tokens themselves: the same ridge problem
/// (pulled towards W_K) solved as an explicit (T + k)×k regression by Gauss–Jordan on its normal
/// equations built from X, not from the stored moments — for narrowed inputs (the targets are the
/// teacher's W·x) and for a gap of dropped blocks after the layer (targets W·x + δ, all inputs
/// or a narrowed set). The output error computed from the moments equals the one on the tokens.
#[test]
fn healing_equals_least_squares_on_the_tokens() {
    let l = layer(7, 48, 500, 4);
    let m = moments(&l);
    let deltas = gap_deltas(&l, 8);
    let gm = gap_moments(&l, &deltas);
    let narrowed: Vec<usize> = (0..l.cols).filter(|c| c % 3 != 1).collect();
    let all: Vec<usize> = (0..l.cols).collect();
    for (kept, gap) in [(&narrowed, None), (&narrowed, Some(&gm)), (&all, Some(&gm))] {
        for with_bias in [false, true] {
            let what = format!("{} kept, gap {}, bias {with_bias}", kept.len(), gap.is_some());
            let fit = refit_kept_inputs(&l.w, l.rows, &m, kept, with_bias, gap).unwrap();
            let k = kept.len();
            let dim = k + with_bias as usize;
            let target = |t: usize, x: &[f64], r: usize| -> f64 {
                let y: f64 = (0..l.cols).map(|j| l.w[r * l.cols + j] as f64 * x[j]).sum();
                y + if gap.is_some() { deltas[t][r] } else { 0.0 }
            };
            // Design rows z = [x_K; 1].
            let mut a = vec![0f64; dim * dim];
            let mut b = vec![0f64; l.rows * dim];
            for (t, x) in l.x.iter().enumerate() {
                let mut z: Vec<f64> = kept.iter().map(|&c| x[c]).collect();
                if with_bias {
                    z.push(1.0);
                }
                for i in 0..dim {
                    for j in 0..dim {
                        a[i * dim + j] += z[i] * z[j];
                    }
                }
                for r in 0..l.rows {
                    let y = target(t, x, r);
                    for i in 0..dim {
                        b[r * dim + i] += y * z[i];
                    }
                }
            }
            let damping = if gap.is_some() { GAP_DAMPING } else { HEAL_DAMPING };
            let lambda = damping * (0..k).map(|i| a[i * dim + i]).sum::<f64>() / k as f64;
            // The ridge pulls towards the plain selection W_K: λ·W_K joins the right-hand side.
            for i in 0..k {
                a[i * dim + i] += lambda;
                for r in 0..l.rows {
                    b[r * dim + i] += lambda * l.w[r * l.cols + kept[i]] as f64;
                }
            }
            let ainv = inverse(&a, dim);
            let solve = |r: usize, i: usize| (0..dim).map(|j| b[r * dim + j] * ainv[j * dim + i]).sum::<f64>();
            let want_w: Vec<f64> = (0..l.rows * k).map(|q| solve(q / k, q % k)).collect();
            assert_close(&fit.weight, &want_w, &format!("healed weights ({what})"));
            match (&fit.bias_delta, with_bias) {
                (Some(bd), true) => assert_close(bd, &(0..l.rows).map(|r| solve(r, k)).collect::<Vec<_>>(), "bias"),
                (None, false) => {}
                _ => panic!("a bias delta exactly when asked for"),
            }
            // On the tokens: the error relative to the target, against keeping the selected weights.
            let error = |wk: &[f32], bias: Option<&[f32]>| -> f64 {
                let (mut e, mut norm) = (0.0, 0.0);
                for (t, x) in l.x.iter().enumerate() {
                    for r in 0..l.rows {
                        let y = target(t, x, r);
                        let yh: f64 = kept.iter().enumerate().map(|(i, &c)| wk[r * k + i] as f64 * x[c]).sum::<f64>()
                            + bias.map_or(0.0, |b| b[r] as f64);
                        e += (y - yh).powi(2);
                        norm += y * y;
                    }
                }
                e / norm
            };
            let plain_w: Vec<f32> =
                (0..l.rows).flat_map(|r| kept.iter().map(move |&c| (r, c))).map(|(r, c)| l.w[r * l.cols + c]).collect();
            let plain = Refit { weight: plain_w, bias_delta: None };
            let (healed, unhealed) = (error(&fit.weight, fit.bias_delta.as_deref()), error(&plain.weight, None));
            assert!(healed < 0.7 * unhealed, "{what}: healed {healed} vs unhealed {unhealed}");
            for (refit, on_tokens) in [(&fit, healed), (&plain, unhealed)] {
                let from_moments = relative_errors(&l.w, l.rows, &m, kept, &[refit], gap)[0];
                assert!(
                    (from_moments - on_tokens).abs() < 1e-5 * (1.0 + on_tokens),
                    "{what}: error from the moments {from_moments} vs on the tokens {on_tokens}"
                );
            }
        }
    }
}

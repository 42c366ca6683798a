//! Size budgets (`--target-size`, `--target-bpw`): choose every tensor's type from a ladder of
//! types so that the file fits the budget and the expected loss is smallest.
//!
//! The loss of a tensor in a type is its importance-weighted squared quantization error,
//! `Σ_rows Σ_j w_j (x_j − q(x)_j)²` with `w_j` the mean squared activation of input channel `j`
//! (the imatrix): the expected squared error of that layer's output, `‖(W − Q)x‖²`, under the
//! usual diagonal approximation (the same objective ggml's imatrix quantizers minimise within a
//! tensor). Summed over tensors and minimised for the budget by a Lagrangian relaxation (for a
//! price λ on bytes each tensor independently takes the type minimising `loss + λ·bytes`; λ is
//! bisected to the cheapest price that fits), then a greedy pass spends what is left on the
//! upgrades with the best loss reduction per byte.

use super::GgmlType;
use crate::util::mem::format_size;
use anyhow::{bail, Result};

/// One tensor's options: each candidate type with the bytes it takes and the loss it causes.
#[derive(Clone, Debug)]
pub struct TensorOptions {
    pub name: String,
    pub candidates: Vec<Candidate>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    pub ty: GgmlType,
    pub bytes: u64,
    pub loss: f64,
}

/// The types a budget may choose from: every CPU-supported quantized type microscale writes and
/// F16, cheapest first. The lowest-bit IQ types need an importance matrix (as in llama.cpp), so
/// they are candidates only with one; the ternary types are not (they suit only ternary-trained
/// models).
pub fn ladder(has_imatrix: bool) -> Vec<GgmlType> {
    use GgmlType::*;
    let mut l = vec![];
    if has_imatrix {
        l.extend([IQ2XXS, IQ2XS, IQ2S, IQ3XXS]);
    }
    l.extend([Q2K, IQ3S, Q3K, IQ4XS, IQ4NL, Q4_0, Q4K, Q4_1, Q5_0, Q5K, Q5_1, Q6K, Q8_0, F16]);
    l
}

/// The allocation for a budget of `budget` bytes of tensor data: one candidate index per tensor.
pub fn allocate(tensors: &[TensorOptions], budget: u64) -> Result<Vec<usize>> {
    // A NaN loss compares as neither better nor worse than anything: the search would never
    // settle. It comes from NaN or infinite weights or importance statistics.
    for t in tensors {
        if t.candidates.is_empty() {
            bail!("tensor {}: no type to choose from", t.name);
        }
        if let Some(c) = t.candidates.iter().find(|c| !(c.loss.is_finite() && c.loss >= 0.0)) {
            bail!(
                "tensor {}: its quantization loss in {} is {} (NaN or infinite weights or importance statistics)",
                t.name,
                c.ty.name(),
                c.loss
            );
        }
    }
    let min: u64 = tensors.iter().map(|t| t.candidates.iter().map(|c| c.bytes).min().unwrap_or(0)).sum();
    if min > budget {
        bail!(
            "the budget of {} cannot be met: even the smallest type of every tensor takes {}",
            format_size(budget),
            format_size(min)
        );
    }
    let pick = |lambda: f64| -> Vec<usize> {
        tensors
            .iter()
            .map(|t| {
                (0..t.candidates.len())
                    .min_by(|&a, &b| {
                        let cost = |i: usize| t.candidates[i].loss + lambda * t.candidates[i].bytes as f64;
                        cost(a).total_cmp(&cost(b)).then(t.candidates[a].bytes.cmp(&t.candidates[b].bytes))
                    })
                    .unwrap_or(0)
            })
            .collect()
    };
    let bytes = |choice: &[usize]| -> u64 { choice.iter().zip(tensors).map(|(&i, t)| t.candidates[i].bytes).sum() };
    // A price high enough that every tensor takes its smallest type.
    let mut hi = 1.0f64;
    while bytes(&pick(hi)) > budget {
        hi *= 2.0;
        if hi > 1e300 {
            break;
        }
    }
    let mut lo = 0.0f64;
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if bytes(&pick(mid)) > budget {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let mut choice = pick(hi);
    if bytes(&choice) > budget {
        // Unreachable in exact arithmetic; fall back to the smallest types.
        choice = tensors.iter().map(smallest).collect();
    }
    let left = budget - bytes(&choice);
    spend_the_rest(tensors, &mut choice, left);
    Ok(choice)
}

fn smallest(t: &TensorOptions) -> usize {
    (0..t.candidates.len()).min_by_key(|&i| t.candidates[i].bytes).unwrap_or(0)
}

/// Greedy: while some upgrade fits in what is left, take the one removing the most loss per byte.
/// Each step lowers one tensor's loss strictly, so no tensor takes a candidate twice: the steps
/// are bounded by the number of candidates.
fn spend_the_rest(tensors: &[TensorOptions], choice: &mut [usize], mut left: u64) {
    let max_steps: usize = tensors.iter().map(|t| t.candidates.len()).sum();
    for _ in 0..max_steps {
        let mut best: Option<(usize, usize, f64)> = None;
        for (ti, t) in tensors.iter().enumerate() {
            let cur = t.candidates[choice[ti]];
            for (ci, c) in t.candidates.iter().enumerate() {
                if c.loss >= cur.loss || c.bytes < cur.bytes || c.bytes - cur.bytes > left {
                    continue;
                }
                let gain = (cur.loss - c.loss) / ((c.bytes - cur.bytes) as f64).max(1.0);
                if best.is_none_or(|(_, _, g)| gain > g) {
                    best = Some((ti, ci, gain));
                }
            }
        }
        let Some((ti, ci, _)) = best else { return };
        left -= tensors[ti].candidates[ci].bytes - tensors[ti].candidates[choice[ti]].bytes;
        choice[ti] = ci;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(name: &str, c: &[(u64, f64)]) -> TensorOptions {
        TensorOptions {
            name: name.into(),
            candidates: c.iter().map(|&(bytes, loss)| Candidate { ty: GgmlType::Q4_0, bytes, loss }).collect(),
        }
    }

    /// Every combination, for a small problem: the optimum the allocation must reach or approach.
    fn brute_force(t: &[TensorOptions], budget: u64) -> f64 {
        fn go(t: &[TensorOptions], budget: u64) -> f64 {
            let Some((first, rest)) = t.split_first() else { return 0.0 };
            first
                .candidates
                .iter()
                .filter(|c| c.bytes <= budget)
                .map(|c| c.loss + go(rest, budget - c.bytes))
                .fold(f64::INFINITY, f64::min)
        }
        go(t, budget)
    }

    #[test]
    fn stays_within_the_budget_and_is_near_the_exact_optimum() {
        let mut rng = crate::util::rng::XorShift64::new(12345);
        let mut next = || rng.below(1000) as f64 / 1000.0;
        for case in 0..40 {
            let t: Vec<TensorOptions> = (0..5)
                .map(|i| {
                    let scale = 1.0 + 10.0 * next();
                    let size = 100 + (next() * 400.0) as u64;
                    let c: Vec<(u64, f64)> =
                        (1..=4).map(|b| (size * b, scale * (0.25f64).powi(b as i32) * (1.0 + 0.2 * next()))).collect();
                    opts(&format!("t{i}"), &c)
                })
                .collect();
            let min: u64 = t.iter().map(|x| x.candidates[0].bytes).sum();
            let max: u64 = t.iter().map(|x| x.candidates[3].bytes).sum();
            let budget = min + (max - min) * (case as u64 % 10) / 10;
            let choice = allocate(&t, budget).unwrap();
            let used: u64 = choice.iter().zip(&t).map(|(&i, x)| x.candidates[i].bytes).sum();
            let loss: f64 = choice.iter().zip(&t).map(|(&i, x)| x.candidates[i].loss).sum();
            assert!(used <= budget, "case {case}: {used} > {budget}");
            let best = brute_force(&t, budget);
            assert!(loss <= best * 1.5 + 1e-12, "case {case}: loss {loss} vs optimum {best}");
        }
    }

    #[test]
    fn a_non_finite_loss_is_an_error_not_an_endless_search() {
        for bad in [f64::NAN, f64::INFINITY, -1.0] {
            let t = vec![opts("a", &[(100, 1.0), (200, 0.5)]), opts("blk.0.attn_q.weight", &[(100, 1.0), (200, bad)])];
            let e = allocate(&t, 400).unwrap_err().to_string();
            assert!(e.contains("blk.0.attn_q.weight") && e.contains("loss"), "{e}");
        }
    }

    #[test]
    fn an_impossible_budget_is_an_error_naming_the_minimum() {
        let t = vec![opts("a", &[(100, 1.0), (200, 0.5)])];
        let e = allocate(&t, 50).unwrap_err().to_string();
        assert!(e.contains("cannot be met"), "{e}");
        assert_eq!(allocate(&t, 200).unwrap(), vec![1]);
        assert_eq!(allocate(&t, 150).unwrap(), vec![0]);
    }
}

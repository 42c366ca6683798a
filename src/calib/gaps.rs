//! What dropped blocks leave out of the residual stream, for healing the last kept block before
//! each gap: over the calibration tokens of the *unpruned* model, with a_t the input of block
//! l's down projection (l the last kept block before the gap) and δ_t the teacher's residual
//! stream after the gap's last block j minus block l's output (`l_out-j − l_out-l`), the cross
//! moment Σ δ·aᵀ, Σ δ and Σ ‖δ‖² (see `prune::heal` for the refit they feed).
//!
//! A gap's moments depend on which blocks are dropped, so they are collected in their own pass
//! after the plan, held in memory: one n_embd × n_ff matrix per gap (180 MB at 7B in f32).

use crate::engine::raw::{f32_rows, tensor_name, TensorObserver};
use llama_cpp_sys_2 as sys;

/// One gap: blocks `kept + 1 ..= last` are dropped; block `kept` is healed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    pub kept: usize,
    pub last: usize,
}

/// The maximal runs of `dropped` blocks (of `n_layer`) that follow a kept block; a run starting
/// at block 0 has no block before it to heal.
pub fn gaps(dropped: &[usize], n_layer: usize) -> Vec<Gap> {
    let is_dropped = |l: usize| dropped.contains(&l);
    (1..n_layer)
        .filter(|&l| is_dropped(l) && !is_dropped(l - 1))
        .map(|start| {
            let mut last = start;
            while last + 1 < n_layer && is_dropped(last + 1) {
                last += 1;
            }
            Gap { kept: start - 1, last }
        })
        .collect()
}

/// One gap's moments against its kept block's down-projection input.
#[derive(Clone, Debug)]
pub struct GapMoments {
    pub gap: Gap,
    /// Width of the residual stream (the projection's outputs).
    pub rows: usize,
    /// Width of the projection's input.
    pub n: usize,
    /// Σ δ·aᵀ, rows × n, row-major, accumulated in f32 (as the second moments are).
    pub cross: Vec<f32>,
    pub sum: Vec<f64>,
    pub sq: f64,
    pub tokens: u64,
}

/// The observer of the gap pass: per gap, the kept block's down-projection input and its
/// output, held for the current batch until the gap's last block's output arrives.
pub struct GapCollector {
    pub moments: Vec<GapMoments>,
    input: Vec<Option<Vec<f32>>>,
    output: Vec<Option<Vec<f32>>>,
    /// The last gap's last block was seen: the blocks after it need not run.
    done: bool,
}

impl GapCollector {
    pub fn new(gaps: &[Gap]) -> GapCollector {
        GapCollector {
            moments: gaps.iter().map(|&gap| GapMoments::empty(gap)).collect(),
            input: vec![None; gaps.len()],
            output: vec![None; gaps.len()],
            done: false,
        }
    }
}

impl DownAndOutput for GapCollector {
    fn down_input(&mut self, layer: usize, x: &sys::ggml_tensor) {
        let Some(rows) = f32_rows(x) else { return };
        let n = rows.first().map_or(0, |r| r.len());
        for (g, m) in self.moments.iter_mut().enumerate().filter(|(_, m)| m.gap.kept == layer) {
            m.n = n;
            self.input[g] = Some(rows.concat());
        }
    }

    fn block_output(&mut self, layer: usize, t: &sys::ggml_tensor) {
        let Some(rows) = f32_rows(t) else { return };
        let width = rows.first().map_or(0, |r| r.len());
        for g in 0..self.moments.len() {
            let gap = self.moments[g].gap;
            if gap.kept == layer {
                self.output[g] = Some(rows.concat());
            } else if gap.last == layer {
                let (Some(a), Some(out)) = (self.input[g].take(), self.output[g].take()) else { continue };
                let delta: Vec<f32> = rows.concat().iter().zip(&out).map(|(t, o)| t - o).collect();
                self.moments[g].add(&delta, width, &a);
            }
        }
    }
}

impl GapMoments {
    pub fn empty(gap: Gap) -> GapMoments {
        GapMoments { gap, rows: 0, n: 0, cross: vec![], sum: vec![], sq: 0.0, tokens: 0 }
    }

    /// Add one batch: `delta` is tokens × `width`, `a` tokens × n.
    pub(super) fn add(&mut self, delta: &[f32], width: usize, a: &[f32]) {
        let tokens = delta.len() / width.max(1);
        if width == 0 || self.n == 0 || a.len() != tokens * self.n {
            return;
        }
        if self.cross.is_empty() {
            self.rows = width;
            self.cross = vec![0.0; width * self.n];
            self.sum = vec![0.0; width];
        }
        if self.rows != width {
            return;
        }
        for row in delta.chunks_exact(width) {
            for (s, &d) in self.sum.iter_mut().zip(row) {
                *s += d as f64;
                self.sq += d as f64 * d as f64;
            }
        }
        crate::util::linalg::add_cross_f32(delta, a, tokens, width, self.n, &mut self.cross);
        self.tokens += tokens as u64;
    }
}

/// `blk.N.ffn_down.weight` → N.
pub(super) fn down_layer(weight: &str) -> Option<usize> {
    crate::util::tensor_name::split(weight).filter(|(_, rest)| *rest == "ffn_down.weight").map(|(layer, _)| layer)
}

pub(super) fn weight_of(t: &sys::ggml_tensor) -> &str {
    if t.src[0].is_null() {
        ""
    } else {
        tensor_name(unsafe { &*t.src[0] })
    }
}

pub(super) fn output_layer(t: &sys::ggml_tensor) -> Option<usize> {
    tensor_name(t).strip_prefix("l_out-")?.parse().ok()
}

impl TensorObserver for GapCollector {
    fn wants(&mut self, t: &sys::ggml_tensor) -> bool {
        self.done = false;
        let watched = |l: usize| self.moments.iter().any(|m| m.gap.kept == l || m.gap.last == l);
        if t.op == sys::GGML_OP_MUL_MAT {
            return down_layer(weight_of(t)).is_some_and(|l| self.moments.iter().any(|m| m.gap.kept == l));
        }
        output_layer(t).is_some_and(watched)
    }

    fn seen(&mut self, t: &sys::ggml_tensor) {
        route(self, t);
        self.done = is_output_of(t, self.moments.iter().map(|m| m.gap.last).max());
    }

    fn finished(&self) -> bool {
        self.done
    }
}

/// Is `t` the output of block `last` (the last block an observer needs: the graph may stop
/// after it, [`TensorObserver::finished`])?
pub(super) fn is_output_of(t: &sys::ggml_tensor, last: Option<usize>) -> bool {
    t.op != sys::GGML_OP_MUL_MAT && last.is_some() && output_layer(t) == last
}

/// An observer of down projections' inputs and blocks' outputs (the gap and paired passes).
pub(super) trait DownAndOutput {
    fn down_input(&mut self, layer: usize, x: &sys::ggml_tensor);
    fn block_output(&mut self, layer: usize, t: &sys::ggml_tensor);
}

/// Hand a seen tensor to `obs`: a down projection's product as its input, a block's output.
pub(super) fn route(obs: &mut impl DownAndOutput, t: &sys::ggml_tensor) {
    if t.op == sys::GGML_OP_MUL_MAT {
        if let (Some(l), false) = (down_layer(weight_of(t)), t.src[1].is_null()) {
            obs.down_input(l, unsafe { &*t.src[1] });
        }
    } else if let Some(l) = output_layer(t) {
        obs.block_output(l, t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_the_runs_after_a_kept_block() {
        assert_eq!(gaps(&[2, 3, 6], 8), vec![Gap { kept: 1, last: 3 }, Gap { kept: 5, last: 6 }]);
        assert_eq!(gaps(&[0, 1, 5], 6), vec![Gap { kept: 4, last: 5 }], "no block before 0..=1");
        assert_eq!(gaps(&[], 4), vec![]);
    }
}

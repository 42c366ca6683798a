//! SparseGPT (Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be Accurately Pruned
//! in One-Shot", 2023): which weights to prune, by their Optimal Brain Surgeon saliency
//! w²/[H⁻¹]²_cc, chosen as the column sweep of `quant::gptq` reaches them, which then updates the
//! surviving weights to compensate.
//!
//! - Unstructured ratio R: before each lazy batch of columns (128), each row prunes the
//!   round(R·batch) weights of its batch with the lowest saliency ("adaptive mask selection": the
//!   mask follows the weights as they are updated). The paper compares across all rows of the
//!   batch; per output row — Wanda's comparison group, which Sun et al. found matters on LLaMA —
//!   measured better on the default model (50% on Q8_0, 20 windows: KLD 0.795 against 0.889 for
//!   the paper's group and 0.866 for Wanda).
//! - N:M: when the sweep reaches the first column of a group of M, each row prunes the M−N
//!   weights of the group with the lowest saliency.
//!
//! Ties are broken by position, so the mask is deterministic.

use super::unstructured::NM;
use crate::quant::gptq::MaskRule;

/// SparseGPT's mask choice, for `quant::gptq::compensate`.
pub enum SparseGptMask {
    Unstructured(f64),
    NM(NM),
}

impl SparseGptMask {
    pub fn new(ratio: f64, nm: Option<NM>) -> SparseGptMask {
        match nm {
            Some(nm) => SparseGptMask::NM(nm),
            None => SparseGptMask::Unstructured(ratio),
        }
    }
}

/// Mark the `k` lowest scores (ties by position).
fn lowest(scores: &[f64], k: usize, mask: &mut [bool]) {
    if k == 0 {
        return;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.select_nth_unstable_by(k - 1, |&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    for &i in &idx[..k] {
        mask[i] = true;
    }
}

fn saliency(w: f64, d: f64) -> f64 {
    w * w / (d * d)
}

impl MaskRule for SparseGptMask {
    fn batch_mask(
        &self,
        w: &[f64],
        rows: usize,
        cols: usize,
        i1: usize,
        i2: usize,
        u_diag: &[f64],
    ) -> Option<Vec<bool>> {
        let SparseGptMask::Unstructured(ratio) = self else { return None };
        let count = i2 - i1;
        let scores: Vec<f64> = (0..rows * count)
            .map(|k| saliency(w[(k / count) * cols + i1 + k % count], u_diag[i1 + k % count]))
            .collect();
        let mut mask = vec![false; scores.len()];
        // Each row's part of the batch is its own comparison group (see the module's note).
        for (sc, m) in scores.chunks(count).zip(mask.chunks_mut(count)) {
            lowest(sc, (ratio * sc.len() as f64).round() as usize, m);
        }
        Some(mask)
    }

    fn group(&self) -> usize {
        match self {
            SparseGptMask::NM(nm) => nm.group,
            SparseGptMask::Unstructured(_) => 0,
        }
    }

    fn group_mask(&self, w: &[f64], u_diag: &[f64], pruned: &mut [bool]) {
        let SparseGptMask::NM(nm) = self else { return };
        let mut idx: Vec<usize> = (0..w.len()).collect();
        idx.sort_by(|&a, &b| saliency(w[a], u_diag[a]).total_cmp(&saliency(w[b], u_diag[b])).then(a.cmp(&b)));
        pruned.fill(false);
        for &i in idx.iter().take(w.len().saturating_sub(nm.keep)) {
            pruned[i] = true;
        }
    }
}

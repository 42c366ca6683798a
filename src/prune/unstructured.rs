//! Unstructured pruning: zero individual weights within each output row.
//!
//! Scores are |W_ij| (magnitude) or |W_ij|·‖X_j‖₂ (Wanda: the weight times the norm of its input
//! channel over the calibration tokens), compared within each row (Wanda's per-output comparison
//! group). A row of n weights loses exactly round(R·n) of them; with N:M, every group of M
//! consecutive weights keeps its N best.

use anyhow::{bail, Result};

/// `--sparsity-method`: how the weights to zero are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum SparsityMethod {
    Magnitude,
    Wanda,
    Sparsegpt,
}
crate::impl_choice!(SparsityMethod {
    Magnitude => "magnitude",
    Wanda => "wanda",
    Sparsegpt => "sparsegpt": "SparseGPT: OBS saliency and a compensating update of the kept weights (`sparsegpt`)",
});

/// `--nm N:M`: keep N of every M consecutive weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NM {
    pub keep: usize,
    pub group: usize,
}

impl std::str::FromStr for NM {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<NM> {
        let Some((n, m)) = s.split_once(':') else { bail!("expected N:M (e.g. 2:4), got {s:?}") };
        let (keep, group): (usize, usize) = (n.trim().parse()?, m.trim().parse()?);
        if keep == 0 || keep >= group {
            bail!("N:M needs 0 < N < M, got {s}");
        }
        Ok(NM { keep, group })
    }
}

impl NM {
    pub fn sparsity(&self) -> f64 {
        1.0 - self.keep as f64 / self.group as f64
    }
}

/// Zero the lowest-scoring weights of one row in place; returns how many were zeroed.
/// `norms` are the input-channel norms for Wanda (None: magnitude).
pub fn prune_row(row: &mut [f32], sparsity: f64, nm: Option<NM>, norms: Option<&[f32]>) -> usize {
    let score = |j: usize, w: f32| -> f32 { w.abs() * norms.map_or(1.0, |n| n[j]) };
    match nm {
        Some(nm) => {
            let mut zeroed = 0;
            let mut idx: Vec<usize> = Vec::with_capacity(nm.group);
            for (g, chunk) in row.chunks_mut(nm.group).enumerate() {
                idx.clear();
                idx.extend(0..chunk.len());
                // Lowest scores first; ties by position, so the result is deterministic.
                idx.sort_by(|&a, &b| {
                    score(g * nm.group + a, chunk[a]).total_cmp(&score(g * nm.group + b, chunk[b])).then(a.cmp(&b))
                });
                for &i in idx.iter().take(chunk.len().saturating_sub(nm.keep)) {
                    chunk[i] = 0.0;
                    zeroed += 1;
                }
            }
            zeroed
        }
        None => {
            let k = (sparsity * row.len() as f64).round() as usize;
            if k == 0 {
                return 0;
            }
            let mut idx: Vec<usize> = (0..row.len()).collect();
            idx.select_nth_unstable_by(k - 1, |&a, &b| score(a, row[a]).total_cmp(&score(b, row[b])).then(a.cmp(&b)));
            for &i in &idx[..k] {
                row[i] = 0.0;
            }
            k
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magnitude_zeroes_the_smallest() {
        let mut r = vec![0.5, -0.1, 2.0, 0.05, -3.0, 0.2];
        assert_eq!(prune_row(&mut r, 0.5, None, None), 3);
        assert_eq!(r, vec![0.5, 0.0, 2.0, 0.0, -3.0, 0.0]);
    }

    #[test]
    fn wanda_weighs_by_input_norm() {
        let mut r = vec![1.0, 1.0, 1.0, 1.0];
        prune_row(&mut r, 0.5, None, Some(&[5.0, 0.1, 3.0, 0.2]));
        assert_eq!(r, vec![1.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn n_m_holds_in_every_group() {
        let mut r: Vec<f32> = (0..16).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
        let nm: NM = "2:4".parse().unwrap();
        assert_eq!(prune_row(&mut r, 0.0, Some(nm), None), 8);
        for g in r.chunks(4) {
            assert_eq!(g.iter().filter(|x| **x == 0.0).count(), 2, "{g:?}");
        }
        assert!("4:4".parse::<NM>().is_err());
    }
}

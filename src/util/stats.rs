//! Paired bootstrap intervals: the uncertainty of a mean over blocks of correlated units.
//!
//! The evaluation's units are not independent in the same way: the tokens of one perplexity window
//! share their context (a hard passage makes every token of its window hard for every model), while
//! task items are separate questions. So the resampling unit is the *block*: a whole window for
//! per-token statistics (NLL differences, KL divergence), one item for accuracies. Each block is
//! given as the sum of its units' values and their count; the statistic is the pooled mean
//! `Σ sums / Σ counts` of the resampled blocks (for windows of equal length, the mean per token).
//! Resampling blocks with replacement keeps the correlation inside a block, which a per-token
//! bootstrap would ignore (and so give intervals too narrow).
//!
//! Deterministic: the draws come from [`XorShift64`] with a fixed seed, so a report written twice
//! from the same files states the same intervals.

use super::rng::XorShift64;

/// Resamples per interval: enough that the 2.5% and 97.5% quantiles move by well under their own
/// width between seeds.
pub const RESAMPLES: usize = 2000;

/// The seed of every interval (each bootstrap starts the stream afresh from it).
pub const SEED: u64 = 0x5EED_0015;

/// The arithmetic mean (0 for no values).
pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.iter().sum::<f64>() / v.len() as f64
}

/// The sample standard deviation (n − 1 in the denominator; 0 for fewer than two values), as
/// llama-bench reports its t/s.
pub fn sample_sd(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

/// A bootstrap distribution of a pooled mean.
#[derive(Clone, Debug, PartialEq)]
pub struct Bootstrap {
    /// The statistic on the data as observed.
    pub estimate: f64,
    /// The statistic on each resample, sorted ascending.
    pub samples: Vec<f64>,
}

impl Bootstrap {
    /// The `q` quantile of the resampled statistics (0 ≤ q ≤ 1), interpolated linearly between
    /// order statistics at position `q (B − 1)` (numpy's default, type 7).
    pub fn quantile(&self, q: f64) -> f64 {
        let s = &self.samples;
        if s.is_empty() {
            return self.estimate;
        }
        let h = q.clamp(0.0, 1.0) * (s.len() - 1) as f64;
        let (lo, frac) = (h.floor() as usize, h - h.floor());
        let hi = (lo + 1).min(s.len() - 1);
        s[lo] + frac * (s[hi] - s[lo])
    }

    /// The two-sided 95% percentile interval (2.5% and 97.5% quantiles).
    pub fn interval95(&self) -> (f64, f64) {
        (self.quantile(0.025), self.quantile(0.975))
    }

    /// The share of resamples whose statistic is at most `x` (the bootstrap's confidence that the
    /// true value is at most `x`).
    pub fn share_at_most(&self, x: f64) -> f64 {
        if self.samples.is_empty() {
            return if self.estimate <= x { 1.0 } else { 0.0 };
        }
        self.samples.partition_point(|&v| v <= x) as f64 / self.samples.len() as f64
    }
}

impl Bootstrap {
    /// The share of resamples whose statistic is at least `x`.
    pub fn share_at_least(&self, x: f64) -> f64 {
        if self.samples.is_empty() {
            return if self.estimate >= x { 1.0 } else { 0.0 };
        }
        1.0 - self.samples.partition_point(|&v| v < x) as f64 / self.samples.len() as f64
    }
}

/// The pooled mean `Σ sums / Σ counts`.
fn pooled(sums: &[f64], counts: &[f64]) -> f64 {
    sums.iter().sum::<f64>() / counts.iter().sum::<f64>()
}

/// Bootstrap the pooled mean of blocks (`sums[i]`: the sum of block i's values, `counts[i]`: how
/// many units it holds): `resamples` times, draw as many blocks as there are with replacement
/// (index `rng.below(n)` of a [`XorShift64`] seeded with `seed`, block after block), and take the
/// pooled mean of the draw. For a paired comparison, each block's sum is the sum of the paired
/// differences (variant − reference) of its units.
///
/// `None` when there is no block or no unit.
pub fn block_bootstrap(sums: &[f64], counts: &[f64], resamples: usize, seed: u64) -> Option<Bootstrap> {
    let n = sums.len();
    if n == 0 || counts.len() != n || counts.iter().sum::<f64>() <= 0.0 {
        return None;
    }
    let mut rng = XorShift64::new(seed);
    let mut samples = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        let (mut s, mut c) = (0.0, 0.0);
        for _ in 0..n {
            let i = rng.below(n as u64) as usize;
            s += sums[i];
            c += counts[i];
        }
        samples.push(s / c);
    }
    samples.sort_by(f64::total_cmp);
    Some(Bootstrap { estimate: pooled(sums, counts), samples })
}

/// [`block_bootstrap`] with the project's resamples and seed.
pub fn paired_bootstrap(sums: &[f64], counts: &[f64]) -> Option<Bootstrap> {
    block_bootstrap(sums, counts, RESAMPLES, SEED)
}

/// Bootstrap the unweighted mean of several groups' means (a mean accuracy over tasks, each task's
/// items a group): each of `resamples` times, draw each group's items with replacement in group
/// order from one [`XorShift64`] stream seeded with `seed` (`rng.below(n_g)`, item after item), and
/// average the groups' means. Groups are resampled separately because their items are different
/// questions of different sizes: pooling them would weight the largest task most.
///
/// `None` when there is no group or a group is empty.
pub fn stratified_mean_bootstrap(groups: &[&[f64]], resamples: usize, seed: u64) -> Option<Bootstrap> {
    if groups.is_empty() || groups.iter().any(|g| g.is_empty()) {
        return None;
    }
    let mean_of_means = |means: &mut dyn Iterator<Item = f64>| means.sum::<f64>() / groups.len() as f64;
    let estimate = mean_of_means(&mut groups.iter().map(|g| g.iter().sum::<f64>() / g.len() as f64));
    let mut rng = XorShift64::new(seed);
    let mut samples = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        let mut means = Vec::with_capacity(groups.len());
        for g in groups {
            let n = g.len() as u64;
            let s: f64 = (0..g.len()).map(|_| g[rng.below(n) as usize]).sum();
            means.push(s / g.len() as f64);
        }
        samples.push(mean_of_means(&mut means.into_iter()));
    }
    samples.sort_by(f64::total_cmp);
    Some(Bootstrap { estimate, samples })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_differences_have_a_point_interval() {
        let b = block_bootstrap(&[2.0, 4.0, 6.0], &[1.0, 2.0, 3.0], 100, 7).unwrap();
        assert_eq!(b.estimate, 2.0);
        assert!(b.samples.iter().all(|&s| (s - 2.0).abs() < 1e-12));
        assert_eq!(b.share_at_most(2.0), 1.0);
        assert_eq!(b.share_at_most(1.999), 0.0);
    }

    #[test]
    fn one_group_is_the_item_bootstrap() {
        let items = [1.0, 0.0, -1.0, 0.0, 1.0, 1.0];
        let one = stratified_mean_bootstrap(&[&items], 200, 9).unwrap();
        assert_eq!(one, block_bootstrap(&items, &[1.0; 6], 200, 9).unwrap());
        assert!(stratified_mean_bootstrap(&[&items, &[]], 10, 1).is_none());
    }

    #[test]
    fn quantiles_interpolate() {
        let b = Bootstrap { estimate: 0.0, samples: vec![0.0, 1.0, 2.0, 3.0, 4.0] };
        assert_eq!(b.quantile(0.5), 2.0);
        assert_eq!(b.quantile(0.1), 0.4);
        assert_eq!(b.quantile(1.0), 4.0);
        assert!(block_bootstrap(&[], &[], 10, 1).is_none());
    }
}

//! Paired comparisons: each variant against the baseline, each microscale variant against the
//! llama.cpp stock quant nearest in file size, and each pruned variant against the same
//! quantization without pruning, on the same tokens and the same items, with 95% bootstrap
//! intervals (`util::stats`) from the sweep's item files (`record::items`).
//!
//! - Perplexity: the mean per-token NLL difference (variant − reference) over the perplexity
//!   windows, resampling whole windows (tokens of one window share their context, so they are not
//!   independent); the PPL ratio is its exponential, and so is its interval.
//! - KL divergence from the baseline: the mean per-token KLD, windows resampled the same way
//!   (against a stock quant: the difference of the two KLDs, window by window).
//! - Accuracies: the mean per-item difference of correctness (variant − reference, each item
//!   −1, 0 or +1), resampling items: a paired bootstrap, which keeps the pairing McNemar's test
//!   relies on (only the items the two models disagree on move the difference).
//!
//! Two files are paired only when they scored the same tokens (sha256) or the same items; a
//! comparison that cannot be paired is left out and said so, never computed on mismatched data.

use crate::record::items::{items_path, ItemRecord, Windows};
use crate::record::results::{Kind, Results};
use crate::util::stats::{paired_bootstrap, stratified_mean_bootstrap, Bootstrap, RESAMPLES, SEED};
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// One variant against one reference.
#[derive(Clone, Debug, Default)]
pub struct Comparison {
    /// Mean per-token NLL difference (nats; the PPL ratio is its exponential).
    pub nll: Option<Bootstrap>,
    /// Mean per-token KLD from the baseline (against a stock quant: the difference of the KLDs).
    pub kld: Option<Bootstrap>,
    /// Mean per-item accuracy difference (fraction), by results.csv column.
    pub acc: BTreeMap<String, Bootstrap>,
    /// The mean over the primary accuracy metrics (`*_acc`) of their differences, each task's
    /// items resampled separately (`util::stats::stratified_mean_bootstrap`).
    pub acc_mean: Option<Bootstrap>,
    /// What could not be paired, and why.
    pub unpaired: Vec<String>,
}

/// Every paired comparison of a sweep, by index into `Results::variants`.
#[derive(Clone, Debug, Default)]
pub struct Paired {
    /// Item files found (None: no file; failed variants are not read).
    pub items: Vec<Option<ItemRecord>>,
    /// Against the baseline (None: no item file for the variant or the baseline).
    pub vs_baseline: Vec<Option<Comparison>>,
    /// Microscale variants against the nearest-size stock quant: (its index, the comparison).
    pub vs_stock: Vec<Option<(usize, Comparison)>>,
    /// Pruned microscale variants against their quantization alone (`quantization_alone`): (its
    /// index, the comparison; KLD as the difference of the two).
    pub vs_quant_alone: Vec<Option<(usize, Comparison)>>,
}

impl Paired {
    /// No item file at all: every verdict falls back to the point estimates.
    pub fn none(results: &Results) -> Paired {
        let n = results.variants.len();
        Paired {
            items: vec![None; n],
            vs_baseline: vec![None; n],
            vs_stock: vec![None; n],
            vs_quant_alone: vec![None; n],
        }
    }

    /// Whether any comparison with the baseline could be made.
    pub fn any(&self) -> bool {
        self.vs_baseline.iter().any(Option::is_some)
    }
}

/// Read the item files under `dir/items/` of the variants that did not fail (a missing file is
/// not an error: sweeps before item files had none) and make every comparison.
pub fn load_paired(dir: &Path, results: &Results) -> Result<Paired> {
    let mut items = Vec::with_capacity(results.variants.len());
    for v in &results.variants {
        let rec = if v.failed() { None } else { ItemRecord::read(&items_path(dir, &v.name))? };
        if let Some(r) = &rec {
            if r.variant != v.name {
                bail!("{}: holds variant `{}`, not `{}`", items_path(dir, &v.name).display(), r.variant, v.name);
            }
        }
        items.push(rec);
    }
    Ok(paired_from_items(results, items))
}

/// The comparisons from item records (one per variant, in `results` order).
pub fn paired_from_items(results: &Results, items: Vec<Option<ItemRecord>>) -> Paired {
    let base = results.variants.iter().position(|v| v.kind == Kind::Baseline);
    let base_items = base.and_then(|b| items[b].as_ref());
    let mut vs_baseline = Vec::with_capacity(items.len());
    let mut vs_stock = Vec::with_capacity(items.len());
    let mut vs_quant_alone = Vec::with_capacity(items.len());
    for (i, rec) in items.iter().enumerate() {
        vs_baseline.push(match (rec, base_items) {
            (Some(r), Some(b)) if Some(i) != base => Some(compare(r, b, KldAs::FromBaseline)),
            _ => None,
        });
        vs_stock.push(match (rec, nearest_stock(results, &items, i)) {
            (Some(r), Some(s)) => Some((s, compare(r, items[s].as_ref().unwrap(), KldAs::Difference))),
            _ => None,
        });
        let alone = quantization_alone(results, i).filter(|&q| items[q].is_some());
        vs_quant_alone.push(match (rec, alone) {
            (Some(r), Some(q)) => Some((q, compare(r, items[q].as_ref().unwrap(), KldAs::Difference))),
            _ => None,
        });
    }
    Paired { items, vs_baseline, vs_stock, vs_quant_alone }
}

/// For a pruned microscale variant, the microscale row that quantizes the same way without
/// pruning: the same type, the same rounding (GPTQ or not) and importance matrix, no size budget.
/// What pruning adds to quantization is measured against it.
pub fn quantization_alone(results: &Results, i: usize) -> Option<usize> {
    let vs = &results.variants;
    let v = &vs[i];
    if v.kind != Kind::Microscale || v.method == "none" || v.failed() {
        return None;
    }
    let gptq = |recipe: &str| recipe.contains("(GPTQ)");
    let imatrix = |recipe: &str| recipe.contains("+ imatrix");
    vs.iter().position(|q| {
        q.kind == Kind::Microscale
            && q.method == "none"
            && q.quant == v.quant
            && !q.failed()
            && gptq(&q.recipe) == gptq(&v.recipe)
            && imatrix(&q.recipe) == imatrix(&v.recipe)
            && !q.recipe.contains(" @ ")
    })
}

/// For a microscale variant, the stock row (with an item file) nearest in file size; ties go to
/// the smaller file, then the name.
pub fn nearest_stock(results: &Results, items: &[Option<ItemRecord>], i: usize) -> Option<usize> {
    let vs = &results.variants;
    let size = vs[i].size_bytes.filter(|_| vs[i].kind == Kind::Microscale)?;
    (0..vs.len())
        .filter(|&s| vs[s].kind == Kind::Stock && !vs[s].failed() && items[s].is_some())
        .filter_map(|s| Some((s, vs[s].size_bytes?)))
        .min_by(|(a, sa), (b, sb)| {
            sa.abs_diff(size).cmp(&sb.abs_diff(size)).then(sa.cmp(sb)).then(vs[*a].name.cmp(&vs[*b].name))
        })
        .map(|(s, _)| s)
}

#[derive(Clone, Copy, PartialEq)]
enum KldAs {
    /// The variant's own KLD (its reference is the baseline, from which every KLD is measured).
    FromBaseline,
    /// The difference of the two KLDs (both measured from the baseline).
    Difference,
}

/// `a` against the reference `b`.
fn compare(a: &ItemRecord, b: &ItemRecord, kld_as: KldAs) -> Comparison {
    let mut c = Comparison::default();
    match (&a.perplexity, &b.perplexity) {
        (Some(x), Some(y)) => match paired_windows(x, y) {
            Ok(boot) => c.nll = boot,
            Err(why) => c.unpaired.push(format!("perplexity: {why}")),
        },
        (Some(_), None) => c.unpaired.push(format!("perplexity: `{}` has no perplexity windows", b.variant)),
        _ => {}
    }
    match (kld_as, &a.kld, &b.kld) {
        (KldAs::FromBaseline, Some(x), _) => c.kld = window_bootstrap(x, |w| x.sums[w]),
        (KldAs::Difference, Some(x), Some(y)) => match paired_windows(x, y) {
            Ok(boot) => c.kld = boot,
            Err(why) => c.unpaired.push(format!("KLD: {why}")),
        },
        _ => {}
    }
    let mut primary = Vec::new();
    for (m, x) in &a.accuracy {
        let Some(y) = b.accuracy.get(m) else { continue };
        if x.items_sha256 != y.items_sha256 || x.correct.len() != y.correct.len() {
            c.unpaired.push(format!("{m}: `{}` and `{}` scored different items", a.variant, b.variant));
            continue;
        }
        let diffs: Vec<f64> = x.outcomes().iter().zip(y.outcomes()).map(|(p, q)| p - q).collect();
        if let Some(boot) = paired_bootstrap(&diffs, &vec![1.0; diffs.len()]) {
            c.acc.insert(m.clone(), boot);
        }
        if is_primary(m) {
            primary.push(diffs);
        }
    }
    let groups: Vec<&[f64]> = primary.iter().map(Vec::as_slice).collect();
    c.acc_mean = stratified_mean_bootstrap(&groups, RESAMPLES, SEED);
    c
}

/// A task's primary accuracy (`sst2_acc`, not `arc_easy_acc_norm`), as results.csv names it.
fn is_primary(metric: &str) -> bool {
    metric.ends_with("_acc")
}

/// The bootstrap of window differences `x − y`, when both passes scored the same tokens.
fn paired_windows(x: &Windows, y: &Windows) -> Result<Option<Bootstrap>, String> {
    if x.tokens_sha256 != y.tokens_sha256 || x.sums.len() != y.sums.len() || x.tokens_per_window != y.tokens_per_window
    {
        return Err(format!(
            "different tokens ({} and {} windows of {} and {} tokens)",
            x.sums.len(),
            y.sums.len(),
            x.tokens_per_window,
            y.tokens_per_window
        ));
    }
    Ok(window_bootstrap(x, |w| x.sums[w] - y.sums[w]))
}

fn window_bootstrap(x: &Windows, sum: impl Fn(usize) -> f64) -> Option<Bootstrap> {
    let sums: Vec<f64> = (0..x.sums.len()).map(sum).collect();
    paired_bootstrap(&sums, &vec![x.tokens_per_window as f64; sums.len()])
}

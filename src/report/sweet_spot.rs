//! The sweet spot per device profile: among the variants that fit the profile and stay within a
//! quality budget relative to the baseline, the smallest file (or the fastest generation).
//!
//! Every kind competes: the baseline itself, microscale's variants and llama.cpp's stock quants.
//!
//! The accuracy budget applies to the mean over the tasks of their accuracy drops (the field's
//! "average zero-shot accuracy"; [`AccBudget::Mean`], the default) or to each task's drop
//! ([`AccBudget::Each`]). A full ARC-Challenge dev set (299 items) cannot resolve a 1-point
//! difference on its own even between nearly identical models (a 95% interval of about ±1.4
//! points), so a per-task 1-point budget refuses every compressed variant; their mean can.
//!
//! With the sweep's item files ([`super::paired`]), a variant is within the budget only at 95%
//! confidence: the upper end of the 95% interval of its perplexity ratio, and the upper end of the
//! accuracy drop (the mean's, or each task's), must be within the budget. A variant within the
//! budget on its point estimates but not on its intervals is not chosen; it is named
//! (`point_only`). Without item files (sweeps written before them) the verdicts use the point
//! estimates alone.

use super::paired::{Comparison, Paired};
use crate::record::results::{Kind, Results, Variant};
use crate::util::stats::Bootstrap;

/// What "best" means among the variants within the budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Objective {
    /// Smallest file (ties: lower perplexity, then name).
    #[default]
    Size,
    /// Most generated tokens/s on the profile (ties: smaller file, then name).
    Speed,
}

impl Objective {
    pub fn describe(self) -> &'static str {
        match self {
            Objective::Size => "smallest file",
            Objective::Speed => "fastest generation (tg tokens/s)",
        }
    }
}

/// Which accuracy drop the budget bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AccBudget {
    /// The mean over the primary accuracy metrics of their drops.
    #[default]
    Mean,
    /// Each primary accuracy metric's drop.
    Each,
}

/// The quality budget and the objective.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Criteria {
    /// Largest allowed relative perplexity increase over the baseline (0.05 = +5%).
    pub max_ppl_increase: f64,
    /// Largest allowed absolute accuracy drop (0.01 = 1 point): of the tasks' mean, or of each.
    pub max_acc_drop: f64,
    pub acc_budget: AccBudget,
    pub objective: Objective,
}

impl Default for Criteria {
    fn default() -> Self {
        Criteria { max_ppl_increase: 0.05, max_acc_drop: 0.01, acc_budget: AccBudget::Mean, objective: Objective::Size }
    }
}

/// The primary accuracy metrics the baseline has, in results.csv's order.
fn budget_metrics<'r>(results: &'r Results, base: &Variant) -> Vec<&'r str> {
    results.primary_acc_metrics().into_iter().filter(|m| base.acc.contains_key(*m)).collect()
}

/// Slack for comparisons against the budget, so that a value exactly on the bound passes despite
/// floating-point rounding of the bound itself.
const EPS: f64 = 1e-9;

/// Why a variant is or is not within the quality budget.
pub fn quality_check(results: &Results, v: &Variant, c: &Criteria) -> Result<(), String> {
    let Some(base) = results.baseline() else { return Err("no baseline row".into()) };
    if v.failed() {
        return Err("failed".into());
    }
    if let Some(bp) = base.ppl {
        let Some(p) = v.ppl else { return Err("perplexity not measured".into()) };
        let limit = bp.value * (1.0 + c.max_ppl_increase);
        if p.value > limit * (1.0 + EPS) {
            return Err(format!(
                "perplexity {:.2} is {:+.1}% over the baseline's {:.2}",
                p.value,
                100.0 * (p.value / bp.value - 1.0),
                bp.value
            ));
        }
    }
    let metrics = budget_metrics(results, base);
    if let Some(m) = metrics.iter().find(|m| !v.acc.contains_key(**m)) {
        return Err(format!("{m} not measured"));
    }
    if c.acc_budget == AccBudget::Mean && !metrics.is_empty() {
        let drop = metrics.iter().map(|m| base.acc[*m].value - v.acc[*m].value).sum::<f64>() / metrics.len() as f64;
        if drop > c.max_acc_drop + EPS {
            return Err(format!("the mean accuracy is {:.1} points below the baseline's", 100.0 * drop));
        }
        return Ok(());
    }
    for m in metrics {
        let (ba, a) = (&base.acc[m], &v.acc[m]);
        if a.value < ba.value - c.max_acc_drop - EPS {
            return Err(format!(
                "{m} {:.1}% is {:.1} points below the baseline's {:.1}%",
                100.0 * a.value,
                100.0 * (ba.value - a.value),
                100.0 * ba.value
            ));
        }
    }
    Ok(())
}

/// Why a variant's 95% intervals are not within the budget (its point estimates having passed
/// [`quality_check`]): the perplexity ratio's upper end, or an accuracy drop's upper end (the lower
/// end of the accuracy difference), over the budget. Metrics without a paired interval are judged
/// by `quality_check` alone.
pub fn interval_check(results: &Results, cmp: &Comparison, c: &Criteria) -> Result<(), String> {
    let Some(base) = results.baseline() else { return Err("no baseline row".into()) };
    if let (Some(_), Some(nll)) = (base.ppl, &cmp.nll) {
        let hi = nll.interval95().1.exp();
        if hi > (1.0 + c.max_ppl_increase) * (1.0 + EPS) {
            return Err(format!(
                "perplexity ratio's 95% upper end ×{hi:.4} ({:+.2}%) is over {:+.1}%",
                100.0 * (hi - 1.0),
                100.0 * c.max_ppl_increase
            ));
        }
    }
    for (what, d) in acc_intervals(results, cmp, c) {
        let lo = d.interval95().0;
        if lo < -c.max_acc_drop - EPS {
            return Err(format!(
                "{what}'s 95% interval reaches {:.1} points below the baseline (budget {:.1})",
                -100.0 * lo,
                100.0 * c.max_acc_drop
            ));
        }
    }
    Ok(())
}

/// The paired accuracy differences the budget bounds, each with its name in words: the tasks'
/// mean, or each primary metric the baseline has.
fn acc_intervals<'c>(results: &Results, cmp: &'c Comparison, c: &Criteria) -> Vec<(String, &'c Bootstrap)> {
    let Some(base) = results.baseline() else { return vec![] };
    match c.acc_budget {
        AccBudget::Mean => cmp.acc_mean.iter().map(|d| ("the mean accuracy".to_string(), d)).collect(),
        AccBudget::Each => results
            .primary_acc_metrics()
            .into_iter()
            .filter(|m| base.acc.contains_key(*m))
            .filter_map(|m| Some((m.to_string(), cmp.acc.get(m)?)))
            .collect(),
    }
}

/// How confident a verdict is: the least, over the budget's metrics with a paired interval, of the
/// share of bootstrap resamples within the budget (perplexity ratio at most 1 + budget, accuracy
/// drop at most the budget). `None` when no metric has an interval.
pub fn confidence(results: &Results, cmp: &Comparison, c: &Criteria) -> Option<f64> {
    let base = results.baseline()?;
    let mut shares = Vec::new();
    if let (Some(_), Some(nll)) = (base.ppl, &cmp.nll) {
        shares.push(nll.share_at_most((1.0 + c.max_ppl_increase).ln() + EPS));
    }
    shares.extend(acc_intervals(results, cmp, c).into_iter().map(|(_, d)| d.share_at_least(-c.max_acc_drop - EPS)));
    shares.into_iter().reduce(f64::min)
}

/// The outcome for one profile.
#[derive(Clone, Debug)]
pub struct SweetSpot {
    pub profile: String,
    /// Index into `results.variants` of the winner, or why there is none.
    pub pick: Result<usize, String>,
    /// Variants (indices) that fit the profile and are within the budget, best first.
    pub qualifying: Vec<usize>,
    /// How many non-failed variants fit the profile.
    pub n_fit: usize,
    /// Variants that fit and are within the budget on their point estimates but not at 95%
    /// confidence, with why (in file order): not chosen.
    pub point_only: Vec<(usize, String)>,
    /// Qualifying variants judged on their point estimates alone although other variants have
    /// paired intervals (no item file of their own).
    pub unpaired: Vec<usize>,
}

/// The sweet spot on `profile`, on the point estimates alone.
pub fn sweet_spot(results: &Results, profile: &str, c: &Criteria) -> SweetSpot {
    sweet_spot_paired(results, &Paired::none(results), profile, c)
}

/// The sweet spot on `profile`, at 95% confidence where `paired` has intervals.
pub fn sweet_spot_paired(results: &Results, paired: &Paired, profile: &str, c: &Criteria) -> SweetSpot {
    let none = |reason: String, n_fit, point_only| SweetSpot {
        profile: profile.to_string(),
        pick: Err(reason),
        qualifying: vec![],
        n_fit,
        point_only,
        unpaired: vec![],
    };
    let Some(base) = results.baseline() else { return none("results.csv has no baseline row".into(), 0, vec![]) };
    if base.failed() {
        return none(format!("the baseline `{}` failed", base.name), 0, vec![]);
    }
    if base.ppl.is_none() && results.primary_acc_metrics().iter().all(|m| !base.acc.contains_key(*m)) {
        return none(format!("the baseline `{}` has no quality metric (perplexity or accuracy)", base.name), 0, vec![]);
    }
    let fit: Vec<usize> = (0..results.variants.len())
        .filter(|&i| {
            let v = &results.variants[i];
            !v.failed() && v.bench(profile).is_some_and(|b| b.fits())
        })
        .collect();
    if fit.is_empty() {
        let measured = results.ok().filter(|v| v.bench(profile).is_some_and(|b| b.status.is_some())).count();
        return none(
            match measured {
                0 => format!("no variant was benchmarked on {profile}"),
                n => format!("none of the {n} benchmarked variants fits {profile}"),
            },
            0,
            vec![],
        );
    }
    let mut ok = Vec::new();
    let mut rejected = Vec::new();
    let mut point_only = Vec::new();
    for &i in &fit {
        let v = &results.variants[i];
        // The point estimates first; then, where the variant has paired intervals, their ends.
        let at_95 = paired.vs_baseline[i].as_ref().map_or(Ok(()), |cmp| interval_check(results, cmp, c));
        let verdict = quality_check(results, v, c).and_then(|()| {
            at_95.map_err(|why| {
                point_only.push((i, why.clone()));
                format!("within budget on the point estimate only ({why})")
            })
        });
        match verdict {
            Err(why) => rejected.push(format!("`{}`: {why}", v.name)),
            Ok(()) if v.size_bytes.is_none() => rejected.push(format!("`{}`: file size not recorded", v.name)),
            Ok(()) if c.objective == Objective::Speed && v.tg_tps(profile).is_none() => {
                rejected.push(format!("`{}`: no tg tokens/s on {profile}", v.name))
            }
            Ok(()) => ok.push(i),
        }
    }
    let n_fit = fit.len();
    if ok.is_empty() {
        return none(
            format!("{n_fit} variant(s) fit {profile} but none is within the quality budget ({})", rejected.join("; ")),
            n_fit,
            point_only,
        );
    }
    let vs = &results.variants;
    let ppl = |i: usize| vs[i].ppl.map_or(f64::INFINITY, |m| m.value);
    match c.objective {
        Objective::Size => ok.sort_by(|&a, &b| {
            vs[a].size_bytes.cmp(&vs[b].size_bytes).then(ppl(a).total_cmp(&ppl(b))).then(vs[a].name.cmp(&vs[b].name))
        }),
        Objective::Speed => ok.sort_by(|&a, &b| {
            let (ta, tb) = (vs[a].tg_tps(profile).unwrap_or(0.0), vs[b].tg_tps(profile).unwrap_or(0.0));
            tb.total_cmp(&ta).then(vs[a].size_bytes.cmp(&vs[b].size_bytes)).then(vs[a].name.cmp(&vs[b].name))
        }),
    }
    let unpaired = match paired.any() {
        true => {
            ok.iter().copied().filter(|&i| vs[i].kind != Kind::Baseline && paired.vs_baseline[i].is_none()).collect()
        }
        false => vec![],
    };
    SweetSpot { profile: profile.to_string(), pick: Ok(ok[0]), qualifying: ok, n_fit, point_only, unpaired }
}

/// The sweet spot on every profile, in header order, on the point estimates alone.
pub fn sweet_spots(results: &Results, c: &Criteria) -> Vec<SweetSpot> {
    sweet_spots_paired(results, &Paired::none(results), c)
}

/// The sweet spot on every profile, in header order, at 95% confidence where `paired` has
/// intervals.
pub fn sweet_spots_paired(results: &Results, paired: &Paired, c: &Criteria) -> Vec<SweetSpot> {
    results.profiles.iter().map(|p| sweet_spot_paired(results, paired, p, c)).collect()
}

//! The sweet spot per device profile: among the variants that fit the profile and stay within a
//! quality budget relative to the baseline, the smallest file (or the fastest generation).
//!
//! Every kind competes: the baseline itself, microscale's variants and llama.cpp's stock quants.

use crate::record::results::{Results, Variant};

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

/// The quality budget and the objective.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Criteria {
    /// Largest allowed relative perplexity increase over the baseline (0.05 = +5%).
    pub max_ppl_increase: f64,
    /// Largest allowed absolute drop of each primary accuracy metric (0.01 = 1 point).
    pub max_acc_drop: f64,
    pub objective: Objective,
}

impl Default for Criteria {
    fn default() -> Self {
        Criteria { max_ppl_increase: 0.05, max_acc_drop: 0.01, objective: Objective::Size }
    }
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
    for m in results.primary_acc_metrics() {
        let Some(ba) = base.acc.get(m) else { continue };
        let Some(a) = v.acc.get(m) else { return Err(format!("{m} not measured")) };
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
}

/// The sweet spot on `profile`.
pub fn sweet_spot(results: &Results, profile: &str, c: &Criteria) -> SweetSpot {
    let none = |reason: String, n_fit| SweetSpot {
        profile: profile.to_string(),
        pick: Err(reason),
        qualifying: vec![],
        n_fit,
    };
    let Some(base) = results.baseline() else { return none("results.csv has no baseline row".into(), 0) };
    if base.failed() {
        return none(format!("the baseline `{}` failed", base.name), 0);
    }
    if base.ppl.is_none() && results.primary_acc_metrics().iter().all(|m| !base.acc.contains_key(*m)) {
        return none(format!("the baseline `{}` has no quality metric (perplexity or accuracy)", base.name), 0);
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
        );
    }
    let mut ok = Vec::new();
    let mut rejected = Vec::new();
    for &i in &fit {
        let v = &results.variants[i];
        match quality_check(results, v, c) {
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
    SweetSpot { profile: profile.to_string(), pick: Ok(ok[0]), qualifying: ok, n_fit }
}

/// The sweet spot on every profile, in header order.
pub fn sweet_spots(results: &Results, c: &Criteria) -> Vec<SweetSpot> {
    results.profiles.iter().map(|p| sweet_spot(results, p, c)).collect()
}

//! What the report says about its speeds: how they were taken (once per row, when it was
//! measured, or side by side by `sweep --rebench`) and how much they spread, and which variants
//! within a budget generate as fast as the fastest within that spread.

use crate::record::results::Results;
use crate::record::speeds::SpeedPass;

/// The caveat on the speed columns.
pub fn speed_caveat(r: &Results) -> String {
    match &r.speeds {
        None => "Each variant's speeds were taken once, when its row was measured, not side by side: on a shared \
                 host, rows measured at different times differ by the host's load as well as by their files, so close \
                 speeds rank by chance (± is the sd of the repetitions within that one run). `microscale sweep … \
                 --rebench` takes them again in one interleaved pass and states their spread."
            .into(),
        Some(pass) => pass_caveat(r, pass),
    }
}

fn pass_caveat(r: &Results, pass: &SpeedPass) -> String {
    let mut s = format!(
        "Speeds were taken side by side by `sweep --rebench` (`speeds.json`), {} to {}, on {}: per profile, {} \
         rounds over the {} files in turn (A B C … A B C …; each run {} prompt and {} generated tokens, {} \
         repetition(s)); each t/s is the mean of the rounds, its ± their sd.",
        pass.started,
        pass.ended,
        pass.host,
        pass.rounds,
        pass.files.len(),
        pass.n_prompt,
        pass.n_gen,
        pass.reps
    );
    let mut cv: Vec<(String, String, f64)> = pass.tg_variation();
    if !cv.is_empty() {
        cv.sort_by(|a, b| a.2.total_cmp(&b.2));
        let median = cv[cv.len() / 2].2;
        let (p, v, worst) = cv.last().expect("not empty").clone();
        s += &format!(
            " Round-to-round spread of tg t/s (sd over mean): median {:.1}%, largest {:.1}% (`{v}` on {p}).",
            100.0 * median,
            100.0 * worst
        );
    }
    if let Some((ratio, p, hi, lo)) = pass.identical_tg_ratio() {
        let groups: Vec<String> = pass
            .identical_groups()
            .iter()
            .map(|g| g.iter().map(|&f| format!("`{}`", pass.files[f].variant)).collect::<Vec<_>>().join(" = "))
            .collect();
        s += &format!(
            " Files with byte-identical weights ({}) differ in mean tg t/s by at most {ratio:.2}× (`{hi}` against `{lo}` on {p}): \
             differences smaller than that are this host's noise.",
            groups.join("; ")
        );
    }
    let missing: Vec<String> = r
        .variants
        .iter()
        .filter(|v| !v.failed() && !pass.files.iter().any(|f| f.variant == v.name))
        .map(|v| format!("`{}`", v.name))
        .collect();
    if !missing.is_empty() {
        s += &format!(" Not in the pass (speeds from when their rows were measured): {}.", missing.join(", "));
    }
    s
}

/// The variants among `others` whose generation speed on `profile` cannot be told from `pick`'s
/// in the pass: the range of their rounds overlaps the pick's. Empty without a pass.
pub fn as_fast_as<'r>(r: &'r Results, profile: &str, pick: usize, others: &[usize]) -> Vec<&'r str> {
    let Some(pass) = &r.speeds else { return vec![] };
    let runs = |i: usize| {
        let f = pass.files.iter().position(|f| f.variant == r.variants[i].name)?;
        let runs = pass.tg_runs(profile, f);
        (!runs.is_empty()).then_some(runs)
    };
    let Some(best) = runs(pick) else { return vec![] };
    let slowest_best = best.iter().copied().fold(f64::INFINITY, f64::min);
    others
        .iter()
        .filter(|&&i| i != pick)
        .filter(|&&i| runs(i).is_some_and(|o| o.iter().copied().fold(f64::NEG_INFINITY, f64::max) >= slowest_best))
        .map(|&i| r.variants[i].name.as_str())
        .collect()
}

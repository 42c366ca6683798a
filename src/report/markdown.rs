//! `report.md`: the results of a sweep as a readable report, with the sweet spot per device
//! profile, the full table, failed variants, Pareto frontiers and plots.
//!
//! Every number in the report comes from results.csv, the item files beside it (`items/`: the
//! paired 95% intervals) or the options (the quality budget).

use super::paired::{load_paired, Comparison, Paired};
use super::plots::{scatters, write_png, Scatter};
use super::sweet_spot::{confidence, interval_check, sweet_spots_paired, AccBudget, Criteria, Objective, SweetSpot};
use crate::record::device_rows::DeviceRows;
use crate::record::results::{read_results, Kind, Results, Variant};
use crate::util::stats::Bootstrap;
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// How to judge and what to say.
#[derive(Clone, Debug)]
pub struct ReportOptions {
    /// Largest allowed relative perplexity increase over the baseline (0.05 = +5%).
    pub max_ppl_increase: f64,
    /// Largest allowed absolute accuracy drop (0.01 = 1 point), of the tasks' mean or of each.
    pub max_acc_drop: f64,
    pub acc_budget: AccBudget,
    pub objective: Objective,
    /// Paragraphs printed under "Caveats".
    pub caveats: Vec<String>,
    /// Rows measured on devices (`bench --out`) to fold in and keep in the study's folder.
    pub device_rows: Vec<PathBuf>,
}

impl Default for ReportOptions {
    fn default() -> Self {
        let c = Criteria::default();
        ReportOptions {
            max_ppl_increase: c.max_ppl_increase,
            max_acc_drop: c.max_acc_drop,
            acc_budget: c.acc_budget,
            objective: c.objective,
            caveats: vec![],
            device_rows: vec![],
        }
    }
}

impl ReportOptions {
    pub fn criteria(&self) -> Criteria {
        Criteria {
            max_ppl_increase: self.max_ppl_increase,
            max_acc_drop: self.max_acc_drop,
            acc_budget: self.acc_budget,
            objective: self.objective,
        }
    }
}

/// Read `dir/results.csv` (and `dir/caveats.md` when there is one); write `dir/report.md` and the
/// plots under `dir/plots/`. Returns the report's path.
pub fn write_report(dir: &Path, opts: &ReportOptions) -> Result<PathBuf> {
    let (results, loaded) = load_study(dir, &opts.device_rows)?;
    let mut opts = opts.clone();
    let mut caveats = read_caveats(&dir.join(CAVEATS_FILE))?;
    caveats.append(&mut opts.caveats);
    opts.caveats = caveats;
    let opts = &opts;
    let plots_dir = dir.join("plots");
    let plots = scatters(&results, &opts.criteria());
    if !plots.is_empty() {
        std::fs::create_dir_all(&plots_dir).with_context(|| format!("cannot create {}", plots_dir.display()))?;
    }
    for (file, s) in &plots {
        write_png(&plots_dir.join(file), s)?;
    }
    let paired = load_paired(dir, &results)?;
    let md = render_markdown_paired(&results, &paired, opts, &plots);
    let out = dir.join("report.md");
    crate::util::atomic::write_file(&out, md.as_bytes())?;
    // Kept once the report that shows them is written.
    super::devices::store_device_rows(dir, &loaded)?;
    Ok(out)
}

/// `dir/results.csv` with the rows measured on devices folded in: those stored in the study and
/// `device_rows` (checked against the study), without writing anything.
pub fn read_study(dir: &Path, device_rows: &[PathBuf]) -> Result<Results> {
    Ok(load_study(dir, device_rows)?.0)
}

/// [`read_study`], with the device rows it folded in (what `write_report` keeps in the study).
fn load_study(dir: &Path, device_rows: &[PathBuf]) -> Result<(Results, Vec<(PathBuf, DeviceRows)>)> {
    let mut results = read_results(&dir.join("results.csv"))?;
    results.speeds = crate::record::speeds::SpeedPass::read(dir)?;
    results.twins = crate::record::twins::read_twins(&crate::record::twins::twins_csv(dir))?;
    let loaded = super::devices::load_device_rows(dir, &results, device_rows)?;
    super::devices::fold_into(&mut results, &loaded);
    Ok((results, loaded))
}

/// The file beside results.csv whose paragraphs the report lists under "Caveats" (before any
/// `--caveat`), so that a committed report is regenerated from its directory alone.
pub const CAVEATS_FILE: &str = "caveats.md";

/// The paragraphs of a caveats file: separated by blank lines, each paragraph's lines joined by
/// spaces, a leading `- ` dropped (so a Markdown list reads the same). No file: none.
pub fn read_caveats(path: &Path) -> Result<Vec<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("{}: cannot read", path.display())),
    };
    let mut paragraphs = vec![];
    let mut current: Vec<&str> = vec![];
    for line in text.lines().map(str::trim).chain(std::iter::once("")) {
        let starts_item = line.starts_with("- ");
        if (line.is_empty() || starts_item) && !current.is_empty() {
            paragraphs.push(current.join(" "));
            current.clear();
        }
        if !line.is_empty() {
            current.push(line.strip_prefix("- ").unwrap_or(line));
        }
    }
    Ok(paragraphs)
}

// Number formats, shared by the sweet-spot lines and the tables (and the tests that read them back).

pub fn fmt_mib(v: &Variant) -> String {
    v.size_mib().map_or("—".into(), |m| format!("{m:.2}"))
}

pub fn fmt_ppl(x: f64) -> String {
    format!("{x:.3}")
}

pub fn fmt_pct(fraction: f64) -> String {
    format!("{:.1}%", 100.0 * fraction)
}

pub fn fmt_tps(x: f64) -> String {
    format!("{x:.2}")
}

/// Relative perplexity change vs the baseline, e.g. `+3.21%`.
pub fn fmt_delta_ppl(ppl: f64, base: f64) -> String {
    format!("{:+.2}%", 100.0 * (ppl / base - 1.0))
}

fn kind_label(k: Kind) -> &'static str {
    match k {
        Kind::Baseline => "baseline",
        Kind::Microscale => "microscale",
        Kind::Stock => "llama.cpp stock",
        Kind::Source => "as shipped",
    }
}

/// Make text safe inside a markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or("—".into(), f)
}

fn distinct<'a>(vals: impl Iterator<Item = Option<&'a String>>) -> Vec<String> {
    vals.flatten().cloned().collect::<BTreeSet<_>>().into_iter().collect()
}

fn list_or(v: &[String], none: &str) -> String {
    if v.is_empty() {
        none.to_string()
    } else {
        v.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
    }
}

/// The report's markdown without item files (verdicts on the point estimates). `plots` are the
/// plots written under `plots/` (file name, content).
pub fn render_markdown(r: &Results, opts: &ReportOptions, plots: &[(String, Scatter)]) -> String {
    render_markdown_paired(r, &Paired::none(r), opts, plots)
}

/// The report's markdown, verdicts at 95% confidence where `paired` has intervals.
pub fn render_markdown_paired(
    r: &Results,
    paired: &Paired,
    opts: &ReportOptions,
    plots: &[(String, Scatter)],
) -> String {
    let mut md = String::new();
    summary(&mut md, r);
    provenance(&mut md, r);
    caveats(&mut md, r, paired, opts);
    sweet_spot_section(&mut md, r, paired, opts);
    super::litert::litert_section(&mut md, r);
    measured_section(&mut md, r);
    glance_section(&mut md, r, paired, opts);
    paired_section(&mut md, r, paired, &opts.criteria());
    combined_section(&mut md, r, paired);
    results_table(&mut md, r);
    for p in &r.profiles {
        profile_table(&mut md, r, p);
    }
    failures(&mut md, r);
    frontiers(&mut md, plots);
    plot_list(&mut md, plots);
    md
}

/// The baseline, when it exists and did not fail: what quality is measured against.
fn usable_baseline(r: &Results) -> Option<&Variant> {
    r.baseline().filter(|b| !b.failed())
}

fn summary(md: &mut String, r: &Results) {
    let n = |k: Kind| r.variants.iter().filter(|v| v.kind == k).count();
    let _ = writeln!(md, "# microscale report\n");
    let _ = writeln!(
        md,
        "From `{}`: {} variants ({} baseline, {} microscale, {} llama.cpp stock{}; {} failed), {} device profile(s){}.\n",
        r.path.file_name().map_or("results.csv".into(), |f| f.to_string_lossy().into_owned()),
        r.variants.len(),
        n(Kind::Baseline),
        n(Kind::Microscale),
        n(Kind::Stock),
        match n(Kind::Source) {
            0 => String::new(),
            k => format!(", {k} as shipped"),
        },
        r.failed().count(),
        r.profiles.len(),
        if r.profiles.is_empty() { String::new() } else { format!(": {}", list_or(&r.profiles, "")) }
    );
}

fn provenance(md: &mut String, r: &Results) {
    let _ = writeln!(md, "## Provenance\n");
    let vs = || r.variants.iter();
    let dates = distinct(vs().map(|v| v.date.as_ref()));
    let _ = writeln!(
        md,
        "- microscale version(s): {}",
        list_or(&distinct(vs().map(|v| v.microscale.as_ref())), "not recorded")
    );
    let _ = writeln!(
        md,
        "- llama.cpp version(s): {}",
        list_or(&distinct(vs().map(|v| v.llama_cpp.as_ref())), "not recorded")
    );
    let _ = match (dates.first(), dates.last()) {
        (Some(a), Some(b)) if a == b => writeln!(md, "- date: {a}"),
        (Some(a), Some(b)) => writeln!(md, "- dates: {a} to {b}"),
        _ => writeln!(md, "- dates: not recorded"),
    };
    let _ = writeln!(
        md,
        "- evaluation settings: eval_chunks {}; eval_limit {}; gpu_layers {}",
        list_or(&distinct(vs().map(|v| v.eval_chunks.as_ref())), "not recorded"),
        list_or(&distinct(vs().map(|v| v.eval_limit.as_ref())), "not recorded"),
        list_or(&distinct(vs().map(|v| v.gpu_layers.as_ref())), "not recorded")
    );
    let _ = match r.baseline() {
        Some(b) => writeln!(
            md,
            "- baseline: `{}` (recipe `{}`, quant `{}`, {} MiB{})",
            b.name,
            cell(&b.recipe),
            b.quant,
            fmt_mib(b),
            if b.failed() { ", FAILED" } else { "" }
        ),
        None => {
            writeln!(md, "- baseline: none (no row of kind `baseline`; quality deltas and sweet spots are unavailable)")
        }
    };
    md.push('\n');
}

fn caveats(md: &mut String, r: &Results, paired: &Paired, opts: &ReportOptions) {
    let dequant = r.baseline().filter(|b| b.recipe.to_ascii_lowercase().contains("dequant"));
    let _ = writeln!(md, "## Caveats\n");
    let _ = writeln!(md, "- {}", statistics_caveat(paired));
    if let Some(b) = dequant {
        let _ = writeln!(
            md,
            "- The baseline's recipe (`{}`) says it is a dequantization of already-quantized weights: \
             re-quantizing to that same format is lossless by construction, so such variants can score \
             as well as the baseline without that saying anything about other source models.",
            cell(&b.recipe)
        );
    }
    if !r.profiles.is_empty() {
        let _ = writeln!(md, "- {}", REPACK_CAVEAT);
        let _ = writeln!(md, "- {}", super::speeds::speed_caveat(r));
    }
    for cav in &opts.caveats {
        let _ = writeln!(md, "- {}", cav.replace('\n', " "));
    }
    md.push('\n');
}

/// Why profiles emulated on an x86-64 host cannot stand in for an ARM device's speeds.
pub const REPACK_CAVEAT: &str =
    "Profiles emulated on this host cap its threads and memory, not its CPU. llama.cpp repacks \
     some weight types into interleaved layouts at load, by CPU: with AVX2 (x86-64) Q4_0, Q4_K, IQ4_NL and MXFP4 \
     (and Q2_K with AVX-512); with ARM's dotprod or i8mm (a Pi 5, a Jetson Orin; not a Pi 4's Cortex-A72) also \
     Q5_K, Q6_K and Q8_0. Repacked types run faster there than their size alone says. An emulated profile repacks \
     as this host does, not as the device would, so which file is fastest on a device shows only in rows measured \
     on it (`repacked` column; `microscale bench DIR --profile native --out rows.csv` on the device, `report DIR \
     --device-rows rows.csv` here).";

/// How the verdicts are judged: on paired 95% intervals, or on the point estimates alone.
fn statistics_caveat(paired: &Paired) -> String {
    if !paired.any() {
        return "No per-item files (`items/`) are beside results.csv (a sweep written before them): the \
                sweet spots are judged on the point estimates, without confidence intervals; the ± \
                columns are standard errors of each number alone, not of its difference from the baseline."
            .into();
    }
    format!(
        "Verdicts are at 95% confidence, from paired comparisons on the same tokens and items (`items/`): \
         95% percentile intervals of a paired bootstrap ({} resamples, fixed seed). Perplexity: the mean \
         per-token NLL difference from the baseline, resampling whole {}-token windows (tokens of a window \
         share their context and are not independent); the PPL ratio's interval is its exponential. KLD: \
         windows resampled the same way. Accuracies: the per-item difference of correctness, resampling \
         items. A variant is within budget only when the interval's worse end is (PPL ratio's upper end, \
         accuracy drop's upper end); \"confidence\" is the least, over the budget's metrics, of the share \
         of resamples within budget.",
        crate::util::stats::RESAMPLES,
        paired.items.iter().flatten().find_map(|i| i.perplexity.as_ref()).map_or(0, |w| w.tokens_per_window)
    ) + &few_blocks_warning(paired)
}

/// Below this many windows or items, a bootstrap sees too little of the spread to be trusted.
const FEW_BLOCKS: usize = 20;

/// A warning when the intervals rest on few windows or items (a bootstrap over n blocks cannot
/// show more spread than those n blocks have: with 1 window a KLD interval is a single point).
fn few_blocks_warning(paired: &Paired) -> String {
    let recs = || paired.items.iter().flatten();
    let windows = recs().flat_map(|r| [&r.perplexity, &r.kld]).flatten().map(|w| w.sums.len()).min();
    let items = recs().flat_map(|r| r.accuracy.values()).map(|i| i.correct.len()).min();
    let few: Vec<String> = [(windows, "window(s)"), (items, "item(s) per task")]
        .into_iter()
        .filter_map(|(n, what)| n.filter(|&n| n < FEW_BLOCKS).map(|n| format!("{n} {what}")))
        .collect();
    match few.is_empty() {
        true => String::new(),
        false => format!(
            " **These intervals rest on as few as {}**: a bootstrap over so few blocks understates the \
             uncertainty (it cannot show more spread than they have), so read them as rough.",
            few.join(" and ")
        ),
    }
}

/// The quality budget in words, from the baseline's numbers.
fn budget_text(r: &Results, c: &Criteria) -> String {
    let base_ok = usable_baseline(r);
    let mut budget = Vec::new();
    if let Some(bp) = base_ok.and_then(|b| b.ppl) {
        budget.push(format!(
            "perplexity at most {:+.1}% over the baseline's {} (≤ {})",
            100.0 * c.max_ppl_increase,
            fmt_ppl(bp.value),
            fmt_ppl(bp.value * (1.0 + c.max_ppl_increase))
        ));
    }
    let metrics: Vec<&str> =
        r.primary_acc_metrics().into_iter().filter(|m| base_ok.is_some_and(|b| b.acc.contains_key(*m))).collect();
    if let (AccBudget::Mean, Some(b), false) = (c.acc_budget, base_ok, metrics.is_empty()) {
        let mean = metrics.iter().map(|m| b.acc[*m].value).sum::<f64>() / metrics.len() as f64;
        budget.push(format!(
            "the mean of {} at most {:.1} point(s) below the baseline's {} (≥ {})",
            metrics.join(", "),
            100.0 * c.max_acc_drop,
            fmt_pct(mean),
            fmt_pct(mean - c.max_acc_drop)
        ));
        return budget.join("; ");
    }
    for m in &metrics {
        if let Some(ba) = base_ok.and_then(|b| b.acc.get(*m)) {
            budget.push(format!(
                "{m} at most {:.1} point(s) below the baseline's {} (≥ {})",
                100.0 * c.max_acc_drop,
                fmt_pct(ba.value),
                fmt_pct(ba.value - c.max_acc_drop)
            ));
        }
    }
    if budget.is_empty() {
        "no baseline metric to compare with".to_string()
    } else {
        budget.join("; ")
    }
}

fn sweet_spot_section(md: &mut String, r: &Results, paired: &Paired, opts: &ReportOptions) {
    let c = opts.criteria();
    let _ = writeln!(md, "## Sweet spot per device profile\n");
    let _ = writeln!(
        md,
        "Among the variants that fit the profile (status `fits`) and stay within the quality budget ({}), \
         the pick is the {}. Every kind competes — the baseline, microscale's variants and llama.cpp's stock quants{} — \
         and the winner's kind is named. {}\n",
        budget_text(r, &c),
        c.objective.describe(),
        match as_shipped(r) {
            Some(s) => format!(
                ", and `{}`, the file the model came as ({} MiB), against which every size is also stated",
                s.name,
                fmt_mib(s)
            ),
            None => String::new(),
        },
        if paired.any() {
            "Within the budget means at 95% confidence: the worse end of each paired 95% interval (see Caveats) \
             is within it; variants within it on the point estimate only are named, not chosen."
        } else {
            "Judged on the point estimates: no per-item files, so no confidence intervals (see Caveats)."
        }
    );
    let spots = sweet_spots_paired(r, paired, &c);
    if !r.measured.is_empty() {
        let _ = writeln!(
            md,
            "A device with rows measured on it is judged on them (`NAME (measured)`); an emulated profile of the same \
             name is kept for comparison, marked as such.\n"
        );
    }
    if spots.is_empty() {
        let _ = writeln!(md, "No device profile was benchmarked (no `P:tg_tps` column).");
    }
    for s in &spots {
        let _ = writeln!(md, "{}", sweet_spot_line(r, s));
        if let Ok(i) = s.pick {
            if let Some(line) = verdict_line(r, paired, i, &c) {
                let _ = writeln!(md, "  - {line}");
            }
        }
        for &i in &s.unpaired {
            let _ = writeln!(md, "  - `{}`: judged on the point estimate (no item file)", r.variants[i].name);
        }
        if !s.point_only.is_empty() {
            let names: Vec<String> =
                s.point_only.iter().map(|(i, why)| format!("`{}` ({why})", r.variants[*i].name)).collect();
            let _ = writeln!(md, "  - within budget on the point estimate only (not chosen): {}", names.join("; "));
        }
    }
    md.push('\n');
}

/// Per profile: the smallest file within +1% and within +5% perplexity, and the fastest variant
/// within the report's budget, each judged as the sweet spots are (at 95% confidence where item
/// files allow); the method and quant that get there.
fn glance_section(md: &mut String, r: &Results, paired: &Paired, opts: &ReportOptions) {
    if r.profiles.is_empty() || usable_baseline(r).is_none() {
        return;
    }
    let _ = writeln!(md, "## At a glance per device profile\n");
    let _ = writeln!(
        md,
        "The smallest file within +1% and within +5% perplexity of the baseline ({} at most {:.1} point(s) below \
         it), and the fastest generation within the budget above; judged as the sweet spots are. PPL: point \
         estimate [95% interval] where item files allow.\n",
        match opts.acc_budget {
            AccBudget::Mean => "the mean accuracy",
            AccBudget::Each => "each accuracy",
        },
        100.0 * opts.max_acc_drop
    );
    table_head(
        md,
        &["profile", "smallest at ≤ +1% PPL", "smallest at ≤ +5% PPL", "fastest within budget"].map(String::from),
    );
    for p in &r.profiles {
        let at = |max_ppl_increase: f64, objective: Objective| {
            let c = Criteria { max_ppl_increase, objective, ..opts.criteria() };
            glance_cell(r, paired, &super::sweet_spot::sweet_spot_paired(r, paired, p, &c), objective)
        };
        let row = [
            p.clone(),
            at(0.01, Objective::Size),
            at(0.05, Objective::Size),
            at(opts.max_ppl_increase, Objective::Speed),
        ];
        table_row(md, &row);
    }
    md.push('\n');
}

/// `name` (method, quant): size, PPL change [interval], and tg t/s for the speed objective.
fn glance_cell(r: &Results, paired: &Paired, s: &SweetSpot, objective: Objective) -> String {
    let Ok(i) = s.pick else { return "none".into() };
    let v = &r.variants[i];
    let mut parts = vec![format!("{} MiB", fmt_mib(v))];
    if let Some(saving) = vs_as_shipped(r, v) {
        parts.push(saving);
    }
    let base_ppl = usable_baseline(r).and_then(|b| b.ppl).map(|m| m.value);
    match (paired.vs_baseline[i].as_ref().and_then(|c| c.nll.as_ref()), v.ppl, base_ppl) {
        (Some(n), _, _) => parts.push(format!("PPL {}", fmt_interval(n, fmt_ratio_pct))),
        (None, Some(p), Some(b)) => parts.push(format!("PPL {}", fmt_delta_ppl(p.value, b))),
        _ => {}
    }
    if objective == Objective::Speed {
        if let Some(t) = v.tg_tps(&s.profile) {
            parts.push(format!("tg {} t/s", fmt_tps(t)));
        }
        let ties = super::speeds::as_fast_as(r, &s.profile, i, &s.qualifying);
        if !ties.is_empty() {
            let names: Vec<String> = ties.iter().map(|n| format!("`{}`", cell(n))).collect();
            parts.push(format!("as fast within the rounds' spread: {}", names.join(", ")));
        }
    }
    format!("`{}` ({}, {}): {}", cell(&v.name), cell(&v.method), cell(&v.quant), parts.join(", "))
}

/// The pick's intervals against the baseline and how confident its verdict is.
fn verdict_line(r: &Results, paired: &Paired, i: usize, c: &Criteria) -> Option<String> {
    let cmp = paired.vs_baseline[i].as_ref()?;
    let mut parts = interval_parts(r, cmp, true);
    if let Some(conf) = confidence(r, cmp, c) {
        parts.push(format!("confidence within budget {}", fmt_pct(conf)));
    }
    Some(format!("at 95% confidence against the baseline: {}", parts.join(", ")))
}

/// `point [lo, hi]` of a bootstrap, each end through `f`.
fn fmt_interval(b: &Bootstrap, f: impl Fn(f64) -> String) -> String {
    let (lo, hi) = b.interval95();
    format!("{} [{}, {}]", f(b.estimate), f(lo), f(hi))
}

fn fmt_ratio_pct(nll: f64) -> String {
    format!("{:+.2}%", 100.0 * (nll.exp() - 1.0))
}

fn fmt_points(d: f64) -> String {
    format!("{:+.1}", 100.0 * d)
}

/// The comparison's intervals in words: PPL ratio, KLD and each primary accuracy's difference.
fn interval_parts(r: &Results, cmp: &Comparison, kld_from_baseline: bool) -> Vec<String> {
    let mut parts = Vec::new();
    if let Some(n) = &cmp.nll {
        parts.push(format!("PPL {}", fmt_interval(n, fmt_ratio_pct)));
    }
    if let Some(k) = &cmp.kld {
        let what = if kld_from_baseline { "KLD" } else { "ΔKLD" };
        parts.push(format!("{what} {}", fmt_interval(k, |x| format!("{x:.4}"))));
    }
    for m in r.primary_acc_metrics() {
        if let Some(d) = cmp.acc.get(m) {
            parts.push(format!("{m} {} points", fmt_interval(d, fmt_points)));
        }
    }
    if let Some(d) = &cmp.acc_mean {
        parts.push(format!("mean accuracy {} points", fmt_interval(d, fmt_points)));
    }
    parts
}

/// Every paired comparison: each variant against the baseline (with its verdict), each microscale
/// variant against the stock quant nearest in size. Nothing without item files.
fn paired_section(md: &mut String, r: &Results, paired: &Paired, c: &Criteria) {
    if !paired.any() {
        return;
    }
    let _ = writeln!(md, "## Paired comparisons (95% intervals)\n");
    let _ = writeln!(
        md,
        "Each variant against the baseline and each microscale variant against the llama.cpp stock quant \
         nearest in file size, on the same tokens and items: point estimate [95% interval] of the PPL change, \
         the KLD from the baseline (against a stock quant: the difference of the two KLDs) and the accuracy \
         difference in points (see Caveats for the method).\n"
    );
    // The primary accuracies some comparison has items for (a column in results.csv may be empty).
    let compared = || paired.vs_baseline.iter().flatten().chain(paired.vs_stock.iter().flatten().map(|(_, c)| c));
    let metrics: Vec<&str> =
        r.primary_acc_metrics().into_iter().filter(|m| compared().any(|c| c.acc.contains_key(*m))).collect();
    let mut head: Vec<String> = ["variant", "against", "PPL change", "KLD"].map(String::from).to_vec();
    head.extend(metrics.iter().map(|m| format!("Δ {m} points")));
    let with_mean = compared().any(|c| c.acc_mean.is_some());
    if with_mean {
        head.push("Δ mean accuracy points".into());
    }
    head.push("verdict (vs baseline)".into());
    table_head(md, &head);
    let mut notes = Vec::new();
    let base_name = r.baseline().map_or("baseline".to_string(), |b| b.name.clone());
    for (i, v) in r.variants.iter().enumerate() {
        let against = [
            paired.vs_baseline[i].as_ref().map(|cmp| (base_name.clone(), cmp, true)),
            paired.vs_stock[i].as_ref().map(|(s, cmp)| (r.variants[*s].name.clone(), cmp, false)),
        ];
        for (reference, cmp, is_base) in against.into_iter().flatten() {
            let mut row = vec![format!("`{}`", cell(&v.name)), format!("`{}`", cell(&reference))];
            row.push(opt(cmp.nll.as_ref(), |b| fmt_interval(b, fmt_ratio_pct)));
            row.push(opt(cmp.kld.as_ref(), |b| fmt_interval(b, |x| format!("{x:.4}"))));
            for m in &metrics {
                row.push(opt(cmp.acc.get(*m), |b| fmt_interval(b, fmt_points)));
            }
            if with_mean {
                row.push(opt(cmp.acc_mean.as_ref(), |b| fmt_interval(b, fmt_points)));
            }
            row.push(if is_base { verdict_cell(r, v, cmp, c) } else { "—".into() });
            table_row(md, &row);
            notes.extend(cmp.unpaired.iter().map(|n| format!("`{}` against `{reference}`: {n}", v.name)));
        }
    }
    md.push('\n');
    for n in &notes {
        let _ = writeln!(md, "- not paired: {}", cell(n));
    }
    if !notes.is_empty() {
        md.push('\n');
    }
}

/// Does pruning on top of quantization pay? Each pruned variant against the same quantization
/// without pruning (`paired::quantization_alone`): the size it saves and the loss it adds, paired
/// where item files allow, with a verdict that names the measured reason when it does not pay.
fn combined_section(md: &mut String, r: &Results, paired: &Paired) {
    let pairs: Vec<(usize, usize)> =
        (0..r.variants.len()).filter_map(|i| Some((i, super::paired::quantization_alone(r, i)?))).collect();
    if pairs.is_empty() {
        return;
    }
    let _ = writeln!(md, "## Pruning combined with quantization\n");
    let _ = writeln!(
        md,
        "Each pruned variant against the same quantization without pruning (same type, rounding and importance \
         matrix): the file size it saves, and what it adds to the loss on the same tokens, point estimate [95% \
         interval] where item files allow. It beats quantization alone when its file is smaller and its KLD is \
         not worse at 95% confidence.\n"
    );
    table_head(
        md,
        &[
            "pruned variant",
            "quantization alone",
            "size change",
            "PPL change",
            "ΔKLD",
            "verdict",
            "lowest KLD without pruning, no larger",
        ]
        .map(String::from),
    );
    let (mut beats, mut frontier) = (0, 0);
    for &(i, q) in &pairs {
        let (v, alone) = (&r.variants[i], &r.variants[q]);
        let cmp = paired.vs_quant_alone[i].as_ref().filter(|(j, _)| *j == q).map(|(_, c)| c);
        let size_change = match (v.size_bytes, alone.size_bytes) {
            (Some(a), Some(b)) if b > 0 => Some(a as f64 / b as f64 - 1.0),
            _ => None,
        };
        let ppl = match (cmp.and_then(|c| c.nll.as_ref()), v.ppl, alone.ppl) {
            (Some(n), _, _) => fmt_interval(n, fmt_ratio_pct),
            (None, Some(a), Some(b)) => fmt_delta_ppl(a.value, b.value),
            _ => "—".into(),
        };
        // ΔKLD: its interval when paired, else the difference of the point estimates.
        let (dkld, kld_text) = match (cmp.and_then(|c| c.kld.as_ref()), v.kld, alone.kld) {
            (Some(k), _, _) => (Some(k.interval95()), fmt_interval(k, |x| format!("{x:+.4}"))),
            (None, Some(a), Some(b)) => {
                (Some((a.value - b.value, a.value - b.value)), format!("{:+.4}", a.value - b.value))
            }
            _ => (None, "—".into()),
        };
        let unstructured = ["magnitude", "wanda", "sparsegpt"].contains(&v.method.as_str());
        let verdict = combined_verdict(size_change, dkld, cmp.is_some(), unstructured);
        beats += usize::from(verdict.starts_with("beats"));
        let rival = match (best_unpruned_no_larger(r, v), v.kld) {
            (Some(u), Some(k)) => {
                let (u, uk) = (&r.variants[u], r.variants[u].kld.map_or(f64::NAN, |m| m.value));
                let word = if uk < k.value { "lower: pruning is dominated" } else { "higher: pruning is ahead" };
                format!("`{}` ({} MiB), KLD {uk:.4}, {word}", cell(&u.name), fmt_mib(u))
            }
            (None, Some(_)) => "none that small: pruning is ahead".into(),
            _ => "—".into(),
        };
        frontier += usize::from(rival.ends_with("ahead"));
        let row = [
            format!("`{}`", cell(&v.name)),
            format!("`{}`", cell(&alone.name)),
            opt(size_change, |x| format!("{:+.1}%", 100.0 * x)),
            ppl,
            kld_text,
            verdict,
            rival,
        ];
        table_row(md, &row);
    }
    let _ = writeln!(
        md,
        "\nPruning beats its own quantization alone in {beats} of {} pair(s); {frontier} pruned variant(s) have a lower \
         KLD than every variant without pruning whose file is no larger (point estimates).\n",
        pairs.len()
    );
}

/// Among the measured variants without pruning (microscale or stock, not the baseline) whose file
/// is no larger than `v`'s, the one with the lowest KLD: what quantization alone reaches at that size.
fn best_unpruned_no_larger(r: &Results, v: &Variant) -> Option<usize> {
    let size = v.size_bytes?;
    (0..r.variants.len())
        .filter(|&u| {
            let x = &r.variants[u];
            // The file as shipped is not a way of quantizing (and, imported, holds the baseline's
            // own values): pruning is judged against the quantizations a study makes.
            !matches!(x.kind, Kind::Baseline | Kind::Source)
                && x.method == "none"
                && !x.failed()
                && x.size_bytes.is_some_and(|s| s <= size)
        })
        .filter_map(|u| Some((u, r.variants[u].kld?.value)))
        .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
        .map(|(u, _)| u)
}

/// The verdict on one pruned variant: smaller and no worse, or the measured reason it is not.
/// `dkld` is the KLD difference's (low, high) interval (a point when not paired).
fn combined_verdict(size_change: Option<f64>, dkld: Option<(f64, f64)>, paired: bool, unstructured: bool) -> String {
    // Within half a percent the file is the same size.
    let smaller = size_change.is_some_and(|x| x < -0.005);
    let at = if paired { " at 95%" } else { " (point estimate)" };
    let loss = match dkld {
        Some((lo, _)) if lo > 0.0 => format!("the loss is higher{at}"),
        Some((_, hi)) if hi < 0.0 => format!("the loss is lower{at}"),
        Some(_) => "the loss is the same within the interval".into(),
        None => "no KLD to compare".into(),
    };
    let worse = dkld.is_none_or(|(lo, _)| lo > 0.0);
    match (smaller, worse) {
        (true, false) => format!("beats it: a smaller file and {loss}"),
        (true, true) => format!("a trade: a smaller file, but {loss}"),
        (false, _) => {
            let why = match size_change {
                Some(x) if x > 0.005 => format!(
                    "the file is {:.1}% larger (widths that are not a multiple of the type's block fall back to a \
                     wider type; `--align` avoids it)",
                    100.0 * x
                ),
                _ if unstructured => "the file is no smaller (its zeros are stored like any other weight)".into(),
                _ => "the file is no smaller".into(),
            };
            format!("does not beat it: {why}, and {loss}")
        }
    }
}

/// Within budget at 95% confidence, on the point estimate only, or not; with the confidence.
fn verdict_cell(r: &Results, v: &Variant, cmp: &Comparison, c: &Criteria) -> String {
    let conf = confidence(r, cmp, c).map_or(String::new(), |x| format!(" (confidence {})", fmt_pct(x)));
    match super::sweet_spot::quality_check(r, v, c) {
        Err(_) => format!("over budget{conf}"),
        Ok(()) => match interval_check(r, cmp, c) {
            Ok(()) => format!("within budget at 95%{conf}"),
            Err(_) => format!("point estimate only{conf}"),
        },
    }
}

/// A value with its standard error or sd, as `value ± se`.
fn with_spread(value: String, spread: Option<String>) -> String {
    match spread {
        Some(se) => format!("{value} ± {se}"),
        None => value,
    }
}

/// A profile's generation speed as the results table shows it.
fn tg_cell(b: &crate::record::results::Bench) -> String {
    match b.status {
        Some(crate::record::results::Status::Oom) => "does not fit".into(),
        Some(status) if !b.fits() => status.to_string(),
        _ => opt(b.tg_tps, |t| with_spread(fmt_tps(t), b.tg_tps_sd.map(fmt_tps))),
    }
}

fn results_row(r: &Results, v: &Variant, bppl: Option<f64>) -> Vec<String> {
    let mut row = vec![
        format!("`{}`", cell(&v.name)),
        kind_label(v.kind).to_string(),
        cell(&v.recipe),
        cell(&v.method),
        opt(v.prune_ratio, |x| format!("{x}")),
        cell(&v.quant),
        fmt_mib(v),
        opt(v.bpw, |x| format!("{x:.2}")),
        opt(v.ppl, |m| with_spread(fmt_ppl(m.value), m.stderr.map(fmt_ppl))),
        match (v.ppl, bppl) {
            (Some(m), Some(b)) => fmt_delta_ppl(m.value, b),
            _ => "—".into(),
        },
        opt(v.kld, |m| with_spread(format!("{:.4}", m.value), m.stderr.map(|se| format!("{se:.4}")))),
        opt(v.same_top, fmt_pct),
    ];
    for m in &r.acc_metrics {
        row.push(opt(v.acc.get(m), |a| with_spread(fmt_pct(a.value), a.stderr.map(|se| format!("{:.1}", 100.0 * se)))));
    }
    for p in &r.profiles {
        row.push(v.bench(p).map_or_else(|| "—".into(), tg_cell));
    }
    if v.failed() {
        row[0] = format!("{} (failed)", row[0]);
    }
    row
}

fn results_table(md: &mut String, r: &Results) {
    let _ = writeln!(md, "## Results\n");
    let mut head: Vec<String> = [
        "variant",
        "kind",
        "recipe",
        "method",
        "prune",
        "quant",
        "size MiB",
        "bpw",
        "PPL ± se",
        "ΔPPL",
        "KLD ± se",
        "same top",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    head.extend(r.acc_metrics.iter().map(|m| format!("{m} ± se")));
    head.extend(r.profiles.iter().map(|p| format!("{p} tg t/s")));
    table_head(md, &head);
    let bppl = usable_baseline(r).and_then(|b| b.ppl).map(|m| m.value);
    for v in &r.variants {
        table_row(md, &results_row(r, v, bppl));
    }
    md.push('\n');
}

fn profile_table(md: &mut String, r: &Results, p: &str) {
    let _ = writeln!(md, "### {}\n", profile_label(r, p));
    table_head(
        md,
        &["variant", "status", "peak RSS MiB", "mem cap MiB", "pp t/s", "tg t/s", "load s", "repacked"]
            .map(String::from),
    );
    for v in r.ok() {
        let Some(b) = v.bench(p) else { continue };
        let status = match b.status {
            Some(crate::record::results::Status::Oom) => "oom (does not fit)".into(),
            Some(status) => status.to_string(),
            None => "—".into(),
        };
        table_row(
            md,
            &[
                format!("`{}`", cell(&v.name)),
                status,
                opt(b.peak_rss_mib, |x| format!("{x:.1}")),
                opt(b.mem_cap_mib, |x| format!("{x:.0}")),
                opt(b.pp_tps, |t| with_spread(fmt_tps(t), b.pp_tps_sd.map(fmt_tps))),
                opt(b.tg_tps, |t| with_spread(fmt_tps(t), b.tg_tps_sd.map(fmt_tps))),
                opt(b.load_s, |x| format!("{x:.2}")),
                repacked_cell(b.repacked),
            ],
        );
    }
    md.push('\n');
}

fn repacked_cell(repacked: Option<bool>) -> String {
    match repacked {
        Some(true) => "yes".into(),
        Some(false) => "no".into(),
        None => "—".into(),
    }
}

/// A profile as the report names it: a device's measured rows say so (with the CPU), and an
/// emulated profile a device was measured as says that it is emulated.
pub fn profile_label(r: &Results, p: &str) -> String {
    if let Some(d) = r.measured.get(p) {
        return format!("{p} — measured on device: {}, {}", d.device.cpu, d.device.arch);
    }
    if r.measured.contains_key(&super::devices::measured_key(p)) {
        return format!("{p} (emulated on this host; measured on the device below)");
    }
    p.to_string()
}

/// Per device measured: what it is (CPU, architecture, llama.cpp's CPU features, memory), how its
/// caps were enforced, and every row next to the emulated profile of the same name, if any.
fn measured_section(md: &mut String, r: &Results) {
    if r.measured.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "## Measured on device
"
    );
    for (key, d) in &r.measured {
        let dev = &d.device;
        let emulated =
            r.profiles.iter().find(|p| !r.measured.contains_key(*p) && super::devices::measured_key(p) == *key);
        let _ = writeln!(md, "### {} — measured on device\n", dev.name);
        let _ = writeln!(
            md,
            "- CPU: {} ({}, {} CPUs, {:.0} MiB of memory)\n- llama.cpp's CPU features there: {}\n- Profile: {}, {} \
             thread(s); memory cap: {}\n- {} of {} variants measured{}\n",
            dev.cpu,
            dev.arch,
            dev.cpus,
            dev.memory_mib,
            if dev.cpu_features.is_empty() { "none reported" } else { &dev.cpu_features },
            distinct_profiles(d),
            d.rows.first().map_or(0, |x| x.threads),
            d.rows.first().map_or("—".to_string(), |x| cell(&x.mem_enforcement)),
            d.rows.len(),
            r.variants.len(),
            match emulated {
                Some(p) => format!("; beside them, the profile `{p}` as emulated on the workstation"),
                None => String::new(),
            }
        );
        let mut head: Vec<String> =
            ["variant", "kind", "size MiB", "status", "pp t/s", "tg t/s"].map(String::from).to_vec();
        if let Some(p) = emulated {
            head.push(format!("{p} (emulated) tg t/s"));
        }
        head.extend(["peak RSS MiB", "repacked"].map(String::from));
        table_head(md, &head);
        for row in &d.rows {
            let Some(v) = r.variants.iter().find(|v| v.name == row.variant) else { continue };
            let b = v.bench(key).cloned().unwrap_or_default();
            let mut cells = vec![
                format!("`{}`", cell(&v.name)),
                kind_label(v.kind).to_string(),
                fmt_mib(v),
                match b.status {
                    Some(crate::record::results::Status::Oom) => "oom (does not fit)".into(),
                    Some(st) if !row.reason.is_empty() && st != crate::record::results::Status::Fits => {
                        format!("{st}: {}", cell(&row.reason))
                    }
                    Some(st) => st.to_string(),
                    None => "—".into(),
                },
                opt(b.pp_tps, |t| with_spread(fmt_tps(t), b.pp_tps_sd.map(fmt_tps))),
                opt(b.tg_tps, |t| with_spread(fmt_tps(t), b.tg_tps_sd.map(fmt_tps))),
            ];
            if let Some(p) = emulated {
                cells.push(v.bench(p).map_or_else(|| "—".into(), tg_cell));
            }
            cells.push(opt(b.peak_rss_mib, |x| format!("{x:.1}")));
            cells.push(match (row.repacked, row.repacked_mib) {
                (Some(true), Some(m)) => format!("yes ({m:.1} MiB)"),
                (x, _) => repacked_cell(x),
            });
            table_row(md, &cells);
        }
        md.push('\n');
    }
}

fn distinct_profiles(d: &crate::record::device_rows::DeviceRows) -> String {
    let names: BTreeSet<&str> = d.rows.iter().map(|x| x.profile.as_str()).collect();
    names.into_iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

fn failures(md: &mut String, r: &Results) {
    let _ = writeln!(md, "## Failed variants\n");
    if r.failed().count() == 0 {
        let _ = writeln!(md, "None.\n");
        return;
    }
    table_head(md, &["variant", "kind", "recipe", "line", "status", "error"].map(String::from));
    for v in r.failed() {
        table_row(
            md,
            &[
                format!("`{}`", cell(&v.name)),
                kind_label(v.kind).into(),
                cell(&v.recipe),
                v.line.to_string(),
                cell(&v.status),
                cell(v.error.as_deref().unwrap_or("")),
            ],
        );
    }
    md.push('\n');
}

fn frontiers(md: &mut String, plots: &[(String, Scatter)]) {
    let _ = writeln!(md, "## Pareto frontiers\n");
    let _ = writeln!(
        md,
        "Variants no other variant beats on both file size and the metric (all kinds compete; failed variants excluded), \
         smallest first.\n"
    );
    if plots.is_empty() {
        let _ = writeln!(md, "No variant has both a file size and a metric.\n");
    }
    for (_, s) in plots {
        let items: Vec<String> = s
            .frontier()
            .iter()
            .map(|&i| {
                let p = &s.points[i];
                let kind = if p.kind == Kind::Stock { ", llama.cpp stock" } else { "" };
                format!("`{}` ({:.2} MiB, {}{kind})", p.name, p.size_mib, s.unit.format(p.y))
            })
            .collect();
        let _ = writeln!(md, "- {}: {}", s.metric, items.join(" → "));
    }
    md.push('\n');
}

fn plot_list(md: &mut String, plots: &[(String, Scatter)]) {
    let _ = writeln!(md, "## Plots\n");
    if plots.is_empty() {
        let _ = writeln!(md, "No plot: no variant has both a file size and a metric.");
    }
    for (file, s) in plots {
        let _ = writeln!(md, "### {}\n\n![{}](plots/{file})\n", s.title, s.title);
    }
}

fn table_head(md: &mut String, head: &[String]) {
    let _ = writeln!(md, "| {} |", head.join(" | "));
    let _ = writeln!(md, "|{}", head.iter().map(|_| "---|").collect::<String>());
}

fn table_row(md: &mut String, row: &[String]) {
    let _ = writeln!(md, "| {} |", row.join(" | "));
}

/// The file as shipped (a `source` row), when the study has one.
fn as_shipped(r: &Results) -> Option<&crate::record::results::Variant> {
    r.variants.iter().find(|v| v.kind == Kind::Source && v.size_bytes.is_some())
}

/// `v`'s size against the file the user started from, e.g. `−9.3% vs as shipped` (None without a
/// `source` row, or for that row itself).
fn vs_as_shipped(r: &Results, v: &crate::record::results::Variant) -> Option<String> {
    let s = as_shipped(r)?;
    if s.name == v.name {
        return Some("the file as shipped".into());
    }
    let (a, b) = (v.size_bytes? as f64, s.size_bytes? as f64);
    Some(format!("{:+.1}% vs as shipped", 100.0 * (a / b - 1.0)).replace('-', "−"))
}

/// `- **P**: `name` (kind) — S MiB, B bpw, PPL x (+d% vs baseline y), acc..., tg t/s, peak RSS; k of n within budget`
fn sweet_spot_line(r: &Results, s: &SweetSpot) -> String {
    let i = match &s.pick {
        Ok(i) => *i,
        Err(reason) => return format!("- **{}**: none — {}", profile_label(r, &s.profile), reason.replace('\n', " ")),
    };
    let v = &r.variants[i];
    let base = r.baseline();
    let mut parts = vec![format!("{} MiB", fmt_mib(v))];
    if let Some(saving) = vs_as_shipped(r, v) {
        parts.push(saving);
    }
    if let Some(b) = v.bpw {
        parts.push(format!("{b:.2} bpw"));
    }
    if let Some(p) = v.ppl {
        match base.and_then(|b| b.ppl) {
            Some(bp) => parts.push(format!(
                "PPL {} ({} vs baseline {})",
                fmt_ppl(p.value),
                fmt_delta_ppl(p.value, bp.value),
                fmt_ppl(bp.value)
            )),
            None => parts.push(format!("PPL {}", fmt_ppl(p.value))),
        }
    }
    for m in r.primary_acc_metrics() {
        if let Some(a) = v.acc.get(m) {
            match base.and_then(|b| b.acc.get(m)) {
                Some(ba) => parts.push(format!("{m} {} (baseline {})", fmt_pct(a.value), fmt_pct(ba.value))),
                None => parts.push(format!("{m} {}", fmt_pct(a.value))),
            }
        }
    }
    if let Some(b) = v.bench(&s.profile) {
        if let Some(t) = b.tg_tps {
            parts.push(format!("tg {} t/s", fmt_tps(t)));
        }
        if let Some(t) = b.pp_tps {
            parts.push(format!("pp {} t/s", fmt_tps(t)));
        }
        match (b.peak_rss_mib, b.mem_cap_mib) {
            (Some(rss), Some(cap)) => parts.push(format!("peak RSS {rss:.1} MiB of a {cap:.0} MiB cap")),
            (Some(rss), None) => parts.push(format!("peak RSS {rss:.1} MiB")),
            _ => {}
        }
    }
    format!(
        "- **{}**: `{}` ({}) — {}; {} of {} fitting variant(s) within the budget",
        profile_label(r, &s.profile),
        v.name,
        kind_label(v.kind),
        parts.join(", "),
        s.qualifying.len(),
        s.n_fit
    )
}

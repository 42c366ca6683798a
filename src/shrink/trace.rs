//! `OUT.search.json`: every candidate the search measured, with its proxy and, when confirmed,
//! its verdict on the budget's metrics; the references measured beside it; the pick, or by how
//! much the best candidate misses. The model card is written from this record alone, so its
//! numbers are the trace's.

use super::proxy::{ProxyResult, ProxySpec, Sensitivity};
use super::search::Bracket;
use super::ShrinkOptions;
use crate::quant::budget::{self, TensorOptions};
use crate::quant::GgmlType;
use crate::record::results::Results;
use crate::report::paired::Paired;
use crate::report::sweet_spot::{confidence, interval_check, quality_check, Criteria};
use crate::util::stats::Bootstrap;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A loss-table row as kept on disk (`OUT.shrink/loss-table.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TableRow {
    pub name: String,
    /// (type, bytes, loss)
    pub candidates: Vec<(String, u64, f64)>,
}

impl From<TensorOptions> for TableRow {
    fn from(t: TensorOptions) -> TableRow {
        TableRow {
            name: t.name,
            candidates: t.candidates.iter().map(|c| (c.ty.name().to_string(), c.bytes, c.loss)).collect(),
        }
    }
}

impl TableRow {
    pub fn into_options(self) -> Result<TensorOptions> {
        let candidates = self
            .candidates
            .into_iter()
            .map(|(ty, bytes, loss)| Ok(budget::Candidate { ty: GgmlType::parse(&ty)?, bytes, loss }))
            .collect::<Result<_>>()?;
        Ok(TensorOptions { name: self.name, candidates })
    }
}

/// The size the search starts below.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reference {
    pub name: String,
    pub bytes: u64,
}

/// One candidate file and its proxy.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Candidate {
    pub name: String,
    pub target_bytes: u64,
    pub file_bytes: u64,
    pub proxy: Option<ProxyResult>,
    /// Its proxy KLD is within the proxy's limit.
    pub passes: bool,
    pub error: Option<String>,
    /// Where the study keeps it.
    pub path: String,
    /// What it is made of: (type, tensors, bytes), most bytes first.
    pub composition: Vec<(String, usize, u64)>,
    /// The structured pruning it was made with (None: none).
    #[serde(default)]
    pub prune: Option<PruneTrial>,
}

/// Structured pruning a search tries (`--prune-trial ffn-heal:0.1`): only methods that remove
/// whole rows and columns make a GGUF smaller (zeroed weights are stored all the same).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PruneTrial {
    /// layers, ffn, heads, each with or without -heal (sweep grids' names).
    pub method: String,
    pub ratio: f64,
}

impl PruneTrial {
    pub const METHODS: &'static [&'static str] = &["layers", "layers-heal", "ffn", "ffn-heal", "heads", "heads-heal"];

    /// Kept widths are multiples of 32, so that every 32-block type can still hold a pruned
    /// down projection's rows (1536 × 0.9 = 1382 fits none, and would stay F16).
    pub const ALIGN: usize = 32;

    /// `ffn-heal:0.1`.
    pub fn parse(s: &str) -> Result<PruneTrial> {
        let Some((method, ratio)) = s.split_once(':') else {
            anyhow::bail!("--prune-trial {s:?}: write METHOD:RATIO, e.g. ffn-heal:0.1");
        };
        let ratio = ratio
            .trim()
            .parse::<f64>()
            .map_err(|_| anyhow::anyhow!("--prune-trial {s:?}: {ratio:?} is not a ratio"))?;
        let t = PruneTrial { method: method.trim().to_string(), ratio };
        t.validate()?;
        Ok(t)
    }

    pub fn validate(&self) -> Result<()> {
        if !Self::METHODS.contains(&self.method.as_str()) {
            anyhow::bail!(
                "--prune-trial {}: only structured pruning makes a GGUF smaller ({}); sparsity stores its zeros",
                self.method,
                Self::METHODS.join(", ")
            );
        }
        if !(self.ratio > 0.0 && self.ratio < 1.0) {
            anyhow::bail!("--prune-trial {}:{}: the ratio is a fraction between 0 and 1", self.method, self.ratio);
        }
        Ok(())
    }

    /// `ffn-heal 10%`.
    pub fn label(&self) -> String {
        format!("{} {}%", self.method, (100.0 * self.ratio).round())
    }

    /// The `convert` flags that prune the same way.
    pub fn convert_flags(&self) -> String {
        let base = self.method.trim_end_matches("-heal");
        let flag = match base {
            "layers" => "--drop-layers",
            "ffn" => "--prune-ffn",
            _ => "--prune-heads",
        };
        let heal = if self.method.ends_with("-heal") { " --heal" } else { "" };
        let align = if base == "layers" { String::new() } else { format!(" --align {}", Self::ALIGN) };
        format!("{flag} {}{align}{heal}", self.ratio)
    }
}

impl Candidate {
    pub fn measured(name: &str, target: u64, file_bytes: u64, p: ProxyResult, limit: f64, path: &Path) -> Candidate {
        Candidate {
            name: name.into(),
            target_bytes: target,
            file_bytes,
            passes: p.kld <= limit,
            proxy: Some(p),
            error: None,
            path: path.display().to_string(),
            composition: composition(path).unwrap_or_default(),
            prune: None,
        }
    }

    pub fn failed(name: &str, target: u64, error: &str) -> Candidate {
        Candidate {
            name: name.into(),
            target_bytes: target,
            file_bytes: 0,
            proxy: None,
            passes: false,
            error: Some(error.into()),
            path: String::new(),
            composition: vec![],
            prune: None,
        }
    }
}

/// Tensors and bytes per type in a GGUF.
fn composition(path: &Path) -> Result<Vec<(String, usize, u64)>> {
    let f = crate::gguf::GgufFile::open(path)?;
    let mut by: Vec<(String, usize, u64)> = Vec::new();
    for t in &f.tensors {
        let ty = t.ggml_type.name().to_string();
        match by.iter_mut().find(|(n, ..)| *n == ty) {
            Some(e) => {
                e.1 += 1;
                e.2 += t.n_bytes;
            }
            None => by.push((ty, 1, t.n_bytes)),
        }
    }
    by.sort_by_key(|e| std::cmp::Reverse(e.2));
    Ok(by)
}

/// A bisection step: the candidate measured and the bracket after it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Step {
    pub step: usize,
    pub candidate: Candidate,
    pub bracket: Bracket,
}

/// A candidate measured on the budget's own metrics.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Confirm {
    pub candidate: String,
    pub file_bytes: u64,
    pub within_budget: bool,
    pub fits: bool,
    pub why: Option<String>,
    pub confidence: Option<f64>,
    pub status: Option<String>,
    pub error: Option<String>,
}

/// An interval: point estimate and 95% bounds.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Interval {
    pub estimate: f64,
    pub lo: f64,
    pub hi: f64,
}

impl Interval {
    fn of(b: &Bootstrap, f: impl Fn(f64) -> f64) -> Interval {
        let (lo, hi) = b.interval95();
        Interval { estimate: f(b.estimate), lo: f(lo), hi: f(hi) }
    }
}

/// One row of the study, as the card shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    pub name: String,
    pub kind: String,
    pub recipe: String,
    pub size_bytes: Option<u64>,
    pub bpw: Option<f64>,
    pub ppl: Option<f64>,
    /// Perplexity change against the baseline, percent.
    pub ppl_change_pct: Option<Interval>,
    pub kld: Option<Interval>,
    /// Accuracy per task (fraction) and its paired difference from the baseline (points).
    pub acc: Vec<(String, f64, Option<Interval>)>,
    pub acc_mean_change_points: Option<Interval>,
    pub tg_tps: Option<f64>,
    pub pp_tps: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    pub status: Option<String>,
    pub within_budget: Option<bool>,
    pub confidence: Option<f64>,
    pub why: Option<String>,
}

/// The study's rows with their paired intervals against the baseline.
pub fn references(results: &Results, paired: &Paired, c: &Criteria, profile: &str) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (i, v) in results.variants.iter().enumerate() {
        let cmp = paired.vs_baseline[i].as_ref();
        let bench = v.bench(profile);
        let verdict = match (v.kind, cmp) {
            (crate::record::results::Kind::Baseline, _) => None,
            (_, Some(cmp)) => Some(quality_check(results, v, c).and_then(|()| interval_check(results, cmp, c))),
            (_, None) => Some(quality_check(results, v, c)),
        };
        rows.push(Row {
            name: v.name.clone(),
            kind: v.kind.as_str().into(),
            recipe: v.recipe.clone(),
            size_bytes: v.size_bytes,
            bpw: v.bpw,
            ppl: v.ppl.map(|m| m.value),
            ppl_change_pct: cmp.and_then(|c| c.nll.as_ref()).map(|b| Interval::of(b, |x| 100.0 * (x.exp() - 1.0))),
            kld: cmp.and_then(|c| c.kld.as_ref()).map(|b| Interval::of(b, |x| x)),
            acc: results
                .primary_acc_metrics()
                .into_iter()
                .filter_map(|m| {
                    let a = v.acc.get(m)?;
                    Some((
                        m.to_string(),
                        a.value,
                        cmp.and_then(|c| c.acc.get(m)).map(|b| Interval::of(b, |x| 100.0 * x)),
                    ))
                })
                .collect(),
            acc_mean_change_points: cmp.and_then(|c| c.acc_mean.as_ref()).map(|b| Interval::of(b, |x| 100.0 * x)),
            tg_tps: bench.and_then(|b| b.tg_tps),
            pp_tps: bench.and_then(|b| b.pp_tps),
            peak_rss_mib: bench.and_then(|b| b.peak_rss_mib),
            status: bench.and_then(|b| b.status).map(|s| s.as_str().to_string()).or_else(|| v.error.clone()),
            within_budget: verdict.as_ref().map(|r| r.is_ok() && bench.is_some_and(|b| b.fits())),
            confidence: cmp.and_then(|cmp| confidence(results, cmp, c)),
            why: verdict.and_then(|r| r.err()),
        });
    }
    Ok(rows)
}

/// The whole search.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Trace {
    pub model: String,
    pub as_shipped: Option<String>,
    pub profile: String,
    pub max_ppl_increase: f64,
    pub max_acc_drop: f64,
    pub confidence_level: f64,
    pub ppl_windows: usize,
    pub tasks: Vec<String>,
    pub limit: Option<usize>,
    pub calib_chunks: usize,
    pub proxy: ProxySpec,
    pub proxy_kld_limit: f64,
    pub reference: Reference,
    pub sensitivities: Vec<Sensitivity>,
    pub steps: Vec<Step>,
    /// Structured pruning tried at the largest failing size (`ShrinkOptions::prune_trials`).
    #[serde(default)]
    pub prune_trials: Vec<Candidate>,
    pub confirms: Vec<Confirm>,
    pub references: Vec<Row>,
    pub pick: Option<String>,
    pub miss: Option<String>,
    pub command: String,
    /// The `microscale convert` command that rebuilds the pick (or the best candidate).
    pub rebuild: Option<String>,
    /// Wall time of this run (a resumed run counts only its own).
    pub elapsed_s: f64,
    pub microscale: String,
    pub llama_cpp: String,
}

impl Trace {
    pub fn new(
        opts: &ShrinkOptions,
        as_shipped: Option<&Path>,
        proxy: &ProxySpec,
        proxy_kld_limit: f64,
        reference: Reference,
        sensitivities: Vec<Sensitivity>,
    ) -> Trace {
        Trace {
            model: opts.model.display().to_string(),
            as_shipped: as_shipped.map(|p| p.display().to_string()),
            profile: opts.profile.clone(),
            max_ppl_increase: opts.criteria.max_ppl_increase,
            max_acc_drop: opts.criteria.max_acc_drop,
            confidence_level: 0.95,
            ppl_windows: opts.ppl_chunks,
            tasks: opts.tasks.clone(),
            limit: opts.limit,
            calib_chunks: opts.calib_chunks,
            proxy: proxy.clone(),
            proxy_kld_limit,
            reference,
            sensitivities,
            steps: vec![],
            prune_trials: vec![],
            confirms: vec![],
            references: vec![],
            pick: None,
            miss: None,
            command: opts.command.clone(),
            rebuild: None,
            elapsed_s: 0.0,
            microscale: env!("CARGO_PKG_VERSION").into(),
            llama_cpp: crate::engine::LLAMA_CPP_SYS_VERSION.into(),
        }
    }

    pub fn push(&mut self, candidate: Candidate, bracket: Bracket) {
        let step = self.steps.len() + 1;
        self.steps.push(Step { step, candidate, bracket });
    }

    /// The sizes of the bracket over the steps, for its check: it only narrows.
    pub fn brackets(&self) -> Vec<Bracket> {
        self.steps.iter().map(|s| s.bracket).collect()
    }

    /// The row of the study named `name`.
    pub fn row(&self, name: &str) -> Option<&Row> {
        self.references.iter().find(|r| r.name == name)
    }

    /// Why nothing was picked: the confirmed candidate that came closest and by how much it
    /// misses, or that no candidate passed the proxy.
    pub fn best_miss(&self) -> String {
        let best =
            self.confirms.iter().max_by(|a, b| a.confidence.unwrap_or(0.0).total_cmp(&b.confidence.unwrap_or(0.0)));
        match best {
            Some(c) => format!(
                "the best candidate, {} ({}), misses: {} (confidence within budget {})",
                c.candidate,
                crate::util::mem::format_size(c.file_bytes),
                c.why.clone().unwrap_or_else(|| "not within the budget".into()),
                c.confidence.map_or("unknown".into(), |x| format!("{:.1}%", 100.0 * x))
            ),
            None => {
                let best = self
                    .steps
                    .iter()
                    .filter_map(|s| s.candidate.proxy.as_ref().map(|p| (s, p.kld)))
                    .min_by(|a, b| a.1.total_cmp(&b.1));
                match best {
                    Some((s, kld)) => format!(
                        "no candidate passed the proxy: the best, {} ({}), has a proxy KLD of {kld:.4} against the limit of {:.4}",
                        s.candidate.name,
                        crate::util::mem::format_size(s.candidate.file_bytes),
                        self.proxy_kld_limit
                    ),
                    None => "no candidate could be built".into(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PruneTrial;

    #[test]
    fn a_prune_trial_parses_and_rebuilds_with_convert_s_flags() {
        let t = PruneTrial::parse("ffn-heal:0.1").unwrap();
        assert_eq!((t.method.as_str(), t.ratio, t.label()), ("ffn-heal", 0.1, "ffn-heal 10%".to_string()));
        assert_eq!(t.convert_flags(), "--prune-ffn 0.1 --align 32 --heal");
        assert_eq!(PruneTrial::parse("layers:0.2").unwrap().convert_flags(), "--drop-layers 0.2");
        assert_eq!(PruneTrial::parse("heads:0.34").unwrap().convert_flags(), "--prune-heads 0.34 --align 32");
        for bad in ["ffn-heal", "sparsegpt:0.5", "ffn:0", "ffn:1", "ffn:x"] {
            assert!(PruneTrial::parse(bad).is_err(), "{bad}");
        }
    }
}

//! The cheap proxy: mean KL divergence from the baseline over WikiText-2 *validation* windows
//! that follow the calibration's tokens, so that they are disjoint both from what the importance
//! matrix and second moments saw and from the test windows and task items the final verdict is
//! stated on. The baseline's log-probabilities are saved once (llama-perplexity's format) and
//! every candidate is compared against the file.
//!
//! The proxy also measures how sensitive the model is to each tensor role ([`sensitivities`]):
//! the budget's loss is each layer's own output error, which says nothing of how much of it
//! reaches the logits. On SmolLM2-135M the token embedding's error (it is also the output head)
//! counts for about 25 times less, per unit, than the median role's, `attn_v`'s for 11 times more:
//! unscaled, the budget keeps the embedding at Q8_0 and starves the blocks.
//!
//! The probes round to nearest, while the candidates' losses are GPTQ's: a block role's scale is
//! its round-to-nearest KLD over its GPTQ loss, so it over-states that role by GPTQ's gain (the
//! embedding, never GPTQ-rounded, is exact). The search errs towards giving the blocks bits; the
//! final verdict is measured, not predicted.

use crate::convert::budget::role;
use crate::convert::{convert, ConvertOptions};
use crate::engine::{LoadOptions, Model};
use crate::eval::kld::{kl_divergence_from_file, save_base_log_probs, BaseLogProbsFile};
use crate::eval::perplexity::PerplexityOptions;
use crate::quant::budget::TensorOptions;
use crate::quant::mix::{Scheme, TensorTypeOverride};
use crate::quant::GgmlType;
use anyhow::{anyhow, bail, Context, Result};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the proxy's windows come from and how they are run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProxySpec {
    /// The text (WikiText-2 validation, as shipped in the data folder).
    pub text: PathBuf,
    /// Tokens skipped first: the calibration's.
    pub skip_tokens: usize,
    pub windows: usize,
    pub n_ctx: usize,
    #[serde(skip, default = "one")]
    pub threads: usize,
    #[serde(skip)]
    pub load: LoadOptions,
}

fn one() -> usize {
    1
}

impl ProxySpec {
    fn options(&self) -> PerplexityOptions {
        PerplexityOptions { n_ctx: self.n_ctx, n_batch: self.n_ctx, threads: self.threads, chunks: Some(self.windows) }
    }
}

/// One file's proxy measures.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ProxyResult {
    pub kld: f64,
    pub kld_stderr: f64,
    pub ppl_ratio: f64,
    pub same_top: f64,
}

/// Save the baseline's log-probabilities over the proxy windows at `out` (kept: done once).
pub fn save_base(baseline: &Path, spec: &ProxySpec, out: &Path) -> Result<()> {
    if out.exists() {
        return Ok(());
    }
    let model = Model::load_with(baseline, &spec.load)?;
    let text =
        std::fs::read_to_string(&spec.text).map_err(|e| anyhow!("{}: cannot read ({e})", spec.text.display()))?;
    let tokens = model.tokenize(&text, true);
    let need = spec.skip_tokens + spec.windows * spec.n_ctx;
    if tokens.len() < need {
        bail!(
            "{}: {} tokens, but {} proxy windows of {} after the calibration's {} tokens need {need}",
            spec.text.display(),
            tokens.len(),
            spec.windows,
            spec.n_ctx,
            spec.skip_tokens
        );
    }
    save_base_log_probs(&model, &tokens[spec.skip_tokens..need], &spec.options(), out, true)
}

/// The proxy measures of `model` against the saved base.
pub fn measure(model: &Path, base: &Path, spec: &ProxySpec) -> Result<ProxyResult> {
    let m = Model::load_with(model, &spec.load)?;
    let file = BaseLogProbsFile::open(base)?;
    let r = kl_divergence_from_file(&m, &file, &spec.options(), true)?;
    Ok(ProxyResult { kld: r.kld_mean, kld_stderr: r.kld_stderr, ppl_ratio: r.ppl_ratio, same_top: r.same_top })
}

/// `f()`'s result, saved as JSON at `path` the first time and read back after (a resumed search
/// does not measure again).
pub fn cached<T: Serialize + DeserializeOwned>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    if let Ok(text) = std::fs::read_to_string(path) {
        if let Ok(v) = serde_json::from_str(&text) {
            return Ok(v);
        }
    }
    let v = f()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    crate::util::atomic::write_file(path, serde_json::to_string_pretty(&v)?.as_bytes())?;
    Ok(v)
}

/// One role's measured sensitivity.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Sensitivity {
    pub role: String,
    /// Tensors of the role.
    pub tensors: usize,
    /// The probe: every tensor at Q8_0 but this role's at this type (round to nearest).
    pub probe_type: String,
    /// The proxy KLD the probe adds over all-Q8_0.
    pub kld_added: f64,
    /// The budget's loss the probe adds (its loss table, at the probe type minus at Q8_0).
    pub loss_added: f64,
    /// KLD per unit of loss, divided by the median over the roles (the budget's `--loss-scale`).
    pub scale: f64,
}

/// The probe type: 4.5 bits, every row a whole number of its blocks.
const PROBE: GgmlType = GgmlType::Q4_0;
const REFERENCE: GgmlType = GgmlType::Q8_0;

/// Measure every role's sensitivity with one probe file each (in `dir`, kept for resuming).
/// `table` is the budget's loss table of the candidates' conversion.
pub fn sensitivities(
    src: &Path,
    table: &[TensorOptions],
    dir: &Path,
    base: &Path,
    spec: &ProxySpec,
    mut progress: impl FnMut(&str),
) -> Result<Vec<Sensitivity>> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let reference = probe_file(src, dir, None, spec)?;
    progress("all q8_0");
    let ref_kld = cached(&dir.join("q8_0.json"), || measure(&reference, base, spec))?.kld;
    let mut out = Vec::new();
    for r in roles(table) {
        let tensors: Vec<&TensorOptions> = table.iter().filter(|t| role(&t.name) == r).collect();
        let loss_at = |ty: GgmlType| -> Option<f64> {
            tensors.iter().map(|t| t.candidates.iter().find(|c| c.ty == ty).map(|c| c.loss)).sum()
        };
        let (Some(probe_loss), Some(ref_loss)) = (loss_at(PROBE), loss_at(REFERENCE)) else { continue };
        progress(&r);
        let file = probe_file(src, dir, Some(&r), spec)?;
        let kld = cached(&dir.join(format!("{r}.json")), || measure(&file, base, spec))?.kld;
        out.push(Sensitivity {
            role: r.clone(),
            tensors: tensors.len(),
            probe_type: PROBE.name().to_string(),
            kld_added: kld - ref_kld,
            loss_added: probe_loss - ref_loss,
            scale: 0.0,
        });
    }
    normalise(&mut out);
    Ok(out)
}

/// KLD per unit of loss, relative to the median role. A probe within the proxy's noise (no KLD
/// added) or that adds no loss gets the median: nothing says it differs.
fn normalise(s: &mut [Sensitivity]) {
    let raw: Vec<Option<f64>> =
        s.iter().map(|x| (x.kld_added > 0.0 && x.loss_added > 0.0).then(|| x.kld_added / x.loss_added)).collect();
    let mut known: Vec<f64> = raw.iter().flatten().copied().collect();
    known.sort_by(f64::total_cmp);
    let median = known.get(known.len() / 2).copied().unwrap_or(1.0);
    for (x, r) in s.iter_mut().zip(raw) {
        x.scale = r.map_or(1.0, |r| r / median);
    }
}

/// The roles of the table's tensors, in first-seen order.
fn roles(table: &[TensorOptions]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in table {
        let r = role(&t.name).to_string();
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// All-Q8_0, or all-Q8_0 with `role` at the probe type.
fn probe_file(src: &Path, dir: &Path, role: Option<&str>, spec: &ProxySpec) -> Result<PathBuf> {
    let path = dir.join(format!("{}.gguf", role.unwrap_or("q8_0")));
    if path.exists() {
        return Ok(path);
    }
    let mut opts = ConvertOptions { threads: spec.threads, quiet: true, ..ConvertOptions::new(Scheme::Q8_0) };
    if let Some(r) = role {
        let pattern = format!(r"^(blk\.\d+\.)?{}\.weight$", regex::escape(r));
        opts.tensor_types.push(format!("{pattern}={}", PROBE.name()).parse::<TensorTypeOverride>()?);
    }
    convert(src, &path, &opts)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(role: &str, kld: f64, loss: f64) -> Sensitivity {
        Sensitivity {
            role: role.into(),
            tensors: 1,
            probe_type: "q4_0".into(),
            kld_added: kld,
            loss_added: loss,
            scale: 0.0,
        }
    }

    #[test]
    fn scales_are_kld_per_loss_relative_to_the_median() {
        let mut v = vec![s("a", 0.01, 1.0), s("b", 0.02, 1.0), s("c", 0.04, 1.0), s("token_embd", 0.02, 1000.0)];
        normalise(&mut v);
        let scales: Vec<f64> = v.iter().map(|x| x.scale).collect();
        // KLD per loss: 0.01, 0.02, 0.04, 0.00002; median (upper) 0.02.
        assert_eq!(scales, vec![0.5, 1.0, 2.0, 0.001]);
        let mut noisy = vec![s("a", 0.01, 1.0), s("b", -0.001, 1.0)];
        normalise(&mut noisy);
        assert_eq!(noisy[1].scale, 1.0, "a probe within the noise says nothing");
    }
}

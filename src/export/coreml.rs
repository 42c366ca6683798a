//! `microscale export --format coreml`: a LLaMA-family model to a Core ML package (iOS 17+,
//! an ML Program) with coremltools. The model is written in plain PyTorch from the checkpoint's
//! tensors (`coreml_convert.py`; every block sized from its own weights), traced for one fixed
//! sequence length, converted, its linear weights quantized by `coremltools.optimize`, and the
//! saved package read back and checked. Core ML runs only on Apple hardware: the package is
//! validated here, never run.

use crate::engine::python_env::PythonEnv;
use crate::util::choice::Choice;
use crate::util::progress::Progress;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

const CONVERTER: &str = include_str!("coreml_convert.py");

/// How the package stores the linear weights (compute is float16 either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CoreMlWeights {
    Fp16,
    Int8,
    Int4,
}

crate::impl_choice!(CoreMlWeights {
    Fp16 => "fp16": "float16 weights",
    Int8 => "int8": "int8 weights, a scale per output channel (constexpr_affine_dequantize)",
    Int4 => "int4": "int4 weights, a scale per block of 32 (iOS 18's per-block quantization)",
});

/// What an export wrote, as the package read back says.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct CoreMlPackage {
    pub file: PathBuf,
    pub weights: String,
    pub inputs: serde_json::Value,
    pub outputs: serde_json::Value,
    /// Operations holding weights, by type (`constexpr_affine_dequantize` for int8 weights).
    pub weight_ops: std::collections::BTreeMap<String, u64>,
    pub package_bytes: u64,
    pub spec_version: u64,
    pub seconds: f64,
    /// The negative log-likelihoods of the check window under the PyTorch model converted.
    #[serde(default, skip_serializing)]
    pub source_nll: Vec<Vec<f64>>,
    /// Perplexity of the first WikiText-2 test window of `seq` tokens under the PyTorch model
    /// that was converted, and under the GGUF through llama.cpp (when MODEL is a GGUF): the
    /// conversion's source checked against the engine.
    pub source_ppl: Option<f64>,
    pub gguf_ppl: Option<f64>,
}

/// Export `model` (a GGUF or a Hugging Face directory of the LLaMA family) to the package `out`
/// (a directory, `.mlpackage`), traced for `seq` tokens.
pub fn export(model: &Path, out: &Path, weights: CoreMlWeights, seq: usize, quiet: bool) -> Result<CoreMlPackage> {
    if seq < 2 {
        bail!("--seq {seq}: a Core ML model of at least 2 tokens");
    }
    super::check_architecture(model)?;
    let env = PythonEnv::ready(quiet)?;
    // The conversion's time, not the environment's making (once, minutes).
    let started = Instant::now();
    let work = super::ScratchDir::beside(out)?;
    let progress = Progress::spinner("export", quiet);
    let checkpoint = super::checkpoint_of(model, &work, &progress)?;
    progress.set_message(&format!("converting with coremltools ({})", weights.name()));
    let part = work.0.join("model.mlpackage");
    let flags = [("--weights", weights.name().to_string()), ("--seq", seq.to_string())];
    let check = check_window(model, seq)?;
    let request = serde_json::json!({"windows": check.iter().map(|(w, _)| w).collect::<Vec<_>>()});
    let what = format!("{}: the Core ML conversion", model.display());
    let stdout = super::run_converter(
        &env,
        &what,
        CONVERTER,
        (&checkpoint, &part),
        &flags,
        request.to_string().as_bytes(),
        &work,
    )?;
    progress.finish();
    let line = String::from_utf8_lossy(&stdout);
    let last = line.lines().rev().find(|l| l.starts_with('{')).unwrap_or("");
    let mut package: CoreMlPackage = serde_json::from_str(last).context("the Core ML converter's report")?;
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("{}: cannot replace", out.display()))?;
    }
    std::fs::rename(&part, out).with_context(|| format!("{}: cannot write", out.display()))?;
    package.file = out.to_path_buf();
    if let (Some((window, gguf_ppl)), Some(nll)) = (check.first(), package.source_nll.first()) {
        let expected = seq - 1 - seq / 2;
        if nll.len() != expected {
            bail!("{}: the converter scored {} tokens of the check window, not {expected}", model.display(), nll.len());
        }
        let source = crate::eval::perplexity::from_scores(std::slice::from_ref(window), seq, &package.source_nll);
        package.source_ppl = Some(source.ppl);
        package.gguf_ppl = Some(*gguf_ppl);
    }
    package.seconds = started.elapsed().as_secs_f64();
    Ok(package)
}

/// The first WikiText-2 test window of `seq` tokens and llama.cpp's perplexity on it, when
/// `model` is a GGUF (a directory has no engine to compare with).
fn check_window(model: &Path, seq: usize) -> Result<Vec<(Vec<i32>, f64)>> {
    if !model.is_file() {
        return Ok(vec![]);
    }
    let data = crate::util::data::DataDir::resolve(None);
    let path = data.file(crate::util::data::WIKITEXT_TEST)?;
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))?;
    let engine = crate::engine::Model::load(model)?;
    let tokens = engine.tokenize(&text, true);
    let opts = crate::eval::perplexity::PerplexityOptions {
        n_ctx: seq,
        n_batch: seq,
        threads: crate::engine::default_threads(),
        chunks: Some(1),
    };
    let windows = crate::eval::perplexity::windows(&engine, &tokens, seq, Some(1))?;
    let p = crate::eval::perplexity::perplexity_of_tokens(&engine, &tokens, &opts, true)?;
    Ok(windows.into_iter().map(|w| (w, p.ppl)).collect())
}

//! `microscale export --format litert`: a LLaMA-family model to a `.tflite` with litert-torch's
//! generative API (the layers of its SmolLM/LLaMA builders, configured from config.json): a
//! prefill signature whose logits are kept (so perplexity can be measured on it) and a decode
//! signature, over an external KV cache; weights quantized by litert-torch's recipes.

use crate::engine::python_env::PythonEnv;
use crate::gguf::GgufFile;
use crate::quant::GgmlType;
use crate::util::choice::Choice;
use crate::util::progress::Progress;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

const CONVERTER: &str = include_str!("litert_convert.py");

/// litert-torch's weight quantization recipes, named as its converter names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LiteRtQuant {
    None,
    Fp16,
    DynamicInt8,
    WeightOnlyInt8,
    DynamicInt4Block32,
    DynamicInt4Block128,
}

crate::impl_choice!(LiteRtQuant {
    None => "none": "float32 weights",
    Fp16 => "fp16": "float16 weights",
    DynamicInt8 => "dynamic_int8": "int8 weights, a scale per output channel; activations quantized on the fly",
    WeightOnlyInt8 => "weight_only_int8": "int8 weights, a scale per output channel; float activations",
    DynamicInt4Block32 => "dynamic_int4_block32": "int4 weights, a scale per block of 32 (no offset); activations quantized on the fly",
    DynamicInt4Block128 => "dynamic_int4_block128": "int4 weights, a scale per block of 128",
});

impl LiteRtQuant {
    /// The default recipe for a GGUF whose weights are mostly `ty`: float files keep their
    /// precision; quantized ones take 8-bit weights with float activations. LiteRT's 4-bit blocks
    /// are symmetric (one scale per 32, no offset), so they cannot hold Q4_1/K-quant values: on
    /// the default model (Q4_1) they cost 61% perplexity, int8 weights 0.3% (bench-results/export.md).
    pub fn default_for(ty: GgmlType) -> LiteRtQuant {
        match ty {
            GgmlType::F32 => LiteRtQuant::None,
            GgmlType::F16 | GgmlType::BF16 => LiteRtQuant::Fp16,
            _ => LiteRtQuant::WeightOnlyInt8,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// None: chosen from the source's bits per weight ([`LiteRtQuant::for_bits_per_weight`]).
    pub quantize: Option<LiteRtQuant>,
    /// Tokens of each prefill signature (`prefill_N`): what `eval` scores as one window (its
    /// --ctx-size), and the prompt lengths a benchmark runs.
    pub prefill: Vec<usize>,
    /// Tokens of the KV cache (prompt and answer).
    pub ctx: usize,
    pub quiet: bool,
}

/// What an export wrote.
#[derive(Debug, serde::Serialize)]
pub struct Exported {
    pub file: PathBuf,
    pub bytes: u64,
    pub quantize: LiteRtQuant,
    /// Why that quantization (the source's bits per weight, or the request).
    pub quantize_reason: String,
    pub prefill: Vec<usize>,
    pub ctx: usize,
    pub seconds: f64,
    /// Peak resident set of the converter's process.
    pub peak_rss_bytes: u64,
}

/// Export `model` (a GGUF or a Hugging Face directory of the LLaMA family) to `out`.
pub fn export(model: &Path, out: &Path, opts: &ExportOptions) -> Result<Exported> {
    let mut prefill = opts.prefill.clone();
    prefill.sort_unstable();
    prefill.dedup();
    match (prefill.first(), prefill.last()) {
        (Some(&shortest), Some(&longest)) if shortest >= 2 && longest <= opts.ctx => {}
        _ => bail!(
            "--prefill {prefill:?} and --ctx {}: each prefill needs at least 2 tokens and fits in the KV cache",
            opts.ctx
        ),
    }
    let gguf = super::check_architecture(model)?;
    let env = PythonEnv::ready(opts.quiet)?;
    // The conversion's time, not the environment's making (once, minutes).
    let started = Instant::now();
    let (quantize, quantize_reason) = choose_quant(gguf.as_ref(), opts.quantize);
    let work = super::ScratchDir::beside(out)?;
    let progress = Progress::spinner("export", opts.quiet);
    let checkpoint = super::checkpoint_of(model, &work, &progress)?;
    progress.set_message(&format!("converting with litert-torch ({})", quantize.name()));
    let part = work.0.join("model.tflite");
    let flags = [
        ("--quantize", quantize.name().to_string()),
        ("--prefill", prefill.iter().map(usize::to_string).collect::<Vec<_>>().join(",")),
        ("--ctx", opts.ctx.to_string()),
    ];
    let what = format!("{}: the LiteRT conversion", model.display());
    let answer = super::run_converter(&env, &what, CONVERTER, (&checkpoint, &part), &flags, b"", &work)?;
    // The converter's own last line (litert-torch prints on stdout too).
    let last = String::from_utf8_lossy(&answer).lines().rev().find(|l| !l.trim().is_empty()).map(str::to_owned);
    let said = last.and_then(|l| serde_json::from_str::<serde_json::Value>(&l).ok());
    let peak_rss_kib = said.and_then(|v| v["peak_rss_kib"].as_u64());
    progress.finish();
    std::fs::rename(&part, out).with_context(|| format!("{}: cannot write", out.display()))?;
    let bytes = std::fs::metadata(out)?.len();
    Ok(Exported {
        file: out.to_path_buf(),
        bytes,
        quantize,
        quantize_reason,
        prefill,
        ctx: opts.ctx,
        seconds: started.elapsed().as_secs_f64(),
        peak_rss_bytes: peak_rss_kib.unwrap_or(0) << 10,
    })
}

fn choose_quant(gguf: Option<&GgufFile>, asked: Option<LiteRtQuant>) -> (LiteRtQuant, String) {
    if let Some(q) = asked {
        return (q, "as asked".into());
    }
    let Some(file) = gguf else {
        return (LiteRtQuant::WeightOnlyInt8, "a checkpoint's weights: 8 bits".into());
    };
    match main_type(file) {
        Some(ty) => (LiteRtQuant::default_for(ty), format!("the GGUF's weights are mostly {}", ty.name())),
        None => (LiteRtQuant::WeightOnlyInt8, "a GGUF without tensors: 8 bits".into()),
    }
}

/// The type holding most of a GGUF's weights (None: no tensors).
pub fn main_type(file: &GgufFile) -> Option<GgmlType> {
    let mut by_type: std::collections::BTreeMap<&'static str, (u64, GgmlType)> = Default::default();
    for t in &file.tensors {
        by_type.entry(t.ggml_type.name()).or_insert((0, t.ggml_type)).0 += t.n_elements();
    }
    by_type.into_values().max_by_key(|(n, _)| *n).map(|(_, ty)| ty)
}

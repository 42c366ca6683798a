use super::Global;
use anyhow::Result;
use microscale::export::coreml::{self, CoreMlWeights};
use microscale::export::litert::{export, ExportOptions, LiteRtQuant};
use microscale::util::choice::Choice;
use microscale::util::mem::format_size;
use microscale::util::paths::{IoPaths, OutputKind};
use std::path::PathBuf;

/// Export a model to a phone's own runtime with the vendor's converter: LiteRT (Android) or
/// Core ML (iOS).
///
/// MODEL is a GGUF microscale wrote (or any LLaMA-family GGUF) or a Hugging Face directory. A GGUF
/// is dequantized to a checkpoint first, then litert-torch builds the model with its generative
/// API and converts it: a `prefill_N` signature (its logits kept, so `microscale eval` can score
/// the file) and a `decode` signature over an external KV cache of --ctx tokens. The weights are
/// quantized by litert-torch's recipe: --quantize, by default from the type holding most of the
/// GGUF's weights: F32 none, F16/BF16 fp16, any quantized type weight_only_int8 (LiteRT's int4
/// blocks are symmetric, with no offset: they cannot hold Q4_1 or K-quant values; on the default
/// model they cost 61% perplexity, int8 weights 0.3%).
///
/// Core ML: an ML Program package (OUT.mlpackage, iOS 17+) for one fixed sequence of --seq
/// tokens (input `input_ids`, output `logits`), its linear weights stored as --weights (int8 by
/// default), converted by coremltools from the model written in plain PyTorch, then read back and
/// checked (inputs, outputs, weight types, size). Core ML runs only on Apple hardware: the
/// package has not run here.
///
/// The converters run in a Python environment made by scripts/export-env.sh (pinned versions,
/// about 8 GB), made the first time it is needed. A failed conversion leaves no OUT.
///
/// Examples:
///   microscale export models/SmolLM2-135M-Instruct.Q4_1.gguf --format litert -o smollm2.tflite
///   microscale eval smollm2.tflite --tokenizer models/SmolLM2-135M-Instruct.Q4_1.gguf --chunks 8
///   microscale export q8.gguf --format litert --quantize fp16 --prefill 256 --ctx 1280 -o q8.tflite
///   microscale export models/SmolLM2-135M-Instruct.Q4_1.gguf --format coreml -o smollm2.mlpackage
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The model: a GGUF file or a Hugging Face directory (LLaMA family).
    model: PathBuf,
    /// The runtime to export for.
    #[arg(long, value_enum)]
    format: Format,
    /// The file to write (.tflite; for Core ML a .mlpackage directory).
    #[arg(short, long)]
    output: PathBuf,
    /// LiteRT: litert-torch's weight quantization (default: from the GGUF's main type; see above).
    #[arg(long, value_parser = super::choice::<LiteRtQuant>())]
    quantize: Option<LiteRtQuant>,
    /// Core ML: how the linear weights are stored.
    #[arg(long, value_parser = super::choice::<CoreMlWeights>(), default_value = "int8")]
    weights: CoreMlWeights,
    /// Core ML: the tokens of the one sequence the package takes.
    #[arg(long, default_value_t = 512, value_parser = super::tokens_arg::<2>())]
    seq: usize,
    /// Tokens of a prefill signature (one `eval` window: match --ctx-size there); repeatable, a
    /// `prefill_N` signature each (a benchmark's prompt length, say).
    #[arg(long, default_values_t = [512], value_parser = super::tokens_arg::<2>())]
    prefill: Vec<usize>,
    /// Tokens of the KV cache (prompt and answer).
    #[arg(long, default_value_t = 1024, value_parser = super::tokens_arg::<2>())]
    ctx: usize,
    /// Print what was written as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Format {
    /// LiteRT (.tflite), for Android's on-device stack (LiteRT, MediaPipe, LiteRT-LM).
    Litert,
    /// Core ML (.mlpackage), for iOS and macOS (validated here, not run).
    Coreml,
}

impl Args {
    pub fn run(self, g: Global) -> Result<()> {
        let kind = match self.format {
            Format::Litert => OutputKind::File,
            Format::Coreml => OutputKind::Dir,
        };
        IoPaths::new().input("MODEL", &self.model).output("--output", &self.output, kind).check()?;
        if let Format::Coreml = self.format {
            return self.run_coreml(g);
        }
        let opts =
            ExportOptions { quantize: self.quantize, prefill: self.prefill.clone(), ctx: self.ctx, quiet: g.quiet };
        let e = export(&self.model, &self.output, &opts)?;
        if self.json {
            return super::output::print_json(&serde_json::to_value(&e)?);
        }
        println!(
            "wrote {} (LiteRT, {} weights: {}; prefill {:?} tokens, KV cache {}; {}) in {:.0} s",
            e.file.display(),
            e.quantize.name(),
            e.quantize_reason,
            e.prefill,
            e.ctx,
            format_size(e.bytes),
            e.seconds
        );
        Ok(())
    }

    fn run_coreml(&self, g: Global) -> Result<()> {
        let p = coreml::export(&self.model, &self.output, self.weights, self.seq, g.quiet)?;
        if self.json {
            return super::output::print_json(&serde_json::to_value(&p)?);
        }
        println!(
            "wrote {} (Core ML ML Program, {} weights, {} tokens in, logits out; {}; checked, not run: Core ML runs \
             on Apple hardware only) in {:.0} s",
            p.file.display(),
            p.weights,
            self.seq,
            format_size(p.package_bytes),
            p.seconds
        );
        Ok(())
    }
}

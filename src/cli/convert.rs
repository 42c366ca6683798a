use super::mix_args::{BudgetArgs, MixArgs};
use super::prune_args::PruneArgs;
use super::{output, Global};
use anyhow::Result;
use microscale::convert::{convert, ConvertOptions};
use microscale::gguf::imatrix::Imatrix;
use microscale::quant::gptq::QuantMethod;
use microscale::quant::mix::Scheme;
use microscale::util::paths::{IoPaths, OutputKind};
use std::path::PathBuf;

/// Convert a Hugging Face directory or a GGUF file to GGUF, quantizing in the same pass.
///
/// The conversion streams: one tensor is in memory at a time, rows are converted in parallel,
/// and the output appears only when complete (a temporary file is renamed into place).
///
/// Float types keep 1-D tensors (norms, biases) in F32, as llama.cpp's converter does.
/// Quantized types are llama.cpp's mixes, chosen per tensor exactly as llama-quantize chooses
/// them (q4_k_m gives some attn_v and ffn_down tensors Q6_K; rows that are not a multiple of
/// 256 fall back to Q5_0/Q5_1/Q8_0); the quantizers are microscale's own, bit-exact with ggml.
/// The lowest-bit types (iq1_*, iq2_*, iq3_xxs, q2_k_s) need an importance matrix, as in
/// llama-quantize: --imatrix FILE, or --calib FILE to calibrate here (and save it).
///
/// Examples:
///   microscale convert models/smollm2-135m -o smollm2-f16.gguf --outtype f16
///   microscale convert models/smollm2-135m -o smollm2-q4_k_m.gguf --outtype q4_k_m --imatrix imatrix.gguf
///   microscale convert models/smollm2-135m -o mixed.gguf --outtype q4_k_s --tensor-type 'attn_v=q8_0'
///   microscale imatrix models/smollm2-135m -o imatrix.gguf --chunks 32
///   microscale convert models/smollm2-135m -o gptq.gguf --outtype q4_k_m --quant-method gptq
///   microscale convert models/smollm2-135m -o sgpt.gguf --outtype q8_0 --sparsity 0.5 --sparsity-method sparsegpt
///   microscale convert models/smollm2-135m -o 90m.gguf --outtype q4_k_m --imatrix imatrix.gguf --target-size 90MiB
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// A Hugging Face model directory (config.json + safetensors) or a .gguf file.
    src: PathBuf,
    /// The GGUF file to write.
    #[arg(short, long)]
    output: PathBuf,
    /// Output type, spelled as llama.cpp spells it.
    #[arg(long, value_parser = super::choice::<Scheme>(), default_value = "f16")]
    outtype: Scheme,
    #[command(flatten)]
    mix: MixArgs,
    #[command(flatten)]
    budget: BudgetArgs,
    /// Importance matrix (llama.cpp imatrix GGUF or legacy .dat) for the quantizers.
    #[arg(long)]
    imatrix: Option<PathBuf>,
    /// How quantized levels are chosen: rtn rounds to nearest (ggml's quantizers, as
    /// llama-quantize); gptq keeps ggml's choice of each block's scales but chooses the levels
    /// column by column, compensating each column's error through the inverse Hessian of the
    /// layer's inputs (GPTQ, Frantar et al. 2022) — calibrates (--calib-text, --calib-chunks) and
    /// writes a standard GGUF. Applies to the blocks' linear weights in Q4_0..Q8_0 and K-quants.
    #[arg(long, value_parser = super::choice::<QuantMethod>(), default_value = "rtn")]
    quant_method: QuantMethod,
    /// Re-quantize tensors of a GGUF that are already quantized (refused by default, as by
    /// llama-quantize: the rounding errors compound). Dequantizing to f32/f16/bf16 is always allowed.
    #[arg(long)]
    allow_requantize: bool,
    #[command(flatten)]
    prune: PruneArgs,
    /// Print a JSON report (pruning statistics included) on stdout.
    #[arg(long)]
    json: bool,
}

impl Args {
    pub fn run(self, g: Global) -> Result<()> {
        let io = IoPaths::new().input("SRC", &self.src).input_opt("--imatrix", self.imatrix.as_ref());
        self.prune.io(io).output("--output", &self.output, OutputKind::File).check()?;
        let opts = ConvertOptions {
            tensor_types: self.mix.tensor_types.clone(),
            mix_flags: self.mix.flags(),
            imatrix: self.imatrix.as_deref().map(Imatrix::load).transpose()?,
            prune: self.prune.spec(),
            allow_requantize: self.allow_requantize,
            budget: self.budget.budget(),
            loss_scales: self.budget.loss_scale.clone(),
            quant_method: self.quant_method,
            quiet: g.quiet,
            ..ConvertOptions::new(self.outtype)
        };
        let report = convert(&self.src, &self.output, &opts)?;
        if self.json {
            output::print_json(&report)?;
        } else if !g.quiet {
            if !report.sparsity.is_empty() {
                print!("{}", output::sparsity_table(&report.sparsity));
            }
            if !report.compensation.is_empty() {
                print!("{}", output::compensation_table(&report.compensation));
            }
        }
        if !g.quiet {
            eprintln!("{}", output::conversion_summary(&self.output, self.outtype, &report));
        }
        Ok(())
    }
}

use super::mix_args::MixArgs;
use super::{threads_arg, Global};
use anyhow::Result;
use microscale::engine::quantize::{stock_quantize, StockOptions};
use microscale::gguf::imatrix::Imatrix;
use microscale::quant::mix::Scheme;
use microscale::util::paths::{IoPaths, OutputKind};
use std::path::PathBuf;

/// Quantize a GGUF with llama.cpp's own quantizer (llama_model_quantize, as llama-quantize).
///
/// For comparisons: stock llama.cpp quants made from the same input as microscale's variants.
/// TYPE is llama.cpp's name (q8_0, q4_k_m, ...). The output appears only when complete.
///
/// Example: microscale stock-quantize smollm2-f32.gguf smollm2-stock-q4_k_m.gguf q4_k_m
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The GGUF to quantize (usually F32 or F16).
    input: PathBuf,
    /// The GGUF to write.
    output: PathBuf,
    /// Target type.
    #[arg(value_parser = super::choice::<Scheme>())]
    scheme: Scheme,
    /// Importance matrix (llama.cpp imatrix GGUF or legacy .dat).
    #[arg(long)]
    imatrix: Option<PathBuf>,
    #[command(flatten)]
    mix: MixArgs,
    /// Allow re-quantizing tensors that are already quantized (loses quality).
    #[arg(long)]
    allow_requantize: bool,
    /// Threads (default: all cores).
    #[arg(short, long, value_parser = threads_arg())]
    threads: Option<usize>,
}

impl Args {
    pub fn run(self, g: Global) -> Result<()> {
        IoPaths::new()
            .input("INPUT", &self.input)
            .input_opt("--imatrix", self.imatrix.as_ref())
            .output("OUTPUT", &self.output, OutputKind::File)
            .check()?;
        let imatrix = self.imatrix.as_deref().map(Imatrix::load).transpose()?;
        let opts = StockOptions {
            threads: self.threads.unwrap_or_else(microscale::engine::default_threads),
            allow_requantize: self.allow_requantize,
            tensor_types: self.mix.tensor_types.clone(),
            mix_flags: self.mix.flags(),
            quiet: g.quiet,
        };
        stock_quantize(&self.input, &self.output, self.scheme, imatrix.as_ref(), &opts)?;
        if !g.quiet {
            eprintln!("wrote {} (llama.cpp {})", self.output.display(), self.scheme.name());
        }
        Ok(())
    }
}

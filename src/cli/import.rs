use super::Global;
use anyhow::Result;
use microscale::convert::{import::import, OutType};
use microscale::util::paths::{IoPaths, OutputKind};
use std::path::PathBuf;

/// Write a Hugging Face directory (config.json, model.safetensors, tokenizer files) from a GGUF.
///
/// Quantized weights are dequantized exactly to f32 (or --dtype); LLaMA's Q/K row permutation is
/// undone, so the directory is an ordinary Hugging Face checkpoint that `convert` turns back into
/// the same GGUF. This is how a model that exists only as GGUF enters the safetensors pipeline.
///
/// Example: microscale import models/SmolLM2-135M-Instruct.Q4_1.gguf -o models/smollm2-135m
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The GGUF file to read.
    gguf: PathBuf,
    /// The directory to create (must not exist, or be empty).
    #[arg(short, long)]
    output: PathBuf,
    /// dtype of the safetensors weights.
    #[arg(long, value_parser = super::choice::<OutType>(), default_value = "f32")]
    dtype: OutType,
}

impl Args {
    pub fn run(self, g: Global) -> Result<()> {
        IoPaths::new().input("GGUF", &self.gguf).output("--output", &self.output, OutputKind::Dir).check()?;
        import(&self.gguf, &self.output, self.dtype, g.quiet)?;
        if !g.quiet {
            eprintln!("wrote {}", self.output.display());
        }
        Ok(())
    }
}

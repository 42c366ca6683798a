use super::{at_least, output, threads_arg, tokens_arg, Global};
use anyhow::{bail, Result};
use microscale::convert::{calibrate_model, model_tensor_names, ConvertOptions};
use microscale::gguf::imatrix::Imatrix;
use microscale::prune::PruneSpec;
use microscale::quant::mix::Scheme;
use microscale::util::data::DataDir;
use microscale::util::paths::{IoPaths, OutputKind};
use std::path::PathBuf;

/// Compute an importance matrix, as llama-imatrix does, in its GGUF format.
///
/// Runs the model through llama.cpp over calibration text in chunks of --ctx-size tokens (each
/// chunk starting with BOS) and sums, for every weight matrix in the blocks, the squared
/// activation of each input channel. The file steers low-bit quantization: pass it to
/// `convert --imatrix` or `stock-quantize --imatrix` (or llama-quantize). MODEL is a GGUF file
/// or a Hugging Face directory (built by llama.cpp from the conversion plan, no copy on disk).
/// Also saves the model's fingerprint and block influences, so `convert --calib FILE` reuses it.
///
/// Examples:
///   microscale imatrix models/smollm2-135m -o imatrix.gguf --chunks 32
///   microscale imatrix model.gguf -f my-domain.txt -o domain.gguf --in-file imatrix.gguf
///   microscale imatrix --in-file imatrix.gguf --show-statistics
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The model (GGUF or Hugging Face directory); not needed to merge or show --in-file files.
    model: Option<PathBuf>,
    /// Calibration text [default: the data folder's wikitext-2/wiki.valid.tokens].
    #[arg(short = 'f', long = "file", value_name = "TEXT")]
    text: Option<PathBuf>,
    /// The imatrix GGUF to write.
    #[arg(short, long, default_value = "imatrix.gguf")]
    output: PathBuf,
    /// Chunks to process [default: all the text holds].
    #[arg(long, value_name = "N", value_parser = at_least::<1>())]
    chunks: Option<usize>,
    /// Tokens per chunk.
    #[arg(short = 'c', long, default_value_t = 512, value_name = "N", value_parser = tokens_arg::<16>())]
    ctx_size: usize,
    /// Start from (and add to) these imatrix files; repeatable. Alone, merges them.
    #[arg(long = "in-file", value_name = "FILE")]
    in_files: Vec<PathBuf>,
    /// Print per-tensor statistics of the one --in-file (nothing is computed or written).
    #[arg(long)]
    show_statistics: bool,
    /// Statistics as JSON.
    #[arg(long, requires = "show_statistics")]
    json: bool,
    /// Threads (default: all cores).
    #[arg(short, long, value_parser = threads_arg())]
    threads: Option<usize>,
    /// The data folder (default: $MICROSCALE_DATA, else the one shipped with microscale).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

impl Args {
    pub fn run(self, g: Global) -> Result<()> {
        if self.show_statistics {
            IoPaths::new().inputs("--in-file", &self.in_files).check()?;
            let [file] = self.in_files.as_slice() else {
                bail!("--show-statistics needs exactly one --in-file (got {})", self.in_files.len())
            };
            let stats = Imatrix::load(file)?.statistics();
            if self.json {
                output::print_json(&stats)?;
            } else {
                print!("{}", output::imatrix_statistics_table(&stats));
            }
            return Ok(());
        }
        IoPaths::new()
            .input_opt("MODEL", self.model.as_ref())
            .input_opt("--file", self.text.as_ref())
            .inputs("--in-file", &self.in_files)
            .input_opt("--data-dir", self.data_dir.as_ref())
            .output("--output", &self.output, OutputKind::File)
            .check()?;
        // With a MODEL, files of another model are refused before the calibration, not after it.
        let model_names = match (&self.model, self.in_files.is_empty()) {
            (Some(model), false) => Some(model_tensor_names(model)?),
            _ => None,
        };
        let mut merged = Imatrix::default();
        for f in &self.in_files {
            let m = Imatrix::load(f)?;
            if let Some(names) = &model_names {
                m.check_names(names.iter().map(String::as_str), g.quiet)?;
            }
            merged.merge(&m)?;
        }
        let result = match &self.model {
            Some(model) => {
                let calib = calibrate_model(model, &self.convert_options(g))?;
                let mut m = calib.imatrix.clone();
                if self.in_files.is_empty() {
                    // Alone, the calibration keeps its fingerprint and block influences.
                    calib.save(&self.output)?;
                } else {
                    merged.merge(&m)?;
                    m = merged;
                    m.save(&self.output)?;
                }
                m
            }
            None if !self.in_files.is_empty() => {
                merged.save(&self.output)?;
                merged
            }
            None => bail!("give a MODEL to compute an imatrix, or --in-file files to merge"),
        };
        if !g.quiet {
            eprintln!(
                "wrote {} ({} entries, {} chunks of {} tokens)",
                self.output.display(),
                result.entries.len(),
                result.chunk_count,
                result.chunk_size
            );
        }
        Ok(())
    }

    fn convert_options(&self, g: Global) -> ConvertOptions {
        let prune = PruneSpec {
            calib_text: self.text.clone(),
            calib_chunks: self.chunks.unwrap_or(usize::MAX),
            calib_ctx: Some(self.ctx_size),
            data: DataDir::resolve(self.data_dir.as_deref()),
            ..PruneSpec::default()
        };
        ConvertOptions {
            prune,
            threads: self.threads.unwrap_or_else(microscale::engine::default_threads),
            quiet: g.quiet,
            ..ConvertOptions::new(Scheme::F32)
        }
    }
}

//! The `microscale` command line: flag definitions and dispatch only; the work lives in the library.

use anyhow::Result;
use clap::{Parser, Subcommand};
use microscale::convert::{self, import, OutType};
use microscale::engine;
use microscale::eval::perplexity::{self, PerplexityOptions};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "microscale",
    version,
    about = "Shrink open LLMs for edge devices and measure how far they can shrink and stay useful.",
    long_about = "Shrink open LLMs for edge devices and measure how far they can shrink and stay useful.\n\n\
        microscale reads Hugging Face checkpoints (safetensors) and GGUF files, writes GGUF that stock \
        llama.cpp runs, and evaluates models through the llama.cpp engine.\n\n\
        Typical flow on the default model (SmolLM2-135M-Instruct):\n  \
        scripts/fetch-default-model.sh                 # fetch the GGUF and import it to models/smollm2-135m\n  \
        microscale inspect models/smollm2-135m\n  \
        microscale convert models/smollm2-135m -o smollm2-f16.gguf --outtype f16\n  \
        microscale eval smollm2-f16.gguf --chunks 8"
)]
struct Cli {
    /// Print nothing but results and errors (no progress bars).
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Let llama.cpp print its own log to stderr.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a Hugging Face directory or a GGUF file to GGUF.
    ///
    /// The conversion streams: one tensor is in memory at a time, each tensor is converted in
    /// parallel, and the output appears only when complete (a temporary file is renamed into place).
    /// 1-D tensors (norms, biases) stay F32, as llama.cpp's converter keeps them.
    ///
    /// Example: microscale convert models/smollm2-135m -o smollm2-f16.gguf --outtype f16
    Convert {
        /// A Hugging Face model directory (config.json + safetensors) or a .gguf file.
        src: PathBuf,
        /// The GGUF file to write.
        #[arg(short, long)]
        output: PathBuf,
        /// Type of the 2-D weights, spelled as llama.cpp spells it.
        #[arg(long, value_enum, default_value = "f16")]
        outtype: OutType,
    },
    /// Write a Hugging Face directory (config.json, model.safetensors, tokenizer files) from a GGUF.
    ///
    /// Quantized weights are dequantized exactly to f32 (or --dtype); LLaMA's Q/K row permutation is
    /// undone, so the directory is an ordinary Hugging Face checkpoint that `convert` turns back into
    /// the same GGUF. This is how a model that exists only as GGUF enters the safetensors pipeline.
    ///
    /// Example: microscale import models/SmolLM2-135M-Instruct.Q4_1.gguf -o models/smollm2-135m
    Import {
        /// The GGUF file to read.
        gguf: PathBuf,
        /// The directory to create (must not exist, or be empty).
        #[arg(short, long)]
        output: PathBuf,
        /// dtype of the safetensors weights.
        #[arg(long, value_enum, default_value = "f32")]
        dtype: OutType,
    },
    /// Show a model's architecture, hyper-parameters and tensors.
    ///
    /// Example: microscale inspect models/smollm2-135m --json
    Inspect {
        /// A Hugging Face model directory or a .gguf file.
        src: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Evaluate a GGUF model through llama.cpp: perplexity, as llama-perplexity computes it.
    ///
    /// Example: microscale eval smollm2-f16.gguf --chunks 8
    Eval {
        /// The GGUF model.
        model: PathBuf,
        /// Text file for perplexity.
        #[arg(long, default_value = "../shared/data/wikitext-2/wiki.test.raw")]
        ppl: PathBuf,
        /// Tokens per window.
        #[arg(short = 'c', long, default_value_t = 512)]
        ctx_size: usize,
        /// Tokens per llama.cpp decode call.
        #[arg(short = 'b', long, default_value_t = 512)]
        batch_size: usize,
        /// Score at most this many windows (default: all).
        #[arg(long)]
        chunks: Option<usize>,
        /// Threads (default: all cores).
        #[arg(short, long)]
        threads: Option<usize>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    engine::init(cli.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    let parts: Vec<String> = e.chain().map(|c| c.to_string().replace('\n', " ")).collect();
    let mut out: Vec<String> = Vec::new();
    for p in parts {
        // Skip causes already quoted by the message above them.
        if !out.iter().any(|o| o.contains(&p)) {
            out.push(p);
        }
    }
    out.join(": ")
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Convert { src, output, outtype } => {
            let opts = convert::ConvertOptions { outtype, quiet: cli.quiet };
            let report = convert::convert(&src, &output, &opts)?;
            if !cli.quiet {
                eprintln!(
                    "wrote {} ({} {}, {} tensors, {:.1}M params, {:.1} MiB)",
                    output.display(),
                    report.arch,
                    outtype.weight_type(),
                    report.n_tensors,
                    report.n_params as f64 / 1e6,
                    report.bytes as f64 / (1 << 20) as f64
                );
            }
            Ok(())
        }
        Command::Import { gguf, output, dtype } => {
            import::import(&gguf, &output, dtype, cli.quiet)?;
            if !cli.quiet {
                eprintln!("wrote {}", output.display());
            }
            Ok(())
        }
        Command::Inspect { src, json } => {
            let summary = microscale::inspect::inspect(&src)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary.to_json())?);
            } else {
                print!("{}", summary.to_table());
            }
            Ok(())
        }
        Command::Eval { model, ppl, ctx_size, batch_size, chunks, threads, json } => {
            let text =
                std::fs::read_to_string(&ppl).map_err(|e| anyhow::anyhow!("{}: cannot read ({e})", ppl.display()))?;
            let m = engine::Model::load(&model)?;
            let opts = PerplexityOptions {
                n_ctx: ctx_size,
                n_batch: batch_size,
                threads: threads.unwrap_or_else(engine::default_threads),
                chunks,
            };
            let start = std::time::Instant::now();
            let r = perplexity::perplexity(&m, &text, &opts)?;
            let secs = start.elapsed().as_secs_f64();
            if json {
                let v = serde_json::json!({
                    "model": model, "file": ppl, "ctx_size": ctx_size, "chunks": r.chunks,
                    "ppl": r.ppl, "ppl_stderr": r.ppl_stderr, "scored_tokens": r.scored_tokens, "seconds": secs,
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{} chunks of {ctx_size} tokens, {} tokens scored, {secs:.1} s", r.chunks, r.scored_tokens);
                println!("Final estimate: PPL = {:.4} +/- {:.5}", r.ppl, r.ppl_stderr);
            }
            Ok(())
        }
    }
}

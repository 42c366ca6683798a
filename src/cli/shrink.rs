use super::load_args::LoadArgs;
use super::{at_least, Global};
use anyhow::{bail, Result};
use microscale::shrink::{shrink, ShrinkOptions};
use microscale::util::data::DataDir;
use microscale::util::paths::{IoPaths, OutputKind};
use std::path::PathBuf;

/// The smallest GGUF that fits a device profile and stays within a quality budget, found by
/// search: what to run on your own model.
///
/// Calibrates once (importance matrix, GPTQ's second moments), measures how much each tensor
/// role's error reaches the logits, then bisects on the file size with `convert --target-size S
/// --quant-method gptq` candidates (every matrix's type chosen on GPTQ's error, the token
/// embedding and output head included), judging each by a cheap proxy: KL divergence from the F32
/// baseline over WikiText-2 validation windows disjoint from calibration and from the final check.
/// The smallest passing candidates are then confirmed on the budget's own metrics (perplexity over
/// WikiText-2 test windows, SST-2 and ARC items), paired with the baseline at 95% confidence, and
/// benchmarked under the profile's caps. The file the model came as (--as-shipped, or MODEL when it
/// is a GGUF), stock Q4_K_M with the same importance matrix, and the stock mix nearest in size are
/// measured beside it.
///
/// Writes OUT.gguf, OUT.md (a model card: measures with 95% intervals beside the references, the
/// command that rebuilds the file) and OUT.search.json (every candidate). Its study is kept in
/// OUT.shrink/ (a sweep directory: `microscale report OUT.shrink`); run the same command again to
/// resume a killed search: nothing measured is measured again. A budget no candidate meets, or a
/// profile nothing fits in, exits non-zero, writes no GGUF, and names the best candidate and by how
/// much it misses.
///
/// Examples:
///   microscale shrink models/smollm2-135m --as-shipped models/SmolLM2-135M-Instruct.Q4_1.gguf \
///       --profile phone-6gb --max-ppl 5% --max-acc-drop 1 -o smol-phone.gguf
///   microscale shrink model.gguf --profile pi4-4gb --max-ppl 10% -o small.gguf --chunks 8 --limit 100
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The model: a Hugging Face directory or a GGUF.
    model: PathBuf,
    /// Output GGUF; OUT.md, OUT.search.json and the study OUT.shrink/ go beside it.
    #[arg(short, long, value_name = "OUT.gguf")]
    output: PathBuf,
    /// The device profile the file must fit (`microscale bench --list-profiles`).
    #[arg(long, value_name = "P")]
    profile: String,
    /// Perplexity at most this much over the F32 baseline, at 95% confidence (5% or 0.05).
    #[arg(long, value_name = "PCT", value_parser = percent)]
    max_ppl: f64,
    /// The tasks' mean accuracy at most this many points below the baseline, at 95% confidence.
    #[arg(long, value_name = "POINTS", default_value_t = 1.0)]
    max_acc_drop: f64,
    /// The GGUF the model came as (the file `microscale import` read): measured beside the pick,
    /// and the size the search starts below. Default: MODEL when it is a GGUF.
    #[arg(long, value_name = "FILE")]
    as_shipped: Option<PathBuf>,
    /// Perplexity windows of 512 tokens of WikiText-2 test for the final check.
    #[arg(long, value_name = "N", default_value_t = 40, value_parser = at_least::<1>())]
    chunks: usize,
    /// Items per task for the final check (a seeded sample; default: every item).
    #[arg(long, value_name = "N", value_parser = at_least::<1>())]
    limit: Option<usize>,
    /// Proxy windows of 512 tokens of WikiText-2 validation (after the calibration's).
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = at_least::<1>())]
    proxy_windows: usize,
    /// The proxy's limit on the mean KLD (default: half of ln(1 + --max-ppl), at most 0.01 per point
    /// of --max-acc-drop).
    #[arg(long, value_name = "KLD")]
    proxy_kld: Option<f64>,
    /// Calibration chunks of 512 tokens of WikiText-2 validation.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = at_least::<1>())]
    calib_chunks: usize,
    /// Bisection steps on the proxy.
    #[arg(long, value_name = "N", default_value_t = 5)]
    steps: usize,
    /// Candidates confirmed on the budget's metrics before the search gives up.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = at_least::<1>())]
    confirms: usize,
    /// The bottom of the size bracket, as a fraction of the reference's size.
    #[arg(long, value_name = "F", default_value_t = 0.6)]
    floor: f64,
    /// Structured pruning to try at the largest size the bisection found failing, as METHOD:RATIO
    /// (layers, ffn or heads, each with or without -heal): a pruned file built to that size joins
    /// the candidates only if it passes the proxy there. Repeatable; none to try none.
    #[arg(long, value_name = "METHOD:RATIO", default_value = "ffn-heal:0.1")]
    prune_trial: Vec<String>,
    #[command(flatten)]
    load: LoadArgs,
    /// The data folder (default: $MICROSCALE_DATA, else the one shipped with microscale).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The card's base_model: the Hugging Face id of the model shrunk (default: the name the GGUF's
    /// metadata gives).
    #[arg(long, value_name = "ID")]
    base_model: Option<String>,
    /// The study directory (default: OUT.shrink/ beside OUT.gguf): searches sharing one reuse what
    /// it holds (calibration, references, candidates measured).
    #[arg(long, value_name = "DIR")]
    study: Option<PathBuf>,
    /// The microscale binary the study's children run (default: this one).
    #[arg(long, hide = true)]
    child_exe: Option<PathBuf>,
}

/// `5%` or `0.05` → 0.05.
fn percent(s: &str) -> Result<f64, String> {
    let (v, fraction) = match s.strip_suffix('%') {
        Some(p) => (p.trim().parse::<f64>().map(|p| p / 100.0), false),
        None => (s.trim().parse::<f64>(), true),
    };
    match v {
        // A bare 5 would be +500%: a fraction is below 1, a percentage says so.
        Ok(v) if fraction && v >= 1.0 => {
            Err(format!("{s:?}: write a percentage with its sign (5%) or a fraction (0.05)"))
        }
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive percentage (5% or 0.05)")),
    }
}

impl Args {
    pub fn run(mut self, g: Global) -> Result<()> {
        self.load.resolve_offload();
        let data = DataDir::resolve(self.data_dir.as_deref());
        let mut opts = ShrinkOptions::new(&self.model, &self.profile, &self.output);
        opts.study = self.study.clone();
        opts.base_model = self.base_model.clone();
        let work = opts.work_dir();
        IoPaths::new()
            .input("MODEL", &self.model)
            .input_opt("--as-shipped", self.as_shipped.as_ref())
            .input("--data-dir", &data.root)
            .input_opt("--child-exe", self.child_exe.as_ref())
            .output("-o", &self.output, OutputKind::File)
            .output("-o", opts.card_path(), OutputKind::File)
            .output("-o", opts.trace_path(), OutputKind::File)
            .output("-o", &work, OutputKind::Filled(microscale::shrink::WORK_ENTRIES))
            .check()?;
        opts.as_shipped = self.as_shipped.clone();
        opts.criteria.max_ppl_increase = self.max_ppl;
        opts.criteria.max_acc_drop = self.max_acc_drop / 100.0;
        opts.ppl_chunks = self.chunks;
        opts.limit = self.limit;
        opts.proxy_windows = self.proxy_windows;
        opts.proxy_kld = self.proxy_kld;
        opts.calib_chunks = self.calib_chunks;
        opts.steps = self.steps;
        opts.confirms = self.confirms;
        opts.floor = self.floor;
        opts.prune_trials = self
            .prune_trial
            .iter()
            .filter(|t| t.as_str() != "none")
            .map(|t| microscale::shrink::PruneTrial::parse(t))
            .collect::<Result<_>>()?;
        opts.threads = self.load.threads_or_all();
        opts.load = self.load.load_options(true);
        opts.quiet = g.quiet;
        opts.data = data;
        opts.child_exe = self.child_exe;
        opts.command = std::env::args().map(|a| shell_word(&a)).collect::<Vec<_>>().join(" ");
        let outcome = shrink(&opts)?;
        match outcome.written {
            Some(path) => {
                let t = &outcome.trace;
                let row = t.pick.as_deref().and_then(|p| t.row(p));
                println!(
                    "{}: {} ({}); card {}, search {}",
                    path.display(),
                    row.and_then(|r| r.size_bytes).map_or("?".into(), microscale::util::mem::format_size),
                    t.pick.as_deref().unwrap_or(""),
                    opts.card_path().display(),
                    opts.trace_path().display()
                );
                Ok(())
            }
            None => bail!(
                "no file within +{:.1}% perplexity and {:.1} point(s) of accuracy fits {}: {} (search: {})",
                100.0 * opts.criteria.max_ppl_increase,
                self.max_acc_drop,
                opts.profile,
                outcome.trace.miss.unwrap_or_default(),
                opts.trace_path().display()
            ),
        }
    }
}

/// A word as a shell would read it back.
fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:%,+@".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

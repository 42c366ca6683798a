//! The `eval` command as a library call: perplexity, KL divergence and tasks for one model,
//! returned as [`MetricRow`]s (what `--csv` appends and `sweep` records).

use super::choice::{score_items, ChoiceOptions, ChoiceResult};
use super::data::{self, McItem, Task};
use super::kld::{
    kl_divergence, kl_divergence_from_file, save_base_log_probs, BaseLogProbsFile, KldOfLogits, KldResult,
};
use super::perplexity::{perplexity_of_tokens, token_logprob, PerplexityOptions, PerplexityResult};
use crate::engine::{LoadOptions, Model};
use crate::record::items::{ItemRecord, Items, Windows};
use crate::record::rows::MetricRow;
use crate::util::data::{DataDir, WIKITEXT_TEST};
use anyhow::{anyhow, bail, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct EvalSpec {
    /// Text for perplexity (None: no perplexity).
    pub ppl: Option<PathBuf>,
    /// Base for KL divergence: a model, evaluated on the perplexity text (or the default one), or
    /// a base log-probabilities file (`save_kld_base`, llama-perplexity's format) and its tokens.
    pub kld_base: Option<PathBuf>,
    /// Save the model's log-probabilities on the perplexity text (or the default one) here, as
    /// the base of later KL divergences.
    pub save_kld_base: Option<PathBuf>,
    pub tasks: Vec<Task>,
    /// Demonstrations for SST-2 (k-shot), drawn with `seed` and never evaluated.
    pub shots: usize,
    pub n_ctx: usize,
    pub n_batch: usize,
    pub chunks: Option<usize>,
    /// Windows for KL divergence (None: as `chunks`).
    pub kld_chunks: Option<usize>,
    pub threads: usize,
    /// At most this many items per task (a seeded sample).
    pub limit: Option<usize>,
    pub seed: u64,
    /// Where the tasks' files (and the default perplexity text) are.
    pub data: DataDir,
    /// How the model and a base model are loaded (memory-mapped; `gpu_layers` offloaded).
    pub load: LoadOptions,
    /// The GGUF whose vocabulary tokenizes for a model that holds none (a LiteRT file).
    pub tokenizer: Option<PathBuf>,
}

impl EvalSpec {
    pub fn new(threads: usize) -> EvalSpec {
        EvalSpec {
            ppl: None,
            kld_base: None,
            save_kld_base: None,
            tasks: vec![],
            shots: 0,
            n_ctx: 512,
            n_batch: 2048,
            chunks: None,
            kld_chunks: None,
            threads,
            limit: None,
            seed: 42,
            data: DataDir::resolve(None),
            load: LoadOptions::default(),
            tokenizer: None,
        }
    }
}

impl EvalSpec {
    /// Refuse settings that make no sense before any model is loaded.
    pub fn validate(&self) -> Result<()> {
        if self.n_ctx < 4 {
            bail!("a perplexity window of {} tokens is too short (--ctx-size must be at least 4)", self.n_ctx);
        }
        if self.n_batch == 0 || self.threads == 0 {
            bail!("--batch-size and --threads must be at least 1");
        }
        if self.chunks == Some(0) || self.kld_chunks == Some(0) || self.limit == Some(0) {
            bail!("--chunks and --limit must be at least 1 (omit them for all)");
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct EvalOutput {
    pub rows: Vec<MetricRow>,
    pub perplexity: Option<PerplexityResult>,
    pub kld: Option<KldResult>,
    pub tasks: Vec<(String, ChoiceResult)>,
}

impl EvalOutput {
    /// What each window and item scored, for the variant's item file (`record::items`): window
    /// sums of the perplexity pass and of the KL divergence, and per-item correctness of every
    /// accuracy metric among the rows, keyed by its results.csv column.
    pub fn item_record(&self, variant: &str) -> ItemRecord {
        let windows = |sums: &[f64], per: usize, sha: &str| Windows {
            tokens_sha256: sha.to_string(),
            tokens_per_window: per,
            sums: sums.to_vec(),
        };
        let mut rec = ItemRecord {
            variant: variant.to_string(),
            perplexity: self.perplexity.as_ref().map(|p| windows(&p.window_nll, p.tokens_per_window, &p.tokens_sha256)),
            kld: self.kld.as_ref().map(|k| windows(&k.window_kld, k.tokens_per_window, &k.tokens_sha256)),
            ..ItemRecord::default()
        };
        for (name, r) in &self.tasks {
            for (suffix, norm) in [("_acc", false), ("_acc_norm", true)] {
                let metric = format!("{name}{suffix}");
                if self.rows.iter().any(|row| row.metric == metric) {
                    let items = Items { items_sha256: r.items_sha256.clone(), correct: r.correct(norm) };
                    rec.accuracy.insert(metric.replace('-', "_"), items);
                }
            }
        }
        rec
    }
}

fn row(metric: &str, value: f64, stderr: f64, items: usize, wall_s: f64) -> MetricRow {
    MetricRow { metric: metric.to_string(), value, stderr, items, wall_s, status: "ok".into() }
}

pub fn run(model_path: &Path, spec: &EvalSpec, quiet: bool) -> Result<EvalOutput> {
    spec.validate()?;
    if crate::engine::litert::is_litert(model_path) {
        return run_litert(model_path, spec, quiet);
    }
    // Every task file is read and checked before the model runs: a malformed one is not found
    // after the perplexity pass.
    let task_items = spec.tasks.iter().map(|t| load_task(t, spec)).collect::<Result<Vec<_>>>()?;
    let model = Model::load_with(model_path, &spec.load)?;
    let mut out = EvalOutput::default();
    let ppl_opts =
        PerplexityOptions { n_ctx: spec.n_ctx, n_batch: spec.n_batch, threads: spec.threads, chunks: spec.chunks };
    let kld_opts = PerplexityOptions { chunks: spec.kld_chunks.or(spec.chunks), ..ppl_opts.clone() };
    let base_file = match &spec.kld_base {
        Some(path) if BaseLogProbsFile::is_one(path) => Some(BaseLogProbsFile::open(path)?),
        _ => None,
    };
    let needs_text = spec.save_kld_base.is_some() || (spec.kld_base.is_some() && base_file.is_none());
    let text_path = match &spec.ppl {
        Some(p) => Some(p.clone()),
        None if needs_text => Some(spec.data.file(WIKITEXT_TEST)?),
        None => None,
    };
    let text = match &text_path {
        Some(path) => {
            Some(std::fs::read_to_string(path).map_err(|e| anyhow!("{}: cannot read ({e})", path.display()))?)
        }
        None => None,
    };
    if let (Some(out), Some(text)) = (&spec.save_kld_base, &text) {
        let tokens = model.tokenize(text, true);
        save_base_log_probs(&model, &tokens, &kld_opts, out, quiet)?;
    }
    if let Some(base_path) = &spec.kld_base {
        let t = Instant::now();
        let k = match (&base_file, &text) {
            (Some(file), _) => kl_divergence_from_file(&model, file, &kld_opts, quiet)?,
            (None, Some(text)) => {
                let base = Model::load_with(base_path, &spec.load)?;
                let tokens = base.tokenize(text, true);
                kl_divergence(&model, &base, &tokens, &kld_opts, quiet)?
            }
            (None, None) => bail!("KL divergence against a model needs a text"),
        };
        push_kld_rows(&mut out, k, t.elapsed().as_secs_f64());
    }
    if let Some(text) = &text {
        if spec.ppl.is_some() {
            let tokens = model.tokenize(text, true);
            let t = Instant::now();
            let p = perplexity_of_tokens(&model, &tokens, &ppl_opts, quiet)?;
            out.rows.push(row("ppl", p.ppl, p.ppl_stderr, p.scored_tokens, t.elapsed().as_secs_f64()));
            out.perplexity = Some(p);
        }
    }
    for (task, items) in spec.tasks.iter().zip(task_items) {
        let t = Instant::now();
        let name = task_metric_name(task, spec.shots);
        let r = score_items(&model, &items, &ChoiceOptions::new(spec.threads), &name, quiet)?;
        let s = t.elapsed().as_secs_f64();
        out.rows.push(row(&format!("{name}_acc"), r.acc, r.acc_stderr, r.items, s));
        if !matches!(task, Task::Sst2) {
            out.rows.push(row(&format!("{name}_acc_norm"), r.acc_norm, r.acc_norm_stderr, r.items, s));
        }
        out.tasks.push((name, r));
    }
    Ok(out)
}

/// A LiteRT file's perplexity (and KL divergence against a saved base), on the windows
/// llama-perplexity would score, tokenized by the GGUF it came from (`--tokenizer`) and run
/// through the LiteRT interpreter: the numbers beside the GGUF's. With `--kld-base` (a file saved
/// by `--save-kld-base`) both come from one pass over the base's own windows. Tasks are not run on
/// LiteRT files.
fn run_litert(model_path: &Path, spec: &EvalSpec, quiet: bool) -> Result<EvalOutput> {
    let shown = model_path.display();
    if spec.save_kld_base.is_some() || !spec.tasks.is_empty() {
        bail!(
            "{shown}: a LiteRT file is evaluated on perplexity and KL divergence only (no --save-kld-base or --task)"
        );
    }
    let base = match &spec.kld_base {
        Some(path) if BaseLogProbsFile::is_one(path) => Some(BaseLogProbsFile::open(path)?),
        Some(path) => bail!(
            "{}: a LiteRT file is compared with a saved base only (make one with `microscale eval BASE.gguf --save-kld-base FILE`)",
            path.display()
        ),
        None => None,
    };
    crate::engine::litert::check_file(model_path)?;
    let Some(tokenizer) = &spec.tokenizer else {
        bail!("{shown}: a LiteRT file holds no tokenizer; give the GGUF it was exported from with --tokenizer");
    };
    let vocab = Model::load_vocab_only(tokenizer)?;
    let mut kld = match &base {
        Some(b) => Some(KldOfLogits::new(&vocab, b, spec.n_ctx, spec.kld_chunks.or(spec.chunks), quiet)?),
        None => None,
    };
    let windows = match &kld {
        Some(k) => k.windows.clone(),
        None => {
            let text_path = match &spec.ppl {
                Some(p) => p.clone(),
                None => spec.data.file(WIKITEXT_TEST)?,
            };
            let text = std::fs::read_to_string(&text_path)
                .map_err(|e| anyhow!("{}: cannot read ({e})", text_path.display()))?;
            super::perplexity::windows(&vocab, &vocab.tokenize(&text, true), spec.n_ctx, spec.chunks)?
        }
    };
    if !quiet {
        eprintln!("{} windows of {} tokens through the LiteRT interpreter", windows.len(), spec.n_ctx);
    }
    let t = Instant::now();
    let (first, n_vocab) = (spec.n_ctx / 2, vocab.n_vocab());
    let mut scored = Vec::with_capacity(windows.len());
    let mut on_window = |i: usize, logits: &[f32]| -> Result<()> {
        let w = &windows[i];
        let nll = logits.chunks_exact(n_vocab).zip(&w[first + 1..]).map(|(l, &tok)| -token_logprob(l, tok as usize));
        scored.push(nll.collect::<Vec<f64>>());
        if let Some(k) = kld.as_mut() {
            k.add(i, logits);
        }
        Ok(())
    };
    crate::engine::litert::window_logits(model_path, &windows, first, n_vocab, spec.threads, &mut on_window)?;
    let s = t.elapsed().as_secs_f64();
    let mut out = EvalOutput::default();
    if let Some(k) = kld {
        push_kld_rows(&mut out, k.finish(), s);
    }
    let p = super::perplexity::from_scores(&windows, spec.n_ctx, &scored);
    out.rows.push(row("ppl", p.ppl, p.ppl_stderr, p.scored_tokens, s));
    out.perplexity = Some(p);
    Ok(out)
}

/// The KL divergence's rows (and the result itself) in an evaluation's output.
fn push_kld_rows(out: &mut EvalOutput, k: KldResult, s: f64) {
    out.rows.push(row("kld", k.kld_mean, k.kld_stderr, k.tokens, s));
    out.rows.push(row("kld_p99", k.kld_p99, 0.0, k.tokens, s));
    out.rows.push(row("kld_p999", k.kld_p999, 0.0, k.tokens, s));
    out.rows.push(row("same_top", k.same_top, k.same_top_stderr, k.tokens, s));
    out.rows.push(row("ppl_ratio", k.ppl_ratio, k.ppl_ratio_stderr, k.tokens, s));
    out.kld = Some(k);
}

pub fn task_metric_name(task: &Task, shots: usize) -> String {
    match task {
        Task::Sst2 if shots > 0 => format!("sst2_{shots}shot"),
        other => other.name(),
    }
}

/// A task's items: the file as shipped, minus SST-2's demonstrations, sampled down to `--limit`.
pub fn load_task(task: &Task, spec: &EvalSpec) -> Result<Vec<McItem>> {
    let path = task.path(&spec.data)?;
    let mut items = match task {
        Task::Sst2 => {
            let mut rows = data::load_sst2(&path)?;
            if spec.shots >= rows.len() {
                bail!("{}: {} shots leave nothing to evaluate", path.display(), spec.shots);
            }
            shuffle(&mut rows, spec.seed);
            let demos: Vec<_> = rows.drain(..spec.shots).collect();
            let mut items = data::sst2_items(&rows, &demos);
            if spec.limit.is_none() {
                return Ok(items);
            }
            shuffle(&mut items, spec.seed ^ 1);
            items
        }
        Task::ArcEasy | Task::ArcChallenge => data::load_arc(&path)?,
        Task::Mc(_) => data::load_generic(&path)?,
    };
    if let Some(n) = spec.limit {
        shuffle(&mut items, spec.seed);
        items.truncate(n);
    }
    Ok(items)
}

pub use crate::util::rng::shuffle;

//! `microscale shrink`: the smallest GGUF that fits a device profile and stays within a quality
//! budget at 95% paired confidence, found by search rather than a grid.
//!
//! 1. **References and calibration, once.** A study directory beside the output (`OUT.shrink/`)
//!    is a sweep study: the F32 baseline, the file the model came as (`as-shipped`) and stock
//!    Q4_K_M with the same importance matrix are measured as the sweep measures any variant (the
//!    budget's perplexity windows and task items, the profile's caps). One calibration (importance
//!    matrix and GPTQ's second moments) serves every candidate and the stock rows.
//! 2. **Sensitivities.** One probe per tensor role ([`proxy::sensitivities`]) turns the budget's
//!    per-layer losses into what reaches the logits: the `--loss-scale`s of every candidate.
//! 3. **Bracket on the proxy.** Candidates are `convert --target-size S --quant-method gptq` with
//!    those scales (every matrix's type chosen on GPTQ's error, the token embedding and output head
//!    included); the proxy is their KL divergence over validation windows disjoint from
//!    calibration and from the final check ([`proxy`]). Bisection on S ([`search`]) narrows the
//!    bracket between a size that fails the proxy and one that passes.
//! 4. **Confirm.** The smallest passing candidate is measured on the budget's own metrics, paired
//!    with the baseline (`report::sweet_spot`'s verdict at 95%) and under the profile's caps; on
//!    a miss the next passing candidate is tried. The stock mix nearest in size is measured too.
//! 5. **Outputs.** `OUT.gguf` (renamed into place when the pick is confirmed), `OUT.md` (a model
//!    card, [`card`]), `OUT.search.json` (every candidate, [`trace`]). An impossible budget, or a
//!    profile nothing fits in, writes no GGUF and names the best candidate and its miss.
//!
//! Resumable: the study's rows, the proxy results and the probes are kept in `OUT.shrink/`, and
//! the search is a pure function of them, so a killed search run again makes the same decisions
//! without measuring again.

pub mod card;
pub mod proxy;
pub mod search;
pub mod trace;

use crate::convert::budget::Budget;
use crate::convert::{convert, loss_table, ConvertOptions};
use crate::engine::LoadOptions;
use crate::prune::PruneSpec;
use crate::quant::gptq::QuantMethod;
use crate::quant::mix::Scheme;
use crate::record::results::{read_results, Kind};
use crate::report::paired::load_paired;
use crate::report::sweet_spot::{confidence, interval_check, quality_check, Criteria};
use crate::sweep::grid::{parse_grid, Grid, Variant, AS_SHIPPED};
use crate::sweep::{measure_extra, recorded, run_sweep, SweepOptions};
use crate::util::data::{DataDir, CALIB_TEXT};
use crate::util::mem::format_size;
use crate::util::progress::Progress;
use anyhow::{bail, Context, Result};
use proxy::ProxySpec;
use search::Bracket;
use std::path::{Path, PathBuf};
use std::time::Instant;
pub use trace::PruneTrial;
use trace::{Candidate, Confirm, Trace};

/// What the study directory holds besides a sweep's entries.
const OWN_ENTRIES: &[&str] = &["grid.toml", "proxy.base.kld", "proxy", "probes", "loss-table.json", "study.json"];

/// What the study directory holds: a sweep's entries and the search's own.
pub const WORK_ENTRIES: &[&str] = &crate::util::paths::concat_entries::<
    { crate::sweep::OUT_ENTRIES.len() + OWN_ENTRIES.len() },
>(crate::sweep::OUT_ENTRIES, OWN_ENTRIES);

#[derive(Clone, Debug)]
pub struct ShrinkOptions {
    /// The model: a Hugging Face directory or a GGUF.
    pub model: PathBuf,
    /// The GGUF the model came as (default: `model` when it is one).
    pub as_shipped: Option<PathBuf>,
    pub profile: String,
    /// The budget: perplexity at most this much over the baseline (0.05 = +5%) and the tasks'
    /// mean accuracy at most this much below it (0.01 = 1 point), both at 95% confidence.
    pub criteria: Criteria,
    /// `OUT.gguf`; the card and trace go beside it.
    pub out: PathBuf,
    /// The study directory (None: `OUT.shrink/`); searches sharing it share what they measured.
    pub study: Option<PathBuf>,
    /// The budget's perplexity (and KLD) windows of WikiText-2 test.
    pub ppl_chunks: usize,
    pub tasks: Vec<String>,
    /// Items per task (a seeded sample; None: every item).
    pub limit: Option<usize>,
    /// Proxy windows (WikiText-2 validation, after the calibration's).
    pub proxy_windows: usize,
    /// The proxy's limit on the mean KLD (None: half of ln(1 + the perplexity budget)).
    pub proxy_kld: Option<f64>,
    pub calib_chunks: usize,
    /// Bisection steps on the proxy.
    pub steps: usize,
    /// Candidates confirmed on the budget's metrics before giving up.
    pub confirms: usize,
    /// The bottom of the bracket, as a fraction of the reference's size.
    pub floor: f64,
    /// Structured pruning tried at the largest size the bisection found failing (method, ratio):
    /// kept only where it pays, a pruned file passing where the unpruned one did not.
    pub prune_trials: Vec<PruneTrial>,
    pub threads: usize,
    pub quiet: bool,
    pub data: DataDir,
    pub load: LoadOptions,
    pub child_exe: Option<PathBuf>,
    /// The command line, for the card.
    pub command: String,
    /// The card's `base_model` (a Hugging Face id; default: what the GGUF's metadata names).
    pub base_model: Option<String>,
}

impl ShrinkOptions {
    pub fn new(model: &Path, profile: &str, out: &Path) -> ShrinkOptions {
        ShrinkOptions {
            model: model.to_path_buf(),
            as_shipped: None,
            profile: profile.to_string(),
            criteria: Criteria::default(),
            out: out.to_path_buf(),
            study: None,
            ppl_chunks: 40,
            tasks: vec!["sst2".into(), "arc-easy".into(), "arc-challenge".into()],
            limit: None,
            proxy_windows: 16,
            proxy_kld: None,
            calib_chunks: 64,
            steps: 5,
            confirms: 3,
            floor: 0.6,
            prune_trials: vec![PruneTrial { method: "ffn-heal".into(), ratio: 0.1 }],
            threads: crate::engine::default_threads(),
            quiet: true,
            data: DataDir::resolve(None),
            load: LoadOptions::default(),
            child_exe: None,
            command: String::new(),
            base_model: None,
        }
    }

    /// The study directory: `--study`, else `OUT.shrink/` beside `OUT.gguf`.
    pub fn work_dir(&self) -> PathBuf {
        self.study.clone().unwrap_or_else(|| self.out.with_extension("shrink"))
    }

    /// `OUT.md` and `OUT.search.json`.
    pub fn card_path(&self) -> PathBuf {
        self.out.with_extension("md")
    }

    pub fn trace_path(&self) -> PathBuf {
        self.out.with_extension("search.json")
    }

    /// The proxy's limit: half of ln(1 + the perplexity budget), and at most 0.01 per point of
    /// the accuracy budget. The second is empirical: with the three dev sets (1,741 items) the
    /// paired interval of the mean accuracy is about ±0.9 points, so a one-point budget at 95% needs
    /// a point estimate within about 0.1 point of the baseline's; on SmolLM2-135M a file at KLD 0.020
    /// lost 0.5 points (interval [−1.3, +0.4]: a miss), the file as shipped at KLD 0.003 lost 0.1.
    fn kld_limit(&self) -> f64 {
        let ppl = 0.5 * (1.0 + self.criteria.max_ppl_increase).ln();
        let acc = 0.01 * (100.0 * self.criteria.max_acc_drop).max(0.0);
        self.proxy_kld.unwrap_or(if acc > 0.0 { ppl.min(acc) } else { ppl })
    }

    /// Refuse settings that make no sense, before any work.
    pub fn validate(&self) -> Result<()> {
        let c = &self.criteria;
        if !(c.max_ppl_increase.is_finite() && c.max_ppl_increase > 0.0) {
            bail!("--max-ppl {}: the perplexity budget must be a positive percentage", 100.0 * c.max_ppl_increase);
        }
        if !(c.max_acc_drop.is_finite() && (0.0..1.0).contains(&c.max_acc_drop)) {
            bail!("--max-acc-drop {}: points of accuracy between 0 and 100", 100.0 * c.max_acc_drop);
        }
        if !(self.floor > 0.0 && self.floor < 1.0) {
            bail!("--floor {}: a fraction of the reference's size between 0 and 1", self.floor);
        }
        if self.proxy_kld.is_some_and(|k| !(k.is_finite() && k > 0.0)) {
            bail!("--proxy-kld must be a positive number");
        }
        if self.ppl_chunks == 0 || self.proxy_windows == 0 || self.calib_chunks == 0 || self.confirms == 0 {
            bail!("--chunks, --proxy-windows, --calib-chunks and --confirms must be at least 1");
        }
        if self.out.extension().is_none_or(|e| e != "gguf") {
            bail!("-o {}: the output is a .gguf file (its card and trace go beside it)", self.out.display());
        }
        for t in &self.prune_trials {
            t.validate()?;
        }
        crate::bench::profiles::profile(&self.profile)?;
        for p in std::iter::once(&self.model).chain(&self.as_shipped) {
            if !p.exists() {
                bail!("{}: no such file or directory", p.display());
            }
        }
        Ok(())
    }
}

/// How a search ended.
pub struct Outcome {
    pub trace: Trace,
    /// The file written (None: the budget could not be met; the trace says by how much).
    pub written: Option<PathBuf>,
}

/// Run the search; the GGUF, card and trace are written when it succeeds (the trace also when it
/// does not). An impossible budget is an `Ok` outcome with nothing written: the caller exits
/// non-zero naming the miss.
pub fn shrink(opts: &ShrinkOptions) -> Result<Outcome> {
    opts.validate()?;
    let started = Instant::now();
    let work = opts.work_dir();
    std::fs::create_dir_all(&work).with_context(|| format!("{}: cannot create", work.display()))?;
    let as_shipped = opts.as_shipped.clone().or_else(|| crate::convert::import::as_shipped_default(&opts.model));
    let mut study = Study::open(opts, &work, as_shipped.as_deref(), &["q4_k_m"])?;
    let stages = 6 + opts.steps + opts.prune_trials.len() + opts.confirms;
    let progress = Progress::new(stages as u64, "shrink", opts.quiet);

    progress.set_message("calibrating (importance matrix and second moments, once)");
    let moments = calibrate_once(opts, &study.sweep)?;
    progress.inc(1);
    progress.set_message("references: baseline, the file as shipped, stock q4_k_m");
    run_sweep(&study.grid, &study.sweep)?;
    progress.inc(1);
    let reference = reference_size(&study, as_shipped.is_some())?;

    let spec = proxy_spec(opts)?;
    let base = work.join("proxy.base.kld");
    proxy::save_base(&work.join("variants/baseline-f32.gguf"), &spec, &base)?;
    let candidate_opts = candidate_options(opts, &moments);
    progress.set_message("measuring every tensor's loss in every type");
    let table = proxy::cached(&work.join("loss-table.json"), || {
        let t = loss_table(&opts.model, &candidate_opts)?;
        Ok(t.into_iter().map(trace::TableRow::from).collect::<Vec<_>>())
    })?;
    let table: Vec<_> = table.into_iter().map(trace::TableRow::into_options).collect::<Result<_>>()?;
    progress.inc(1);
    let sens = proxy::sensitivities(&opts.model, &table, &work.join("probes"), &base, &spec, |r| {
        progress.set_message(&format!("sensitivity probe: {r}"));
    })?;
    progress.inc(1);
    let scales: Vec<(String, f64)> = sens.iter().map(|s| (s.role.clone(), s.scale)).collect();
    let candidate_opts =
        ConvertOptions { loss_scales: scales, loss_table: Some(std::sync::Arc::new(table)), ..candidate_opts };

    let mut t = Trace::new(opts, as_shipped.as_deref(), &spec, opts.kld_limit(), reference.clone(), sens);
    let baseline_bytes = study.results()?.baseline().and_then(|b| b.size_bytes).unwrap_or(reference.bytes);
    let mut search = Searcher { opts, work: &work, base: &base, spec: &spec, convert: &candidate_opts, trace: &mut t };
    search.bracket(reference.clone(), baseline_bytes, &progress)?;
    search.prune_trials(&progress)?;
    let pick = search.confirm(&mut study, &progress)?;
    progress.set_message("the stock mix nearest in size");
    study.add_nearest_stock(opts, pick.as_ref().map_or(reference.bytes, |c| c.file_bytes))?;
    run_sweep(&study.grid, &study.sweep)?;
    progress.inc(1);
    t.references = trace::references(&study.results()?, &study.paired()?, &opts.criteria, &opts.profile)?;
    let best = pick.clone().or_else(|| t.steps.iter().rev().find(|s| s.candidate.passes).map(|s| s.candidate.clone()));
    t.rebuild = best.map(|c| rebuild_command(opts, &candidate_opts, &work, &c));
    t.elapsed_s = started.elapsed().as_secs_f64();
    progress.finish();
    finish(opts, t, pick)
}

/// The size the search starts below: the file as shipped, else stock Q4_K_M.
fn reference_size(study: &Study, has_source: bool) -> Result<trace::Reference> {
    let results = study.results()?;
    let name = if has_source { AS_SHIPPED } else { "stock-q4_k_m" };
    let v = results.variants.iter().find(|v| v.name == name).filter(|v| !v.failed());
    let Some(bytes) = v.and_then(|v| v.size_bytes) else {
        bail!("{name}: not measured ({})", v.and_then(|v| v.error.clone()).unwrap_or_else(|| "no row".into()));
    };
    Ok(trace::Reference { name: name.into(), bytes })
}

/// The candidates' conversion: GPTQ rounding onto each type the budget chooses, with the study's
/// one calibration.
fn candidate_options(opts: &ShrinkOptions, moments: &Path) -> ConvertOptions {
    let prune = PruneSpec {
        calib: Some(moments.to_path_buf()),
        calib_chunks: opts.calib_chunks,
        data: opts.data.clone(),
        ..PruneSpec::default()
    };
    ConvertOptions {
        prune,
        quant_method: QuantMethod::Gptq,
        use_calib_imatrix: true,
        threads: opts.threads,
        quiet: true,
        ..ConvertOptions::new(Scheme::Q4KM)
    }
}

/// Calibrate once with the second moments, and let the sweep's stock rows use the same
/// importance matrix (the file holds it): one pass over the calibration text, not two.
fn calibrate_once(opts: &ShrinkOptions, sweep: &SweepOptions) -> Result<PathBuf> {
    let imatrix = sweep.out.join("calib.imatrix.gguf");
    let moments = imatrix.with_extension("moments.gguf");
    if !moments.exists() {
        crate::convert::calibrate_model(&opts.model, &candidate_options(opts, &moments))?;
    }
    if !imatrix.exists() && std::fs::hard_link(&moments, &imatrix).is_err() {
        copy_atomically(&moments, &imatrix)?;
    }
    Ok(moments)
}

fn proxy_spec(opts: &ShrinkOptions) -> Result<ProxySpec> {
    Ok(ProxySpec {
        text: opts.data.file(CALIB_TEXT)?,
        skip_tokens: opts.calib_chunks * 512,
        windows: opts.proxy_windows,
        n_ctx: 512,
        threads: opts.threads,
        load: opts.load,
    })
}

/// The study: a sweep directory with a generated grid.
struct Study {
    grid: Grid,
    sweep: SweepOptions,
    grid_path: PathBuf,
    stock: Vec<String>,
    as_shipped: Option<PathBuf>,
    opts: ShrinkOptions,
}

impl Study {
    fn open(opts: &ShrinkOptions, work: &Path, as_shipped: Option<&Path>, stock: &[&str]) -> Result<Study> {
        check_settings(work, opts, as_shipped)?;
        let grid_path = work.join("grid.toml");
        let mut sweep = SweepOptions::new(&opts.model, &grid_path, work);
        sweep.keep = true;
        sweep.threads = opts.threads;
        sweep.quiet = true;
        sweep.data = opts.data.clone();
        sweep.child_exe = opts.child_exe.clone();
        sweep.load = opts.load;
        sweep.as_shipped = as_shipped.map(Path::to_path_buf);
        let mut s = Study {
            grid: parse_grid(&grid_text(opts, &[]))?,
            sweep,
            grid_path,
            stock: stock.iter().map(|s| s.to_string()).collect(),
            as_shipped: as_shipped.map(Path::to_path_buf),
            opts: opts.clone(),
        };
        s.write_grid()?;
        Ok(s)
    }

    fn write_grid(&mut self) -> Result<()> {
        let text = grid_text(&self.opts, &self.stock);
        let mut grid = parse_grid(&text)?;
        if let Some(f) = &self.as_shipped {
            grid.add_as_shipped(f)?;
        }
        crate::util::atomic::write_file(&self.grid_path, text.as_bytes())?;
        self.grid = grid;
        Ok(())
    }

    /// Add the stock mix whose planned size is nearest `bytes` (other than those measured).
    fn add_nearest_stock(&mut self, opts: &ShrinkOptions, bytes: u64) -> Result<()> {
        const MIXES: &[&str] = &[
            "q8_0", "q6_k", "q5_k_m", "q5_k_s", "q5_1", "q5_0", "q4_k_s", "q4_1", "q4_0", "iq4_nl", "iq4_xs", "q3_k_l",
            "q3_k_m", "q3_k_s", "iq3_m", "iq3_s", "q2_k",
        ];
        let imatrix = crate::gguf::imatrix::Imatrix::load(&self.sweep.out.join("calib.imatrix.gguf"))?;
        let mut best: Option<(u64, &str)> = None;
        for m in MIXES.iter().filter(|m| !self.stock.iter().any(|s| s == *m)) {
            let scheme = Scheme::parse(m)?;
            let copts = ConvertOptions { imatrix: Some(imatrix.clone()), quiet: true, ..ConvertOptions::new(scheme) };
            let Ok(plan) = crate::convert::plan_only(&opts.model, &copts) else { continue };
            let size: u64 = plan.jobs.iter().map(|j| j.n_bytes().next_multiple_of(32)).sum();
            let d = size.abs_diff(bytes);
            if best.is_none_or(|(bd, _)| d < bd) {
                best = Some((d, m));
            }
        }
        if let Some((_, m)) = best {
            self.stock.push(m.to_string());
            self.write_grid()?;
        }
        Ok(())
    }

    fn results(&self) -> Result<crate::record::results::Results> {
        read_results(&self.sweep.out.join("results.csv"))
    }

    fn paired(&self) -> Result<crate::report::paired::Paired> {
        load_paired(&self.sweep.out, &self.results()?)
    }
}

/// A study's measurements hold for the settings that made them: the first search writes them
/// (`study.json`), a later one with other settings is refused rather than fed stale results.
/// (The budget, the proxy's limit, steps and confirmations only judge: they may differ.)
fn check_settings(work: &Path, opts: &ShrinkOptions, as_shipped: Option<&Path>) -> Result<()> {
    let now = serde_json::json!({
        "model": std::path::absolute(&opts.model)?,
        "as_shipped": as_shipped.map(std::path::absolute).transpose()?,
        "profile": opts.profile,
        "ppl_chunks": opts.ppl_chunks,
        "tasks": opts.tasks,
        "limit": opts.limit,
        "proxy_windows": opts.proxy_windows,
        "calib_chunks": opts.calib_chunks,
        "floor": opts.floor,
    });
    let path = work.join("study.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return crate::util::atomic::write_file(&path, serde_json::to_string_pretty(&now)?.as_bytes());
    };
    let before: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not a study's settings", path.display()))?;
    let differ: Vec<String> = now
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, v)| before.get(k.as_str()) != Some(v))
        .map(|(k, v)| format!("{k} {} there, {v} now", before.get(k.as_str()).unwrap_or(&serde_json::Value::Null)))
        .collect();
    if !differ.is_empty() {
        bail!("{}: a study made with other settings ({}); give another --study", work.display(), differ.join("; "));
    }
    Ok(())
}

/// The study's grid: the budget's evaluation, the profile, the calibration, the stock rows.
fn grid_text(opts: &ShrinkOptions, stock: &[String]) -> String {
    let list = |v: &[String]| v.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
    let mut t = format!(
        "# written by microscale shrink: the study behind {}\n[eval]\nppl_chunks = {}\nkld_chunks = {}\ntasks = [{}]\n",
        opts.out.display(),
        opts.ppl_chunks,
        opts.ppl_chunks,
        list(&opts.tasks)
    );
    if let Some(l) = opts.limit {
        t.push_str(&format!("limit = {l}\n"));
    }
    t.push_str(&format!("[bench]\nprofiles = [{:?}]\n[calib]\nchunks = {}\n", opts.profile, opts.calib_chunks));
    if !stock.is_empty() {
        t.push_str(&format!("[stock]\nquants = [{}]\n", list(stock)));
    }
    t
}

/// Upward steps (each 15%) when the reference's size fails the proxy, before giving up.
const MAX_WIDENINGS: usize = 3;

/// The search's state: what it measures with and what it has found.
struct Searcher<'a> {
    opts: &'a ShrinkOptions,
    work: &'a Path,
    base: &'a Path,
    spec: &'a ProxySpec,
    convert: &'a ConvertOptions,
    trace: &'a mut Trace,
}

impl Searcher<'_> {
    fn name(bytes: u64) -> String {
        format!("shrink-{bytes}")
    }

    /// Build (or reuse) the candidate for `target` bytes and measure its proxy. A size below
    /// what the smallest types take is a candidate that fails; any other error stops the search.
    fn candidate(&mut self, target: u64) -> Result<Candidate> {
        let name = Self::name(target);
        let path = self.work.join("variants").join(format!("{name}.gguf"));
        if !path.exists() {
            let copts = ConvertOptions { budget: Some(Budget::Size(target)), ..self.convert.clone() };
            if let Err(e) = convert(&self.opts.model, &path, &copts) {
                let why = format!("{e:#}");
                if why.contains("cannot be met") {
                    return Ok(Candidate::failed(&name, target, &why));
                }
                return Err(e.context(format!("building the candidate of {}", format_size(target))));
            }
        }
        let cache = self.work.join("proxy").join(format!("{name}.json"));
        let p = proxy::cached(&cache, || proxy::measure(&path, self.base, self.spec))?;
        let file_bytes = std::fs::metadata(&path).with_context(|| format!("{}: cannot read", path.display()))?.len();
        Ok(Candidate::measured(&name, target, file_bytes, p, self.trace.proxy_kld_limit, &path))
    }

    /// Bisection on the proxy; the trace records each step's bracket.
    fn bracket(&mut self, reference: trace::Reference, baseline_bytes: u64, progress: &Progress) -> Result<()> {
        let mut b = search::start(reference.bytes, self.opts.floor);
        let ceiling = baseline_bytes.max(reference.bytes);
        let mut widenings = 0;
        // The top must pass: widen upwards until it does (at most to the baseline's size).
        loop {
            let top = self.candidate(b.hi)?;
            let passes = top.passes;
            self.trace.push(top, b);
            if passes {
                break;
            }
            widenings += 1;
            match search::widened(b.hi, ceiling).filter(|_| widenings <= MAX_WIDENINGS) {
                Some(hi) => b = Bracket { lo: b.hi, hi },
                None => return Ok(()),
            }
        }
        let resolution = (reference.bytes as f64 * 0.01) as u64;
        for step in 0..self.opts.steps {
            let Some(size) = b.next(resolution) else { break };
            progress.set_message(&format!(
                "step {}: bracket {}..{}, best so far {}",
                step + 1,
                format_size(b.lo),
                format_size(b.hi),
                format_size(b.hi)
            ));
            let c = self.candidate(size)?;
            b = b.narrowed(size, c.passes);
            self.trace.push(c, b);
            progress.inc(1);
        }
        Ok(())
    }

    /// Structured pruning where it pays, judged as the study judges pruning (against the unpruned
    /// file of the same size): at the largest size the bisection measured failing, a pruned model
    /// (fewer weights, so more bits for each) is built to the same size; if it passes the proxy
    /// the unpruned one failed, it joins the candidates to confirm. A trial that cannot be built
    /// (a ratio that removes nothing, a size below its smallest types) is recorded, not fatal.
    fn prune_trials(&mut self, progress: &Progress) -> Result<()> {
        let failing = self.trace.steps.iter().filter(|s| s.candidate.proxy.is_some() && !s.candidate.passes);
        let Some(size) = failing.map(|s| s.candidate.target_bytes).max() else { return Ok(()) };
        for trial in &self.opts.prune_trials {
            progress.set_message(&format!("pruning trial: {} at {}", trial.label(), format_size(size)));
            let c = self.pruned_candidate(trial, size)?;
            self.trace.prune_trials.push(c);
            progress.inc(1);
        }
        Ok(())
    }

    fn pruned_candidate(&mut self, trial: &PruneTrial, target: u64) -> Result<Candidate> {
        let name = format!("shrink-{}{}-{target}", trial.method, (100.0 * trial.ratio).round());
        let path = self.work.join("variants").join(format!("{name}.gguf"));
        if !path.exists() {
            let mut unbuilt = Candidate::failed(&name, target, "");
            unbuilt.prune = Some(trial.clone());
            let v = candidate_variant(&unbuilt);
            let prune = PruneSpec {
                calib: self.convert.prune.calib.clone(),
                data: self.opts.data.clone(),
                align: PruneTrial::ALIGN,
                ..v.prune_spec(self.opts.calib_chunks)?
            };
            // The loss table was measured on the unpruned model: the pruned one measures its own.
            let copts =
                ConvertOptions { prune, budget: Some(Budget::Size(target)), loss_table: None, ..self.convert.clone() };
            if let Err(e) = convert(&self.opts.model, &path, &copts) {
                let mut c = Candidate::failed(&name, target, &format!("{e:#}").replace('\n', " "));
                c.prune = Some(trial.clone());
                return Ok(c);
            }
        }
        let cache = self.work.join("proxy").join(format!("{name}.json"));
        let p = proxy::cached(&cache, || proxy::measure(&path, self.base, self.spec))?;
        let file_bytes = std::fs::metadata(&path).with_context(|| format!("{}: cannot read", path.display()))?.len();
        let mut c = Candidate::measured(&name, target, file_bytes, p, self.trace.proxy_kld_limit, &path);
        c.prune = Some(trial.clone());
        Ok(c)
    }

    /// Confirm the passing candidates, smallest first, on the budget's metrics and the profile;
    /// the first confirmed is the pick.
    fn confirm(&mut self, study: &mut Study, progress: &Progress) -> Result<Option<Candidate>> {
        let mut passing: Vec<Candidate> = self
            .trace
            .steps
            .iter()
            .map(|s| &s.candidate)
            .chain(&self.trace.prune_trials)
            .filter(|c| c.passes)
            .cloned()
            .collect();
        passing.sort_by_key(|c| c.file_bytes);
        passing.dedup_by_key(|c| c.file_bytes);
        for c in passing.into_iter().take(self.opts.confirms) {
            progress.set_message(&format!("confirming {} ({})", c.name, format_size(c.file_bytes)));
            let v = candidate_variant(&c);
            let done = recorded(&study.grid, &study.sweep.out)?.iter().any(|r| r.get("variant") == Some(&c.name));
            if !done {
                measure_extra(&v, &study.grid, &study.sweep, Path::new(&c.path))?;
            }
            let verdict = verdict(study, &c.name, &self.opts.criteria, &self.opts.profile)?;
            let ok = verdict.within_budget && verdict.fits;
            self.trace.confirms.push(verdict);
            progress.inc(1);
            if ok {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }
}

/// The `convert` command that makes the candidate of `bytes` from the study's calibration.
fn rebuild_command(opts: &ShrinkOptions, c: &ConvertOptions, work: &Path, pick: &Candidate) -> String {
    let mut cmd = format!(
        "microscale convert {} -o {} --outtype q4_k_m --quant-method gptq --calib {} --calib-chunks {} --target-size {}",
        opts.model.display(),
        opts.out.display(),
        work.join("calib.imatrix.moments.gguf").display(),
        opts.calib_chunks,
        pick.target_bytes
    );
    if let Some(t) = &pick.prune {
        cmd.push(' ');
        cmd.push_str(&t.convert_flags());
    }
    for (role, f) in &c.loss_scales {
        cmd.push_str(&format!(" --loss-scale {role}={f}"));
    }
    cmd
}

/// How the sweep's row names a candidate.
fn candidate_variant(c: &Candidate) -> Variant {
    Variant {
        name: c.name.clone(),
        kind: Kind::Microscale,
        quant: Scheme::Q4KM,
        method: c.prune.as_ref().map_or("none".into(), |t| t.method.clone()),
        ratio: c.prune.as_ref().map_or(0.0, |t| t.ratio),
        quant_method: QuantMethod::Gptq,
        imatrix: true,
        budget: Some(Budget::Size(c.target_bytes)),
        sequential: 0,
        allocation: crate::prune::Allocation::Uniform,
    }
}

/// The sweet spot's verdict on one row: within the budget at 95% (paired), and fitting the profile.
fn verdict(study: &Study, name: &str, c: &Criteria, profile: &str) -> Result<Confirm> {
    let results = study.results()?;
    let paired = study.paired()?;
    let Some(i) = results.variants.iter().position(|v| v.name == name) else { bail!("{name}: no row in the study") };
    let v = &results.variants[i];
    let status = v.bench(profile).and_then(|b| b.status).map(|s| s.as_str().to_string());
    let fits = v.bench(profile).is_some_and(|b| b.fits());
    let cmp = paired.vs_baseline[i].as_ref();
    let check = quality_check(&results, v, c).and_then(|()| match cmp {
        Some(cmp) => interval_check(&results, cmp, c),
        None => Err("no item file: no paired interval".into()),
    });
    let confidence = cmp.and_then(|cmp| confidence(&results, cmp, c));
    Ok(Confirm {
        candidate: name.to_string(),
        file_bytes: v.size_bytes.unwrap_or(0),
        within_budget: check.is_ok(),
        why: match (&check, fits) {
            (Err(why), _) => Some(why.clone()),
            (Ok(()), false) => {
                Some(format!("does not fit {profile}: {}", status.clone().unwrap_or_else(|| "not benchmarked".into())))
            }
            _ => None,
        },
        confidence,
        fits,
        status,
        error: v.error.clone(),
    })
}

/// Write the outputs: the trace always; the GGUF and card only for a confirmed pick.
fn finish(opts: &ShrinkOptions, mut t: Trace, pick: Option<Candidate>) -> Result<Outcome> {
    t.pick = pick.as_ref().map(|c| c.name.clone());
    t.miss = match &pick {
        Some(_) => None,
        None => Some(t.best_miss()),
    };
    crate::util::atomic::write_file(&opts.trace_path(), serde_json::to_string_pretty(&t)?.as_bytes())?;
    let Some(c) = pick else { return Ok(Outcome { trace: t, written: None }) };
    crate::util::atomic::write_file(&opts.card_path(), card::card(&t, opts)?.as_bytes())?;
    copy_atomically(Path::new(&c.path), &opts.out)?;
    Ok(Outcome { trace: t, written: Some(opts.out.clone()) })
}

/// `to` appears only complete: written beside it under a temporary name, then renamed.
fn copy_atomically(from: &Path, to: &Path) -> Result<()> {
    let tmp = crate::util::atomic::TempOutput::create(to)?;
    std::fs::copy(from, tmp.path()).with_context(|| format!("{}: cannot write", tmp.path().display()))?;
    tmp.commit_written()
}

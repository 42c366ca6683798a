//! `microscale sweep`: build every variant of a grid, evaluate and benchmark it, and append one
//! row per variant to `results.csv`.
//!
//! Crash-isolated: each variant is built, calibrated, evaluated and benchmarked in a child process
//! (`microscale sweep … --variant NAME`, the same binary), which writes its row to
//! `rows/NAME.json`, its log to `logs/NAME.log`, and what each perplexity window and task item
//! scored to `items/NAME.json` (`record::items`: the report's paired intervals). A child that
//! crashes (a segfault, a failed `GGML_ASSERT`) or runs out of time becomes a row with that status
//! and the sweep goes on.
//!
//! Resumable and safe: variants already in results.csv are skipped (failed ones too, unless
//! `retry_failed`); each row is appended and flushed as soon as its variant is measured, so an
//! interrupted sweep loses only the variant in progress; variant GGUFs are deleted once measured
//! unless `keep` (the baseline is kept: every KL divergence needs it).
//!
//! On a cluster, [`slurm`] runs the same children as a SLURM job array (`sweep --slurm`): a
//! preparation job makes what they share ([`prepare_shared`]), each array task runs one variant's
//! child ([`run_variant_task`]) and leaves its row file, and [`merge_rows`] gathers the row files
//! into results.csv in grid order.
//!
//! [`grid`] reads the grid files. Uses `convert`, `engine` (stock quants), `eval`, `bench`,
//! `sandbox` (each variant's child), `record`, `util`.

pub mod grid;
pub mod rebench;
pub mod slurm;

use crate::bench::run::{bench_model, BenchOptions, BenchRow};
use crate::convert::{convert, ConvertOptions};
use crate::engine::quantize::{stock_quantize, StockOptions};
use crate::engine::LoadOptions;
use crate::eval::run::{run as run_eval, EvalSpec};
use crate::gguf::imatrix::Imatrix;
use crate::prune::PruneSpec;
use crate::quant::mix::Scheme;
use crate::record::columns::{self, profile_column};
use crate::record::items::items_path;
use crate::record::rows::{utc_now, CsvAppender, ModelId};
use crate::record::status::Status;
use crate::sandbox::caps::{run_capped, Caps};
use crate::sandbox::child::{child_exe, ChildSpec, SweepChild, SweepJob};
use crate::sandbox::failure::classify;
use crate::util::atomic::write_file;
use crate::util::progress::Progress;
use anyhow::{bail, Context, Result};
use grid::{Grid, Kind, Variant};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// The source model (Hugging Face directory or GGUF).
    pub src: PathBuf,
    /// The grid file (each variant's child reads it again).
    pub grid_path: PathBuf,
    pub out: PathBuf,
    pub keep: bool,
    pub threads: usize,
    pub quiet: bool,
    /// The data folder (evaluation sets and calibration text).
    pub data: crate::util::data::DataDir,
    /// The microscale binary for the variant and benchmark children (default: this executable).
    pub child_exe: Option<PathBuf>,
    /// Run again the variants whose recorded row is not `ok`.
    pub retry_failed: bool,
    /// A variant's child is killed after this long (its row says `timeout`).
    pub variant_timeout: Duration,
    /// How evaluation loads each model (memory-mapped, as `eval`); the benchmarks read it into RAM
    /// as `bench` does, with the same offload. Building and calibrating stay on the CPU.
    pub load: LoadOptions,
    /// The file the model came as (a GGUF it was imported from, or the GGUF swept): measured as
    /// the `as-shipped` row ([`grid::Grid::add_as_shipped`]), never deleted.
    pub as_shipped: Option<PathBuf>,
}

impl SweepOptions {
    pub fn new(src: &Path, grid_path: &Path, out: &Path) -> SweepOptions {
        SweepOptions {
            src: src.to_path_buf(),
            grid_path: grid_path.to_path_buf(),
            out: out.to_path_buf(),
            keep: false,
            threads: crate::engine::default_threads(),
            quiet: true,
            data: crate::util::data::DataDir::resolve(None),
            child_exe: None,
            retry_failed: false,
            variant_timeout: Duration::from_secs(12 * 3600),
            load: LoadOptions::default(),
            as_shipped: None,
        }
    }

    /// The worker that does `job` for this sweep, as its command line says.
    pub fn child(&self, job: SweepJob) -> SweepChild {
        SweepChild {
            model: self.src.clone(),
            grid: self.grid_path.clone(),
            out: self.out.clone(),
            data_dir: self.data.root.clone(),
            threads: self.threads,
            gpu_layers: self.load.gpu_layers,
            keep: self.keep,
            child_exe: self.child_exe.clone(),
            variant_timeout: self.variant_timeout.as_secs(),
            as_shipped: self.as_shipped.clone(),
            job,
        }
    }
}

/// The status of a variant's row: `ok`, or how its child failed (`error`, `crash`, `timeout`).
pub const STATUS_OK: &str = "ok";

/// The results.csv header for a grid (profile columns in the grid's order; the columns
/// themselves are [`columns`]'s, which `report` reads).
pub fn header(grid: &Grid) -> Vec<String> {
    columns::results_header(&grid.bench.profiles)
}

/// The rows already recorded in a results.csv (checking its header matches), in file order.
fn recorded_rows(path: &Path, header: &[String]) -> Result<Vec<BTreeMap<String, String>>> {
    if !path.exists() {
        return Ok(vec![]);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let records = crate::record::results::parse_csv(&text, path)?;
    let Some(((_, h), rows)) = records.split_first() else { return Ok(vec![]) };
    let rows: Vec<BTreeMap<String, String>> =
        rows.iter().map(|(_, r)| h.iter().cloned().zip(r.iter().cloned()).collect()).collect();
    if h != header {
        if !only_lacks_optional_columns(h, header) {
            bail!("{}: written by a grid with other columns (profiles); use another --out", path.display());
        }
        // Written by an earlier microscale, before a column readers do without (`P:repacked`,
        // `gpu_layers`): rewritten whole with the current header, those fields empty, so that
        // the rows appended next line up.
        rewrite_results(path, header, &rows)?;
    }
    Ok(rows)
}

/// `old` is `new` without some of the columns an earlier microscale did not write, in the same order.
fn only_lacks_optional_columns(old: &[String], new: &[String]) -> bool {
    let optional = |c: &str| {
        columns::OPTIONAL.contains(&c)
            || c.rsplit_once(':').is_some_and(|(_, m)| columns::PROFILE_OPTIONAL.contains(&m))
    };
    let kept: Vec<&String> = new.iter().filter(|c| old.contains(c)).collect();
    old.len() == kept.len()
        && old.iter().zip(&kept).all(|(a, b)| a == *b)
        && new.iter().all(|c| old.contains(c) || optional(c))
}

/// A row's fields in the header's order (empty where the row has no value).
fn fields<'a>(header: &'a [String], row: &'a BTreeMap<String, String>) -> impl Iterator<Item = &'a str> {
    header.iter().map(|c| row.get(c).map(String::as_str).unwrap_or(""))
}

fn append_row(path: &Path, header: &[String], row: &BTreeMap<String, String>) -> Result<()> {
    let mut out = CsvAppender::open(path, header)?;
    out.append(fields(header, row))?;
    out.finish()
}

/// Rewrite results.csv with only `rows` (atomically): for `--retry-failed`, and under a newer header.
fn rewrite_results(path: &Path, header: &[String], rows: &[BTreeMap<String, String>]) -> Result<()> {
    let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
    w.write_record(header)?;
    for r in rows {
        w.write_record(fields(header, r))?;
    }
    let bytes = w.into_inner().map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.error()))?;
    write_file(path, &bytes)
}

fn fmt(x: f64) -> String {
    format!("{x:.6}")
}

/// Remove temporary files an interrupted run left in the variants directory.
fn clean_partial(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// The sweep's working folders under OUT.
struct Dirs {
    variants: PathBuf,
    rows: PathBuf,
    logs: PathBuf,
    /// Per-variant item files (`record::items`), kept with results.csv.
    items: PathBuf,
}

impl Dirs {
    /// The folders, made if missing. `clean` removes what an interrupted run left half-written
    /// (only the sweep's own process does: a variant's child must not touch its siblings' files).
    fn create(out: &Path, clean: bool) -> Result<Dirs> {
        let d = Dirs {
            variants: out.join("variants"),
            rows: out.join("rows"),
            logs: out.join("logs"),
            items: out.join("items"),
        };
        for dir in [&d.variants, &d.rows, &d.logs, &d.items] {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            if clean {
                clean_partial(dir);
            }
        }
        Ok(d)
    }

    fn row_file(&self, v: &Variant) -> PathBuf {
        self.rows.join(format!("{}.json", v.name))
    }
}

/// What a sweep writes in its output directory, and nothing else (the report adds `report.md`
/// and `plots/`): an input elsewhere in that directory is safe.
pub const OUT_ENTRIES: &[&str] = &[
    "results.csv",
    "variants",
    "rows",
    "logs",
    "items",
    "calib.imatrix.gguf",
    "calib.imatrix.moments.gguf",
    "slurm",
    "speeds.json",
    // `sweep --litert` ([`crate::record::twins`]).
    "litert",
];

/// Everything the grid's variants will read, checked before any work: the calibration text and,
/// when the variants are to be evaluated, the evaluation text and every task's items (parsed as
/// evaluation parses them, with the grid's shots, limit and seed), so that a malformed task file
/// is not found after the baseline is built.
pub fn check_before_work(grid: &Grid, opts: &SweepOptions, evaluates: bool) -> Result<()> {
    if grid.variants.iter().any(|v| v.imatrix || v.needs_moments()) {
        opts.data.file(crate::util::data::CALIB_TEXT)?;
    }
    if !evaluates {
        return Ok(());
    }
    opts.data.file(crate::util::data::WIKITEXT_TEST)?;
    let mut spec = EvalSpec::new(opts.threads);
    spec.data = opts.data.clone();
    spec.limit = grid.eval.limit;
    spec.shots = grid.eval.shots;
    for t in &grid.eval.tasks {
        crate::eval::run::load_task(&t.parse()?, &spec)?;
    }
    Ok(())
}

/// Run every variant not yet recorded, each in its own child process; returns results.csv's path.
pub fn run_sweep(grid: &Grid, opts: &SweepOptions) -> Result<PathBuf> {
    let dirs = Dirs::create(&opts.out, true)?;
    let results = opts.out.join("results.csv");
    let header = header(grid);
    let mut recorded = recorded_rows(&results, &header)?;
    if opts.retry_failed {
        let before = recorded.len();
        recorded.retain(|r| r.get("status").map(String::as_str) == Some(STATUS_OK));
        if recorded.len() != before {
            rewrite_results(&results, &header, &recorded)?;
        }
    }
    let done: Vec<String> = recorded.iter().filter_map(|r| r.get("variant").cloned()).collect();
    let progress = Progress::new(grid.variants.len() as u64, "sweep", opts.quiet);
    for v in &grid.variants {
        progress.set_message(&v.name);
        if !done.contains(&v.name) {
            let row = run_variant_child(v, opts, &dirs)?;
            append_row(&results, &header, &row)?;
        }
        progress.inc(1);
    }
    progress.finish();
    put_in_grid_order(&results, &header, grid)?;
    Ok(results)
}

/// Rewrite results.csv in the grid's order when retries appended rows out of it (rows of variants
/// the grid no longer has go last).
fn put_in_grid_order(results: &Path, header: &[String], grid: &Grid) -> Result<()> {
    let rows = recorded_rows(results, header)?;
    let rank = |r: &BTreeMap<String, String>| {
        let name = r.get("variant").map(String::as_str).unwrap_or("");
        grid.variants.iter().position(|v| v.name == name).unwrap_or(usize::MAX)
    };
    let mut sorted = rows.clone();
    sorted.sort_by_key(rank);
    if sorted != rows {
        rewrite_results(results, header, &sorted)?;
    }
    Ok(())
}

/// One variant in a child process: its row as the child wrote it, or, when the child died
/// without writing one, a row saying how it died.
fn run_variant_child(v: &Variant, opts: &SweepOptions, dirs: &Dirs) -> Result<BTreeMap<String, String>> {
    let row_file = dirs.row_file(v);
    let _ = std::fs::remove_file(&row_file);
    let spec = ChildSpec::Sweep(opts.child(SweepJob::Variant(v.name.clone())));
    let cmd = spec.command(&child_exe(opts.child_exe.as_deref())?);
    let outcome = run_capped(cmd, &Caps::default(), opts.variant_timeout)?;
    let log = dirs.logs.join(format!("{}.log", v.name));
    write_file(&log, outcome.stderr.as_bytes())?;
    if let Ok(text) = std::fs::read_to_string(&row_file) {
        if let Ok(row) = serde_json::from_str::<BTreeMap<String, String>>(&text) {
            return Ok(row);
        }
    }
    let failure = classify(&outcome, None, opts.variant_timeout);
    let mut row = identity(v, opts);
    row.insert("status".into(), failure.status.as_str().into());
    row.insert("error".into(), failure.reason);
    Ok(row)
}

/// `sweep --variant NAME`: measure one variant in this process and write its row file. Returns
/// the row (its `status` says whether it succeeded).
pub fn run_one_variant(grid: &Grid, name: &str, opts: &SweepOptions) -> Result<BTreeMap<String, String>> {
    let v = grid.variant(name)?;
    crate::util::fault::at(&format!("variant:{}", v.name));
    let dirs = Dirs::create(&opts.out, false)?;
    let baseline = dirs.variants.join("baseline-f32.gguf");
    let calib = opts.out.join("calib.imatrix.gguf");
    // An item file left by an earlier attempt must not outlive the row it went with.
    let _ = std::fs::remove_file(items_path(&opts.out, &v.name));
    let row = match measure(v, grid, opts, &dirs.variants, &baseline, &calib) {
        Ok(row) => row,
        Err(e) => {
            let mut row = identity(v, opts);
            row.insert("status".into(), Status::Error.as_str().into());
            row.insert("error".into(), format!("{e:#}").replace('\n', " "));
            row
        }
    };
    write_file(&dirs.row_file(v), serde_json::to_string_pretty(&row)?.as_bytes())?;
    Ok(row)
}

/// `sweep --variant NAME --build-only`: make the variant's GGUF exactly as the sweep would (the
/// same calibration and importance matrix), without measuring it, and return its path
/// (`OUT/variants/NAME.gguf`; the baseline's is `baseline-f32.gguf`). A file already there is
/// reused.
pub fn build_variant(grid: &Grid, name: &str, opts: &SweepOptions) -> Result<PathBuf> {
    let v = grid.variant(name)?;
    let dirs = Dirs::create(&opts.out, false)?;
    let baseline = dirs.variants.join("baseline-f32.gguf");
    build(v, opts, grid, &dirs.variants, &baseline, &opts.out.join("calib.imatrix.gguf"))
}

/// A SLURM array task (`sweep --slurm-task NAME`): one variant in its own child process, as the
/// local sweep runs it, its row written to `rows/NAME.json` (atomically) even when the child died
/// without writing one. Returns the row.
pub fn run_variant_task(grid: &Grid, name: &str, opts: &SweepOptions) -> Result<BTreeMap<String, String>> {
    let v = grid.variant(name)?;
    let dirs = Dirs::create(&opts.out, false)?;
    let row = run_variant_child(v, opts, &dirs)?;
    write_file(&dirs.row_file(v), serde_json::to_string_pretty(&row)?.as_bytes())?;
    Ok(row)
}

/// Measure a GGUF made outside the grid's recipes (`shrink`'s candidates) exactly as a variant is
/// measured (same windows, items and profiles), in this process, and record it: its item file, and
/// its row appended to results.csv. Returns the row. A failure is an error and leaves no row, so
/// that a resumed search measures it again rather than reading a failure as a verdict.
pub fn measure_extra(v: &Variant, grid: &Grid, opts: &SweepOptions, path: &Path) -> Result<BTreeMap<String, String>> {
    let dirs = Dirs::create(&opts.out, true)?;
    let results = opts.out.join("results.csv");
    let header = header(grid);
    recorded_rows(&results, &header)?;
    let baseline = dirs.variants.join("baseline-f32.gguf");
    let _ = std::fs::remove_file(items_path(&opts.out, &v.name));
    let mut row = identity(v, opts);
    measure_file(v, grid, opts, path, &baseline, &mut row).with_context(|| format!("measuring {}", v.name))?;
    append_row(&results, &header, &row)?;
    Ok(row)
}

/// The rows results.csv holds (its header checked against the grid's).
pub fn recorded(grid: &Grid, out: &Path) -> Result<Vec<BTreeMap<String, String>>> {
    recorded_rows(&out.join("results.csv"), &header(grid))
}

/// The variants of the grid that have no row yet (in results.csv or as a row file), in grid order.
pub fn variants_without_rows<'g>(grid: &'g Grid, out: &Path) -> Result<Vec<&'g Variant>> {
    let recorded = recorded_rows(&out.join("results.csv"), &header(grid))?;
    let rows = out.join("rows");
    Ok(grid
        .variants
        .iter()
        .filter(|v| !recorded.iter().any(|r| r.get("variant") == Some(&v.name)))
        .filter(|v| !rows.join(format!("{}.json", v.name)).exists())
        .collect())
}

/// Gather the row files (`rows/NAME.json`) of the grid's variants that results.csv lacks into
/// results.csv, rewritten atomically in grid order (a merge running twice at once writes the same
/// file twice). Returns results.csv's rows by variant name.
pub fn merge_rows(grid: &Grid, out: &Path) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
    let results = out.join("results.csv");
    let header = header(grid);
    let mut rows = recorded_rows(&results, &header)?;
    let before = rows.len();
    for v in &grid.variants {
        if rows.iter().any(|r| r.get("variant") == Some(&v.name)) {
            continue;
        }
        let file = out.join("rows").join(format!("{}.json", v.name));
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        let row: BTreeMap<String, String> =
            serde_json::from_str(&text).with_context(|| format!("{}: not a row file", file.display()))?;
        rows.push(row);
    }
    let rank = |r: &BTreeMap<String, String>| {
        let name = r.get("variant").map(String::as_str).unwrap_or("");
        grid.variants.iter().position(|v| v.name == name).unwrap_or(usize::MAX)
    };
    let mut sorted = rows.clone();
    sorted.sort_by_key(rank);
    if sorted != rows || rows.len() != before || !results.exists() {
        rewrite_results(&results, &header, &sorted)?;
    }
    Ok(sorted.into_iter().filter_map(|r| Some((r.get("variant")?.clone(), r))).collect())
}

/// Drop the failed rows (status not `ok`) from results.csv and their row files, so that they
/// count as without a row (`--retry-failed` on a cluster).
pub fn forget_failed_rows(grid: &Grid, out: &Path) -> Result<()> {
    let results = out.join("results.csv");
    let header = header(grid);
    let rows = recorded_rows(&results, &header)?;
    let (ok, failed): (Vec<_>, Vec<_>) =
        rows.into_iter().partition(|r| r.get("status").map(String::as_str) == Some(STATUS_OK));
    for r in &failed {
        if let Some(name) = r.get("variant") {
            let _ = std::fs::remove_file(out.join("rows").join(format!("{name}.json")));
        }
    }
    if !failed.is_empty() {
        rewrite_results(&results, &header, &ok)?;
    }
    Ok(())
}

/// A SLURM preparation job (`sweep --slurm-prepare`): what the variants without a row share, made
/// once before the array's tasks start side by side: the F32 baseline, the calibration (importance
/// matrix, and second moments if a variant compensates errors) and the baseline's
/// log-probabilities for every KL divergence. Each is made exactly as the first variant needing it
/// would make it in a local sweep, so that the rows are the same.
pub fn prepare_shared(grid: &Grid, opts: &SweepOptions) -> Result<()> {
    let dirs = Dirs::create(&opts.out, false)?;
    let baseline = dirs.variants.join("baseline-f32.gguf");
    let calib = opts.out.join("calib.imatrix.gguf");
    if !baseline.exists() {
        convert(&opts.src, &baseline, &ConvertOptions::new(Scheme::F32))?;
    }
    let pending = variants_without_rows(grid, &opts.out)?;
    let built = pending.iter().filter(|v| v.kind != Kind::Baseline);
    if built.clone().any(|v| !v.needs_moments() && (v.imatrix || v.method != "none")) {
        calibration_imatrix(opts, grid, &calib)?;
    }
    if let Some(v) = built.clone().find(|v| v.needs_moments() && v.kind == Kind::Microscale) {
        if !calib.with_extension("moments.gguf").exists() {
            crate::convert::calibrate_model(&opts.src, &variant_convert_options(v, opts, grid, &calib)?)?;
        }
    }
    let saved = baseline_log_probs(&baseline, grid.eval.kld_chunks);
    if grid.eval.kld_chunks > 0 && !saved.exists() {
        // As the baseline variant saves them (`measure_file`): the same windows and threads.
        let mut spec = EvalSpec::new(opts.threads);
        spec.data = opts.data.clone();
        spec.load = opts.load;
        spec.chunks = Some(grid.eval.ppl_chunks);
        spec.kld_chunks = Some(grid.eval.kld_chunks);
        spec.save_kld_base = Some(saved);
        run_eval(&baseline, &spec, true)?;
    }
    Ok(())
}

fn identity(v: &Variant, opts: &SweepOptions) -> BTreeMap<String, String> {
    let mut row = BTreeMap::new();
    row.insert("gpu_layers".into(), opts.load.gpu_layers.to_string());
    row.insert("variant".into(), v.name.clone());
    row.insert("kind".into(), v.kind.as_str().into());
    row.insert("recipe".into(), v.recipe());
    row.insert("method".into(), v.method.clone());
    row.insert("prune_ratio".into(), format!("{}", v.ratio));
    row.insert("quant".into(), v.quant.name().into());
    row.insert("status".into(), STATUS_OK.into());
    row.insert("microscale".into(), env!("CARGO_PKG_VERSION").into());
    row.insert("llama_cpp".into(), crate::engine::LLAMA_CPP_SYS_VERSION.into());
    row.insert("date".into(), utc_now());
    row
}

/// Where the baseline's saved log-probabilities over `windows` live (`eval --save-kld-base`): a
/// grid that changes its KLD windows on resume gets a file of its own.
fn baseline_log_probs(baseline: &Path, windows: usize) -> PathBuf {
    baseline.with_extension(format!("{windows}w.kld"))
}

/// Build the variant's GGUF (the baseline stays for later KL divergences).
fn build(v: &Variant, opts: &SweepOptions, grid: &Grid, dir: &Path, baseline: &Path, calib: &Path) -> Result<PathBuf> {
    if !baseline.exists() {
        convert(&opts.src, baseline, &ConvertOptions::new(Scheme::F32))?;
    }
    if v.kind == Kind::Baseline {
        return Ok(baseline.to_path_buf());
    }
    if v.kind == Kind::Source {
        return opts.as_shipped.clone().ok_or_else(|| anyhow::anyhow!("{}: no --as-shipped file given", v.name));
    }
    let path = dir.join(format!("{}.gguf", v.name));
    if path.exists() {
        return Ok(path); // kept from an earlier run
    }
    match v.kind {
        Kind::Stock => {
            let imatrix = if v.imatrix { Some(calibration_imatrix(opts, grid, calib)?) } else { None };
            let sopts = StockOptions { threads: opts.threads, quiet: true, ..Default::default() };
            stock_quantize(baseline, &path, v.quant, imatrix.as_ref(), &sopts)?
        }
        _ => {
            convert(&opts.src, &path, &variant_convert_options(v, opts, grid, calib)?)?;
        }
    }
    Ok(path)
}

/// How a microscale variant is converted.
fn variant_convert_options(v: &Variant, opts: &SweepOptions, grid: &Grid, calib: &Path) -> Result<ConvertOptions> {
    let mut prune = v.prune_spec(grid.calib_chunks)?;
    // One calibration for the whole sweep (pruning statistics and importance matrix); the
    // error-compensated variants share a second one that also holds the second moments
    // (the same text and chunks: its importance matrix is the same).
    let calib = if v.needs_moments() { calib.with_extension("moments.gguf") } else { calib.to_path_buf() };
    prune.calib = Some(calib);
    prune.data = opts.data.clone();
    Ok(ConvertOptions {
        prune,
        quant_method: v.quant_method,
        budget: v.budget,
        use_calib_imatrix: v.imatrix,
        threads: opts.threads,
        ..ConvertOptions::new(v.quant)
    })
}

/// The sweep's importance matrix, the same for our variants and llama.cpp's: calibrated from the
/// source once (and saved) by whichever variant needs it first.
fn calibration_imatrix(opts: &SweepOptions, grid: &Grid, calib: &Path) -> Result<Imatrix> {
    if !calib.exists() {
        let prune = PruneSpec {
            calib: Some(calib.to_path_buf()),
            calib_chunks: grid.calib_chunks,
            data: opts.data.clone(),
            ..PruneSpec::default()
        };
        let copts = ConvertOptions { prune, threads: opts.threads, ..ConvertOptions::new(Scheme::F32) };
        crate::convert::calibrate_model(&opts.src, &copts)?;
    }
    Imatrix::load(calib)
}

fn measure(
    v: &Variant,
    grid: &Grid,
    opts: &SweepOptions,
    dir: &Path,
    baseline: &Path,
    calib: &Path,
) -> Result<BTreeMap<String, String>> {
    let mut row = identity(v, opts);
    let path = build(v, opts, grid, dir, baseline, calib)?;
    let result = measure_file(v, grid, opts, &path, baseline, &mut row);
    // The baseline serves every KL divergence; the file as shipped is the user's own.
    if !opts.keep && !matches!(v.kind, Kind::Baseline | Kind::Source) {
        let _ = std::fs::remove_file(&path);
    }
    result?;
    Ok(row)
}

fn measure_file(
    v: &Variant,
    grid: &Grid,
    opts: &SweepOptions,
    path: &Path,
    baseline: &Path,
    row: &mut BTreeMap<String, String>,
) -> Result<()> {
    let id = ModelId::of(path)?;
    row.insert("file_size_bytes".into(), id.size_bytes.to_string());
    row.insert("n_params".into(), id.n_params.to_string());
    row.insert("bits_per_weight".into(), format!("{:.4}", id.bits_per_weight));
    row.insert("eval_chunks".into(), grid.eval.ppl_chunks.to_string());
    row.insert("eval_limit".into(), grid.eval.limit.map(|l| l.to_string()).unwrap_or_default());

    // Perplexity, KL divergence against the baseline and tasks, in one pass over one loaded model.
    let mut spec = EvalSpec::new(opts.threads);
    spec.data = opts.data.clone();
    spec.load = opts.load;
    spec.limit = grid.eval.limit;
    spec.shots = grid.eval.shots;
    spec.ppl = Some(opts.data.file(crate::util::data::WIKITEXT_TEST)?);
    spec.chunks = Some(grid.eval.ppl_chunks);
    spec.tasks = grid.eval.tasks.iter().map(|t| t.parse()).collect::<Result<_>>()?;
    if grid.eval.kld_chunks > 0 {
        spec.kld_chunks = Some(grid.eval.kld_chunks);
        // The baseline's log-probabilities are saved once, beside it, and every later variant is
        // compared against them without running the baseline again (a resumed sweep whose
        // baseline predates the file runs it).
        let saved = baseline_log_probs(baseline, grid.eval.kld_chunks);
        if v.kind == Kind::Baseline {
            // Saved once (a SLURM preparation job may have saved them already): variants running
            // at the same time read the file.
            if !saved.exists() {
                spec.save_kld_base = Some(saved);
            }
        } else {
            spec.kld_base = Some(if saved.exists() { saved } else { baseline.to_path_buf() });
        }
    }
    let out = run_eval(path, &spec, true)?;
    // What each window and item scored, beside results.csv, for the report's paired intervals.
    out.item_record(&v.name).write(&items_path(&opts.out, &v.name))?;
    for r in &out.rows {
        let col = r.metric.replace('-', "_");
        if col == "ppl" || columns::TASKS.contains(&col.as_str()) {
            row.insert(col.clone(), fmt(r.value));
            row.insert(format!("{col}_stderr"), fmt(r.stderr));
        }
    }
    if let Some(k) = &out.kld {
        row.insert("kld".into(), fmt(k.kld_mean));
        row.insert("kld_stderr".into(), fmt(k.kld_stderr));
        row.insert("same_top".into(), fmt(k.same_top));
    }
    // Edge profiles.
    let bopts = bench_options(grid, opts);
    for name in &grid.bench.profiles {
        let p = grid.profile(name)?;
        let b = bench_model(path, &p, &bopts)?;
        for w in &b.warnings {
            eprintln!("warning: {}: {w}", v.name);
        }
        put_bench_columns(row, name, &b);
    }
    Ok(())
}

/// How every variant is benchmarked: the grid's tokens and repetitions, the weights read into RAM.
pub fn bench_options(grid: &Grid, opts: &SweepOptions) -> BenchOptions {
    BenchOptions {
        n_prompt: grid.bench.pp,
        n_gen: grid.bench.tg,
        reps: grid.bench.reps,
        child_exe: opts.child_exe.clone(),
        load: LoadOptions { gpu_layers: opts.load.gpu_layers, ..BenchOptions::default().load },
        ..Default::default()
    }
}

/// A benchmark's measurements as the row's `PROFILE:*` columns (those it lacks are emptied).
fn put_bench_columns(row: &mut BTreeMap<String, String>, profile: &str, b: &BenchRow) {
    let c = |k: &str| profile_column(profile, k);
    for k in ["pp_tps", "pp_tps_sd", "tg_tps", "tg_tps_sd", "load_s", "ttft_s", "repacked"] {
        row.remove(&c(k));
    }
    row.insert(c("status"), b.status.as_str().to_string());
    row.insert(c("peak_rss_mib"), format!("{:.1}", b.peak_rss as f64 / (1 << 20) as f64));
    // The cap the run had: the device's own memory where the profile's could not be enforced.
    row.insert(
        c("mem_cap_mib"),
        b.memory_cap.map(|m| format!("{:.0}", m as f64 / (1 << 20) as f64)).unwrap_or_default(),
    );
    if let Some(pp) = b.pp {
        row.insert(c("pp_tps"), format!("{:.2}", pp.mean));
        row.insert(c("pp_tps_sd"), format!("{:.2}", pp.sd));
    }
    if let Some(tg) = b.tg {
        row.insert(c("tg_tps"), format!("{:.2}", tg.mean));
        row.insert(c("tg_tps_sd"), format!("{:.2}", tg.sd));
    }
    if let Some(l) = b.load_s {
        row.insert(c("load_s"), format!("{l:.3}"));
    }
    if let Some(t) = b.ttft_s {
        row.insert(c("ttft_s"), format!("{t:.3}"));
    }
    if let Some(m) = b.repacked_mib {
        row.insert(c("repacked"), if m > 0.0 { "yes" } else { "no" }.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A study written before `P:repacked` resumes: its rows are rewritten under the current header,
    /// their values where they were, the new column empty. Other differences are still refused.
    #[test]
    fn an_older_results_csv_gains_the_new_columns_and_resumes() {
        let new = columns::results_header(&["pi4-4gb".to_string()]);
        let old: Vec<String> = new.iter().filter(|c| *c != "pi4-4gb:repacked").cloned().collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.csv");
        let row: Vec<String> =
            old.iter().map(|c| if c == "variant" { "q8_0".into() } else { format!("v-{c}") }).collect();
        std::fs::write(&path, format!("{}\n{}\n", old.join(","), row.join(","))).unwrap();
        let rows = recorded_rows(&path, &new).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["variant"], "q8_0");
        assert_eq!(rows[0]["pi4-4gb:tg_tps"], "v-pi4-4gb:tg_tps");
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().next().unwrap(), new.join(","), "rewritten under the current header");
        let fields = crate::record::results::parse_csv(&text, &path).unwrap()[1].1.clone();
        let at = |c: &str| fields[new.iter().position(|h| h == c).unwrap()].clone();
        assert_eq!((at("pi4-4gb:repacked"), at("pi4-4gb:ttft_s")), (String::new(), "v-pi4-4gb:ttft_s".to_string()));

        let other: Vec<String> = new.iter().filter(|c| *c != "pi4-4gb:tg_tps").cloned().collect();
        std::fs::write(&path, format!("{}\n", other.join(","))).unwrap();
        assert!(recorded_rows(&path, &new).unwrap_err().to_string().contains("other columns"));
    }
}

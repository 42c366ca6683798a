//! `microscale sweep`: build every variant of a grid, evaluate and benchmark it, and append one
//! row per variant to `results.csv`.
//!
//! Resumable and safe: variants already in results.csv are skipped; each row is appended and
//! flushed as soon as its variant is measured, so an interrupted sweep loses only the variant in
//! progress; a variant that fails becomes a row with its error and the sweep goes on; variant GGUFs
//! are deleted once measured unless `keep` (the baseline is kept: every KL divergence needs it).

pub mod grid;

use crate::bench::profiles::profile;
use crate::bench::run::{bench_model, BenchOptions};
use crate::convert::{convert, ConvertOptions};
use crate::engine::quantize::{stock_quantize, StockOptions};
use crate::eval::run::{run as run_eval, EvalSpec, DEFAULT_PPL_FILE};
use crate::report::results::REQUIRED_COLUMNS;
use crate::report::rows::{csv_field, utc_now, ModelId};
use crate::util::progress::Progress;
use anyhow::{bail, Context, Result};
use grid::{Grid, Kind, Variant};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// The source model (Hugging Face directory or GGUF).
    pub src: PathBuf,
    pub out: PathBuf,
    pub keep: bool,
    pub threads: usize,
    pub quiet: bool,
    pub data_dir: PathBuf,
    /// The microscale binary for benchmark children (default: this executable).
    pub child_exe: Option<PathBuf>,
}

/// The task columns (each with `_stderr`), between the identity/perplexity columns and the profiles.
const TASK_COLUMNS: [&str; 10] = [
    "sst2_acc",
    "sst2_acc_stderr",
    "arc_easy_acc",
    "arc_easy_acc_stderr",
    "arc_easy_acc_norm",
    "arc_easy_acc_norm_stderr",
    "arc_challenge_acc",
    "arc_challenge_acc_stderr",
    "arc_challenge_acc_norm",
    "arc_challenge_acc_norm_stderr",
];
const PROFILE_COLUMNS: [&str; 8] =
    ["fits", "peak_rss_mib", "pp_tps", "pp_tps_sd", "tg_tps", "tg_tps_sd", "load_s", "mem_cap_mib"];

/// The results.csv header for a grid (profile columns in the grid's order).
///
/// The columns `report` requires come from its reader ([`REQUIRED_COLUMNS`]: identity and perplexity
/// first, provenance last); the task and profile columns go between them.
pub fn header(grid: &Grid) -> Vec<String> {
    let (head, tail) = REQUIRED_COLUMNS.split_at(REQUIRED_COLUMNS.iter().position(|c| *c == "error").unwrap());
    let mut h: Vec<String> = head.iter().chain(TASK_COLUMNS.iter()).map(|s| s.to_string()).collect();
    for p in &grid.bench.profiles {
        h.extend(PROFILE_COLUMNS.iter().map(|c| format!("{p}:{c}")));
    }
    h.extend(tail.iter().map(|s| s.to_string()));
    h
}

/// Names of the variants already recorded in a results.csv (checking its header matches).
fn done_variants(path: &Path, header: &[String]) -> Result<Vec<String>> {
    if !path.exists() {
        return Ok(vec![]);
    }
    let text = std::fs::read_to_string(path)?;
    let mut lines = text.lines();
    match lines.next() {
        Some(h) if h == header.join(",") => {}
        Some(_) => bail!("{}: written by a grid with other columns (profiles); use another --out", path.display()),
        None => return Ok(vec![]),
    }
    Ok(lines.filter(|l| !l.trim().is_empty()).map(first_field).collect())
}

fn first_field(line: &str) -> String {
    if let Some(rest) = line.strip_prefix('"') {
        rest.split("\",").next().unwrap_or("").replace("\"\"", "\"")
    } else {
        line.split(',').next().unwrap_or("").to_string()
    }
}

fn append_row(path: &Path, header: &[String], row: &BTreeMap<String, String>) -> Result<()> {
    let new = !path.exists() || std::fs::metadata(path)?.len() == 0;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("{}: cannot open", path.display()))?;
    if new {
        writeln!(f, "{}", header.join(","))?;
    }
    let fields: Vec<String> = header.iter().map(|c| csv_field(row.get(c).map(String::as_str).unwrap_or(""))).collect();
    writeln!(f, "{}", fields.join(","))?;
    f.flush()?;
    f.sync_data()?;
    Ok(())
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

pub fn run_sweep(grid: &Grid, opts: &SweepOptions) -> Result<PathBuf> {
    let variants_dir = opts.out.join("variants");
    std::fs::create_dir_all(&variants_dir).with_context(|| format!("cannot create {}", variants_dir.display()))?;
    clean_partial(&variants_dir);
    let results = opts.out.join("results.csv");
    let header = header(grid);
    let done = done_variants(&results, &header)?;
    let calib = opts.out.join("calib.imatrix.gguf");
    let baseline = variants_dir.join("baseline-f32.gguf");
    let progress = Progress::new(grid.variants.len() as u64, "sweep", opts.quiet);
    for v in &grid.variants {
        progress.set_message(&v.name);
        if done.contains(&v.name) {
            progress.inc(1);
            continue;
        }
        let row = match measure(v, grid, opts, &variants_dir, &baseline, &calib) {
            Ok(row) => row,
            Err(e) => {
                let mut row = identity(v);
                row.insert("error".into(), format!("{e:#}").replace('\n', " "));
                row
            }
        };
        append_row(&results, &header, &row)?;
        progress.inc(1);
    }
    progress.finish();
    Ok(results)
}

fn identity(v: &Variant) -> BTreeMap<String, String> {
    let mut row = BTreeMap::new();
    row.insert("variant".into(), v.name.clone());
    row.insert("kind".into(), v.kind.as_str().into());
    row.insert("recipe".into(), v.recipe());
    row.insert("method".into(), v.method.clone());
    row.insert("prune_ratio".into(), format!("{}", v.ratio));
    row.insert("quant".into(), v.quant.name().into());
    row.insert("microscale".into(), env!("CARGO_PKG_VERSION").into());
    row.insert("llama_cpp".into(), crate::engine::LLAMA_CPP_SYS_VERSION.into());
    row.insert("date".into(), utc_now());
    row
}

/// Build the variant's GGUF (the baseline stays for later KL divergences).
fn build(v: &Variant, opts: &SweepOptions, grid: &Grid, dir: &Path, baseline: &Path, calib: &Path) -> Result<PathBuf> {
    if !baseline.exists() {
        convert(&opts.src, baseline, &ConvertOptions::new(crate::quant::mix::Scheme::F32))?;
    }
    if v.kind == Kind::Baseline {
        return Ok(baseline.to_path_buf());
    }
    let path = dir.join(format!("{}.gguf", v.name));
    if path.exists() {
        return Ok(path); // kept from an earlier run
    }
    match v.kind {
        Kind::Stock => stock_quantize(
            baseline,
            &path,
            v.quant,
            None,
            &StockOptions { threads: opts.threads, ..Default::default() },
        )?,
        _ => {
            let mut prune = v.prune_spec(grid.calib_chunks)?;
            prune.calib = Some(calib.to_path_buf());
            let copts = ConvertOptions { prune, threads: opts.threads, ..ConvertOptions::new(v.quant) };
            convert(&opts.src, &path, &copts)?;
        }
    }
    Ok(path)
}

fn measure(
    v: &Variant,
    grid: &Grid,
    opts: &SweepOptions,
    dir: &Path,
    baseline: &Path,
    calib: &Path,
) -> Result<BTreeMap<String, String>> {
    let mut row = identity(v);
    let path = build(v, opts, grid, dir, baseline, calib)?;
    let result = measure_file(v, grid, opts, &path, baseline, &mut row);
    if !opts.keep && v.kind != Kind::Baseline {
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
    spec.data_dir = opts.data_dir.clone();
    spec.limit = grid.eval.limit;
    spec.shots = grid.eval.shots;
    spec.ppl = Some(DEFAULT_PPL_FILE.into());
    spec.chunks = Some(grid.eval.ppl_chunks);
    spec.tasks = grid.eval.tasks.iter().map(|t| t.parse()).collect::<Result<_>>()?;
    if v.kind != Kind::Baseline && grid.eval.kld_chunks > 0 {
        spec.kld_base = Some(baseline.to_path_buf());
        spec.kld_chunks = Some(grid.eval.kld_chunks);
    }
    let out = run_eval(path, &spec, true)?;
    for r in &out.rows {
        let col = r.metric.replace('-', "_");
        if col == "ppl" || TASK_COLUMNS.contains(&col.as_str()) {
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
    let bopts = BenchOptions {
        n_prompt: grid.bench.pp,
        n_gen: grid.bench.tg,
        reps: grid.bench.reps,
        child_exe: opts.child_exe.clone(),
        ..Default::default()
    };
    for name in &grid.bench.profiles {
        let p = profile(name)?;
        let b = bench_model(path, &p, &bopts)?;
        let c = |k: &str| format!("{name}:{k}");
        row.insert(c("fits"), u8::from(b.fits).to_string());
        row.insert(c("peak_rss_mib"), format!("{:.1}", b.peak_rss as f64 / (1 << 20) as f64));
        row.insert(
            c("mem_cap_mib"),
            p.memory.map(|m| format!("{:.0}", m as f64 / (1 << 20) as f64)).unwrap_or_default(),
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
    }
    Ok(())
}

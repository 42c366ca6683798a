//! The study's mobile stretch (`sweep --litert`): the baseline and each profile's sweet spot
//! exported to LiteRT, Android's own runtime, and measured beside their GGUF twins, so that the
//! report can say what moving to Android's stack costs or saves.
//!
//! For each pick (the baseline, then every distinct sweet spot, judged as `report` judges):
//! 1. its GGUF, rebuilt from its recipe where the sweep deleted it ([`sweep::build_variant`]);
//! 2. the LiteRT file (`OUT/litert/NAME.tflite`; litert-torch, the quantization chosen from the
//!    GGUF's type as `export` chooses it), with a prefill signature for the evaluation's windows
//!    and one for the benchmark's prompt; reused when already there;
//! 3. perplexity and KL divergence of both files on the same windows, against one saved base (the
//!    baseline GGUF's log-probabilities, `OUT/litert/baseline.NwKLD`): the GGUF through llama.cpp,
//!    the LiteRT file through LiteRT's interpreter, scored by the same code;
//! 4. prompt and generation speeds of both on this host (the grid's pp, tg and reps, the `host`
//!    profile's threads), one right after the other.
//!
//! The rows go to `OUT/litert/results.csv` ([`crate::record::twins`]) after each pick.

use crate::bench::run::{bench_model, caps_for, BenchOptions, MeanSd};
use crate::eval::run::{run as evaluate, EvalOutput, EvalSpec};
use crate::export::litert::{export, ExportOptions};
use crate::record::results::Results;
use crate::record::rows::utc_now;
use crate::record::twins::{read_twins, twins_csv, twins_dir, write_twins, TwinRow};
use crate::report::markdown::read_study;
use crate::report::paired::load_paired;
use crate::report::sweet_spot::{sweet_spot_paired, Criteria};
use crate::sweep::grid::{Grid, BASELINE};
use crate::sweep::{build_variant, variants_without_rows, SweepOptions};
use crate::util::choice::Choice;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Tokens per perplexity window, as `eval` and the sweep score them.
const WINDOW: usize = 512;

/// A variant the study exports, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Pick {
    pub variant: String,
    /// `baseline`, or `sweet spot: PROFILE, PROFILE`.
    pub role: String,
}

/// The baseline, then each distinct sweet spot of the grid's profiles (named with the profiles
/// it wins), judged on `criteria` as the report judges.
pub fn picks(results: &Results, paired: &crate::report::paired::Paired, criteria: &Criteria) -> Result<Vec<Pick>> {
    let Some(base) = results.baseline().filter(|b| !b.failed()) else {
        bail!("{}: no baseline row that succeeded", results.path.display());
    };
    let mut picks = vec![Pick { variant: base.name.clone(), role: "baseline".into() }];
    let mut spots: Vec<(String, Vec<String>)> = vec![];
    for profile in &results.profiles {
        let Ok(i) = sweet_spot_paired(results, paired, profile, criteria).pick else { continue };
        let name = &results.variants[i].name;
        match spots.iter_mut().find(|(n, _)| n == name) {
            Some((_, profiles)) => profiles.push(profile.clone()),
            None => spots.push((name.clone(), vec![profile.clone()])),
        }
    }
    for (name, profiles) in spots {
        let role = format!("sweet spot: {}", profiles.join(", "));
        match picks.iter_mut().find(|p| p.variant == name) {
            Some(p) => p.role = format!("{}; {role}", p.role),
            None => picks.push(Pick { variant: name, role }),
        }
    }
    Ok(picks)
}

/// Export the study's picks to LiteRT and measure them beside their GGUF twins; returns the rows
/// (also written to `OUT/litert/results.csv`).
pub fn litert_study(grid: &Grid, opts: &SweepOptions, criteria: &Criteria) -> Result<Vec<TwinRow>> {
    let missing = variants_without_rows(grid, &opts.out)?;
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|v| v.name.as_str()).collect();
        bail!(
            "{}: {} variant(s) have no row yet ({}): finish the sweep first",
            opts.out.display(),
            names.len(),
            names.join(", ")
        );
    }
    let results = read_study(&opts.out, &[])?;
    let paired = load_paired(&opts.out, &results)?;
    let picks = picks(&results, &paired, criteria)?;
    let dir = twins_dir(&opts.out);
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let earlier = read_twins(&twins_csv(&opts.out))?.unwrap_or_default();
    let windows = eval_windows(&results, grid);
    let base = saved_base(grid, opts, &dir, windows)?;
    let mut rows = vec![];
    for pick in &picks {
        if !opts.quiet {
            eprintln!("litert: {} ({})", pick.variant, pick.role);
        }
        let gguf = build_variant(grid, &pick.variant, opts).with_context(|| format!("rebuilding {}", pick.variant))?;
        let twin = Twin { pick, gguf: &gguf };
        rows.extend(twin.measure(grid, opts, &dir, &base, windows, &earlier)?);
        write_twins(&twins_csv(&opts.out), &rows)?;
    }
    Ok(rows)
}

/// The windows the study scored perplexity on (its baseline's `eval_chunks`), else the grid's.
fn eval_windows(results: &Results, grid: &Grid) -> usize {
    let recorded = results.baseline().and_then(|b| b.eval_chunks.as_deref()).and_then(|c| c.parse().ok());
    recorded.unwrap_or(grid.eval.ppl_chunks).max(1)
}

/// The baseline's log-probabilities over `windows` windows, saved once in `dir`.
fn saved_base(grid: &Grid, opts: &SweepOptions, dir: &Path, windows: usize) -> Result<PathBuf> {
    let path = dir.join(format!("baseline.{windows}w.kld"));
    if !path.exists() {
        let baseline = build_variant(grid, BASELINE, opts)?;
        // With no perplexity asked, the base is saved over the evaluation text (WikiText-2 test).
        let spec = EvalSpec {
            ppl: None,
            save_kld_base: Some(path.clone()),
            chunks: Some(windows),
            n_ctx: WINDOW,
            data: opts.data.clone(),
            ..EvalSpec::new(opts.threads)
        };
        evaluate(&baseline, &spec, opts.quiet)?;
    }
    Ok(path)
}

/// One pick: its GGUF and the LiteRT file made from it.
struct Twin<'a> {
    pick: &'a Pick,
    gguf: &'a Path,
}

impl Twin<'_> {
    fn measure(
        &self,
        grid: &Grid,
        opts: &SweepOptions,
        dir: &Path,
        base: &Path,
        windows: usize,
        earlier: &[TwinRow],
    ) -> Result<Vec<TwinRow>> {
        let name = &self.pick.variant;
        let tflite = dir.join(format!("{name}.tflite"));
        let made = self.litert_file(&tflite, grid, opts, earlier)?;
        // KL divergence only: its pass gives the perplexity too (llama-perplexity's), on the
        // base's windows, for both files alike.
        let spec = |tokenizer: Option<PathBuf>| EvalSpec {
            ppl: None,
            kld_base: Some(base.to_path_buf()),
            chunks: Some(windows),
            n_ctx: WINDOW,
            data: opts.data.clone(),
            tokenizer,
            load: crate::engine::LoadOptions { mmap: true, gpu_layers: 0 },
            ..EvalSpec::new(opts.threads)
        };
        let gguf_eval = evaluate(self.gguf, &spec(None), opts.quiet)?;
        let litert_eval = evaluate(&tflite, &spec(Some(self.gguf.to_path_buf())), opts.quiet)?;
        let host = grid.profile("host")?;
        let threads = caps_for(&host).0;
        let bopts = BenchOptions {
            n_prompt: grid.bench.pp,
            n_gen: grid.bench.tg,
            reps: grid.bench.reps,
            child_exe: opts.child_exe.clone(),
            ..Default::default()
        };
        let gguf_speed = bench_model(self.gguf, &host, &bopts)?;
        if gguf_speed.status != crate::record::Status::Fits {
            let why = gguf_speed.reason.clone().unwrap_or_default();
            bail!("{}: the benchmark on host ended `{}`: {why}", self.gguf.display(), gguf_speed.status.as_str());
        }
        let litert_speed = crate::engine::litert::bench(&tflite, bopts.n_prompt, bopts.n_gen, bopts.reps, threads)?;
        let row = |runtime: &str, file: &Path, weights: String, eval: &EvalOutput| -> Result<TwinRow> {
            Ok(TwinRow {
                variant: name.clone(),
                role: self.pick.role.clone(),
                runtime: runtime.into(),
                file: file.display().to_string(),
                weights,
                size_bytes: std::fs::metadata(file).with_context(|| format!("{}: cannot read", file.display()))?.len(),
                ppl: eval.kld.as_ref().map(|k| k.ppl),
                ppl_stderr: eval.kld.as_ref().map(|k| k.ppl_stderr),
                kld: eval.kld.as_ref().map(|k| k.kld_mean),
                kld_stderr: eval.kld.as_ref().map(|k| k.kld_stderr),
                same_top: eval.kld.as_ref().map(|k| k.same_top),
                pp_tps: None,
                pp_tps_sd: None,
                tg_tps: None,
                tg_tps_sd: None,
                load_s: None,
                peak_rss_mib: None,
                threads,
                n_prompt: bopts.n_prompt,
                n_gen: bopts.n_gen,
                eval_chunks: windows,
                export_s: None,
                export_peak_rss_mib: None,
                date: utc_now(),
            })
        };
        let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
        let gguf_row = TwinRow {
            pp_tps: gguf_speed.pp.map(|m| m.mean),
            pp_tps_sd: gguf_speed.pp.map(|m| m.sd),
            tg_tps: gguf_speed.tg.map(|m| m.mean),
            tg_tps_sd: gguf_speed.tg.map(|m| m.sd),
            load_s: gguf_speed.load_s,
            peak_rss_mib: Some(mib(gguf_speed.peak_rss)),
            ..row("llama.cpp", self.gguf, gguf_type(self.gguf)?, &gguf_eval)?
        };
        let (pp, tg) = (MeanSd::of(&litert_speed.pp_tps), MeanSd::of(&litert_speed.tg_tps));
        let litert_row = TwinRow {
            pp_tps: Some(pp.mean),
            pp_tps_sd: Some(pp.sd),
            tg_tps: Some(tg.mean),
            tg_tps_sd: Some(tg.sd),
            load_s: Some(litert_speed.load_s),
            peak_rss_mib: Some(mib(litert_speed.peak_rss_kib << 10)),
            export_s: Some(made.seconds),
            export_peak_rss_mib: made.peak_rss_mib,
            ..row("litert", &tflite, made.quantize.clone(), &litert_eval)?
        };
        Ok(vec![gguf_row, litert_row])
    }

    /// The LiteRT file: exported now, or reused (with the conversion's numbers recorded then).
    fn litert_file(&self, tflite: &Path, grid: &Grid, opts: &SweepOptions, earlier: &[TwinRow]) -> Result<Made> {
        let before = earlier.iter().find(|r| r.runtime == "litert" && Path::new(&r.file) == tflite);
        if let (true, Some(r)) = (tflite.exists(), before) {
            let (quantize, seconds, peak_rss_mib) =
                (r.weights.clone(), r.export_s.unwrap_or(0.0), r.export_peak_rss_mib);
            return Ok(Made { quantize, seconds, peak_rss_mib });
        }
        let prefill = vec![WINDOW, grid.bench.pp];
        let ctx = WINDOW.max(grid.bench.pp + grid.bench.tg);
        let e = export(self.gguf, tflite, &ExportOptions { quantize: None, prefill, ctx, quiet: opts.quiet })?;
        Ok(Made {
            quantize: e.quantize.name().to_string(),
            seconds: e.seconds,
            peak_rss_mib: (e.peak_rss_bytes > 0).then(|| e.peak_rss_bytes as f64 / (1 << 20) as f64),
        })
    }
}

/// What a conversion made.
struct Made {
    quantize: String,
    seconds: f64,
    peak_rss_mib: Option<f64>,
}

/// The type holding most of a GGUF's weights, as llama.cpp names it (`q4_1`).
fn gguf_type(path: &Path) -> Result<String> {
    let file = crate::gguf::GgufFile::open(path)?;
    Ok(crate::export::litert::main_type(&file).map_or("none".into(), |t| t.name().to_ascii_lowercase()))
}

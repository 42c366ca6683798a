//! The study's mobile stretch (`sweep --litert`): the baseline and each profile's sweet spot
//! exported to LiteRT, Android's own runtime, and measured beside their GGUF twins, so that the
//! report can say what moving to Android's stack costs or saves.
//!
//! For each pick (the baseline, then every distinct sweet spot, judged as `report` judges):
//! 1. its GGUF, rebuilt from its recipe where the sweep deleted it ([`sweep::build_variant`]);
//! 2. its LiteRT files (`OUT/litert/NAME.RECIPE.tflite`; litert-torch), with the recipe `export`
//!    chooses from the GGUF's type and, for a quantized GGUF, also `dynamic_int8` ([`recipes`]);
//!    a prefill signature for the evaluation's windows and one for the benchmark's prompt; reused
//!    when already there;
//! 3. perplexity and KL divergence of every file on the same windows, against one saved base (the
//!    baseline GGUF's log-probabilities, `OUT/litert/baseline.Nw.kld`): the GGUF through llama.cpp,
//!    the LiteRT files through LiteRT's interpreter, scored by the same code;
//! 4. prompt and generation speeds of both on this host (the grid's pp, tg and reps, the `host`
//!    profile's threads), one right after the other.
//!
//! The rows go to `OUT/litert/results.csv` ([`crate::record::twins`]) after each pick.

use crate::bench::run::{bench_model, caps_for, MeanSd};
use crate::eval::run::{run as evaluate, EvalSpec};
use crate::export::litert::{export, ExportOptions, LiteRtQuant};
use crate::quant::GgmlType;
use crate::record::results::Results;
use crate::record::rows::utc_now;
use crate::record::twins::{read_twins, twins_csv, twins_dir, write_twins, TwinRow, RUNTIME_LITERT, RUNTIME_LLAMA_CPP};
use crate::report::markdown::read_study;
use crate::report::paired::load_paired;
use crate::report::sweet_spot::{sweet_spot_paired, Criteria};
use crate::sweep::grid::{Grid, BASELINE};
use crate::sweep::{bench_options, build_variant, variants_without_rows, SweepOptions};
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
    if grid.bench.pp < 2 || grid.bench.tg < 1 {
        bail!(
            "{}: --litert benchmarks a prompt of [bench] pp tokens and tg generated ones: pp is {} and tg {}, \
             and each needs at least 2 and 1",
            opts.grid_path.display(),
            grid.bench.pp,
            grid.bench.tg
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
        let at = Setting { grid, opts, dir: &dir, base: &base, windows, earlier: &earlier };
        rows.extend(Twin { pick, gguf: &gguf }.measure(&at)?);
        // The earlier rows of picks not measured yet stay, so that a run stopped halfway loses nothing.
        let pending = earlier.iter().filter(|r| !rows.iter().any(|n| n.variant == r.variant));
        let kept: Vec<TwinRow> = rows.iter().cloned().chain(pending.cloned()).collect();
        write_twins(&twins_csv(&opts.out), &kept)?;
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

/// One pick: its GGUF and the LiteRT files made from it.
struct Twin<'a> {
    pick: &'a Pick,
    gguf: &'a Path,
}

/// What every measurement of a study shares.
struct Setting<'a> {
    grid: &'a Grid,
    opts: &'a SweepOptions,
    /// `OUT/litert/`.
    dir: &'a Path,
    /// The baseline's saved log-probabilities.
    base: &'a Path,
    windows: usize,
    /// The rows of an earlier run (its files and numbers are reused).
    earlier: &'a [TwinRow],
}

/// The LiteRT recipes a GGUF is exported with: the one `export` chooses from its type and, for a
/// quantized GGUF, also `dynamic_int8`. Both store int8 weights, but LiteRT dequantizes
/// weight-only int8 to float32 as it prepares each signature (3.7 GB resident for the default
/// model's 140 MiB file), while dynamic int8 stays int8 and computes in int8 (0.8 GB, faster) at
/// a few times the KL divergence: which one a phone can afford is the study's question.
fn recipes(main_type: Option<GgmlType>) -> Vec<LiteRtQuant> {
    let chosen = main_type.map_or(LiteRtQuant::WeightOnlyInt8, LiteRtQuant::default_for);
    match chosen {
        LiteRtQuant::WeightOnlyInt8 => vec![chosen, LiteRtQuant::DynamicInt8],
        _ => vec![chosen],
    }
}

impl Twin<'_> {
    /// The GGUF's row, then one per LiteRT recipe; the speeds one right after the other, so that
    /// the host's slow spells fall on them alike.
    fn measure(&self, at: &Setting) -> Result<Vec<TwinRow>> {
        // The type holding most of the GGUF's weights decides the recipes and names its row.
        let main_type = crate::export::litert::main_type(&crate::gguf::GgufFile::open(self.gguf)?);
        let tflites = recipes(main_type)
            .into_iter()
            .map(|q| self.litert_file(at, q))
            .collect::<Result<Vec<(PathBuf, Made)>>>()?;
        let host = at.grid.profile("host")?;
        let threads = caps_for(&host).0;
        let bopts = bench_options(at.grid, at.opts);
        let blank = |runtime: &str, file: &Path, weights: String| -> Result<TwinRow> {
            Ok(TwinRow {
                variant: self.pick.variant.clone(),
                role: self.pick.role.clone(),
                runtime: runtime.into(),
                file: file.display().to_string(),
                weights,
                size_bytes: std::fs::metadata(file).with_context(|| format!("{}: cannot read", file.display()))?.len(),
                ppl: None,
                ppl_stderr: None,
                kld: None,
                kld_stderr: None,
                same_top: None,
                pp_tps: None,
                pp_tps_sd: None,
                tg_tps: None,
                tg_tps_sd: None,
                load_s: None,
                peak_rss_mib: None,
                threads,
                n_prompt: bopts.n_prompt,
                n_gen: bopts.n_gen,
                eval_chunks: at.windows,
                export_s: None,
                export_peak_rss_mib: None,
                date: utc_now(),
            })
        };
        let gguf_type = main_type.map_or("none".into(), |t| t.name().to_ascii_lowercase());
        let mut rows = vec![blank(RUNTIME_LLAMA_CPP, self.gguf, gguf_type)?];
        for (file, made) in &tflites {
            let row = blank(RUNTIME_LITERT, file, made.quantize.clone())?;
            rows.push(TwinRow { export_s: Some(made.seconds), export_peak_rss_mib: made.peak_rss_mib, ..row });
        }
        for (i, row) in rows.iter_mut().enumerate() {
            let fresh = i > 0 && !tflites[i - 1].1.reused;
            self.quality(at, row, fresh)?;
        }
        let gguf_speed = bench_model(self.gguf, &host, &bopts)?;
        if gguf_speed.status != crate::record::Status::Fits {
            let why = gguf_speed.reason.clone().unwrap_or_default();
            bail!("{}: the benchmark on host ended `{}`: {why}", self.gguf.display(), gguf_speed.status.as_str());
        }
        let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
        let g = &mut rows[0];
        (g.pp_tps, g.pp_tps_sd) = (gguf_speed.pp.map(|m| m.mean), gguf_speed.pp.map(|m| m.sd));
        (g.tg_tps, g.tg_tps_sd) = (gguf_speed.tg.map(|m| m.mean), gguf_speed.tg.map(|m| m.sd));
        (g.load_s, g.peak_rss_mib) = (gguf_speed.load_s, Some(mib(gguf_speed.peak_rss)));
        for (row, (file, _)) in rows[1..].iter_mut().zip(&tflites) {
            let speed = crate::engine::litert::bench(file, bopts.n_prompt, bopts.n_gen, bopts.reps, threads)?;
            let (pp, tg) = (MeanSd::of(&speed.pp_tps), MeanSd::of(&speed.tg_tps));
            (row.pp_tps, row.pp_tps_sd, row.tg_tps, row.tg_tps_sd) =
                (Some(pp.mean), Some(pp.sd), Some(tg.mean), Some(tg.sd));
            (row.load_s, row.peak_rss_mib) = (Some(speed.load_s), Some(mib(speed.peak_rss_kib << 10)));
        }
        Ok(rows)
    }

    /// A file's perplexity and KL divergence on the study's windows: KL divergence only, whose
    /// pass gives the perplexity too (llama-perplexity's), on the base's windows, for every file
    /// alike. What an earlier run measured on the same file and windows is kept (unless the file
    /// is `fresh`ly exported): running `sweep --litert` again re-takes only the speeds; remove
    /// OUT/litert/ to start over.
    fn quality(&self, at: &Setting, row: &mut TwinRow, fresh: bool) -> Result<()> {
        let same = |r: &&TwinRow| {
            (&r.file, &r.runtime, r.eval_chunks, r.size_bytes) == (&row.file, &row.runtime, at.windows, row.size_bytes)
        };
        if let Some(r) = at.earlier.iter().find(same).filter(|r| r.ppl.is_some() && !fresh) {
            (row.ppl, row.ppl_stderr, row.kld, row.kld_stderr) = (r.ppl, r.ppl_stderr, r.kld, r.kld_stderr);
            row.same_top = r.same_top;
            return Ok(());
        }
        let spec = EvalSpec {
            ppl: None,
            kld_base: Some(at.base.to_path_buf()),
            chunks: Some(at.windows),
            n_ctx: WINDOW,
            data: at.opts.data.clone(),
            tokenizer: (row.runtime == RUNTIME_LITERT).then(|| self.gguf.to_path_buf()),
            load: crate::engine::LoadOptions { mmap: true, gpu_layers: 0 },
            ..EvalSpec::new(at.opts.threads)
        };
        let eval = evaluate(Path::new(&row.file), &spec, at.opts.quiet)?;
        let k = eval.kld.as_ref().context("no KL divergence measured")?;
        (row.ppl, row.ppl_stderr, row.kld, row.kld_stderr) =
            (Some(k.ppl), Some(k.ppl_stderr), Some(k.kld_mean), Some(k.kld_stderr));
        row.same_top = Some(k.same_top);
        Ok(())
    }

    /// The LiteRT file of one recipe (`OUT/litert/NAME.RECIPE.tflite`): exported now, or reused
    /// with the conversion's numbers recorded then.
    fn litert_file(&self, at: &Setting, quantize: LiteRtQuant) -> Result<(PathBuf, Made)> {
        let tflite = at.dir.join(format!("{}.{}.tflite", self.pick.variant, quantize.name()));
        // Made for the same benchmark: its prefill signature is the prompt's, its KV cache holds the generation.
        let (pp, tg) = (at.grid.bench.pp, at.grid.bench.tg);
        let fits = |r: &TwinRow| r.n_prompt == pp && pp + tg <= WINDOW.max(r.n_prompt + r.n_gen);
        let before = at.earlier.iter().find(|r| r.runtime == RUNTIME_LITERT && Path::new(&r.file) == tflite && fits(r));
        if let (true, Some(r)) = (tflite.exists(), before) {
            let made = Made {
                quantize: r.weights.clone(),
                seconds: r.export_s.unwrap_or(0.0),
                peak_rss_mib: r.export_peak_rss_mib,
                reused: true,
            };
            return Ok((tflite, made));
        }
        let prefill = vec![WINDOW, at.grid.bench.pp];
        let ctx = WINDOW.max(at.grid.bench.pp + at.grid.bench.tg);
        let e = export(
            self.gguf,
            &tflite,
            &ExportOptions { quantize: Some(quantize), prefill, ctx, quiet: at.opts.quiet },
        )?;
        let made = Made {
            quantize: e.quantize.name().to_string(),
            seconds: e.seconds,
            peak_rss_mib: (e.peak_rss_bytes > 0).then(|| e.peak_rss_bytes as f64 / (1 << 20) as f64),
            reused: false,
        };
        Ok((tflite, made))
    }
}

/// What a conversion made.
struct Made {
    quantize: String,
    seconds: f64,
    peak_rss_mib: Option<f64>,
    /// Made by an earlier run.
    reused: bool,
}

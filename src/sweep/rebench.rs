//! `sweep --rebench`: take a study's speeds again, side by side. A sweep benchmarks each variant
//! once, when its row is measured, hours apart on a shared host, so two byte-identical files can
//! differ by more than the variants do. Here every file of the study is benchmarked in one pass,
//! per profile, in rounds (A B C … A B C …), so that slow spells of the host fall on every file
//! alike; each speed becomes the mean of the rounds and its sd the rounds' spread.
//!
//! The files are rebuilt from their recipes where the sweep deleted them (and kept), checked
//! against the weights and bits per weight their row recorded; only the speed columns of results.csv change (and
//! peak memory, status, load time and time to first token with them). Every round's numbers go
//! to `speeds.json` ([`crate::record::speeds`]), which the report reads to say how the speeds
//! were taken and how much they spread.

use super::grid::{Grid, Kind};
use super::{bench_options, build_variant, header, put_bench_columns, recorded_rows, rewrite_results, SweepOptions};
use crate::bench::run::{bench_model, BenchRow, MeanSd};
use crate::gguf::reader::GgufFile;
use crate::record::rows::utc_now;
use crate::record::speeds::{PassFile, ProfilePass, RoundRun, SpeedPass, SPEEDS_FILE};
use crate::record::status::Status;
use crate::source::inspect::{inspect, Summary};
use crate::util::atomic::write_file;
use crate::util::progress::Progress;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The files a pass benchmarks: the grid's variants whose row is `ok`, in results.csv's order.
struct Subject {
    path: PathBuf,
    file: PassFile,
}

/// Re-measure the speed columns of `opts.out`'s results.csv in one interleaved pass of `rounds`
/// rounds per profile. Returns the pass (also written to `OUT/speeds.json`).
pub fn rebench(grid: &Grid, opts: &SweepOptions, rounds: usize) -> Result<SpeedPass> {
    if rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let results = opts.out.join("results.csv");
    let header = header(grid);
    let mut rows = recorded_rows(&results, &header)?;
    if rows.is_empty() {
        bail!("{}: no rows to re-measure; run the sweep first", results.display());
    }
    let subjects = subjects(grid, opts, &rows)?;
    let started = utc_now();
    let bopts = bench_options(grid, opts);
    let total = (grid.bench.profiles.len() * rounds * subjects.len()) as u64;
    let progress = Progress::new(total, "rebench", opts.quiet);
    let mut profiles = vec![];
    for name in &grid.bench.profiles {
        let profile = grid.profile(name)?;
        let mut runs: Vec<Vec<BenchRow>> = vec![];
        for round in 0..rounds {
            let mut this_round = vec![];
            for s in &subjects {
                progress.set_message(&format!("{name} round {}/{rounds}: {}", round + 1, s.file.variant));
                this_round.push(bench_model(&s.path, &profile, &bopts)?);
                progress.inc(1);
            }
            runs.push(this_round);
        }
        for (f, s) in subjects.iter().enumerate() {
            let merged = merge_rounds(runs.iter().map(|r| &r[f]).collect());
            let row = rows.iter_mut().find(|r| r.get("variant") == Some(&s.file.variant)).expect("a subject has a row");
            put_bench_columns(row, name, &merged);
        }
        profiles.push(ProfilePass {
            profile: name.clone(),
            rounds: runs.iter().map(|r| r.iter().map(round_run).collect()).collect(),
        });
    }
    progress.finish();
    let pass = SpeedPass {
        started,
        ended: utc_now(),
        host: crate::bench::device::cpu_model(),
        microscale: env!("CARGO_PKG_VERSION").into(),
        rounds,
        n_prompt: bopts.n_prompt,
        n_gen: bopts.n_gen,
        reps: bopts.reps,
        files: subjects.into_iter().map(|s| s.file).collect(),
        profiles,
    };
    // The record first: a results.csv with new speeds never lacks the pass that explains them.
    write_file(&opts.out.join(SPEEDS_FILE), serde_json::to_string_pretty(&pass)?.as_bytes())?;
    rewrite_results(&results, &header, &rows)?;
    Ok(pass)
}

/// The files to benchmark, each rebuilt if the sweep deleted it and checked against its row.
/// Rows the grid does not make (a `shrink` candidate) or that failed are left as they are.
fn subjects(grid: &Grid, opts: &SweepOptions, rows: &[BTreeMap<String, String>]) -> Result<Vec<Subject>> {
    let shipped = rows.iter().find(|r| r.get("kind").map(String::as_str) == Some(Kind::Source.as_str()));
    if let Some(name) = shipped.and_then(|r| r.get("variant")).filter(|n| grid.variant(n).is_err()) {
        bail!("the study has the file as shipped as a row ({name}): give the file again with --as-shipped FILE");
    }
    let ok: Vec<&String> = rows
        .iter()
        .filter(|r| r.get("status").map(String::as_str) == Some(super::STATUS_OK))
        .filter_map(|r| r.get("variant"))
        .filter(|name| grid.variants.iter().any(|v| &&v.name == name))
        .collect();
    let progress = Progress::new(ok.len() as u64, "files", opts.quiet);
    let mut subjects = vec![];
    for name in ok {
        progress.set_message(name);
        let path = build_variant(grid, name, opts).with_context(|| format!("rebuilding {name}"))?;
        let row = rows.iter().find(|r| r.get("variant") == Some(name)).expect("an ok row");
        check_same_weights(&path, name, &inspect(&path)?, row)?;
        let size_bytes = std::fs::metadata(&path).with_context(|| format!("{}: cannot read", path.display()))?.len();
        let file = PassFile { variant: name.clone(), weights_sha256: weights_sha256(&path)?, size_bytes };
        subjects.push(Subject { path, file });
        progress.inc(1);
    }
    progress.finish();
    Ok(subjects)
}

/// The rebuilt file holds what the row measured: as many weights, as many bits per weight. Its
/// size may differ by a few bytes of metadata (the importance matrix's path is recorded in the
/// file), not its tensors.
fn check_same_weights(path: &Path, name: &str, file: &Summary, row: &BTreeMap<String, String>) -> Result<()> {
    // As the row wrote them (`record::rows::ModelId`).
    let (n_params, bpw) = (file.n_params(), format!("{:.4}", file.bits_per_weight()));
    let recorded = (row.get("n_params").map(String::as_str), row.get("bits_per_weight").map(String::as_str));
    if recorded != (Some(n_params.to_string().as_str()), Some(bpw.as_str())) {
        bail!(
            "{}: {} weights at {bpw} bits per weight, but the row of {name} measured {} at {} (made by another \
             build or from another model?): its speeds would not be its row's; remove the file to rebuild it, or \
             re-run the variant",
            path.display(),
            n_params,
            recorded.0.unwrap_or("none"),
            recorded.1.unwrap_or("none")
        );
    }
    Ok(())
}

/// The first 12 hex digits of the SHA-256 of a GGUF's tensors (names, types, shapes and data, by
/// name: writers order them differently): equal for files whose weights are byte-identical whatever their metadata says.
fn weights_sha256(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let gguf = GgufFile::open(path)?;
    let mut tensors: Vec<_> = gguf.tensors.iter().collect();
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let mut h = Sha256::new();
    for t in tensors {
        h.update(t.name.as_bytes());
        h.update(format!("{:?}{:?}", t.ggml_type, t.ne).as_bytes());
        h.update(gguf.tensor_data(t));
        gguf.release(t);
    }
    Ok(h.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect())
}

/// One file's runs on one profile as a single benchmark: the mean and sd over rounds of each
/// round's mean t/s, the mean load time and time to first token, the highest peak memory. A run
/// that did not fit (or failed) makes the whole its status, as one run would have.
fn merge_rounds(runs: Vec<&BenchRow>) -> BenchRow {
    if let Some(failed) = runs.iter().find(|r| r.status != Status::Fits) {
        return (*failed).clone();
    }
    let mut merged = runs[0].clone();
    let each = |f: fn(&BenchRow) -> Option<f64>| -> Vec<f64> { runs.iter().filter_map(|r| f(r)).collect() };
    let of = |v: Vec<f64>| (!v.is_empty()).then(|| MeanSd::of(&v));
    merged.pp = of(each(|r| r.pp.map(|m| m.mean)));
    merged.tg = of(each(|r| r.tg.map(|m| m.mean)));
    merged.load_s = of(each(|r| r.load_s)).map(|m| m.mean);
    merged.ttft_s = of(each(|r| r.ttft_s)).map(|m| m.mean);
    merged.peak_rss = runs.iter().map(|r| r.peak_rss).max().unwrap_or(0);
    merged
}

fn round_run(r: &BenchRow) -> RoundRun {
    RoundRun { status: r.status.as_str().into(), pp_tps: r.pp.map(|m| m.mean), tg_tps: r.tg.map(|m| m.mean) }
}

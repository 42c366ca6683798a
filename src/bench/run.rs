//! `microscale bench`: each model under each device profile, measured in a capped child process.
//! However the child ends is a result named for what it was (see [`super::status`]): only a child
//! the memory cap killed, or whose allocations failed under the cap, "does not fit"; a crash, a
//! model llama.cpp cannot load or a timeout are rows of their own, and the run goes on.

use super::child::ChildReport;
use super::profiles::Profile;
use crate::engine::LoadOptions;
use crate::record::status::Status;
use crate::sandbox::caps::{available_cpus, run_capped, Caps, Enforcement};
use crate::sandbox::child::{child_exe, BenchChild, ChildSpec};
use crate::sandbox::failure::classify;
use crate::source::inspect::inspect;
use crate::util::mem::format_size_short;
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub n_prompt: usize,
    pub n_gen: usize,
    pub reps: usize,
    /// How the child loads the model. Read into RAM by default (`mmap: false`, unlike llama.cpp):
    /// with mmap a memory cap reclaims weight pages and the model thrashes instead of failing,
    /// which hides whether it really fits.
    pub load: LoadOptions,
    pub timeout: Duration,
    /// The microscale binary to run as the child (default: this executable).
    pub child_exe: Option<PathBuf>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            n_prompt: 512,
            n_gen: 128,
            reps: 3,
            load: LoadOptions { mmap: false, gpu_layers: 0 },
            timeout: Duration::from_secs(900),
            child_exe: None,
        }
    }
}

/// Mean and sample standard deviation, as llama-bench reports t/s.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct MeanSd {
    pub mean: f64,
    pub sd: f64,
}

impl MeanSd {
    pub fn of(v: &[f64]) -> MeanSd {
        use crate::util::stats::{mean, sample_sd};
        MeanSd { mean: mean(v), sd: sample_sd(v) }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchRow {
    pub model: String,
    pub arch: String,
    pub size_bytes: u64,
    pub n_params: u64,
    pub bits_per_weight: f64,
    pub profile: String,
    pub threads: usize,
    pub host_cpus: usize,
    pub memory_cap: Option<u64>,
    pub cpu_quota: Option<f64>,
    pub enforcement: Enforcement,
    /// How the run ended: `fits` when it ran within the caps.
    pub status: Status,
    /// Why it did not run (None when it fits).
    pub reason: Option<String>,
    pub load_s: Option<f64>,
    pub ttft_s: Option<f64>,
    pub pp: Option<MeanSd>,
    pub tg: Option<MeanSd>,
    pub n_prompt: usize,
    pub n_gen: usize,
    /// Layers offloaded to the GPU.
    pub gpu_layers: u32,
    /// Peak resident set of the child, bytes.
    pub peak_rss: u64,
    /// MiB of weights llama.cpp repacked into its interleaved CPU layouts at load (0: none; None: the
    /// model never loaded). Repacking depends on the CPU (see [`super::device`]).
    pub repacked_mib: Option<f64>,
    pub child_threads: Option<usize>,
    pub child_os_threads: Option<usize>,
    pub child_affinity: Option<Vec<usize>>,
    pub warnings: Vec<String>,
}

/// The caps for a profile on this host, and warnings about what cannot be honoured.
pub fn caps_for(profile: &Profile) -> (usize, Caps, Vec<String>) {
    let cpus = available_cpus();
    let threads = if profile.threads == 0 { cpus.len() } else { profile.threads };
    let mut warnings = Vec::new();
    if threads > cpus.len() {
        warnings.push(format!(
            "{} asks for {threads} threads but this host has {} CPUs: the threads share them, so t/s is a lower bound",
            profile.name,
            cpus.len()
        ));
    }
    let pinned: Vec<usize> = cpus.iter().copied().take(threads.max(1)).collect();
    (threads, Caps { cpus: pinned, memory: profile.memory, cpu_quota: profile.cpu_quota }, warnings)
}

/// Benchmark one model under one profile. Whatever happens to the model (it cannot be read, it
/// does not fit, it crashes) is a row; only a failure to run the benchmark at all is an error.
pub fn bench_model(model: &Path, profile: &Profile, opts: &BenchOptions) -> Result<BenchRow> {
    let (threads, caps, warnings) = caps_for(profile);
    let mut row = BenchRow {
        model: model.display().to_string(),
        arch: String::new(),
        size_bytes: 0,
        n_params: 0,
        bits_per_weight: 0.0,
        profile: profile.name.clone(),
        threads,
        host_cpus: available_cpus().len(),
        memory_cap: profile.memory,
        cpu_quota: profile.cpu_quota,
        enforcement: Enforcement::default(),
        status: Status::Error,
        reason: None,
        load_s: None,
        ttft_s: None,
        pp: None,
        tg: None,
        n_prompt: opts.n_prompt,
        n_gen: opts.n_gen,
        gpu_layers: opts.load.gpu_layers,
        peak_rss: 0,
        repacked_mib: None,
        child_threads: None,
        child_os_threads: None,
        child_affinity: None,
        warnings,
    };
    match inspect(model) {
        Ok(summary) => {
            row.arch = summary.architecture.clone();
            row.n_params = summary.n_params();
            row.bits_per_weight = summary.bits_per_weight();
            row.size_bytes = std::fs::metadata(model).map(|m| m.len()).unwrap_or(0);
        }
        Err(e) => {
            // The size still identifies the file (device rows are matched on it).
            row.size_bytes = std::fs::metadata(model).map(|m| m.len()).unwrap_or(0);
            row.reason = Some(format!("{e:#}").replace('\n', " "));
            return Ok(row);
        }
    }
    let spec = ChildSpec::Bench(BenchChild {
        model: model.to_path_buf(),
        threads,
        n_prompt: opts.n_prompt,
        n_gen: opts.n_gen,
        reps: opts.reps,
        load: opts.load,
    });
    let outcome = run_capped(spec.command(&child_exe(opts.child_exe.as_deref())?), &caps, opts.timeout)?;
    row.enforcement = outcome.enforcement.clone();
    if let Some(cap) = outcome.enforcement.memory_unenforced.as_ref() {
        row.memory_cap = cap.device_memory;
        row.warnings.push(cap.warning(&profile.name));
    }
    row.repacked_mib = super::device::repacked_mib(&outcome.stderr);
    row.peak_rss = outcome.max_rss;
    let report: Option<ChildReport> = outcome.stdout.lines().last().and_then(|l| serde_json::from_str(l).ok());
    match report {
        Some(r) if outcome.exit_code == Some(0) => {
            row.status = Status::Fits;
            // The child's own high-water mark: exact, and its own (the parent's sampling may miss
            // the last 50 ms).
            row.peak_rss = row.peak_rss.max(r.vm_hwm);
            row.load_s = Some(r.load_s);
            row.ttft_s = Some(r.ttft_s);
            row.pp = (!r.pp_tps.is_empty()).then(|| MeanSd::of(&r.pp_tps));
            row.tg = (!r.tg_tps.is_empty()).then(|| MeanSd::of(&r.tg_tps));
            row.child_threads = Some(r.n_threads);
            row.child_os_threads = Some(r.os_threads);
            row.child_affinity = Some(r.affinity);
        }
        _ => {
            // Only a cap that was enforced can have killed it.
            let cap = profile.memory.filter(|_| outcome.enforcement.memory_unenforced.is_none()).map(format_size_short);
            let failure = classify(&outcome, cap.as_deref(), opts.timeout);
            row.status = failure.status;
            row.reason = Some(failure.reason);
        }
    }
    Ok(row)
}

/// CSV rows for a bench result: the measurements of results.csv's profile columns, named alike
/// (`pi4-4gb:tg_tps`; the sd in `stderr`, the tokens per test in `items`), each carrying the run's
/// status.
pub fn metric_rows(r: &BenchRow) -> Vec<crate::record::rows::MetricRow> {
    use crate::record::columns::profile_column;
    use crate::record::rows::MetricRow;
    let status = r.status.as_str().to_string();
    let p = &r.profile;
    let m = |name: &str, value: f64, stderr: f64, items: usize| MetricRow {
        metric: profile_column(p, name),
        value,
        stderr,
        items,
        wall_s: 0.0,
        status: status.clone(),
    };
    let mut rows = vec![m("peak_rss_mib", r.peak_rss as f64 / (1 << 20) as f64, 0.0, 0)];
    if let Some(pp) = r.pp {
        rows.push(m("pp_tps", pp.mean, pp.sd, r.n_prompt));
    }
    if let Some(tg) = r.tg {
        rows.push(m("tg_tps", tg.mean, tg.sd, r.n_gen));
    }
    if let Some(x) = r.load_s {
        rows.push(m("load_s", x, 0.0, 0));
    }
    if let Some(x) = r.ttft_s {
        rows.push(m("ttft_s", x, 0.0, 0));
    }
    if let Some(x) = r.repacked_mib {
        rows.push(m("repacked_mib", x, 0.0, 0));
    }
    rows
}

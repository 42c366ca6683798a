use super::load_args::LoadArgs;
use super::{at_least, output, Global};
use anyhow::{bail, Context, Result};
use microscale::bench::device::{device_row, this_device};
use microscale::bench::profiles::{parse_memory, profile, profiles, Overrides};
use microscale::bench::run::{bench_model, metric_rows, BenchOptions};
use microscale::record::device_rows::{write_device_rows, DeviceRows};
use microscale::record::rows::{append_csv, sha256_prefix, ModelId};
use microscale::util::paths::{IoPaths, OutputKind};
use std::path::PathBuf;
use std::time::Duration;

/// Benchmark models under the caps of an edge device: threads, memory, CPU quota.
///
/// Each model runs in a child process (microscale itself) pinned to the profile's thread
/// count and capped in memory by a cgroup (v2 memory.max or v1 memory.limit_in_bytes; else
/// RLIMIT_AS) and optionally in CPU bandwidth; the output names the mechanism used. Tests are
/// llama-bench's: pp (prompt processing, --pp tokens in one batch) and tg (generation, --tg
/// tokens one by one), each after a warm-up, mean ± sd over --reps. Every run ends in a status:
/// fits, oom (the cap killed it: it does not fit), crash (a signal), error (e.g. a model
/// llama.cpp cannot load) or timeout; the run goes on after each.
///
/// The model is read into RAM (no mmap) so that the memory cap measures whether it fits; pass
/// --mmap for llama.cpp's default. On a host with fewer cores than the profile, the threads
/// share the cores and the output says so. A kernel without the memory cgroup controller (as
/// Raspberry Pi OS ships) cannot enforce a cap: the run says so and has the device's own memory.
/// Each row says whether llama.cpp repacked the weights at load (which types it repacks depends on
/// the CPU: AVX2, or dotprod/i8mm on ARM): that changes which file is fastest on a device.
///
/// On the device itself: copy a sweep's folder (or just its variants/) there and run
///   microscale bench DIR --profile native --device pi5 --out pi5-rows.csv
/// then fold the rows into the study on the workstation:
///   microscale report DIR --device-rows pi5-rows.csv
///
/// Examples:
///   microscale bench --list-profiles
///   microscale bench model-q4_k_m.gguf model-q8_0.gguf --profile pi4-4gb --reps 3
///   microscale bench model.gguf --profile host --mem-limit 300MiB --csv bench.csv
#[derive(clap::Args)]
#[command(verbatim_doc_comment, mut_arg("threads", |a| a.help("Override the profile's thread count")))]
pub struct Args {
    /// GGUF models, or folders of them (a sweep's output folder: its variants/).
    models: Vec<PathBuf>,
    /// Device profile(s): pi4-4gb, pi5-8gb, jetson-orin-nano-8gb, phone-6gb, host, native (repeatable).
    #[arg(long = "profile", value_name = "NAME")]
    profiles: Vec<String>,
    /// List the profiles and exit.
    #[arg(long)]
    list_profiles: bool,
    /// Override the profile's memory cap (e.g. 3GiB, 512MiB, none).
    #[arg(long)]
    mem_limit: Option<String>,
    /// CPU bandwidth in CPUs (0.5 = half a core), through the cpu cgroup.
    #[arg(long, value_name = "CPUS", value_parser = super::cpu_quota_arg)]
    cpu_quota: Option<f64>,
    /// Repetitions of each test.
    #[arg(long, default_value_t = 3, value_parser = at_least::<1>())]
    reps: usize,
    /// Prompt tokens for the pp test (0: skip).
    #[arg(long, default_value_t = 512)]
    pp: usize,
    /// Generated tokens for the tg test (0: skip).
    #[arg(long, default_value_t = 128)]
    tg: usize,
    /// Memory-map the model instead of reading it into RAM.
    #[arg(long)]
    mmap: bool,
    /// Give up on a child after this many seconds.
    #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Append one row per metric to this CSV file.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Write rows measured on this device, for `microscale report DIR --device-rows FILE`: one per
    /// model, with the device's CPU model, architecture and llama.cpp's CPU features (rewritten
    /// whole after each model, so an interrupted run keeps the rows so far).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// The device's name in those rows and in the report (default: the host name). Name it after a
    /// profile (pi4-4gb) to see the emulated profile's speeds beside the measured ones.
    #[arg(long, value_name = "NAME", value_parser = device_name_arg)]
    device: Option<String>,
    #[command(flatten)]
    load: LoadArgs,
}

impl Args {
    pub fn run(mut self, g: Global) -> Result<()> {
        if self.list_profiles {
            print!("{}", output::profile_list(profiles()?.values()));
            return Ok(());
        }
        self.load.resolve_offload();
        if self.models.is_empty() {
            bail!("no model given (usage: microscale bench MODEL.gguf|DIR... --profile NAME)");
        }
        if self.device.is_some() && self.out.is_none() {
            bail!("--device names the rows of --out FILE: give --out too");
        }
        let models = expand_model_dirs(&self.models)?;
        if self.out.is_some() {
            check_one_row_per_variant(&models, &self.profiles)?;
        }
        IoPaths::new()
            .inputs("MODELS", &models)
            .output_opt("--csv", self.csv.as_ref(), OutputKind::Append)
            .output_opt("--out", self.out.as_ref(), OutputKind::File)
            .check()?;
        microscale::sandbox::caps::remove_stale_cgroups();
        let names = if self.profiles.is_empty() { vec!["host".to_string()] } else { self.profiles };
        let overrides = Overrides {
            threads: self.load.threads,
            memory: self.mem_limit.as_deref().map(parse_memory).transpose()?,
            cpu_quota: self.cpu_quota,
        };
        let selected = names.iter().map(|n| Ok(profile(n)?.with(&overrides))).collect::<Result<Vec<_>>>()?;
        let opts = BenchOptions {
            n_prompt: self.pp,
            n_gen: self.tg,
            reps: self.reps,
            load: self.load.load_options(self.mmap),
            timeout: Duration::from_secs(self.timeout),
            child_exe: None,
        };
        let mut device_rows =
            self.out.as_ref().map(|_| DeviceRows { device: this_device(self.device.as_deref()), rows: vec![] });
        let mut rows = Vec::new();
        for m in &models {
            for p in &selected {
                if !g.quiet {
                    eprintln!("benchmarking {} under {} ...", m.display(), p.name);
                }
                let row = bench_model(m, p, &opts)?;
                if let Some(path) = &self.csv {
                    append_csv(
                        path,
                        &ModelId::of(m).unwrap_or_else(|_| ModelId::unreadable(m)),
                        &metric_rows(&row),
                        self.load.gpu_layers,
                    )?;
                }
                if let (Some(path), Some(d)) = (&self.out, device_rows.as_mut()) {
                    d.rows.push(device_row(&row, &sha256_prefix(m)?));
                    write_device_rows(path, d)?;
                }
                rows.push(row);
            }
        }
        if let (Some(path), false) = (&self.out, g.quiet) {
            eprintln!(
                "wrote {} (fold it into a study with `microscale report DIR --device-rows FILE`)",
                path.display()
            );
        }
        if self.json {
            output::print_json(&rows)
        } else {
            print!("{}", output::bench_table(&rows));
            Ok(())
        }
    }
}

fn device_name_arg(s: &str) -> Result<String, String> {
    microscale::util::names::check_plain_name(s).map(|_| s.to_string()).map_err(|e| e.to_string())
}

/// Folders replaced by the GGUF files in them, sorted: a sweep's folder by its variants/.
fn expand_model_dirs(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut models = Vec::new();
    for p in paths {
        if !p.is_dir() {
            models.push(p.clone());
            continue;
        }
        let variants = p.join("variants");
        let dir = if variants.is_dir() { variants } else { p.clone() };
        let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("{}: cannot read", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| f.is_file() && f.extension().is_some_and(|x| x == "gguf"))
            .collect();
        if found.is_empty() {
            bail!("{}: no .gguf file in this folder", dir.display());
        }
        found.sort();
        models.extend(found);
    }
    Ok(models)
}

/// Device rows hold one row per variant (a file's stem): checked before any model is benched, not
/// found by `report` after hours on the device.
fn check_one_row_per_variant(models: &[PathBuf], profiles: &[String]) -> Result<()> {
    if profiles.len() > 1 {
        bail!("--out holds one profile's rows (one row per variant): give one --profile, not {}", profiles.len());
    }
    let mut seen: std::collections::BTreeMap<String, &PathBuf> = std::collections::BTreeMap::new();
    for m in models {
        let stem = m.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        if let Some(first) = seen.insert(stem.clone(), m) {
            bail!("--out: {} and {} are both variant `{stem}` (one row per variant)", first.display(), m.display());
        }
    }
    Ok(())
}

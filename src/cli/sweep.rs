use super::load_args::LoadArgs;
use super::{at_least, output, threads_arg, Global};
use anyhow::{bail, Result};
use microscale::engine::log::{set_mode, LogMode};
use microscale::sandbox::child::SweepJob;
use microscale::sweep::grid::load_study_grid;
use microscale::sweep::slurm::{self, SlurmOptions, Submitted};
use microscale::sweep::{
    build_variant, prepare_shared, run_one_variant, run_sweep, run_variant_task, SweepOptions, STATUS_OK,
};
use microscale::util::data::DataDir;
use microscale::util::paths::{IoPaths, OutputKind};
use std::path::PathBuf;
use std::time::Duration;

/// Build, evaluate and benchmark every variant of a grid; one row per variant in results.csv.
///
/// Each variant runs in its own child process, so a variant that crashes becomes a row with
/// status crash and the sweep goes on. Resumable: variants already in OUT/results.csv are
/// skipped (failed ones too, unless --retry-failed), each row is flushed as soon as its variant
/// is measured. Variant GGUFs are deleted once measured unless --keep. Then
/// `microscale report OUT` writes the report.
///
/// On a SLURM cluster, --slurm submits the grid as a job array instead of running it here: a
/// preparation job (baseline, calibration, baseline log-probabilities, once), then one array
/// task per variant without a row (after the preparation succeeded, at most --slurm-parallel at
/// a time), then a merge job that gathers the rows into results.csv in grid order. The scripts
/// are in OUT/slurm/, SLURM's logs in OUT/logs/. Running the same command again submits only the
/// variants still without a row. --wait blocks until the array ends and fails if a variant did;
/// otherwise `microscale sweep --status OUT` shows the progress.
///
/// Examples:
///   microscale sweep --model models/smollm2-135m --grid grids/seed.toml --out bench-results/smollm2-135m
///   microscale sweep --model models/smollm2-135m --grid grids/seed.toml --out /blue/me/seed \
///       --slurm --partition gpu --gres gpu:1 --gpu-layers 99 --cpus-per-task 4 --mem 16G \
///       --time 4:00:00 --slurm-parallel 8 --slurm-setup 'module load cuda/12.4'
///   microscale sweep --status /blue/me/seed
///   microscale sweep --model models/smollm2-135m --grid grids/seed.toml --out bench-results/smollm2-135m \
///       --as-shipped models/SmolLM2-135M-Instruct.Q4_1.gguf --rebench --rounds 3
///   microscale sweep --model models/smollm2-135m --grid grids/seed.toml --out bench-results/smollm2-135m \
///       --as-shipped models/SmolLM2-135M-Instruct.Q4_1.gguf --litert
#[derive(clap::Args)]
#[command(
    verbatim_doc_comment,
    mut_arg("threads", |a| a.help("Threads (default: all cores; with --slurm: --cpus-per-task, else 4)")),
    mut_arg("gpu_layers", |a| a.help(
        "Offload N layers to the GPU when evaluating and benchmarking (llama.cpp's -ngl; needs a build with \
         --features cuda; 0: CPU only). Recorded in every row (gpu_layers)"
    ))
)]
pub struct Args {
    /// The source model (Hugging Face directory or GGUF).
    #[arg(long, required_unless_present = "status")]
    model: Option<PathBuf>,
    /// The grid (TOML): grids/seed.toml, grids/quick.toml or your own.
    #[arg(long, required_unless_present = "status")]
    grid: Option<PathBuf>,
    /// Output directory (results.csv, variants/, rows/, logs/, calib.imatrix.gguf; slurm/).
    #[arg(long, required_unless_present = "status")]
    out: Option<PathBuf>,
    /// The GGUF the model came as (the file `microscale import` read), measured as a row of its
    /// own, `as-shipped`, and every size also stated against it. Default: --model itself when it
    /// is a GGUF file, or the GGUF a directory was imported from (`microscale import` records it)
    /// when that file is still there unchanged.
    #[arg(long, value_name = "FILE")]
    as_shipped: Option<PathBuf>,
    /// No `as-shipped` row, even where the file the model came as can be found.
    #[arg(long, conflicts_with = "as_shipped")]
    no_as_shipped: bool,
    /// Keep every variant's GGUF.
    #[arg(long)]
    keep: bool,
    /// Run again the variants whose recorded row failed (status error, crash or timeout).
    #[arg(long)]
    retry_failed: bool,
    /// Measure only this variant (name or 0-based index), in this process: writes
    /// OUT/rows/NAME.json, not results.csv. What each variant's child runs.
    #[arg(long, value_name = "NAME|I")]
    variant: Option<String>,
    /// With --variant: only build the variant's GGUF (OUT/variants/NAME.gguf, kept), exactly as
    /// the sweep makes it, and print its path; nothing is measured.
    #[arg(long, requires = "variant")]
    build_only: bool,
    /// Take the study's speeds again, side by side: every file with an ok row benchmarked per
    /// profile in one interleaved pass (A B C … repeated --rounds times), the files the sweep
    /// deleted rebuilt from their recipes (and kept). Replaces the speed columns of
    /// OUT/results.csv with the rounds' means and sds and keeps every round in OUT/speeds.json,
    /// which the report reads to say how the speeds were taken and how much they spread.
    #[arg(long, conflicts_with_all = ["variant", "slurm", "retry_failed"])]
    rebench: bool,
    /// The study on Android's stack: export the baseline and each profile's sweet spot (judged
    /// as `report` judges, default budget) to LiteRT with litert-torch, and measure each LiteRT
    /// file beside its GGUF twin — size, perplexity and KL divergence on the same windows (against
    /// the baseline GGUF's saved log-probabilities), prompt and generation t/s on this host (the
    /// grid's pp, tg and reps, the host profile's threads). Files the sweep deleted are rebuilt.
    /// Writes OUT/litert/ (the .tflite files and results.csv), which the report reads. Needs every
    /// variant's row; makes the export environment (scripts/export-env.sh) the first time.
    #[arg(long, conflicts_with_all = ["variant", "slurm", "retry_failed", "rebench"])]
    litert: bool,
    /// With --rebench: rounds per profile.
    #[arg(long, value_name = "N", default_value_t = 3, requires = "rebench", value_parser = at_least::<1>())]
    rounds: usize,
    /// Kill a variant's child after this many seconds (its row says timeout).
    #[arg(long, value_name = "SECS", default_value_t = 12 * 3600, value_parser = clap::value_parser!(u64).range(1..))]
    variant_timeout: u64,
    /// The microscale binary the children run (default: this one).
    #[arg(long, hide = true)]
    child_exe: Option<PathBuf>,
    #[command(flatten)]
    load: LoadArgs,
    /// The data folder holding wikitext-2/, sst2/ and arc/ (default: $MICROSCALE_DATA, else
    /// the one shipped with microscale).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Submit the grid to SLURM as a job array (sbatch) instead of running it here.
    #[arg(long, help_heading = "SLURM")]
    slurm: bool,
    /// With --slurm: block until every array task has ended (sbatch --wait), merge the rows, and
    /// exit non-zero if a variant failed.
    #[arg(long, requires = "slurm", help_heading = "SLURM")]
    wait: bool,
    /// Show a SLURM sweep's progress (variants ok, failed, running, queued, without a row) and
    /// merge the finished rows into results.csv.
    #[arg(long, value_name = "OUT", conflicts_with_all = ["slurm", "variant"], help_heading = "SLURM")]
    status: Option<PathBuf>,
    /// At most P array tasks at once (--array=0-N%P; default: as many as SLURM allows).
    #[arg(long, value_name = "P", requires = "slurm", value_parser = at_least::<1>(), help_heading = "SLURM")]
    slurm_parallel: Option<usize>,
    /// sbatch --partition (e.g. gpu, hpg-default).
    #[arg(long, requires = "slurm", help_heading = "SLURM")]
    partition: Option<String>,
    /// sbatch --account (the allocation to charge).
    #[arg(long, requires = "slurm", help_heading = "SLURM")]
    account: Option<String>,
    /// sbatch --time: each job's wall-time limit (e.g. 4:00:00, 1-00:00:00).
    #[arg(long, requires = "slurm", help_heading = "SLURM")]
    time: Option<String>,
    /// sbatch --cpus-per-task (default: --threads, else 4); the jobs use as many threads.
    #[arg(long, value_name = "N", requires = "slurm", value_parser = threads_arg(), help_heading = "SLURM")]
    cpus_per_task: Option<usize>,
    /// sbatch --mem: memory per job (e.g. 16G).
    #[arg(long, requires = "slurm", help_heading = "SLURM")]
    mem: Option<String>,
    /// sbatch --gres: generic resources per job (e.g. gpu:1, gpu:a100:1).
    #[arg(long, requires = "slurm", help_heading = "SLURM")]
    gres: Option<String>,
    /// Any other sbatch option, as one word (--slurm-arg=--qos=gpu); repeatable.
    #[arg(long, value_name = "OPTION", allow_hyphen_values = true, requires = "slurm", help_heading = "SLURM")]
    slurm_arg: Vec<String>,
    /// A shell line every job runs before microscale (e.g. 'module load cuda/12.4'); repeatable.
    #[arg(long, value_name = "LINE", requires = "slurm", help_heading = "SLURM")]
    slurm_setup: Vec<String>,
    /// (internal) A SLURM preparation job: make what the variants share.
    #[arg(long, hide = true)]
    slurm_prepare: bool,
    /// (internal) A SLURM array task: run this variant's child and leave its row file.
    #[arg(long, hide = true, value_name = "NAME")]
    slurm_task: Option<String>,
}

impl Args {
    /// The worker's job these flags name (None: the whole sweep, or its SLURM submission).
    fn job(&self) -> Option<SweepJob> {
        match (&self.variant, &self.slurm_task, self.slurm_prepare) {
            (Some(name), None, false) => Some(SweepJob::Variant(name.clone())),
            (None, Some(name), false) => Some(SweepJob::SlurmTask(name.clone())),
            (None, None, true) => Some(SweepJob::SlurmPrepare),
            _ => None,
        }
    }

    /// A worker's command line as the parent described it (None: this is not a worker).
    #[cfg(test)]
    pub fn child_spec(&self) -> Option<microscale::sandbox::child::SweepChild> {
        let job = self.job()?;
        Some(microscale::sandbox::child::SweepChild {
            model: self.model.clone()?,
            grid: self.grid.clone()?,
            out: self.out.clone()?,
            data_dir: self.data_dir.clone()?,
            threads: self.load.threads?,
            gpu_layers: self.load.gpu_layers,
            keep: self.keep,
            child_exe: self.child_exe.clone(),
            variant_timeout: self.variant_timeout,
            as_shipped: self.as_shipped.clone(),
            job,
        })
    }

    pub fn run(mut self, g: Global) -> Result<()> {
        if let Some(out) = &self.status {
            IoPaths::new().input("--status", out).check()?;
            let st = slurm::status(out)?;
            print!("{}", output::sweep_status_text(&st));
            return Ok(());
        }
        // clap requires these unless --status.
        let (Some(model), Some(grid_path), Some(out)) = (self.model.clone(), self.grid.clone(), self.out.clone())
        else {
            bail!("--model, --grid and --out are required");
        };
        IoPaths::new().input("--grid", &grid_path).input_opt("--as-shipped", self.as_shipped.as_ref()).check()?;
        // The GPU is looked for where the variants run: here, or on the nodes SLURM runs the jobs on.
        if !self.slurm {
            self.load.resolve_offload();
        }
        let as_shipped = match self.no_as_shipped {
            true => None,
            false => self.as_shipped.clone().or_else(|| microscale::convert::import::as_shipped_default(&model)),
        };
        let grid = load_study_grid(&grid_path, as_shipped.as_deref())?;
        let data = DataDir::resolve(self.data_dir.as_deref());
        // The data folder as resolved, not only as given: every child is handed it explicitly.
        IoPaths::new()
            .input("--model", &model)
            .input("--grid", &grid_path)
            .inputs("the grid's mc: task", grid.task_files())
            .input("--data-dir", &data.root)
            .input_opt("--child-exe", self.child_exe.as_ref())
            .output("--out", &out, OutputKind::Filled(microscale::sweep::OUT_ENTRIES))
            .check()?;
        let threads = match (self.load.threads, self.cpus_per_task) {
            (Some(t), _) => t,
            (None, Some(c)) if self.slurm => c,
            (None, _) if self.slurm => 4,
            (None, _) => microscale::engine::default_threads(),
        };
        let opts = SweepOptions {
            keep: self.keep,
            threads,
            quiet: g.quiet,
            data,
            child_exe: self.child_exe.clone(),
            retry_failed: self.retry_failed,
            variant_timeout: Duration::from_secs(self.variant_timeout),
            load: self.load.load_options(true),
            as_shipped,
            ..SweepOptions::new(&model, &grid_path, &out)
        };
        microscale::sweep::check_before_work(&grid, &opts, !self.build_only && !self.rebench && !self.litert)?;
        match self.job() {
            Some(SweepJob::Variant(name)) if self.build_only => {
                println!("{}", build_variant(&grid, &name, &opts)?.display());
                Ok(())
            }
            Some(SweepJob::Variant(name)) => {
                // A variant's child: llama.cpp's log goes to stderr (OUT/logs/NAME.log), so that a
                // crash can be traced to what llama.cpp was doing.
                set_mode(LogMode::Child);
                check_row(&run_one_variant(&grid, &name, &opts)?)
            }
            Some(SweepJob::SlurmPrepare) => prepare_shared(&grid, &opts),
            // A non-zero exit marks the task FAILED in SLURM (and fails `sweep --slurm --wait`).
            Some(SweepJob::SlurmTask(name)) => check_row(&run_variant_task(&grid, &name, &opts)?),
            None if self.slurm => self.submit(&grid, &opts, threads, g),
            None if self.litert => {
                microscale::sandbox::caps::remove_stale_cgroups();
                let rows = microscale::mobile::litert_study(&grid, &opts, &Default::default())?;
                if !g.quiet {
                    eprintln!(
                        "measured {} files on llama.cpp and LiteRT: {}; next: microscale report {}",
                        rows.len(),
                        microscale::record::twins::twins_csv(&opts.out).display(),
                        opts.out.display()
                    );
                }
                Ok(())
            }
            None if self.rebench => {
                microscale::sandbox::caps::remove_stale_cgroups();
                let pass = microscale::sweep::rebench::rebench(&grid, &opts, self.rounds)?;
                if !g.quiet {
                    eprintln!(
                        "re-measured {} files × {} profiles × {} rounds: {} and {}; next: microscale report {}",
                        pass.files.len(),
                        pass.profiles.len(),
                        pass.rounds,
                        opts.out.join("results.csv").display(),
                        opts.out.join(microscale::record::speeds::SPEEDS_FILE).display(),
                        opts.out.display()
                    );
                }
                Ok(())
            }
            None => {
                microscale::sandbox::caps::remove_stale_cgroups();
                let results = run_sweep(&grid, &opts)?;
                if !g.quiet {
                    eprintln!(
                        "wrote {} ({} variants); next: microscale report {}",
                        results.display(),
                        grid.variants.len(),
                        opts.out.display()
                    );
                }
                Ok(())
            }
        }
    }

    fn submit(
        self,
        grid: &microscale::sweep::grid::Grid,
        opts: &SweepOptions,
        threads: usize,
        g: Global,
    ) -> Result<()> {
        let s = SlurmOptions {
            parallel: self.slurm_parallel,
            partition: self.partition,
            account: self.account,
            time: self.time,
            cpus_per_task: self.cpus_per_task.unwrap_or(threads),
            mem: self.mem,
            gres: self.gres,
            extra: self.slurm_arg,
            setup: self.slurm_setup,
            wait: self.wait,
            retry_failed: self.retry_failed,
        };
        match slurm::submit(grid, opts, &s)? {
            Submitted::Nothing => {
                if !g.quiet {
                    eprintln!(
                        "every variant has a row in {}: nothing to submit",
                        opts.out.join("results.csv").display()
                    );
                }
                Ok(())
            }
            Submitted::Jobs(jobs) => {
                print!("{}", output::slurm_submitted_text(&jobs, &opts.out));
                Ok(())
            }
            Submitted::Waited { jobs, failed } => {
                if !g.quiet {
                    eprint!("{}", output::slurm_submitted_text(&jobs, &opts.out));
                }
                if !failed.is_empty() {
                    bail!("{}", output::slurm_failures_line(&failed, jobs.variants.len(), &opts.out));
                }
                if !g.quiet {
                    eprintln!(
                        "wrote {}; next: microscale report {}",
                        opts.out.join("results.csv").display(),
                        opts.out.display()
                    );
                }
                Ok(())
            }
        }
    }
}

/// A variant's row as an exit status: an error carrying the row's reason unless it is `ok`.
fn check_row(row: &std::collections::BTreeMap<String, String>) -> Result<()> {
    if row.get("status").map(String::as_str) != Some(STATUS_OK) {
        bail!("{}", row.get("error").cloned().unwrap_or_default());
    }
    Ok(())
}

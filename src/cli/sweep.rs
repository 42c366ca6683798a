use super::{at_least, Global};
use anyhow::{bail, Result};
use microscale::engine::log::{set_mode, LogMode};
use microscale::sweep::grid::load_grid;
use microscale::sweep::{build_variant, run_one_variant, run_sweep, SweepOptions, STATUS_OK};
use microscale::util::data::DataDir;
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
/// Example: microscale sweep --model models/smollm2-135m --grid grids/seed.toml --out bench-results/smollm2-135m
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The source model (Hugging Face directory or GGUF).
    #[arg(long)]
    model: PathBuf,
    /// The grid (TOML): grids/seed.toml, grids/quick.toml or your own.
    #[arg(long)]
    grid: PathBuf,
    /// Output directory (results.csv, variants/, rows/, logs/, calib.imatrix.gguf).
    #[arg(long)]
    out: PathBuf,
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
    /// Kill a variant's child after this many seconds (its row says timeout).
    #[arg(long, value_name = "SECS", default_value_t = 12 * 3600, value_parser = clap::value_parser!(u64).range(1..))]
    variant_timeout: u64,
    /// The microscale binary the children run (default: this one).
    #[arg(long, hide = true)]
    child_exe: Option<PathBuf>,
    /// Threads (default: all cores).
    #[arg(short, long, value_parser = at_least::<1>())]
    threads: Option<usize>,
    /// The data folder holding wikitext-2/, sst2/ and arc/ (default: $MICROSCALE_DATA, else
    /// the one shipped with microscale).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

impl Args {
    pub fn run(self, g: Global) -> Result<()> {
        let grid = load_grid(&self.grid)?;
        let opts = SweepOptions {
            keep: self.keep,
            threads: self.threads.unwrap_or_else(microscale::engine::default_threads),
            quiet: g.quiet,
            data: DataDir::resolve(self.data_dir.as_deref()),
            child_exe: self.child_exe,
            retry_failed: self.retry_failed,
            variant_timeout: Duration::from_secs(self.variant_timeout),
            ..SweepOptions::new(&self.model, &self.grid, &self.out)
        };
        if let (true, Some(name)) = (self.build_only, &self.variant) {
            println!("{}", build_variant(&grid, name, &opts)?.display());
            return Ok(());
        }
        if let Some(name) = self.variant {
            // A variant's child: llama.cpp's log goes to stderr (OUT/logs/NAME.log), so that a
            // crash can be traced to what llama.cpp was doing.
            set_mode(LogMode::Child);
            let row = run_one_variant(&grid, &name, &opts)?;
            if row.get("status").map(String::as_str) != Some(STATUS_OK) {
                bail!("{}", row.get("error").cloned().unwrap_or_default());
            }
            return Ok(());
        }
        microscale::bench::caps::remove_stale_cgroups();
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

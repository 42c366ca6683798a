use super::load_args::LoadArgs;
use super::{output, Global};
use anyhow::{Context, Result};
use microscale::bench::child::run_child;
use microscale::sandbox::child::BenchChild;
use microscale::util::paths::IoPaths;
use std::path::PathBuf;

/// (internal) The measuring child of `bench`: its command line is written by
/// `microscale::sandbox::child::BenchChild`.
#[derive(clap::Args)]
pub struct Args {
    model: PathBuf,
    #[command(flatten)]
    load: LoadArgs,
    #[arg(long)]
    pp: usize,
    #[arg(long)]
    tg: usize,
    #[arg(long)]
    reps: usize,
    #[arg(long)]
    mmap: bool,
}

impl Args {
    /// The child as the parent described it.
    pub fn spec(&self) -> Result<BenchChild> {
        Ok(BenchChild {
            model: self.model.clone(),
            threads: self.load.threads.context("the bench child is given --threads")?,
            n_prompt: self.pp,
            n_gen: self.tg,
            reps: self.reps,
            load: self.load.load_options(self.mmap),
        })
    }

    pub fn run(self, _: Global) -> Result<()> {
        IoPaths::new().input("MODEL", &self.model).check()?;
        // One JSON line on stdout: what the parent reads.
        output::print_json_line(&run_child(&self.spec()?)?)
    }
}

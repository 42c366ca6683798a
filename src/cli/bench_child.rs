use super::{output, Global};
use anyhow::Result;
use microscale::bench::child::{run_child, ChildArgs};
use microscale::util::paths::IoPaths;
use std::path::PathBuf;

/// (internal) The measuring child of `bench`.
#[derive(clap::Args)]
pub struct Args {
    model: PathBuf,
    #[arg(long)]
    threads: usize,
    #[arg(long)]
    pp: usize,
    #[arg(long)]
    tg: usize,
    #[arg(long)]
    reps: usize,
    #[arg(long)]
    mmap: bool,
    #[arg(long, default_value_t = 0)]
    gpu_layers: u32,
}

impl Args {
    pub fn run(self, _: Global) -> Result<()> {
        IoPaths::new().input("MODEL", &self.model).check()?;
        let a = ChildArgs {
            threads: self.threads,
            n_prompt: self.pp,
            n_gen: self.tg,
            reps: self.reps,
            mmap: self.mmap,
            gpu_layers: self.gpu_layers,
        };
        // One JSON line on stdout: what the parent reads.
        output::print_json_line(&run_child(&self.model, &a)?)
    }
}

//! The flags every command that runs a model shares (eval, generate, chat, bench, sweep, and
//! bench's child): one definition, flattened into each, turned into the engine's
//! [`LoadOptions`]. Memory-mapping stays each command's own: `eval` maps the file (llama.cpp's
//! default), while `bench` and capped generation read it into RAM unless `--mmap`, so that a
//! memory cap decides whether the model fits.

use super::threads_arg;
use microscale::engine::{default_threads, LoadOptions};

#[derive(clap::Args, Clone, Debug)]
pub struct LoadArgs {
    /// Threads (default: all cores).
    #[arg(short, long, value_parser = threads_arg())]
    pub threads: Option<usize>,
    /// Offload N layers to the GPU (llama.cpp's -ngl; needs a build with --features cuda; 0: CPU only).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub gpu_layers: u32,
}

impl LoadArgs {
    /// How the engine loads the model: `mmap` is the command's own choice.
    pub fn load_options(&self, mmap: bool) -> LoadOptions {
        LoadOptions { mmap, gpu_layers: self.gpu_layers }
    }

    /// Where the model runs (not where a SLURM job is submitted from): --gpu-layers becomes the
    /// layers that will really be offloaded here, 0 when there is no GPU, said in one line, so
    /// that every row records what ran.
    pub fn resolve_offload(&mut self) {
        let (layers, why) = microscale::engine::info::layers_to_offload(self.gpu_layers);
        if let Some(why) = why {
            eprintln!("warning: {why}");
        }
        self.gpu_layers = layers;
    }

    /// `--threads`, else every core.
    pub fn threads_or_all(&self) -> usize {
        self.threads.unwrap_or_else(default_threads)
    }
}

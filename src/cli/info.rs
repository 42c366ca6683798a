use super::{output, Global};
use anyhow::Result;

/// What this microscale runs on: versions, the CPU features compiled into llama.cpp, devices.
///
/// llama.cpp is built for this machine (GGML_NATIVE) but without ggml's AMX backend, which
/// crashes on Intel Sapphire Rapids (llama.cpp issue 20824); this shows both.
#[derive(clap::Args)]
pub struct Args {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl Args {
    pub fn run(self, _: Global) -> Result<()> {
        let info = microscale::engine::info::engine_info();
        if self.json {
            output::print_json(&info)
        } else {
            print!("{}", output::engine_info(&info));
            Ok(())
        }
    }
}

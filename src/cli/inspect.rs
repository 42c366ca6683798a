use super::{output, Global};
use anyhow::Result;
use microscale::source::inspect::inspect;
use microscale::util::paths::IoPaths;
use std::path::PathBuf;

/// Show a model's architecture, hyper-parameters and tensors.
///
/// Example: microscale inspect models/smollm2-135m --json
#[derive(clap::Args)]
pub struct Args {
    /// A Hugging Face model directory or a .gguf file.
    src: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

impl Args {
    pub fn run(self, _: Global) -> Result<()> {
        IoPaths::new().input("SRC", &self.src).check()?;
        let summary = inspect(&self.src)?;
        if self.json {
            output::print_json(&output::summary_json(&summary))
        } else {
            print!("{}", output::summary_table(&summary));
            Ok(())
        }
    }
}

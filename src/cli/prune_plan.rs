use super::mix_args::{BudgetArgs, MixArgs};
use super::prune_args::PruneArgs;
use super::{output, Global};
use anyhow::Result;
use microscale::convert::{plan_only, ConvertOptions};
use microscale::gguf::imatrix::Imatrix;
use microscale::quant::mix::Scheme;
use microscale::util::paths::IoPaths;
use std::path::PathBuf;

/// Show what pruning would remove, and the resulting shapes, types and size, without writing.
///
/// With --target-size or --target-bpw, shows the type chosen for every tensor and the predicted
/// file size.
///
/// Takes the same pruning flags as `convert`, and runs calibration when the request needs it
/// (save it with --calib FILE to reuse it in the conversion).
///
/// Example: microscale prune-plan models/smollm2-135m --prune-ffn 0.5 --drop-layers 4 --outtype q4_k_m
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// A Hugging Face model directory or a .gguf file.
    src: PathBuf,
    /// Output type (for the size estimate).
    #[arg(long, value_parser = super::choice::<Scheme>(), default_value = "f16")]
    outtype: Scheme,
    #[command(flatten)]
    prune: PruneArgs,
    /// Importance matrix (for the type choices of the low-bit mixes and --target-size).
    #[arg(long)]
    imatrix: Option<PathBuf>,
    #[command(flatten)]
    mix: MixArgs,
    #[command(flatten)]
    budget: BudgetArgs,
    /// Print JSON (kept blocks, channels and heads; every tensor's shape and type).
    #[arg(long)]
    json: bool,
}

impl Args {
    pub fn run(self, g: Global) -> Result<()> {
        let io = IoPaths::new().input("SRC", &self.src).input_opt("--imatrix", self.imatrix.as_ref());
        self.prune.io(io).check()?;
        let opts = ConvertOptions {
            prune: self.prune.spec(),
            imatrix: self.imatrix.as_deref().map(Imatrix::load).transpose()?,
            tensor_types: self.mix.tensor_types.clone(),
            mix_flags: self.mix.flags(),
            budget: self.budget.budget(),
            loss_scales: self.budget.loss_scale.clone(),
            quiet: g.quiet,
            ..ConvertOptions::new(self.outtype)
        };
        let before = plan_only(&self.src, &ConvertOptions::new(self.outtype))?;
        let after = plan_only(&self.src, &opts)?;
        if self.json {
            output::print_json(&output::prune_plan_json(&before, &after, &opts.prune))
        } else {
            print!("{}", output::prune_plan_text(&before, &after, &opts.prune));
            Ok(())
        }
    }
}

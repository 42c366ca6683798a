use super::Global;
use anyhow::Result;
use microscale::report::markdown::{write_report, ReportOptions};
use microscale::report::sweet_spot::Objective;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ObjectiveArg {
    Size,
    Speed,
}

/// Write report.md and plots from a sweep's results.csv.
///
/// Perplexity, accuracy and generation speed against size, the Pareto frontier, stock
/// llama.cpp quants drawn apart, and the sweet spot per device profile: the smallest (or
/// fastest) variant that fits the profile and stays within the quality budget.
///
/// Example: microscale report bench-results/smollm2-135m --max-ppl-increase 0.05 --max-acc-drop 0.01
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The sweep's output directory.
    dir: PathBuf,
    /// Largest perplexity increase over the baseline (0.05 = +5%).
    #[arg(long, default_value_t = 0.05)]
    max_ppl_increase: f64,
    /// Largest drop of each accuracy (0.01 = 1 point).
    #[arg(long, default_value_t = 0.01)]
    max_acc_drop: f64,
    /// Sweet spot: the smallest file, or the fastest generation on the profile.
    #[arg(long, value_enum, default_value = "size")]
    objective: ObjectiveArg,
    /// A paragraph for the report's caveats (repeatable).
    #[arg(long)]
    caveat: Vec<String>,
}

impl Args {
    pub fn run(self, g: Global) -> Result<()> {
        let opts = ReportOptions {
            max_ppl_increase: self.max_ppl_increase,
            max_acc_drop: self.max_acc_drop,
            objective: match self.objective {
                ObjectiveArg::Size => Objective::Size,
                ObjectiveArg::Speed => Objective::Speed,
            },
            caveats: self.caveat,
        };
        let path = write_report(&self.dir, &opts)?;
        if !g.quiet {
            eprintln!("wrote {}", path.display());
        }
        Ok(())
    }
}

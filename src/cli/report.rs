use super::Global;
use anyhow::{bail, Result};
use microscale::report::devices::measured_key;
use microscale::report::markdown::{read_study, write_report, ReportOptions};
use microscale::report::paired::load_paired;
use microscale::report::sweet_spot::sweet_spot_paired;
use microscale::report::sweet_spot::{AccBudget, Objective};
use microscale::util::paths::IoPaths;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum AccBudgetArg {
    Mean,
    Each,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ObjectiveArg {
    Size,
    Speed,
}

/// Write report.md and plots from a sweep's results.csv.
///
/// Perplexity, accuracy and generation speed against size, the Pareto frontier, stock
/// llama.cpp quants drawn apart, and the sweet spot per device profile: the smallest (or
/// fastest) variant that fits the profile and stays within the quality budget, at 95%
/// confidence when the sweep left per-item files (OUT/items/): the worse end of each paired
/// bootstrap interval (PPL ratio, mean accuracy drop against the baseline) must be within the
/// budget.
/// Without them (older sweeps) the verdicts use the point estimates, and the report says so.
///
/// Rows measured on a device (`microscale bench DIR --profile native --device NAME --out rows.csv`,
/// run on the Pi, Jetson or phone itself): --device-rows rows.csv folds them in as the profile
/// `NAME (measured)`, labelled with the device's CPU, architecture and llama.cpp's CPU features, next
/// to the emulated profile of the same name; that device's sweet spot uses them. They are checked
/// against the study (same variants, sizes and, where variants/ is here, sha256) and kept in
/// DIR/device-rows/, so later reports include them without the flag.
///
/// Caveats: the paragraphs of DIR/caveats.md (blank lines or `- ` items separate them), then
/// each --caveat; keeping them in the directory lets anyone regenerate the report byte for byte.
///
/// Examples:
///   microscale report bench-results/smollm2-135m --max-ppl-increase 0.05 --max-acc-drop 0.01
///   microscale report study --device-rows pi5-rows.csv
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The sweep's output directory.
    dir: PathBuf,
    /// Largest perplexity increase over the baseline (0.05 = +5%).
    #[arg(long, default_value_t = 0.05)]
    max_ppl_increase: f64,
    /// Largest accuracy drop (0.01 = 1 point): of the tasks' mean, or of each with --acc-budget each.
    #[arg(long, default_value_t = 0.01)]
    max_acc_drop: f64,
    /// What --max-acc-drop bounds: the mean over the tasks of their accuracy drops (the field's
    /// average accuracy; each task's items resampled separately), or each task's drop. A 299-item
    /// task alone cannot resolve a 1-point difference at 95%, so `each` suits large eval sets.
    #[arg(long, value_enum, default_value = "mean")]
    acc_budget: AccBudgetArg,
    /// Sweet spot: the smallest file, or the fastest generation on the profile.
    #[arg(long, value_enum, default_value = "size")]
    objective: ObjectiveArg,
    /// Print the sweet spot's variant name for this profile (as the report picks it) and exit,
    /// writing nothing: for scripts (scripts/demo.sh).
    #[arg(long, value_name = "PROFILE")]
    sweet_spot: Option<String>,
    /// A paragraph for the report's caveats, after DIR/caveats.md's (repeatable).
    #[arg(long)]
    caveat: Vec<String>,
    /// Rows measured on a device by `microscale bench ... --out FILE` (repeatable, one per device).
    #[arg(long, value_name = "FILE")]
    device_rows: Vec<PathBuf>,
}

impl Args {
    pub fn run(self, g: Global) -> Result<()> {
        // The report is written into DIR, beside the results it reads, by design.
        IoPaths::new().input("DIR", &self.dir).inputs("--device-rows", &self.device_rows).check()?;
        let opts = ReportOptions {
            max_ppl_increase: self.max_ppl_increase,
            max_acc_drop: self.max_acc_drop,
            acc_budget: match self.acc_budget {
                AccBudgetArg::Mean => AccBudget::Mean,
                AccBudgetArg::Each => AccBudget::Each,
            },
            objective: match self.objective {
                ObjectiveArg::Size => Objective::Size,
                ObjectiveArg::Speed => Objective::Speed,
            },
            caveats: self.caveat,
            device_rows: self.device_rows,
        };
        if let Some(profile) = &self.sweet_spot {
            let results = read_study(&self.dir, &opts.device_rows)?;
            let paired = load_paired(&self.dir, &results)?;
            // A device measured on itself is judged on those rows.
            let measured = measured_key(profile);
            let key = if results.measured.contains_key(&measured) { &measured } else { profile };
            let spot = sweet_spot_paired(&results, &paired, key, &opts.criteria());
            return match spot.pick {
                Ok(i) => {
                    println!("{}", results.variants[i].name);
                    Ok(())
                }
                Err(why) => bail!("{}: no sweet spot on {profile}: {why}", self.dir.display()),
            };
        }
        let path = write_report(&self.dir, &opts)?;
        if !g.quiet {
            eprintln!("wrote {}", path.display());
        }
        Ok(())
    }
}

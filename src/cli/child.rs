//! The other half of `microscale::sandbox::child`: a child's command line, as the library writes
//! it, parsed by this CLI back into the [`ChildSpec`] it came from. The round-trip tests below
//! fail the moment a flag is renamed, dropped or misread on one side only. (The children run
//! from their parsed flags directly; this view of them exists for the tests.)
#![cfg(test)]

use super::{Cli, Command, Global};
use anyhow::{bail, Context, Result};
use clap::Parser;
use microscale::sandbox::child::ChildSpec;
use std::ffi::OsString;

/// The spec a child's arguments (after the executable's name) describe.
pub fn parse(args: &[OsString]) -> Result<ChildSpec> {
    let cli = Cli::try_parse_from(std::iter::once(OsString::from("microscale")).chain(args.iter().cloned()))?;
    let g = Global { quiet: cli.quiet };
    let not_a_child = || format!("{args:?} is not a child's command line");
    match cli.command {
        Command::BenchChild(a) => Ok(ChildSpec::Bench(a.spec()?)),
        Command::Sweep(a) => a.child_spec().map(ChildSpec::Sweep).with_context(not_a_child),
        Command::Generate(a) => a.child_spec().map(ChildSpec::Generate).with_context(not_a_child),
        Command::Chat(a) => a.child_spec(g).map(ChildSpec::Generate).with_context(not_a_child),
        _ => bail!(not_a_child()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use microscale::engine::LoadOptions;
    use microscale::sandbox::child::{BenchChild, GenerateChild, SweepChild, SweepJob};

    fn round_trip(spec: ChildSpec) {
        let args = spec.args();
        let back = parse(&args).unwrap_or_else(|e| panic!("{args:?} does not parse: {e:#}"));
        assert_eq!(back, spec, "{args:?}");
    }

    #[test]
    fn bench_children_round_trip() {
        for (mmap, gpu_layers) in [(false, 0), (true, 0), (false, 99)] {
            round_trip(ChildSpec::Bench(BenchChild {
                model: "/models/a b.gguf".into(),
                threads: 3,
                n_prompt: 64,
                n_gen: 0,
                reps: 2,
                load: LoadOptions { mmap, gpu_layers },
            }));
        }
    }

    #[test]
    fn sweep_workers_and_slurm_jobs_round_trip() {
        let base = SweepChild {
            model: "models/smollm2-135m".into(),
            grid: "grids/quick.toml".into(),
            out: "/tmp/out dir".into(),
            data_dir: "data".into(),
            threads: 4,
            gpu_layers: 0,
            keep: false,
            child_exe: None,
            variant_timeout: 43200,
            as_shipped: None,
            job: SweepJob::Variant("q4_k_m".into()),
        };
        for job in [SweepJob::Variant("3".into()), SweepJob::SlurmTask("sparse50-q8_0".into()), SweepJob::SlurmPrepare]
        {
            round_trip(ChildSpec::Sweep(SweepChild { job, ..base.clone() }));
        }
        round_trip(ChildSpec::Sweep(SweepChild {
            keep: true,
            gpu_layers: 12,
            child_exe: Some("/opt/microscale".into()),
            variant_timeout: 60,
            as_shipped: Some("/models/the model.Q4_1.gguf".into()),
            ..base
        }));
    }

    /// The parent's own flags for a capped `generate`/`chat`, then the child it starts, parsed.
    #[test]
    fn capped_generation_round_trips_from_the_users_command_line() {
        let users = [
            "microscale generate m.gguf -p hi --temp 0 --seed 7 -c 256 --profile pi4-4gb --gpu-layers 2",
            "microscale generate m.gguf -f prompt.txt --chat --system=brief --mmap --mem-limit 1GiB -n 9",
            "microscale -q chat m.gguf --top-k 5 --chat-template chatml --profile phone-6gb",
        ];
        for line in users {
            let argv = line.split(' ').map(OsString::from).collect::<Vec<_>>();
            let cli = Cli::try_parse_from(&argv).unwrap();
            let g = Global { quiet: cli.quiet };
            let (chat, model, load, flags) = match &cli.command {
                Command::Generate(a) => (false, a.model_path(), a.load_args(), a.child_args()),
                Command::Chat(a) => (true, a.model_path(), a.load_args(), a.child_args(g)),
                _ => unreachable!(),
            };
            round_trip(ChildSpec::Generate(GenerateChild {
                chat,
                model: model.to_path_buf(),
                threads: 4,
                load: load.load_options(line.contains("--mmap")),
                flags,
            }));
        }
    }

    #[test]
    fn other_commands_are_not_children() {
        let args: Vec<OsString> = ["eval", "m.gguf"].map(OsString::from).to_vec();
        assert!(parse(&args).is_err());
        let user_sweep: Vec<OsString> =
            ["sweep", "--model", "m", "--grid", "g", "--out", "o"].map(OsString::from).to_vec();
        assert!(parse(&user_sweep).is_err(), "a user's sweep names no job");
    }
}

//! The microscale child processes, as typed values: bench's measuring child, a sweep's variant
//! worker and its SLURM jobs, and generation under a device's caps. Their command lines are
//! written here and nowhere else; the CLI parses them back into the same values (`src/cli/child.rs`,
//! where a round-trip test over every kind fails the moment a flag is renamed on one side only).

use crate::engine::LoadOptions;
use anyhow::{Context, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What a child process runs.
#[derive(Clone, Debug, PartialEq)]
pub enum ChildSpec {
    Bench(BenchChild),
    Sweep(SweepChild),
    Generate(GenerateChild),
}

/// bench's measuring child (`microscale __bench-child MODEL …`): llama-bench's pp and tg tests.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchChild {
    pub model: PathBuf,
    pub threads: usize,
    pub n_prompt: usize,
    pub n_gen: usize,
    pub reps: usize,
    pub load: LoadOptions,
}

/// A sweep's worker: one variant measured (`--variant`), or a SLURM job.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepChild {
    pub model: PathBuf,
    pub grid: PathBuf,
    pub out: PathBuf,
    pub data_dir: PathBuf,
    pub threads: usize,
    /// Layers offloaded when evaluating and benchmarking (sweep loads models as `eval` and
    /// `bench` do; only the offload is the user's).
    pub gpu_layers: u32,
    pub keep: bool,
    /// The binary the child's own children run (tests point it at a fresh build).
    pub child_exe: Option<PathBuf>,
    /// Seconds before a variant's child is killed (a SLURM task runs that child itself).
    pub variant_timeout: u64,
    /// The file the model came as, measured as the `as-shipped` row.
    pub as_shipped: Option<PathBuf>,
    pub job: SweepJob,
}

/// Which work a sweep child does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SweepJob {
    /// Measure this variant in this process (`--variant NAME`).
    Variant(String),
    /// A SLURM array task: run the variant's child and leave its row (`--slurm-task NAME`).
    SlurmTask(String),
    /// A SLURM preparation job: what the variants share (`--slurm-prepare`).
    SlurmPrepare,
}

/// `generate` or `chat` run again inside the caps (`--capped-child`).
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateChild {
    /// `chat` rather than `generate`.
    pub chat: bool,
    pub model: PathBuf,
    /// The profile's thread count.
    pub threads: usize,
    pub load: LoadOptions,
    /// The user's other generation flags (prompt, sampling, context), passed on as given.
    pub flags: Vec<OsString>,
}

impl ChildSpec {
    /// The command line after the executable's name.
    pub fn args(&self) -> Vec<OsString> {
        match self {
            ChildSpec::Bench(b) => b.args(),
            ChildSpec::Sweep(s) => s.args(),
            ChildSpec::Generate(g) => g.args(),
        }
    }

    /// `exe ARGS…`, ready to be spawned (or capped).
    pub fn command(&self, exe: &Path) -> Command {
        let mut cmd = Command::new(exe);
        cmd.args(self.args());
        cmd
    }
}

/// The microscale binary children run: `child_exe` when given (tests point it at a fresh build),
/// else this executable.
pub fn child_exe(child_exe: Option<&Path>) -> Result<PathBuf> {
    match child_exe {
        Some(p) => Ok(p.to_path_buf()),
        None => std::env::current_exe().context("cannot find the microscale executable"),
    }
}

/// `--NAME VALUE`.
fn flag(args: &mut Vec<OsString>, name: &str, value: impl Into<OsString>) {
    args.push(name.into());
    args.push(value.into());
}

fn switch(args: &mut Vec<OsString>, name: &str, on: bool) {
    if on {
        args.push(name.into());
    }
}

impl BenchChild {
    fn args(&self) -> Vec<OsString> {
        let mut a = vec!["__bench-child".into(), self.model.clone().into()];
        flag(&mut a, "--threads", self.threads.to_string());
        flag(&mut a, "--pp", self.n_prompt.to_string());
        flag(&mut a, "--tg", self.n_gen.to_string());
        flag(&mut a, "--reps", self.reps.to_string());
        flag(&mut a, "--gpu-layers", self.load.gpu_layers.to_string());
        switch(&mut a, "--mmap", self.load.mmap);
        a
    }
}

impl SweepChild {
    fn args(&self) -> Vec<OsString> {
        let mut a = self.shared_args();
        a.extend(self.job_args());
        a
    }

    /// Every flag but the job's, grouped one flag (and its value) to a group: the SLURM scripts
    /// write one group per line.
    pub fn flag_groups(&self) -> Vec<Vec<OsString>> {
        let mut groups: Vec<Vec<OsString>> = vec![vec!["sweep".into(), "-q".into()]];
        let mut path = |name: &str, p: &Path| groups.push(vec![name.into(), p.into()]);
        path("--model", &self.model);
        path("--grid", &self.grid);
        path("--out", &self.out);
        path("--data-dir", &self.data_dir);
        if let Some(exe) = &self.child_exe {
            path("--child-exe", exe);
        }
        // Said either way: a worker left to look for the file itself could find one its parent
        // was told not to measure.
        match &self.as_shipped {
            Some(file) => path("--as-shipped", file),
            None => groups.push(vec!["--no-as-shipped".into()]),
        }
        groups.push(vec!["--threads".into(), self.threads.to_string().into()]);
        groups.push(vec!["--gpu-layers".into(), self.gpu_layers.to_string().into()]);
        groups.push(vec!["--variant-timeout".into(), self.variant_timeout.to_string().into()]);
        if self.keep {
            groups.push(vec!["--keep".into()]);
        }
        groups
    }

    fn shared_args(&self) -> Vec<OsString> {
        self.flag_groups().into_iter().flatten().collect()
    }

    /// The job's own flag.
    fn job_args(&self) -> Vec<OsString> {
        match &self.job {
            SweepJob::Variant(name) => vec!["--variant".into(), name.into()],
            SweepJob::SlurmTask(name) => vec!["--slurm-task".into(), name.into()],
            SweepJob::SlurmPrepare => vec!["--slurm-prepare".into()],
        }
    }
}

impl GenerateChild {
    fn args(&self) -> Vec<OsString> {
        let command = if self.chat { "chat" } else { "generate" };
        let mut a = vec![command.into(), self.model.clone().into()];
        a.extend(self.flags.iter().cloned());
        flag(&mut a, "--threads", self.threads.to_string());
        flag(&mut a, "--gpu-layers", self.load.gpu_layers.to_string());
        switch(&mut a, "--mmap", self.load.mmap);
        a.push("--capped-child".into());
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_child_is_its_shared_flags_then_its_job() {
        let s = SweepChild {
            model: "m".into(),
            grid: "g.toml".into(),
            out: "o".into(),
            data_dir: "d".into(),
            threads: 2,
            gpu_layers: 0,
            keep: true,
            child_exe: None,
            variant_timeout: 60,
            as_shipped: None,
            job: SweepJob::Variant("q8_0".into()),
        };
        let args: Vec<String> = s.args().iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            args.join(" "),
            "sweep -q --model m --grid g.toml --out o --data-dir d --no-as-shipped --threads 2 --gpu-layers 0 --variant-timeout 60 --keep \
             --variant q8_0"
        );
    }
}

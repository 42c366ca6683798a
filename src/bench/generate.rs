//! Generation under a device's caps: `microscale generate --profile pi4-4gb` runs the generation
//! in the same capped child as `bench` (threads pinned, memory and CPU capped by cgroups), with the
//! child's text streamed straight through to the terminal (`chat --profile`: the whole
//! conversation, the terminal handed to the child). The child ends by writing one line
//! on stderr, [`STATS_PREFIX`] and a [`GenerationReport`] as JSON; a child that does not get there
//! ended for a reason [`classify`] names — only the memory cap's kill is "does not fit".

use super::profiles::Profile;
use super::run::caps_for;
use crate::engine::generate::{Reply, Sampling, Stop};
use crate::engine::LoadOptions;
use crate::record::status::Status;
use crate::sandbox::caps::{run_capped_with, Enforcement, Passthrough};
use crate::sandbox::child::{child_exe, ChildSpec, GenerateChild};
use crate::sandbox::failure::classify;
use crate::util::mem::format_size_short;
use anyhow::Result;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The line a generating child ends with on stderr, before its JSON report.
pub const STATS_PREFIX: &str = "microscale-generate: ";

/// What one generation did and cost: the text, the token counts and speeds, and the process's
/// peak memory.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct GenerationReport {
    pub model: String,
    pub size_bytes: u64,
    pub threads: usize,
    pub ctx_size: usize,
    /// The seed the sampler drew with (a random run can be repeated with `--seed`).
    pub seed: u32,
    pub greedy: bool,
    pub chat: bool,
    /// Layers offloaded to the GPU (`--gpu-layers`).
    pub gpu_layers: u32,
    pub load_s: f64,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub prompt_tps: f64,
    pub generation_tps: f64,
    pub ttft_s: f64,
    /// Why the generation ended: `end_of_generation`, `max_tokens` or `context_full`.
    pub stop: Option<Stop>,
    /// Peak resident set of the generating process, bytes.
    pub peak_rss: u64,
    pub text: String,
}

impl GenerationReport {
    pub fn new(model: &Path, threads: usize, ctx_size: usize, sampling: &Sampling, seed: u32, load_s: f64) -> Self {
        GenerationReport {
            model: model.display().to_string(),
            size_bytes: std::fs::metadata(model).map(|m| m.len()).unwrap_or(0),
            threads,
            ctx_size,
            seed,
            greedy: sampling.is_greedy(),
            chat: false,
            gpu_layers: 0,
            load_s,
            prompt_tokens: 0,
            generated_tokens: 0,
            prompt_tps: 0.0,
            generation_tps: 0.0,
            ttft_s: 0.0,
            stop: None,
            peak_rss: 0,
            text: String::new(),
        }
    }

    /// Fill in a finished reply and the process's peak memory.
    pub fn with_reply(mut self, r: &Reply) -> Self {
        self.prompt_tokens = r.prompt_tokens;
        self.generated_tokens = r.generated_tokens;
        self.prompt_tps = r.prompt_tps();
        self.generation_tps = r.generation_tps();
        self.ttft_s = r.ttft_s;
        self.stop = r.stop;
        self.text = r.text.clone();
        self.peak_rss = crate::util::mem::peak_rss();
        self
    }
}

/// How a capped generation went.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CappedGeneration {
    pub profile: String,
    pub threads: usize,
    pub memory_cap: Option<u64>,
    pub cpu_quota: Option<f64>,
    pub enforcement: Enforcement,
    /// `fits` when the generation ran to its end within the caps.
    pub status: Status,
    /// Why it did not (None when it fits).
    pub reason: Option<String>,
    /// The child's own report (None when it did not finish).
    pub report: Option<GenerationReport>,
    pub warnings: Vec<String>,
}

/// Which command the capped child runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Talk {
    /// `generate`: its text goes straight to our standard output when `stream` (else it is only
    /// in the report).
    Generate { stream: bool },
    /// `chat`: our terminal is the child's (standard input and output), the conversation runs
    /// capped for as long as the user talks.
    Chat,
}

/// What a capped generation runs: `generate` or `chat` on `model`, loaded as `load`, with the
/// user's other `flags`.
pub struct Capped<'a> {
    pub talk: Talk,
    pub model: &'a Path,
    pub load: LoadOptions,
    pub flags: Vec<OsString>,
    pub timeout: Duration,
    /// The microscale binary to run as the child (default: this executable).
    pub child_exe: Option<PathBuf>,
}

/// Run `microscale generate|chat MODEL FLAGS…` as a child under `profile`'s caps.
pub fn generate_capped(c: Capped, profile: &Profile) -> Result<CappedGeneration> {
    let (threads, caps, warnings) = caps_for(profile);
    let (talk, timeout) = (c.talk, c.timeout);
    let io = match talk {
        Talk::Generate { stream } => Passthrough { stdin: false, stdout: stream },
        Talk::Chat => Passthrough { stdin: true, stdout: true },
    };
    let spec = ChildSpec::Generate(GenerateChild {
        chat: talk == Talk::Chat,
        model: c.model.to_path_buf(),
        threads,
        load: c.load,
        flags: c.flags,
    });
    let outcome = run_capped_with(spec.command(&child_exe(c.child_exe.as_deref())?), &caps, timeout, io)?;
    let report = outcome
        .stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(STATS_PREFIX))
        .and_then(|json| serde_json::from_str::<GenerationReport>(json).ok());
    let mut run = CappedGeneration {
        profile: profile.name.clone(),
        threads,
        memory_cap: profile.memory,
        cpu_quota: profile.cpu_quota,
        enforcement: outcome.enforcement.clone(),
        status: Status::Fits,
        reason: None,
        report: None,
        warnings,
    };
    if let Some(cap) = outcome.enforcement.memory_unenforced.as_ref() {
        run.memory_cap = cap.device_memory;
        run.warnings.push(cap.warning(&profile.name));
    }
    match report {
        Some(mut r) if outcome.exit_code == Some(0) => {
            // The parent's sampling may miss the last moments; the child's VmHWM does not.
            r.peak_rss = r.peak_rss.max(outcome.max_rss);
            run.report = Some(r);
        }
        // A chat that ended normally has no single reply to report.
        None if talk == Talk::Chat && outcome.exit_code == Some(0) => {}
        _ => {
            let cap = profile.memory.filter(|_| outcome.enforcement.memory_unenforced.is_none()).map(format_size_short);
            let failure = classify(&outcome, cap.as_deref(), timeout);
            run.status = failure.status;
            run.reason = Some(failure.reason);
        }
    }
    Ok(run)
}

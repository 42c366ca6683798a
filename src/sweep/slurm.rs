//! `sweep --slurm`: the grid as a SLURM job array, for clusters.
//!
//! SLURM does the scheduling; microscale only writes three batch scripts under `OUT/slurm/` and
//! submits them with `sbatch --parsable`:
//!
//! 1. `prepare.sbatch`: what every variant shares, once (`sweep --slurm-prepare`:
//!    [`super::prepare_shared`]: the F32 baseline, the calibration, the baseline's
//!    log-probabilities);
//! 2. `array.sbatch`: one array task per variant without a row (`--array=0-N%P`, after the
//!    preparation succeeded: `--dependency=afterok`), each running the variant's crash-isolated
//!    child as the local sweep does (`sweep --slurm-task NAME`: [`super::run_variant_task`]) and
//!    leaving its row in `OUT/rows/NAME.json`;
//! 3. `merge.sbatch` (without `--wait`): after the array, whatever its tasks' fate
//!    (`--dependency=afterany`), gathers the row files into results.csv in grid order
//!    ([`super::merge_rows`]; any later `sweep` or `sweep --status` does the same).
//!
//! With `--wait` the array is submitted with `sbatch --wait` and the rows are merged here when it
//! ends. What was submitted is recorded in `OUT/slurm/job.json`, which `--status` reads (and which
//! stops a second submission while the first still has tasks queued or running). SLURM's own
//! output goes to `OUT/logs/slurm-*.log`, each variant's child's log to `OUT/logs/NAME.log`.

use super::grid::{load_study_grid, Grid};
use super::{forget_failed_rows, merge_rows, variants_without_rows, SweepOptions, STATUS_OK};
use crate::record::rows::utc_now;
use crate::sandbox::child::{child_exe, SweepChild, SweepJob};
use crate::util::atomic::write_file;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How the jobs are submitted: SLURM's own options, passed through to every job.
#[derive(Clone, Debug, Default)]
pub struct SlurmOptions {
    /// At most this many array tasks at once (`--array=0-N%P`).
    pub parallel: Option<usize>,
    pub partition: Option<String>,
    pub account: Option<String>,
    /// Wall-time limit per job (`--time`, SLURM's syntax: `2:00:00`, `1-00:00:00`).
    pub time: Option<String>,
    /// CPUs per job; the jobs run microscale with as many threads (`--threads`).
    pub cpus_per_task: usize,
    pub mem: Option<String>,
    /// Generic resources, e.g. `gpu:1` (`--gres`).
    pub gres: Option<String>,
    /// Any other sbatch option, one `#SBATCH` line each (`--slurm-arg=--qos=gpu`).
    pub extra: Vec<String>,
    /// Shell lines run before microscale in every job (`module load cuda/12.4`).
    pub setup: Vec<String>,
    /// Block until the array ends (`sbatch --wait`), then merge the rows here.
    pub wait: bool,
    /// Submit again the variants whose row failed.
    pub retry_failed: bool,
}

/// What a submission sent to SLURM (`OUT/slurm/job.json`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct JobRecord {
    pub model: PathBuf,
    pub grid: PathBuf,
    /// Job ids: the preparation, the array, the merge (none with `--wait`).
    pub prepare: String,
    pub array: String,
    pub merge: Option<String>,
    /// The variant each array index runs.
    pub variants: Vec<String>,
    pub submitted: String,
    /// The file measured as the `as-shipped` row (none in records from before it existed).
    #[serde(default)]
    pub as_shipped: Option<PathBuf>,
}

/// How a submission ended.
#[derive(Debug)]
pub enum Submitted {
    /// Every variant already has a row: nothing was submitted (results.csv was merged).
    Nothing,
    /// Submitted; the jobs run on.
    Jobs(JobRecord),
    /// Submitted and waited for: the rows are merged, and these variants of the array failed
    /// (name and status: `error`, `crash`, `timeout`, or `no row` for a task that was cancelled,
    /// killed, or never started because the preparation failed).
    Waited { jobs: JobRecord, failed: Vec<(String, String)> },
}

/// The progress of a sweep on SLURM (`sweep --status`).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SweepStatus {
    pub out: PathBuf,
    pub variants: usize,
    pub ok: Vec<String>,
    /// Rows that record a failure: name and status.
    pub failed: Vec<(String, String)>,
    pub running: Vec<String>,
    /// Queued (waiting for the preparation, a free slot or resources).
    pub pending: Vec<String>,
    /// Neither a row nor a live task: not submitted yet, cancelled, or lost with its node.
    pub without_row: Vec<String>,
    pub jobs: Option<JobRecord>,
    /// Where the task states come from: `squeue`, or why they are unknown.
    pub scheduler: String,
}

fn slurm_dir(out: &Path) -> PathBuf {
    out.join("slurm")
}

fn record_path(out: &Path) -> PathBuf {
    slurm_dir(out).join("job.json")
}

/// The last submission's record, if any.
pub fn read_record(out: &Path) -> Result<Option<JobRecord>> {
    let path = record_path(out);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            Ok(Some(serde_json::from_str(&text).with_context(|| format!("{}: not a job record", path.display()))?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("{}: cannot read", path.display())),
    }
}

/// `s` as one word for bash: single-quoted, with its own single quotes spelled `'\''`.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("{}: cannot make the path absolute", p.display()))
}

/// The worker every job runs, up to its job: every path absolute (the jobs run elsewhere and in
/// another directory), the threads explicit (llama.cpp's results are deterministic for a given
/// thread count, so the rows equal a local sweep's with the same --threads).
fn job_child(opts: &SweepOptions) -> Result<SweepChild> {
    Ok(SweepChild {
        model: absolute(&opts.src)?,
        grid: absolute(&opts.grid_path)?,
        out: absolute(&opts.out)?,
        data_dir: absolute(&opts.data.root)?,
        child_exe: opts.child_exe.as_deref().map(absolute).transpose()?,
        as_shipped: opts.as_shipped.as_deref().map(absolute).transpose()?,
        ..opts.child(SweepJob::SlurmPrepare)
    })
}

/// `microscale sweep …` as every job runs it, up to the job's own flag: one flag per line.
fn sweep_command(exe: &Path, child: &SweepChild) -> String {
    let quoted = |words: &[std::ffi::OsString]| -> Vec<String> {
        words.iter().map(|w| sh_quote_if_needed(&w.to_string_lossy())).collect()
    };
    let mut lines = vec![sh_quote(&exe.to_string_lossy())];
    lines.extend(child.flag_groups().iter().map(|group| quoted(group).join(" ")));
    lines.join(" \\\n    ")
}

/// A flag or a number stays as it is; anything else (paths) is quoted.
fn sh_quote_if_needed(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        s.to_string()
    } else {
        sh_quote(s)
    }
}

/// A batch script: `#SBATCH` lines (the job's name, its log, then the pass-through options),
/// the set-up lines, and `body`.
fn script(s: &SlurmOptions, job_name: &str, log: &Path, array: Option<&str>, what: &str, body: &str) -> String {
    let mut out = format!("#!/bin/bash\n# microscale sweep: {what}\n");
    let mut d = |line: String| out.push_str(&format!("#SBATCH {line}\n"));
    d(format!("--job-name={job_name}"));
    if let Some(a) = array {
        d(format!("--array={a}"));
    }
    d(format!("--output={}", log.display()));
    d(format!("--cpus-per-task={}", s.cpus_per_task));
    for (name, value) in
        [("partition", &s.partition), ("account", &s.account), ("time", &s.time), ("mem", &s.mem), ("gres", &s.gres)]
    {
        if let Some(v) = value {
            d(format!("--{name}={v}"));
        }
    }
    for e in &s.extra {
        d(e.clone());
    }
    out.push_str("set -euo pipefail\n");
    for line in &s.setup {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(body);
    out.push('\n');
    out
}

/// Options SLURM would misread in a script: checked before anything is submitted.
fn check_options(s: &SlurmOptions) -> Result<()> {
    if s.cpus_per_task == 0 {
        bail!("--cpus-per-task must be at least 1");
    }
    if s.parallel == Some(0) {
        bail!("--slurm-parallel must be at least 1");
    }
    for e in &s.extra {
        if !e.starts_with('-') || e.contains('\n') {
            bail!("--slurm-arg {e:?}: not an sbatch option (one option such as --qos=gpu or --constraint=a100)");
        }
    }
    for (name, v) in
        [("partition", &s.partition), ("account", &s.account), ("time", &s.time), ("mem", &s.mem), ("gres", &s.gres)]
    {
        if v.as_deref().is_some_and(|v| v.is_empty() || v.contains(char::is_whitespace)) {
            bail!("--{name} {:?}: a SLURM value has no spaces", v.as_deref().unwrap_or(""));
        }
    }
    if s.setup.iter().any(|l| l.contains('\n')) {
        bail!("--slurm-setup: one shell line per flag");
    }
    Ok(())
}

/// The three scripts for these variants (array index i runs `names[i]`).
pub struct Scripts {
    pub prepare: String,
    pub array: String,
    pub merge: String,
}

/// The batch scripts a submission writes, for `names` (the variants without a row, grid order).
pub fn scripts(opts: &SweepOptions, s: &SlurmOptions, names: &[String]) -> Result<Scripts> {
    let exe = absolute(&child_exe(opts.child_exe.as_deref())?)?;
    let child = job_child(opts)?;
    let logs = child.out.join("logs");
    let cmd = sweep_command(&exe, &child);
    let last = names.len().saturating_sub(1);
    let array = match s.parallel {
        Some(n) => format!("0-{last}%{n}"),
        None => format!("0-{last}"),
    };
    let list: Vec<String> = names.iter().map(|n| sh_quote(n)).collect();
    let task_body = format!(
        "# Array index i runs the grid's variant variants[i], in its own child process; its row goes to\n\
         # rows/NAME.json and its child's log to logs/NAME.log.\n\
         variants=(\n  {}\n)\n\
         exec {cmd} \\\n    --slurm-task \"${{variants[$SLURM_ARRAY_TASK_ID]}}\"",
        list.join("\n  ")
    );
    Ok(Scripts {
        prepare: script(
            s,
            "microscale-prepare",
            &logs.join("slurm-prepare-%j.log"),
            None,
            "the baseline, calibration and baseline log-probabilities every variant shares, made once",
            &format!("exec {cmd} \\\n    --slurm-prepare"),
        ),
        array: script(
            s,
            "microscale-sweep",
            &logs.join("slurm-%A_%a.log"),
            Some(&array),
            "one array task per variant",
            &task_body,
        ),
        merge: script(
            // Reading row files needs one CPU and no GPU.
            &SlurmOptions { cpus_per_task: 1, gres: None, mem: None, ..s.clone() },
            "microscale-merge",
            &logs.join("slurm-merge-%j.log"),
            None,
            "gather the variants' rows into results.csv, in grid order",
            &format!(
                "exec {} sweep -q --status {}",
                sh_quote(&exe.to_string_lossy()),
                sh_quote(&child.out.to_string_lossy())
            ),
        ),
    })
}

/// `sbatch --parsable ARGS SCRIPT`: the job id.
fn sbatch(args: &[String], script: &Path) -> Result<String> {
    let out =
        Command::new("sbatch").arg("--parsable").args(args).arg(script).output().map_err(|e| no_slurm("sbatch", e))?;
    if !out.status.success() {
        bail!("sbatch {}: {}", script.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    job_id(&String::from_utf8_lossy(&out.stdout), script)
}

fn no_slurm(cmd: &str, e: std::io::Error) -> anyhow::Error {
    anyhow::anyhow!("cannot run {cmd} ({e}): --slurm needs SLURM's commands (sbatch, squeue) on this machine, as on a cluster's login node")
}

/// `--parsable` prints `ID` or `ID;CLUSTER`.
fn job_id(stdout: &str, script: &Path) -> Result<String> {
    let id = stdout.lines().next().unwrap_or("").split(';').next().unwrap_or("").trim();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        bail!("sbatch {}: no job id in its output {stdout:?}", script.display());
    }
    Ok(id.to_string())
}

/// `sbatch --parsable --wait ARGS SCRIPT`: `on_id` gets the job id as soon as it is known, then
/// this blocks until the job (every task of an array) ends. Returns whether it succeeded.
fn sbatch_wait(args: &[String], script: &Path, on_id: impl FnOnce(&str) -> Result<()>) -> Result<bool> {
    let mut child = Command::new("sbatch")
        .arg("--parsable")
        .arg("--wait")
        .args(args)
        .arg(script)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| no_slurm("sbatch", e))?;
    let mut first = String::new();
    if let Some(out) = child.stdout.take() {
        BufReader::new(out).read_line(&mut first)?;
    }
    if first.trim().is_empty() {
        let status = child.wait()?;
        bail!("sbatch --wait {}: no job id (exit {status})", script.display());
    }
    on_id(&job_id(&first, script)?)?;
    Ok(child.wait()?.success())
}

/// The states SLURM reports for the recorded jobs, by (job id, array index), from `squeue`
/// (finished jobs stay listed for the cluster's MinJobAge). Err when squeue cannot be asked.
fn task_states(jobs: &JobRecord) -> Result<BTreeMap<(String, Option<usize>), String>> {
    let mut ids = vec![jobs.prepare.clone(), jobs.array.clone()];
    ids.extend(jobs.merge.clone());
    let out = Command::new("squeue")
        .args(["-h", "-r", "-t", "all", "-o", "%F|%K|%T", "-j", &ids.join(",")])
        .output()
        .map_err(|e| no_slurm("squeue", e))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // Jobs purged from the controller's memory are not an error: none is live.
        if stderr.contains("Invalid job id") {
            return Ok(BTreeMap::new());
        }
        bail!("squeue: {}", stderr.trim());
    }
    let mut states = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.trim().split('|').collect();
        if let [job, index, state] = f[..] {
            states.insert((job.to_string(), index.parse().ok()), state.to_string());
        }
    }
    Ok(states)
}

/// A job state that may still run: not one of SLURM's final states.
fn is_live(state: &str) -> bool {
    !matches!(
        state,
        "COMPLETED"
            | "FAILED"
            | "CANCELLED"
            | "TIMEOUT"
            | "NODE_FAIL"
            | "PREEMPTED"
            | "OUT_OF_MEMORY"
            | "BOOT_FAIL"
            | "DEADLINE"
            | "SPECIAL_EXIT"
            | "REVOKED"
    )
}

/// Submit the variants without a row as a job array (see the module's documentation).
pub fn submit(grid: &Grid, opts: &SweepOptions, s: &SlurmOptions) -> Result<Submitted> {
    check_options(s)?;
    let out = &opts.out;
    std::fs::create_dir_all(slurm_dir(out)).with_context(|| format!("cannot create {}", slurm_dir(out).display()))?;
    std::fs::create_dir_all(out.join("logs")).with_context(|| format!("cannot create {}/logs", out.display()))?;
    if let Some(previous) = read_record(out)? {
        refuse_while_live(&previous, out)?;
    }
    // Only now (nothing of this sweep runs): clear half-written files, gather finished rows.
    super::Dirs::create(out, true)?;
    merge_rows(grid, out)?;
    if s.retry_failed {
        forget_failed_rows(grid, out)?;
    }
    let names: Vec<String> = variants_without_rows(grid, out)?.iter().map(|v| v.name.clone()).collect();
    if names.is_empty() {
        return Ok(Submitted::Nothing);
    }
    let sc = scripts(opts, s, &names)?;
    let dir = slurm_dir(out);
    let (prepare_sh, array_sh, merge_sh) =
        (dir.join("prepare.sbatch"), dir.join("array.sbatch"), dir.join("merge.sbatch"));
    write_file(&prepare_sh, sc.prepare.as_bytes())?;
    write_file(&array_sh, sc.array.as_bytes())?;
    write_file(&merge_sh, sc.merge.as_bytes())?;

    let prepare = sbatch(&[], &prepare_sh)?;
    let mut jobs = JobRecord {
        model: absolute(&opts.src)?,
        grid: absolute(&opts.grid_path)?,
        prepare: prepare.clone(),
        array: String::new(),
        merge: None,
        variants: names,
        submitted: utc_now(),
        as_shipped: opts.as_shipped.as_deref().map(absolute).transpose()?,
    };
    // A failed preparation cancels the array instead of leaving it pending for ever.
    let after_prepare = vec![format!("--dependency=afterok:{prepare}"), "--kill-on-invalid-dep=yes".to_string()];
    if !s.wait {
        jobs.array = sbatch(&after_prepare, &array_sh)?;
        jobs.merge = Some(sbatch(&[format!("--dependency=afterany:{}", jobs.array)], &merge_sh)?);
        write_record(out, &jobs)?;
        return Ok(Submitted::Jobs(jobs));
    }
    sbatch_wait(&after_prepare, &array_sh, |id| {
        jobs.array = id.to_string();
        write_record(out, &jobs)
    })?;
    // Whatever sbatch's exit code, the rows say what happened to each variant.
    let rows = merge_rows(grid, out)?;
    let failed = jobs
        .variants
        .iter()
        .filter_map(|n| match rows.get(n).and_then(|r| r.get("status")) {
            Some(st) if st == STATUS_OK => None,
            Some(st) => Some((n.clone(), st.clone())),
            None => Some((n.clone(), "no row".to_string())),
        })
        .collect();
    Ok(Submitted::Waited { jobs, failed })
}

fn write_record(out: &Path, jobs: &JobRecord) -> Result<()> {
    write_file(&record_path(out), serde_json::to_string_pretty(jobs)?.as_bytes())
}

/// A second submission while the first still has jobs queued or running would run variants twice.
fn refuse_while_live(previous: &JobRecord, out: &Path) -> Result<()> {
    let states = task_states(previous)?;
    let live: Vec<String> = states
        .iter()
        .filter(|(_, st)| is_live(st))
        .map(|((job, i), st)| match i {
            Some(i) => format!("{job}_{i} {st}"),
            None => format!("{job} {st}"),
        })
        .collect();
    if !live.is_empty() {
        bail!(
            "{}: the last submission still has {} job(s) queued or running ({}); wait for them \
             (microscale sweep --status {}) or cancel them (scancel {} {})",
            out.display(),
            live.len(),
            live.iter().take(4).cloned().collect::<Vec<_>>().join(", "),
            out.display(),
            previous.prepare,
            previous.array
        );
    }
    Ok(())
}

/// `sweep --status OUT`: merge the finished rows into results.csv, and count the variants by
/// their rows and, for those without one, by their array task's state in squeue.
pub fn status(out: &Path) -> Result<SweepStatus> {
    let jobs = read_record(out)?.with_context(|| {
        format!(
            "{}: no SLURM submission here ({} is missing; `microscale sweep --slurm` makes it)",
            out.display(),
            record_path(out).display()
        )
    })?;
    let grid = load_study_grid(&jobs.grid, jobs.as_shipped.as_deref())?;
    let rows = merge_rows(&grid, out)?;
    let (states, scheduler) = match task_states(&jobs) {
        Ok(s) => (s, "squeue".to_string()),
        Err(e) => (BTreeMap::new(), format!("task states unknown ({e:#}); counted from the row files")),
    };
    let mut st = SweepStatus { out: out.to_path_buf(), variants: grid.variants.len(), scheduler, ..Default::default() };
    for v in &grid.variants {
        if let Some(row) = rows.get(&v.name) {
            match row.get("status").map(String::as_str) {
                Some(STATUS_OK) => st.ok.push(v.name.clone()),
                other => st.failed.push((v.name.clone(), other.unwrap_or("").to_string())),
            }
            continue;
        }
        let task = jobs.variants.iter().position(|n| *n == v.name);
        let state = task.and_then(|i| states.get(&(jobs.array.clone(), Some(i))));
        match state.map(String::as_str) {
            Some("RUNNING" | "COMPLETING" | "CONFIGURING") => st.running.push(v.name.clone()),
            Some(s) if is_live(s) => st.pending.push(v.name.clone()),
            _ => st.without_row.push(v.name.clone()),
        }
    }
    st.jobs = Some(jobs);
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_bash() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn job_ids_from_parsable_output() {
        let p = Path::new("x.sbatch");
        assert_eq!(job_id("123\n", p).unwrap(), "123");
        assert_eq!(job_id("77;hipergator\n", p).unwrap(), "77");
        assert!(job_id("Submitted batch job 5\n", p).is_err());
    }

    #[test]
    fn bad_pass_through_options_are_refused() {
        let ok = SlurmOptions { cpus_per_task: 2, ..Default::default() };
        assert!(check_options(&ok).is_ok());
        assert!(check_options(&SlurmOptions { extra: vec!["qos=gpu".into()], ..ok.clone() }).is_err());
        assert!(check_options(&SlurmOptions { partition: Some("gpu x".into()), ..ok.clone() }).is_err());
        assert!(check_options(&SlurmOptions { parallel: Some(0), ..ok.clone() }).is_err());
        assert!(check_options(&SlurmOptions { cpus_per_task: 0, ..ok }).is_err());
    }
}

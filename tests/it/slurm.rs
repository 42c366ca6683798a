//! `sweep --slurm` on a real SLURM cluster: slurmctld and slurmd on this machine, started by
//! `scripts/slurm-local.sh` (which installs them first if needed). A machine where SLURM cannot
//! be installed or started fails these tests with the script's reason; nothing is skipped.
//!
//! One grid, one story: submitted as a job array, one running task cancelled (scancel), a variant
//! crashing (the test-only fault trigger) and one failing by design, `--status` counting them; then
//! the same command again with `--retry-failed --wait` completes the grid with each variant exactly
//! once, and every quality column equals a local sweep's of the same grid on the same threads.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A grid small enough for minutes on two cores, covering what the array must reproduce:
/// calibration (Wanda), the imatrix shared by our quants and llama.cpp's (stock), KL divergence
/// against the baseline's saved log-probabilities, a task, a benchmark; and a variant that is
/// refused by design (every head of a layer).
const GRID: &str = r#"
[eval]
ppl_chunks = 1
kld_chunks = 1
tasks = ["sst2"]
limit = 4

[bench]
profiles = ["host"]
reps = 1
pp = 8
tg = 2

[calib]
chunks = 1

[[variant]]
quant = "q8_0"

[[variant]]
quant = "q4_k_m"
method = "wanda"
ratio = 0.5

[[variant]]
quant = "q8_0"
method = "heads"
ratio = 0.9

[stock]
quants = ["q4_k_m"]
"#;

const NAMES: [&str; 5] = ["baseline-f32", "q8_0", "wanda50-q4_k_m", "heads90-q8_0", "stock-q4_k_m"];

/// The columns a SLURM row must share with the local sweep's, digit for digit.
const QUALITY: &[&str] = &[
    "variant",
    "kind",
    "recipe",
    "file_size_bytes",
    "n_params",
    "bits_per_weight",
    "ppl",
    "ppl_stderr",
    "kld",
    "kld_stderr",
    "same_top",
    "sst2_acc",
    "sst2_acc_stderr",
    "status",
    "eval_chunks",
    "eval_limit",
    "gpu_layers",
];

/// Start the local cluster once (idempotent when it already runs: scripts/test.sh starts it and
/// stops it at the end); SLURM_CONF for every command this test runs.
fn cluster() -> PathBuf {
    static CONF: OnceLock<PathBuf> = OnceLock::new();
    CONF.get_or_init(|| {
        let out =
            Command::new("scripts/slurm-local.sh").arg("start").output().expect("cannot run scripts/slurm-local.sh");
        assert!(
            out.status.success(),
            "the local SLURM cluster did not start, so sweep --slurm cannot be tested: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let conf = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().lines().last().unwrap_or("").to_string());
        assert!(conf.is_file(), "scripts/slurm-local.sh start printed no slurm.conf: {conf:?}");
        conf
    })
    .clone()
}

fn microscale(conf: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_microscale"))
        .args(args)
        .env("SLURM_CONF", conf)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `squeue` states of these jobs' tasks: "JOB_INDEX" (or "JOB") → state.
fn states(conf: &Path, jobs: &[&str]) -> BTreeMap<String, String> {
    let o = Command::new("squeue")
        .args(["-h", "-r", "-t", "all", "-o", "%i|%T", "-j", &jobs.join(",")])
        .env("SLURM_CONF", conf)
        .output()
        .unwrap();
    assert!(o.status.success(), "squeue: {}", text(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.trim().split_once('|').map(|(a, b)| (a.to_string(), b.to_string())))
        .collect()
}

fn live(state: &str) -> bool {
    matches!(state, "PENDING" | "RUNNING" | "CONFIGURING" | "COMPLETING" | "SUSPENDED" | "REQUEUED")
}

/// Poll until `done` (every 0.5 s), failing after `limit`.
fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn job_record(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("slurm/job.json")).unwrap()).unwrap()
}

/// results.csv as rows of column → value, in file order.
fn results(path: &Path) -> Vec<BTreeMap<String, String>> {
    let mut rdr = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header: Vec<String> = rdr.headers().unwrap().iter().map(str::to_string).collect();
    rdr.records().map(|r| header.iter().cloned().zip(r.unwrap().iter().map(str::to_string)).collect()).collect()
}

fn names(rows: &[BTreeMap<String, String>]) -> Vec<String> {
    rows.iter().map(|r| r["variant"].clone()).collect()
}

/// `--status`'s counts line: "OUT: 5 variants: 3 ok, 1 failed, 0 running, 0 pending, 1 without a row".
fn counts(status: &str) -> BTreeMap<String, usize> {
    let line = status.lines().next().unwrap_or("");
    let tail = line.rsplit_once("variants: ").map(|(_, t)| t).unwrap_or_else(|| panic!("no counts in {status:?}"));
    tail.split(", ")
        .map(|part| {
            let (n, what) = part.split_once(' ').unwrap();
            (what.to_string(), n.parse().unwrap())
        })
        .collect()
}

/// The two sweeps through the cluster run one after the other: each counts on the node's CPUs.
static ONE_SWEEP_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_grid_as_a_job_array_survives_a_cancel_and_a_crash_and_equals_a_local_sweep() {
    let _serial = ONE_SWEEP_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let conf = cluster();
    let hf = common::default_model::hf_dir();
    let tmp = tempfile::tempdir().unwrap();
    let grid = tmp.path().join("grid.toml");
    std::fs::write(&grid, GRID).unwrap();
    let out = tmp.path().join("slurm-out");
    let (hf_s, grid_s, out_s) = (hf.to_str().unwrap(), grid.to_str().unwrap(), out.to_str().unwrap());
    // One thread per variant and one CPU per task: two tasks side by side on a two-core node.
    // --gpu-layers 1 must reach every job, and every row must record the layers that really ran on a
    // GPU (0 on this machine, which has none). No row for the file
    // as shipped (the other test has it), and the jobs must be told so.
    let sweep = [
        "sweep",
        "-q",
        "--model",
        hf_s,
        "--grid",
        grid_s,
        "--out",
        out_s,
        "--threads",
        "1",
        "--gpu-layers",
        "1",
        "--no-as-shipped",
    ];
    let slurm = ["--slurm", "--cpus-per-task", "1", "--slurm-parallel", "2", "--time", "30:00"];

    // Submitted without --wait: job ids printed, scripts written, nothing measured yet.
    let args: Vec<&str> = sweep.iter().chain(&slurm).copied().collect();
    let o = microscale(&conf, &args, &[("MICROSCALE_FAULT", "variant:stock-q4_k_m=segv")]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("array job"), "{}", text(&o));
    let rec = job_record(&out);
    let (prepare, array, merge) =
        (rec["prepare"].as_str().unwrap(), rec["array"].as_str().unwrap(), rec["merge"].as_str().unwrap());
    assert_eq!(rec["variants"].as_array().unwrap().len(), NAMES.len(), "every variant submitted");
    let script = std::fs::read_to_string(out.join("slurm/array.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --array=0-4%2") && script.contains("#SBATCH --time=30:00"), "{script}");
    assert!(script.contains("--threads 1") && script.contains("--slurm-task"), "{script}");
    assert!(script.contains("--gpu-layers 1"), "the jobs look for the GPU on their node: {script}");
    assert!(script.contains("--no-as-shipped") && !script.contains("--as-shipped "), "{script}");

    let st = text(&microscale(&conf, &["sweep", "--status", out_s], &[]));
    let c = counts(&st);
    assert_eq!(c["ok"] + c["failed"], 0, "nothing can be done before the preparation: {st}");
    assert_eq!(c["running"] + c["pending"], NAMES.len(), "every task queued: {st}");

    // A second submission while the first runs is refused (it would run variants twice).
    let o = microscale(&conf, &args, &[]);
    assert!(!o.status.success() && text(&o).contains("still has"), "{}", text(&o));

    // Cancel q8_0's task (index 1) as soon as it runs.
    let task = format!("{array}_1");
    wait_for("q8_0's task to start", Duration::from_secs(600), || {
        let s = states(&conf, &[array]);
        assert!(s.get(&task).is_none_or(|st| live(st)), "task {task} ended before it could be cancelled: {s:?}");
        s.get(&task).is_some_and(|st| st == "RUNNING")
    });
    let o = Command::new("scancel").arg(&task).env("SLURM_CONF", &conf).output().unwrap();
    assert!(o.status.success(), "scancel: {}", text(&o));

    // Meanwhile, the same grid run here, for the comparison (same threads, same gpu_layers).
    let local = tmp.path().join("local-out");
    let mut local_sweep = sweep;
    local_sweep[7] = local.to_str().unwrap();
    let o = microscale(&conf, &local_sweep, &[]);
    assert!(o.status.success(), "local sweep: {}", text(&o));

    wait_for("the jobs to end", Duration::from_secs(900), || {
        states(&conf, &[prepare, array, merge]).values().all(|s| !live(s))
    });
    let st = text(&microscale(&conf, &["sweep", "--status", out_s], &[]));
    let c = counts(&st);
    assert_eq!((c["ok"], c["failed"], c["running"], c["pending"], c["without a row"]), (2, 2, 0, 0, 1), "{st}");
    assert!(st.contains("heads90-q8_0 (error)") && st.contains("stock-q4_k_m (crash)"), "{st}");
    assert!(st.contains("without a row: q8_0"), "the cancelled task left no row: {st}");
    // The merge job (and --status) gathered the rows that exist, in grid order.
    assert_eq!(
        names(&results(&out.join("results.csv"))),
        ["baseline-f32", "wanda50-q4_k_m", "heads90-q8_0", "stock-q4_k_m"]
    );
    let s = states(&conf, &[array]);
    assert_eq!(s.get(&task).map(String::as_str), Some("CANCELLED"), "{s:?}");
    assert_eq!(
        s.get(&format!("{array}_3")).map(String::as_str),
        Some("FAILED"),
        "a failed variant fails its task: {s:?}"
    );

    // Again, retrying the failures, and waiting: only the three variants without an ok row are
    // submitted; the one failing by design fails again, so --wait exits non-zero naming it.
    let args: Vec<&str> = args.iter().copied().chain(["--wait", "--retry-failed"]).collect();
    let o = microscale(&conf, &args, &[]);
    assert!(!o.status.success(), "{}", text(&o));
    let why = text(&o);
    assert!(why.contains("1 of 3 submitted variant(s) failed: heads90-q8_0 (error)"), "{why}");
    assert_eq!(job_record(&out)["variants"], serde_json::json!(["q8_0", "heads90-q8_0", "stock-q4_k_m"]));

    // Every variant exactly once, in grid order, and equal to the local sweep.
    let got = results(&out.join("results.csv"));
    let want = results(&local.join("results.csv"));
    assert_eq!(names(&got), NAMES);
    assert_eq!(names(&want), NAMES);
    for (g, w) in got.iter().zip(&want) {
        for c in QUALITY {
            assert_eq!(g[*c], w[*c], "{}: column {c} differs between SLURM and the local sweep", g["variant"]);
        }
        // Each job looks for the GPU on its node: a node without one runs on the CPU and says so.
        let ran = if microscale::engine::info::gpu_devices().is_empty() { "0" } else { "1" };
        assert_eq!((g["gpu_layers"].as_str(), w["gpu_layers"].as_str()), (ran, ran));
    }
    let by: BTreeMap<_, _> = got.iter().map(|r| (r["variant"].as_str(), r)).collect();
    // (The error texts name paths, absolute in the jobs: compared by their cause.)
    for rows in [&got, &want] {
        let heads = rows.iter().find(|r| r["variant"] == "heads90-q8_0").unwrap();
        assert!(heads["error"].contains("every head"), "{heads:?}");
        assert!(rows.iter().all(|r| r["error"].is_empty() == (r["variant"] != "heads90-q8_0")), "{rows:?}");
    }
    assert!(by["q8_0"]["kld"].parse::<f64>().unwrap() > 0.0 && by["stock-q4_k_m"]["status"] == "ok");

    // Logs per task: SLURM's, and each variant child's.
    let logs: Vec<String> =
        std::fs::read_dir(out.join("logs")).unwrap().flatten().map(|e| e.file_name().into_string().unwrap()).collect();
    assert!(logs.iter().any(|l| l.starts_with("slurm-prepare-")), "{logs:?}");
    assert!(logs.contains(&format!("slurm-{array}_0.log")), "{logs:?}");
    for n in NAMES {
        assert!(logs.contains(&format!("{n}.log")), "no log for {n}: {logs:?}");
    }

    // A third run has nothing to submit and changes nothing.
    let before = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let o = microscale(&conf, &args[..args.len() - 1], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(out.join("results.csv")).unwrap(), before);
    let c = counts(&text(&microscale(&conf, &["sweep", "--status", out_s], &[])));
    assert_eq!((c["ok"], c["failed"], c["without a row"]), (4, 1, 0));
    eprintln!("slurm test: {} variants, {:.0} s", NAMES.len(), started.elapsed().as_secs_f64());
}

#[test]
fn the_quick_grid_through_slurm_wait_equals_a_local_run() {
    let _serial = ONE_SWEEP_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let conf = cluster();
    let hf = common::default_model::hf_dir();
    let grid = Path::new(env!("CARGO_MANIFEST_DIR")).join("grids/quick.toml");
    let tmp = tempfile::tempdir().unwrap();
    let (slurm_out, local_out) = (tmp.path().join("slurm"), tmp.path().join("local"));
    let sweep = |out: &Path, extra: &[&str]| {
        let mut args =
            vec!["sweep", "-q", "--model", hf.to_str().unwrap(), "--grid", grid.to_str().unwrap(), "--threads", "1"];
        args.extend(["--out", out.to_str().unwrap()]);
        args.extend(extra);
        microscale(&conf, &args, &[])
    };
    let o = sweep(&slurm_out, &["--slurm", "--wait", "--cpus-per-task", "1", "--slurm-parallel", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = sweep(&local_out, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let (got, want) = (results(&slurm_out.join("results.csv")), results(&local_out.join("results.csv")));
    let grid_names: Vec<String> = names(&want);
    assert!(grid_names.len() >= 6, "{grid_names:?}");
    // The directory was imported: the file it came from is measured unasked, right after the
    // baseline, by the jobs as by the local run (and counted by --status below).
    assert_eq!(grid_names[1], "as-shipped", "{grid_names:?}");
    assert_eq!(names(&got), grid_names, "every variant exactly once, in grid order");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g["status"], "ok", "{g:?}");
        for c in QUALITY {
            assert_eq!(g[*c], w[*c], "{}: column {c} differs between SLURM and the local run", g["variant"]);
        }
        for c in ["arc_easy_acc", "arc_easy_acc_norm"] {
            assert_eq!(g[c], w[c], "{}: column {c}", g["variant"]);
        }
    }
    let c = counts(&text(&microscale(&conf, &["sweep", "--status", slurm_out.to_str().unwrap()], &[])));
    assert_eq!((c["ok"], c["failed"], c["without a row"]), (grid_names.len(), 0, 0));
}

#[test]
fn status_and_bad_slurm_options_are_one_line_errors() {
    let conf = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("nothing");
    std::fs::create_dir_all(&out).unwrap();
    let o = microscale(&conf, &["sweep", "--status", out.to_str().unwrap()], &[]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("no SLURM submission here") && e.trim().lines().count() == 1, "{e}");

    let grid = tmp.path().join("grid.toml");
    std::fs::write(&grid, GRID).unwrap();
    let hf = common::default_model::hf_dir();
    let base =
        ["sweep", "--model", hf.to_str().unwrap(), "--grid", grid.to_str().unwrap(), "--out", out.to_str().unwrap()];
    for (extra, expect) in [
        (&["--slurm", "--slurm-arg", "qos=gpu"][..], "not an sbatch option"),
        (&["--slurm", "--partition", "a b"][..], "has no spaces"),
        (&["--partition", "gpu"][..], "--slurm"),
    ] {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let o = microscale(&conf, &args, &[]);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && e.contains(expect) && e.trim().lines().count() == 1, "{extra:?}: {e}");
        assert!(!e.contains("panicked"), "{e}");
    }
    // sbatch refusing a job (no such partition) is an error naming sbatch's reason.
    let args: Vec<&str> = base.iter().chain(&["--slurm", "--partition", "no-such-partition"]).copied().collect();
    let o = microscale(&conf, &args, &[]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("sbatch") && e.contains("partition"), "{e}");
}

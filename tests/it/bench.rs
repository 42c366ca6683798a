//! Edge benchmarking: caps are enforced on a real child process running the real engine.

use crate::common;

use microscale::bench::profiles::{profile, Profile};
use microscale::bench::run::{bench_model, BenchOptions};
use microscale::convert::{convert, ConvertOptions};
use microscale::quant::mix::Scheme;
use microscale::record::status::Status;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The default model as Q8_0 (our quantizer), made once.
fn model() -> &'static (tempfile::TempDir, PathBuf) {
    static CELL: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    CELL.get_or_init(|| {
        let hf = common::default_model::hf_dir();
        let tmp = tempfile::tempdir().unwrap();
        let q8 = tmp.path().join("q8_0.gguf");
        convert(&hf, &q8, &ConvertOptions::new(Scheme::Q8_0)).unwrap();
        (tmp, q8)
    })
}

fn quick() -> BenchOptions {
    BenchOptions {
        n_prompt: 32,
        n_gen: 4,
        reps: 1,
        child_exe: Some(env!("CARGO_BIN_EXE_microscale").into()),
        ..Default::default()
    }
}

fn host_with(memory: Option<u64>, threads: usize) -> Profile {
    Profile { threads, memory, ..profile("host").unwrap() }
}

#[test]
fn a_memory_cap_below_the_model_is_an_oom_row_and_leaves_no_cgroup() {
    let (_, q8) = model();
    let size = std::fs::metadata(q8).unwrap().len();
    let row = bench_model(q8, &host_with(Some(size / 3), 1), &quick()).unwrap();
    assert_eq!(row.status, Status::Oom, "{row:?}");
    let reason = row.reason.clone().unwrap();
    assert!(reason.starts_with("does not fit in"), "{reason}");
    // The kernel's own count says the cap killed it (a cgroup here), or the child's allocation
    // failed under RLIMIT_AS and it said so.
    assert!(
        reason.contains("killed by the memory cap") || reason.contains("RLIMIT") || reason.contains("alloc"),
        "{reason}"
    );
    assert!(row.pp.is_none() && row.tg.is_none());
    assert!(!row.enforcement.memory.is_empty() && row.enforcement.memory != "none");
    // The killed child's cgroup is gone (other tests may be running their own right now).
    assert!(!row.enforcement.cgroups.is_empty() || row.enforcement.memory.starts_with("RLIMIT_AS"));
    for dir in &row.enforcement.cgroups {
        assert!(!dir.exists(), "left behind: {}", dir.display());
    }
}

#[test]
fn a_memory_cap_above_the_model_fits_and_holds_the_peak() {
    let (_, q8) = model();
    let cap = 768u64 << 20;
    let row = bench_model(q8, &host_with(Some(cap), 1), &quick()).unwrap();
    assert_eq!(row.status, Status::Fits, "{row:?}");
    assert!(row.reason.is_none());
    assert!(row.peak_rss > std::fs::metadata(q8).unwrap().len() / 2, "peak {} looks unmeasured", row.peak_rss);
    assert!(row.peak_rss <= cap, "peak {} above the cap {cap}", row.peak_rss);
    assert!(row.pp.unwrap().mean > 0.0 && row.tg.unwrap().mean > 0.0);
    assert!(row.load_s.unwrap() > 0.0 && row.ttft_s.unwrap() > 0.0);
    assert!(row.enforcement.cgroups.iter().all(|d| !d.exists()));
    // No CPU's backend repacks Q8_0 but ARM's (dotprod, i8mm): llama.cpp's load log says so.
    assert_eq!(row.repacked_mib, Some(0.0), "{row:?}");
    let metrics = microscale::bench::run::metric_rows(&row);
    assert!(metrics.iter().any(|m| m.metric == "host:repacked_mib" && m.value == 0.0), "{metrics:?}");
}

/// llama.cpp repacks Q4_0 into its interleaved 8x8 layout at load on AVX2 CPUs (and on ARM with
/// dotprod or i8mm): the row reads it from the child's load log.
#[test]
fn a_repacked_model_says_so() {
    let (dir, _) = model();
    let q4 = dir.path().join("q4_0.gguf");
    if !q4.exists() {
        convert(&common::default_model::hf_dir(), &q4, &ConvertOptions::new(Scheme::Q4_0)).unwrap();
    }
    let row = bench_model(&q4, &host_with(None, 1), &quick()).unwrap();
    assert_eq!(row.status, Status::Fits, "{row:?}");
    let repacks = cfg!(target_arch = "x86_64") && std::arch::is_x86_feature_detected!("avx2");
    if cfg!(target_arch = "x86_64") {
        // Most of the model's Q4_0 weights (llama.cpp keeps the token embeddings in its plain CPU buffer).
        assert_eq!(row.repacked_mib.unwrap() > 40.0, repacks, "{row:?}");
    } else {
        assert!(row.repacked_mib.is_some(), "{row:?}");
    }
}

#[test]
fn the_thread_count_reaches_the_child() {
    let (_, q8) = model();
    let one = bench_model(q8, &host_with(None, 1), &quick()).unwrap();
    assert_eq!(one.child_threads, Some(1));
    assert_eq!(one.child_affinity.as_ref().map(Vec::len), Some(1));
    let cpus = microscale::sandbox::caps::available_cpus().len();
    if cpus >= 2 {
        let two = bench_model(q8, &host_with(None, 2), &quick()).unwrap();
        assert_eq!(two.child_threads, Some(2));
        assert_eq!(two.child_affinity.as_ref().map(Vec::len), Some(2));
        // llama.cpp's worker pool shows up as extra OS threads in the child.
        assert!(two.child_os_threads.unwrap() > one.child_os_threads.unwrap(), "{one:?} {two:?}");
    }
    // A profile wanting more threads than the host has says so.
    let many = bench_model(q8, &host_with(None, cpus + 2), &quick()).unwrap();
    assert!(many.warnings.iter().any(|w| w.contains("CPUs")), "{:?}", many.warnings);
}

#[test]
fn an_unknown_profile_is_a_clear_error() {
    let out =
        Command::new(env!("CARGO_BIN_EXE_microscale")).args(["bench", "x.gguf", "--profile", "pi3"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown profile \"pi3\"") && err.contains("pi4-4gb") && err.contains("jetson-orin-nano-8gb"),
        "{err}"
    );
    let list = Command::new(env!("CARGO_BIN_EXE_microscale")).args(["bench", "--list-profiles"]).output().unwrap();
    let text = String::from_utf8_lossy(&list.stdout);
    for name in ["pi4-4gb", "pi5-8gb", "jetson-orin-nano-8gb", "phone-6gb", "host"] {
        assert!(text.contains(name), "{text}");
    }
}

/// A copy of `src` with the u32 value of metadata key `key` replaced (the key's string is found in
/// the header and its value follows its type tag).
fn with_u32_key(src: &std::path::Path, key: &str, value: u32, dst: &std::path::Path) {
    let mut bytes = std::fs::read(src).unwrap();
    let mut needle = (key.len() as u64).to_le_bytes().to_vec();
    needle.extend(key.as_bytes());
    let at = bytes.windows(needle.len()).position(|w| w == needle).unwrap() + needle.len();
    assert_eq!(u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()), 4, "{key} is a UINT32");
    bytes[at + 4..at + 8].copy_from_slice(&value.to_le_bytes());
    std::fs::write(dst, bytes).unwrap();
}

#[test]
fn a_model_llama_cpp_cannot_load_is_an_error_row_not_does_not_fit() {
    let (dir, q8) = model();
    // One block more than the file holds: microscale's reader accepts the header, llama.cpp's
    // loader refuses the model (a missing tensor), long before memory matters.
    let lying = dir.path().join("one-block-too-many.gguf");
    with_u32_key(q8, "llama.block_count", 31, &lying);
    for cap in [None, Some(4u64 << 30)] {
        let row = bench_model(&lying, &host_with(cap, 1), &quick()).unwrap();
        assert_eq!(row.status, Status::Error, "{row:?}");
        let reason = row.reason.clone().unwrap();
        assert!(!reason.contains("does not fit"), "{reason}");
        assert!(
            reason.contains("could not load the model") && reason.contains("blk.30"),
            "llama.cpp's own reason: {reason}"
        );
        assert!(row.peak_rss < 100 << 20, "it never got to the weights: {}", row.peak_rss);
    }
}

/// `microscale bench … --json` with an environment, as a user runs it.
fn bench_cli(models: &[&std::path::Path], env: &[(&str, &str)]) -> Vec<serde_json::Value> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_microscale"));
    cmd.args(["bench", "-q", "--profile", "host", "--threads", "1", "--pp", "8", "--tg", "2", "--reps", "1", "--json"]);
    cmd.args(models);
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
}

#[test]
fn a_crashing_child_is_a_crash_row_with_llama_cpps_last_words_and_the_run_goes_on() {
    let (dir, q8) = model();
    // The child segfaults right after loading the model (the test-only fault trigger).
    let rows = bench_cli(&[q8.as_path(), q8.as_path()], &[("MICROSCALE_FAULT", "bench-child=segv")]);
    assert_eq!(rows.len(), 2, "both models measured: the run went on");
    for r in &rows {
        assert_eq!(r["status"], "crash", "{r}");
        let reason = r["reason"].as_str().unwrap();
        assert!(reason.contains("SIGSEGV") && !reason.contains("does not fit"), "{reason}");
        assert!(reason.contains("llama.cpp's last log line"), "{reason}");
    }
    // A failed GGML_ASSERT aborts: also a crash.
    let rows = bench_cli(&[q8.as_path()], &[("MICROSCALE_FAULT", "bench-child=abort")]);
    assert_eq!(rows[0]["status"], "crash");
    assert!(rows[0]["reason"].as_str().unwrap().contains("SIGABRT"), "{}", rows[0]);
    // A bad model and a good one in one run: an error row, then a measured one.
    let lying = dir.path().join("lying-cli.gguf");
    with_u32_key(q8, "llama.block_count", 31, &lying);
    let rows = bench_cli(&[lying.as_path(), q8.as_path()], &[]);
    assert_eq!((rows[0]["status"].as_str(), rows[1]["status"].as_str()), (Some("error"), Some("fits")), "{rows:?}");
    assert!(rows[1]["tg"]["mean"].as_f64().unwrap() > 0.0);
}

#[test]
fn csv_rows_carry_the_status() {
    let (dir, q8) = model();
    let csv = dir.path().join("bench.csv");
    let out = Command::new(env!("CARGO_BIN_EXE_microscale"))
        .args([
            "bench",
            "-q",
            "--profile",
            "host",
            "--threads",
            "1",
            "--pp",
            "8",
            "--tg",
            "2",
            "--reps",
            "1",
            "--mem-limit",
            "20MiB",
            "--csv",
        ])
        .arg(&csv)
        .arg(q8)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let header = rdr.headers().unwrap().clone();
    let status = header.iter().position(|h| h == "status").unwrap();
    let metric = header.iter().position(|h| h == "metric").unwrap();
    let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
    assert!(rows.iter().any(|r| &r[metric] == "host:peak_rss_mib"), "{text}");
    assert!(!rows.iter().any(|r| r[metric].ends_with("_tps")), "an oom run has no speeds: {text}");
    assert!(rows.iter().all(|r| &r[status] == "oom"), "{text}");
}

/// Raspberry Pi OS's kernels disable the memory cgroup controller unless the command line enables it
/// (other images boot with `cgroup_disable=memory`): no cap can be enforced. `bench` and `generate`
/// under a profile then say so and why, and run with the device's own memory as the cap: not an error,
/// not an RLIMIT_AS that pretends. This machine is made to look like such a Pi inside a private mount
/// namespace (`unshare --mount`): its cgroup filesystem without the memory controller, /proc/cgroups
/// with it disabled, and a Pi's /proc/cmdline, first as Raspberry Pi OS boots, then with
/// `cgroup_disable=memory`.
#[test]
fn without_a_memory_cgroup_controller_the_cap_is_not_enforced_and_said_so() {
    let (_, model) = model();
    let tmp = tempfile::tempdir().unwrap();
    let cg = tmp.path().join("cgroup");
    std::fs::create_dir(&cg).unwrap();
    std::fs::write(cg.join("cgroup.controllers"), "cpuset cpu io pids\n").unwrap();
    std::fs::write(cg.join("cgroup.subtree_control"), "cpuset cpu io pids\n").unwrap();
    std::fs::write(cg.join("cgroup.procs"), "").unwrap();
    let proc_cgroups = tmp.path().join("cgroups");
    std::fs::write(
        &proc_cgroups,
        "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t0\t60\t1\ncpu\t0\t60\t1\nmemory\t0\t60\t0\npids\t0\t60\t1\n",
    )
    .unwrap();
    let cmdline = tmp.path().join("cmdline");
    let pi_cmdline = "coherent_pool=1M 8250.nr_uarts=0 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 rootwait";
    std::fs::write(&cmdline, format!("{pi_cmdline}\n")).unwrap();
    let pi = |args: &str| {
        let script = format!(
            "mount --bind {cg} /sys/fs/cgroup && mount --bind {pc} /proc/cgroups && mount --bind {cl} /proc/cmdline && exec {exe} {args}",
            cg = cg.display(),
            pc = proc_cgroups.display(),
            cl = cmdline.display(),
            exe = env!("CARGO_BIN_EXE_microscale"),
        );
        let o = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .output()
            .unwrap();
        assert!(o.status.success(), "{args}: {}", String::from_utf8_lossy(&o.stderr));
        (String::from_utf8(o.stdout).unwrap(), String::from_utf8(o.stderr).unwrap())
    };
    let total = microscale::util::mem::total_memory().unwrap();

    let (out, _) = pi(&format!("bench {} --profile pi4-4gb --pp 8 --tg 2 --reps 1 --json -q", model.display()));
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let row = &rows[0];
    assert_eq!(row["status"], "fits", "{row}");
    assert_eq!(row["memory_cap"].as_u64(), Some(total), "the device's own memory is the cap: {row}");
    let enforced = row["enforcement"]["memory"].as_str().unwrap();
    assert!(
        enforced.starts_with("not enforced: the kernel's memory cgroup controller is disabled (/proc/cgroups"),
        "{enforced}"
    );
    assert!(row["enforcement"]["cgroups"].as_array().unwrap().is_empty(), "{row}");
    let warning = row["warnings"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect::<Vec<_>>().join(" ");
    assert!(
        warning.contains("pi4-4gb's memory cap of 3.0 GiB cannot be enforced")
            && warning.contains("cgroup_memory=1 cgroup_enable=memory"),
        "{warning}"
    );

    std::fs::write(&cmdline, format!("cgroup_disable=memory {pi_cmdline}\n")).unwrap();
    let (_, err) = pi(&format!("generate {} --profile pi4-4gb -p Hello -n 2 --temp 0", model.display()));
    assert!(err.contains("cannot be enforced: the kernel boots with cgroup_disable=memory (/proc/cmdline)"), "{err}");
}

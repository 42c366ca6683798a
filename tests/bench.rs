//! Edge benchmarking: caps are enforced on a real child process running the real engine.

use microscale::bench::profiles::{profile, Profile};
use microscale::bench::run::{bench_model, BenchOptions};
use microscale::convert::{convert, ConvertOptions};
use microscale::quant::mix::Scheme;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The default model as Q8_0 (our quantizer), made once.
fn model() -> &'static (tempfile::TempDir, PathBuf) {
    static CELL: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    CELL.get_or_init(|| {
        let hf = microscale::default_model::require(microscale::default_model::HF_DIR).unwrap();
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
fn a_memory_cap_below_the_model_is_a_does_not_fit_row_and_leaves_no_cgroup() {
    let (_, q8) = model();
    let size = std::fs::metadata(q8).unwrap().len();
    let row = bench_model(q8, &host_with(Some(size / 3), 1), &quick()).unwrap();
    assert!(!row.fits, "{row:?}");
    let reason = row.reason.clone().unwrap();
    assert!(reason.starts_with("does not fit in"), "{reason}");
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
    assert!(row.fits, "{row:?}");
    assert!(row.peak_rss > std::fs::metadata(q8).unwrap().len() / 2, "peak {} looks unmeasured", row.peak_rss);
    assert!(row.peak_rss <= cap, "peak {} above the cap {cap}", row.peak_rss);
    assert!(row.pp.unwrap().mean > 0.0 && row.tg.unwrap().mean > 0.0);
    assert!(row.load_s.unwrap() > 0.0 && row.ttft_s.unwrap() > 0.0);
    assert!(row.enforcement.cgroups.iter().all(|d| !d.exists()));
}

#[test]
fn the_thread_count_reaches_the_child() {
    let (_, q8) = model();
    let one = bench_model(q8, &host_with(None, 1), &quick()).unwrap();
    assert_eq!(one.child_threads, Some(1));
    assert_eq!(one.child_affinity.as_ref().map(Vec::len), Some(1));
    let cpus = microscale::bench::caps::available_cpus().len();
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

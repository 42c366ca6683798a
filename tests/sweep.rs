//! The sweep end to end on the quick grid: every variant exactly once, resumable after a kill,
//! and a report rendered from what it wrote.

use microscale::report::markdown::{write_report, ReportOptions};
use microscale::report::results::read_results;
use microscale::sweep::grid::load_grid;
use microscale::sweep::{run_sweep, SweepOptions};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn rows(results: &Path) -> Vec<String> {
    std::fs::read_to_string(results)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect()
}

#[test]
fn quick_grid_runs_resumes_after_a_kill_and_reports() {
    let hf = microscale::default_model::require(microscale::default_model::HF_DIR).unwrap();
    let grid = load_grid(Path::new("grids/quick.toml")).unwrap();
    let names: Vec<String> = grid.variants.iter().map(|v| v.name.clone()).collect();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let results = out.join("results.csv");

    // A sweep killed midway (SIGKILL: no chance to clean up) ...
    let mut child = Command::new(env!("CARGO_BIN_EXE_microscale"))
        .args(["sweep", "-q", "--grid", "grids/quick.toml", "--model"])
        .arg(&hf)
        .arg("--out")
        .arg(&out)
        .spawn()
        .unwrap();
    let start = Instant::now();
    while rows(&results).len() < 2 && start.elapsed() < Duration::from_secs(600) {
        std::thread::sleep(Duration::from_millis(200));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = rows(&results);
    assert!(before.len() >= 2 && before.len() < names.len(), "killed too late or too early: {before:?}");

    // ... restarted, completes the grid with each variant exactly once.
    let opts = SweepOptions {
        src: hf.clone(),
        out: out.clone(),
        keep: false,
        threads: 2,
        quiet: true,
        data_dir: "../shared/data".into(),
        child_exe: Some(env!("CARGO_BIN_EXE_microscale").into()),
    };
    run_sweep(&grid, &opts).unwrap();
    let mut after = rows(&results);
    assert_eq!(after[..before.len()], before[..], "rows written before the kill are kept as they were");
    after.sort();
    let mut expected = names.clone();
    expected.sort();
    assert_eq!(after, expected, "each variant exactly once");

    // A second run over the same output adds nothing.
    run_sweep(&grid, &opts).unwrap();
    assert_eq!(rows(&results).len(), names.len());

    // Every row measured, none failed; variant files deleted (only the baseline stays).
    let parsed = read_results(&results).unwrap();
    for v in &parsed.variants {
        assert!(v.error.is_none(), "{}: {:?}", v.name, v.error);
        assert!(v.ppl.is_some() && v.size_bytes.unwrap_or(0) > 0, "{}", v.name);
        // Every variant but the baseline is compared with it.
        assert_eq!(v.kld.is_some(), v.name != "baseline-f32", "{}", v.name);
    }
    let left: Vec<_> = std::fs::read_dir(out.join("variants")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("baseline-f32.gguf")]);

    let report = write_report(&out, &ReportOptions::default()).unwrap();
    let text = std::fs::read_to_string(report).unwrap();
    for n in &names {
        assert!(text.contains(n.as_str()), "report lacks {n}");
    }
}

#[test]
fn grids_parse_and_expand() {
    let seed = load_grid(Path::new("grids/seed.toml")).unwrap();
    // baseline + 3 quants + 5 methods × 3 ratios × 2 quants + 3 stock
    assert_eq!(seed.variants.len(), 1 + 3 + 30 + 3);
    assert_eq!(seed.variants[0].name, "baseline-f32");
    assert!(seed.variants.iter().any(|v| v.name == "wanda50-q4_k_m"));
    assert!(microscale::sweep::grid::parse_grid(
        "[eval]\n[bench]\n[[matrix]]\nmethods=[\"prune-it\"]\nratios=[0.5]\nquants=[\"q8_0\"]\n"
    )
    .is_err());
}

#[test]
fn the_committed_results_match_the_seed_grid_header() {
    // The committed sweep must be resumable by the current code: same columns, same order.
    let grid = load_grid(Path::new("grids/seed.toml")).unwrap();
    let text = std::fs::read_to_string("bench-results/smollm2-135m/results.csv").unwrap();
    assert_eq!(text.lines().next().unwrap(), microscale::sweep::header(&grid).join(","));
    let parsed = read_results(Path::new("bench-results/smollm2-135m/results.csv")).unwrap();
    assert_eq!(parsed.variants.len(), grid.variants.len());
}

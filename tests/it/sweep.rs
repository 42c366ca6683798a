//! The sweep end to end on the quick grid: every variant exactly once, resumable after a kill,
//! and a report rendered from what it wrote.

use crate::common;

use microscale::record::results::{read_results, Status};
use microscale::report::markdown::{write_report, ReportOptions};
use microscale::sweep::grid::{load_grid, load_study_grid};
use microscale::sweep::{run_sweep, SweepOptions};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The variant column of results.csv, in file order (none if the file does not exist yet).
fn rows(results: &Path) -> Vec<String> {
    let Ok(mut rdr) = csv::Reader::from_path(results) else { return Vec::new() };
    rdr.records().map(|r| r.unwrap()[0].to_string()).collect()
}

#[test]
fn quick_grid_runs_resumes_after_a_kill_and_reports() {
    let hf = common::default_model::hf_dir();
    // The directory was imported: the CLI measures the file it came from unasked, and the library
    // sweep that resumes it below must be told the same.
    let shipped = microscale::convert::import::as_shipped_default(&hf);
    let wheel_file = common::default_model::gguf();
    assert!(shipped.as_deref().is_some_and(|p| p.ends_with(&wheel_file)), "{shipped:?}");
    let grid = load_study_grid(Path::new("grids/quick.toml"), shipped.as_deref()).unwrap();
    let names: Vec<String> = grid.variants.iter().map(|v| v.name.clone()).collect();
    assert_eq!(names[1], "as-shipped");
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
        threads: 2,
        child_exe: Some(env!("CARGO_BIN_EXE_microscale").into()),
        as_shipped: shipped.clone(),
        ..SweepOptions::new(&hf, Path::new("grids/quick.toml"), &out)
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

    // Every row measured, none failed; variant files deleted (only the baseline stays, with its
    // log-probabilities saved once for every KL divergence).
    let parsed = read_results(&results).unwrap();
    for v in &parsed.variants {
        assert!(v.error.is_none() && v.status == "ok", "{}: {} {:?}", v.name, v.status, v.error);
        assert!(v.ppl.is_some() && v.size_bytes.unwrap_or(0) > 0, "{}", v.name);
        // Every variant but the baseline is compared with it.
        assert_eq!(v.kld.is_some(), v.name != "baseline-f32", "{}", v.name);
    }
    // Every measured variant left its item file, and it holds what its row states: the windows'
    // NLL gives the row's perplexity, the KLD windows its KLD, the items its accuracies.
    let items = |name: &str| {
        microscale::record::items::ItemRecord::read(&microscale::record::items::items_path(&out, name)).unwrap()
    };
    for v in &parsed.variants {
        let rec = items(&v.name).unwrap_or_else(|| panic!("{}: no item file", v.name));
        let w = rec.perplexity.as_ref().unwrap();
        assert_eq!((w.sums.len(), w.tokens_per_window), (2, 255), "quick.toml: ppl_chunks = 2");
        let ppl = (w.sums.iter().sum::<f64>() / 510.0).exp();
        assert!((ppl / v.ppl.unwrap().value - 1.0).abs() < 1e-6, "{}: {ppl} vs {:?}", v.name, v.ppl);
        if let Some(k) = v.kld {
            let kw = rec.kld.as_ref().unwrap();
            assert!((kw.sums.iter().sum::<f64>() / 255.0 - k.value).abs() < 1e-6, "{}", v.name);
        }
        for (m, a) in &v.acc {
            let o = rec.accuracy[m].outcomes();
            assert_eq!(o.len(), 8, "quick.toml: limit = 8");
            assert!((o.iter().sum::<f64>() / 8.0 - a.value).abs() < 1e-6, "{} {m}", v.name);
        }
        let base = items("baseline-f32").unwrap();
        assert_eq!(w.tokens_sha256, base.perplexity.unwrap().tokens_sha256, "same tokens as the baseline");
    }
    let mut left: Vec<_> = std::fs::read_dir(out.join("variants"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["baseline-f32.1w.kld", "baseline-f32.gguf"], "quick.toml: kld_chunks = 1");

    let report = write_report(&out, &ReportOptions::default()).unwrap();
    let text = std::fs::read_to_string(report).unwrap();
    for n in &names {
        assert!(text.contains(n.as_str()), "report lacks {n}");
    }
}

#[test]
fn grids_parse_and_expand() {
    let seed = load_grid(Path::new("grids/seed.toml")).unwrap();
    // baseline + 15 variants + sparsegpt at 3 ratios + 4 structured methods + 5 stock rows
    assert_eq!(seed.variants.len(), 1 + 15 + 3 + 4 + 5);
    assert_eq!(seed.variants[0].name, "baseline-f32");
    for name in ["q4_k_m-gptq", "sparsegpt90-q8_0", "ffn-heal10-q8_0", "heads-heal33-q8_0", "stock-q3_k_m-noimatrix"] {
        assert!(seed.variants.iter().any(|v| v.name == name), "the seed grid lacks {name}");
    }
    let joint = seed.variant("sparsegpt10-q4_k_m-gptq").unwrap();
    assert_eq!(joint.quant_method, microscale::quant::gptq::QuantMethod::Gptq);
    assert!(joint.needs_moments());
    assert!(microscale::sweep::grid::parse_grid(
        "[eval]\n[bench]\n[[matrix]]\nmethods=[\"prune-it\"]\nratios=[0.5]\nquants=[\"q8_0\"]\n"
    )
    .is_err());
    // Every quantized row uses the sweep's importance matrix, except the stock rows asked for without.
    for v in &seed.variants {
        let plain = v.name.ends_with("-noimatrix") || v.quant.is_float();
        assert_eq!(v.imatrix, !plain, "{}", v.name);
    }

    // The quantization grid: every quantized variant and stock row uses the imatrix, except the
    // `plain` stock rows; budgets parse; a float type with a budget is refused.
    let g = load_grid(Path::new("grids/imatrix.toml")).unwrap();
    let by = |n: &str| g.variants.iter().find(|v| v.name == n).unwrap_or_else(|| panic!("no variant {n}"));
    assert!(by("iq3_m").imatrix && by("stock-iq3_m").imatrix);
    assert!(!by("stock-q4_k_m-noimatrix").imatrix && !by("baseline-f32").imatrix);
    assert_eq!(by("q3_k_m-93510208").budget, Some(microscale::convert::budget::Budget::Size(93_510_208)));
    assert!(by("q3_k_m-93510208").recipe().contains("+ imatrix"));
    let bad = "[eval]\n[bench]\n[[variant]]\nquant=\"f16\"\ntarget_size=\"10MiB\"\n";
    assert!(microscale::sweep::grid::parse_grid(bad).is_err());

    // `sequential = K` reaches the pruning request, the name and the recipe, in variants and matrices.
    let seq = microscale::sweep::grid::parse_grid(
        "[eval]\n[bench]\n[[variant]]\nquant=\"q4_k_m\"\nquant_method=\"gptq\"\nsequential=4\n\
         [[matrix]]\nmethods=[\"sparsegpt\"]\nratios=[0.5]\nquants=[\"q8_0\"]\nsequential=3\n",
    )
    .unwrap();
    let names: Vec<_> = seq.variants.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["baseline-f32", "q4_k_m-gptq-seq4", "sparsegpt50-q8_0-seq3"]);
    assert_eq!(seq.variants[1].prune_spec(16).unwrap().sequential, 4);
    assert_eq!(seq.variants[2].prune_spec(16).unwrap().sequential, 3);
    assert!(seq.variants[2].recipe().contains("sequential ×3"), "{}", seq.variants[2].recipe());

    // `allocation` reaches the pruning request, the name and the recipe; it only applies to widths.
    let alloc = microscale::sweep::grid::parse_grid(
        "[eval]\n[bench]\n[[variant]]\nquant=\"q8_0\"\nmethod=\"ffn-heal\"\nratio=0.25\nallocation=\"standardized\"\n\
         [[matrix]]\nmethods=[\"heads\"]\nratios=[0.5]\nquants=[\"q8_0\"]\nallocation=\"global\"\n",
    )
    .unwrap();
    let names: Vec<_> = alloc.variants.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["baseline-f32", "ffn-heal25-q8_0-std", "heads50-q8_0-global"]);
    use microscale::prune::Allocation;
    assert_eq!(alloc.variants[1].prune_spec(16).unwrap().allocation, Allocation::Standardized);
    assert_eq!(alloc.variants[2].prune_spec(16).unwrap().allocation, Allocation::Global);
    assert!(alloc.variants[1].recipe().contains("standardized widths"), "{}", alloc.variants[1].recipe());
    let misplaced =
        "[eval]\n[bench]\n[[variant]]\nquant=\"q8_0\"\nmethod=\"wanda\"\nratio=0.5\nallocation=\"global\"\n";
    let err = microscale::sweep::grid::parse_grid(misplaced).unwrap_err();
    assert!(format!("{err:#}").contains("not wanda pruning"), "{err:#}");
}

#[test]
fn the_committed_results_are_the_seed_grid_and_regenerate_the_committed_report() {
    // results.csv is the committed grid: the current header (so the sweep can resume it), and every
    // variant exactly once, in the grid's order, measured with the grid's evaluation settings.
    let committed = Path::new("bench-results/smollm2-135m");
    // As scripts/run-default-model.sh sweeps it: with the file the model came as.
    let mut grid = load_grid(Path::new("grids/seed.toml")).unwrap();
    grid.add_as_shipped(&common::default_model::gguf()).unwrap();
    let text = std::fs::read_to_string(committed.join("results.csv")).unwrap();
    assert_eq!(text.lines().next().unwrap(), microscale::sweep::header(&grid).join(","));
    let names: Vec<String> = grid.variants.iter().map(|v| v.name.clone()).collect();
    assert_eq!(rows(&committed.join("results.csv")), names);
    let parsed = read_results(&committed.join("results.csv")).unwrap();
    for v in &parsed.variants {
        assert_eq!(v.eval_chunks.as_deref(), Some(grid.eval.ppl_chunks.to_string().as_str()), "{}", v.name);
        assert_eq!(v.eval_limit.as_deref().filter(|l| !l.is_empty()), None, "{}: the full dev sets", v.name);
        if !v.failed() {
            assert!(committed.join("items").join(format!("{}.json", v.name)).is_file(), "{}: no items file", v.name);
        }
    }

    // Its speeds are one interleaved pass (`sweep --rebench`) over every row: each is the mean of
    // the rounds speeds.json keeps.
    let pass = microscale::record::speeds::SpeedPass::read(committed).unwrap().expect("speeds.json");
    let files: Vec<&str> = pass.files.iter().map(|f| f.variant.as_str()).collect();
    assert_eq!(files, names.iter().map(String::as_str).collect::<Vec<_>>());
    for (f, v) in parsed.variants.iter().enumerate() {
        for p in &grid.bench.profiles {
            let runs = pass.tg_runs(p, f);
            assert_eq!(runs.len(), pass.rounds, "{} on {p}", v.name);
            let mean = runs.iter().sum::<f64>() / runs.len() as f64;
            assert_eq!(format!("{:.2}", v.bench[p].tg_tps.unwrap()), format!("{mean:.2}"), "{} on {p}", v.name);
        }
    }

    // report.md is what `microscale report` writes from the directory alone (results.csv, items/,
    // caveats.md, speeds.json, litert/results.csv), byte for byte.
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path();
    std::fs::copy(committed.join("results.csv"), copy.join("results.csv")).unwrap();
    std::fs::copy(committed.join("caveats.md"), copy.join("caveats.md")).unwrap();
    std::fs::copy(committed.join("speeds.json"), copy.join("speeds.json")).unwrap();
    std::fs::create_dir(copy.join("litert")).unwrap();
    std::fs::copy(committed.join("litert/results.csv"), copy.join("litert/results.csv")).unwrap();
    std::fs::create_dir(copy.join("items")).unwrap();
    for e in std::fs::read_dir(committed.join("items")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), copy.join("items").join(e.file_name())).unwrap();
    }
    let st = Command::new(env!("CARGO_BIN_EXE_microscale")).args(["report", "-q"]).arg(copy).status().unwrap();
    assert!(st.success());
    let regenerated = std::fs::read(copy.join("report.md")).unwrap();
    let expected = std::fs::read(committed.join("report.md")).unwrap();
    assert!(regenerated == expected, "bench-results/smollm2-135m/report.md is not what `microscale report` writes");
    for plot in std::fs::read_dir(committed.join("plots")).unwrap() {
        let name = plot.unwrap().file_name();
        assert!(copy.join("plots").join(&name).is_file(), "{name:?} is not regenerated");
    }
}

/// A grid that exercises every way a variant can end: measured, crashed (through the test-only
/// fault trigger), refused as impossible, and too big for a device profile of the grid's own.
const FAILURE_GRID: &str = r#"
[eval]
ppl_chunks = 1
kld_chunks = 1

[bench]
profiles = ["tiny", "host"]
reps = 1
pp = 8
tg = 2

[calib]
chunks = 1

[profiles.tiny]
threads = 1
memory = "40MiB"
note = "a device too small for the model"

[[variant]]
quant = "q8_0"

[[variant]]
quant = "q4_0"

[[variant]]
quant = "q8_0"
method = "heads"
ratio = 0.9
"#;

fn sweep_cli(hf: &Path, grid: &Path, out: &Path, extra: &[&str], env: &[(&str, &str)]) {
    let st = Command::new(env!("CARGO_BIN_EXE_microscale"))
        .args(["sweep", "-q", "--threads", "2", "--model"])
        .arg(hf)
        .arg("--grid")
        .arg(grid)
        .arg("--out")
        .arg(out)
        .args(extra)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
}

#[test]
fn a_crashed_variant_is_a_crash_row_and_the_sweep_goes_on_and_retries_on_request() {
    let hf = common::default_model::hf_dir();
    let tmp = tempfile::tempdir().unwrap();
    let grid = tmp.path().join("failures.toml");
    std::fs::write(&grid, FAILURE_GRID).unwrap();
    let out = tmp.path().join("out");
    let results = out.join("results.csv");
    let by_name = || -> std::collections::BTreeMap<String, microscale::record::results::Variant> {
        read_results(&results).unwrap().variants.into_iter().map(|v| (v.name.clone(), v)).collect()
    };
    let names = ["baseline-f32", "q8_0", "q4_0", "heads90-q8_0"];

    // (No row for the file as shipped: not what this test is about.)
    let no_shipped = ["--no-as-shipped"];
    sweep_cli(&hf, &grid, &out, &no_shipped, &[("MICROSCALE_FAULT", "variant:q8_0=segv")]);
    assert_eq!(rows(&results), names, "every variant once, in grid order");
    let v = by_name();
    assert_eq!(v["q8_0"].status, "crash");
    let why = v["q8_0"].error.as_deref().unwrap();
    assert!(why.contains("SIGSEGV") && !why.contains("does not fit"), "{why}");
    assert!(out.join("logs/q8_0.log").exists());
    // The sweep went on: the next variant was measured, and is too big for the tiny device only.
    let q4 = &v["q4_0"];
    assert_eq!(q4.status, "ok", "{:?}", q4.error);
    assert!(q4.ppl.is_some() && q4.kld.is_some());
    assert_eq!(q4.bench["tiny"].status, Some(Status::Oom), "a real cap kill is oom");
    assert_eq!(q4.bench["host"].status, Some(Status::Fits));
    assert!(q4.bench["host"].tg_tps.unwrap() > 0.0);
    // An impossible request is an error row, named for what it is.
    assert_eq!(v["heads90-q8_0"].status, "error");
    assert!(v["heads90-q8_0"].error.as_deref().unwrap().contains("every head"), "{:?}", v["heads90-q8_0"].error);
    // Measured variants leave an item file; the crashed and the impossible ones none.
    let has_items = |n: &str| microscale::record::items::items_path(&out, n).exists();
    assert!(has_items("q4_0") && has_items("baseline-f32"));
    assert!(!has_items("q8_0") && !has_items("heads90-q8_0"));

    // Resuming does not retry what is recorded ...
    sweep_cli(&hf, &grid, &out, &no_shipped, &[]);
    assert_eq!(rows(&results), names);
    assert_eq!(by_name()["q8_0"].status, "crash");
    // ... unless asked: the crashed variant now runs (no fault), the impossible one fails again.
    sweep_cli(&hf, &grid, &out, &["--retry-failed", "--no-as-shipped"], &[]);
    assert_eq!(rows(&results), names, "still every variant once, in grid order");
    let v = by_name();
    assert_eq!(v["q8_0"].status, "ok", "{:?}", v["q8_0"].error);
    assert_eq!(v["q8_0"].bench["tiny"].status, Some(Status::Oom));
    assert_eq!(v["heads90-q8_0"].status, "error");
    assert_eq!(v["q4_0"].date, by_name()["q4_0"].date, "a good row is not measured again");
}

/// The file the model came as is a row of its own (kind `source`), measured like the others,
/// never deleted, and the report states sizes against it. Not named here: the imported directory
/// records it, and the sweep finds it.
#[test]
fn the_file_as_shipped_is_a_row_and_the_report_states_sizes_against_it() {
    let hf = common::default_model::hf_dir();
    let shipped = common::default_model::gguf();
    let before = common::digests::sha256_file(&shipped);
    let tmp = tempfile::tempdir().unwrap();
    let grid = tmp.path().join("grid.toml");
    std::fs::write(
        &grid,
        "[eval]\nppl_chunks = 2\nkld_chunks = 2\ntasks = [\"arc-easy\"]\nlimit = 10\n\
         [bench]\nprofiles = [\"host\"]\nreps = 1\npp = 8\ntg = 4\n[calib]\nchunks = 2\nimatrix = false\n\
         [[variant]]\nquant = \"q4_0\"\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    sweep_cli(&hf, &grid, &out, &[], &[]);
    let r = read_results(&out.join("results.csv")).unwrap();
    let names: Vec<&str> = r.variants.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["baseline-f32", "as-shipped", "q4_0"]);
    let s = &r.variants[1];
    assert_eq!(s.kind.as_str(), "source");
    assert_eq!(s.size_bytes, Some(std::fs::metadata(&shipped).unwrap().len()));
    assert_eq!(s.quant, "q4_1", "its quant is the file's general.file_type");
    assert!(s.kld.is_some_and(|k| k.value < 0.01), "the shipped Q4_1 holds the baseline's weights: {:?}", s.kld);
    assert_eq!(common::digests::sha256_file(&shipped), before, "the file as shipped was changed");
    let md = write_report(&out, &ReportOptions::default()).unwrap();
    let md = std::fs::read_to_string(md).unwrap();
    assert!(md.contains("1 as shipped"), "{md}");
    assert!(md.contains("`as-shipped`, the file the model came as (93.81 MiB)"), "{md}");
    // Every sweet spot's size is stated against it (the pick may be the file itself).
    let spots: Vec<&str> = md.lines().filter(|l| l.starts_with("- **host**: `")).collect();
    assert!(!spots.is_empty(), "{md}");
    assert!(spots.iter().all(|l| l.contains("vs as shipped") || l.contains("the file as shipped")), "{spots:?}");
}

/// `--rebench`: every file of a finished study benchmarked again per profile, in interleaved
/// rounds; the deleted variants rebuilt and checked against their rows; only the speed columns
/// change, to the rounds' mean and sd, every round kept in speeds.json; the report says how the
/// speeds were taken. A row whose rebuilt file holds other weights is refused, nothing written.
#[test]
fn rebench_takes_a_study_s_speeds_again_in_interleaved_rounds() {
    let hf = common::default_model::hf_dir();
    let shipped = common::default_model::gguf();
    let tmp = tempfile::tempdir().unwrap();
    let grid = tmp.path().join("grid.toml");
    std::fs::write(
        &grid,
        "[eval]\nppl_chunks = 1\nkld_chunks = 1\ntasks = []\n\
         [bench]\nprofiles = [\"host\", \"tiny\"]\nreps = 1\npp = 8\ntg = 4\n[calib]\nchunks = 1\nimatrix = false\n\
         [profiles.tiny]\nthreads = 1\nmemory = \"40MiB\"\nnote = \"too small\"\n\
         [[variant]]\nquant = \"q8_0\"\n[stock]\nquants = [\"q8_0\"]\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    let shipped_arg = ["--as-shipped", shipped.to_str().unwrap()];
    sweep_cli(&hf, &grid, &out, &shipped_arg, &[]);
    let results = out.join("results.csv");
    let table = |p: &Path| -> Vec<std::collections::BTreeMap<String, String>> {
        csv::Reader::from_path(p).unwrap().deserialize().map(|r| r.unwrap()).collect()
    };
    let before = table(&results);
    let names: Vec<&str> = before.iter().map(|r| r["variant"].as_str()).collect();
    assert_eq!(names, ["baseline-f32", "as-shipped", "q8_0", "stock-q8_0"]);
    assert!(!out.join("variants/q8_0.gguf").exists(), "the sweep deleted its variants");

    let rebench = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_microscale"))
            .args(["sweep", "-q", "--threads", "2", "--rebench", "--model"])
            .arg(&hf)
            .arg("--grid")
            .arg(&grid)
            .arg("--out")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let mut args = shipped_arg.to_vec();
    args.extend(["--rounds", "3"]);
    let st = rebench(&args);
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let after = table(&results);
    let pass: microscale::record::speeds::SpeedPass =
        serde_json::from_str(&std::fs::read_to_string(out.join("speeds.json")).unwrap()).unwrap();
    let files: Vec<&str> = pass.files.iter().map(|f| f.variant.as_str()).collect();
    assert_eq!(files, names, "every ok row, in results.csv's order");
    assert_eq!(pass.rounds, 3);
    assert!(out.join("variants/q8_0.gguf").exists() && out.join("variants/stock-q8_0.gguf").exists(), "rebuilt, kept");
    // Our Q8_0 and llama-quantize's hold the same bytes of weights (the metadata differs).
    assert_eq!(pass.identical_groups(), vec![vec![2, 3]], "{:?}", pass.files);
    for (f, (b, a)) in before.iter().zip(&after).enumerate() {
        for (col, value) in b {
            if !col.contains(':') {
                assert_eq!(&a[col], value, "{}: {col} changed", b["variant"]);
            }
        }
        // host: the mean and sd of the three rounds, each round's run being a fresh child.
        let runs = pass.tg_runs("host", f);
        assert_eq!(runs.len(), 3, "{}", b["variant"]);
        let mean = runs.iter().sum::<f64>() / 3.0;
        let sd = (runs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
        assert_eq!(a["host:tg_tps"], format!("{mean:.2}"), "{}", b["variant"]);
        assert_eq!(a["host:tg_tps_sd"], format!("{sd:.2}"), "{}", b["variant"]);
        assert_eq!(a["host:status"], "fits");
        // tiny: no room in any round, as in the sweep.
        assert_eq!((a["tiny:status"].as_str(), a["tiny:tg_tps"].as_str()), ("oom", ""), "{}", b["variant"]);
        assert!(pass.profiles[1].rounds.iter().all(|r| r[f].status == "oom" && r[f].tg_tps.is_none()));
    }
    let md = write_report(&out, &ReportOptions::default()).unwrap();
    let md = std::fs::read_to_string(md).unwrap();
    assert!(md.contains("Speeds were taken side by side by `sweep --rebench`"), "{md}");
    assert!(md.contains("3 rounds over the 4 files in turn"), "{md}");
    assert!(md.contains("Files with byte-identical weights (`q8_0` = `stock-q8_0`)"), "{md}");

    // A rebuilt file that is not what its row measured: refused in one line, nothing changed.
    let lying = std::fs::read_to_string(&results).unwrap().replace(&before[2]["bits_per_weight"], "4.5000");
    std::fs::write(&results, &lying).unwrap();
    let speeds = std::fs::read(out.join("speeds.json")).unwrap();
    std::fs::remove_file(out.join("variants/q8_0.gguf")).unwrap();
    let st = rebench(&shipped_arg);
    let err = String::from_utf8_lossy(&st.stderr);
    assert_eq!(st.status.code(), Some(1), "{err}");
    assert!(err.contains("q8_0.gguf") && err.contains("but the row of q8_0 measured"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(std::fs::read_to_string(&results).unwrap(), lying);
    assert_eq!(std::fs::read(out.join("speeds.json")).unwrap(), speeds);
    // Without the file as shipped, the study's row of it cannot be benchmarked: said before any work.
    // (The imported directory names the file; --no-as-shipped is how it goes missing here.)
    std::fs::write(
        &results,
        std::fs::read_to_string(&results).unwrap().replace("4.5000", &before[2]["bits_per_weight"]),
    )
    .unwrap();
    let st = rebench(&["--no-as-shipped"]);
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(!st.status.success() && err.contains("--as-shipped"), "{err}");
}

//! microscale built for aarch64 (scripts/build-aarch64.sh: Debian's cross toolchain, plain armv8-a, the
//! Raspberry Pi 4's baseline) and run on this x86-64 machine under qemu, side by side with the x86-64
//! build: the files it writes are byte for byte the x86-64 build's (and the checked-in digests), its
//! perplexity is within 1% of x86-64's, `bench` and `generate` run, and rows it measures "on the device"
//! fold into a study's report on the workstation. Speeds under qemu mean nothing: only the flow, the
//! labels and the refusals are checked.
//!
//! The aarch64 build's unit tests and the quantizer oracle run under qemu too (scripts/test-aarch64.sh,
//! from the README's test command).
#![cfg(target_arch = "x86_64")]

use crate::common;

use common::digests::{convert, expected, sha256_file};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const X86: &str = env!("CARGO_BIN_EXE_microscale");

/// The aarch64 binary, cross-built once (the script installs what it needs when run as root).
fn arm() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let o = Command::new("scripts/build-aarch64.sh").output().unwrap();
        assert!(o.status.success(), "scripts/build-aarch64.sh failed: {}", String::from_utf8_lossy(&o.stderr));
        let path = PathBuf::from(String::from_utf8(o.stdout).unwrap().trim().lines().last().unwrap());
        let head = std::fs::read(&path).unwrap();
        // ELF, 64-bit, e_machine 183 (EM_AARCH64).
        assert!(
            head.starts_with(b"\x7fELF\x02") && u16::from_le_bytes([head[18], head[19]]) == 183,
            "{}",
            path.display()
        );
        path
    })
}

fn run(exe: &Path, args: &[&str]) -> Output {
    Command::new(exe).args(args).output().unwrap()
}

fn ok(exe: &Path, args: &[&str]) -> String {
    let o = run(exe, args);
    assert!(o.status.success(), "{} {args:?}: {}", exe.display(), String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn aarch64_writes_the_same_bytes_as_x86_64() {
    let src = common::default_model::hf_dir();
    let tmp = tempfile::tempdir().unwrap();
    for e in expected() {
        let (a, x) = (tmp.path().join(format!("{}-arm.gguf", e.name)), tmp.path().join(format!("{}-x86.gguf", e.name)));
        convert(arm(), &src, &a, &e.args);
        convert(Path::new(X86), &src, &x, &e.args);
        assert_eq!(sha256_file(&a), e.sha256, "aarch64 {}: not the checked-in bytes", e.name);
        assert!(std::fs::read(&a).unwrap() == std::fs::read(&x).unwrap(), "{}: aarch64 and x86-64 differ", e.name);
        std::fs::remove_file(a).unwrap();
        std::fs::remove_file(x).unwrap();
    }
}

/// GPTQ from one calibration file (made here by the x86-64 build; the engine's activations are
/// the engine's, and differ in the last bits between CPUs' SIMD kernels): both builds then write
/// the same bytes. One block kept (the other 29 dropped) bounds the emulated run.
#[test]
fn gptq_and_layer_pruning_from_one_calibration_are_the_same_bytes() {
    let src = common::default_model::hf_dir();
    let tmp = tempfile::tempdir().unwrap();
    let calib = tmp.path().join("calib.gguf");
    let dropped = (1..30).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    let args = |out: &Path| {
        vec![
            "convert".to_string(),
            s(&src).into(),
            "-o".into(),
            s(out).into(),
            "-q".into(),
            "--outtype".into(),
            "q4_k_m".into(),
            "--quant-method".into(),
            "gptq".into(),
            "--calib".into(),
            s(&calib).into(),
            "--calib-chunks".into(),
            "2".into(),
            "--drop-layers-list".into(),
            dropped.clone(),
        ]
    };
    let (x, a) = (tmp.path().join("x86.gguf"), tmp.path().join("arm.gguf"));
    let xa = args(&x);
    ok(Path::new(X86), &xa.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(calib.is_file(), "the x86-64 run writes the calibration");
    let aa = args(&a);
    ok(arm(), &aa.iter().map(String::as_str).collect::<Vec<_>>());
    let (xb, ab) = (std::fs::read(&x).unwrap(), std::fs::read(&a).unwrap());
    assert!(xb.len() > 1 << 20 && xb == ab, "GPTQ: aarch64 and x86-64 differ ({} vs {} bytes)", ab.len(), xb.len());
}

fn q8_0(dir: &Path) -> PathBuf {
    let out = dir.join("q8_0.gguf");
    convert(Path::new(X86), &common::default_model::hf_dir(), &out, &["--outtype".into(), "q8_0".into()]);
    out
}

fn ppl(exe: &Path, model: &Path) -> f64 {
    let out = ok(exe, &["eval", s(model), "--ppl", "--chunks", "2", "-c", "128", "-t", "2", "--json", "-q"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["results"]["perplexity"]["ppl"].as_f64().unwrap()
}

/// llama.cpp's kernels differ between CPUs (NEON against AVX2, other summation orders), so perplexity
/// agrees to a tolerance, not exactly: 1% (0.15% measured: 21.459 against 21.427 over two 512-token windows of the same file, earlier).
#[test]
fn perplexity_on_aarch64_is_within_one_percent_of_x86_64() {
    let tmp = tempfile::tempdir().unwrap();
    let model = q8_0(tmp.path());
    let (a, x) = (ppl(arm(), &model), ppl(Path::new(X86), &model));
    assert!(a.is_finite() && x > 1.0 && (a / x - 1.0).abs() < 0.01, "aarch64 {a} vs x86-64 {x}");
}

#[test]
fn bench_and_generate_run_on_aarch64() {
    let tmp = tempfile::tempdir().unwrap();
    let model = q8_0(tmp.path());
    let out = ok(
        arm(),
        &[
            "bench",
            s(&model),
            "--profile",
            "pi4-4gb",
            "-t",
            "2",
            "--pp",
            "16",
            "--tg",
            "4",
            "--reps",
            "1",
            "--json",
            "-q",
        ],
    );
    let rows: Value = serde_json::from_str(&out).unwrap();
    let row = &rows[0];
    assert_eq!(row["status"], "fits", "{row}");
    assert!(row["tg"]["mean"].as_f64().unwrap() > 0.0 && row["pp"]["mean"].as_f64().unwrap() > 0.0, "{row}");
    assert_eq!(row["repacked_mib"].as_f64(), Some(0.0), "armv8-a without dotprod/i8mm: llama.cpp repacks nothing");
    let out = ok(
        arm(),
        &["generate", s(&model), "-p", "The capital of France is", "-n", "6", "--temp", "0", "-t", "2", "--json", "-q"],
    );
    let g: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(g["generated_tokens"], 6, "{g}");
    assert!(g["text"].as_str().unwrap().contains("Paris"), "{g}");
}

const STUDY_GRID: &str = r#"
[eval]
ppl_chunks = 1
kld_chunks = 0

[bench]
profiles = ["pi4-4gb"]
reps = 1
pp = 8
tg = 2

[calib]
imatrix = false

[[variant]]
quant = "q8_0"

[[variant]]
quant = "q4_0"
"#;

fn report(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["report", s(dir), "-q", "--max-ppl-increase", "10", "--max-acc-drop", "1"];
    args.extend_from_slice(extra);
    run(Path::new(X86), &args)
}

fn error_line(o: &Output) -> String {
    assert!(!o.status.success() && o.status.code() == Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(err.trim().lines().count(), 1, "one error line: {err}");
    err
}

/// The workstation sweeps (x86-64), the device benches its files (the aarch64 build, `--profile
/// native`), the workstation's report folds the rows in.
#[test]
fn rows_measured_on_an_aarch64_device_fold_into_the_report() {
    let tmp = tempfile::tempdir().unwrap();
    let study = tmp.path().join("study");
    let grid = tmp.path().join("grid.toml");
    std::fs::write(&grid, STUDY_GRID).unwrap();
    let hf = common::default_model::hf_dir();
    ok(
        Path::new(X86),
        &["sweep", "-q", "--threads", "2", "--keep", "--model", s(&hf), "--grid", s(&grid), "--out", s(&study)],
    );
    let results = std::fs::read_to_string(study.join("results.csv")).unwrap();
    let header: Vec<&str> = results.lines().next().unwrap().split(',').collect();
    assert!(header.contains(&"pi4-4gb:repacked"), "{header:?}");

    // On the "device": every file of the study's variants/.
    let rows = tmp.path().join("rows.csv");
    let out = run(
        arm(),
        &[
            "bench",
            s(&study),
            "--profile",
            "native",
            "--device",
            "pi4-4gb",
            "--out",
            s(&rows),
            "-t",
            "2",
            "--pp",
            "8",
            "--tg",
            "2",
            "--reps",
            "1",
            "-q",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let parsed = microscale::record::device_rows::read_device_rows(&rows).unwrap();
    assert_eq!(parsed.device.arch, "aarch64");
    assert!(parsed.device.cpu_features.split(' ').any(|f| f == "NEON"), "{:?}", parsed.device);
    let mut names: Vec<&str> = parsed.rows.iter().map(|r| r.variant.as_str()).collect();
    names.sort();
    assert_eq!(names, ["baseline-f32", "q4_0", "q8_0"]);
    for r in &parsed.rows {
        assert_eq!(r.status, microscale::record::Status::Fits, "{r:?}");
        assert_eq!(r.repacked, Some(false), "armv8-a without dotprod/i8mm repacks nothing: {r:?}");
        assert!(r.tg_tps.unwrap() > 0.0, "{r:?}");
    }

    // The workstation's report: the device's own section, its CPU, the emulated profile beside it.
    assert!(report(&study, &["--device-rows", s(&rows)]).status.success());
    let md = std::fs::read_to_string(study.join("report.md")).unwrap();
    for needle in [
        "## Measured on device",
        "### pi4-4gb — measured on device",
        "llama.cpp's CPU features there: NEON",
        "pi4-4gb (emulated) tg t/s",
        "**pi4-4gb (measured) — measured on device:",
        "**pi4-4gb (emulated on this host; measured on the device below)**",
        "with AVX2 (x86-64) Q4_0, Q4_K, IQ4_NL and MXFP4",
    ] {
        assert!(md.contains(needle), "report.md lacks {needle:?}:\n{md}");
    }
    assert!(md.contains(", aarch64"), "the device's architecture");
    // x86-64 with AVX2 repacks Q4_0 at load: the emulated row says so.
    let emulated_q4_0 = microscale::record::results::read_results(&study.join("results.csv")).unwrap();
    let q4_0 = emulated_q4_0.variants.iter().find(|v| v.name == "q4_0").unwrap();
    assert_eq!(q4_0.bench("pi4-4gb").unwrap().repacked, Some(std::arch::is_x86_feature_detected!("avx2")));

    // Kept in the study: a later report includes them without the flag.
    assert!(study.join("device-rows/pi4-4gb.csv").is_file());
    assert!(report(&study, &[]).status.success());
    assert!(std::fs::read_to_string(study.join("report.md")).unwrap().contains("### pi4-4gb — measured on device"));

    // The device's sweet spot follows its measured rows: with q4_0 out of memory there, q8_0.
    let sweet = |dir: &Path, extra: &[&str]| {
        let mut a = vec!["--sweet-spot", "pi4-4gb"];
        a.extend_from_slice(extra);
        let o = report(dir, &a);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    };
    assert_eq!(sweet(&study, &[]), "q4_0");
    let oom_rows = tmp.path().join("rows-oom.csv");
    let text = std::fs::read_to_string(&rows).unwrap();
    let mut on_device = microscale::record::device_rows::read_device_rows(&rows).unwrap();
    for r in on_device.rows.iter_mut().filter(|r| r.variant == "q4_0") {
        r.status = microscale::record::Status::Oom;
        r.reason = "killed by the memory cap".into();
        (r.pp_tps, r.pp_tps_sd, r.tg_tps, r.tg_tps_sd, r.load_s, r.ttft_s) = (None, None, None, None, None, None);
    }
    microscale::record::device_rows::write_device_rows(&oom_rows, &on_device).unwrap();
    let stored = std::fs::read(study.join("device-rows/pi4-4gb.csv")).unwrap();
    assert_eq!(sweet(&study, &["--device-rows", s(&oom_rows)]), "q8_0");
    assert!(std::fs::read(study.join("device-rows/pi4-4gb.csv")).unwrap() == stored, "--sweet-spot writes nothing");

    // Refused before anything is written: rows of a file the study does not have, of another size,
    // or a file that is not device rows at all.
    let before = std::fs::read(study.join("report.md")).unwrap();
    let stranger = tmp.path().join("stranger.csv");
    std::fs::write(&stranger, text.replace(",q8_0,", ",q5_1,")).unwrap();
    let e = error_line(&report(&study, &["--device-rows", s(&stranger)]));
    assert!(e.contains("stranger.csv:") && e.contains("`q5_1` is not in"), "{e}");
    let resized = tmp.path().join("resized.csv");
    let q8 = parsed.rows.iter().find(|r| r.variant == "q8_0").unwrap();
    std::fs::write(&resized, text.replace(&format!(",{},", q8.size_bytes), ",12345,")).unwrap();
    let e = error_line(&report(&study, &["--device-rows", s(&resized)]));
    assert!(e.contains("resized.csv:") && e.contains("not the same file"), "{e}");
    let e = error_line(&report(&study, &["--device-rows", s(&study.join("results.csv"))]));
    assert!(e.contains("not a device rows file"), "{e}");
    assert!(std::fs::read(study.join("report.md")).unwrap() == before, "a refused report leaves report.md as it was");
}

//! `export --format litert` through litert-torch, and the LiteRT file run here by LiteRT's own
//! interpreter (`eval`, `generate`), beside the GGUF through llama.cpp: the export environment
//! (scripts/export-env.sh) is made by the README's test command.

use crate::common;
use std::path::Path;
use std::process::{Command, Output};

fn microscale(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_microscale")).args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = microscale(args);
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `eval --json`'s perplexity and the tokens it scored.
fn ppl(model: &Path, tokenizer: Option<&Path>) -> (f64, u64) {
    let mut args = vec!["eval", s(model), "--chunks", "4", "--json", "-q"];
    if let Some(t) = tokenizer {
        args.extend(["--tokenizer", s(t)]);
    }
    let v: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
    let p = &v["results"]["perplexity"];
    (p["ppl"].as_f64().unwrap(), p["scored_tokens"].as_u64().unwrap())
}

fn answer(model: &Path, tokenizer: Option<&Path>) -> String {
    let mut args =
        vec!["generate", s(model), "--chat", "-p", "What is the capital of France?", "--temp", "0", "-n", "24", "-q"];
    if let Some(t) = tokenizer {
        args.extend(["--tokenizer", s(t)]);
    }
    ok(&args).trim().to_string()
}

fn export(model: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["export", s(model), "--format", "litert", "-o", s(out), "--json", "-q"];
    args.extend(extra);
    serde_json::from_str(&ok(&args)).unwrap()
}

/// The study on Android's stack (`sweep --litert`): a sweep of the default model (its F32
/// baseline and the Q4_1 file it shipped as, which is the sweet spot), then both exported to
/// LiteRT and measured beside their GGUFs.
///
/// With float32 weights the LiteRT baseline scores as the F32 GGUF (the same weights; only the
/// order of float sums differs between XNNPACK and ggml: 0.01% measured, 0.1% allowed) and its KL
/// divergence from the GGUF's log-probabilities is float noise (4e-7 measured). The shipped
/// Q4_1 file, quantized GGUF, becomes int8 weights (per-channel scales): within 1% of the F32
/// GGUF (+0.28% measured over these 4 windows) with a KL divergence of the Q4_1 GGUF's order
/// (0.003–0.004), against +61% for LiteRT's symmetric int4, which a broken scale would resemble.
/// The Q4_1 file is also exported with `dynamic_int8` (int8 activations too). The float32 and
/// weight-only files give llama.cpp's greedy answer, and the report sets each file beside its twin.
#[test]
fn a_study_s_baseline_and_sweet_spot_run_on_litert_beside_their_ggufs() {
    let shipped = common::default_model::gguf();
    let tmp = tempfile::tempdir().unwrap();
    let grid = tmp.path().join("grid.toml");
    let grid_text =
        "[eval]\nppl_chunks = 4\nkld_chunks = 4\n[bench]\nprofiles = [\"host\"]\nreps = 1\npp = 32\ntg = 8\n";
    std::fs::write(&grid, grid_text).unwrap();
    let out = tmp.path().join("study");
    let sweep = ["sweep", "--model", s(&shipped), "--grid", s(&grid), "--out", s(&out), "-q"];
    ok(&sweep);
    ok(&[&sweep[..], &["--litert"]].concat());

    let mut rows: Vec<serde_json::Map<String, serde_json::Value>> = vec![];
    for r in csv::Reader::from_path(out.join("litert/results.csv")).unwrap().deserialize() {
        rows.push(r.unwrap());
    }
    let row = |variant: &str, runtime: &str, weights: &str| {
        let found = rows.iter().find(|r| r["variant"] == variant && r["runtime"] == runtime && r["weights"] == weights);
        found.unwrap_or_else(|| panic!("no {variant} on {runtime} ({weights}): {rows:?}")).clone()
    };
    let num = |r: &serde_json::Map<String, serde_json::Value>, k: &str| -> f64 {
        r[k].as_str().and_then(|v| v.parse().ok()).or_else(|| r[k].as_f64()).unwrap_or_else(|| panic!("{k}: {r:?}"))
    };
    assert_eq!(rows.len(), 5, "{rows:?}");
    let (base_gguf, base_lite) = (row("baseline-f32", "llama.cpp", "f32"), row("baseline-f32", "litert", "none"));
    let (q4_gguf, q4_lite) = (row("as-shipped", "llama.cpp", "q4_1"), row("as-shipped", "litert", "weight_only_int8"));
    let dynamic = row("as-shipped", "litert", "dynamic_int8");
    assert!(q4_lite["role"].as_str().unwrap().contains("sweet spot: host"), "{q4_lite:?}");
    let f32_ppl = num(&base_gguf, "ppl");
    assert!((num(&base_lite, "ppl") / f32_ppl - 1.0).abs() < 1e-3, "{base_lite:?} vs {base_gguf:?}");
    assert!(num(&base_lite, "kld").abs() < 1e-4 && num(&base_lite, "same_top") > 0.99, "{base_lite:?}");
    let int8_ppl = num(&q4_lite, "ppl");
    assert!((int8_ppl / f32_ppl - 1.0).abs() < 1e-2 && int8_ppl != num(&base_lite, "ppl"), "{q4_lite:?}");
    assert!((1e-3..2e-2).contains(&num(&q4_lite, "kld")), "{q4_lite:?}");
    assert!((1e-3..2e-2).contains(&num(&q4_gguf, "kld")), "{q4_gguf:?}");
    assert!(num(&q4_lite, "size_bytes") < num(&base_lite, "size_bytes") / 3.0, "int8 weights: {q4_lite:?}");
    // Activations quantized too: more error than weight-only int8 (+1.7% perplexity over these
    // windows, KLD 0.020 over 40), within 5%.
    assert!((num(&dynamic, "ppl") / f32_ppl - 1.0).abs() < 5e-2, "{dynamic:?}");
    assert!(num(&dynamic, "kld") > num(&q4_lite, "kld") && num(&dynamic, "kld") < 0.05, "{dynamic:?}");
    for r in &rows {
        assert!(num(r, "pp_tps") > 0.0 && num(r, "tg_tps") > 0.0 && num(r, "threads") >= 1.0, "{r:?}");
        assert_eq!(num(r, "eval_chunks"), 4.0, "{r:?}");
    }
    assert!(num(&q4_lite, "export_s") > 0.0 && num(&q4_lite, "export_peak_rss_mib") > 100.0, "{q4_lite:?}");
    let mut kept: Vec<String> = std::fs::read_dir(out.join("litert"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    kept.sort();
    let files = [
        "as-shipped.dynamic_int8.tflite",
        "as-shipped.weight_only_int8.tflite",
        "baseline-f32.none.tflite",
        "baseline.4w.kld",
        "results.csv",
    ];
    assert_eq!(kept, files, "no scratch left");

    ok(&["report", s(&out), "-q"]);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    let section = report.split("## On Android's stack (LiteRT)").nth(1).expect("the LiteRT section");
    assert!(section.contains("| `as-shipped` | sweet spot: host | litert | weight_only_int8 |"), "{section}");

    let gguf_answer = answer(&shipped, None);
    assert!(gguf_answer.contains("Paris"), "{gguf_answer}");
    for file in ["baseline-f32.none.tflite", "as-shipped.weight_only_int8.tflite"] {
        assert_eq!(answer(&out.join("litert").join(file), Some(&shipped)), gguf_answer, "{file}");
    }
}

/// A pruned model (4 of 30 blocks dropped, every FFN narrowed by a quarter) exports as a model of
/// 26 narrower blocks, and scores as its GGUF does.
#[test]
fn a_pruned_model_exports_to_litert_and_runs() {
    let hf = common::default_model::hf_dir();
    let tmp = tempfile::tempdir().unwrap();
    let pruned = tmp.path().join("pruned.gguf");
    ok(&["convert", s(&hf), "-o", s(&pruned), "--outtype", "f32", "--drop-layers", "4", "--prune-ffn", "0.25", "-q"]);
    let out = tmp.path().join("pruned.tflite");
    let e = export(&pruned, &out, &[]);
    assert_eq!(e["quantize"], "none", "an F32 GGUF keeps float32 weights: {e}");
    let (gguf, _) = ppl(&pruned, None);
    let (lite, _) = ppl(&out, Some(&pruned));
    assert!((lite / gguf - 1.0).abs() < 1e-3, "LiteRT {lite} vs GGUF {gguf}");
}

/// What cannot be exported or run is refused in one line, before any work, with nothing written.
#[test]
fn litert_refusals_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let shipped = common::default_model::gguf();
    let gpt2 = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/vocabs/ggml-vocab-gpt-2.gguf");
    let out = tmp.path().join("x.tflite");
    let fake = tmp.path().join("fake.tflite");
    std::fs::write(&fake, b"GGUF not a flatbuffer").unwrap();
    let quick = Path::new(env!("CARGO_MANIFEST_DIR")).join("grids/quick.toml");
    let study = tmp.path().join("study");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["export", s(&gpt2), "--format", "litert", "-o", s(&out)], "the LLaMA family only"),
        (vec!["export", s(&shipped), "--format", "litert", "-o", s(&out), "--prefill", "512", "--ctx", "256"], "--ctx"),
        (vec!["eval", s(&fake), "--tokenizer", s(&shipped)], "no TFL3 identifier"),
        (vec!["eval", s(&fake)], "no TFL3 identifier"),
        (vec!["eval", s(&fake), "--tokenizer", s(&shipped), "--kld-base", s(&shipped)], "a saved base only"),
        (
            vec!["sweep", "--model", s(&shipped), "--grid", s(&quick), "--out", s(&study), "--litert"],
            "finish the sweep first",
        ),
        (vec!["generate", s(&fake), "-p", "hi", "--tokenizer", s(&shipped)], "--temp 0"),
    ];
    for (args, why) in cases {
        let o = microscale(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(why) && err.trim().lines().count() == 1, "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
}

/// Core ML: the default model (F32 GGUF) and a pruned one to ML Program packages with int8 weights,
/// read back: one `input_ids` of the traced length in, `logits` out, every linear weight (and only
/// those) stored as int8 (`constexpr_affine_dequantize`); and the PyTorch model that was converted scores the check
/// window as llama.cpp does (float32 both: 0.03% measured, 0.1% allowed). Not run: Core ML runs
/// on Apple hardware only.
#[test]
fn core_ml_packages_are_produced_and_validated() {
    let hf = common::default_model::hf_dir();
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("f32.gguf");
    ok(&["convert", s(&hf), "-o", s(&full), "--outtype", "f32", "-q"]);
    let pruned = tmp.path().join("pruned.gguf");
    ok(&["convert", s(&hf), "-o", s(&pruned), "--outtype", "f32", "--drop-layers", "4", "--prune-ffn", "0.25", "-q"]);
    // Per block: q, k, v, o, gate, up, down; and the embedding, one constant for the lookup and the
    // tied head. Nothing else: the RoPE tables stay float16.
    for (gguf, blocks) in [(&full, 30), (&pruned, 26)] {
        let out = tmp.path().join(format!("{blocks}.mlpackage"));
        let args = ["export", s(gguf), "--format", "coreml", "--seq", "64", "-o", s(&out), "--json", "-q"];
        let p: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
        assert_eq!(p["inputs"], serde_json::json!({"input_ids": [1, 64]}), "{p}");
        assert_eq!(p["outputs"], serde_json::json!({"logits": [1, 64, 49152]}), "{p}");
        assert_eq!(p["weight_ops"]["constexpr_affine_dequantize"], 7 * blocks + 1, "{p}");
        let (source, gguf_ppl) = (p["source_ppl"].as_f64().unwrap(), p["gguf_ppl"].as_f64().unwrap());
        assert!((source / gguf_ppl - 1.0).abs() < 1e-3, "converted model {source} vs llama.cpp {gguf_ppl}");
        assert!(out.join("Manifest.json").is_file() && p["package_bytes"].as_u64().unwrap() > 50 << 20, "{p}");
    }
}

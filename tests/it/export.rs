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

/// The shipped Q4_1 file to LiteRT twice: with float32 weights its perplexity equals the F32
/// GGUF's (the same weights; only the order of float sums differs between XNNPACK and ggml:
/// 0.01% measured, 0.1% allowed); with int8 weights (the default for a quantized GGUF:
/// per-channel scales) within 1%: +0.28% measured over these 4 windows (+1.05% over the first 2
/// alone), against +61% for LiteRT's symmetric int4, which a broken scale would resemble. Both
/// give llama.cpp's greedy answer.
#[test]
fn the_default_model_exported_to_litert_scores_and_answers_as_its_gguf() {
    let shipped = common::default_model::gguf();
    let tmp = tempfile::tempdir().unwrap();
    let f32_gguf = tmp.path().join("f32.gguf");
    ok(&["convert", s(&shipped), "-o", s(&f32_gguf), "--outtype", "f32", "-q"]);
    let (gguf_ppl, gguf_tokens) = ppl(&f32_gguf, None);
    let gguf_answer = answer(&shipped, None);
    assert!(gguf_answer.contains("Paris"), "{gguf_answer}");

    let float = tmp.path().join("f32.tflite");
    let e = export(&shipped, &float, &["--quantize", "none"]);
    assert_eq!(e["quantize"], "none");
    assert_eq!(std::fs::read(&float).unwrap()[4..8], *b"TFL3", "a LiteRT flatbuffer");
    let (p, tokens) = ppl(&float, Some(&shipped));
    assert_eq!(tokens, gguf_tokens, "the same windows scored");
    assert!((p / gguf_ppl - 1.0).abs() < 1e-3, "LiteRT f32 {p} vs GGUF f32 {gguf_ppl}");
    assert_eq!(answer(&float, Some(&shipped)), gguf_answer);

    let int8 = tmp.path().join("int8.tflite");
    let e = export(&shipped, &int8, &[]);
    assert_eq!(e["quantize"], "weight_only_int8", "the default for a quantized GGUF: {e}");
    assert!(e["bytes"].as_u64().unwrap() < std::fs::metadata(&float).unwrap().len() / 3, "{e}");
    let (p8, _) = ppl(&int8, Some(&shipped));
    assert!((p8 / gguf_ppl - 1.0).abs() < 1e-2 && p8 != p, "LiteRT int8 {p8} vs GGUF f32 {gguf_ppl}");
    assert_eq!(answer(&int8, Some(&shipped)), gguf_answer);
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left.len(), 3, "no scratch left beside the outputs: {left:?}");
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
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["export", s(&gpt2), "--format", "litert", "-o", s(&out)], "the LLaMA family only"),
        (vec!["export", s(&shipped), "--format", "litert", "-o", s(&out), "--prefill", "512", "--ctx", "256"], "--ctx"),
        (vec!["eval", s(&fake), "--tokenizer", s(&shipped)], "no TFL3 identifier"),
        (vec!["eval", s(&fake)], "no TFL3 identifier"),
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

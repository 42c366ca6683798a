//! `--target-size`: on the default model, with an importance matrix, the file stays within the
//! budget, stock llama.cpp loads it, and at the size of stock Q3_K_M (with the same imatrix) its
//! KL divergence against the F32 baseline is lower than stock's. An impossible budget is one
//! clear error and no file; `prune-plan` shows the chosen types first.

use crate::common;

use std::path::Path;
use std::process::Command;

fn microscale(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_microscale")).args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = microscale(args);
    assert!(out.status.success(), "microscale {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Mean KL divergence of `model` against `base` over a few windows (llama-perplexity's method).
fn kld(model: &Path, base: &Path) -> f64 {
    let json =
        ok(&["-q", "eval", model.to_str().unwrap(), "--kld-base", base.to_str().unwrap(), "--chunks", "6", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["results"]["rows"].as_array().unwrap().iter().find(|r| r["metric"] == "kld").unwrap()["value"].as_f64().unwrap()
}

#[test]
fn target_size_fits_the_budget_and_beats_the_stock_mix_of_that_size() {
    let hf = common::default_model::hf_dir();
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n);
    let s = |x: &Path| x.to_str().unwrap().to_string();
    let hf_arg = s(&hf);
    ok(&["-q", "imatrix", &hf_arg, "-o", &s(&p("imatrix.gguf")), "--chunks", "4"]);
    ok(&["-q", "convert", &hf_arg, "-o", &s(&p("f32.gguf")), "--outtype", "f32"]);
    ok(&[
        "-q",
        "stock-quantize",
        &s(&p("f32.gguf")),
        &s(&p("stock.gguf")),
        "q3_k_m",
        "--imatrix",
        &s(&p("imatrix.gguf")),
    ]);
    let budget = std::fs::metadata(p("stock.gguf")).unwrap().len();

    let plan = ok(&[
        "-q",
        "prune-plan",
        &hf_arg,
        "--outtype",
        "q3_k_m",
        "--imatrix",
        &s(&p("imatrix.gguf")),
        "--target-size",
        &budget.to_string(),
    ]);
    assert!(plan.lines().any(|l| l.starts_with("types: ")), "{plan}");
    ok(&[
        "-q",
        "convert",
        &hf_arg,
        "-o",
        &s(&p("ours.gguf")),
        "--outtype",
        "q3_k_m",
        "--imatrix",
        &s(&p("imatrix.gguf")),
        "--target-size",
        &budget.to_string(),
    ]);
    let size = std::fs::metadata(p("ours.gguf")).unwrap().len();
    assert!(size <= budget, "{size} bytes for a budget of {budget}");
    assert!(size as f64 >= 0.9 * budget as f64, "{size} bytes leave most of the budget of {budget} unused");

    let (ours, stock) = (kld(&p("ours.gguf"), &p("f32.gguf")), kld(&p("stock.gguf"), &p("f32.gguf")));
    assert!(ours < stock, "KLD {ours} at {size} bytes, stock q3_k_m {stock} at {budget}");

    // A budget below what the smallest type of every matrix takes: one line, nothing written.
    let out = microscale(&[
        "-q",
        "convert",
        &hf_arg,
        "-o",
        &s(&p("tiny.gguf")),
        "--outtype",
        "q4_k_m",
        "--target-size",
        "20MiB",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot be met") && err.lines().count() == 1, "{err}");
    assert!(!p("tiny.gguf").exists());
}

//! GPT-2 Medium end to end: a checkpoint of GPT-2 Medium's shape (24 blocks of 1024, 16 heads,
//! 4096-wide FFN, 1024 learned positions, 50,257 tokens; synthetic weights, since the real ones
//! cannot be downloaded here) with GPT-2's real tokenizer, through the whole sweep: conversion,
//! every evaluation task (perplexity, KL divergence, SST-2, ARC-Easy, ARC-Challenge — whose
//! multiple-choice batches must fit GPT-2's 1024 positions), pruning with calibration,
//! quantization, llama.cpp's own quant of the baseline, and the benchmark.

use crate::common;

use common::synth::{self, SynthDtype, SynthSpec};
use microscale::record::results::{read_results, Status};
use std::path::Path;
use std::process::Command;

/// GPT-2 Medium's config (openai-community/gpt2-medium), weights synthetic.
fn gpt2_medium() -> SynthSpec {
    SynthSpec {
        n_layer: 24,
        n_embd: 1024,
        n_head: 16,
        n_head_kv: 16,
        n_ff: 4096,
        n_ctx: 1024,
        vocab_size: 50257,
        dtype: SynthDtype::BF16,
        seed: 355,
        extra_config: serde_json::json!({"bos_token_id": 50256, "eos_token_id": 50256}),
        ..SynthSpec::tiny_gpt2()
    }
}

/// GPT-2's own tokenizer files, from the project's data folder.
fn copy_gpt2_tokenizer(dir: &Path) {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/gpt2-tokenizer");
    for f in ["vocab.json", "merges.txt"] {
        std::fs::copy(data.join(f), dir.join(f)).unwrap();
    }
}

const GRID: &str = r#"
[eval]
ppl_chunks = 1
kld_chunks = 1
tasks = ["sst2", "arc-easy", "arc-challenge"]
limit = 6

[bench]
profiles = ["host"]
reps = 1
pp = 32
tg = 4

[calib]
chunks = 1

[[variant]]
quant = "q8_0"

[[variant]]
quant = "q4_k_m"
method = "ffn"
ratio = 0.25

[[variant]]
quant = "q8_0"
method = "wanda"
ratio = 0.5

[stock]
quants = ["q4_k_m"]
"#;

#[test]
fn a_gpt2_medium_shaped_checkpoint_runs_every_task_the_bench_and_the_sweep() {
    let tmp = tempfile::tempdir().unwrap();
    let hf = tmp.path().join("gpt2-medium");
    synth::write_gpt2_weights(&hf, &gpt2_medium()).unwrap();
    copy_gpt2_tokenizer(&hf);
    let grid = tmp.path().join("gpt2.toml");
    std::fs::write(&grid, GRID).unwrap();
    let out = tmp.path().join("out");
    let run = Command::new(env!("CARGO_BIN_EXE_microscale"))
        .args(["sweep", "-q", "--threads", "2", "--model"])
        .arg(&hf)
        .arg("--grid")
        .arg(&grid)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));

    let results = read_results(&out.join("results.csv")).unwrap();
    let names: Vec<&str> = results.variants.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names.len(), 5, "baseline, three variants and the stock quant: {names:?}");
    for v in &results.variants {
        assert_eq!(v.status, "ok", "{}: {:?}", v.name, v.error);
        let ppl = v.ppl.as_ref().map_or(f64::NAN, |m| m.value);
        assert!(ppl.is_finite() && ppl > 1.0, "{}: perplexity {ppl}", v.name);
        for column in ["sst2_acc", "arc_easy_acc", "arc_easy_acc_norm", "arc_challenge_acc", "arc_challenge_acc_norm"] {
            let acc = v.acc.get(column).map_or(f64::NAN, |m| m.value);
            assert!((0.0..=1.0).contains(&acc), "{}: {column} {acc}", v.name);
        }
        let host = &v.bench["host"];
        assert_eq!(host.status, Some(Status::Fits), "{}", v.name);
        assert!(host.pp_tps.unwrap() > 0.0 && host.tg_tps.unwrap() > 0.0, "{}", v.name);
        if !v.name.starts_with("baseline") {
            let kld = v.kld.as_ref().map_or(f64::NAN, |m| m.value);
            assert!(kld.is_finite() && kld >= 0.0, "{}: KL divergence {kld}", v.name);
        }
    }
}

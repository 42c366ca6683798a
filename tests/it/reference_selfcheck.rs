//! Self-checks for the test support code in `tests/common/`.

use crate::common;

use common::reference::{gpt2_forward, llama_forward, load_tensors, softmax_rows};
use common::synth::*;

const TOKENS: [u32; 6] = [EOT_ID, 265, 17, 220, 100, 270];

fn check_logits(logits: &[Vec<f32>], n_tokens: usize) {
    assert_eq!(logits.len(), n_tokens);
    let mut max_abs = 0f32;
    for row in logits {
        assert_eq!(row.len(), TINY_VOCAB_SIZE);
        assert!(row.iter().all(|v| v.is_finite()));
        max_abs = row.iter().fold(max_abs, |m, v| m.max(v.abs()));
    }
    assert!((0.5..50.0).contains(&max_abs), "logit magnitude out of range: {max_abs}");
    for row in softmax_rows(logits) {
        let s: f32 = row.iter().sum();
        assert!(row.iter().all(|v| v.is_finite()));
        assert!((s - 1.0).abs() < 1e-4, "softmax sum {s}");
        // Not saturated: no single token takes (almost) all the mass.
        let top = row.iter().cloned().fold(0f32, f32::max);
        assert!(top < 0.99, "saturated softmax: {top}");
    }
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter().zip(b).flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs())).fold(0f32, f32::max)
}

#[test]
fn tiny_vocab_layout() {
    let v = tiny_vocab();
    assert_eq!(v.len(), TINY_VOCAB_SIZE);
    assert_eq!(TINY_VOCAB_SIZE, 297);
    assert_eq!(EOT_ID, 296);
    assert_eq!(v[EOT_ID as usize], EOT_TOKEN);
    // GPT-2 byte-level order.
    assert_eq!(v[0], "!");
    assert_eq!(v[220], "Ġ");
    assert_eq!(v[188], "Ā");
    assert_eq!(v[265], "Ġthe");

    let dir = tempfile::tempdir().unwrap();
    write_hf_tokenizer(dir.path()).unwrap();
    let tok = tokenizers::Tokenizer::from_file(dir.path().join("tokenizer.json")).unwrap();
    assert_eq!(tok.get_vocab_size(true), TINY_VOCAB_SIZE);
    let enc = tok.encode(" the cat<|endoftext|>", false).unwrap();
    let ids = enc.get_ids();
    assert_eq!(ids[0], 265);
    assert_eq!(*ids.last().unwrap(), EOT_ID);
    assert_eq!(tok.decode(ids, false).unwrap(), " the cat<|endoftext|>");
}

#[test]
fn llama_checkpoint_roundtrip_and_forward() {
    let spec = SynthSpec::tiny_llama();
    let dir = tempfile::tempdir().unwrap();
    write_llama_checkpoint(dir.path(), &spec).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
    let t = load_tensors(dir.path()).unwrap();
    assert_eq!(t.len(), 1 + 9 * spec.n_layer + 1 + 1);
    assert_eq!(t["model.embed_tokens.weight"].shape, vec![TINY_VOCAB_SIZE, 64]);
    assert_eq!(t["model.layers.1.self_attn.k_proj.weight"].shape, vec![32, 64]);
    let expected = llama_tensors(&spec).unwrap();
    for e in &expected {
        assert_eq!(t[&e.name].data, e.data, "{}", e.name);
    }

    let a = llama_forward(dir.path(), &TOKENS).unwrap();
    check_logits(&a, TOKENS.len());
    // Deterministic: same seed, fresh directory.
    let dir2 = tempfile::tempdir().unwrap();
    write_llama_checkpoint(dir2.path(), &spec).unwrap();
    assert_eq!(a, llama_forward(dir2.path(), &TOKENS).unwrap());
    // Causal: changing a later token leaves earlier positions unchanged.
    let mut other = TOKENS;
    other[3] = 5;
    let b = llama_forward(dir.path(), &other).unwrap();
    assert_eq!(a[..3], b[..3]);
    assert!(max_diff(&a[3..], &b[3..]) > 1e-4);
    // A different seed gives different logits.
    let dir3 = tempfile::tempdir().unwrap();
    write_llama_checkpoint(dir3.path(), &SynthSpec { seed: 43, ..spec }).unwrap();
    assert!(max_diff(&a, &llama_forward(dir3.path(), &TOKENS).unwrap()) > 1e-3);
}

#[test]
fn llama_sharded_tied_half() {
    let spec = SynthSpec { tied_embeddings: true, dtype: SynthDtype::F16, ..SynthSpec::tiny_llama() };
    let single = tempfile::tempdir().unwrap();
    write_llama_checkpoint(single.path(), &spec).unwrap();
    let sharded = tempfile::tempdir().unwrap();
    write_sharded_llama_checkpoint(sharded.path(), &spec, 3).unwrap();
    for i in 1..=3 {
        let f = format!("model-{i:05}-of-00003.safetensors");
        assert!(sharded.path().join(f).exists());
    }
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sharded.path().join("model.safetensors.index.json")).unwrap())
            .unwrap();
    let n_params = 1 + 9 * spec.n_layer + 1; // tied: no lm_head
    assert_eq!(index["weight_map"].as_object().unwrap().len(), n_params);
    let total: u64 = llama_tensors(&spec).unwrap().iter().map(|t| 2 * t.data.len() as u64).sum();
    assert_eq!(index["metadata"]["total_size"].as_u64().unwrap(), total);
    let t = load_tensors(sharded.path()).unwrap();
    assert_eq!(t.len(), n_params);
    assert!(!t.contains_key("lm_head.weight"));

    let a = llama_forward(single.path(), &TOKENS).unwrap();
    let b = llama_forward(sharded.path(), &TOKENS).unwrap();
    check_logits(&a, TOKENS.len());
    assert_eq!(a, b);
}

#[test]
fn gpt2_checkpoint_and_forward() {
    for dtype in [SynthDtype::F32, SynthDtype::BF16] {
        let spec = SynthSpec { dtype, ..SynthSpec::tiny_gpt2() };
        let dir = tempfile::tempdir().unwrap();
        write_gpt2_checkpoint(dir.path(), &spec).unwrap();
        let merges = std::fs::read_to_string(dir.path().join("merges.txt")).unwrap();
        assert!(merges.starts_with("#version: 0.2\n"));
        assert_eq!(merges.lines().count(), 1 + TINY_MERGES.len());
        let vocab: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("vocab.json")).unwrap()).unwrap();
        assert_eq!(vocab.as_object().unwrap().len(), TINY_VOCAB_SIZE);
        assert_eq!(vocab[EOT_TOKEN], EOT_ID);

        let t = load_tensors(dir.path()).unwrap();
        assert_eq!(t["transformer.h.0.attn.c_attn.weight"].shape, vec![64, 192]);
        assert_eq!(t["transformer.h.0.mlp.c_fc.weight"].shape, vec![64, 256]);
        assert_eq!(t["transformer.h.1.attn.bias"].shape, vec![1, 1, 128, 128]);
        assert_eq!(t["transformer.h.1.attn.masked_bias"].shape, Vec::<usize>::new());
        assert_eq!(t["transformer.h.1.attn.masked_bias"].data, vec![-1e4]);
        assert!(!t.contains_key("lm_head.weight"));

        let a = gpt2_forward(dir.path(), &TOKENS).unwrap();
        check_logits(&a, TOKENS.len());
        assert_eq!(a, gpt2_forward(dir.path(), &TOKENS).unwrap());
        let mut other = TOKENS;
        other[1] = 3;
        let b = gpt2_forward(dir.path(), &other).unwrap();
        assert_eq!(a[0], b[0]);
        assert!(max_diff(&a[1..], &b[1..]) > 1e-4);
    }
}

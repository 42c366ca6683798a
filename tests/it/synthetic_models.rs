//! Synthetic GPT-2 and LLaMA checkpoints, written as Hugging Face directories, converted to GGUF and
//! run in llama.cpp; the logits must match an independent forward pass in Hugging Face semantics.
//! This is what proves transposes, Q/K permutations, biases, GQA and tied embeddings right.

use crate::common;

use common::reference::{gpt2_forward, llama_forward};
use common::synth::{self, SynthDtype, SynthSpec};
use microscale::convert::{convert, ConvertOptions};
use microscale::engine::Model;
use microscale::quant::mix::Scheme;
use std::path::Path;

/// A prompt over the tiny vocabulary: byte tokens, merged tokens and the special token.
const PROMPT: [i32; 24] =
    [265, 71, 220, 80, 256, 257, 66, 220, 90, 91, 270, 84, 72, 220, 260, 261, 69, 296, 65, 220, 75, 280, 77, 83];

fn llama_cpp_logits(gguf: &Path, tokens: &[i32]) -> Vec<f32> {
    let model = Model::load(gguf).unwrap();
    // Full precision (F32 KV cache, no flash attention): differences are then float rounding only.
    let mut session = model.session_f32(128, 2).unwrap();
    session.logits(tokens, 0).unwrap()
}

/// Max |llama.cpp - reference| relative to the reference logits' largest magnitude.
fn relative_error(got: &[f32], want: &[Vec<f32>]) -> f64 {
    let flat: Vec<f32> = want.iter().flatten().copied().collect();
    assert_eq!(got.len(), flat.len(), "logit count");
    let scale = flat.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
    assert!(scale > 0.5, "reference logits are degenerate (scale {scale})");
    let max_diff = got.iter().zip(&flat).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) as f64;
    max_diff / scale
}

fn convert_to(dir: &Path, out: &Path, outtype: Scheme) {
    convert(dir, out, &ConvertOptions::new(outtype)).unwrap();
}

fn check_llama(spec: &SynthSpec, shards: usize, outtype: Scheme, tolerance: f64) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("llama");
    std::fs::create_dir(&dir).unwrap();
    if shards > 1 {
        synth::write_sharded_llama_checkpoint(&dir, spec, shards).unwrap();
    } else {
        synth::write_llama_checkpoint(&dir, spec).unwrap();
    }
    let gguf = tmp.path().join("llama.gguf");
    convert_to(&dir, &gguf, outtype);
    let tokens: Vec<u32> = PROMPT.iter().map(|&t| t as u32).collect();
    let want = llama_forward(&dir, &tokens).unwrap();
    let got = llama_cpp_logits(&gguf, &PROMPT);
    let err = relative_error(&got, &want);
    assert!(err < tolerance, "{spec:?} {outtype:?}: relative logit error {err:e} >= {tolerance:e}");
}

fn check_gpt2(spec: &SynthSpec, outtype: Scheme, tolerance: f64) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("gpt2");
    std::fs::create_dir(&dir).unwrap();
    synth::write_gpt2_checkpoint(&dir, spec).unwrap();
    let gguf = tmp.path().join("gpt2.gguf");
    convert_to(&dir, &gguf, outtype);
    let tokens: Vec<u32> = PROMPT.iter().map(|&t| t as u32).collect();
    let want = gpt2_forward(&dir, &tokens).unwrap();
    let got = llama_cpp_logits(&gguf, &PROMPT);
    let err = relative_error(&got, &want);
    assert!(err < tolerance, "{spec:?} {outtype:?}: relative logit error {err:e} >= {tolerance:e}");
}

#[test]
fn llama_untied_gqa_f32_matches_reference() {
    check_llama(&SynthSpec::tiny_llama(), 1, Scheme::F32, 1e-5);
}

#[test]
fn llama_tied_sharded_f16_source_matches_reference() {
    let spec = SynthSpec { tied_embeddings: true, dtype: SynthDtype::F16, seed: 3, ..SynthSpec::tiny_llama() };
    check_llama(&spec, 3, Scheme::F32, 1e-5);
}

#[test]
fn llama_bf16_source_without_gqa_matches_reference() {
    let spec = SynthSpec { n_head_kv: 4, dtype: SynthDtype::BF16, seed: 11, ..SynthSpec::tiny_llama() };
    check_llama(&spec, 1, Scheme::F32, 1e-5);
}

#[test]
fn llama_f16_output_is_close_to_reference() {
    // F16 weights round each value to 11 significant bits: a looser bound, still far below a wrong layout.
    check_llama(&SynthSpec::tiny_llama(), 1, Scheme::F16, 2e-2);
}

#[test]
fn gpt2_f32_matches_reference() {
    check_gpt2(&SynthSpec::tiny_gpt2(), Scheme::F32, 1e-3);
}

#[test]
fn gpt2_bf16_source_matches_reference() {
    let spec = SynthSpec { dtype: SynthDtype::BF16, seed: 5, ..SynthSpec::tiny_gpt2() };
    check_gpt2(&spec, Scheme::F32, 1e-3);
}

#[test]
fn gpt2_bf16_output_is_close_to_reference() {
    check_gpt2(&SynthSpec::tiny_gpt2(), Scheme::Bf16, 5e-2);
}

/// llama.cpp's tokenizer on the converted vocabulary must agree with Hugging Face's on the source.
#[test]
fn synthetic_vocabularies_tokenize_like_hugging_face() {
    let text = " the cat sat on the mat, then 42 rats ran there.\nThe end<|endoftext|>";
    for arch in ["llama", "gpt2"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(arch);
        std::fs::create_dir(&dir).unwrap();
        let hf = if arch == "llama" {
            synth::write_llama_checkpoint(&dir, &SynthSpec::tiny_llama()).unwrap();
            tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap()
        } else {
            synth::write_gpt2_checkpoint(&dir, &SynthSpec::tiny_gpt2()).unwrap();
            let json = synth::tokenizer_json();
            tokenizers::Tokenizer::from_bytes(serde_json::to_vec(&json).unwrap()).unwrap()
        };
        let gguf = tmp.path().join("m.gguf");
        convert_to(&dir, &gguf, Scheme::F32);
        let model = Model::load(&gguf).unwrap();
        // Plain text only: llama.cpp (parse_special=false) and HF treat special-token text differently.
        let plain = &text[..text.find('<').unwrap()];
        let want: Vec<i32> = hf.encode(plain, false).unwrap().get_ids().iter().map(|&i| i as i32).collect();
        assert_eq!(model.tokenize(plain, false), want, "{arch}");
        assert!(want.iter().any(|&t| t >= 256), "{arch}: the text should exercise merges");
        assert_eq!(model.meta("tokenizer.ggml.eos_token_id").as_deref(), Some("296"), "{arch}");
    }
}

// ---------------------------------------------------------------------------
// The LLaMA family as users bring it: transformers 4 and 5 configs, RoPE scaling, Mistral, Qwen2
// and Qwen3. Each runs in llama.cpp against the independent forward pass.
// ---------------------------------------------------------------------------

/// The relative logit error of `spec` converted to F32 and run in llama.cpp (its metadata checked
/// by `check_meta` first).
fn family_error(spec: &SynthSpec, check_meta: impl Fn(&microscale::gguf::GgufFile)) -> f64 {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    synth::write_llama_checkpoint(&dir, spec).unwrap();
    let gguf = tmp.path().join("model.gguf");
    convert_to(&dir, &gguf, Scheme::F32);
    check_meta(&microscale::gguf::GgufFile::open(&gguf).unwrap());
    let tokens: Vec<u32> = PROMPT.iter().map(|&t| t as u32).collect();
    let want = llama_forward(&dir, &tokens).unwrap();
    relative_error(&llama_cpp_logits(&gguf, &PROMPT), &want)
}

fn meta_f64(f: &microscale::gguf::GgufFile, key: &str) -> Option<f64> {
    f.get_f64(key)
}

#[test]
fn llama_3_2_style_head_dim_and_llama3_rope_match_reference_past_the_original_context() {
    // transformers 5's rope_parameters, an explicit head_dim wider than n_embd / n_head, tied
    // embeddings; the original context (16) is shorter than the prompt (24 positions), and with
    // head_dim 32 the frequencies fall in all three of llama3's bands (kept, smoothed, divided).
    let spec = SynthSpec {
        head_dim: Some(32),
        tied_embeddings: true,
        dtype: SynthDtype::BF16,
        seed: 31,
        extra_config: serde_json::json!({
            "rope_theta": null,
            "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                "low_freq_factor": 1.0, "high_freq_factor": 2.0,
                                "original_max_position_embeddings": 16},
        }),
        ..SynthSpec::tiny_llama()
    };
    let err = family_error(&spec, |f| {
        assert_eq!(meta_f64(f, "llama.rope.freq_base"), Some(500000.0));
        assert_eq!(f.get_u64("llama.attention.key_length"), Some(32));
        assert_eq!(f.get_u64("llama.attention.value_length"), Some(32));
        assert_eq!(f.get_u64("llama.rope.dimension_count"), Some(32));
        let freqs = f.tensor("rope_freqs.weight").expect("llama3 scaling is written as rope_freqs.weight");
        assert_eq!(freqs.ne, vec![16]);
    });
    assert!(err < 1e-4, "relative logit error {err:e}");
}

#[test]
fn llama_with_biases_and_linear_rope_scaling_matches_reference() {
    let spec = SynthSpec {
        attention_bias: true,
        mlp_bias: true,
        seed: 32,
        extra_config: serde_json::json!({"rope_theta": 20000.0, "rope_scaling": {"type": "linear", "factor": 4.0}}),
        ..SynthSpec::tiny_llama()
    };
    let err = family_error(&spec, |f| {
        assert_eq!(f.get_str("llama.rope.scaling.type"), Some("linear"));
        assert_eq!(meta_f64(f, "llama.rope.scaling.factor"), Some(4.0));
        assert!(f.tensor("blk.0.attn_output.bias").is_some() && f.tensor("blk.1.ffn_down.bias").is_some());
    });
    assert!(err < 1e-4, "relative logit error {err:e}");
}

#[test]
fn mistral_matches_reference() {
    let spec = SynthSpec {
        arch: "MistralForCausalLM",
        seed: 33,
        extra_config: serde_json::json!({"rope_theta": 1000000.0, "sliding_window": null}),
        ..SynthSpec::tiny_llama()
    };
    let err = family_error(&spec, |f| {
        assert_eq!(f.architecture().unwrap(), "llama");
        assert_eq!(meta_f64(f, "llama.rope.freq_base"), Some(1000000.0));
    });
    assert!(err < 1e-4, "relative logit error {err:e}");
}

#[test]
fn qwen2_with_qkv_biases_and_yarn_matches_reference() {
    // Qwen2's configs carry a sliding_window that only applies with use_sliding_window.
    let spec = SynthSpec {
        arch: "Qwen2ForCausalLM",
        tied_embeddings: true,
        seed: 34,
        extra_config: serde_json::json!({
            "rope_theta": 1000000.0, "use_sliding_window": false, "sliding_window": 4096,
            "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
        }),
        ..SynthSpec::tiny_llama()
    };
    let err = family_error(&spec, |f| {
        assert_eq!(f.architecture().unwrap(), "qwen2");
        assert_eq!(f.get_str("qwen2.rope.scaling.type"), Some("yarn"));
        assert_eq!(f.get_u64("qwen2.rope.scaling.original_context_length"), Some(16));
        assert!(f.tensor("blk.0.attn_q.bias").is_some());
    });
    assert!(err < 1e-4, "relative logit error {err:e}");
}

#[test]
fn qwen3_with_qk_norms_and_head_dim_matches_reference() {
    let spec = SynthSpec {
        arch: "Qwen3ForCausalLM",
        head_dim: Some(32),
        seed: 35,
        extra_config: serde_json::json!({"rope_theta": null, "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}}),
        ..SynthSpec::tiny_llama()
    };
    let err = family_error(&spec, |f| {
        assert_eq!(f.architecture().unwrap(), "qwen3");
        assert_eq!(f.tensor("blk.1.attn_k_norm.weight").map(|t| t.ne.clone()), Some(vec![32]));
        assert_eq!(f.get_u64("qwen3.attention.key_length"), Some(32));
    });
    assert!(err < 1e-4, "relative logit error {err:e}");
}

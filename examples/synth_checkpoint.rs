//! Write a synthetic LLaMA-shaped Hugging Face checkpoint of any size, streaming (one tensor in
//! memory at a time), for scale benchmarks: conversion speed and memory do not depend on the values.
//!
//! `cargo run --release --example synth_checkpoint -- --shape 1b --dtype bf16 -o /tmp/llama-1b`
//! Shapes: `1b` (TinyLlama-1.1B: 22 layers, 2048 wide, GQA 32/4, FFN 5632, vocab 32000) and `7b`
//! (LLaMA-2-7B: 32 layers, 4096 wide, 32 heads, FFN 11008, vocab 32000). The vocabulary is the 256
//! byte-level symbols plus `<|endoftext|>` (the remaining ids become llama.cpp `[PAD]` tokens), or,
//! with `--vocab FILE.gguf`, a real one: e.g. llama.cpp's `ggml-vocab-llama-spm.gguf` (LLaMA-2's
//! SentencePiece vocabulary, written as tokenizer.model + tokenizer.json + tokenizer_config.json).
//! `--layers N` keeps the shape's widths with N blocks (one 7B block, to measure per-block costs).

use anyhow::{bail, Result};
use microscale::convert::safetensors_writer::SafetensorsWriter;
use microscale::quant::quantize;
use microscale::quant::GgmlType;
use microscale::tokenizer::export::tokenizer_json;
use microscale::util::rng::XorShift64;
use rayon::prelude::*;
use serde_json::json;
use std::collections::HashMap;
use std::path::PathBuf;

struct Shape {
    n_layer: usize,
    n_embd: usize,
    n_head: usize,
    n_head_kv: usize,
    n_ff: usize,
    vocab: usize,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let mut shape = match get("--shape").as_deref().unwrap_or("1b") {
        "1b" => Shape { n_layer: 22, n_embd: 2048, n_head: 32, n_head_kv: 4, n_ff: 5632, vocab: 32000 },
        "7b" => Shape { n_layer: 32, n_embd: 4096, n_head: 32, n_head_kv: 32, n_ff: 11008, vocab: 32000 },
        other => bail!("unknown shape {other:?} (1b or 7b)"),
    };
    if let Some(n) = get("--layers") {
        shape.n_layer = n
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| anyhow::anyhow!("--layers {n:?}: a count of at least 1"))?;
    }
    let dtype = match get("--dtype").as_deref().unwrap_or("bf16") {
        "bf16" => GgmlType::BF16,
        "f16" => GgmlType::F16,
        "f32" => GgmlType::F32,
        other => bail!("unknown dtype {other:?}"),
    };
    let Some(out) = get("-o").map(PathBuf::from) else {
        bail!("usage: synth_checkpoint --shape 1b|7b [--layers N] --dtype bf16 [--vocab FILE.gguf] -o DIR")
    };
    std::fs::create_dir_all(&out)?;

    let s = &shape;
    let kv = s.n_embd / s.n_head * s.n_head_kv;
    let mut tensors: Vec<(String, Vec<usize>)> = vec![
        ("lm_head.weight".into(), vec![s.vocab, s.n_embd]),
        ("model.embed_tokens.weight".into(), vec![s.vocab, s.n_embd]),
        ("model.norm.weight".into(), vec![s.n_embd]),
    ];
    for l in 0..s.n_layer {
        let p = format!("model.layers.{l}");
        tensors.extend([
            (format!("{p}.input_layernorm.weight"), vec![s.n_embd]),
            (format!("{p}.mlp.down_proj.weight"), vec![s.n_embd, s.n_ff]),
            (format!("{p}.mlp.gate_proj.weight"), vec![s.n_ff, s.n_embd]),
            (format!("{p}.mlp.up_proj.weight"), vec![s.n_ff, s.n_embd]),
            (format!("{p}.post_attention_layernorm.weight"), vec![s.n_embd]),
            (format!("{p}.self_attn.k_proj.weight"), vec![kv, s.n_embd]),
            (format!("{p}.self_attn.o_proj.weight"), vec![s.n_embd, s.n_embd]),
            (format!("{p}.self_attn.q_proj.weight"), vec![s.n_embd, s.n_embd]),
            (format!("{p}.self_attn.v_proj.weight"), vec![kv, s.n_embd]),
        ]);
    }
    let headers: Vec<_> = tensors.iter().map(|(n, sh)| (n.clone(), sh.clone(), dtype)).collect();
    let mut writer = SafetensorsWriter::create(&out.join("model.safetensors"), &headers)?;
    for (i, (name, sh)) in tensors.iter().enumerate() {
        let n: usize = sh.iter().product();
        let std = if sh.len() == 1 { 0.0 } else { 1.0 / (*sh.last().unwrap() as f32).sqrt() };
        let values = random_values(n, i as u64, std, if sh.len() == 1 { 1.0 } else { 0.0 });
        writer.write_tensor(name, &quantize(dtype, &values, *sh.last().unwrap())?)?;
    }
    writer.finish()?;

    let (bos, eos) = match get("--vocab") {
        Some(file) => write_vocab_file(&PathBuf::from(file), &out, s.vocab)?,
        None => {
            let mut vocab: HashMap<String, u32> = HashMap::new();
            for (i, c) in byte_level_symbols().into_iter().enumerate() {
                vocab.insert(c, i as u32);
            }
            vocab.insert("<|endoftext|>".into(), 256);
            let tok = tokenizer_json(&vocab, &[], &[(256, "<|endoftext|>".into(), true)], "gpt-2", None)?;
            std::fs::write(out.join("tokenizer.json"), serde_json::to_vec_pretty(&tok)?)?;
            (256, 256)
        }
    };
    let config = json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": s.n_embd, "intermediate_size": s.n_ff, "num_hidden_layers": s.n_layer,
        "num_attention_heads": s.n_head, "num_key_value_heads": s.n_head_kv, "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false, "vocab_size": s.vocab,
        "bos_token_id": bos, "eos_token_id": eos,
        "torch_dtype": match dtype { GgmlType::BF16 => "bfloat16", GgmlType::F16 => "float16", _ => "float32" },
    });
    std::fs::write(out.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// The tokenizer files of a GGUF's vocabulary (its `tokenizer.*` keys); returns (bos, eos).
fn write_vocab_file(file: &std::path::Path, out: &std::path::Path, vocab_size: usize) -> Result<(u32, u32)> {
    let gguf = microscale::gguf::GgufFile::open(file)?;
    let vocab = microscale::tokenizer::Vocab::from_metadata(&gguf.metadata)?;
    if vocab.tokens.len() != vocab_size {
        bail!("{}: {} tokens, the shape has {vocab_size}", file.display(), vocab.tokens.len());
    }
    microscale::tokenizer::export::write_hf_tokenizer(&vocab, out)?;
    Ok((vocab.special_id("bos").unwrap_or(0), vocab.special_id("eos").unwrap_or(0)))
}

/// Uniform values with the given standard deviation around `mean`, from a fast per-chunk generator.
fn random_values(n: usize, seed: u64, std: f32, mean: f32) -> Vec<f32> {
    let mut v = vec![0f32; n];
    let half_width = std * 3f32.sqrt();
    v.par_chunks_mut(1 << 16).enumerate().for_each(|(c, chunk)| {
        let mut rng = XorShift64::new(
            seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (c as u64).wrapping_mul(0xD1B5_4A32_D192_ED03) | 1,
        );
        for y in chunk {
            *y = mean + (2.0 * rng.next_f32() - 1.0) * half_width;
        }
    });
    v
}

/// GPT-2's byte-to-unicode table, in byte order.
fn byte_level_symbols() -> Vec<String> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut extra = 0;
    (0u32..256)
        .map(|b| {
            let cp = if printable(b) {
                b
            } else {
                extra += 1;
                255 + extra
            };
            char::from_u32(cp).unwrap().to_string()
        })
        .collect()
}

//! GPT-2 (`GPT2LMHeadModel`): Conv1D weights stored [in, out] and transposed for ggml, the fused
//! `c_attn` kept as `attn_qkv`, biases, learned `position_embd`, and the `attn.bias` /
//! `attn.masked_bias` buffers dropped. The output head is tied to `wte`: like llama.cpp's converter we
//! write no `output.weight`, and llama.cpp reuses `token_embd`.
//!
//! One deliberate difference: `gpt2.feed_forward_length` is the checkpoint's `n_inner` when set (the
//! converter always writes 4·n_embd), so checkpoints with narrower FFNs, pruned ones included, load.

use super::{
    config_opt_usize, config_positive_f64, config_usize, expect_shape, ConversionPlan, PlannedTensor, Transform,
};
use crate::gguf::{GgufValue, Metadata};
use crate::source::{HfCheckpoint, TensorSource};
use crate::util::tensor_name;
use anyhow::{bail, Result};

#[derive(Clone, Debug)]
pub struct Gpt2Params {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_ctx: usize,
    pub vocab_size: usize,
    pub norm_eps: f64,
}

impl Gpt2Params {
    pub fn from_config(ckpt: &HfCheckpoint) -> Result<Gpt2Params> {
        let c = &ckpt.config;
        let n_embd = config_usize(c, &["n_embd", "hidden_size"], ckpt)?;
        let p = Gpt2Params {
            n_layer: config_usize(c, &["n_layer", "num_hidden_layers"], ckpt)?,
            n_embd,
            // GPT-2's config has "n_inner": null, meaning 4 * n_embd.
            n_ff: config_opt_usize(c, "n_inner", ckpt)?.unwrap_or(4 * n_embd),
            n_head: config_usize(c, &["n_head", "num_attention_heads"], ckpt)?,
            n_ctx: config_usize(c, &["n_ctx", "n_positions"], ckpt)?,
            vocab_size: config_usize(c, &["vocab_size"], ckpt)?,
            norm_eps: config_positive_f64(c, "layer_norm_epsilon", 1e-5, ckpt)?,
        };
        if !p.n_embd.is_multiple_of(p.n_head) {
            bail!(
                "{}: n_embd {} is not divisible by n_head {}",
                ckpt.dir.join("config.json").display(),
                p.n_embd,
                p.n_head
            );
        }
        Ok(p)
    }

    /// The `gpt2.*` keys and `general.file_type`, in the converter's order.
    pub fn metadata(&self, file_type: u32) -> Metadata {
        vec![
            ("gpt2.block_count".into(), GgufValue::U32(self.n_layer as u32)),
            ("gpt2.context_length".into(), GgufValue::U32(self.n_ctx as u32)),
            ("gpt2.embedding_length".into(), GgufValue::U32(self.n_embd as u32)),
            ("gpt2.feed_forward_length".into(), GgufValue::U32(self.n_ff as u32)),
            ("gpt2.attention.head_count".into(), GgufValue::U32(self.n_head as u32)),
            ("gpt2.attention.layer_norm_epsilon".into(), GgufValue::F32(self.norm_eps as f32)),
            ("general.file_type".into(), GgufValue::U32(file_type)),
        ]
    }
}

/// Hugging Face name within a block → GGUF name, and whether it is a Conv1D weight to transpose.
const LAYER_TENSORS: [(&str, &str, bool); 12] = [
    ("ln_1.weight", "attn_norm.weight", false),
    ("ln_1.bias", "attn_norm.bias", false),
    ("attn.c_attn.weight", "attn_qkv.weight", true),
    ("attn.c_attn.bias", "attn_qkv.bias", false),
    ("attn.c_proj.weight", "attn_output.weight", true),
    ("attn.c_proj.bias", "attn_output.bias", false),
    ("ln_2.weight", "ffn_norm.weight", false),
    ("ln_2.bias", "ffn_norm.bias", false),
    ("mlp.c_fc.weight", "ffn_up.weight", true),
    ("mlp.c_fc.bias", "ffn_up.bias", false),
    ("mlp.c_proj.weight", "ffn_down.weight", true),
    ("mlp.c_proj.bias", "ffn_down.bias", false),
];

const GLOBAL_TENSORS: [(&str, &str); 4] = [
    ("wte.weight", "token_embd.weight"),
    ("wpe.weight", "position_embd.weight"),
    ("ln_f.weight", "output_norm.weight"),
    ("ln_f.bias", "output_norm.bias"),
];

/// Map a Hugging Face GPT-2 tensor name (with or without the `transformer.` prefix) to llama.cpp's.
pub fn gguf_name(hf: &str) -> Option<(String, bool)> {
    let name = hf.strip_prefix("transformer.").unwrap_or(hf);
    if let Some(rest) = name.strip_prefix("h.") {
        let (layer, part) = rest.split_once('.')?;
        let layer: usize = layer.parse().ok()?;
        let (_, g, transpose) = LAYER_TENSORS.iter().find(|(h, _, _)| *h == part)?;
        return Some((tensor_name::name(layer, g), *transpose));
    }
    let (_, g) = GLOBAL_TENSORS.iter().find(|(h, _)| *h == name)?;
    Some((g.to_string(), false))
}

/// Map a llama.cpp GPT-2 tensor name back to Hugging Face's (`transformer.` prefix).
pub fn hf_name(gguf: &str) -> Option<(String, bool)> {
    if let Some((layer, part)) = tensor_name::split(gguf) {
        let (h, _, transpose) = LAYER_TENSORS.iter().find(|(_, g, _)| *g == part)?;
        return Some((format!("transformer.h.{layer}.{h}"), *transpose));
    }
    let (h, _) = GLOBAL_TENSORS.iter().find(|(_, g)| *g == gguf)?;
    Some((format!("transformer.{h}"), false))
}

fn is_buffer(name: &str) -> bool {
    name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias")
}

pub fn plan(ckpt: &HfCheckpoint, file_type: u32) -> Result<ConversionPlan> {
    let p = Gpt2Params::from_config(ckpt)?;
    let prefix = if ckpt.tensor("transformer.wte.weight").is_some() { "transformer." } else { "" };
    expect_shape(ckpt, &format!("{prefix}wte.weight"), &[p.vocab_size, p.n_embd])?;
    for l in 0..p.n_layer {
        expect_shape(ckpt, &format!("{prefix}h.{l}.attn.c_attn.weight"), &[p.n_embd, 3 * p.n_embd])?;
        expect_shape(ckpt, &format!("{prefix}h.{l}.mlp.c_fc.weight"), &[p.n_embd, p.n_ff])?;
    }

    let mut sources: Vec<&str> = ckpt.tensors().iter().map(|t| t.name.as_str()).collect();
    sources.sort_unstable();
    let mut tensors = Vec::new();
    for src in sources {
        // lm_head is tied to wte in GPT-2 (some checkpoints store the copy; it is the same tensor).
        if is_buffer(src) || src == "lm_head.weight" {
            continue;
        }
        let Some((name, transpose)) = gguf_name(src) else {
            bail!("{}: cannot map tensor {src:?} to a llama.cpp tensor", ckpt.location(src));
        };
        let info = ckpt.tensor(src).expect("listed");
        let (shape, transform) = if transpose {
            (vec![info.shape[1], info.shape[0]], Transform::Transpose)
        } else {
            (info.shape.clone(), Transform::Copy)
        };
        tensors.push(PlannedTensor::new(name, src.to_string(), shape, transform));
    }
    Ok(ConversionPlan {
        arch: "gpt2",
        hparams: p.metadata(file_type),
        tensors,
        vocab_size: p.vocab_size,
        vocab_style: crate::tokenizer::hf::VocabStyle::Gpt2,
        generated: vec![],
    })
}

//! LLaMA family (`LlamaForCausalLM`): GQA, tied or untied embeddings, RoPE theta, RMS norm eps.

use super::{
    config_bool, config_opt_usize, config_positive_f64, config_usize, expect_shape, ConversionPlan, PlannedTensor,
    Transform,
};
use crate::gguf::{GgufValue, Metadata};
use crate::source::{HfCheckpoint, TensorSource};
use anyhow::{bail, Result};

/// Hyper-parameters read from config.json.
#[derive(Clone, Debug)]
pub struct LlamaParams {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_ctx: usize,
    pub vocab_size: usize,
    pub rms_eps: f64,
    pub rope_theta: f64,
    pub tied: bool,
}

impl LlamaParams {
    pub fn from_config(ckpt: &HfCheckpoint) -> Result<LlamaParams> {
        let c = &ckpt.config;
        let n_head = config_usize(c, &["num_attention_heads"], ckpt)?;
        let p = LlamaParams {
            n_layer: config_usize(c, &["num_hidden_layers"], ckpt)?,
            n_embd: config_usize(c, &["hidden_size"], ckpt)?,
            n_ff: config_usize(c, &["intermediate_size"], ckpt)?,
            n_head,
            n_head_kv: config_opt_usize(c, "num_key_value_heads", ckpt)?.unwrap_or(n_head),
            n_ctx: config_usize(c, &["max_position_embeddings"], ckpt)?,
            vocab_size: config_usize(c, &["vocab_size"], ckpt)?,
            rms_eps: config_positive_f64(c, "rms_norm_eps", 1e-6, ckpt)?,
            rope_theta: config_positive_f64(c, "rope_theta", 10000.0, ckpt)?,
            tied: match config_bool(c, "tie_word_embeddings", ckpt)? {
                Some(t) => t,
                None => ckpt.tensor("lm_head.weight").is_none(),
            },
        };
        if !p.n_embd.is_multiple_of(p.n_head)
            || !p.n_head.is_multiple_of(p.n_head_kv)
            || !(p.n_embd / p.n_head).is_multiple_of(2)
        {
            bail!(
                "{}: inconsistent heads: hidden_size {} with {} query and {} key/value heads (each head's width must be even for RoPE)",
                ckpt.dir.join("config.json").display(),
                p.n_embd,
                p.n_head,
                p.n_head_kv
            );
        }
        Ok(p)
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// The `llama.*` keys in the order `convert_hf_to_gguf.py` writes them.
    pub fn metadata(&self) -> Metadata {
        vec![
            ("llama.block_count".into(), GgufValue::U32(self.n_layer as u32)),
            ("llama.context_length".into(), GgufValue::U32(self.n_ctx as u32)),
            ("llama.embedding_length".into(), GgufValue::U32(self.n_embd as u32)),
            ("llama.feed_forward_length".into(), GgufValue::U32(self.n_ff as u32)),
            ("llama.attention.head_count".into(), GgufValue::U32(self.n_head as u32)),
            ("llama.attention.head_count_kv".into(), GgufValue::U32(self.n_head_kv as u32)),
            ("llama.rope.freq_base".into(), GgufValue::F32(self.rope_theta as f32)),
            ("llama.attention.layer_norm_rms_epsilon".into(), GgufValue::F32(self.rms_eps as f32)),
            ("llama.vocab_size".into(), GgufValue::U32(self.vocab_size as u32)),
            ("llama.rope.dimension_count".into(), GgufValue::U32(self.head_dim() as u32)),
        ]
    }
}

/// Hugging Face name suffix within a layer → GGUF name suffix.
pub const LAYER_TENSORS: [(&str, &str); 9] = [
    ("input_layernorm", "attn_norm"),
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("post_attention_layernorm", "ffn_norm"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
];

const GLOBAL_TENSORS: [(&str, &str); 3] =
    [("model.embed_tokens", "token_embd"), ("model.norm", "output_norm"), ("lm_head", "output")];

/// Map a Hugging Face tensor name to llama.cpp's, or None for tensors llama.cpp does not use.
pub fn gguf_name(hf: &str) -> Option<String> {
    let (stem, kind) = hf.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    if let Some(rest) = stem.strip_prefix("model.layers.") {
        let (layer, part) = rest.split_once('.')?;
        let layer: usize = layer.parse().ok()?;
        let (_, g) = LAYER_TENSORS.iter().find(|(h, _)| *h == part)?;
        return Some(format!("blk.{layer}.{g}.{kind}"));
    }
    let (_, g) = GLOBAL_TENSORS.iter().find(|(h, _)| *h == stem)?;
    Some(format!("{g}.{kind}"))
}

/// Map a llama.cpp tensor name back to the Hugging Face one.
pub fn hf_name(gguf: &str) -> Option<String> {
    let (stem, kind) = gguf.rsplit_once('.')?;
    if let Some(rest) = stem.strip_prefix("blk.") {
        let (layer, part) = rest.split_once('.')?;
        let layer: usize = layer.parse().ok()?;
        let (h, _) = LAYER_TENSORS.iter().find(|(_, g)| *g == part)?;
        return Some(format!("model.layers.{layer}.{h}.{kind}"));
    }
    let (h, _) = GLOBAL_TENSORS.iter().find(|(_, g)| *g == stem)?;
    Some(format!("{h}.{kind}"))
}

pub fn plan(ckpt: &HfCheckpoint) -> Result<ConversionPlan> {
    let p = LlamaParams::from_config(ckpt)?;
    let kv_dim = p.head_dim() * p.n_head_kv;
    expect_shape(ckpt, "model.embed_tokens.weight", &[p.vocab_size, p.n_embd])?;
    for l in 0..p.n_layer {
        let w = |s: &str| format!("model.layers.{l}.{s}.weight");
        expect_shape(ckpt, &w("self_attn.q_proj"), &[p.n_embd, p.n_embd])?;
        expect_shape(ckpt, &w("self_attn.k_proj"), &[kv_dim, p.n_embd])?;
        expect_shape(ckpt, &w("self_attn.v_proj"), &[kv_dim, p.n_embd])?;
        expect_shape(ckpt, &w("mlp.gate_proj"), &[p.n_ff, p.n_embd])?;
        expect_shape(ckpt, &w("mlp.down_proj"), &[p.n_embd, p.n_ff])?;
    }
    if !p.tied {
        expect_shape(ckpt, "lm_head.weight", &[p.vocab_size, p.n_embd])?;
    }

    let mut sources: Vec<&str> = ckpt.tensors().iter().map(|t| t.name.as_str()).collect();
    sources.sort_unstable();
    let mut tensors = Vec::new();
    for src in sources {
        if src.ends_with("rotary_emb.inv_freq") || (p.tied && src == "lm_head.weight") {
            continue;
        }
        let Some(name) = gguf_name(src) else {
            bail!("{}: cannot map tensor {src:?} to a llama.cpp tensor", ckpt.location(src));
        };
        let info = ckpt.tensor(src).expect("listed");
        let transform = if name.contains(".attn_q.") {
            Transform::PermuteQk { n_head: p.n_head }
        } else if name.contains(".attn_k.") {
            Transform::PermuteQk { n_head: p.n_head_kv }
        } else {
            Transform::Copy
        };
        tensors.push(PlannedTensor::new(name, src.to_string(), info.shape.clone(), transform));
    }
    Ok(ConversionPlan { arch: "llama", hparams: p.metadata(), tensors, vocab_size: p.vocab_size })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for hf in [
            "model.layers.12.self_attn.k_proj.weight",
            "model.embed_tokens.weight",
            "lm_head.weight",
            "model.norm.weight",
        ] {
            let g = gguf_name(hf).unwrap();
            assert_eq!(hf_name(&g).unwrap(), hf);
        }
        assert_eq!(gguf_name("model.layers.3.mlp.down_proj.weight").unwrap(), "blk.3.ffn_down.weight");
        assert!(gguf_name("model.layers.0.self_attn.rotary_emb.inv_freq").is_none());
    }
}

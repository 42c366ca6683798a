//! The LLaMA family as llama.cpp runs it: `LlamaForCausalLM` and `MistralForCausalLM` (llama.cpp's
//! `llama`: Q/K rows permuted for its RoPE), `Qwen2ForCausalLM` (`qwen2`: q/k/v biases, NeoX RoPE,
//! no permutation) and `Qwen3ForCausalLM` (`qwen3`: RMS norms on q and k per head). GQA, an explicit
//! `head_dim`, tied or untied embeddings, attention and MLP biases, and RoPE as transformers 4
//! (`rope_theta`, `rope_scaling`) and 5 (`rope_parameters`) write it: linear, YaRN, and Llama 3's
//! frequency factors (computed into `rope_freqs.weight`, as the converter does).
//!
//! A config key that changes the model's math and that is not handled here is an error naming it.

use super::rope::{RopeConfig, RopeScaling};
use super::{
    config_bool, config_opt_usize, config_positive_f64, config_usize, expect_shape, ConversionPlan, Generated,
    PlannedTensor, Transform,
};
use crate::gguf::{GgufValue, Metadata};
use crate::source::{HfCheckpoint, TensorSource};
use crate::tokenizer::hf::VocabStyle;
use crate::util::tensor_name;
use anyhow::{bail, Result};
use serde_json::Value;

/// Which member of the family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
}

impl Flavor {
    pub fn from_architecture(hf: &str) -> Option<Flavor> {
        Some(match hf {
            "LlamaForCausalLM" | "LLaMAForCausalLM" => Flavor::Llama,
            "MistralForCausalLM" => Flavor::Mistral,
            "Qwen2ForCausalLM" => Flavor::Qwen2,
            "Qwen3ForCausalLM" => Flavor::Qwen3,
            _ => return None,
        })
    }

    /// `general.architecture` in llama.cpp.
    pub fn gguf_arch(self) -> &'static str {
        match self {
            Flavor::Llama | Flavor::Mistral => "llama",
            Flavor::Qwen2 => "qwen2",
            Flavor::Qwen3 => "qwen3",
        }
    }

    /// llama.cpp's `llama` uses interleaved-pair RoPE: the converter permutes Q/K rows from Hugging
    /// Face's rotate-half layout. Qwen's NeoX RoPE is Hugging Face's own layout.
    pub fn permutes_qk(self) -> bool {
        matches!(self, Flavor::Llama | Flavor::Mistral)
    }
}

/// Hyper-parameters read from config.json.
#[derive(Clone, Debug)]
pub struct LlamaParams {
    pub flavor: Flavor,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// config.json's `head_dim`, when it gives one.
    pub explicit_head_dim: Option<usize>,
    pub n_ctx: usize,
    pub vocab_size: usize,
    pub rms_eps: f64,
    pub rope: RopeConfig,
    pub tied: bool,
    pub attention_bias: bool,
    pub mlp_bias: bool,
}

/// Keys that change the math of these architectures, their neutral values, and why they are refused.
fn refuse_unhandled(ckpt: &HfCheckpoint, flavor: Flavor) -> Result<()> {
    let c = &ckpt.config;
    let cfg = ckpt.dir.join("config.json");
    let set = |k: &str| c.get(k).filter(|v| !v.is_null());
    if let Some(act) = set("hidden_act").filter(|v| v.as_str() != Some("silu")) {
        bail!("{}: hidden_act = {act} is not supported (this architecture runs SiLU in llama.cpp)", cfg.display());
    }
    let sliding_used = match flavor {
        // Qwen2 configs carry a sliding_window that only counts with use_sliding_window.
        Flavor::Qwen2 | Flavor::Qwen3 => set("use_sliding_window").and_then(Value::as_bool) == Some(true),
        _ => set("sliding_window").is_some(),
    };
    if sliding_used {
        bail!(
            "{}: sliding_window = {} (sliding-window attention) is not supported: llama.cpp's {} graph attends to the whole context",
            cfg.display(),
            c.get("sliding_window").unwrap_or(&Value::Null),
            flavor.gguf_arch()
        );
    }
    if let Some(types) = set("layer_types").and_then(Value::as_array) {
        if types.iter().any(|t| t.as_str() != Some("full_attention")) {
            bail!("{}: layer_types with sliding attention is not supported", cfg.display());
        }
    }
    for key in [
        "attn_logit_softcapping",
        "final_logit_softcapping",
        "embedding_multiplier",
        "residual_multiplier",
        "attention_multiplier",
        "logits_scaling",
        "query_pre_attn_scalar",
    ] {
        if let Some(v) = set(key) {
            bail!(
                "{}: {key} = {v} is not supported: it changes the model's math and {} has no such scaling",
                cfg.display(),
                flavor.gguf_arch()
            );
        }
    }
    for key in ["num_local_experts", "num_experts", "n_routed_experts"] {
        if set(key).and_then(Value::as_u64).unwrap_or(0) > 0 {
            bail!("{}: {key}: mixture-of-experts models are not supported", cfg.display());
        }
    }
    if let Some(f) = set("partial_rotary_factor").and_then(Value::as_f64).filter(|f| *f != 1.0) {
        bail!("{}: partial_rotary_factor = {f} is not supported (RoPE over the whole head only)", cfg.display());
    }
    Ok(())
}

impl LlamaParams {
    pub fn from_config(ckpt: &HfCheckpoint, flavor: Flavor) -> Result<LlamaParams> {
        refuse_unhandled(ckpt, flavor)?;
        let c = &ckpt.config;
        let n_head = config_usize(c, &["num_attention_heads"], ckpt)?;
        let default_bias = flavor == Flavor::Qwen2;
        let p = LlamaParams {
            flavor,
            n_layer: config_usize(c, &["num_hidden_layers"], ckpt)?,
            n_embd: config_usize(c, &["hidden_size"], ckpt)?,
            n_ff: config_usize(c, &["intermediate_size"], ckpt)?,
            n_head,
            n_head_kv: config_opt_usize(c, "num_key_value_heads", ckpt)?.unwrap_or(n_head),
            explicit_head_dim: config_opt_usize(c, "head_dim", ckpt)?,
            n_ctx: config_usize(c, &["max_position_embeddings"], ckpt)?,
            vocab_size: config_usize(c, &["vocab_size"], ckpt)?,
            rms_eps: config_positive_f64(c, "rms_norm_eps", 1e-6, ckpt)?,
            rope: RopeConfig::from_config(ckpt)?,
            tied: match config_bool(c, "tie_word_embeddings", ckpt)? {
                Some(t) => t,
                None => ckpt.tensor("lm_head.weight").is_none(),
            },
            attention_bias: config_bool(c, "attention_bias", ckpt)?.unwrap_or(default_bias),
            mlp_bias: config_bool(c, "mlp_bias", ckpt)?.unwrap_or(false),
        };
        p.refuse_unloadable(ckpt)?;
        let head_dim_ok = match p.explicit_head_dim {
            Some(d) => d % 2 == 0,
            None => p.n_embd.is_multiple_of(p.n_head) && (p.n_embd / p.n_head).is_multiple_of(2),
        };
        if !head_dim_ok || !p.n_head.is_multiple_of(p.n_head_kv) {
            bail!(
                "{}: inconsistent heads: hidden_size {} with {} query and {} key/value heads{} (each head's width must be even for RoPE)",
                ckpt.dir.join("config.json").display(),
                p.n_embd,
                p.n_head,
                p.n_head_kv,
                p.explicit_head_dim.map(|d| format!(" of head_dim {d}")).unwrap_or_default()
            );
        }
        Ok(p)
    }

    /// Biases and widths that exist in transformers but that llama.cpp's graph for this flavor has
    /// no tensor for: refused, since llama.cpp would refuse (or ignore) them.
    fn refuse_unloadable(&self, ckpt: &HfCheckpoint) -> Result<()> {
        let cfg = ckpt.dir.join("config.json");
        let qwen = matches!(self.flavor, Flavor::Qwen2 | Flavor::Qwen3);
        if qwen && self.mlp_bias {
            bail!(
                "{}: mlp_bias = true is not supported: llama.cpp's {} has no FFN biases",
                cfg.display(),
                self.flavor.gguf_arch()
            );
        }
        if self.flavor == Flavor::Qwen3 && self.attention_bias {
            bail!("{}: attention_bias = true is not supported: llama.cpp's qwen3 has no o_proj bias", cfg.display());
        }
        if self.flavor == Flavor::Qwen2 && self.explicit_head_dim.is_some_and(|d| d * self.n_head != self.n_embd) {
            bail!(
                "{}: head_dim = {} with {} heads is not {} wide: llama.cpp's qwen2 attention is as wide as hidden_size",
                cfg.display(),
                self.head_dim(),
                self.n_head,
                self.n_embd
            );
        }
        Ok(())
    }

    /// Qwen2 puts biases on q, k and v only; LLaMA's `attention_bias` covers o_proj too.
    fn has_o_bias(&self) -> bool {
        self.attention_bias && self.flavor != Flavor::Qwen2
    }

    pub fn head_dim(&self) -> usize {
        self.explicit_head_dim.unwrap_or(self.n_embd / self.n_head)
    }

    /// The architecture keys in the order `convert_hf_to_gguf.py` writes them (TextModel's, then
    /// LlamaModel's `vocab_size` and `rope.dimension_count`), `general.file_type` among them.
    pub fn metadata(&self, file_type: u32) -> Metadata {
        let a = self.flavor.gguf_arch();
        let k = |s: &str| format!("{a}.{s}");
        let mut m: Metadata = vec![
            (k("block_count"), GgufValue::U32(self.n_layer as u32)),
            (k("context_length"), GgufValue::U32(self.n_ctx as u32)),
            (k("embedding_length"), GgufValue::U32(self.n_embd as u32)),
            (k("feed_forward_length"), GgufValue::U32(self.n_ff as u32)),
            (k("attention.head_count"), GgufValue::U32(self.n_head as u32)),
            (k("attention.head_count_kv"), GgufValue::U32(self.n_head_kv as u32)),
        ];
        m.extend(self.rope.metadata(a));
        m.push((k("attention.layer_norm_rms_epsilon"), GgufValue::F32(self.rms_eps as f32)));
        if let Some(d) = self.explicit_head_dim {
            m.push((k("attention.key_length"), GgufValue::U32(d as u32)));
            m.push((k("attention.value_length"), GgufValue::U32(d as u32)));
        }
        m.push(("general.file_type".into(), GgufValue::U32(file_type)));
        if self.flavor.permutes_qk() {
            m.push((k("vocab_size"), GgufValue::U32(self.vocab_size as u32)));
            m.push((k("rope.dimension_count"), GgufValue::U32(self.head_dim() as u32)));
        }
        m
    }
}

/// Hugging Face name suffix within a layer → GGUF name suffix.
pub const LAYER_TENSORS: [(&str, &str); 11] = [
    ("input_layernorm", "attn_norm"),
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("self_attn.q_norm", "attn_q_norm"),
    ("self_attn.k_norm", "attn_k_norm"),
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
        return Some(tensor_name::name(layer, &format!("{g}.{kind}")));
    }
    let (_, g) = GLOBAL_TENSORS.iter().find(|(h, _)| *h == stem)?;
    Some(format!("{g}.{kind}"))
}

/// Map a llama.cpp tensor name back to the Hugging Face one.
pub fn hf_name(gguf: &str) -> Option<String> {
    let (stem, kind) = gguf.rsplit_once('.')?;
    if let Some((layer, part)) = tensor_name::split(stem) {
        let (h, _) = LAYER_TENSORS.iter().find(|(_, g)| *g == part)?;
        return Some(format!("model.layers.{layer}.{h}.{kind}"));
    }
    let (h, _) = GLOBAL_TENSORS.iter().find(|(_, g)| *g == stem)?;
    Some(format!("{h}.{kind}"))
}

/// The shapes config.json implies for every tensor the checkpoint must have.
fn expect_shapes(ckpt: &HfCheckpoint, p: &LlamaParams) -> Result<()> {
    let (q_dim, kv_dim) = (p.head_dim() * p.n_head, p.head_dim() * p.n_head_kv);
    expect_shape(ckpt, "model.embed_tokens.weight", &[p.vocab_size, p.n_embd])?;
    expect_shape(ckpt, "model.norm.weight", &[p.n_embd])?;
    for l in 0..p.n_layer {
        let t = |s: &str, kind: &str| format!("model.layers.{l}.{s}.{kind}");
        expect_shape(ckpt, &t("input_layernorm", "weight"), &[p.n_embd])?;
        expect_shape(ckpt, &t("post_attention_layernorm", "weight"), &[p.n_embd])?;
        expect_shape(ckpt, &t("self_attn.q_proj", "weight"), &[q_dim, p.n_embd])?;
        expect_shape(ckpt, &t("self_attn.k_proj", "weight"), &[kv_dim, p.n_embd])?;
        expect_shape(ckpt, &t("self_attn.v_proj", "weight"), &[kv_dim, p.n_embd])?;
        expect_shape(ckpt, &t("self_attn.o_proj", "weight"), &[p.n_embd, q_dim])?;
        expect_shape(ckpt, &t("mlp.gate_proj", "weight"), &[p.n_ff, p.n_embd])?;
        expect_shape(ckpt, &t("mlp.up_proj", "weight"), &[p.n_ff, p.n_embd])?;
        expect_shape(ckpt, &t("mlp.down_proj", "weight"), &[p.n_embd, p.n_ff])?;
        if p.attention_bias {
            expect_shape(ckpt, &t("self_attn.q_proj", "bias"), &[q_dim])?;
            expect_shape(ckpt, &t("self_attn.k_proj", "bias"), &[kv_dim])?;
            expect_shape(ckpt, &t("self_attn.v_proj", "bias"), &[kv_dim])?;
        }
        if p.has_o_bias() {
            expect_shape(ckpt, &t("self_attn.o_proj", "bias"), &[p.n_embd])?;
        }
        if p.mlp_bias {
            expect_shape(ckpt, &t("mlp.gate_proj", "bias"), &[p.n_ff])?;
            expect_shape(ckpt, &t("mlp.up_proj", "bias"), &[p.n_ff])?;
            expect_shape(ckpt, &t("mlp.down_proj", "bias"), &[p.n_embd])?;
        }
        if p.flavor == Flavor::Qwen3 {
            expect_shape(ckpt, &t("self_attn.q_norm", "weight"), &[p.head_dim()])?;
            expect_shape(ckpt, &t("self_attn.k_norm", "weight"), &[p.head_dim()])?;
        }
    }
    if !p.tied {
        expect_shape(ckpt, "lm_head.weight", &[p.vocab_size, p.n_embd])?;
    }
    Ok(())
}

/// A bias or norm the config says is absent must not be in the checkpoint either (llama.cpp would
/// silently use it, or the converter would): refuse the disagreement instead of guessing.
fn refuse_unexpected(ckpt: &HfCheckpoint, p: &LlamaParams, src: &str) -> Result<()> {
    let o_bias = src.ends_with(".self_attn.o_proj.bias");
    let qkv_bias = src.contains(".self_attn.") && src.ends_with("_proj.bias") && !o_bias;
    let mlp_bias = src.contains(".mlp.") && src.ends_with("_proj.bias");
    let qk_norm = src.contains(".self_attn.") && src.ends_with("_norm.weight");
    let unexpected = (qkv_bias && !p.attention_bias)
        || (o_bias && !p.has_o_bias())
        || (mlp_bias && !p.mlp_bias)
        || (qk_norm && p.flavor != Flavor::Qwen3);
    if unexpected {
        bail!(
            "{}: tensor {src:?} is not part of this {} configuration (config.json's attention_bias / mlp_bias disagree with the weights)",
            ckpt.location(src),
            p.flavor.gguf_arch()
        );
    }
    Ok(())
}

pub fn plan(ckpt: &HfCheckpoint, flavor: Flavor, file_type: u32) -> Result<ConversionPlan> {
    let p = LlamaParams::from_config(ckpt, flavor)?;
    expect_shapes(ckpt, &p)?;
    let mut sources: Vec<&str> = ckpt.tensors().iter().map(|t| t.name.as_str()).collect();
    sources.sort_unstable();
    let mut tensors = Vec::new();
    for src in sources {
        if src.ends_with("rotary_emb.inv_freq") || (p.tied && src == "lm_head.weight") {
            continue;
        }
        refuse_unexpected(ckpt, &p, src)?;
        let Some(name) = gguf_name(src) else {
            bail!("{}: cannot map tensor {src:?} to a llama.cpp tensor", ckpt.location(src));
        };
        let info = ckpt.tensor(src).expect("listed");
        let transform = match (flavor.permutes_qk(), name.contains(".attn_q."), name.contains(".attn_k.")) {
            (true, true, _) => Transform::PermuteQk { n_head: p.n_head },
            (true, _, true) => Transform::PermuteQk { n_head: p.n_head_kv },
            _ => Transform::Copy,
        };
        tensors.push(PlannedTensor::new(name, src.to_string(), info.shape.clone(), transform));
    }
    let mut generated = Vec::new();
    if let RopeScaling::Llama3 { .. } = p.rope.scaling {
        // generate_extra_tensors: the frequency factors llama.cpp divides RoPE's frequencies by.
        let factors = p.rope.llama3_factors(p.head_dim());
        generated.push(Generated { name: "rope_freqs.weight".into(), shape: vec![factors.len()], data: factors });
    }
    for g in &generated {
        tensors.push(PlannedTensor::new(g.name.clone(), g.name.clone(), g.shape.clone(), Transform::Copy));
    }
    Ok(ConversionPlan {
        arch: flavor.gguf_arch(),
        hparams: p.metadata(file_type),
        tensors,
        vocab_size: p.vocab_size,
        vocab_style: match flavor {
            Flavor::Llama | Flavor::Mistral => VocabStyle::Llama,
            Flavor::Qwen2 | Flavor::Qwen3 => VocabStyle::Qwen,
        },
        generated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for hf in [
            "model.layers.12.self_attn.k_proj.weight",
            "model.layers.1.self_attn.q_proj.bias",
            "model.layers.0.self_attn.q_norm.weight",
            "model.embed_tokens.weight",
            "lm_head.weight",
            "model.norm.weight",
        ] {
            let g = gguf_name(hf).unwrap();
            assert_eq!(hf_name(&g).unwrap(), hf);
        }
        assert_eq!(gguf_name("model.layers.3.mlp.down_proj.weight").unwrap(), "blk.3.ffn_down.weight");
        assert_eq!(gguf_name("model.layers.3.self_attn.k_norm.weight").unwrap(), "blk.3.attn_k_norm.weight");
        assert!(gguf_name("model.layers.0.self_attn.rotary_emb.inv_freq").is_none());
    }
}

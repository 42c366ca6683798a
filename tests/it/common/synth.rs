//! Synthetic Hugging Face checkpoints (LLaMA and GPT-2) with a tiny byte-level
//! BPE tokenizer, for end-to-end tests of the converter.
//!
//! Weights are deterministic functions of `(spec.seed, tensor name)`, so a
//! sharded and an unsharded checkpoint written from the same spec hold exactly
//! the same tensors.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{ensure, Context, Result};
use safetensors::tensor::{Dtype, TensorView};
use serde_json::{json, Map, Value};

/// Storage dtype of the synthetic weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynthDtype {
    F32,
    F16,
    BF16,
}

impl SynthDtype {
    /// The `torch_dtype` string used in config.json.
    pub fn torch_name(self) -> &'static str {
        match self {
            SynthDtype::F32 => "float32",
            SynthDtype::F16 => "float16",
            SynthDtype::BF16 => "bfloat16",
        }
    }

    fn st_dtype(self) -> Dtype {
        match self {
            SynthDtype::F32 => Dtype::F32,
            SynthDtype::F16 => Dtype::F16,
            SynthDtype::BF16 => Dtype::BF16,
        }
    }
}

/// Shape of a synthetic model.
#[derive(Debug, Clone)]
pub struct SynthSpec {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    /// LLaMA only (GQA); ignored for GPT-2.
    pub n_head_kv: usize,
    pub n_ff: usize,
    pub n_ctx: usize,
    /// LLaMA only; GPT-2 is always tied.
    pub tied_embeddings: bool,
    pub seed: u64,
    pub dtype: SynthDtype,
    /// LLaMA family only: the Hugging Face class (`LlamaForCausalLM`, `MistralForCausalLM`,
    /// `Qwen2ForCausalLM`, `Qwen3ForCausalLM`).
    pub arch: &'static str,
    /// An explicit `head_dim` (attention width n_head·head_dim, which may differ from n_embd).
    pub head_dim: Option<usize>,
    /// Biases on q, k and v (and on o for LLaMA; Qwen2 always has q/k/v biases).
    pub attention_bias: bool,
    /// Biases on the MLP's three projections (LLaMA's `mlp_bias`).
    pub mlp_bias: bool,
    /// Extra config.json entries, merged over the defaults (a null value removes the key).
    pub extra_config: Value,
    /// Vocabulary size (the embedding's rows); the tiny tokenizer by default.
    pub vocab_size: usize,
}

impl SynthSpec {
    /// A small LLaMA-shaped spec with GQA (4 query heads, 2 kv heads).
    pub fn tiny_llama() -> Self {
        SynthSpec {
            n_layer: 2,
            n_embd: 64,
            n_head: 4,
            n_head_kv: 2,
            n_ff: 128,
            n_ctx: 128,
            tied_embeddings: false,
            seed: 42,
            dtype: SynthDtype::F32,
            arch: "LlamaForCausalLM",
            head_dim: None,
            attention_bias: false,
            mlp_bias: false,
            extra_config: json!({}),
            vocab_size: TINY_VOCAB_SIZE,
        }
    }

    /// A small GPT-2-shaped spec.
    pub fn tiny_gpt2() -> Self {
        SynthSpec {
            n_layer: 2,
            n_embd: 64,
            n_head: 4,
            n_head_kv: 4,
            n_ff: 256,
            n_ctx: 128,
            tied_embeddings: true,
            seed: 7,
            dtype: SynthDtype::F32,
            arch: "GPT2LMHeadModel",
            head_dim: None,
            attention_bias: false,
            mlp_bias: false,
            extra_config: json!({}),
            vocab_size: TINY_VOCAB_SIZE,
        }
    }
}

// ---------------------------------------------------------------------------
// Tokenizer
// ---------------------------------------------------------------------------

/// BPE merges, in rank order. Every merge's parts are in the vocab before it.
pub const TINY_MERGES: [(&str, &str); 40] = [
    ("Ġ", "t"),
    ("h", "e"),
    ("i", "n"),
    ("e", "r"),
    ("Ġ", "a"),
    ("o", "n"),
    ("r", "e"),
    ("Ġ", "s"),
    ("a", "n"),
    ("Ġt", "he"),
    ("o", "u"),
    ("a", "t"),
    ("e", "n"),
    ("Ġ", "w"),
    ("i", "s"),
    ("o", "r"),
    ("e", "s"),
    ("Ġ", "o"),
    ("Ġ", "c"),
    ("i", "t"),
    ("Ġ", "b"),
    ("e", "d"),
    ("in", "g"),
    ("Ġ", "f"),
    ("Ġ", "p"),
    ("a", "r"),
    ("Ġ", "m"),
    ("l", "l"),
    ("Ġ", "i"),
    ("a", "l"),
    ("Ġo", "f"),
    ("Ġa", "n"),
    ("Ġan", "d"),
    ("Ġt", "o"),
    ("Ġ", "in"),
    ("Ġ", "h"),
    ("Ġ", "d"),
    ("l", "e"),
    ("Ġw", "h"),
    ("Ġi", "s"),
];

/// The special end-of-text token (also BOS/EOS).
pub const EOT_TOKEN: &str = "<|endoftext|>";
/// Number of tokens in the tiny vocabulary: 256 bytes + 40 merges + 1 special.
pub const TINY_VOCAB_SIZE: usize = 256 + TINY_MERGES.len() + 1; // 297
/// Id of `<|endoftext|>` (the last id).
pub const EOT_ID: u32 = (TINY_VOCAB_SIZE - 1) as u32; // 296

/// GPT-2 `bytes_to_unicode`: byte -> printable char.
pub fn byte_to_unicode() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        out[b as usize] = if printable {
            char::from_u32(b).unwrap()
        } else {
            let c = char::from_u32(256 + n).unwrap();
            n += 1;
            c
        };
    }
    out
}

/// The 256 byte-level symbols in GPT-2 vocab order (ids 0..255): sorted by
/// their unicode code point, which is the `bytes_to_unicode` list order.
pub fn byte_symbols() -> Vec<String> {
    let mut chars: Vec<char> = byte_to_unicode().to_vec();
    chars.sort_unstable();
    chars.into_iter().map(String::from).collect()
}

/// The full tiny vocabulary, indexed by token id.
pub fn tiny_vocab() -> Vec<String> {
    let mut v = byte_symbols();
    for (a, b) in TINY_MERGES {
        assert!(v.iter().any(|t| t == a), "merge part {a:?} not in vocab");
        assert!(v.iter().any(|t| t == b), "merge part {b:?} not in vocab");
        let m = format!("{a}{b}");
        assert!(!v.contains(&m), "duplicate merge result {m:?}");
        v.push(m);
    }
    v.push(EOT_TOKEN.to_string());
    assert_eq!(v.len(), TINY_VOCAB_SIZE);
    v
}

/// Merges as `"a b"` strings, rank order.
pub fn tiny_merges() -> Vec<String> {
    TINY_MERGES.iter().map(|(a, b)| format!("{a} {b}")).collect()
}

fn vocab_json() -> Value {
    let mut m = Map::new();
    for (i, t) in tiny_vocab().into_iter().enumerate() {
        m.insert(t, json!(i));
    }
    Value::Object(m)
}

/// Writes GPT-2 style `vocab.json` + `merges.txt`.
pub fn write_gpt2_tokenizer(dir: &Path) -> Result<()> {
    std::fs::write(dir.join("vocab.json"), serde_json::to_string_pretty(&vocab_json())?)?;
    let mut merges = String::from("#version: 0.2\n");
    for m in tiny_merges() {
        merges.push_str(&m);
        merges.push('\n');
    }
    std::fs::write(dir.join("merges.txt"), merges)?;
    Ok(())
}

/// The HF `tokenizers` JSON for the tiny byte-level BPE.
pub fn tokenizer_json() -> Value {
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [{
            "id": EOT_ID,
            "content": EOT_TOKEN,
            "single_word": false,
            "lstrip": false,
            "rstrip": false,
            "normalized": false,
            "special": true
        }],
        "normalizer": null,
        "pre_tokenizer": {
            "type": "ByteLevel",
            "add_prefix_space": false,
            "trim_offsets": true,
            "use_regex": true
        },
        "post_processor": {
            "type": "ByteLevel",
            "add_prefix_space": true,
            "trim_offsets": false,
            "use_regex": true
        },
        "decoder": {
            "type": "ByteLevel",
            "add_prefix_space": true,
            "trim_offsets": true,
            "use_regex": true
        },
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": vocab_json(),
            "merges": tiny_merges()
        }
    })
}

/// Writes `tokenizer.json` + `tokenizer_config.json` (HF fast tokenizer).
pub fn write_hf_tokenizer(dir: &Path) -> Result<()> {
    std::fs::write(dir.join("tokenizer.json"), serde_json::to_string_pretty(&tokenizer_json())?)?;
    let cfg = json!({
        "add_bos_token": false,
        "bos_token": EOT_TOKEN,
        "eos_token": EOT_TOKEN,
        "tokenizer_class": "GPT2Tokenizer"
    });
    std::fs::write(dir.join("tokenizer_config.json"), serde_json::to_string_pretty(&cfg)?)?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Deterministic gaussian generator (self-contained: no dependency on the
// `rand` version; stable across platforms).
// ---------------------------------------------------------------------------

struct Gauss {
    state: u64,
    spare: Option<f64>,
}

impl Gauss {
    fn new(seed: u64, name: &str) -> Self {
        // FNV-1a of the tensor name, mixed with the seed.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Gauss { state: h ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15), spare: None }
    }

    fn next_u64(&mut self) -> u64 {
        // splitmix64
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        let u1 = self.uniform();
        let u2 = self.uniform();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = 2.0 * std::f64::consts::PI * u2;
        self.spare = Some(r * t.sin());
        r * t.cos()
    }
}

/// A named tensor to be written (values in f32, converted at write time).
pub struct SynthTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    /// Buffers (GPT-2 attn.bias / masked_bias) are always stored as F32.
    pub force_f32: bool,
}

fn gaussian(seed: u64, name: &str, shape: &[usize], mean: f64, std: f64) -> SynthTensor {
    let n: usize = shape.iter().product();
    let mut g = Gauss::new(seed, name);
    let data = (0..n).map(|_| (mean + std * g.normal()) as f32).collect();
    SynthTensor { name: name.to_string(), shape: shape.to_vec(), data, force_f32: false }
}

fn encode(t: &SynthTensor, dtype: SynthDtype) -> (Dtype, Vec<u8>) {
    let dtype = if t.force_f32 { SynthDtype::F32 } else { dtype };
    let bytes = match dtype {
        SynthDtype::F32 => t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        SynthDtype::F16 => t.data.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
        SynthDtype::BF16 => t.data.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect(),
    };
    (dtype.st_dtype(), bytes)
}

/// Writes tensors to one safetensors file; returns the number of data bytes.
fn write_safetensors(path: &Path, tensors: &[&SynthTensor], dtype: SynthDtype) -> Result<usize> {
    let encoded: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|t| {
            let (d, b) = encode(t, dtype);
            (t.name.clone(), d, t.shape.clone(), b)
        })
        .collect();
    let total = encoded.iter().map(|e| e.3.len()).sum();
    let views = encoded
        .iter()
        .map(|(n, d, s, b)| Ok((n.clone(), TensorView::new(*d, s.clone(), b)?)))
        .collect::<Result<Vec<_>>>()?;
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    safetensors::serialize_to_file(views, Some(meta), path).with_context(|| format!("writing {}", path.display()))?;
    Ok(total)
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(v)?).with_context(|| format!("writing {}", path.display()))
}

// ---------------------------------------------------------------------------
// LLaMA
// ---------------------------------------------------------------------------

fn check_llama(spec: &SynthSpec) -> Result<()> {
    ensure!(spec.n_head > 0, "no heads");
    ensure!(spec.head_dim.is_some() || spec.n_embd.is_multiple_of(spec.n_head), "n_embd % n_head != 0");
    ensure!(head_dim(spec).is_multiple_of(2), "head_dim must be even for RoPE");
    ensure!(spec.n_head_kv > 0 && spec.n_head.is_multiple_of(spec.n_head_kv), "n_head % n_head_kv != 0");
    Ok(())
}

fn head_dim(spec: &SynthSpec) -> usize {
    spec.head_dim.unwrap_or(spec.n_embd / spec.n_head)
}

/// All tensors of the synthetic LLaMA-family model, in a stable order: biases where the spec
/// (or Qwen2's class) has them, Qwen3's q/k norms.
pub fn llama_tensors(spec: &SynthSpec) -> Result<Vec<SynthTensor>> {
    check_llama(spec)?;
    let s = spec.seed;
    let e = spec.n_embd;
    let hd = head_dim(spec);
    let q = spec.n_head * hd;
    let kv = spec.n_head_kv * hd;
    let ff = spec.n_ff;
    let v = spec.vocab_size;
    let qkv_bias = spec.attention_bias || spec.arch == "Qwen2ForCausalLM";
    let o_bias = spec.attention_bias && spec.arch != "Qwen2ForCausalLM";
    let qk_norm = spec.arch == "Qwen3ForCausalLM";
    let inv = |fan_in: usize| 1.0 / (fan_in as f64).sqrt();
    let mut out = Vec::new();
    // Embedding rows: rms ~ 2.5/sqrt(e) so that, when tied, logits have std ~2.5.
    out.push(gaussian(s, "model.embed_tokens.weight", &[v, e], 0.0, 2.5 * inv(e)));
    for i in 0..spec.n_layer {
        let p = format!("model.layers.{i}");
        let bias = |out: &mut Vec<SynthTensor>, name: &str, n: usize| {
            out.push(gaussian(s, &format!("{p}.{name}.bias"), &[n], 0.0, 0.1));
        };
        out.push(gaussian(s, &format!("{p}.input_layernorm.weight"), &[e], 1.0, 0.1));
        out.push(gaussian(s, &format!("{p}.self_attn.q_proj.weight"), &[q, e], 0.0, inv(e)));
        out.push(gaussian(s, &format!("{p}.self_attn.k_proj.weight"), &[kv, e], 0.0, inv(e)));
        out.push(gaussian(s, &format!("{p}.self_attn.v_proj.weight"), &[kv, e], 0.0, inv(e)));
        out.push(gaussian(s, &format!("{p}.self_attn.o_proj.weight"), &[e, q], 0.0, 0.5 * inv(q)));
        if qkv_bias {
            bias(&mut out, "self_attn.q_proj", q);
            bias(&mut out, "self_attn.k_proj", kv);
            bias(&mut out, "self_attn.v_proj", kv);
        }
        if o_bias {
            bias(&mut out, "self_attn.o_proj", e);
        }
        if qk_norm {
            out.push(gaussian(s, &format!("{p}.self_attn.q_norm.weight"), &[hd], 1.0, 0.1));
            out.push(gaussian(s, &format!("{p}.self_attn.k_norm.weight"), &[hd], 1.0, 0.1));
        }
        out.push(gaussian(s, &format!("{p}.post_attention_layernorm.weight"), &[e], 1.0, 0.1));
        out.push(gaussian(s, &format!("{p}.mlp.gate_proj.weight"), &[ff, e], 0.0, inv(e)));
        out.push(gaussian(s, &format!("{p}.mlp.up_proj.weight"), &[ff, e], 0.0, inv(e)));
        out.push(gaussian(s, &format!("{p}.mlp.down_proj.weight"), &[e, ff], 0.0, 0.5 * inv(ff)));
        if spec.mlp_bias {
            bias(&mut out, "mlp.gate_proj", ff);
            bias(&mut out, "mlp.up_proj", ff);
            bias(&mut out, "mlp.down_proj", e);
        }
    }
    out.push(gaussian(s, "model.norm.weight", &[e], 1.0, 0.1));
    if !spec.tied_embeddings {
        out.push(gaussian(s, "lm_head.weight", &[v, e], 0.0, 2.5 * inv(e)));
    }
    Ok(out)
}

/// The config.json for a LLaMA-family `spec`.
pub fn llama_config(spec: &SynthSpec) -> Value {
    let model_type = match spec.arch {
        "MistralForCausalLM" => "mistral",
        "Qwen2ForCausalLM" => "qwen2",
        "Qwen3ForCausalLM" => "qwen3",
        _ => "llama",
    };
    let mut c = json!({
        "architectures": [spec.arch],
        "model_type": model_type,
        "hidden_size": spec.n_embd,
        "intermediate_size": spec.n_ff,
        "num_hidden_layers": spec.n_layer,
        "num_attention_heads": spec.n_head,
        "num_key_value_heads": spec.n_head_kv,
        "max_position_embeddings": spec.n_ctx,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "attention_bias": false,
        "mlp_bias": false,
        "tie_word_embeddings": spec.tied_embeddings,
        "vocab_size": spec.vocab_size,
        "bos_token_id": EOT_ID,
        "eos_token_id": EOT_ID,
        "torch_dtype": spec.dtype.torch_name()
    });
    let obj = c.as_object_mut().expect("an object");
    if spec.arch != "LlamaForCausalLM" {
        obj.remove("mlp_bias");
    }
    if spec.arch == "MistralForCausalLM" || spec.arch == "Qwen2ForCausalLM" {
        obj.remove("attention_bias");
    } else {
        obj.insert("attention_bias".into(), json!(spec.attention_bias));
    }
    if spec.arch == "LlamaForCausalLM" {
        obj.insert("mlp_bias".into(), json!(spec.mlp_bias));
    }
    if let Some(d) = spec.head_dim {
        obj.insert("head_dim".into(), json!(d));
    }
    merge_config(&mut c, &spec.extra_config);
    c
}

/// Merge `extra` over `config`; a null value removes the key.
pub fn merge_config(config: &mut Value, extra: &Value) {
    let (Some(obj), Some(extra)) = (config.as_object_mut(), extra.as_object()) else { return };
    for (k, v) in extra {
        if v.is_null() {
            obj.remove(k);
        } else {
            obj.insert(k.clone(), v.clone());
        }
    }
}

fn write_llama_common(dir: &Path, spec: &SynthSpec) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    write_json(&dir.join("config.json"), &llama_config(spec))?;
    write_hf_tokenizer(dir)
}

/// Writes a single-file LLaMA checkpoint (`model.safetensors`).
pub fn write_llama_checkpoint(dir: &Path, spec: &SynthSpec) -> Result<()> {
    write_llama_weights(dir, spec)?;
    write_hf_tokenizer(dir)
}

/// Writes config.json and `model.safetensors` of a LLaMA-family spec, without tokenizer files
/// (the caller brings its own vocabulary).
pub fn write_llama_weights(dir: &Path, spec: &SynthSpec) -> Result<()> {
    let tensors = llama_tensors(spec)?;
    std::fs::create_dir_all(dir)?;
    write_json(&dir.join("config.json"), &llama_config(spec))?;
    let refs: Vec<&SynthTensor> = tensors.iter().collect();
    write_safetensors(&dir.join("model.safetensors"), &refs, spec.dtype)?;
    Ok(())
}

/// Writes a sharded LLaMA checkpoint: `model-0000i-of-0000n.safetensors`
/// (1-based) and `model.safetensors.index.json`. Same weights as the
/// unsharded writer for the same spec.
pub fn write_sharded_llama_checkpoint(dir: &Path, spec: &SynthSpec, n_shards: usize) -> Result<()> {
    let tensors = llama_tensors(spec)?;
    ensure!((1..=tensors.len()).contains(&n_shards), "n_shards must be in 1..={}", tensors.len());
    write_llama_common(dir, spec)?;
    // Contiguous chunks with (almost) equal tensor counts; all non-empty.
    let bounds: Vec<usize> = (0..=n_shards).map(|k| k * tensors.len() / n_shards).collect();

    let mut weight_map = Map::new();
    let mut total_size = 0usize;
    for s in 0..n_shards {
        let file = format!("model-{:05}-of-{:05}.safetensors", s + 1, n_shards);
        let chunk: Vec<&SynthTensor> = tensors[bounds[s]..bounds[s + 1]].iter().collect();
        total_size += write_safetensors(&dir.join(&file), &chunk, spec.dtype)?;
        for t in chunk {
            weight_map.insert(t.name.clone(), json!(file));
        }
    }
    // Sorted weight_map like transformers writes it.
    let sorted: BTreeMap<String, Value> = weight_map.into_iter().collect();
    let index = json!({
        "metadata": {"total_size": total_size},
        "weight_map": sorted
    });
    write_json(&dir.join("model.safetensors.index.json"), &index)
}

// ---------------------------------------------------------------------------
// GPT-2
// ---------------------------------------------------------------------------

/// All tensors of the synthetic GPT-2 model (HF Conv1D layouts, [in, out]).
pub fn gpt2_tensors(spec: &SynthSpec) -> Result<Vec<SynthTensor>> {
    ensure!(spec.n_head > 0 && spec.n_embd.is_multiple_of(spec.n_head), "n_embd % n_head != 0");
    let s = spec.seed;
    let e = spec.n_embd;
    let ff = spec.n_ff;
    let c = spec.n_ctx;
    let v = spec.vocab_size;
    let inv = |fan_in: usize| 1.0 / (fan_in as f64).sqrt();
    let mut out = Vec::new();
    out.push(gaussian(s, "transformer.wte.weight", &[v, e], 0.0, 2.5 * inv(e)));
    out.push(gaussian(s, "transformer.wpe.weight", &[c, e], 0.0, 0.5 * inv(e)));
    let mut causal = vec![0f32; c * c];
    for r in 0..c {
        for col in 0..=r {
            causal[r * c + col] = 1.0;
        }
    }
    for i in 0..spec.n_layer {
        let p = format!("transformer.h.{i}");
        out.push(gaussian(s, &format!("{p}.ln_1.weight"), &[e], 1.0, 0.1));
        out.push(gaussian(s, &format!("{p}.ln_1.bias"), &[e], 0.0, 0.05));
        out.push(SynthTensor {
            name: format!("{p}.attn.bias"),
            shape: vec![1, 1, c, c],
            data: causal.clone(),
            force_f32: true,
        });
        out.push(SynthTensor {
            name: format!("{p}.attn.masked_bias"),
            shape: vec![],
            data: vec![-1e4],
            force_f32: true,
        });
        out.push(gaussian(s, &format!("{p}.attn.c_attn.weight"), &[e, 3 * e], 0.0, inv(e)));
        out.push(gaussian(s, &format!("{p}.attn.c_attn.bias"), &[3 * e], 0.0, 0.05));
        out.push(gaussian(s, &format!("{p}.attn.c_proj.weight"), &[e, e], 0.0, 0.5 * inv(e)));
        out.push(gaussian(s, &format!("{p}.attn.c_proj.bias"), &[e], 0.0, 0.05));
        out.push(gaussian(s, &format!("{p}.ln_2.weight"), &[e], 1.0, 0.1));
        out.push(gaussian(s, &format!("{p}.ln_2.bias"), &[e], 0.0, 0.05));
        out.push(gaussian(s, &format!("{p}.mlp.c_fc.weight"), &[e, ff], 0.0, inv(e)));
        out.push(gaussian(s, &format!("{p}.mlp.c_fc.bias"), &[ff], 0.0, 0.05));
        out.push(gaussian(s, &format!("{p}.mlp.c_proj.weight"), &[ff, e], 0.0, 0.5 * inv(ff)));
        out.push(gaussian(s, &format!("{p}.mlp.c_proj.bias"), &[e], 0.0, 0.05));
    }
    out.push(gaussian(s, "transformer.ln_f.weight", &[e], 1.0, 0.1));
    out.push(gaussian(s, "transformer.ln_f.bias", &[e], 0.0, 0.05));
    Ok(out)
}

/// The GPT-2 config.json for `spec`.
pub fn gpt2_config(spec: &SynthSpec) -> Value {
    let mut c = json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "n_embd": spec.n_embd,
        "n_head": spec.n_head,
        "n_layer": spec.n_layer,
        "n_positions": spec.n_ctx,
        "n_ctx": spec.n_ctx,
        "n_inner": spec.n_ff,
        "layer_norm_epsilon": 1e-5,
        "activation_function": "gelu_new",
        "vocab_size": spec.vocab_size,
        "bos_token_id": EOT_ID,
        "eos_token_id": EOT_ID,
        "torch_dtype": spec.dtype.torch_name()
    });
    merge_config(&mut c, &spec.extra_config);
    c
}

/// Writes a GPT-2 checkpoint (`model.safetensors`, config.json, vocab.json,
/// merges.txt). Always tied; `n_head_kv`/`tied_embeddings` are ignored.
pub fn write_gpt2_checkpoint(dir: &Path, spec: &SynthSpec) -> Result<()> {
    write_gpt2_weights(dir, spec)?;
    write_gpt2_tokenizer(dir)
}

/// Writes config.json and `model.safetensors` of a GPT-2 spec, without tokenizer files.
pub fn write_gpt2_weights(dir: &Path, spec: &SynthSpec) -> Result<()> {
    let tensors = gpt2_tensors(spec)?;
    std::fs::create_dir_all(dir)?;
    write_json(&dir.join("config.json"), &gpt2_config(spec))?;
    let refs: Vec<&SynthTensor> = tensors.iter().collect();
    write_safetensors(&dir.join("model.safetensors"), &refs, spec.dtype)?;
    Ok(())
}

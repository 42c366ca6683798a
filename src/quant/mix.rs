//! Quantization schemes (`--outtype`) and how they pick a type per tensor: a port of llama.cpp's
//! `llama_tensor_get_type` (src/llama-quant.cpp) for the schemes microscale writes, so that our
//! one-pass conversion and `llama-quantize` choose the same type for every tensor.

use crate::gguf::{file_type, GgmlType};
use anyhow::{anyhow, bail, Result};
use regex::Regex;

/// A whole-file scheme, spelled as llama.cpp spells it (`q4_k_m`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Scheme {
    F32,
    F16,
    Bf16,
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_0")]
    Q4_0,
    #[value(name = "q4_1")]
    Q4_1,
    #[value(name = "q5_0")]
    Q5_0,
    #[value(name = "q5_1")]
    Q5_1,
    #[value(name = "q4_k_s")]
    Q4KS,
    #[value(name = "q4_k_m")]
    Q4KM,
    #[value(name = "q5_k_s")]
    Q5KS,
    #[value(name = "q5_k_m")]
    Q5KM,
    #[value(name = "q6_k")]
    Q6K,
}

impl Scheme {
    pub const ALL: [Scheme; 13] = [
        Scheme::F32,
        Scheme::F16,
        Scheme::Bf16,
        Scheme::Q8_0,
        Scheme::Q4_0,
        Scheme::Q4_1,
        Scheme::Q5_0,
        Scheme::Q5_1,
        Scheme::Q4KS,
        Scheme::Q4KM,
        Scheme::Q5KS,
        Scheme::Q5KM,
        Scheme::Q6K,
    ];

    /// The lower-case name llama.cpp's tools accept (`q4_k_m`).
    pub fn name(self) -> &'static str {
        match self {
            Scheme::F32 => "f32",
            Scheme::F16 => "f16",
            Scheme::Bf16 => "bf16",
            Scheme::Q8_0 => "q8_0",
            Scheme::Q4_0 => "q4_0",
            Scheme::Q4_1 => "q4_1",
            Scheme::Q5_0 => "q5_0",
            Scheme::Q5_1 => "q5_1",
            Scheme::Q4KS => "q4_k_s",
            Scheme::Q4KM => "q4_k_m",
            Scheme::Q5KS => "q5_k_s",
            Scheme::Q5KM => "q5_k_m",
            Scheme::Q6K => "q6_k",
        }
    }

    pub fn parse(s: &str) -> Result<Scheme> {
        let lower = s.to_ascii_lowercase();
        Scheme::ALL.iter().copied().find(|x| x.name() == lower).ok_or_else(|| {
            let names: Vec<&str> = Scheme::ALL.iter().map(|x| x.name()).collect();
            anyhow!("unknown type {s:?} (expected one of {})", names.join(", "))
        })
    }

    /// `general.file_type` (`enum llama_ftype`).
    pub fn file_type(self) -> u32 {
        use file_type::*;
        match self {
            Scheme::F32 => ALL_F32,
            Scheme::F16 => MOSTLY_F16,
            Scheme::Bf16 => MOSTLY_BF16,
            Scheme::Q8_0 => MOSTLY_Q8_0,
            Scheme::Q4_0 => MOSTLY_Q4_0,
            Scheme::Q4_1 => MOSTLY_Q4_1,
            Scheme::Q5_0 => MOSTLY_Q5_0,
            Scheme::Q5_1 => MOSTLY_Q5_1,
            Scheme::Q4KS => MOSTLY_Q4_K_S,
            Scheme::Q4KM => MOSTLY_Q4_K_M,
            Scheme::Q5KS => MOSTLY_Q5_K_S,
            Scheme::Q5KM => MOSTLY_Q5_K_M,
            Scheme::Q6K => MOSTLY_Q6_K,
        }
    }

    /// `llama_ftype_get_default_type`.
    pub fn default_type(self) -> GgmlType {
        match self {
            Scheme::F32 => GgmlType::F32,
            Scheme::F16 => GgmlType::F16,
            Scheme::Bf16 => GgmlType::BF16,
            Scheme::Q8_0 => GgmlType::Q8_0,
            Scheme::Q4_0 => GgmlType::Q4_0,
            Scheme::Q4_1 => GgmlType::Q4_1,
            Scheme::Q5_0 => GgmlType::Q5_0,
            Scheme::Q5_1 => GgmlType::Q5_1,
            Scheme::Q4KS | Scheme::Q4KM => GgmlType::Q4K,
            Scheme::Q5KS | Scheme::Q5KM => GgmlType::Q5K,
            Scheme::Q6K => GgmlType::Q6K,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, Scheme::F32 | Scheme::F16 | Scheme::Bf16)
    }
}

/// Parse a ggml type name as llama-quantize's `--tensor-type` does (case-insensitive).
pub fn parse_ggml_type(s: &str) -> Result<GgmlType> {
    let lower = s.to_ascii_lowercase();
    GgmlType::ALL
        .iter()
        .copied()
        .find(|t| t.name().to_ascii_lowercase() == lower)
        .ok_or_else(|| anyhow!("unknown ggml type {s:?}"))
}

/// `--tensor-type PATTERN=TYPE`: the first pattern found in a tensor's name decides its type.
#[derive(Clone, Debug)]
pub struct TensorTypeOverride {
    pub pattern: Regex,
    pub ty: GgmlType,
}

impl std::str::FromStr for TensorTypeOverride {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let Some((pattern, ty)) = s.rsplit_once('=') else { bail!("expected PATTERN=TYPE, got {s:?}") };
        let pattern = Regex::new(pattern).map_err(|e| anyhow!("bad pattern {pattern:?}: {e}"))?;
        Ok(TensorTypeOverride { pattern, ty: parse_ggml_type(ty)? })
    }
}

/// llama.cpp's tensor categories (`tensor_get_category`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    AttentionQ,
    AttentionV,
    AttentionK,
    AttentionQkv,
    AttentionOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

fn category(name: &str) -> Category {
    if name == "output.weight" {
        Category::Output
    } else if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        Category::TokenEmbd
    } else if name.contains("attn_qkv.weight") {
        Category::AttentionQkv
    } else if name.contains("attn_v.weight") {
        Category::AttentionV
    } else if name.contains("attn_k.weight") {
        Category::AttentionK
    } else if name.contains("attn_q.weight") {
        Category::AttentionQ
    } else if name.contains("attn_output.weight") {
        Category::AttentionOutput
    } else if name.contains("ffn_up") {
        Category::FfnUp
    } else if name.contains("ffn_gate") {
        Category::FfnGate
    } else if name.contains("ffn_down") {
        Category::FfnDown
    } else {
        Category::Other
    }
}

/// `tensor_allows_quantization` for the architectures microscale writes.
pub fn allows_quantization(name: &str, n_dims: usize) -> bool {
    n_dims >= 2 && name.ends_with("weight") && !name.contains("_norm.weight") && name != "position_embd.weight"
}

/// What the mix needs to know about the model.
#[derive(Clone, Debug, Default)]
pub struct MixContext {
    pub n_layer: usize,
    /// LLaMA-2-70B-shaped models (80 layers) get more bits for attn_v, as in llama.cpp.
    pub is_70b: bool,
    pub has_imatrix: bool,
    pub overrides: Vec<TensorTypeOverride>,
}

/// The type of every tensor (`(name, ne)`, in any order) under `scheme`.
///
/// llama.cpp walks tensors sorted by layer number, then name (its `weight_name_comparer`), and
/// the `use_more_bits` counters follow that walk: we do the same, whatever order we write in.
pub fn assign_types(tensors: &[(String, Vec<u64>)], scheme: Scheme, ctx: &MixContext) -> Vec<GgmlType> {
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| {
        let key = |i: usize| (layer_of(&tensors[i].0), tensors[i].0.clone());
        key(a).cmp(&key(b))
    });
    let n_attention_wv =
        tensors.iter().filter(|(n, _)| matches!(category(n), Category::AttentionV | Category::AttentionQkv)).count();
    let has_tied = !tensors.iter().any(|(n, _)| category(n) == Category::Output);
    let mut state = Counters { n_attention_wv, ..Default::default() };
    let mut types = vec![GgmlType::F32; tensors.len()];
    for i in order {
        let (name, ne) = &tensors[i];
        types[i] = tensor_type(name, ne, scheme, ctx, has_tied, &mut state);
    }
    types
}

/// sscanf("blk.%d.") as llama.cpp's comparer uses it: -1 for non-block tensors.
fn layer_of(name: &str) -> i64 {
    name.strip_prefix("blk.").and_then(|r| r.split('.').next()).and_then(|l| l.parse().ok()).unwrap_or(-1)
}

#[derive(Default)]
struct Counters {
    n_attention_wv: usize,
    i_attention_wv: usize,
    i_ffn_down: usize,
}

fn use_more_bits(i_layer: usize, n_layers: usize) -> bool {
    let (i, n) = (i_layer as i64, n_layers as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// `llama_tensor_get_type` (outer wrapper) for one tensor.
fn tensor_type(
    name: &str,
    ne: &[u64],
    scheme: Scheme,
    ctx: &MixContext,
    has_tied: bool,
    st: &mut Counters,
) -> GgmlType {
    let cat = category(name);
    if !allows_quantization(name, ne.len()) {
        return GgmlType::F32;
    }
    let default = scheme.default_type();
    if scheme.is_float() {
        return default;
    }
    let mut ty = default;
    let manual = ctx.overrides.iter().find(|o| o.pattern.is_match(name));
    match manual {
        Some(o) => ty = o.ty,
        None => ty = tensor_type_impl(ty, ne, scheme, cat, ctx, has_tied, st),
    }
    fallback(ty, ne[0])
}

/// `llama_tensor_get_type_impl`, for the schemes in [`Scheme`].
fn tensor_type_impl(
    mut ty: GgmlType,
    ne: &[u64],
    scheme: Scheme,
    cat: Category,
    ctx: &MixContext,
    has_tied: bool,
    st: &mut Counters,
) -> GgmlType {
    use Scheme::*;
    if cat == Category::Output || (has_tied && cat == Category::TokenEmbd) {
        let nx = ne[0] as usize;
        if !nx.is_multiple_of(ty.block_size()) {
            ty = GgmlType::Q8_0;
        } else if ty != GgmlType::Q8_0 {
            ty = GgmlType::Q6K;
        }
    } else if cat == Category::TokenEmbd {
        // untied token embeddings keep the default type
    } else if matches!(cat, Category::AttentionV | Category::AttentionQkv) {
        if matches!(scheme, Q4KM | Q5KM) && use_more_bits(st.i_attention_wv, st.n_attention_wv) {
            ty = GgmlType::Q6K;
        } else if scheme == Q4KS && st.i_attention_wv < 4 {
            ty = GgmlType::Q5K;
        }
        if ctx.is_70b && matches!(ty, GgmlType::Q3K | GgmlType::Q4K) {
            ty = GgmlType::Q5K;
        }
        st.i_attention_wv += 1;
    } else if cat == Category::FfnDown {
        let (i_layer, n_layer) = (st.i_ffn_down, ctx.n_layer);
        if scheme == Q4KM {
            if use_more_bits(i_layer, n_layer) {
                ty = GgmlType::Q6K;
            }
        } else if scheme == Q5KM && use_more_bits(i_layer, n_layer) {
            ty = GgmlType::Q6K;
        } else if scheme == Q4KS && i_layer < n_layer / 8 {
            ty = GgmlType::Q5K;
        } else if matches!(scheme, Q4_0 | Q5_0) && ctx.has_imatrix && i_layer < n_layer / 8 {
            ty = if scheme == Q4_0 { GgmlType::Q4_1 } else { GgmlType::Q5_1 };
        }
        st.i_ffn_down += 1;
    }
    ty
}

/// `tensor_type_fallback`: K-quants need rows that are a multiple of 256.
fn fallback(ty: GgmlType, ncols: u64) -> GgmlType {
    let ncols = ncols as usize;
    if ncols.is_multiple_of(ty.block_size()) {
        return ty;
    }
    let next = match ty {
        GgmlType::Q2K | GgmlType::Q3K => GgmlType::Q4_0,
        GgmlType::Q4K => GgmlType::Q5_0,
        GgmlType::Q5K => GgmlType::Q5_1,
        GgmlType::Q6K => GgmlType::Q8_0,
        other => other,
    };
    if !ncols.is_multiple_of(next.block_size()) {
        GgmlType::F16
    } else {
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama_tensors(n_layer: usize, n_embd: u64, tied: bool) -> Vec<(String, Vec<u64>)> {
        let mut t =
            vec![("token_embd.weight".to_string(), vec![n_embd, 1000]), ("output_norm.weight".into(), vec![n_embd])];
        if !tied {
            t.push(("output.weight".into(), vec![n_embd, 1000]));
        }
        for l in 0..n_layer {
            for (n, ne) in [
                ("attn_q", vec![n_embd, n_embd]),
                ("attn_k", vec![n_embd, n_embd / 4]),
                ("attn_v", vec![n_embd, n_embd / 4]),
                ("attn_output", vec![n_embd, n_embd]),
                ("ffn_down", vec![4 * n_embd, n_embd]),
                ("ffn_up", vec![n_embd, 4 * n_embd]),
                ("attn_norm", vec![n_embd]),
            ] {
                t.push((format!("blk.{l}.{n}.weight"), ne));
            }
        }
        t
    }

    #[test]
    fn q4_k_m_gives_more_bits_to_some_attn_v_and_ffn_down() {
        let t = llama_tensors(16, 512, false);
        let ctx = MixContext { n_layer: 16, ..Default::default() };
        let types = assign_types(&t, Scheme::Q4KM, &ctx);
        let ty = |n: &str| types[t.iter().position(|(x, _)| x == n).unwrap()];
        assert_eq!(ty("output.weight"), GgmlType::Q6K);
        assert_eq!(ty("token_embd.weight"), GgmlType::Q4K);
        assert_eq!(ty("output_norm.weight"), GgmlType::F32);
        assert_eq!(ty("blk.0.attn_v.weight"), GgmlType::Q6K); // i < n/8
        assert_eq!(ty("blk.2.attn_v.weight"), GgmlType::Q4K);
        assert_eq!(ty("blk.4.attn_v.weight"), GgmlType::Q6K); // (4-2)%3 == 2
        assert_eq!(ty("blk.15.ffn_down.weight"), GgmlType::Q6K); // i >= 7n/8
        assert_eq!(ty("blk.3.attn_q.weight"), GgmlType::Q4K);
    }

    #[test]
    fn tied_embeddings_follow_the_output_rule_and_fallbacks_apply() {
        // 576-wide rows (SmolLM2): not a multiple of 256.
        let t = llama_tensors(4, 576, true);
        let ctx = MixContext { n_layer: 4, ..Default::default() };
        let types = assign_types(&t, Scheme::Q4KM, &ctx);
        let ty = |n: &str| types[t.iter().position(|(x, _)| x == n).unwrap()];
        assert_eq!(ty("token_embd.weight"), GgmlType::Q8_0);
        assert_eq!(ty("blk.1.attn_q.weight"), GgmlType::Q5_0); // Q4_K fallback
        assert_eq!(ty("blk.0.attn_v.weight"), GgmlType::Q5_0); // Q4_K fallback
        assert_eq!(ty("blk.3.attn_v.weight"), GgmlType::Q8_0); // use_more_bits: Q6_K, whose fallback is Q8_0
    }

    #[test]
    fn overrides_win() {
        let t = llama_tensors(2, 256, false);
        let ctx = MixContext { n_layer: 2, overrides: vec!["attn_q=q8_0".parse().unwrap()], ..Default::default() };
        let types = assign_types(&t, Scheme::Q4KS, &ctx);
        assert_eq!(types[t.iter().position(|(x, _)| x == "blk.1.attn_q.weight").unwrap()], GgmlType::Q8_0);
    }
}

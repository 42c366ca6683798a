//! Quantization schemes (`--outtype`) and how they pick a type per tensor: a port of llama.cpp's
//! `llama_tensor_get_type` (src/llama-quant.cpp) for the schemes microscale writes, so that our
//! one-pass conversion and `llama-quantize` choose the same type for every tensor.

use super::GgmlType;
use anyhow::{anyhow, bail, Result};
use regex::Regex;

macro_rules! schemes {
    ($($variant:ident = $name:literal, ftype $ftype:literal $label:literal, default $default:ident;)*) => {
        /// A whole-file scheme, spelled as llama.cpp spells it (`q4_k_m`): one row of the table
        /// below gives its name, its `general.file_type` (`enum llama_ftype`) with the name
        /// `llama_model_ftype_name` prints, and its default tensor type
        /// (`llama_ftype_get_default_type`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Scheme {
            $($variant),*
        }

        impl Scheme {
            pub const ALL: &'static [Scheme] = &[$(Scheme::$variant),*];

            /// The lower-case name llama.cpp's tools accept (`q4_k_m`).
            pub fn name(self) -> &'static str {
                match self { $(Scheme::$variant => $name),* }
            }

            /// `general.file_type` (`enum llama_ftype`).
            pub fn file_type(self) -> u32 {
                match self { $(Scheme::$variant => $ftype),* }
            }

            /// llama.cpp's name for the file type (`llama_model_ftype_name`).
            pub fn file_type_label(self) -> &'static str {
                match self { $(Scheme::$variant => $label),* }
            }

            /// `llama_ftype_get_default_type`.
            pub fn default_type(self) -> GgmlType {
                match self { $(Scheme::$variant => GgmlType::$default),* }
            }
        }
    };
}

schemes! {
    F32  = "f32",    ftype 0  "all F32",       default F32;
    F16  = "f16",    ftype 1  "F16",           default F16;
    Bf16 = "bf16",   ftype 32 "BF16",          default BF16;
    Q8_0 = "q8_0",   ftype 7  "Q8_0",          default Q8_0;
    Q4_0 = "q4_0",   ftype 2  "Q4_0",          default Q4_0;
    Q4_1 = "q4_1",   ftype 3  "Q4_1",          default Q4_1;
    Q5_0 = "q5_0",   ftype 8  "Q5_0",          default Q5_0;
    Q5_1 = "q5_1",   ftype 9  "Q5_1",          default Q5_1;
    Q4KS = "q4_k_s", ftype 14 "Q4_K - Small",  default Q4K;
    Q4KM = "q4_k_m", ftype 15 "Q4_K - Medium", default Q4K;
    Q5KS = "q5_k_s", ftype 16 "Q5_K - Small",  default Q5K;
    Q5KM = "q5_k_m", ftype 17 "Q5_K - Medium", default Q5K;
    Q6K  = "q6_k",   ftype 18 "Q6_K",          default Q6K;
}

impl Scheme {
    pub fn parse(s: &str) -> Result<Scheme> {
        Scheme::ALL.iter().copied().find(|x| x.name().eq_ignore_ascii_case(s)).ok_or_else(|| {
            let names: Vec<&str> = Scheme::ALL.iter().map(|x| x.name()).collect();
            anyhow!("unknown type {s:?} (expected one of {})", names.join(", "))
        })
    }

    pub fn is_float(self) -> bool {
        !self.default_type().is_quantized()
    }

    /// llama.cpp's name for a `general.file_type` value, for any value a file may hold.
    pub fn label_of_file_type(ftype: u32) -> String {
        match Scheme::ALL.iter().find(|s| s.file_type() == ftype) {
            Some(s) => s.file_type_label().to_string(),
            None => format!("file type {ftype}"),
        }
    }
}

impl std::str::FromStr for Scheme {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Scheme> {
        Scheme::parse(s)
    }
}

/// The names on the command line are the table's (`--outtype q4_k_m`).
impl clap::ValueEnum for Scheme {
    fn value_variants<'a>() -> &'a [Self] {
        Scheme::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()))
    }
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
        Ok(TensorTypeOverride { pattern, ty: GgmlType::parse(ty)? })
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

/// `tensor_type_fallback`: a type whose blocks do not divide the rows falls back to the type the
/// type table names, and to F16 when that does not divide them either.
fn fallback(ty: GgmlType, ncols: u64) -> GgmlType {
    let ncols = ncols as usize;
    if ncols.is_multiple_of(ty.block_size()) {
        return ty;
    }
    let next = ty.info().fallback.unwrap_or(ty);
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

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
    F32    = "f32",     ftype 0  "all F32",              default F32;
    F16    = "f16",     ftype 1  "F16",                  default F16;
    Bf16   = "bf16",    ftype 32 "BF16",                 default BF16;
    Q8_0   = "q8_0",    ftype 7  "Q8_0",                 default Q8_0;
    Q4_0   = "q4_0",    ftype 2  "Q4_0",                 default Q4_0;
    Q4_1   = "q4_1",    ftype 3  "Q4_1",                 default Q4_1;
    Q5_0   = "q5_0",    ftype 8  "Q5_0",                 default Q5_0;
    Q5_1   = "q5_1",    ftype 9  "Q5_1",                 default Q5_1;
    Q2K    = "q2_k",    ftype 10 "Q2_K - Medium",        default Q2K;
    Q2KS   = "q2_k_s",  ftype 21 "Q2_K - Small",         default Q2K;
    Q3KS   = "q3_k_s",  ftype 11 "Q3_K - Small",         default Q3K;
    Q3KM   = "q3_k_m",  ftype 12 "Q3_K - Medium",        default Q3K;
    Q3KL   = "q3_k_l",  ftype 13 "Q3_K - Large",         default Q3K;
    Q4KS   = "q4_k_s",  ftype 14 "Q4_K - Small",         default Q4K;
    Q4KM   = "q4_k_m",  ftype 15 "Q4_K - Medium",        default Q4K;
    Q5KS   = "q5_k_s",  ftype 16 "Q5_K - Small",         default Q5K;
    Q5KM   = "q5_k_m",  ftype 17 "Q5_K - Medium",        default Q5K;
    Q6K    = "q6_k",    ftype 18 "Q6_K",                 default Q6K;
    IQ1S   = "iq1_s",   ftype 24 "IQ1_S - 1.5625 bpw",   default IQ1S;
    IQ1M   = "iq1_m",   ftype 31 "IQ1_M - 1.75 bpw",     default IQ1M;
    IQ2XXS = "iq2_xxs", ftype 19 "IQ2_XXS - 2.0625 bpw", default IQ2XXS;
    IQ2XS  = "iq2_xs",  ftype 20 "IQ2_XS - 2.3125 bpw",  default IQ2XS;
    IQ2S   = "iq2_s",   ftype 28 "IQ2_S - 2.5 bpw",      default IQ2XS;
    IQ2M   = "iq2_m",   ftype 29 "IQ2_M - 2.7 bpw",      default IQ2S;
    IQ3XXS = "iq3_xxs", ftype 23 "IQ3_XXS - 3.0625 bpw", default IQ3XXS;
    IQ3XS  = "iq3_xs",  ftype 22 "IQ3_XS - 3.3 bpw",     default IQ3S;
    IQ3S   = "iq3_s",   ftype 26 "IQ3_S - 3.4375 bpw",   default IQ3S;
    IQ3M   = "iq3_m",   ftype 27 "IQ3_S mix - 3.66 bpw", default IQ3S;
    IQ4NL  = "iq4_nl",  ftype 25 "IQ4_NL - 4.5 bpw",     default IQ4NL;
    IQ4XS  = "iq4_xs",  ftype 30 "IQ4_XS - 4.25 bpw",    default IQ4XS;
    TQ1_0  = "tq1_0",   ftype 36 "TQ1_0 - 1.69 bpw ternary", default TQ1_0;
    TQ2_0  = "tq2_0",   ftype 37 "TQ2_0 - 2.06 bpw ternary", default TQ2_0;
}

impl Scheme {
    /// A scheme by llama-quantize's name, in either case; `q3_k`, `q4_k` and `q5_k` are its
    /// aliases for the medium mixes.
    pub fn parse(s: &str) -> Result<Scheme> {
        let s = match s.to_ascii_lowercase().as_str() {
            "q3_k" => "q3_k_m".to_string(),
            "q4_k" => "q4_k_m".to_string(),
            "q5_k" => "q5_k_m".to_string(),
            other => other.to_string(),
        };
        let s = s.as_str();
        Scheme::ALL.iter().copied().find(|x| x.name() == s).ok_or_else(|| {
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
impl crate::util::choice::Choice for Scheme {
    fn all() -> &'static [Self] {
        Scheme::ALL
    }

    fn name(self) -> &'static str {
        Scheme::name(self)
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

/// What the mix needs to know about the model, and llama-quantize's per-file options.
#[derive(Clone, Debug, Default)]
pub struct MixContext {
    pub n_layer: usize,
    /// `n_head / n_head_kv` of the first layer (llama.cpp's `n_gqa()`; 0 when unknown): GQA
    /// models get more bits for attn_v in the low-bit mixes.
    pub n_gqa: usize,
    /// LLaMA-2-70B-shaped models (80 layers) get more bits for attn_v, as in llama.cpp.
    pub is_70b: bool,
    pub has_imatrix: bool,
    pub overrides: Vec<TensorTypeOverride>,
    pub flags: MixFlags,
}

/// llama-quantize's per-file options that change the mix (same names on our command lines).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MixFlags {
    /// `--output-tensor-type`.
    pub output_tensor_type: Option<GgmlType>,
    /// `--token-embedding-type`.
    pub token_embedding_type: Option<GgmlType>,
    /// `--leave-output-tensor`: output.weight is not quantized.
    pub leave_output_tensor: bool,
    /// `--pure`: every quantizable tensor gets the default type (fallbacks and overrides still apply).
    pub pure: bool,
}

/// What [`assign_types`] decides for one tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// Encode in this type.
    Type(GgmlType),
    /// Not quantized: the tensor keeps its source type (norms, biases, position embeddings, and
    /// output.weight under `--leave-output-tensor`).
    Keep,
}

impl Choice {
    /// The type, given the source tensor's (float sources are written as F32 when kept, as in our
    /// F32 intermediate; see [`keep_type`]).
    pub fn resolve(self, source: GgmlType) -> GgmlType {
        match self {
            Choice::Type(t) => t,
            Choice::Keep => keep_type(source),
        }
    }
}

/// The type a tensor that is not quantized is written in: llama-quantize copies it, and our
/// one-pass conversion matches llama-quantize run on the F32 GGUF, so float tensors become F32;
/// tensors that are quantized already (a GGUF source) are copied as they are.
pub fn keep_type(source: GgmlType) -> GgmlType {
    if source.is_quantized() {
        source
    } else {
        GgmlType::F32
    }
}

/// The type of every tensor (`(name, ne)`, in any order) under `scheme`.
///
/// llama.cpp walks tensors sorted by layer number, then name (its `weight_name_comparer`), and
/// the `use_more_bits` counters follow that walk: we do the same, whatever order we write in.
pub fn assign_types(tensors: &[(String, Vec<u64>)], scheme: Scheme, ctx: &MixContext) -> Vec<Choice> {
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| {
        let key = |i: usize| (layer_of(&tensors[i].0), tensors[i].0.clone());
        key(a).cmp(&key(b))
    });
    let n_attention_wv =
        tensors.iter().filter(|(n, _)| matches!(category(n), Category::AttentionV | Category::AttentionQkv)).count();
    let has_tied = !tensors.iter().any(|(n, _)| category(n) == Category::Output);
    let mut state = Counters { n_attention_wv, ..Default::default() };
    let mut types = vec![Choice::Keep; tensors.len()];
    for i in order {
        let (name, ne) = &tensors[i];
        types[i] = tensor_type(name, ne, scheme, ctx, has_tied, &mut state);
    }
    types
}

/// `tensor_requires_imatrix`: the tensors llama-quantize refuses to write without importance
/// weights ("the result will be garbage"): the lowest-bit IQ types, and Q2_K in a Q2_K_S file.
pub fn requires_imatrix(name: &str, ty: GgmlType, scheme: Scheme) -> bool {
    if matches!(category(name), Category::TokenEmbd | Category::Output) {
        return false;
    }
    use GgmlType::*;
    match ty {
        IQ3XXS | IQ2XXS | IQ2XS | IQ2S | IQ1M | IQ1S => true,
        Q2K => scheme == Scheme::Q2KS,
        _ => false,
    }
}

/// sscanf("blk.%d.") as llama.cpp's comparer uses it: -1 for non-block tensors.
fn layer_of(name: &str) -> i64 {
    crate::util::tensor_name::block_of(name).map_or(-1, |l| l as i64)
}

#[derive(Default)]
struct Counters {
    n_attention_wv: usize,
    i_attention_wv: usize,
    i_ffn_down: usize,
    i_ffn_gate: usize,
    i_ffn_up: usize,
}

fn use_more_bits(i_layer: usize, n_layers: usize) -> bool {
    let (i, n) = (i_layer as i64, n_layers as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// `llama_tensor_get_type` (outer wrapper) for one tensor.
fn tensor_type(name: &str, ne: &[u64], scheme: Scheme, ctx: &MixContext, has_tied: bool, st: &mut Counters) -> Choice {
    let cat = category(name);
    if !allows_quantization(name, ne.len()) || (ctx.flags.leave_output_tensor && name == "output.weight") {
        return Choice::Keep;
    }
    let default = scheme.default_type();
    if scheme.is_float() {
        return Choice::Type(default);
    }
    if let (Some(t), Category::TokenEmbd) = (ctx.flags.token_embedding_type, cat) {
        return Choice::Type(t);
    }
    if let (Some(t), Category::Output) = (ctx.flags.output_tensor_type, cat) {
        return Choice::Type(t);
    }
    let manual = ctx.overrides.iter().find(|o| o.pattern.is_match(name));
    let ty = match manual {
        Some(o) => o.ty,
        None if ctx.flags.pure => default,
        None => tensor_type_impl(default, ne, scheme, cat, ctx, has_tied, st),
    };
    Choice::Type(fallback(ty, ne[0]))
}

/// `llama_tensor_get_type_impl` for dense models of the architectures microscale writes (no
/// experts, no Falcon), every mix in [`Scheme`].
#[allow(clippy::too_many_arguments)]
fn tensor_type_impl(
    mut ty: GgmlType,
    ne: &[u64],
    scheme: Scheme,
    cat: Category,
    ctx: &MixContext,
    has_tied: bool,
    st: &mut Counters,
) -> GgmlType {
    use GgmlType as T;
    use Scheme::*;
    let gqa4 = ctx.n_gqa >= 4;
    let lowest_iq = matches!(scheme, IQ2XXS | IQ2XS | IQ1S | IQ2S | IQ2M | IQ1M);
    let iq2_s_or_m = matches!(scheme, IQ2S | IQ2M);
    let n_layer = ctx.n_layer;
    if cat == Category::Output || (has_tied && cat == Category::TokenEmbd) {
        if let Some(t) = ctx.flags.output_tensor_type {
            ty = t;
        } else if !(ne[0] as usize).is_multiple_of(ty.block_size()) {
            ty = T::Q8_0;
        } else if matches!(scheme, IQ2XXS | IQ2XS | IQ3XXS | IQ1S | IQ2S | IQ2M | IQ1M) {
            ty = T::Q5K;
        } else if ty != T::Q8_0 {
            ty = T::Q6K;
        }
    } else if cat == Category::TokenEmbd {
        // (--token-embedding-type was applied by the caller, as llama.cpp's outer wrapper does)
        if matches!(scheme, IQ2XXS | IQ2XS | IQ1S | IQ1M) {
            ty = T::Q2K;
        } else if matches!(scheme, IQ2S | IQ2M | IQ3XXS) {
            ty = T::IQ3S;
        } else if matches!(scheme, TQ1_0 | TQ2_0) {
            ty = T::Q4K;
        }
    } else if lowest_iq {
        if matches!(cat, Category::AttentionV | Category::AttentionQkv) {
            ty = if gqa4 {
                T::Q4K
            } else if iq2_s_or_m {
                T::IQ3S
            } else {
                T::Q2K
            };
            st.i_attention_wv += 1;
        } else if cat == Category::FfnDown {
            if st.i_ffn_down < n_layer / 8 {
                ty = if iq2_s_or_m { T::IQ3S } else { T::Q2K };
            }
            st.i_ffn_down += 1;
        } else if cat == Category::AttentionOutput {
            if matches!(scheme, IQ1S | IQ1M) {
                ty = T::IQ2XXS;
            } else if iq2_s_or_m {
                ty = T::IQ3S;
            }
        }
    } else if matches!(cat, Category::AttentionV | Category::AttentionQkv) {
        match scheme {
            Q2K => ty = if gqa4 { T::Q4K } else { T::Q3K },
            Q2KS if gqa4 => ty = T::Q4K,
            IQ3XXS => {
                ty = if gqa4 {
                    T::Q4K
                } else if !ctx.has_imatrix {
                    T::IQ3S
                } else {
                    T::IQ3XXS
                }
            }
            IQ3XS | IQ3S if gqa4 => ty = T::Q4K,
            IQ3M => ty = T::Q4K,
            Q3KM => ty = if st.i_attention_wv < 2 { T::Q5K } else { T::Q4K },
            Q3KL => ty = T::Q5K,
            IQ4NL | IQ4XS if gqa4 => ty = T::Q5K,
            Q4KM | Q5KM if use_more_bits(st.i_attention_wv, st.n_attention_wv) => ty = T::Q6K,
            Q4KS if st.i_attention_wv < 4 => ty = T::Q5K,
            _ => {}
        }
        if ctx.is_70b && matches!(ty, T::Q3K | T::Q4K) {
            ty = T::Q5K;
        }
        st.i_attention_wv += 1;
    } else if matches!(cat, Category::AttentionK | Category::AttentionQ) {
        match scheme {
            IQ3XS => ty = T::IQ3XXS,
            IQ3XXS => ty = T::IQ2S,
            _ => {}
        }
    } else if cat == Category::FfnDown {
        let i_layer = st.i_ffn_down;
        match scheme {
            Q2K => ty = T::Q3K,
            Q2KS if i_layer < n_layer / 8 => ty = T::Q4K,
            IQ3XXS if !ctx.has_imatrix => ty = if i_layer < n_layer / 8 { T::Q4K } else { T::Q3K },
            // `arch != FALCON || use_more_bits(...)`: always Q4_K for the architectures we write.
            Q3KM => ty = if i_layer < n_layer / 16 { T::Q5K } else { T::Q4K },
            IQ3M if i_layer < n_layer / 8 => ty = T::Q4K,
            Q3KL => ty = T::Q5K,
            Q4KM if use_more_bits(i_layer, n_layer) => ty = T::Q6K,
            IQ4NL | IQ4XS if i_layer < n_layer / 8 && !ctx.has_imatrix => ty = T::Q5K,
            Q5KM if use_more_bits(i_layer, n_layer) => ty = T::Q6K,
            Q4KS if i_layer < n_layer / 8 => ty = T::Q5K,
            Q4_0 | Q5_0 if ctx.has_imatrix && i_layer < n_layer / 8 => {
                ty = if scheme == Q4_0 { T::Q4_1 } else { T::Q5_1 }
            }
            _ => {}
        }
        st.i_ffn_down += 1;
    } else if cat == Category::AttentionOutput {
        match scheme {
            Q2K => ty = T::Q3K,
            IQ3XXS => ty = T::IQ3S,
            Q3KM => ty = T::Q4K,
            Q3KL => ty = T::Q5K,
            IQ3M => ty = T::Q4K,
            _ => {}
        }
    } else if cat == Category::FfnGate || cat == Category::FfnUp {
        let i_layer = if cat == Category::FfnGate { st.i_ffn_gate } else { st.i_ffn_up };
        if scheme == IQ3XS && i_layer >= n_layer / 8 && i_layer < 7 * n_layer / 8 {
            ty = T::IQ3XXS;
        }
        if cat == Category::FfnGate {
            st.i_ffn_gate += 1;
        } else {
            st.i_ffn_up += 1;
        }
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

    fn resolved(t: &[(String, Vec<u64>)], scheme: Scheme, ctx: &MixContext) -> Vec<GgmlType> {
        assign_types(t, scheme, ctx).into_iter().map(|c| c.resolve(GgmlType::F32)).collect()
    }

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
        let types = resolved(&t, Scheme::Q4KM, &ctx);
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
        let types = resolved(&t, Scheme::Q4KM, &ctx);
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
        let types = resolved(&t, Scheme::Q4KS, &ctx);
        assert_eq!(types[t.iter().position(|(x, _)| x == "blk.1.attn_q.weight").unwrap()], GgmlType::Q8_0);
    }

    #[test]
    fn low_bit_mixes_follow_llama_cpp() {
        let t = llama_tensors(16, 512, false);
        let ty = |types: &[GgmlType], n: &str| types[t.iter().position(|(x, _)| x == n).unwrap()];
        let ctx = MixContext { n_layer: 16, n_gqa: 4, has_imatrix: true, ..Default::default() };
        let iq2m = resolved(&t, Scheme::IQ2M, &ctx);
        assert_eq!(ty(&iq2m, "blk.5.attn_q.weight"), GgmlType::IQ2S); // the default type
        assert_eq!(ty(&iq2m, "blk.5.attn_v.weight"), GgmlType::Q4K); // n_gqa >= 4
        assert_eq!(ty(&iq2m, "blk.1.ffn_down.weight"), GgmlType::IQ3S); // i < n/8
        assert_eq!(ty(&iq2m, "blk.2.ffn_down.weight"), GgmlType::IQ2S);
        assert_eq!(ty(&iq2m, "blk.2.attn_output.weight"), GgmlType::IQ3S);
        assert_eq!(ty(&iq2m, "output.weight"), GgmlType::Q5K);
        assert_eq!(ty(&iq2m, "token_embd.weight"), GgmlType::IQ3S);
        let iq3xs = resolved(&t, Scheme::IQ3XS, &ctx);
        assert_eq!(ty(&iq3xs, "blk.0.ffn_up.weight"), GgmlType::IQ3S);
        assert_eq!(ty(&iq3xs, "blk.8.ffn_up.weight"), GgmlType::IQ3XXS);
        assert_eq!(ty(&iq3xs, "blk.8.attn_k.weight"), GgmlType::IQ3XXS);
        let q3km = resolved(&t, Scheme::Q3KM, &MixContext { n_gqa: 1, ..ctx.clone() });
        assert_eq!(ty(&q3km, "blk.0.attn_v.weight"), GgmlType::Q5K);
        assert_eq!(ty(&q3km, "blk.2.attn_v.weight"), GgmlType::Q4K);
        assert_eq!(ty(&q3km, "blk.0.ffn_down.weight"), GgmlType::Q5K); // i < n/16
        assert_eq!(ty(&q3km, "blk.3.ffn_down.weight"), GgmlType::Q4K);
        assert_eq!(ty(&q3km, "blk.3.attn_output.weight"), GgmlType::Q4K);
        let iq3xxs = resolved(&t, Scheme::IQ3XXS, &MixContext { n_gqa: 1, has_imatrix: false, ..ctx.clone() });
        assert_eq!(ty(&iq3xxs, "blk.3.attn_v.weight"), GgmlType::IQ3S); // no imatrix
        assert_eq!(ty(&iq3xxs, "blk.3.ffn_down.weight"), GgmlType::Q3K);
        assert!(requires_imatrix("blk.3.attn_q.weight", GgmlType::IQ2S, Scheme::IQ3XXS));
        assert!(!requires_imatrix("token_embd.weight", GgmlType::IQ2XXS, Scheme::IQ2XXS));
        assert!(requires_imatrix("blk.0.ffn_up.weight", GgmlType::Q2K, Scheme::Q2KS));
        assert!(!requires_imatrix("blk.0.ffn_up.weight", GgmlType::Q2K, Scheme::Q2K));
    }

    #[test]
    fn per_file_options_override_the_mix() {
        let t = llama_tensors(8, 512, false);
        let ty = |types: &[GgmlType], n: &str| types[t.iter().position(|(x, _)| x == n).unwrap()];
        let flags = MixFlags {
            output_tensor_type: Some(GgmlType::Q8_0),
            token_embedding_type: Some(GgmlType::Q4_0),
            ..Default::default()
        };
        let ctx = MixContext { n_layer: 8, flags, ..Default::default() };
        let types = resolved(&t, Scheme::Q4KM, &ctx);
        assert_eq!(ty(&types, "output.weight"), GgmlType::Q8_0);
        assert_eq!(ty(&types, "token_embd.weight"), GgmlType::Q4_0);
        let pure = resolved(
            &t,
            Scheme::Q4KM,
            &MixContext { n_layer: 8, flags: MixFlags { pure: true, ..Default::default() }, ..Default::default() },
        );
        assert_eq!(ty(&pure, "blk.0.attn_v.weight"), GgmlType::Q4K);
        assert_eq!(ty(&pure, "output.weight"), GgmlType::Q4K);
        let leave = assign_types(
            &t,
            Scheme::Q4KM,
            &MixContext { flags: MixFlags { leave_output_tensor: true, ..Default::default() }, ..Default::default() },
        );
        assert_eq!(leave[t.iter().position(|(x, _)| x == "output.weight").unwrap()], Choice::Keep);
        assert_eq!(Scheme::parse("Q4_K").unwrap(), Scheme::Q4KM);
        assert_eq!(Scheme::parse("IQ3_M").unwrap().file_type(), 27);
    }
}

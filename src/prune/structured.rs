//! Structured pruning: which blocks, FFN channels and attention heads stay, and what that does to
//! every tensor and metadata key.
//!
//! Scores are activation-aware: an FFN channel c is worth E[h_c²]·‖W_down[:,c]‖² (its mean squared
//! activation at the down projection's input times the energy it writes back), a head the same sum
//! over its dimensions at attn_output; blocks are ranked by Block Influence. Equal widths in every
//! layer keep the source's architecture (`llama`, `qwen2`, `qwen3`, `gpt2`); unequal ones turn
//! `llama` into `deci`, whose per-layer `head_count`, `head_count_kv` and `feed_forward_length`
//! arrays stock llama.cpp reads (its other architectures have one width for all blocks, so there
//! unequal widths are refused).

use super::{Allocation, DropLayers, HeadsMode, PruneSpec};
use crate::calib::Calibration;
use crate::gguf::{meta_get, meta_set, GgufValue, Metadata};
use crate::util::tensor_name;
use anyhow::{anyhow, bail, Result};

/// The shape of a model, from its metadata.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Dims {
    pub arch: String,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_ff: usize,
    pub head_dim: usize,
    /// Context the model was trained for (GPT-2's learned positions stop there).
    pub n_ctx_train: usize,
}

impl Dims {
    pub fn from_metadata(meta: &Metadata) -> Result<Dims> {
        let arch = meta_get(meta, "general.architecture").and_then(|v| v.as_str()).unwrap_or("").to_string();
        if !matches!(arch.as_str(), "llama" | "qwen2" | "qwen3" | "gpt2") {
            bail!("pruning supports llama, qwen2, qwen3 and gpt2 models, not {arch:?}");
        }
        let get = |k: &str| meta_get(meta, &format!("{arch}.{k}")).and_then(|v| v.as_u64()).map(|v| v as usize);
        let need = |k: &str| get(k).ok_or_else(|| anyhow!("missing {arch}.{k}"));
        let n_head = need("attention.head_count")?;
        let n_embd = need("embedding_length")?;
        let explicit_head_dim = get("attention.key_length");
        if n_head == 0 || n_embd == 0 || (explicit_head_dim.is_none() && !n_embd.is_multiple_of(n_head)) {
            bail!("{arch}.embedding_length {n_embd} cannot be split into {n_head} heads");
        }
        Ok(Dims {
            n_layer: need("block_count")?,
            n_embd,
            n_head,
            n_head_kv: get("attention.head_count_kv").unwrap_or(n_head),
            n_ff: need("feed_forward_length")?,
            head_dim: explicit_head_dim.unwrap_or(n_embd / n_head),
            n_ctx_train: get("context_length").unwrap_or(512),
            arch,
        })
    }
}

/// One kept block.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LayerPlan {
    /// Its index in the source model.
    pub source: usize,
    /// Kept FFN channels (ascending).
    pub ffn: Vec<usize>,
    /// Kept query heads (ascending).
    pub heads: Vec<usize>,
    /// Kept KV heads (ascending).
    pub kv_heads: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct StructuredPlan {
    pub dims: Dims,
    pub layers: Vec<LayerPlan>,
    pub dropped: Vec<usize>,
    /// The architecture written: the source's, or `deci` for unequal LLaMA widths.
    pub out_arch: String,
    pub block_influence: Option<Vec<f64>>,
}

/// What happens to one tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorOp {
    pub new_name: String,
    /// Rows kept (2-D) or elements kept (1-D); None = all.
    pub rows: Option<Vec<usize>>,
    /// Columns kept (2-D); None = all.
    pub cols: Option<Vec<usize>>,
}

impl TensorOp {
    /// The shape after selection (row-major, outermost first).
    pub fn new_shape(&self, shape: &[usize]) -> Vec<usize> {
        let mut s = shape.to_vec();
        if let Some(r) = &self.rows {
            s[0] = r.len();
        }
        if let (Some(c), true) = (&self.cols, s.len() == 2) {
            s[1] = c.len();
        }
        s
    }
}

fn blocks(units: &[usize], size: usize) -> Vec<usize> {
    units.iter().flat_map(|&u| u * size..(u + 1) * size).collect()
}

impl StructuredPlan {
    pub fn identity(dims: &Dims) -> StructuredPlan {
        StructuredPlan {
            layers: (0..dims.n_layer)
                .map(|i| LayerPlan {
                    source: i,
                    ffn: (0..dims.n_ff).collect(),
                    heads: (0..dims.n_head).collect(),
                    kv_heads: (0..dims.n_head_kv).collect(),
                })
                .collect(),
            dims: dims.clone(),
            dropped: vec![],
            out_arch: dims.arch.clone(),
            block_influence: None,
        }
    }

    fn uniform(&self) -> bool {
        let f = &self.layers[0];
        self.layers.iter().all(|l| {
            l.ffn.len() == f.ffn.len() && l.heads.len() == f.heads.len() && l.kv_heads.len() == f.kv_heads.len()
        })
    }

    /// This plan applied to the blocks before `first` only: the blocks from `first` on are kept
    /// whole (a sequential healing stage's model, whose later blocks are not pruned yet).
    pub fn opened_from(&self, first: usize) -> StructuredPlan {
        let mut p = self.clone();
        p.dropped.retain(|&l| l < first);
        let full = StructuredPlan::identity(&self.dims);
        p.layers.retain(|l| l.source < first);
        p.layers.extend(full.layers.into_iter().filter(|l| l.source >= first));
        // Pruned blocks before whole ones have unequal widths: LLaMA's per-layer (deci) form.
        p.out_arch = if p.uniform() { self.dims.arch.clone() } else { "deci".into() };
        p
    }

    pub fn heads_changed(&self) -> bool {
        self.layers.iter().any(|l| l.heads.len() != self.dims.n_head || l.kv_heads.len() != self.dims.n_head_kv)
    }

    /// The operation on tensor `name` (GGUF name and row-major shape), or None when it is dropped.
    pub fn tensor_op(&self, name: &str) -> Option<TensorOp> {
        if !tensor_name::in_block(name) {
            return Some(TensorOp { new_name: name.to_string(), rows: None, cols: None });
        }
        let (src, suffix) = tensor_name::split(name)?;
        let (new_index, l) = self.layers.iter().enumerate().find(|(_, l)| l.source == src)?;
        let hd = self.dims.head_dim;
        let full = |v: &Vec<usize>, n: usize| if v.len() == n { None } else { Some(v.clone()) };
        let q = full(&blocks(&l.heads, hd), self.dims.n_head * hd);
        let kv = full(&blocks(&l.kv_heads, hd), self.dims.n_head_kv * hd);
        let ffn = full(&l.ffn, self.dims.n_ff);
        let (rows, cols) = match suffix {
            "attn_q.weight" | "attn_q.bias" => (q, None),
            "attn_k.weight" | "attn_k.bias" | "attn_v.weight" | "attn_v.bias" => (kv, None),
            "attn_output.weight" => (None, q),
            "ffn_gate.weight" | "ffn_gate.bias" | "ffn_up.weight" | "ffn_up.bias" => (ffn, None),
            "ffn_down.weight" => (None, ffn),
            _ => (None, None),
        };
        Some(TensorOp { new_name: tensor_name::name(new_index, suffix), rows, cols })
    }

    /// Rewrite the metadata for the kept blocks and widths.
    pub fn rewrite_metadata(&self, meta: &mut Metadata) {
        let src = self.dims.arch.clone();
        let n = self.layers.len() as u32;
        if self.out_arch != src {
            for (k, _) in meta.iter_mut() {
                if let Some(rest) = k.strip_prefix(&format!("{src}.")) {
                    *k = format!("{}.{rest}", self.out_arch);
                }
            }
            meta_set(meta, "general.architecture", GgufValue::String(self.out_arch.clone()));
        }
        let a = &self.out_arch;
        meta_set(meta, &format!("{a}.block_count"), GgufValue::U32(n));
        if self.uniform() {
            let l = &self.layers[0];
            meta_set(meta, &format!("{a}.feed_forward_length"), GgufValue::U32(l.ffn.len() as u32));
            if src != "gpt2" {
                meta_set(meta, &format!("{a}.attention.head_count"), GgufValue::U32(l.heads.len() as u32));
                meta_set(meta, &format!("{a}.attention.head_count_kv"), GgufValue::U32(l.kv_heads.len() as u32));
            }
        } else {
            let arr = |f: &dyn Fn(&LayerPlan) -> usize| GgufValue::i32s(self.layers.iter().map(|l| f(l) as i32));
            meta_set(meta, &format!("{a}.feed_forward_length"), arr(&|l| l.ffn.len()));
            meta_set(meta, &format!("{a}.attention.head_count"), arr(&|l| l.heads.len()));
            meta_set(meta, &format!("{a}.attention.head_count_kv"), arr(&|l| l.kv_heads.len()));
        }
        if self.heads_changed() || self.out_arch == "deci" {
            // head_dim no longer equals n_embd / n_head: say it explicitly.
            meta_set(meta, &format!("{a}.attention.key_length"), GgufValue::U32(self.dims.head_dim as u32));
            meta_set(meta, &format!("{a}.attention.value_length"), GgufValue::U32(self.dims.head_dim as u32));
        }
    }
}

/// Column energies ‖W[:,c]‖² of a row-major [rows, cols] matrix.
pub fn column_energy(w: &[f32], cols: usize) -> Vec<f64> {
    let mut e = vec![0f64; cols];
    for row in w.chunks_exact(cols) {
        for (acc, &x) in e.iter_mut().zip(row) {
            *acc += x as f64 * x as f64;
        }
    }
    e
}

/// Indices of the `k` highest scores, ascending.
fn top_k(scores: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut kept: Vec<usize> = idx.into_iter().take(k).collect();
    kept.sort_unstable();
    kept
}

/// Round a kept width to a multiple of `align` (at least `align`, at most `full`).
fn align_width(w: usize, align: usize, full: usize) -> usize {
    if align <= 1 {
        return w.clamp(1, full);
    }
    let rounded = ((w as f64 / align as f64).round() as usize).max(1) * align;
    rounded.min(full / align * align).max(align.min(full))
}

/// Reads a tensor (GGUF name) as f32 in GGUF row-major layout.
pub type TensorReader<'a> = dyn Fn(&str) -> Result<Vec<f32>> + 'a;

/// Plan depth and width pruning.
pub fn plan(spec: &PruneSpec, dims: &Dims, calib: Option<&Calibration>, read: &TensorReader) -> Result<StructuredPlan> {
    let mut p = StructuredPlan::identity(dims);
    p.block_influence = calib.map(|c| c.block_influence.clone());
    // Depth.
    let drop: Vec<usize> = match (&spec.drop_layers_list, &spec.drop_layers) {
        (Some(list), _) => {
            let mut l = list.clone();
            l.sort_unstable();
            l.dedup();
            if let Some(bad) = l.iter().find(|&&i| i >= dims.n_layer) {
                bail!("--drop-layers-list: block {bad} does not exist (the model has {} blocks)", dims.n_layer);
            }
            l
        }
        (None, Some(d)) if spec.wants_depth() => {
            let n = match d {
                DropLayers::Count(n) => *n,
                DropLayers::Ratio(r) => (r * dims.n_layer as f64).round() as usize,
            };
            if n == 0 {
                bail!(
                    "--drop-layers {} drops no block of {} (one block is {:.1}% of them): ask for more",
                    match d {
                        DropLayers::Count(n) => n.to_string(),
                        DropLayers::Ratio(r) => r.to_string(),
                    },
                    dims.n_layer,
                    100.0 / dims.n_layer as f64
                );
            }
            let bi = calib.map(|c| &c.block_influence).ok_or_else(|| anyhow!("--drop-layers needs calibration"))?;
            let neg: Vec<f64> = bi.iter().map(|b| -b).collect();
            top_k(&neg, n)
        }
        _ => vec![],
    };
    if drop.len() >= dims.n_layer {
        bail!("dropping {} of {} blocks leaves none", drop.len(), dims.n_layer);
    }
    p.layers.retain(|l| !drop.contains(&l.source));
    p.dropped = drop;

    if let Some(r) = spec.prune_ffn.filter(|r| *r > 0.0) {
        let calib = calib.ok_or_else(|| anyhow!("--prune-ffn needs calibration"))?;
        let scores: Vec<Vec<f64>> = p
            .layers
            .iter()
            .map(|l| {
                let name = tensor_name::name(l.source, "ffn_down.weight");
                let ms = calib
                    .input_mean_squares(&name)
                    .ok_or_else(|| anyhow!("calibration has no statistics for {name}"))?;
                let energy = column_energy(&read(&name)?, dims.n_ff);
                Ok(ms.iter().zip(energy).map(|(&m, e)| m as f64 * e).collect())
            })
            .collect::<Result<_>>()?;
        let widths = allocate(&scores, 1.0 - r, spec.allocation, spec.align, dims.n_ff)?;
        for ((l, s), w) in p.layers.iter_mut().zip(&scores).zip(widths) {
            l.ffn = top_k(s, w);
        }
        // A request that rounds to nothing would write the unpruned model under a pruned name.
        if p.layers.iter().all(|l| l.ffn.len() == dims.n_ff) {
            bail!(
                "--prune-ffn {r} removes no channel of {} (after rounding to --align {}): ask for more",
                dims.n_ff,
                spec.align
            );
        }
    }

    if let Some(r) = spec.prune_heads.filter(|r| *r > 0.0) {
        if dims.arch == "qwen2" {
            bail!("--prune-heads: llama.cpp's qwen2 graph sizes attention by the embedding width (n_embd), so it cannot run with fewer heads; prune Qwen2 with --prune-ffn, --drop-layers or --sparsity");
        }
        if dims.arch == "gpt2" {
            bail!("--prune-heads: llama.cpp's GPT-2 graph cannot run with fewer heads than n_embd / head_dim (its attention width is tied to n_embd); prune GPT-2 with --prune-ffn, --drop-layers or --sparsity");
        }
        let calib = calib.ok_or_else(|| anyhow!("--prune-heads needs calibration"))?;
        plan_heads(&mut p, spec, r, calib, read)?;
        if p.layers.iter().all(|l| l.heads.len() == dims.n_head) {
            bail!(
                "--prune-heads {r} removes no head: {} query heads share {} KV heads ({} each), and removing one \
                 head from each group is {:.0}% of them: ask for more",
                dims.n_head,
                dims.n_head_kv,
                dims.n_head / dims.n_head_kv.max(1),
                100.0 * dims.n_head_kv as f64 / dims.n_head as f64
            );
        }
    }

    if !p.uniform() {
        if dims.arch != "llama" {
            bail!("unequal per-layer widths cannot be expressed for {} (llama.cpp's {} has one width for every block; only llama has the per-layer deci form); use --width-allocation uniform", dims.arch, dims.arch);
        }
        p.out_arch = "deci".into();
    }
    Ok(p)
}

/// Per-layer kept counts for a keep fraction: uniform, or by ranking scores across layers (raw,
/// or standardized per layer).
fn allocate(scores: &[Vec<f64>], keep: f64, allocation: Allocation, align: usize, full: usize) -> Result<Vec<usize>> {
    if align > full {
        bail!("--align {align} is wider than the layer ({full})");
    }
    if let Some(l) = scores.iter().position(|s| s.iter().any(|v| !v.is_finite())) {
        bail!("layer {l}'s pruning scores are not finite (a calibration with NaN or infinite activations?)");
    }
    let widths: Vec<usize> = match allocation {
        Allocation::Uniform => vec![(keep * full as f64).round() as usize; scores.len()],
        Allocation::Global => ranked_widths(scores, scores, keep),
        Allocation::Standardized => {
            ranked_widths(&scores.iter().map(|s| standardized(s)).collect::<Vec<_>>(), scores, keep)
        }
    };
    if widths.contains(&0) {
        bail!("the request would remove every channel of a layer");
    }
    Ok(widths.into_iter().map(|w| align_width(w, align, full)).collect())
}

/// Every layer keeps its best unit; the rest go to the highest `keys` across layers, equal keys
/// to the higher raw `scores` (with two units per layer, z-scores are always ±1: the raw scores
/// decide between layers, not the layer order).
fn ranked_widths(keys: &[Vec<f64>], scores: &[Vec<f64>], keep: f64) -> Vec<usize> {
    let total: usize = keys.iter().map(Vec::len).sum();
    let k = ((keep * total as f64).round() as usize).max(keys.len());
    let mut w = vec![1usize; keys.len()];
    let mut rest: Vec<(f64, f64, usize)> = Vec::new();
    for (l, (key, raw)) in keys.iter().zip(scores).enumerate() {
        let best = top_k(key, 1)[0];
        rest.extend((0..key.len()).filter(|&i| i != best).map(|i| (key[i], raw[i], l)));
    }
    rest.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.total_cmp(&a.1)));
    for &(_, _, l) in rest.iter().take(k - keys.len()) {
        w[l] += 1;
    }
    w
}

/// A layer's scores as z-scores, FLAP's standardization: raw scores are not comparable across
/// layers (on the default model a raw global ranking empties a few layers and the PPL ratio
/// reaches 4.7 at 25% of FFN channels). Scores are ≥ 0, so a layer's lowest z-score is
/// −mean/sd: a heavy-tailed layer has its bulk just below 0 and, at a mild ratio, is kept almost
/// whole while evenly spread layers give up more (on the default model FFN 25% keeps 10 of 30
/// blocks whole); at a high ratio it is the other way round. Equal scores are all 0.
fn standardized(s: &[f64]) -> Vec<f64> {
    let n = s.len().max(1) as f64;
    let mean = s.iter().sum::<f64>() / n;
    let sd = (s.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    s.iter().map(|v| if sd > 0.0 { (v - mean) / sd } else { 0.0 }).collect()
}

fn plan_heads(
    p: &mut StructuredPlan,
    spec: &PruneSpec,
    r: f64,
    calib: &Calibration,
    read: &TensorReader,
) -> Result<()> {
    let d = p.dims.clone();
    let group = d.n_head / d.n_head_kv;
    let mode = if group == 1 { HeadsMode::KvGroups } else { spec.heads_mode };
    // Head scores per layer.
    let scores: Vec<Vec<f64>> = p
        .layers
        .iter()
        .map(|l| {
            let name = tensor_name::name(l.source, "attn_output.weight");
            let ms =
                calib.input_mean_squares(&name).ok_or_else(|| anyhow!("calibration has no statistics for {name}"))?;
            let energy = column_energy(&read(&name)?, d.n_head * d.head_dim);
            Ok((0..d.n_head)
                .map(|h| (h * d.head_dim..(h + 1) * d.head_dim).map(|c| ms[c] as f64 * energy[c]).sum())
                .collect())
        })
        .collect::<Result<_>>()?;
    // Units: KV groups (sum of their heads) or, per group, the heads themselves.
    let unit_scores: Vec<Vec<f64>> = match mode {
        HeadsMode::KvGroups => scores.iter().map(|s| s.chunks(group).map(|g| g.iter().sum()).collect()).collect(),
        HeadsMode::PerGroup => scores.clone(),
    };
    let full_units = unit_scores[0].len();
    let every_head = || {
        anyhow!("--prune-heads {r} would remove every head of a layer ({} heads, {} KV heads)", d.n_head, d.n_head_kv)
    };
    let mut counts = match (mode, spec.allocation) {
        (HeadsMode::KvGroups, _) => {
            allocate(&unit_scores, 1.0 - r, spec.allocation, 1, full_units).map_err(|_| every_head())?
        }
        (HeadsMode::PerGroup, Allocation::Uniform) => {
            // The same number of query heads kept in every KV group.
            let per_group = ((1.0 - r) * group as f64).round() as usize;
            vec![per_group * d.n_head_kv; scores.len()]
        }
        (HeadsMode::PerGroup, Allocation::Global | Allocation::Standardized) => {
            allocate(&unit_scores, 1.0 - r, spec.allocation, 1, full_units)
                .map_err(|_| every_head())?
                .into_iter()
                .map(|c| ((c as f64 / d.n_head_kv as f64).round() as usize) * d.n_head_kv)
                .collect()
        }
    };
    if counts.contains(&0) {
        return Err(every_head());
    }
    // Attention width (heads × head_dim) rounded down to a multiple of --align where possible.
    let (step, heads_per_count) = match mode {
        HeadsMode::KvGroups => (1, group),       // counts are KV groups
        HeadsMode::PerGroup => (d.n_head_kv, 1), // counts are query heads, a multiple of n_head_kv
    };
    if spec.align > 1 {
        for c in counts.iter_mut() {
            while *c > 0 && !(*c * heads_per_count * d.head_dim).is_multiple_of(spec.align) {
                *c -= step.min(*c);
            }
        }
    }
    for (l, (s, &c)) in p.layers.iter_mut().zip(scores.iter().zip(&counts)) {
        if c == 0 {
            bail!(
                "--prune-heads {r} would remove every head of block {} (heads {}, KV heads {})",
                l.source,
                d.n_head,
                d.n_head_kv
            );
        }
        match mode {
            HeadsMode::KvGroups => {
                let gs: Vec<f64> = s.chunks(group).map(|g| g.iter().sum()).collect();
                l.kv_heads = top_k(&gs, c);
                l.heads = blocks(&l.kv_heads, group);
            }
            HeadsMode::PerGroup => {
                let per = c / d.n_head_kv;
                l.heads = (0..d.n_head_kv)
                    .flat_map(|g| top_k(&s[g * group..(g + 1) * group], per).into_iter().map(move |h| g * group + h))
                    .collect();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims() -> Dims {
        Dims {
            arch: "llama".into(),
            n_layer: 5,
            n_embd: 8,
            n_head: 4,
            n_head_kv: 2,
            n_ff: 6,
            head_dim: 2,
            n_ctx_train: 64,
        }
    }

    #[test]
    fn standardized_allocation_ranks_z_scores_not_raw_scores() {
        // Layer 0's scores are a hundred times layer 1's, with one unit far above its others;
        // layer 1's are evenly spread.
        let scores = vec![vec![100.0, 100.0, 100.0, 400.0], vec![1.0, 2.0, 3.0, 4.0]];
        // Raw: layer 1 keeps only its best unit, whatever its spread.
        assert_eq!(allocate(&scores, 0.5, Allocation::Global, 1, 4).unwrap(), vec![3, 1]);
        // z-scores: layer 0's are −0.58 (three) and 1.73, layer 1's −1.34, −0.45, 0.45, 1.34; the
        // four kept are each layer's best (1.73, 1.34) and layer 1's next two (0.45, −0.45).
        let z = standardized(&scores[0]);
        assert!((z[0] + 1.0 / 3f64.sqrt()).abs() < 1e-12 && (z[3] - 3f64.sqrt()).abs() < 1e-12, "{z:?}");
        assert_eq!(allocate(&scores, 0.5, Allocation::Standardized, 1, 4).unwrap(), vec![1, 3]);
        assert_eq!(standardized(&[2.0, 2.0]), vec![0.0, 0.0], "equal scores");
        // Two units per layer: z-scores are ±1 everywhere, and the raw scores break the tie.
        let pairs = vec![vec![1.0, 2.0], vec![10.0, 20.0], vec![5.0, 6.0]];
        assert_eq!(allocate(&pairs, 2.0 / 3.0, Allocation::Standardized, 1, 2).unwrap(), vec![1, 2, 1]);
        assert!(allocate(&[vec![1.0, f64::NAN]], 0.5, Allocation::Standardized, 1, 2).is_err(), "NaN scores");
    }

    #[test]
    fn a_plan_opened_from_a_block_prunes_only_the_blocks_before_it() {
        let d = dims();
        let mut plan = StructuredPlan::identity(&d);
        plan.layers.retain(|l| l.source != 1 && l.source != 3);
        plan.dropped = vec![1, 3];
        for l in &mut plan.layers {
            l.ffn = vec![0, 2, 5];
        }
        let open = plan.opened_from(2);
        assert_eq!(open.dropped, vec![1]);
        assert_eq!(open.layers.iter().map(|l| l.source).collect::<Vec<_>>(), vec![0, 2, 3, 4]);
        assert_eq!(open.layers[0].ffn, vec![0, 2, 5]);
        assert!(open.layers[1..].iter().all(|l| l.ffn.len() == d.n_ff), "blocks 2.. whole");
        assert_eq!(open.out_arch, "deci", "narrowed blocks before whole ones");
        // Block 3 (source) is written as blk.2, whole; block 2 as blk.1.
        assert_eq!(open.tensor_op("blk.3.ffn_down.weight").unwrap().new_name, "blk.2.ffn_down.weight");
        assert_eq!(open.tensor_op("blk.3.ffn_down.weight").unwrap().cols, None);
        assert_eq!(open.tensor_op("blk.0.ffn_down.weight").unwrap().cols, Some(vec![0, 2, 5]));
        // Opened before any pruned block: the unpruned model, in its own architecture.
        let whole = plan.opened_from(0);
        assert_eq!((whole.dropped.len(), whole.layers.len(), whole.out_arch.as_str()), (0, 5, "llama"));
    }
}

//! Pruning inside the conversion: calibrate when the request needs statistics, plan the
//! structured part, and attach to every tensor its selection, new name and row sparsity — all
//! before the output file is created, so an impossible request writes nothing.

use super::request::{self, needs_moments, sparsity_applies};
use super::ConvertOptions;
use crate::arch::{apply_transform, PlannedTensor, Selection};
use crate::calib::gaps::GapMoments;
use crate::calib::{
    calibrate, fingerprint, measure_gaps, moments, CalibModel, CalibOptions, Calibration, MomentsRequest,
};
use crate::gguf::imatrix::Imatrix;
use crate::gguf::{meta_set, GgufValue, Metadata, TensorInfo};
use crate::prune::structured::{self, Dims, StructuredPlan};
use crate::prune::unstructured::{SparsityMethod, NM};
use crate::quant::gptq::QuantMethod;
use crate::quant::levels::level_range;
use crate::quant::mix::Scheme;
use crate::quant::GgmlType;
use crate::source::TensorSource;
use anyhow::{anyhow, bail, Result};
use std::collections::HashMap;
use std::path::Path;

/// Unstructured pruning of one tensor's rows.
#[derive(Clone, Debug)]
pub struct RowSparsity {
    pub ratio: f64,
    pub nm: Option<NM>,
    /// Wanda's input-channel norms (None: magnitude).
    pub norms: Option<Vec<f32>>,
}

/// What unstructured pruning achieved on one tensor.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SparsityStat {
    pub tensor: String,
    pub ggml_type: String,
    pub requested: f64,
    /// Fraction of weights zeroed by pruning.
    pub achieved: f64,
    /// Fraction of exact zeros after encoding (affine formats such as Q4_K/Q4_1 do not keep zeros).
    pub after_quantization: f64,
}

pub struct Pruned {
    pub planned: Vec<PlannedTensor>,
    /// The calibration, when one was made or loaded: its imatrix also steers quantization.
    pub calibration: Option<Calibration>,
    pub sparsity: HashMap<String, RowSparsity>,
    pub structure: Option<StructuredPlan>,
    /// `--heal`: the role of each tensor healing touches.
    pub healing: HashMap<String, super::healing::HealingPlan>,
}

pub fn plan(
    input: &Path,
    src: &dyn TensorSource,
    meta: &mut Metadata,
    planned: Vec<PlannedTensor>,
    opts: &ConvertOptions,
) -> Result<Pruned> {
    let spec = &opts.prune;
    request::check(opts, meta, &planned)?;
    if spec.is_noop() {
        // `convert --calib FILE` without pruning: calibrate (or load FILE) for the quantizers;
        // GPTQ calibrates for its second moments.
        let wanted = match (&spec.calib, &opts.imatrix) {
            (Some(_), None) => !opts.scheme.is_float(),
            _ => needs_moments(opts),
        };
        let calibration = if wanted {
            Some(calibration(input, src, meta, &Dims::from_metadata(meta)?, &planned, opts)?)
        } else {
            None
        };
        return Ok(Pruned { planned, calibration, sparsity: HashMap::new(), structure: None, healing: HashMap::new() });
    }
    let dims = Dims::from_metadata(meta)?;
    let calib = if spec.needs_calibration() || needs_moments(opts) {
        Some(calibration(input, src, meta, &dims, &planned, opts)?)
    } else {
        None
    };

    let mut gap_moments = vec![];
    let (planned, structure) = if spec.wants_structured() {
        let read = |name: &str| -> Result<Vec<f32>> {
            let p = planned.iter().find(|p| p.name == name).ok_or_else(|| anyhow!("no tensor {name}"))?;
            let info = src.tensor(&p.source).ok_or_else(|| anyhow!("no tensor {}", p.source))?;
            let data = src.read_f32(&p.source)?;
            apply_transform(p.transform, data, &info.shape.clone())
        };
        let mut plan = structured::plan(spec, &dims, calib.as_ref(), &read)?;
        if let Some(first) = opts.stage.open_from {
            plan = plan.opened_from(first);
        }
        if spec.heal {
            gap_moments = match &opts.stage.heal_targets {
                // A stage's model heals only the blocks before its open ones.
                Some(targets) => {
                    targets.iter().filter(|t| opts.stage.open_from.is_none_or(|f| t.gap.kept < f)).cloned().collect()
                }
                None => {
                    let model = Unpruned { input, src, meta, planned: &planned };
                    gap_pass(&model, &dims, &plan, calib.as_ref(), opts)?
                }
            };
        }
        plan.rewrite_metadata(meta);
        let mut out = Vec::new();
        for mut p in planned {
            let Some(op) = plan.tensor_op(&p.name) else { continue };
            if op.rows.is_some() || op.cols.is_some() {
                let new_shape = op.new_shape(&p.shape);
                p.select = Some(Selection { rows: op.rows, cols: op.cols, from_shape: p.shape.clone() });
                p.shape = new_shape;
            }
            p.name = op.new_name;
            out.push(p);
        }
        (out, Some(plan))
    } else {
        (planned, None)
    };
    let (planned, healing) =
        if spec.heal { super::healing::plan(planned, &dims.arch, &gap_moments) } else { (planned, HashMap::new()) };

    let mut sparsity = HashMap::new();
    if spec.wants_unstructured() {
        for p in planned.iter().filter(|p| sparsity_applies(&p.name, spec.sparsity_all)) {
            let norms = match (spec.method, &calib) {
                // SparseGPT's own mask comes from the sweep; Wanda's is its uncompensated baseline.
                (SparsityMethod::Wanda | SparsityMethod::Sparsegpt, Some(c))
                    if crate::util::tensor_name::in_block(&p.name) =>
                {
                    let n = c
                        .input_norms(&p.stats_name)
                        .ok_or_else(|| anyhow!("calibration has no statistics for {}", p.stats_name))?;
                    Some(select_cols(n, p))
                }
                _ => None,
            };
            sparsity.insert(p.name.clone(), RowSparsity { ratio: spec.effective_sparsity(), nm: spec.nm, norms });
        }
    }
    Ok(Pruned { planned, calibration: calib, sparsity, structure, healing })
}

/// A per-column vector of the unpruned tensor, restricted to the columns the selection keeps.
fn select_cols(v: Vec<f32>, p: &PlannedTensor) -> Vec<f32> {
    match p.select.as_ref().and_then(|s| s.cols.as_ref()) {
        Some(cols) => cols.iter().map(|&c| v[c]).collect(),
        None => v,
    }
}

/// The imatrix weights of a planned tensor (by its unpruned name, restricted to kept columns); an
/// entry of the wrong size is an error.
pub fn imatrix_weights(m: &Imatrix, p: &PlannedTensor) -> Result<Option<Vec<f32>>> {
    let Some(&cols) = p.shape.last() else { return Ok(None) };
    let full_cols = p.select.as_ref().map_or(cols, |s| *s.from_shape.last().unwrap_or(&1));
    Ok(m.weights_checked(&p.stats_name, full_cols)?.map(|w| select_cols(w, p)))
}

/// Load the calibration file when it exists (checking it is this model's), else calibrate and
/// save it when a path was given.
pub(super) fn calibration(
    input: &Path,
    src: &dyn TensorSource,
    meta: &Metadata,
    dims: &Dims,
    planned: &[PlannedTensor],
    opts: &ConvertOptions,
) -> Result<Calibration> {
    let spec = &opts.prune;
    let list: Vec<(String, Vec<u64>)> = planned.iter().map(|p| (p.name.clone(), p.ne())).collect();
    let fp = fingerprint(&dims.arch, &list);
    if let Some(c) = &opts.stage.calibration {
        if c.fingerprint != fp {
            bail!("the calibration given is for another model (fingerprint {:?}, this model is {fp:?})", c.fingerprint);
        }
        return Ok(c.clone());
    }
    if let Some(path) = spec.calib.as_ref().filter(|p| p.exists()) {
        let c = Calibration::load(path, &fp)?;
        if needs_moments(opts) && c.moments.is_none() {
            bail!(
                "{}: this calibration file has no second moments (made without GPTQ/SparseGPT); give another --calib path to calibrate again",
                path.display()
            );
        }
        return Ok(c);
    }
    let mut copts = calib_options(opts, dims)?;
    copts.moments = needs_moments(opts).then(|| moments_request(spec.calib.as_deref(), planned, dims.n_layer));
    let model = Unpruned { input, src, meta, planned };
    let c = model.run(|m| calibrate(m, &fp, dims.n_layer, &copts, opts.quiet))?;
    let mut c = c;
    match (&spec.calib, &copts.moments) {
        (Some(_), Some(_)) => {} // written with its moments
        (Some(path), None) => {
            c.save(path)?;
            c.imatrix.path = Some(path.clone()); // as if loaded from it (quantize.imatrix.file)
        }
        (None, Some(req)) => {
            // A calibration nobody asked to keep: its memory map stays readable once unlinked.
            let _ = std::fs::remove_file(&req.path);
            c.imatrix.path = None;
        }
        (None, None) => {}
    }
    Ok(c)
}

/// The calibration text, chunks and window size asked for (without moments).
pub(super) fn calib_options(opts: &ConvertOptions, dims: &Dims) -> Result<CalibOptions> {
    let spec = &opts.prune;
    // Windows of 512 tokens, or the model's whole context if shorter (GPT-2's positions end there).
    if let Some(n) = spec.calib_ctx.filter(|&n| n > dims.n_ctx_train || n < 16) {
        bail!(
            "--ctx-size {n} is impossible: the model's positions end at {} and llama.cpp's imatrix ignores batches under 16 tokens",
            dims.n_ctx_train
        );
    }
    Ok(CalibOptions {
        text: spec.calib_text_path()?,
        chunks: spec.calib_chunks,
        n_ctx: spec.calib_ctx.unwrap_or(512).min(dims.n_ctx_train),
        threads: opts.threads,
        moments: None,
    })
}

/// Run over the chunks `calib` was made with (a calibration file may have been made with others
/// than those asked for now).
pub(super) fn same_chunks(copts: &mut CalibOptions, calib: &Calibration) {
    let m = &calib.imatrix;
    if m.chunk_count > 0 && m.chunk_size > 0 {
        copts.chunks = m.chunk_count as usize;
        copts.n_ctx = m.chunk_size as usize;
    }
}

/// The unpruned model as the conversion sees it, for passes over the calibration text.
struct Unpruned<'a> {
    input: &'a Path,
    src: &'a dyn TensorSource,
    meta: &'a Metadata,
    planned: &'a [PlannedTensor],
}

impl Unpruned<'_> {
    /// Run `f` on the model as llama.cpp loads it: the input GGUF itself, or for a checkpoint a
    /// model llama.cpp builds from the plan, asking for each tensor (no copy on disk).
    fn run<R>(&self, f: impl FnOnce(CalibModel) -> Result<R>) -> Result<R> {
        if self.input.is_file() {
            return f(CalibModel::File(self.input));
        }
        let (src, planned) = (self.src, self.planned);
        let mut meta = self.meta.clone();
        meta_set(&mut meta, "general.file_type", GgufValue::U32(Scheme::F32.file_type()));
        let tensors = calibration_tensors(src, planned)?;
        let mut filler = |name: &str, ty: GgmlType, ne: &[u64], out: &mut [u8]| fill(src, planned, name, ty, ne, out);
        f(CalibModel::Parts { metadata: &meta, tensors: &tensors, filler: &mut filler })
    }
}

/// Run `f` on the unpruned model (see [`Unpruned::run`]).
pub(super) fn run_unpruned<R>(
    input: &Path,
    src: &dyn TensorSource,
    meta: &Metadata,
    planned: &[PlannedTensor],
    f: impl FnOnce(CalibModel) -> Result<R>,
) -> Result<R> {
    Unpruned { input, src, meta, planned }.run(f)
}

/// `--heal` with dropped blocks: the moments of each gap, from one more pass over the
/// calibration text on the unpruned model (the chunks the calibration file was made with).
fn gap_pass(
    model: &Unpruned,
    dims: &Dims,
    plan: &StructuredPlan,
    calib: Option<&Calibration>,
    opts: &ConvertOptions,
) -> Result<Vec<std::sync::Arc<GapMoments>>> {
    let gaps = crate::calib::gaps::gaps(&plan.dropped, dims.n_layer);
    if gaps.is_empty() {
        return Ok(vec![]);
    }
    let mut copts = calib_options(opts, dims)?;
    if let Some(c) = calib {
        same_chunks(&mut copts, c);
    }
    let moments = model.run(|m| measure_gaps(m, &gaps, &copts, opts.quiet))?;
    Ok(moments.into_iter().map(std::sync::Arc::new).collect())
}

/// The tensors of the model calibration runs, in F32 (exactly the values a conversion writes) —
/// unless F32 would not fit in the memory available, when 16-bit sources keep their own type
/// (also exact: every F16/BF16 value converts to F32 and back unchanged).
fn calibration_tensors(src: &dyn TensorSource, planned: &[PlannedTensor]) -> Result<Vec<TensorInfo>> {
    let f32_bytes: u64 = planned.iter().map(|p| 4 * p.n_elements() as u64).sum();
    let fits = crate::util::mem::available_bytes().is_none_or(|avail| f32_bytes < avail / 10 * 7);
    planned
        .iter()
        .map(|p| {
            let dtype = src.tensor(&p.source).map(|t| t.dtype).unwrap_or(GgmlType::F32);
            let keep = !fits && matches!(dtype, GgmlType::F16 | GgmlType::BF16) && p.shape.len() > 1;
            TensorInfo::new(&p.name, p.ne(), if keep { dtype } else { GgmlType::F32 })
        })
        .collect()
}

/// One tensor llama.cpp asks for while building the calibration model: a planned tensor as the
/// conversion would write it; a tied `output.weight`, which is the token embedding; an absent bias
/// or classifier head (zeros, already in `out`); absent rope frequency factors or per-tensor output
/// scales (ones).
/// Each neutral value leaves the computation exactly as without the tensor.
fn fill(
    src: &dyn TensorSource,
    planned: &[PlannedTensor],
    name: &str,
    ty: GgmlType,
    ne: &[u64],
    out: &mut [u8],
) -> Result<()> {
    let find = |n: &str| planned.iter().find(|p| p.name == n);
    let p = match (find(name), name) {
        (Some(p), _) => p,
        (None, "output.weight") => find("token_embd.weight").ok_or_else(|| anyhow!("no token_embd.weight"))?,
        // Zeros (already in `out`): an absent bias; a reranker's classifier head (`cls.*`, Qwen3),
        // which only rank pooling reads, never the next-token logits calibration uses.
        (None, n) if n.ends_with(".bias") || n.starts_with("cls.") => return Ok(()),
        (None, n) if n == "rope_freqs.weight" || n.ends_with("scale") => {
            let ones = vec![1.0f32; ne.iter().product::<u64>() as usize];
            out.copy_from_slice(&crate::quant::quantize(ty, &ones, ones.len())?);
            return Ok(());
        }
        (None, n) => bail!("llama.cpp asks for tensor {n:?}, which the checkpoint does not have"),
    };
    if p.ne() != ne {
        bail!("llama.cpp expects tensor {name:?} as {ne:?}, the plan has {:?}", p.ne());
    }
    let info = src.tensor(&p.source).ok_or_else(|| anyhow!("no tensor {:?}", p.source))?;
    let data = apply_transform(p.transform, src.read_f32(&p.source)?, &info.shape)?;
    let row = *p.shape.last().unwrap_or(&1);
    out.copy_from_slice(&crate::quant::quantize(ty, &data, row)?);
    src.release(&p.source);
    Ok(())
}

/// Where the moments go (the calibration file, or a temporary one), and the memory one pass may
/// hold: a quarter of what is available.
pub(super) fn moments_request(calib: Option<&Path>, planned: &[PlannedTensor], n_layer: usize) -> MomentsRequest {
    let mut per_layer: Vec<Vec<(String, u64)>> = vec![vec![]; n_layer];
    for p in planned.iter().filter(|p| sparsity_applies(&p.name, false)) {
        if let (Some(l), Some(&n)) = (crate::util::tensor_name::block_of(&p.name), p.shape.last()) {
            if l < n_layer {
                per_layer[l].push((p.name.clone(), n as u64));
            }
        }
    }
    let path = match calib {
        Some(p) => p.to_path_buf(),
        None => std::env::temp_dir().join(format!("microscale-moments-{}.gguf", crate::util::atomic::unique_suffix())),
    };
    let budget = crate::util::mem::available_bytes().map_or(4 << 30, |a| (a / 4).max(256 << 20));
    let per_block = per_layer.iter().map(|w| moments::block_bytes(w)).collect();
    MomentsRequest { path, per_block, budget, layers: 0..n_layer }
}

/// Give the healed tensors their moments and kept columns.
pub fn attach_healing(
    jobs: &mut [super::Job],
    plans: &HashMap<String, super::healing::HealingPlan>,
    calib: &Calibration,
) -> Result<()> {
    use super::healing::{Healing, HealingPlan};
    for job in jobs.iter_mut() {
        let Some(plan) = plans.get(&job.planned.name) else { continue };
        job.heal = Some(match plan {
            HealingPlan::Bias => Healing::Bias,
            HealingPlan::Weight { bias, gap } => {
                let p = &job.planned;
                let moments = calib.moments.clone().filter(|m| m.has(&p.stats_name));
                let moments =
                    moments.ok_or_else(|| anyhow!("the calibration has no second moments for {}", p.stats_name))?;
                // A block healed only for the gap after it keeps all its inputs.
                let all = || (0..p.shape.last().copied().unwrap_or(0)).collect();
                let kept = p.select.as_ref().and_then(|s| s.cols.clone()).unwrap_or_else(all);
                let tokens = imatrix_tokens(calib, &p.stats_name);
                Healing::Weight { moments, tokens, kept, bias: bias.clone(), gap: gap.clone() }
            }
        });
    }
    Ok(())
}

/// The calibration tokens behind a tensor's statistics (its imatrix count).
fn imatrix_tokens(calib: &Calibration, name: &str) -> f64 {
    calib.imatrix.entries.get(name).and_then(|e| e.counts.first()).copied().unwrap_or(0.0) as f64
}

/// Give the blocks' linear weights their compensation: GPTQ where the output type is an affine
/// block format, SparseGPT where unstructured pruning asks for it.
pub fn attach_compensation(jobs: &mut [super::Job], calib: &Calibration, opts: &ConvertOptions) -> Result<()> {
    let Some(moments) = calib.moments.clone() else { return Ok(()) };
    let spec = &opts.prune;
    let sparsegpt = spec.needs_moments();
    for job in jobs.iter_mut().filter(|j| sparsity_applies(&j.planned.name, false)) {
        // Under a size budget the type is chosen later, with GPTQ's error: `budget::apply` drops
        // the rounding where it picks a type GPTQ cannot round onto.
        let gptq = opts.quant_method == QuantMethod::Gptq && (opts.budget.is_some() || level_range(job.ty).is_some());
        let mask = (sparsegpt && job.sparsity.is_some()).then(|| (spec.effective_sparsity(), spec.nm));
        if !gptq && mask.is_none() {
            continue;
        }
        if !moments.has(&job.planned.stats_name) {
            bail!("the calibration has no second moments for {}", job.planned.stats_name);
        }
        let tokens = imatrix_tokens(calib, &job.planned.stats_name);
        job.compensation = Some(super::compensation::Compensation { moments: moments.clone(), tokens, gptq, mask });
    }
    Ok(())
}

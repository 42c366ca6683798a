//! The conversion pipeline: a Hugging Face directory or a GGUF file in, a GGUF file out, pruned
//! and quantized in the same pass.
//!
//! Streaming: tensors are planned up front (names, shapes, types: the whole header), then
//! produced in order: read from the memory map, decoded to f32, transformed, pruned, encoded,
//! appended to the output and released. A reading thread decodes the next piece (a block of rows,
//! or a whole re-laid-out tensor) while the current one is encoded in parallel (rayon) and
//! written, so memory holds a few pieces' working sets however large the model is.
//!
//! [`pruning`] plans the pruning inside the pass (calibrating when needed), [`sequential`]
//! calibrates stage by stage on the compressed model for `--sequential`, [`general`] writes the
//! `general.*` keys, [`import`] goes back from GGUF to a Hugging Face directory. Uses every stage
//! below it: `source`, `tokenizer`, `arch`, `calib`, `prune`, `quant`, `gguf`, `util`.

pub mod budget;
pub mod compensation;
pub mod general;
pub mod healing;
pub mod import;
pub mod pruning;
pub mod safetensors_writer;
pub mod sequential;

use crate::arch::{self, apply_transform, PlannedTensor, Selection, Transform};
use crate::gguf::imatrix::Imatrix;
use crate::gguf::{meta_set, GgufValue, GgufWriter, Metadata, TensorInfo};
use crate::prune::unstructured::prune_row;
use crate::prune::PruneSpec;
use crate::quant::mix::{assign_types, requires_imatrix, MixContext, MixFlags, Scheme, TensorTypeOverride};
use crate::quant::GgmlType;
use crate::source::{GgufSource, HfCheckpoint, Overlay, Source, TensorSource};
use crate::tokenizer;
use crate::util::atomic::refuse_overwrite;
use crate::util::progress::Progress;
use anyhow::{anyhow, bail, Context, Result};
use pruning::{RowSparsity, SparsityStat};
use rayon::prelude::*;
use std::path::Path;

/// A float type for `import --dtype` (safetensors holds F32, F16 and BF16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutType {
    F32,
    F16,
    Bf16,
}
crate::impl_choice!(OutType { F32 => "f32", F16 => "f16", Bf16 => "bf16" });

impl OutType {
    pub fn weight_type(self) -> GgmlType {
        match self {
            OutType::F32 => GgmlType::F32,
            OutType::F16 => GgmlType::F16,
            OutType::Bf16 => GgmlType::BF16,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ConvertOptions {
    /// The file's scheme (`--outtype`): a float type or a llama.cpp quantization mix.
    pub scheme: Scheme,
    /// `--tensor-type PATTERN=TYPE` overrides (quantized schemes only, as in llama-quantize).
    pub tensor_types: Vec<TensorTypeOverride>,
    /// `--output-tensor-type`, `--token-embedding-type`, `--leave-output-tensor`, `--pure`.
    pub mix_flags: MixFlags,
    /// Importance weights for the quantizers (`--imatrix`).
    pub imatrix: Option<Imatrix>,
    /// Pruning, applied in the same pass (default: none).
    pub prune: PruneSpec,
    /// Re-encode tensors that are already quantized into another quantized type (llama-quantize's
    /// `--allow-requantize`); refused by default, since the errors compound.
    pub allow_requantize: bool,
    /// Quantize with the calibration's importance matrix when there is one and no `imatrix`
    /// (default); false keeps calibration for pruning only.
    pub use_calib_imatrix: bool,
    /// `--target-size` / `--target-bpw`: the blocks' weight types are chosen to fit this budget.
    pub budget: Option<budget::Budget>,
    /// `--quant-method`: round to nearest (ggml's) or GPTQ onto the same grids.
    pub quant_method: crate::quant::gptq::QuantMethod,
    /// A calibration already made (a sequential one), used instead of calibrating or loading
    /// `prune.calib`.
    pub calibration: Option<crate::calib::Calibration>,
    /// Healing's targets already measured (sequential healing: each stage's against its own
    /// partly compressed model), used instead of the one-shot gap pass.
    pub heal_targets: Option<Vec<std::sync::Arc<crate::calib::gaps::GapMoments>>>,
    /// Write the blocks from this one on uncompressed (F32, not pruned, compensated or
    /// quantized): a sequential stage's model.
    pub open_from: Option<usize>,
    pub threads: usize,
    pub quiet: bool,
}

impl ConvertOptions {
    pub fn new(scheme: Scheme) -> ConvertOptions {
        ConvertOptions {
            scheme,
            tensor_types: vec![],
            mix_flags: MixFlags::default(),
            imatrix: None,
            prune: PruneSpec::default(),
            allow_requantize: false,
            use_calib_imatrix: true,
            budget: None,
            quant_method: Default::default(),
            calibration: None,
            heal_targets: None,
            open_from: None,
            threads: crate::engine::default_threads(),
            quiet: true,
        }
    }
}

/// What a conversion wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ConvertReport {
    pub arch: String,
    pub n_tensors: usize,
    pub n_params: u64,
    pub bytes: u64,
    /// Per pruned tensor: requested and achieved sparsity, before and after quantization.
    pub sparsity: Vec<SparsityStat>,
    /// The structured plan, when blocks, channels or heads were removed.
    pub structure: Option<crate::prune::structured::StructuredPlan>,
    /// Per compensated tensor (GPTQ, SparseGPT): the output error with and without compensation.
    pub compensation: Vec<compensation::CompensationStat>,
}

/// An unpruned conversion's plan: the output's metadata, its tensors, the architecture, and the
/// tensors computed from the config rather than read.
struct SourcePlan {
    metadata: Metadata,
    planned: Vec<PlannedTensor>,
    arch: String,
    generated: Vec<arch::Generated>,
}

fn plan_source(source: &Source, opts: &ConvertOptions) -> Result<SourcePlan> {
    let mut plan = match source {
        Source::Hf(ckpt) => plan_from_hf(ckpt, opts)?,
        Source::Gguf(g) => plan_from_gguf(g, opts)?,
    };
    if opts.prune.heal {
        plan.generated.extend(healing::zero_biases(&plan.planned, &plan.arch));
    }
    Ok(plan)
}

/// The source's tensors and the plan's generated ones, as one source.
fn with_generated<'a>(source: &'a Source, generated: &[arch::Generated]) -> Overlay<'a> {
    Overlay::new(
        source.tensors(),
        generated.iter().map(|g| (g.name.clone(), g.shape.clone(), g.data.clone())).collect(),
    )
}

/// One output tensor: where its data comes from and how it is encoded.
pub struct Job {
    pub planned: PlannedTensor,
    pub ty: GgmlType,
    /// Importance weights for this tensor's columns, from the imatrix.
    pub weights: Option<Vec<f32>>,
    /// Unstructured pruning of its rows.
    pub sparsity: Option<RowSparsity>,
    /// Error compensation (GPTQ rounding, SparseGPT pruning) from the calibration's moments.
    pub compensation: Option<compensation::Compensation>,
    /// `--heal`: refit after structured pruning (applied before compensation).
    pub heal: Option<healing::Healing>,
}

impl Job {
    /// How the tensor's error is compensated, as `prune-plan` shows it: `heal`, `heal (+ blocks
    /// 13–14)` before a gap of dropped blocks, `heal (to the unpruned stream)` for a sequential
    /// healing stage's first block, `sparsegpt`, `gptq`, or several joined by ` + `;
    /// None when plain.
    pub fn compensation_method(&self) -> Option<String> {
        let mut parts: Vec<String> = vec![];
        if let Some(healing::Healing::Weight { gap, .. }) = &self.heal {
            parts.push(match gap {
                Some(g) if g.gap.last == g.gap.kept => "heal (to the unpruned stream)".into(),
                Some(g) if g.gap.last == g.gap.kept + 1 => format!("heal (+ block {})", g.gap.last),
                Some(g) => format!("heal (+ blocks {}–{})", g.gap.kept + 1, g.gap.last),
                None => "heal".into(),
            });
        }
        if let Some(c) = &self.compensation {
            if c.mask.is_some() {
                parts.push("sparsegpt".into());
            }
            if c.gptq {
                parts.push("gptq".into());
            }
        }
        (!parts.is_empty()).then(|| parts.join(" + "))
    }

    /// Bytes the tensor takes in the output.
    pub fn n_bytes(&self) -> u64 {
        let row = *self.planned.shape.last().unwrap_or(&1);
        let rows = self.planned.n_elements() / row.max(1);
        self.ty.row_bytes(row).map(|b| (b * rows) as u64).unwrap_or(0)
    }
}

pub fn convert(input: &Path, output: &Path, opts: &ConvertOptions) -> Result<ConvertReport> {
    refuse_overwrite(input, output)?;
    check_imatrix_names(input, opts)?;
    if opts.prune.sequential > 1 && opts.calibration.is_none() {
        if opts.prune.heal {
            let (calibration, targets) = sequential::healing(input, output, opts)?;
            let opts = ConvertOptions { calibration: Some(calibration), heal_targets: Some(targets), ..opts.clone() };
            return write(input, output, &opts);
        }
        let calibration = Some(sequential::calibration(input, output, opts)?);
        return write(input, output, &ConvertOptions { calibration, ..opts.clone() });
    }
    write(input, output, opts)
}

/// Convert; with `opts.open_from`, the blocks from that one on are written uncompressed (F32: not
/// pruned, compensated or quantized), as a sequential calibration stage runs them.
fn write(input: &Path, output: &Path, opts: &ConvertOptions) -> Result<ConvertReport> {
    let source = Source::open(input)?;
    let SourcePlan { metadata, planned, arch, generated } = plan_source(&source, opts)?;
    let overlay = with_generated(&source, &generated);
    let tensors: &dyn TensorSource = &overlay;
    // Pruning, types and budget are planned (and checked) completely before the output exists.
    let Plan { metadata, mut jobs, structure } = plan_jobs(input, tensors, metadata, planned, opts)?;
    if let Some(first) = opts.open_from {
        // Named by the output's block numbers: blocks dropped before `first` shift the rest down.
        let first = first - structure.as_ref().map_or(0, |s| s.dropped.len());
        let open =
            jobs.iter_mut().filter(|j| crate::calib::moments::layer_of(&j.planned.name).is_some_and(|l| l >= first));
        for j in open {
            (j.ty, j.weights, j.sparsity, j.compensation, j.heal) = (GgmlType::F32, None, None, None, None);
        }
    }
    if !opts.allow_requantize {
        refuse_requantize(input, tensors, &jobs)?;
    }
    let (bytes, sparsity, compensation) = write_gguf(tensors, output, &metadata, &jobs, opts.quiet)?;
    Ok(ConvertReport {
        arch: crate::gguf::meta_get(&metadata, "general.architecture")
            .and_then(|v| v.as_str())
            .unwrap_or(&arch)
            .to_string(),
        n_tensors: jobs.len(),
        n_params: jobs.iter().map(|j| j.planned.n_elements() as u64).sum(),
        bytes,
        sparsity,
        structure,
        compensation,
    })
}

/// A conversion planned but not run: the output's metadata, every tensor's job, and what
/// structured pruning removes.
pub struct Plan {
    pub metadata: Metadata,
    pub jobs: Vec<Job>,
    pub structure: Option<crate::prune::structured::StructuredPlan>,
}

/// Plan a conversion without writing: metadata and every tensor's name, shape and type (for
/// `prune-plan` and dry runs).
pub fn plan_only(input: &Path, opts: &ConvertOptions) -> Result<Plan> {
    check_imatrix_names(input, opts)?;
    let source = Source::open(input)?;
    let SourcePlan { metadata, planned, generated, .. } = plan_source(&source, opts)?;
    let overlay = with_generated(&source, &generated);
    plan_jobs(input, &overlay, metadata, planned, opts)
}

/// Refuse an `--imatrix` none of whose entries names a tensor of the model, and warn about
/// entries that name none, once, before any calibration (a float output does not use it).
fn check_imatrix_names(input: &Path, opts: &ConvertOptions) -> Result<()> {
    let Some(m) = opts.imatrix.as_ref().filter(|_| !opts.scheme.is_float()) else { return Ok(()) };
    m.check_names(model_tensor_names(input)?.iter().map(String::as_str), opts.quiet)
}

/// The GGUF names of a model's tensors (what importance matrices are keyed by), from its plan.
pub fn model_tensor_names(input: &Path) -> Result<Vec<String>> {
    let source = Source::open(input)?;
    let plan = plan_source(&source, &ConvertOptions::new(Scheme::F32))?;
    Ok(plan.planned.into_iter().map(|p| p.stats_name).collect())
}

/// From the source's plan to every output tensor's job: pruning (with calibration when needed),
/// each tensor's type under the mix, the importance matrix's keys, and the size budget.
fn plan_jobs(
    input: &Path,
    tensors: &dyn TensorSource,
    mut metadata: Metadata,
    planned: Vec<PlannedTensor>,
    opts: &ConvertOptions,
) -> Result<Plan> {
    let pruned = pruning::plan(input, tensors, &mut metadata, planned, opts)?;
    let pruning::Pruned { planned, calibration, sparsity, structure, healing } = pruned;
    let imatrix = calibrated_imatrix(opts, calibration.as_ref());
    let mut jobs = typed_jobs(planned, tensors, &metadata, opts, imatrix, sparsity)?;
    if let Some(c) = &calibration {
        pruning::attach_healing(&mut jobs, &healing, c)?;
        pruning::attach_compensation(&mut jobs, c, opts)?;
    }
    add_imatrix_keys(&mut metadata, imatrix);
    if let Some(b) = opts.budget {
        budget::apply(tensors, &metadata, &mut jobs, b, opts.quiet)?;
    }
    Ok(Plan { metadata, jobs, structure })
}

/// Calibrate a model as it converts (no pruning): a GGUF file is run as it is, a checkpoint is
/// built by llama.cpp from the conversion's plan without a copy on disk. For `microscale imatrix`
/// (`opts.prune` holds the calibration text, chunks and context).
pub fn calibrate_model(input: &Path, opts: &ConvertOptions) -> Result<crate::calib::Calibration> {
    one_shot(input, opts, |_| Ok(())).map(|(c, ..)| c)
}

/// The one-shot calibration of the unpruned model (reusing or saving `opts.prune.calib`), with the
/// model's dimensions and planned tensors; `check` sees the dimensions before calibration starts.
fn one_shot(
    input: &Path,
    opts: &ConvertOptions,
    check: impl FnOnce(&crate::prune::structured::Dims) -> Result<()>,
) -> Result<(crate::calib::Calibration, crate::prune::structured::Dims, Vec<PlannedTensor>)> {
    let source = Source::open(input)?;
    let SourcePlan { metadata, planned, generated, .. } = plan_source(&source, opts)?;
    let overlay = with_generated(&source, &generated);
    let dims = crate::prune::structured::Dims::from_metadata(&metadata)?;
    check(&dims)?;
    let c = pruning::calibration(input, &overlay, &metadata, &dims, &planned, opts)?;
    Ok((c, dims, planned))
}

/// Run `f` on the unpruned model of `input` as llama.cpp loads it (the input GGUF, or a model
/// built from a checkpoint's plan): the teacher of sequential healing.
fn with_unpruned<R>(
    input: &Path,
    opts: &ConvertOptions,
    f: impl FnOnce(crate::calib::CalibModel) -> Result<R>,
) -> Result<R> {
    let source = Source::open(input)?;
    let SourcePlan { metadata, planned, generated, .. } = plan_source(&source, opts)?;
    let overlay = with_generated(&source, &generated);
    pruning::run_unpruned(input, &overlay, &metadata, &planned, f)
}

fn plan_from_hf(ckpt: &HfCheckpoint, opts: &ConvertOptions) -> Result<SourcePlan> {
    let plan = arch::plan_hf(ckpt, opts.scheme.file_type())?;
    let vocab = tokenizer::hf::load(ckpt, plan.vocab_size, plan.vocab_style)?;
    let mut meta = general::general_metadata(ckpt, plan.arch)?;
    meta.extend(plan.hparams.iter().cloned());
    // The converter's prepare_metadata writes the quantization version before set_vocab.
    meta.push(("general.quantization_version".into(), GgufValue::U32(2)));
    meta.extend(vocab.to_metadata());
    Ok(SourcePlan { metadata: meta, planned: plan.tensors, arch: plan.arch.to_string(), generated: plan.generated })
}

fn plan_from_gguf(g: &GgufSource, opts: &ConvertOptions) -> Result<SourcePlan> {
    let arch = g.file.architecture()?.to_string();
    let shapes: Vec<(String, Vec<u64>)> = g.file.tensors.iter().map(|t| (t.name.clone(), t.ne.clone())).collect();
    arch::check::check_gguf_tensors(&g.file.metadata, &shapes)
        .map_err(|e| anyhow!("{}: {e:#}", g.file.path.display()))?;
    let mut meta = g.file.metadata.clone();
    meta.retain(|(k, _)| k != "general.alignment");
    meta_set(&mut meta, "general.file_type", GgufValue::U32(opts.scheme.file_type()));
    meta_set(&mut meta, "general.quantization_version", GgufValue::U32(2));
    let planned = g
        .tensors()
        .iter()
        .map(|t| PlannedTensor::new(t.name.clone(), t.name.clone(), t.shape.clone(), Transform::Copy))
        .collect();
    Ok(SourcePlan { metadata: meta, planned, arch, generated: vec![] })
}

/// llama-quantize refuses to re-quantize a tensor that is already quantized (without
/// `--allow-requantize`): the second rounding adds its error to the first. Copying a tensor in its
/// own type, or dequantizing it to a float type, is exact and allowed.
fn refuse_requantize(input: &Path, src: &dyn TensorSource, jobs: &[Job]) -> Result<()> {
    for j in jobs {
        let Some(t) = src.tensor(&j.planned.source) else { continue };
        let copied = t.dtype == j.ty && j.planned.select.is_none() && j.sparsity.is_none();
        if t.dtype.is_quantized() && j.ty.is_quantized() && !copied {
            bail!(
                "{}: tensor {:?} is already {}; re-quantizing it to {} compounds the rounding error (llama-quantize refuses this too). Convert from the F32/F16/BF16 original, or pass --allow-requantize",
                input.display(),
                j.planned.source,
                t.dtype,
                j.ty
            );
        }
    }
    Ok(())
}

/// Give every planned tensor its type under the scheme, as llama-quantize would choose it.
fn typed_jobs(
    planned: Vec<PlannedTensor>,
    src: &dyn TensorSource,
    meta: &Metadata,
    opts: &ConvertOptions,
    imatrix: Option<&Imatrix>,
    mut sparsity: std::collections::HashMap<String, RowSparsity>,
) -> Result<Vec<Job>> {
    let ctx = mix_context(meta, opts, imatrix.is_some());
    let list: Vec<(String, Vec<u64>)> = planned.iter().map(|p| (p.name.clone(), p.ne())).collect();
    let choices = assign_types(&list, opts.scheme, &ctx);
    planned
        .into_iter()
        .zip(choices)
        .map(|(planned, choice)| {
            let source_type = src.tensor(&planned.source).map_or(GgmlType::F32, |t| t.dtype);
            let ty = choice.resolve(source_type);
            let weights = match (imatrix, ty.is_quantized()) {
                (Some(m), true) => pruning::imatrix_weights(m, &planned)?,
                _ => None,
            };
            refuse_missing_imatrix(&planned.name, ty, weights.is_some(), opts.scheme, imatrix)?;
            let sparsity = sparsity.remove(&planned.name);
            Ok(Job { planned, ty, weights, sparsity, compensation: None, heal: None })
        })
        .collect()
}

/// The importance matrix the quantizers use: `--imatrix`, else the calibration's (none for float
/// outputs).
fn calibrated_imatrix<'a>(
    opts: &'a ConvertOptions,
    calibration: Option<&'a crate::calib::Calibration>,
) -> Option<&'a Imatrix> {
    // A float output quantizes nothing: the importance matrix would change no byte, and its
    // quantize.imatrix.* keys would only name a file that played no part.
    if opts.scheme.is_float() {
        return None;
    }
    let calibrated = calibration.filter(|_| opts.use_calib_imatrix).map(|c| &c.imatrix);
    opts.imatrix.as_ref().or(calibrated)
}

/// A file quantized with an importance matrix says so, with the keys llama-quantize writes (after
/// the source's keys, where its overrides land).
fn add_imatrix_keys(meta: &mut Metadata, imatrix: Option<&Imatrix>) {
    if let Some(m) = imatrix {
        for (k, v) in m.quantize_keys() {
            meta_set(meta, &k, v);
        }
    }
}

/// What the mix needs from the output's metadata.
fn mix_context(meta: &Metadata, opts: &ConvertOptions, has_imatrix: bool) -> MixContext {
    let arch = crate::gguf::meta_get(meta, "general.architecture").and_then(|v| v.as_str()).unwrap_or("").to_string();
    let get = |key: &str| {
        crate::gguf::meta_get(meta, &format!("{arch}.{key}")).and_then(|v| v.as_u64().or_else(|| first_of_array(v)))
    };
    let n_layer = get("block_count").unwrap_or(0) as usize;
    let n_head = get("attention.head_count").unwrap_or(0);
    let n_head_kv = get("attention.head_count_kv").unwrap_or(n_head);
    MixContext {
        n_layer,
        n_gqa: n_head.checked_div(n_head_kv).unwrap_or(0) as usize,
        is_70b: (arch == "llama" || arch == "deci") && n_layer == 80,
        has_imatrix,
        overrides: opts.tensor_types.clone(),
        flags: opts.mix_flags.clone(),
    }
}

/// Per-layer head counts (pruned DeciLM files) are arrays: `n_gqa()` reads layer 0's.
fn first_of_array(v: &GgufValue) -> Option<u64> {
    match v {
        GgufValue::Array(_, items) => items.first().and_then(|x| x.as_u64()),
        _ => None,
    }
}

/// llama-quantize refuses the lowest-bit types without importance weights ("the result will be
/// garbage"); so do we, before the output file exists.
fn refuse_missing_imatrix(
    name: &str,
    ty: GgmlType,
    has_weights: bool,
    scheme: Scheme,
    imatrix: Option<&Imatrix>,
) -> Result<()> {
    if has_weights || !requires_imatrix(name, ty, scheme) {
        return Ok(());
    }
    match imatrix {
        None => bail!(
            "--outtype {} needs an importance matrix: tensor {name} would be {ty}, which llama.cpp refuses to quantize without one; pass --imatrix FILE (make one with `microscale imatrix`) or --calib TEXT",
            scheme.name()
        ),
        Some(m) => bail!(
            "{}: no importance weights for tensor {name}, which --outtype {} quantizes to {ty} (llama.cpp refuses this too); the imatrix was made for another model?",
            m.path.as_ref().map_or("imatrix".into(), |p| p.display().to_string()),
            scheme.name()
        ),
    }
}

/// Stream every job's tensor into a new GGUF file; returns the file's size.
fn write_gguf(
    src: &dyn TensorSource,
    output: &Path,
    meta: &Metadata,
    jobs: &[Job],
    quiet: bool,
) -> Result<(u64, Vec<SparsityStat>, Vec<compensation::CompensationStat>)> {
    let headers =
        jobs.iter().map(|j| TensorInfo::new(&j.planned.name, j.planned.ne(), j.ty)).collect::<Result<Vec<_>>>()?;
    let mut writer = GgufWriter::create(output, meta, headers)?;
    let total: u64 = jobs.iter().map(|j| j.planned.n_elements() as u64).sum();
    let progress = Progress::new(total, "converting", quiet);
    let mut stats = Vec::new();
    let mut compensated = Vec::new();
    let mut hessians = compensation::HessianCache::default();
    let mut bias_deltas = std::collections::HashMap::new();
    // Two stages overlap: a reading thread maps, decodes and checks the next piece (waiting on
    // the disk, mostly) while this thread prunes, encodes (on every core) and writes the current
    // one. The channel holds one piece, so memory stays at a few pieces whatever the model's size.
    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Piece>>(1);
        // Streamed pieces' buffers go back to the reader once encoded: a 7B model is 27 GB of
        // f32 in 16 MiB pieces, and fresh allocations would have the kernel zero every page of it.
        let (recycle, recycled) = std::sync::mpsc::sync_channel::<Vec<f32>>(2);
        // The disk runs further ahead still: tensors up to PREFETCH_LEAD bytes past the one being
        // read are advised into the page cache by a third thread (advising can wait on the disk's queue).
        let (reached, reader_at) = std::sync::mpsc::channel::<usize>();
        scope.spawn(move || prefetch_ahead(src, jobs, &reader_at));
        scope.spawn(move || read_pieces(src, jobs, &tx, &recycled, &reached));
        let mut zeros_after = 0usize;
        let mut zeroed = 0usize;
        for piece in rx {
            let (i, data, raw) = match piece? {
                Piece::Rows { job, data, raw } => (job, data, raw),
                Piece::End { job } => {
                    let job = &jobs[job];
                    writer.end_tensor()?;
                    if let Some(s) = &job.sparsity {
                        let total = job.planned.n_elements();
                        stats.push(SparsityStat {
                            tensor: job.planned.name.clone(),
                            ggml_type: job.ty.name().to_string(),
                            requested: s.ratio,
                            achieved: zeroed as f64 / total as f64,
                            after_quantization: zeros_after as f64 / total as f64,
                        });
                    }
                    src.release(&job.planned.source);
                    progress.inc(job.planned.n_elements() as u64);
                    (zeroed, zeros_after) = (0, 0);
                    continue;
                }
                Piece::Begin { job } => {
                    progress.set_message(&jobs[job].planned.name);
                    writer.begin_tensor(&jobs[job].planned.name)?;
                    continue;
                }
            };
            let job = &jobs[i];
            let row_len = *job.planned.shape.last().unwrap_or(&1);
            let encoded;
            let bytes = match data {
                None => raw, // bit-exact pass-through, after the finiteness check
                Some(mut data) => {
                    if let Some(h) = &job.heal {
                        data = healing::apply(job, h, data, &mut bias_deltas, &mut compensated)?;
                    }
                    encoded = match &job.compensation {
                        Some(c) => {
                            let out = compensation::run(job, c, &data, row_len, &mut hessians)?;
                            zeroed += out.pruned;
                            compensated.push(out.stat);
                            match out.bytes {
                                Some(b) => b,
                                None => encode(job, &out.values, row_len)?,
                            }
                        }
                        None => {
                            zeroed += sparsify(job, &mut data, row_len);
                            encode(job, &data, row_len)?
                        }
                    };
                    // Whole re-laid-out tensors are not kept: the pool holds piece-sized buffers.
                    if data.capacity() <= STREAM_ELEMS {
                        let _ = recycle.try_send(data); // dropped when the pool is full or the reader done
                    }
                    &encoded[..]
                }
            };
            if job.sparsity.is_some() {
                zeros_after += count_zeros(job.ty, bytes)?;
            }
            writer.write_data(bytes)?;
            src.release_part(&job.planned.source, raw);
        }
        Ok(())
    })?;
    progress.finish();
    let bytes = writer.finish().with_context(|| format!("writing {}", output.display()))?;
    Ok((bytes, stats, compensated))
}

/// Exact zeros in encoded data (what llama.cpp will multiply by).
fn count_zeros(ty: GgmlType, bytes: &[u8]) -> Result<usize> {
    Ok(crate::quant::dequantize(ty, bytes)?.iter().filter(|x| **x == 0.0).count())
}

/// Values decoded per piece when a tensor streams row block by row block (16 MiB of f32).
const STREAM_ELEMS: usize = 1 << 22;

/// The index of the first NaN or infinity in `data`, if any.
///
/// At 7B this scan touches every one of 6.7e9 values, so it runs in parallel over blocks, each
/// block scanned without a branch per value (an OR over the exponent test, which vectorises; a
/// short-circuiting search per element does not, and took half the conversion's CPU time).
fn first_non_finite(data: &[f32]) -> Option<usize> {
    const BLOCK: usize = 1 << 14;
    let bad = |x: &f32| x.to_bits() & 0x7f80_0000 == 0x7f80_0000;
    let block = data.par_chunks(BLOCK).position_first(|c| c.iter().fold(false, |any, x| any | bad(x)))?;
    let start = block * BLOCK;
    data[start..].iter().position(bad).map(|i| start + i)
}

/// What the reading stage of [`write_gguf`] hands to the encoding stage, in file order.
enum Piece<'a> {
    Begin {
        job: usize,
    },
    /// Whole rows of the job's tensor, decoded, checked and laid out as the output wants them,
    /// and the mapped bytes they came from (released once written). `data` is `None` for a tensor
    /// already in its output type with nothing to do: `raw` is written as it is.
    Rows {
        job: usize,
        data: Option<Vec<f32>>,
        raw: &'a [u8],
    },
    End {
        job: usize,
    },
}

/// The reading stage: every job's tensor as pieces, in order, until done, an error (sent on) or
/// the encoder hanging up.
fn read_pieces<'a>(
    src: &'a dyn TensorSource,
    jobs: &[Job],
    tx: &std::sync::mpsc::SyncSender<Result<Piece<'a>>>,
    recycled: &std::sync::mpsc::Receiver<Vec<f32>>,
    reached: &std::sync::mpsc::Sender<usize>,
) {
    // The source's bytes, read past the page cache where the source can (one reused buffer).
    let mut from_disk = crate::util::direct::DirectBuffer::default();
    for (i, job) in jobs.iter().enumerate() {
        let _ = reached.send(i);
        let buffer = |n: usize| {
            let mut v = recycled.try_recv().unwrap_or_default();
            v.resize(n, 0.0);
            v
        };
        let sent = tx.send(Ok(Piece::Begin { job: i })).is_ok()
            && match tensor_pieces(src, i, job, &buffer, &mut from_disk, &mut |piece| tx.send(Ok(piece)).is_ok()) {
                Ok(more) => more && tx.send(Ok(Piece::End { job: i })).is_ok(),
                Err(e) => {
                    let _ = tx.send(Err(e));
                    false
                }
            };
        if !sent {
            return;
        }
    }
}

/// How far ahead of the reading stage the source's bytes are advised into the page cache. A cold
/// 7B checkpoint is read at disk speed only if several tensors (up to 90 MB each) are in flight;
/// more than this would only push other files out of the cache.
const PREFETCH_LEAD: u64 = 1 << 30;

/// Advise each job's source tensor into the page cache, in order, while the tensors advised but not
/// yet reached by the reader (`reader_at` says which job it is on) total under [`PREFETCH_LEAD`].
/// The pages go to the page cache, not this process's resident set. Ends when the reader does.
fn prefetch_ahead(src: &dyn TensorSource, jobs: &[Job], reader_at: &std::sync::mpsc::Receiver<usize>) {
    // Looked up once: `tensor` is a search by name.
    let bytes: Vec<u64> = jobs.iter().map(|j| src.tensor(&j.planned.source).map_or(0, |t| t.n_bytes())).collect();
    let (mut reader, mut next, mut in_flight) = (0usize, 0usize, 0u64);
    while next < jobs.len() {
        if in_flight < PREFETCH_LEAD || next <= reader {
            if !reads_past_cache(src, &jobs[next]) {
                src.prefetch(&jobs[next].planned.source);
            }
            in_flight += bytes[next];
            next += 1;
            continue;
        }
        let Ok(at) = reader_at.recv() else { return };
        while reader < at.min(next) {
            in_flight -= bytes[reader];
            reader += 1;
        }
    }
}

/// A tensor copied as it is streams straight from the map to the output.
fn copied_as_is(src: &dyn TensorSource, job: &Job) -> bool {
    let p = &job.planned;
    streams(job) && src.tensor(&p.source).is_some_and(|t| t.dtype == job.ty) && job.sparsity.is_none()
}

/// Does the tensor stream in pieces of whole rows (its layout unchanged, nothing solved whole)?
fn streams(job: &Job) -> bool {
    let p = &job.planned;
    p.transform == Transform::Copy && p.select.is_none() && job.compensation.is_none() && job.heal.is_none()
}

/// Will the reader take the tensor's bytes from the disk past the page cache?
fn reads_past_cache(src: &dyn TensorSource, job: &Job) -> bool {
    src.reads_direct(&job.planned.source) && !copied_as_is(src, job)
}

/// Read, check, transform and select one tensor, handing its pieces to `emit` in order (which
/// says whether to go on). Returns `Ok(false)` if `emit` asked to stop.
///
/// Tensors whose layout does not change stream in blocks of whole rows, so even a vocabulary-sized
/// embedding never sits in memory as f32; a tensor already in the output type with nothing to do
/// is copied straight from the map. Re-laid-out tensors (Q/K permutation, transposition, structured
/// selection) are decoded whole.
fn tensor_pieces<'a>(
    src: &'a dyn TensorSource,
    i: usize,
    job: &Job,
    buffer: &dyn Fn(usize) -> Vec<f32>,
    from_disk: &mut crate::util::direct::DirectBuffer,
    emit: &mut dyn FnMut(Piece<'a>) -> bool,
) -> Result<bool> {
    let p = &job.planned;
    let info = src.tensor(&p.source).ok_or_else(|| anyhow!("missing tensor {:?}", p.source))?;
    let raw = src.raw(&p.source)?;
    let row_len = *p.shape.last().unwrap_or(&1);
    let check = |data: &[f32], offset: usize| -> Result<()> {
        match first_non_finite(data) {
            Some(i) => bail!(
                "{}: tensor {:?} has a non-finite value ({}) at index {}",
                src.location(&p.source),
                p.source,
                data[i],
                offset + i
            ),
            None => Ok(()),
        }
    };
    // A compensated tensor is solved whole: its columns' errors reach every later column.
    let direct = reads_past_cache(src, job);
    if streams(job) {
        let src_row_bytes = info.dtype.row_bytes(row_len)?;
        let rows_per_piece = (STREAM_ELEMS / row_len).max(1);
        let pass_through = copied_as_is(src, job);
        // A tensor copied as it is only needs its values checked: one buffer for all its pieces.
        let mut check_only: Option<Vec<f32>> = None;
        for (k, piece) in raw.chunks(rows_per_piece * src_row_bytes).enumerate() {
            let n = piece.len() / src_row_bytes * row_len;
            let mut data = match check_only.take() {
                Some(mut v) => {
                    v.resize(n, 0.0);
                    v
                }
                None => buffer(n),
            };
            let at = k * rows_per_piece * src_row_bytes;
            let (bytes, mapped) = match direct.then(|| src.read_direct(&p.source, at..at + piece.len(), from_disk)) {
                Some(Some(read)) => (read?, &[][..]), // no mapped pages to release
                _ => (piece, piece),
            };
            crate::quant::dequantize_into(info.dtype, bytes, &mut data)?;
            check(&data, k * rows_per_piece * row_len)?;
            let data = if pass_through {
                check_only = Some(data);
                None
            } else {
                Some(data)
            };
            if !emit(Piece::Rows { job: i, data, raw: mapped }) {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    let data = match direct.then(|| src.read_direct(&p.source, 0..raw.len(), from_disk)).flatten() {
        Some(read) => src.decode(&p.source, read?)?,
        None => src.read_f32(&p.source)?,
    };
    check(&data, 0)?;
    let data = apply_transform(p.transform, data, &info.shape)?;
    let data = match (&p.select, &job.heal) {
        // Healing refits from the whole projection: only its rows are selected here.
        (Some(sel), Some(healing::Healing::Weight { .. })) => Selection { cols: None, ..sel.clone() }.apply(&data)?,
        (Some(sel), _) => sel.apply(&data)?,
        (None, _) => data,
    };
    Ok(emit(Piece::Rows { job: i, data: Some(data), raw }))
}

/// A job's tensor in f32 as the conversion encodes it (transformed and selected), before
/// unstructured pruning.
fn job_f32(src: &dyn TensorSource, job: &Job) -> Result<Vec<f32>> {
    let p = &job.planned;
    let info = src.tensor(&p.source).ok_or_else(|| anyhow!("missing tensor {:?}", p.source))?;
    let data = apply_transform(p.transform, src.read_f32(&p.source)?, &info.shape)?;
    match &p.select {
        Some(sel) => sel.apply(&data),
        None => Ok(data),
    }
}

/// Unstructured pruning of every row, in parallel.
fn sparsify(job: &Job, data: &mut [f32], row_len: usize) -> usize {
    let Some(s) = &job.sparsity else { return 0 };
    data.par_chunks_mut(row_len).map(|row| prune_row(row, s.ratio, s.nm, s.norms.as_deref())).sum()
}

fn encode(job: &Job, data: &[f32], row_len: usize) -> Result<Vec<u8>> {
    crate::quant::quantize_weighted(job.ty, data, row_len, job.weights.as_deref())
        .with_context(|| format!("tensor {:?} to {}", job.planned.name, job.ty))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::TensorDesc;
    use std::sync::Mutex;

    /// Tensors of 300 MiB each (declared, never read) that record what is prefetched.
    struct Declared {
        tensors: Vec<TensorDesc>,
        prefetched: Mutex<Vec<String>>,
    }

    impl TensorSource for Declared {
        fn tensors(&self) -> &[TensorDesc] {
            &self.tensors
        }
        fn raw(&self, name: &str) -> Result<&[u8]> {
            bail!("{name} is declared, not stored")
        }
        fn release(&self, _name: &str) {}
        fn release_part(&self, _name: &str, _part: &[u8]) {}
        fn location(&self, name: &str) -> String {
            name.to_string()
        }
        fn prefetch(&self, name: &str) {
            self.prefetched.lock().unwrap().push(name.to_string());
        }
    }

    #[test]
    fn prefetch_runs_a_lead_ahead_of_the_reader_once_per_tensor_in_order() {
        let names: Vec<String> = (0..10).map(|i| format!("t{i}")).collect();
        let shape = vec![75 << 20]; // 300 MiB of F32
        let src = Declared {
            tensors: names
                .iter()
                .map(|n| TensorDesc { name: n.clone(), shape: shape.clone(), dtype: GgmlType::F32 })
                .collect(),
            prefetched: Mutex::new(vec![]),
        };
        let jobs: Vec<Job> = names
            .iter()
            .map(|n| Job {
                planned: PlannedTensor::new(n.clone(), n.clone(), shape.clone(), Transform::Copy),
                ty: GgmlType::F32,
                weights: None,
                sparsity: None,
                compensation: None,
                heal: None,
            })
            .collect();
        let (reached, reader_at) = std::sync::mpsc::channel();
        // The reader is on t0, then reaches t2, then stops. Tensors are advised until 1 GiB is in
        // flight (t0..t3: the fourth crosses it); once t0 and t1 are read, t4 and t5.
        reached.send(0).unwrap();
        reached.send(2).unwrap();
        drop(reached);
        prefetch_ahead(&src, &jobs, &reader_at);
        assert_eq!(*src.prefetched.lock().unwrap(), names[..6]);
    }
}

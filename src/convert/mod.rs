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
pub mod request;
pub mod safetensors_writer;
pub mod sequential;
mod stream;

use crate::arch::{self, PlannedTensor, Transform};
use crate::gguf::imatrix::Imatrix;
use crate::gguf::{meta_set, GgufValue, Metadata};
use crate::prune::PruneSpec;
use crate::quant::mix::{assign_types, requires_imatrix, MixContext, MixFlags, Scheme, TensorTypeOverride};
use crate::quant::GgmlType;
use crate::source::{GgufSource, HfCheckpoint, Overlay, Source, TensorSource};
use crate::tokenizer;
use crate::util::atomic::refuse_overwrite;
use anyhow::{anyhow, bail, Result};
use pruning::{RowSparsity, SparsityStat};
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
    /// `--loss-scale ROLE=F`: the budget weighs the loss of every tensor of this role (`attn_q`,
    /// `ffn_down`, `token_embd`, …) by F (measured sensitivities, as `shrink` finds them).
    pub loss_scales: Vec<(String, f64)>,
    /// The budget's loss table measured before (`loss_table` with the same request): reused
    /// instead of measured again, as `shrink` does for each candidate size.
    pub loss_table: Option<std::sync::Arc<Vec<crate::quant::budget::TensorOptions>>>,
    /// `--quant-method`: round to nearest (ggml's) or GPTQ onto the same grids.
    pub quant_method: crate::quant::gptq::QuantMethod,
    /// What `--sequential` hands a stage's conversion (empty for the user's own request).
    pub stage: StageState,
    pub threads: usize,
    pub quiet: bool,
}

/// The state `--sequential` rewrites from one stage to the next (`sequential.rs`), apart from what
/// the user asked for: empty in a one-shot conversion.
#[derive(Clone, Debug, Default)]
pub struct StageState {
    /// A calibration already made (a sequential one), used instead of calibrating or loading
    /// `prune.calib`.
    pub calibration: Option<crate::calib::Calibration>,
    /// Healing's targets already measured (sequential healing: each stage's against its own
    /// partly compressed model), used instead of the one-shot gap pass.
    pub heal_targets: Option<Vec<std::sync::Arc<crate::calib::gaps::GapMoments>>>,
    /// Write the blocks from this one on uncompressed (F32, not pruned, compensated or
    /// quantized): a sequential stage's model.
    pub open_from: Option<usize>,
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
            loss_scales: vec![],
            loss_table: None,
            quant_method: Default::default(),
            stage: StageState::default(),
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

/// Open `input`, plan it as `opts` asks, and hand `f` the plan and the tensors: the source's and
/// the plan's generated ones, as one source.
fn with_planned_source<R>(
    input: &Path,
    opts: &ConvertOptions,
    f: impl FnOnce(SourcePlan, &dyn TensorSource) -> Result<R>,
) -> Result<R> {
    let source = Source::open(input)?;
    let plan = plan_source(&source, opts)?;
    let generated = plan.generated.iter().map(|g| (g.name.clone(), g.shape.clone(), g.data.clone())).collect();
    let overlay = Overlay::new(source.tensors(), generated);
    f(plan, &overlay)
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
    if opts.prune.sequential > 1 && opts.stage.calibration.is_none() {
        if opts.prune.heal {
            let (calibration, targets) = sequential::healing(input, output, opts)?;
            let stage = StageState { calibration: Some(calibration), heal_targets: Some(targets), open_from: None };
            let opts = ConvertOptions { stage, ..opts.clone() };
            return write(input, output, &opts);
        }
        let calibration = Some(sequential::calibration(input, output, opts)?);
        let stage = StageState { calibration, ..StageState::default() };
        return write(input, output, &ConvertOptions { stage, ..opts.clone() });
    }
    write(input, output, opts)
}

/// Convert; with `opts.stage.open_from`, the blocks from that one on are written uncompressed (F32: not
/// pruned, compensated or quantized), as a sequential calibration stage runs them.
fn write(input: &Path, output: &Path, opts: &ConvertOptions) -> Result<ConvertReport> {
    with_planned_source(input, opts, |plan, tensors| write_planned(input, output, opts, plan, tensors))
}

fn write_planned(
    input: &Path,
    output: &Path,
    opts: &ConvertOptions,
    SourcePlan { metadata, planned, arch, .. }: SourcePlan,
    tensors: &dyn TensorSource,
) -> Result<ConvertReport> {
    // Pruning, types and budget are planned (and checked) completely before the output exists.
    let Plan { metadata, mut jobs, structure, .. } = plan_jobs(input, tensors, metadata, planned, opts)?;
    if let Some(first) = opts.stage.open_from {
        // Named by the output's block numbers: blocks dropped before `first` shift the rest down.
        let first = first - structure.as_ref().map_or(0, |s| s.dropped.len());
        let open =
            jobs.iter_mut().filter(|j| crate::util::tensor_name::block_of(&j.planned.name).is_some_and(|l| l >= first));
        for j in open {
            (j.ty, j.weights, j.sparsity, j.compensation, j.heal) = (GgmlType::F32, None, None, None, None);
        }
    }
    if !opts.allow_requantize {
        refuse_requantize(input, tensors, &jobs)?;
    }
    let (bytes, sparsity, compensation) = stream::write_gguf(tensors, output, &metadata, &jobs, opts.quiet)?;
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
    /// The importance of a tied output head's inputs (the budget weighs the token embedding by it).
    pub tied_output: Option<Vec<f32>>,
}

/// Plan a conversion without writing: metadata and every tensor's name, shape and type (for
/// `prune-plan` and dry runs).
pub fn plan_only(input: &Path, opts: &ConvertOptions) -> Result<Plan> {
    check_imatrix_names(input, opts)?;
    with_planned_source(input, opts, |plan, tensors| plan_jobs(input, tensors, plan.metadata, plan.planned, opts))
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
    let tied_output = tied_output_weights(imatrix, &jobs);
    if let Some(b) = opts.budget {
        let weighing = budget::Weighing {
            tied_output: tied_output.as_deref(),
            scales: &opts.loss_scales,
            table: opts.loss_table.as_deref().map(Vec::as_slice),
        };
        budget::apply(tensors, &metadata, &mut jobs, b, &weighing, opts.quiet)?;
    }
    Ok(Plan { metadata, jobs, structure, tied_output })
}

/// What `--target-size` would choose from, without choosing: every weight matrix's candidate
/// types with their bytes and losses (as `opts` would encode them, before `--loss-scale`).
pub fn loss_table(input: &Path, opts: &ConvertOptions) -> Result<Vec<crate::quant::budget::TensorOptions>> {
    let unbudgeted = ConvertOptions { budget: None, ..opts.clone() };
    with_planned_source(input, opts, |plan, tensors| {
        let Plan { jobs, tied_output, .. } = plan_jobs(input, tensors, plan.metadata, plan.planned, &unbudgeted)?;
        let weighing = budget::Weighing { tied_output: tied_output.as_deref(), scales: &[], table: None };
        budget::measure_all(tensors, &jobs, &weighing, opts.quiet)
    })
}

/// The importance of a tied output head's inputs (the imatrix's `output.weight` entry).
fn tied_output_weights(imatrix: Option<&Imatrix>, jobs: &[Job]) -> Option<Vec<f32>> {
    imatrix.and_then(|m| m.weights("output.weight", tied_output_width(jobs)))
}

/// The row width of the token embedding (what a tied output head's inputs are).
fn tied_output_width(jobs: &[Job]) -> usize {
    jobs.iter()
        .find(|j| j.planned.name == "token_embd.weight")
        .and_then(|j| j.planned.shape.last().copied())
        .unwrap_or(0)
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
    with_planned_source(input, opts, |SourcePlan { metadata, planned, .. }, tensors| {
        let dims = crate::prune::structured::Dims::from_metadata(&metadata)?;
        check(&dims)?;
        let c = pruning::calibration(input, tensors, &metadata, &dims, &planned, opts)?;
        Ok((c, dims, planned))
    })
}

/// Run `f` on the unpruned model of `input` as llama.cpp loads it (the input GGUF, or a model
/// built from a checkpoint's plan): the teacher of sequential healing.
fn with_unpruned<R>(
    input: &Path,
    opts: &ConvertOptions,
    f: impl FnOnce(crate::calib::CalibModel) -> Result<R>,
) -> Result<R> {
    with_planned_source(input, opts, |plan, tensors| {
        pruning::run_unpruned(input, tensors, &plan.metadata, &plan.planned, f)
    })
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

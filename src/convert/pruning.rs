//! Pruning inside the conversion: calibrate when the request needs statistics, plan the
//! structured part, and attach to every tensor its selection, new name and row sparsity — all
//! before the output file is created, so an impossible request writes nothing.

use super::ConvertOptions;
use crate::arch::{apply_transform, PlannedTensor, Selection};
use crate::gguf::Metadata;
use crate::prune::calib::{calibrate, fingerprint, CalibOptions, Calibration};
use crate::prune::structured::{self, Dims, StructuredPlan};
use crate::prune::unstructured::{SparsityMethod, NM};
use crate::quant::imatrix::Imatrix;
use crate::quant::mix::Scheme;
use crate::source::TensorSource;
use anyhow::{anyhow, bail, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

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
    pub sparsity: HashMap<String, RowSparsity>,
    pub structure: Option<StructuredPlan>,
}

/// Tensors unstructured pruning applies to: the blocks' linear weights (and, on request, the
/// embeddings and output head).
fn sparsity_applies(name: &str, all: bool) -> bool {
    const LINEAR: [&str; 8] =
        ["attn_q", "attn_k", "attn_v", "attn_output", "attn_qkv", "ffn_gate", "ffn_up", "ffn_down"];
    if all && (name == "token_embd.weight" || name == "output.weight") {
        return true;
    }
    name.starts_with("blk.")
        && name.ends_with(".weight")
        && LINEAR.iter().any(|l| name.contains(&format!(".{l}.weight")))
}

/// Deletes a temporary file when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub fn plan(
    input: &Path,
    output: &Path,
    src: &dyn TensorSource,
    meta: &mut Metadata,
    planned: Vec<PlannedTensor>,
    opts: &ConvertOptions,
) -> Result<Pruned> {
    let spec = &opts.prune;
    spec.validate()?;
    if spec.is_noop() {
        return Ok(Pruned { planned, sparsity: HashMap::new(), structure: None });
    }
    let dims = Dims::from_metadata(meta)?;
    if let Some(nm) = spec.nm {
        if let Some(p) = planned.iter().find(|p| {
            sparsity_applies(&p.name, spec.sparsity_all) && p.shape.last().is_some_and(|&n| n % nm.group != 0)
        }) {
            bail!(
                "--nm {}:{}: rows of {} have {} weights, not a multiple of {}",
                nm.keep,
                nm.group,
                p.name,
                p.shape.last().unwrap(),
                nm.group
            );
        }
    }
    let calib = if spec.needs_calibration() { Some(calibration(input, output, &dims, &planned, opts)?) } else { None };

    let (planned, structure) = if spec.wants_structured() {
        let read = |name: &str| -> Result<Vec<f32>> {
            let p = planned.iter().find(|p| p.name == name).ok_or_else(|| anyhow!("no tensor {name}"))?;
            let info = src.tensor(&p.source).ok_or_else(|| anyhow!("no tensor {}", p.source))?;
            let data = src.read_f32(&p.source)?;
            apply_transform(p.transform, data, &info.shape.clone())
        };
        let plan = structured::plan(spec, &dims, calib.as_ref(), &read)?;
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

    let mut sparsity = HashMap::new();
    if spec.wants_unstructured() {
        for p in planned.iter().filter(|p| sparsity_applies(&p.name, spec.sparsity_all)) {
            let norms = match (spec.method, &calib) {
                (SparsityMethod::Wanda, Some(c)) if p.name.starts_with("blk.") => {
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
    Ok(Pruned { planned, sparsity, structure })
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
fn calibration(
    input: &Path,
    output: &Path,
    dims: &Dims,
    planned: &[PlannedTensor],
    opts: &ConvertOptions,
) -> Result<Calibration> {
    let spec = &opts.prune;
    let list: Vec<(String, Vec<u64>)> = planned.iter().map(|p| (p.name.clone(), p.ne())).collect();
    let fp = fingerprint(&dims.arch, &list);
    if let Some(path) = spec.calib.as_ref().filter(|p| p.exists()) {
        return Calibration::load(path, &fp);
    }
    // Windows of 512 tokens, or the model's whole context if shorter (GPT-2's positions end there).
    let copts = CalibOptions {
        text: spec.calib_text_path()?,
        chunks: spec.calib_chunks,
        n_ctx: dims.n_ctx_train.min(512),
        threads: opts.threads,
    };
    let is_gguf = input.is_file();
    let _temp;
    let gguf = if is_gguf {
        input.to_path_buf()
    } else {
        // llama.cpp runs GGUF: calibrate on an exact F32 conversion, removed afterwards.
        let dir = output.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let stem = output.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        // Named like every temporary output (`.NAME….tmp`), so that a sweep cleans it up after a kill.
        let tmp = dir.join(format!(".{stem}.calib-source.{}.tmp", crate::util::atomic::unique_suffix()));
        super::convert(input, &tmp, &ConvertOptions { quiet: true, ..ConvertOptions::new(Scheme::F32) })?;
        _temp = TempFile(tmp.clone());
        tmp
    };
    let c = calibrate(&gguf, &fp, dims.n_layer, &copts, opts.quiet)?;
    if let Some(path) = &spec.calib {
        c.save(path)?;
    }
    Ok(c)
}

//! Model architectures: how a Hugging Face checkpoint's tensors and config map onto llama.cpp's
//! GGUF names, layouts and metadata keys (as `convert_hf_to_gguf.py` writes them), and back.
//!
//! A [`ConversionPlan`] is the whole mapping, computed from the config and the tensor list before
//! any data is touched, so every error about shapes or names comes before an output file exists.
//! [`check`] holds the shape checks llama.cpp's loader makes, for GGUF sources and plans alike.
//!
//! Uses `source` (the checkpoint), `gguf` (metadata values).

pub mod check;
pub mod gpt2;
pub mod llama;
pub mod rope;

use crate::gguf::Metadata;
use crate::source::HfCheckpoint;
use anyhow::{bail, Result};
use serde_json::Value;

/// How a source tensor's data becomes the GGUF tensor's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    /// Same element order.
    Copy,
    /// LLaMA's Q/K row permutation (Hugging Face's rotate-half RoPE to ggml's interleaved pairs),
    /// with this many heads.
    PermuteQk { n_head: usize },
    /// The inverse of `PermuteQk`, for writing Hugging Face checkpoints from GGUF.
    UnpermuteQk { n_head: usize },
    /// Swap the two dimensions of a matrix (GPT-2's Conv1D stores weights as [in, out]).
    Transpose,
}

/// Rows and columns kept from a tensor (structured pruning), after its transform.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    /// Rows (2-D) or elements (1-D) kept, ascending; None = all.
    pub rows: Option<Vec<usize>>,
    /// Columns kept (2-D), ascending; None = all.
    pub cols: Option<Vec<usize>>,
    /// The shape selected from (row-major).
    pub from_shape: Vec<usize>,
}

impl Selection {
    pub fn apply(&self, data: &[f32]) -> Result<Vec<f32>> {
        let ncols = if self.from_shape.len() == 2 { self.from_shape[1] } else { 1 };
        let nrows = data.len() / ncols;
        let rows: Vec<usize> = self.rows.clone().unwrap_or_else(|| (0..nrows).collect());
        let mut out = Vec::with_capacity(rows.len() * self.cols.as_ref().map_or(ncols, |c| c.len()));
        for &r in &rows {
            if r >= nrows {
                bail!("row {r} selected from a tensor of {nrows} rows");
            }
            let row = &data[r * ncols..(r + 1) * ncols];
            match &self.cols {
                Some(cols) => out.extend(cols.iter().map(|&c| row[c])),
                None => out.extend_from_slice(row),
            }
        }
        Ok(out)
    }
}

/// One output tensor.
#[derive(Clone, Debug)]
pub struct PlannedTensor {
    /// Name in the output.
    pub name: String,
    /// Name in the source.
    pub source: String,
    /// Row-major output shape, outermost first (GGUF `ne` is this reversed).
    pub shape: Vec<usize>,
    pub transform: Transform,
    /// Structured pruning's selection (None: the whole tensor).
    pub select: Option<Selection>,
    /// The tensor's GGUF name in the unpruned model (calibration and imatrix statistics are keyed by it).
    pub stats_name: String,
}

impl PlannedTensor {
    pub fn new(name: String, source: String, shape: Vec<usize>, transform: Transform) -> PlannedTensor {
        PlannedTensor { stats_name: name.clone(), name, source, shape, transform, select: None }
    }

    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// The GGUF `ne` order: row length first.
    pub fn ne(&self) -> Vec<u64> {
        self.shape.iter().rev().map(|&d| d as u64).collect()
    }
}

/// A tensor the converter computes rather than reads (Llama 3's `rope_freqs.weight`).
#[derive(Clone, Debug, PartialEq)]
pub struct Generated {
    pub name: String,
    /// Row-major shape.
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Everything needed to write a GGUF from a Hugging Face checkpoint, before any data is read.
pub struct ConversionPlan {
    /// `general.architecture`.
    pub arch: &'static str,
    /// Architecture keys (`llama.block_count` …) and `general.file_type`, in the converter's order.
    pub hparams: Metadata,
    pub tensors: Vec<PlannedTensor>,
    pub vocab_size: usize,
    /// How the architecture's converter reads its vocabulary.
    pub vocab_style: crate::tokenizer::hf::VocabStyle,
    /// Tensors computed from the config; planned tensors name them as their source.
    pub generated: Vec<Generated>,
}

/// Pick the architecture from `config.json` and plan the conversion. Every planned tensor is
/// checked against the hyper-parameters (as llama.cpp will check the output) before anything is
/// read or written.
pub fn plan_hf(ckpt: &HfCheckpoint, file_type: u32) -> Result<ConversionPlan> {
    let arch = ckpt.architecture_name()?;
    let plan = match (arch.as_str(), llama::Flavor::from_architecture(&arch)) {
        (_, Some(flavor)) => llama::plan(ckpt, flavor, file_type)?,
        ("GPT2LMHeadModel" | "GPT2Model", None) => gpt2::plan(ckpt, file_type)?,
        (other, None) => bail!(
            "{}: unsupported architecture {other:?} (microscale supports LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM and GPT2LMHeadModel)",
            ckpt.dir.join("config.json").display()
        ),
    };
    let mut meta: Metadata = vec![("general.architecture".into(), crate::gguf::GgufValue::String(plan.arch.into()))];
    meta.extend(plan.hparams.iter().cloned());
    let shapes: Vec<(String, Vec<u64>)> = plan.tensors.iter().map(|t| (t.name.clone(), t.ne())).collect();
    check::check_tensors(&meta, Some(plan.vocab_size as u64), &shapes).map_err(|e| {
        // Name the checkpoint's own tensor beside llama.cpp's name for it.
        let text = e.to_string();
        let source = plan.tensors.iter().find(|t| text.contains(&format!("{:?}", t.name)));
        match source {
            Some(t) => anyhow::anyhow!(
                "{}: {text} (the checkpoint's {:?}; config.json disagrees with the weights)",
                crate::source::TensorSource::location(ckpt, &t.source),
                t.source
            ),
            None => anyhow::anyhow!("{}: {text}", ckpt.dir.join("config.json").display()),
        }
    })?;
    Ok(plan)
}

/// Apply a [`Transform`] to a tensor's f32 data, given its source shape.
pub fn apply_transform(t: Transform, data: Vec<f32>, src_shape: &[usize]) -> Result<Vec<f32>> {
    match t {
        Transform::Copy => Ok(data),
        Transform::PermuteQk { n_head } => permute_qk(&data, src_shape, n_head, false),
        Transform::UnpermuteQk { n_head } => permute_qk(&data, src_shape, n_head, true),
        Transform::Transpose => {
            let [rows, cols] = src_shape else { bail!("cannot transpose a tensor of shape {src_shape:?}") };
            let (rows, cols) = (*rows, *cols);
            let mut out = vec![0f32; data.len()];
            // Blocked transpose: keeps both sides cache-friendly on large matrices.
            const B: usize = 64;
            for r0 in (0..rows).step_by(B) {
                for c0 in (0..cols).step_by(B) {
                    for r in r0..(r0 + B).min(rows) {
                        for c in c0..(c0 + B).min(cols) {
                            out[c * rows + r] = data[r * cols + c];
                        }
                    }
                }
            }
            Ok(out)
        }
    }
}

/// `convert_hf_to_gguf.py`'s `permute`: within each head, rows `[0, d/2)` and `[d/2, d)` are
/// interleaved, so output row `2j + t` is input row `t*d/2 + j`. `inverse` undoes it.
fn permute_qk(data: &[f32], shape: &[usize], n_head: usize, inverse: bool) -> Result<Vec<f32>> {
    let rows = shape[0];
    let cols: usize = shape[1..].iter().product();
    if n_head == 0 || !rows.is_multiple_of(2 * n_head) {
        bail!("cannot split {rows} rows into {n_head} heads of even size");
    }
    let head_dim = rows / n_head;
    let half = head_dim / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..n_head {
        for j in 0..half {
            for t in 0..2 {
                let permuted = h * head_dim + 2 * j + t;
                let original = h * head_dim + t * half + j;
                let (dst, src) = if inverse { (original, permuted) } else { (permuted, original) };
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    Ok(out)
}

/// A required count from config.json, trying each of `keys` in turn: a positive integer that
/// fits the GGUF field (u32). A present key of another type or value is an error naming it.
pub fn config_usize(config: &Value, keys: &[&str], ckpt: &HfCheckpoint) -> Result<usize> {
    for k in keys {
        if let Some(v) = config.get(*k).filter(|v| !v.is_null()) {
            return config_count(v, k, ckpt);
        }
    }
    bail!("{}: config.json has no {}", ckpt.dir.join("config.json").display(), keys.join(" or "))
}

/// An optional count from config.json (absent or null: None).
pub fn config_opt_usize(config: &Value, key: &str, ckpt: &HfCheckpoint) -> Result<Option<usize>> {
    match config.get(key).filter(|v| !v.is_null()) {
        None => Ok(None),
        Some(v) => config_count(v, key, ckpt).map(Some),
    }
}

fn config_count(v: &Value, key: &str, ckpt: &HfCheckpoint) -> Result<usize> {
    match v.as_u64() {
        Some(n) if n >= 1 && n <= i32::MAX as u64 => Ok(n as usize),
        _ => {
            bail!("{}: {key} = {v} is impossible (expected a positive integer)", ckpt.dir.join("config.json").display())
        }
    }
}

/// An optional positive, finite number from config.json (absent or null: `default`).
pub fn config_positive_f64(config: &Value, key: &str, default: f64, ckpt: &HfCheckpoint) -> Result<f64> {
    match config.get(key).filter(|v| !v.is_null()) {
        None => Ok(default),
        Some(v) => match v.as_f64() {
            Some(x) if x > 0.0 && x.is_finite() => Ok(x),
            _ => bail!(
                "{}: {key} = {v} is impossible (expected a positive number)",
                ckpt.dir.join("config.json").display()
            ),
        },
    }
}

/// An optional boolean from config.json.
pub fn config_bool(config: &Value, key: &str, ckpt: &HfCheckpoint) -> Result<Option<bool>> {
    match config.get(key).filter(|v| !v.is_null()) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => bail!("{}: {key} = {v} is not true or false", ckpt.dir.join("config.json").display()),
    }
}

/// Check a source tensor exists with the expected shape.
pub fn expect_shape(ckpt: &HfCheckpoint, name: &str, shape: &[usize]) -> Result<()> {
    use crate::source::TensorSource;
    match ckpt.tensor(name) {
        None => bail!("{}: missing tensor {name:?}", ckpt.dir.display()),
        Some(t) if t.shape != shape => {
            bail!("{}: tensor {name:?} has shape {:?}, config.json implies {shape:?}", ckpt.location(name), t.shape)
        }
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_then_unpermute_is_identity() {
        let shape = [12usize, 3];
        let data: Vec<f32> = (0..36).map(|x| x as f32).collect();
        let p = permute_qk(&data, &shape, 3, false).unwrap();
        assert_ne!(p, data);
        // head 0, d=4: output rows are input rows 0,2,1,3.
        assert_eq!(&p[3..6], &data[6..9]);
        assert_eq!(permute_qk(&p, &shape, 3, true).unwrap(), data);
    }

    #[test]
    fn transpose_moves_elements() {
        let data: Vec<f32> = (0..6).map(|x| x as f32).collect();
        let t = apply_transform(Transform::Transpose, data, &[2, 3]).unwrap();
        assert_eq!(t, vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }
}

//! Error compensation inside the conversion: GPTQ rounding and SparseGPT pruning of the blocks'
//! linear weights, from the second moments of their inputs in the calibration file.
//!
//! Each compensated tensor is decoded whole, solved by `quant::gptq::compensate` (SparseGPT's
//! mask from `prune::sparsegpt`), and written as the bytes it produced (GPTQ) or encoded as usual
//! (SparseGPT alone). The output error ‖ΔW·X‖²/‖W·X‖² of the compensated result is reported next
//! to that of the same request without compensation (round to nearest, Wanda's mask).

use super::Job;
use crate::calib::moments::{InputMoments, MomentsFile};
use crate::prune::sparsegpt::SparseGptMask;
use crate::prune::unstructured::{prune_row, NM};
use crate::quant::gptq::{compensate, relative_output_error, Grid, InverseHessian, MaskRule, DAMPING};
use anyhow::{anyhow, Context, Result};
use rayon::prelude::*;
use std::sync::Arc;

/// How one tensor is compensated.
#[derive(Clone)]
pub struct Compensation {
    pub moments: Arc<MomentsFile>,
    /// The calibration tokens behind the moments (the imatrix count).
    pub tokens: f64,
    /// Round onto the output type's grid with GPTQ.
    pub gptq: bool,
    /// SparseGPT's ratio and N:M pattern.
    pub mask: Option<(f64, Option<NM>)>,
}

/// One compensated tensor's output error, with and without compensation.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CompensationStat {
    pub tensor: String,
    pub ggml_type: String,
    pub method: String,
    /// ‖ΔW·X‖²/‖W·X‖² of the plain result (round to nearest; Wanda's mask when pruning).
    pub error_plain: f64,
    /// The same for the compensated result.
    pub error_compensated: f64,
}

/// What compensating one tensor produced.
pub struct Outcome {
    pub bytes: Option<Vec<u8>>,
    pub values: Vec<f32>,
    pub pruned: usize,
    pub stat: CompensationStat,
}

/// The inverse Hessians of the last few inputs (a block's Q, K and V share theirs, but are not
/// adjacent in the file).
#[derive(Default)]
pub struct HessianCache {
    entries: Vec<(String, Arc<(InputMoments, InverseHessian)>)>,
}

const CACHE_ENTRIES: usize = 3;

impl HessianCache {
    pub(super) fn get(&mut self, job: &Job, c: &Compensation) -> Result<Arc<(InputMoments, InverseHessian)>> {
        let p = &job.planned;
        let cols = p.select.as_ref().and_then(|s| s.cols.clone());
        let key = format!("{}|{:?}", c.moments.owner(&p.stats_name).unwrap_or(&p.stats_name), cols);
        if let Some((_, h)) = self.entries.iter().find(|(k, _)| *k == key) {
            return Ok(h.clone());
        }
        let m = c.moments.get(&p.stats_name, c.tokens)?;
        let m = match &cols {
            Some(cols) => m.select(cols),
            None => m,
        };
        let hinv = InverseHessian::with_order(&m.xtx, m.n, DAMPING, c.mask.is_none())
            .with_context(|| format!("the second moment of {}'s input", p.stats_name))?;
        let h = Arc::new((m, hinv));
        self.entries.push((key, h.clone()));
        if self.entries.len() > CACHE_ENTRIES {
            self.entries.remove(0);
        }
        Ok(h)
    }
}

/// Compensate `data` (the job's tensor, rows of `row_len`).
pub fn run(job: &Job, c: &Compensation, data: &[f32], row_len: usize, cache: &mut HessianCache) -> Result<Outcome> {
    let rows = data.len() / row_len;
    let h = cache.get(job, c)?;
    let (moments, hinv) = (&h.0, &h.1);
    if moments.n != row_len {
        return Err(anyhow!("{}: second moment of {} inputs for rows of {row_len}", job.planned.name, moments.n));
    }
    let grid = c.gptq.then_some(Grid { ty: job.ty, weights: job.weights.as_deref() });
    let mask = c.mask.map(|(r, nm)| SparseGptMask::new(r, nm));
    let out = compensate(data, rows, row_len, hinv, grid, mask.as_ref().map(|m| m as &dyn MaskRule))
        .with_context(|| format!("compensating {}", job.planned.name))?;
    let plain = plain_result(job, c, data, row_len)?;
    let method = match (c.gptq, c.mask.is_some()) {
        (true, true) => "sparsegpt+gptq",
        (true, false) => "gptq",
        _ => "sparsegpt",
    };
    // With SparseGPT alone the values are encoded afterwards: judge them as encoded.
    let compensated = match &out.bytes {
        Some(_) => out.values.clone(),
        None => decoded(job, &out.values, row_len)?,
    };
    let stat = CompensationStat {
        tensor: job.planned.name.clone(),
        ggml_type: job.ty.name().to_string(),
        method: method.to_string(),
        error_plain: relative_output_error(data, &plain, rows, row_len, &moments.xtx),
        error_compensated: relative_output_error(data, &compensated, rows, row_len, &moments.xtx),
    };
    Ok(Outcome { bytes: out.bytes, values: out.values, pruned: out.pruned, stat })
}

/// The tensor as the same request without compensation writes it, decoded.
fn plain_result(job: &Job, c: &Compensation, data: &[f32], row_len: usize) -> Result<Vec<f32>> {
    let mut plain = data.to_vec();
    if let Some((ratio, nm)) = c.mask {
        let norms = job.sparsity.as_ref().and_then(|s| s.norms.as_deref());
        plain.par_chunks_mut(row_len).for_each(|r| {
            prune_row(r, ratio, nm, norms);
        });
    }
    decoded(job, &plain, row_len)
}

/// `values` encoded as the job's type and decoded again.
fn decoded(job: &Job, values: &[f32], row_len: usize) -> Result<Vec<f32>> {
    if !job.ty.is_quantized() {
        return Ok(values.to_vec());
    }
    let bytes = crate::quant::quantize_weighted(job.ty, values, row_len, job.weights.as_deref())?;
    crate::quant::dequantize(job.ty, &bytes)
}

//! `--target-size` / `--target-bpw` inside the conversion: measure, for every quantized matrix
//! (the blocks' weights, and the token embedding and output head too: on a small model the
//! embedding is a fifth of the weights), the loss of each type of the ladder on a sample of its
//! rows (as it would be encoded: transformed, selected, pruned, quantized with its importance
//! weights), then let [`crate::quant::budget`] choose the types. Norms and biases keep their type
//! and count as fixed bytes.
//!
//! The loss is the expected squared error of the layer's output. Under `--quant-method gptq` it is
//! measured as GPTQ would round (each type's levels chosen column by column with the error
//! compensated) and against the full second moment of the inputs, `ΔW·H·ΔWᵀ`, so the types are
//! chosen on the error GPTQ leaves, not on round-to-nearest's; elsewhere on the imatrix's diagonal
//! of H. A tied output head (the token embedding read back as the output matrix) is weighed by the
//! importance of the output's inputs.

use super::compensation::HessianCache;
use super::stream::job_f32;
use super::Job;
use crate::gguf::writer::encode_header;
use crate::gguf::{Metadata, TensorInfo};
use crate::prune::unstructured::prune_row;
use crate::quant::budget::{allocate, ladder, Candidate, TensorOptions};
use crate::quant::gptq::{compensate, Grid};
use crate::quant::levels::level_range;
use crate::quant::GgmlType;
use crate::source::TensorSource;
use crate::util::mem::format_size;
use crate::util::progress::Progress;
use anyhow::{bail, Result};
use rayon::prelude::*;

/// What the budget caps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Budget {
    /// The whole file, in bytes (header and alignment included).
    Size(u64),
    /// Bits per weight over all tensors' data (as llama-quantize reports BPW).
    Bpw(f64),
}

/// Rows of each tensor whose loss is measured: enough for a stable estimate, few enough that
/// measuring every candidate type costs seconds, not a conversion per type.
const SAMPLE_ROWS: usize = 96;

/// How the tensors' losses are weighed against each other.
#[derive(Clone, Copy, Debug, Default)]
pub struct Weighing<'a> {
    /// The importance of the output head's inputs, when the head is the token embedding (no
    /// `output.weight` of its own).
    pub tied_output: Option<&'a [f32]>,
    /// A factor per tensor role ([`role`]): how much a unit of that role's local error costs in
    /// the model's output, relative to the others (1 when absent).
    pub scales: &'a [(String, f64)],
    /// The losses measured before for the same request (None: measure them).
    pub table: Option<&'a [TensorOptions]>,
}

impl Weighing<'_> {
    fn scale(&self, tensor: &str) -> f64 {
        let r = role(tensor);
        self.scales.iter().find(|(n, _)| n == r).map_or(1.0, |(_, f)| *f)
    }
}

/// A tensor's role, the same in every block: `attn_q`, `ffn_down`, `token_embd`, `output`.
pub fn role(tensor: &str) -> &str {
    let rest = crate::util::tensor_name::split(tensor).map_or(tensor, |(_, rest)| rest);
    rest.strip_suffix(".weight").unwrap_or(rest)
}

/// Choose the type of every allocatable job for `budget`; returns the predicted file size.
pub fn apply(
    src: &dyn TensorSource,
    meta: &Metadata,
    jobs: &mut [Job],
    budget: Budget,
    weighing: &Weighing,
    quiet: bool,
) -> Result<u64> {
    if let Some((r, f)) = weighing.scales.iter().find(|(_, f)| !(f.is_finite() && *f > 0.0)) {
        bail!("--loss-scale {r}={f}: a scale must be a positive number");
    }
    let header = encode_header(meta, &headers(jobs)?)?.len() as u64;
    let padded = |b: u64| b.next_multiple_of(32);
    let allocatable: Vec<usize> = (0..jobs.len()).filter(|&i| is_allocatable(&jobs[i])).collect();
    if allocatable.is_empty() {
        bail!("--target-size/--target-bpw: no tensor of this model can change type (is --outtype a quantized type?)");
    }
    let fixed: u64 = jobs.iter().filter(|j| !is_allocatable(j)).map(|j| padded(j.n_bytes())).sum();
    let total_elems: u64 = jobs.iter().map(|j| j.planned.n_elements() as u64).sum();
    let data_budget = match budget {
        Budget::Size(s) => s.checked_sub(header + fixed + 31 * allocatable.len() as u64),
        Budget::Bpw(b) => ((b * total_elems as f64 / 8.0) as u64).checked_sub(fixed),
    };
    let Some(data_budget) = data_budget else {
        bail!(
            "the budget cannot be met: the tensors that keep their type (norms, biases) and the header already take {}",
            format_size(header + fixed)
        );
    };
    let mut options = match weighing.table {
        Some(t) => reuse(t, jobs, &allocatable)?,
        None => measure_all(src, jobs, weighing, quiet)?,
    };
    // A role whose matrices cannot change type (a pruned width no block divides) is still a role.
    let roles: std::collections::BTreeSet<&str> =
        jobs.iter().filter(|j| j.planned.shape.len() == 2).map(|j| role(&j.planned.name)).collect();
    if let Some((r, _)) = weighing.scales.iter().find(|(r, _)| !roles.contains(r.as_str())) {
        let roles: Vec<&str> = roles.into_iter().collect();
        bail!("--loss-scale {r}: no weight matrix of this model has that role (roles: {})", roles.join(", "));
    }
    for o in &mut options {
        let scale = weighing.scale(&o.name);
        o.candidates.iter_mut().for_each(|c| c.loss *= scale);
    }
    let choice = allocate(&options, data_budget)?;
    for ((&i, o), c) in allocatable.iter().zip(&options).zip(choice) {
        jobs[i].ty = o.candidates[c].ty;
    }
    settle_compensation(jobs);
    let tensors: u64 = jobs.iter().map(|j| padded(j.n_bytes())).sum();
    Ok(header + tensors)
}

/// A table measured before, checked to be this request's: the same matrices, in order, with the
/// sizes their candidate types take here.
fn reuse(table: &[TensorOptions], jobs: &[Job], allocatable: &[usize]) -> Result<Vec<TensorOptions>> {
    let names: Vec<&str> = allocatable.iter().map(|&i| jobs[i].planned.name.as_str()).collect();
    if table.len() != names.len() || table.iter().zip(&names).any(|(t, n)| t.name != *n) {
        bail!("the loss table given was measured for other tensors than this conversion's");
    }
    for (t, &i) in table.iter().zip(allocatable) {
        let row_len = *jobs[i].planned.shape.last().unwrap_or(&1);
        let rows = (jobs[i].planned.n_elements() / row_len.max(1)) as u64;
        if let Some(c) =
            t.candidates.iter().find(|c| c.ty.row_bytes(row_len).map_or(true, |b| b as u64 * rows != c.bytes))
        {
            bail!(
                "the loss table given has {} at {} bytes for {}, not this conversion's",
                c.ty.name(),
                c.bytes,
                t.name
            );
        }
    }
    Ok(table.to_vec())
}

/// Every allocatable job's candidates with their losses (before any `--loss-scale`), in job order.
pub fn measure_all(
    src: &dyn TensorSource,
    jobs: &[Job],
    weighing: &Weighing,
    quiet: bool,
) -> Result<Vec<TensorOptions>> {
    let allocatable: Vec<usize> = (0..jobs.len()).filter(|&i| is_allocatable(&jobs[i])).collect();
    let progress = Progress::new(allocatable.len() as u64, "measuring types", quiet);
    let mut options = Vec::with_capacity(allocatable.len());
    let mut hessians = HessianCache::default();
    let tied = !jobs.iter().any(|j| j.planned.name == "output.weight");
    for &i in &allocatable {
        progress.set_message(&jobs[i].planned.name);
        let output_role =
            (tied && jobs[i].planned.name == "token_embd.weight").then_some(weighing.tied_output).flatten();
        options.push(measure(src, &jobs[i], output_role, &mut hessians)?);
        src.release(&jobs[i].planned.source);
        progress.inc(1);
    }
    progress.finish();
    Ok(options)
}

fn headers(jobs: &[Job]) -> Result<Vec<TensorInfo>> {
    jobs.iter().map(|j| TensorInfo::new(&j.planned.name, j.planned.ne(), j.ty)).collect()
}

/// The matrices the mix quantizes: the blocks' weights, the token embedding, the output head.
fn is_allocatable(job: &Job) -> bool {
    job.ty.is_quantized() && job.planned.shape.len() == 2
}

/// GPTQ was planned with the mix's types; the budget may have chosen a type GPTQ cannot round onto
/// (the IQ formats): those tensors are rounded to nearest, and lose their compensation unless
/// SparseGPT also uses it.
fn settle_compensation(jobs: &mut [Job]) {
    for job in jobs {
        let ty = job.ty;
        if let Some(c) = &mut job.compensation {
            c.gptq &= level_range(ty).is_some();
            if !c.gptq && c.mask.is_none() {
                job.compensation = None;
            }
        }
    }
}

/// Every ladder type that fits the rows, with its bytes and its loss: GPTQ's against the full
/// second moment where the job is GPTQ-rounded, else round-to-nearest's, importance-weighted.
fn measure(
    src: &dyn TensorSource,
    job: &Job,
    output_role: Option<&[f32]>,
    hessians: &mut HessianCache,
) -> Result<TensorOptions> {
    let row_len = *job.planned.shape.last().unwrap_or(&1);
    let n_rows = job.planned.n_elements() / row_len.max(1);
    let rows = sampled_rows(src, job, n_rows, row_len)?;
    let n_sampled = rows.len() / row_len;
    let weights = job.weights.as_deref();
    let hessian = match &job.compensation {
        Some(c) if c.gptq && c.mask.is_none() => Some(hessians.get(job, c)?),
        _ => None,
    };
    let types: Vec<GgmlType> = ladder(weights.is_some())
        .into_iter()
        .filter(|t| row_len.is_multiple_of(t.block_size()) && (weights.is_some() || !t.requires_imatrix()))
        .collect();
    let candidates = types
        .par_iter()
        .map(|&ty| -> Result<Candidate> {
            let back = match &hessian {
                Some(h) if level_range(ty).is_some() => {
                    compensate(&rows, n_sampled, row_len, &h.1, Some(Grid { ty, weights }), None)?.values
                }
                _ => crate::quant::dequantize(ty, &crate::quant::quantize_weighted(ty, &rows, row_len, weights)?)?,
            };
            let loss = match &hessian {
                Some(h) => output_error(&rows, &back, row_len, &h.0.xtx) / h.0.tokens.max(1.0),
                None => diagonal_error(&rows, &back, row_len, weights.or(output_role)),
            };
            let bytes = (ty.row_bytes(row_len)? * n_rows) as u64;
            Ok(Candidate { ty, bytes, loss: loss * n_rows as f64 / n_sampled.max(1) as f64 })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(TensorOptions { name: job.planned.name.clone(), candidates })
}

/// `Σ_rows Σ_j w_j (x_j − y_j)²` (unweighted without importance).
fn diagonal_error(x: &[f32], y: &[f32], row_len: usize, weights: Option<&[f32]>) -> f64 {
    let mut loss = 0f64;
    for (xr, yr) in x.chunks(row_len).zip(y.chunks(row_len)) {
        for (j, (a, b)) in xr.iter().zip(yr).enumerate() {
            let w = weights.map_or(1.0, |w| w[j]) as f64;
            loss += w * ((a - b) as f64).powi(2);
        }
    }
    loss
}

/// `Σ_rows Δ·H·Δᵀ` with `Δ = x − y` and `H` (`row_len`²) the inputs' second moment.
fn output_error(x: &[f32], y: &[f32], row_len: usize, h: &[f64]) -> f64 {
    let rows = x.len() / row_len;
    let delta: Vec<f64> = x.iter().zip(y).map(|(&a, &b)| a as f64 - b as f64).collect();
    let mut dh = vec![0f64; delta.len()];
    crate::util::linalg::gemm(rows, row_len, row_len, 1.0, &delta, row_len, h, row_len, &mut dh, row_len);
    dh.iter().zip(&delta).map(|(a, b)| a * b).sum()
}

/// Up to [`SAMPLE_ROWS`] rows spread evenly over the tensor, exactly as the conversion would
/// encode them (after its transform, selection and unstructured pruning).
fn sampled_rows(src: &dyn TensorSource, job: &Job, n_rows: usize, row_len: usize) -> Result<Vec<f32>> {
    let data = job_f32(src, job)?;
    let step = n_rows.div_ceil(SAMPLE_ROWS).max(1);
    let mut rows = Vec::with_capacity(SAMPLE_ROWS * row_len);
    for r in (0..n_rows).step_by(step) {
        let mut row = data[r * row_len..(r + 1) * row_len].to_vec();
        if let Some(s) = &job.sparsity {
            prune_row(&mut row, s.ratio, s.nm, s.norms.as_deref());
        }
        rows.extend(row);
    }
    Ok(rows)
}

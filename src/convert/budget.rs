//! `--target-size` / `--target-bpw` inside the conversion: measure, for every weight matrix of the
//! blocks, the loss of each type of the ladder on a sample of its rows (as it would be encoded:
//! transformed, selected, pruned, quantized with its importance weights), then let
//! [`crate::quant::budget`] choose the types. Everything else (embeddings, output head, norms)
//! keeps the mix's type and counts as fixed bytes.

use super::stream::job_f32;
use super::Job;
use crate::gguf::writer::encode_header;
use crate::gguf::{Metadata, TensorInfo};
use crate::prune::unstructured::prune_row;
use crate::quant::budget::{allocate, ladder, Candidate, TensorOptions};
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

/// Choose the type of every allocatable job for `budget`; returns the predicted file size.
pub fn apply(src: &dyn TensorSource, meta: &Metadata, jobs: &mut [Job], budget: Budget, quiet: bool) -> Result<u64> {
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
            "the budget cannot be met: the tensors that keep their type (embeddings, output, norms) and the header already take {}",
            format_size(header + fixed)
        );
    };
    let progress = Progress::new(allocatable.len() as u64, "measuring types", quiet);
    let mut options = Vec::with_capacity(allocatable.len());
    for &i in &allocatable {
        progress.set_message(&jobs[i].planned.name);
        options.push(measure(src, &jobs[i])?);
        src.release(&jobs[i].planned.source);
        progress.inc(1);
    }
    progress.finish();
    let choice = allocate(&options, data_budget)?;
    for ((&i, o), c) in allocatable.iter().zip(&options).zip(choice) {
        jobs[i].ty = o.candidates[c].ty;
    }
    let tensors: u64 = jobs.iter().map(|j| padded(j.n_bytes())).sum();
    Ok(header + tensors)
}

fn headers(jobs: &[Job]) -> Result<Vec<TensorInfo>> {
    jobs.iter().map(|j| TensorInfo::new(&j.planned.name, j.planned.ne(), j.ty)).collect()
}

/// The blocks' weight matrices that the mix quantizes.
fn is_allocatable(job: &Job) -> bool {
    job.ty.is_quantized() && crate::util::tensor_name::in_block(&job.planned.name) && job.planned.shape.len() == 2
}

/// Every ladder type that fits the rows, with its bytes and its importance-weighted loss.
fn measure(src: &dyn TensorSource, job: &Job) -> Result<TensorOptions> {
    let row_len = *job.planned.shape.last().unwrap_or(&1);
    let n_rows = job.planned.n_elements() / row_len.max(1);
    let rows = sampled_rows(src, job, n_rows, row_len)?;
    let n_sampled = rows.len() / row_len;
    let weights = job.weights.as_deref();
    let types: Vec<GgmlType> = ladder(weights.is_some())
        .into_iter()
        .filter(|t| row_len.is_multiple_of(t.block_size()) && (weights.is_some() || !t.requires_imatrix()))
        .collect();
    let candidates = types
        .par_iter()
        .map(|&ty| -> Result<Candidate> {
            let q = crate::quant::quantize_weighted(ty, &rows, row_len, weights)?;
            let back = crate::quant::dequantize(ty, &q)?;
            let mut loss = 0f64;
            for (x, y) in rows.chunks(row_len).zip(back.chunks(row_len)) {
                for (j, (a, b)) in x.iter().zip(y).enumerate() {
                    let w = weights.map_or(1.0, |w| w[j]) as f64;
                    loss += w * ((a - b) as f64).powi(2);
                }
            }
            let bytes = (ty.row_bytes(row_len)? * n_rows) as u64;
            Ok(Candidate { ty, bytes, loss: loss * n_rows as f64 / n_sampled.max(1) as f64 })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(TensorOptions { name: job.planned.name.clone(), candidates })
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

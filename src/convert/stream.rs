//! The streaming executor: every planned tensor read from its source piece by piece, pruned,
//! compensated and encoded in parallel, and written to the GGUF in order, so that memory holds a
//! few tensors' working sets, never the model. Everything it does was decided by the plan
//! ([`super::Job`]); it decides nothing.

use super::compensation::{self, CompensationStat};
use super::healing;
use super::pruning::SparsityStat;
use super::Job;
use crate::arch::{apply_transform, Selection, Transform};
use crate::gguf::{GgufWriter, Metadata, TensorInfo};
use crate::prune::unstructured::prune_row;
use crate::quant::GgmlType;
use crate::source::TensorSource;
use crate::util::progress::Progress;
use anyhow::{anyhow, bail, Context, Result};
use rayon::prelude::*;
use std::path::Path;

/// Stream every job's tensor into a new GGUF file; returns the file's size.
pub(super) fn write_gguf(
    src: &dyn TensorSource,
    output: &Path,
    meta: &Metadata,
    jobs: &[Job],
    quiet: bool,
) -> Result<(u64, Vec<SparsityStat>, Vec<CompensationStat>)> {
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
pub(super) fn job_f32(src: &dyn TensorSource, job: &Job) -> Result<Vec<f32>> {
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
    use crate::arch::{PlannedTensor, Transform};
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

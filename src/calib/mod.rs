//! Calibration: run the model through llama.cpp over calibration text and collect, through the
//! graph evaluation callback, (1) for every weight matrix the sum of squares of each input channel
//! over all tokens (what llama.cpp's imatrix collects), and (2) for every block its Block Influence
//! (ShortGPT): one minus the mean cosine similarity between the block's input and output hidden
//! states. Saved in llama.cpp's imatrix GGUF format (so `stock-quantize --imatrix` reads it too),
//! with the block influences and a model fingerprint as extra keys.
//!
//! A checkpoint is calibrated without a copy on disk: llama.cpp builds the model from the
//! conversion's plan ([`CalibModel::Parts`]). Uses `engine`, `gguf` (imatrix files) and `util`.

pub mod collect;
pub mod gaps;
pub mod moments;
pub mod paired;

use crate::engine::raw::{ObservedContext, TensorObserver};
use crate::engine::user_model::{model_from_parts, Filler};
use crate::gguf::imatrix::{Imatrix, ImatrixEntry};
use crate::gguf::{GgufValue, Metadata, TensorInfo};
use crate::util::progress::Progress;
use anyhow::{anyhow, bail, Result};
use collect::{Collector, PassState};
use moments::{MomentCollector, MomentsFile};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub const KEY_BLOCK_INFLUENCE: &str = "microscale.block_influence";
pub const KEY_FINGERPRINT: &str = "microscale.fingerprint";

#[derive(Clone, Debug)]
pub struct CalibOptions {
    pub text: PathBuf,
    /// Chunks of `n_ctx` tokens.
    pub chunks: usize,
    pub n_ctx: usize,
    pub threads: usize,
    /// Also collect every linear layer's input moments (H = Σ x·xᵀ), written to `moments_path`.
    pub moments: Option<MomentsRequest>,
}

/// Where and within what memory the second moments are collected.
#[derive(Clone, Debug)]
pub struct MomentsRequest {
    /// The calibration file to write (the moments live in it, beside the imatrix).
    pub path: PathBuf,
    /// Bytes each block's moments take ([`moments::block_bytes`]).
    pub per_block: Vec<u64>,
    /// Bytes of moments one pass may hold; more blocks take more passes over the text.
    pub budget: u64,
    /// The blocks whose moments are collected (all of them, but for a sequential stage).
    pub layers: std::ops::Range<usize>,
}

/// What calibration measured.
#[derive(Clone, Debug)]
pub struct Calibration {
    pub imatrix: Imatrix,
    /// Block Influence per block (higher = the block changes the hidden state more).
    pub block_influence: Vec<f64>,
    pub fingerprint: String,
    /// Every linear layer's input moments, when collected (read from the calibration file).
    pub moments: Option<std::sync::Arc<MomentsFile>>,
}

impl Calibration {
    /// sqrt of the summed squares of each input channel of `tensor` (Wanda's ‖X_j‖₂).
    pub fn input_norms(&self, tensor: &str) -> Option<Vec<f32>> {
        self.imatrix.entries.get(tensor).map(|e| e.sums.iter().map(|s| s.sqrt()).collect())
    }

    /// Mean squared activation of each input channel of `tensor`.
    pub fn input_mean_squares(&self, tensor: &str) -> Option<Vec<f32>> {
        self.imatrix.entries.get(tensor).map(|e| {
            let n = e.counts.first().copied().unwrap_or(1.0).max(1.0);
            e.sums.iter().map(|s| s / n).collect()
        })
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        self.save_with_moments(path, vec![], None)
    }

    /// Save, with moment tensors (and their readers key) beside the imatrix.
    fn save_with_moments(
        &self,
        path: &Path,
        tensors: Vec<(TensorInfo, MomentBytes)>,
        readers: Option<GgufValue>,
    ) -> Result<()> {
        let mut m = self.imatrix.clone();
        m.extra = vec![
            (KEY_FINGERPRINT.into(), GgufValue::String(self.fingerprint.clone())),
            (
                KEY_BLOCK_INFLUENCE.into(),
                GgufValue::Array(
                    crate::gguf::value::value_type::FLOAT32,
                    self.block_influence.iter().map(|&b| GgufValue::F32(b as f32)).collect(),
                ),
            ),
        ];
        if let Some(r) = readers {
            m.extra.push((moments::KEY_READERS.into(), r));
        }
        m.save_with(path, tensors.into_iter().map(|(t, b)| (t, b.into_fn())).collect())
    }

    /// This calibration with the imatrix entries and second moments of the weights `replace`
    /// picks taken from `update` (a sequential stage's), the moments saved to `path`.
    pub fn replaced(&self, update: &Calibration, replace: impl Fn(&str) -> bool, path: &Path) -> Result<Calibration> {
        let mut c = self.clone();
        for (name, e) in update.imatrix.entries.iter().filter(|(n, _)| replace(n)) {
            c.imatrix.entries.insert(name.clone(), e.clone());
        }
        if self.moments.is_none() && update.moments.is_none() {
            return Ok(c);
        }
        c.with_moments_from(update, |n| replace(n).then(|| n.to_string()), path)
    }

    /// This calibration with the second moments of `update`'s weights that `rename` maps to one
    /// of ours (a model numbered otherwise: a sequential healing stage's, whose dropped blocks
    /// shift the rest), saved to `path`. The importance matrix stays ours.
    pub fn with_moments_from(
        &self,
        update: &Calibration,
        rename: impl Fn(&str) -> Option<String>,
        path: &Path,
    ) -> Result<Calibration> {
        let (base, new) = match (&self.moments, &update.moments) {
            (Some(b), Some(n)) => (b, n),
            _ => bail!("{}: one calibration has second moments and the other not", path.display()),
        };
        // Our name of each of update's owners taken, and the owner's name in update.
        let mut taken: std::collections::BTreeMap<String, String> = Default::default();
        let mut readers: std::collections::BTreeMap<String, String> = Default::default();
        for (r, o) in new.readers() {
            if let (Some(ours), Some(owner)) = (rename(r), rename(o)) {
                readers.insert(ours, owner.clone());
                taken.insert(owner, o.to_string());
            }
        }
        for (r, o) in base.readers() {
            if !readers.contains_key(r) {
                readers.insert(r.to_string(), o.to_string());
            }
        }
        let owners: std::collections::BTreeSet<&String> = readers.values().collect();
        let mut tensors = Vec::new();
        for owner in owners {
            let (from, theirs) = match taken.get(owner) {
                Some(theirs) => (new, theirs.as_str()),
                None => (base, owner.as_str()),
            };
            for suffix in [moments::XTX_SUFFIX, moments::SUM_SUFFIX] {
                let name = format!("{theirs}{suffix}");
                let info =
                    from.file().tensor(&name).ok_or_else(|| anyhow!("{}: no {name}", from.file().path.display()))?;
                let mut ours = info.clone();
                ours.name = format!("{owner}{suffix}");
                tensors.push((ours, MomentBytes::Part(from.file().clone(), name)));
            }
        }
        let mut c = self.clone();
        c.save_with_moments(path, tensors, Some(MomentCollector::readers_value(&readers)))?;
        c.moments = MomentsFile::open(path)?.map(Arc::new);
        Ok(c)
    }

    /// Load a saved calibration and check it belongs to the model with `fingerprint`.
    pub fn load(path: &Path, fingerprint: &str) -> Result<Calibration> {
        let m = Imatrix::load(path)?;
        let fp = crate::gguf::meta_get(&m.extra, KEY_FINGERPRINT).and_then(|v| v.as_str()).unwrap_or("").to_string();
        if fp != fingerprint {
            bail!(
                "{}: calibration file is for another model (fingerprint {:?}, this model is {:?})",
                path.display(),
                fp,
                fingerprint
            );
        }
        let bi: Vec<f64> = crate::gguf::meta_get(&m.extra, KEY_BLOCK_INFLUENCE)
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
            .ok_or_else(|| {
                anyhow!("{}: no {KEY_BLOCK_INFLUENCE} (not a microscale calibration file)", path.display())
            })?;
        // Block influence is 1 − cosine similarity: finite, within [0, 2].
        if let Some((i, b)) = bi.iter().enumerate().find(|(_, b)| !(-1e-6..=2.0 + 1e-6).contains(*b)) {
            bail!("{}: block {i}'s influence is {b}, outside 0..=2 (a damaged calibration file)", path.display());
        }
        let moments = MomentsFile::open(path)?.map(std::sync::Arc::new);
        Ok(Calibration { imatrix: m, block_influence: bi, fingerprint: fp, moments })
    }
}

/// A moment tensor's bytes: in memory, or in a window's part file written by an earlier pass.
enum MomentBytes {
    Memory(Vec<u8>),
    Part(Arc<crate::gguf::GgufFile>, String),
}

impl MomentBytes {
    fn into_fn(self) -> crate::gguf::imatrix::ExtraTensor {
        match self {
            MomentBytes::Memory(b) => Box::new(move || Ok(b)),
            MomentBytes::Part(f, name) => Box::new(move || {
                let t = f.tensor(&name).ok_or_else(|| anyhow!("{}: no {name}", f.path.display()))?;
                Ok(f.tensor_data(t).to_vec())
            }),
        }
    }
}

/// A model's identity for calibration files: architecture and every tensor's name and shape.
pub fn fingerprint(arch: &str, tensors: &[(String, Vec<u64>)]) -> String {
    let mut h = Sha256::new();
    h.update(arch.as_bytes());
    for (name, ne) in tensors {
        h.update(name.as_bytes());
        for d in ne {
            h.update(d.to_le_bytes());
        }
    }
    let hex: String = h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{arch}-{}-{hex}", tensors.len())
}

/// The model to calibrate: a GGUF file, or a model llama.cpp builds from a conversion's plan
/// (see [`crate::engine::user_model`]), so that a checkpoint is calibrated without a copy.
pub enum CalibModel<'a> {
    File(&'a Path),
    Parts { metadata: &'a Metadata, tensors: &'a [TensorInfo], filler: &'a mut Filler<'a> },
}

/// Calibrate `model` (whose fingerprint is `fingerprint`).
pub fn calibrate(
    model: CalibModel,
    fingerprint: &str,
    n_layer: usize,
    opts: &CalibOptions,
    quiet: bool,
) -> Result<Calibration> {
    let windows = match &opts.moments {
        Some(m) => {
            let layers = m.layers.start.min(m.per_block.len())..m.layers.end.min(m.per_block.len());
            let offset = layers.start;
            moments::windows(&m.per_block[layers], m.budget)
                .into_iter()
                .map(|w| w.start + offset..w.end + offset)
                .collect()
        }
        None => vec![],
    };
    let pass = Arc::new(Mutex::new(PassState {
        stats: true,
        moments: windows.first().map(|w| MomentCollector::new(w.clone())),
    }));
    let (mut ctx, chunks) = observed(model, opts, Box::new(Collector::new(pass.clone())))?;
    let passes = windows.len().max(1);
    let progress = Progress::new((chunks.len() * passes) as u64, "calibrating", quiet);
    // Later passes collect only their window's moments; earlier windows wait in part files.
    let mut parts: Vec<(TensorInfo, MomentBytes)> = Vec::new();
    let mut readers = std::collections::BTreeMap::new();
    let mut part_files = Vec::new();
    #[allow(clippy::needless_range_loop)] // pass 0 is special, windows[p] only from pass 1
    for p in 0..passes {
        if p > 0 {
            let mut state = pass.lock().unwrap();
            state.stats = false;
            state.moments = Some(MomentCollector::new(windows[p].clone()));
        }
        for chunk in &chunks {
            ctx.decode_all(chunk)?;
            progress.inc(1);
        }
        let Some(m) = pass.lock().unwrap().moments.take() else { continue };
        readers.extend(m.readers.clone());
        let tensors = moments::tensors(&m.moments)?;
        drop(m);
        if passes == 1 {
            parts.extend(tensors.into_iter().map(|(t, b)| (t, MomentBytes::Memory(b))));
        } else {
            let req = opts.moments.as_ref().unwrap();
            let part = PathBuf::from(format!("{}.part{p}", req.path.display()));
            let headers: Vec<TensorInfo> = tensors.iter().map(|(t, _)| t.clone()).collect();
            let mut w = crate::gguf::GgufWriter::create(&part, &vec![], headers)?;
            for (t, b) in &tensors {
                w.write_tensor(&t.name, b)?;
            }
            w.finish()?;
            let f = Arc::new(crate::gguf::GgufFile::open(&part)?);
            parts.extend(tensors.into_iter().map(|(t, _)| {
                let name = t.name.clone();
                (t, MomentBytes::Part(f.clone(), name))
            }));
            part_files.push(part);
        }
    }
    progress.finish();
    let observer = ctx.into_observer();
    // SAFETY: the observer we boxed above is a Collector.
    let collector = unsafe { Box::from_raw(Box::into_raw(observer) as *mut Collector) };
    if collector.influence.len() != n_layer {
        bail!("calibration saw {} blocks' outputs, the model has {n_layer}", collector.influence.len());
    }
    let mut imatrix = Imatrix {
        // The text as named, as llama-imatrix records its --file.
        datasets: vec![opts.text.to_string_lossy().into_owned()],
        chunk_count: chunks.len() as u32,
        chunk_size: opts.n_ctx as u32,
        ..Default::default()
    };
    for (name, sums) in &collector.sums {
        let n = collector.tokens[name];
        imatrix.entries.insert(
            name.clone(),
            ImatrixEntry { sums: sums.iter().map(|&s| s as f32).collect(), counts: vec![n as f32] },
        );
    }
    // Rounded through f32, as the calibration file stores them, so a saved-and-reloaded calibration
    // plans exactly as a fresh one.
    let block_influence = collector.influence.iter().map(|(s, n)| (s / (*n).max(1) as f64) as f32 as f64).collect();
    let mut c = Calibration { imatrix, block_influence, fingerprint: fingerprint.to_string(), moments: None };
    if let Some(req) = &opts.moments {
        c.save_with_moments(&req.path, parts, Some(MomentCollector::readers_value(&readers)))?;
        for p in part_files {
            let _ = std::fs::remove_file(p);
        }
        c.moments = MomentsFile::open(&req.path)?.map(std::sync::Arc::new);
        c.imatrix.path = Some(req.path.clone());
    }
    Ok(c)
}

/// An observed llama.cpp context on `model`, and the calibration chunks of `opts.text`: up to
/// `opts.chunks` windows of `n_ctx` tokens, each starting with BOS where the model wants one.
fn observed(
    model: CalibModel,
    opts: &CalibOptions,
    observer: Box<dyn TensorObserver>,
) -> Result<(ObservedContext, Vec<Vec<i32>>)> {
    let text = std::fs::read_to_string(&opts.text).map_err(|e| {
        anyhow!("{}: cannot read calibration text ({e}); choose it with --calib-text", opts.text.display())
    })?;
    let ctx = match model {
        CalibModel::File(gguf) => ObservedContext::new(gguf, opts.n_ctx, opts.threads, observer)?,
        CalibModel::Parts { metadata, tensors, filler } => {
            let m = model_from_parts(metadata, tensors, filler)?;
            // SAFETY: a model just built, owned by nobody else.
            unsafe { ObservedContext::from_model(m, opts.n_ctx, opts.threads, observer)? }
        }
    };
    let tokens = ctx.tokenize(&text);
    let available = tokens.len() / opts.n_ctx;
    if available == 0 {
        bail!("{}: too little calibration text ({} tokens)", opts.text.display(), tokens.len());
    }
    let chunks = tokens
        .chunks_exact(opts.n_ctx)
        .take(opts.chunks.max(1))
        .map(|c| {
            let mut chunk = c.to_vec();
            if ctx.add_bos {
                chunk[0] = ctx.bos;
            }
            chunk
        })
        .collect();
    Ok((ctx, chunks))
}

/// The moments of each gap of dropped blocks ([`gaps`]) over the same calibration chunks, on the
/// unpruned `model`: one more pass, for healing the block before each gap.
pub fn measure_gaps(
    model: CalibModel,
    gaps: &[gaps::Gap],
    opts: &CalibOptions,
    quiet: bool,
) -> Result<Vec<gaps::GapMoments>> {
    let (mut ctx, chunks) = observed(model, opts, Box::new(gaps::GapCollector::new(gaps)))?;
    let progress = Progress::new(chunks.len() as u64, "measuring gaps", quiet);
    for chunk in &chunks {
        ctx.decode_all(chunk)?;
        progress.inc(1);
    }
    progress.finish();
    let observer = ctx.into_observer();
    // SAFETY: the observer we boxed above is a GapCollector.
    let collector = unsafe { Box::from_raw(Box::into_raw(observer) as *mut gaps::GapCollector) };
    for m in &collector.moments {
        if m.tokens == 0 {
            bail!(
                "the gap after block {} was not seen in llama.cpp's graph (no blk.{}.ffn_down input or l_out-{} output)",
                m.gap.kept,
                m.gap.kept,
                m.gap.last
            );
        }
    }
    Ok(collector.moments)
}

/// The paired pass of sequential healing ([`paired`]): the unpruned `teacher` and the `student`
/// (a stage's partly compressed model) over the same calibration chunks, measuring each target's
/// moments against the student's own down-projection inputs.
pub fn measure_paired(
    teacher: CalibModel,
    student: &Path,
    targets: &[paired::PairTarget],
    opts: &CalibOptions,
    quiet: bool,
) -> Result<Vec<gaps::GapMoments>> {
    let (teacher_side, student_side) = paired::observers(targets);
    let (mut teacher, chunks) = observed(teacher, opts, teacher_side)?;
    let mut student_ctx = ObservedContext::new(student, opts.n_ctx, opts.threads, student_side)?;
    let progress = Progress::new(chunks.len() as u64, "measuring against the teacher", quiet);
    for chunk in &chunks {
        paired::decode_pair(&mut teacher, &mut student_ctx, chunk)?;
        progress.inc(1);
    }
    progress.finish();
    let moments = paired::into_moments(student_ctx);
    let expected: u64 = chunks.iter().map(|c| c.len() as u64).sum();
    if let Some(m) = moments.iter().find(|m| m.tokens != expected) {
        bail!(
            "{}: the paired pass saw {} of {expected} tokens for block {} (no blk.N.ffn_down input or l_out-N output in llama.cpp's graph?)",
            student.display(),
            m.tokens,
            m.gap.kept
        );
    }
    Ok(moments)
}

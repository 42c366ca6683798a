//! Calibration: run the model through llama.cpp over calibration text and collect, through the
//! graph evaluation callback, (1) for every weight matrix the sum of squares of each input channel
//! over all tokens (what llama.cpp's imatrix collects), and (2) for every block its Block Influence
//! (ShortGPT): one minus the mean cosine similarity between the block's input and output hidden
//! states. Saved in llama.cpp's imatrix GGUF format (so `stock-quantize --imatrix` reads it too),
//! with the block influences and a model fingerprint as extra keys.

use crate::engine::raw::{f32_rows, tensor_name, ObservedContext, TensorObserver};
use crate::gguf::GgufValue;
use crate::quant::imatrix::{Imatrix, ImatrixEntry};
use crate::util::progress::Progress;
use anyhow::{anyhow, bail, Result};
use llama_cpp_sys_2 as sys;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const KEY_BLOCK_INFLUENCE: &str = "microscale.block_influence";
pub const KEY_FINGERPRINT: &str = "microscale.fingerprint";

#[derive(Clone, Debug)]
pub struct CalibOptions {
    pub text: PathBuf,
    /// Chunks of `n_ctx` tokens.
    pub chunks: usize,
    pub n_ctx: usize,
    pub threads: usize,
}

/// What calibration measured.
#[derive(Clone, Debug)]
pub struct Calibration {
    pub imatrix: Imatrix,
    /// Block Influence per block (higher = the block changes the hidden state more).
    pub block_influence: Vec<f64>,
    pub fingerprint: String,
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
        let mut m = self.imatrix.clone();
        m.extra = vec![
            (KEY_FINGERPRINT.into(), GgufValue::String(self.fingerprint.clone())),
            (
                KEY_BLOCK_INFLUENCE.into(),
                GgufValue::Array(
                    crate::gguf::types::value_type::FLOAT32,
                    self.block_influence.iter().map(|&b| GgufValue::F32(b as f32)).collect(),
                ),
            ),
        ];
        m.save(path)
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
        let bi = crate::gguf::meta_get(&m.extra, KEY_BLOCK_INFLUENCE)
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
            .ok_or_else(|| {
                anyhow!("{}: no {KEY_BLOCK_INFLUENCE} (not a microscale calibration file)", path.display())
            })?;
        Ok(Calibration { imatrix: m, block_influence: bi, fingerprint: fp })
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

#[derive(Default)]
struct Collector {
    sums: BTreeMap<String, Vec<f64>>,
    tokens: BTreeMap<String, u64>,
    /// Per block: (sum of 1 - cos, tokens).
    influence: Vec<(f64, u64)>,
    /// The residual stream entering the current block: (block, rows), taken from the input of the
    /// block's first normalisation (`norm-N`, whose source is the block input in every llama.cpp
    /// graph), and compared with the block's output (`l_out-N`).
    input: Option<(i64, Vec<Vec<f32>>)>,
}

fn src_name(t: &sys::ggml_tensor, i: usize) -> Option<&str> {
    let s = t.src[i];
    if s.is_null() {
        None
    } else {
        Some(tensor_name(unsafe { &*s }))
    }
}

/// `norm-N` → (N, true) for a block's normalisation; `l_out-N` → (N, false) for its output.
fn residual_node(name: &str) -> Option<(i64, bool)> {
    if let Some(l) = name.strip_prefix("norm-") {
        return l.parse().ok().map(|l| (l, true));
    }
    name.strip_prefix("l_out-").and_then(|l| l.parse().ok()).map(|l| (l, false))
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    if aa == 0.0 || bb == 0.0 {
        1.0
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    }
}

impl TensorObserver for Collector {
    fn wants(&mut self, t: &sys::ggml_tensor) -> bool {
        if t.op == sys::GGML_OP_MUL_MAT {
            let w = src_name(t, 0).unwrap_or("");
            let x = t.src[1];
            return w.starts_with("blk.") && !x.is_null() && unsafe { (*x).type_ } == sys::GGML_TYPE_F32;
        }
        residual_node(tensor_name(t)).is_some()
    }

    fn seen(&mut self, t: &sys::ggml_tensor) {
        if t.op == sys::GGML_OP_MUL_MAT {
            let w = src_name(t, 0).unwrap_or("").to_string();
            let Some(rows) = f32_rows(unsafe { &*t.src[1] }) else { return };
            let n = rows.first().map_or(0, |r| r.len());
            let sums = self.sums.entry(w.clone()).or_insert_with(|| vec![0.0; n]);
            if sums.len() != n {
                return;
            }
            for r in &rows {
                for (s, &x) in sums.iter_mut().zip(r.iter()) {
                    *s += (x as f64) * (x as f64);
                }
            }
            *self.tokens.entry(w).or_default() += rows.len() as u64;
            return;
        }
        let Some((layer, is_norm)) = residual_node(tensor_name(t)) else { return };
        if is_norm {
            if self.input.as_ref().is_some_and(|(l, _)| *l == layer) || t.src[0].is_null() {
                return; // the block's second norm (before the FFN): its input is mid-block
            }
            if let Some(rows) = f32_rows(unsafe { &*t.src[0] }) {
                self.input = Some((layer, rows.into_iter().map(|r| r.to_vec()).collect()));
            }
            return;
        }
        let Some(rows) = f32_rows(t) else { return };
        if let Some((l, input)) = self.input.take() {
            if l == layer && input.len() == rows.len() {
                let l = layer as usize;
                if self.influence.len() <= l {
                    self.influence.resize(l + 1, (0.0, 0));
                }
                for (a, b) in input.iter().zip(&rows) {
                    self.influence[l].0 += 1.0 - cosine(a, b);
                    self.influence[l].1 += 1;
                }
            }
        }
    }
}

/// Calibrate the GGUF model at `gguf` (whose fingerprint is `fingerprint`).
pub fn calibrate(
    gguf: &Path,
    fingerprint: &str,
    n_layer: usize,
    opts: &CalibOptions,
    quiet: bool,
) -> Result<Calibration> {
    let text = std::fs::read_to_string(&opts.text).map_err(|e| {
        anyhow!("{}: cannot read calibration text ({e}); choose it with --calib-text", opts.text.display())
    })?;
    let mut ctx = ObservedContext::new(gguf, opts.n_ctx, opts.threads, Box::<Collector>::default())?;
    let tokens = ctx.tokenize(&text);
    let available = tokens.len() / opts.n_ctx;
    if available == 0 {
        bail!("{}: too little calibration text ({} tokens)", opts.text.display(), tokens.len());
    }
    let chunks = opts.chunks.min(available).max(1);
    let progress = Progress::new(chunks as u64, "calibrating", quiet);
    for c in 0..chunks {
        let mut chunk = tokens[c * opts.n_ctx..(c + 1) * opts.n_ctx].to_vec();
        if ctx.add_bos {
            chunk[0] = ctx.bos;
        }
        ctx.decode_all(&chunk)?;
        progress.inc(1);
    }
    progress.finish();
    let observer = ctx.into_observer();
    // SAFETY: the observer we boxed above is a Collector.
    let collector = unsafe { Box::from_raw(Box::into_raw(observer) as *mut Collector) };
    if collector.influence.len() != n_layer {
        bail!("calibration saw {} blocks' outputs, the model has {n_layer}", collector.influence.len());
    }
    let mut imatrix = Imatrix {
        datasets: vec![opts.text.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()],
        chunk_count: chunks as u32,
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
    Ok(Calibration { imatrix, block_influence, fingerprint: fingerprint.to_string() })
}

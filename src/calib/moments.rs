//! Second moments of every linear layer's input over the calibration tokens: H = Σ x·xᵀ (n×n)
//! and Σ x, what GPTQ, SparseGPT and healing solve with (the imatrix is H's diagonal).
//!
//! Weights that read the same input (a block's Q, K and V; its FFN gate and up projections) share
//! one matrix: the first weight the graph applies to an input owns it, the others are its readers.
//!
//! Memory is bounded: a pass over the calibration text collects only a window of blocks (as many
//! as fit the budget), and each window is written to disk before the next pass, so a 7B model
//! (whose matrices take 22 GB in f32) calibrates in a few GB.
//!
//! In the calibration file each owner's matrices are the tensors `<owner>.in_xtx` (n×n F32) and
//! `<owner>.in_sum` (n F32), and the key `microscale.moments.readers` lists `reader=owner` pairs.

use crate::engine::raw::{f32_rows, tensor_name};
use crate::gguf::{GgufFile, GgufValue, TensorInfo};
use crate::quant::GgmlType;
use anyhow::{anyhow, bail, Result};
use llama_cpp_sys_2 as sys;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

pub const KEY_READERS: &str = "microscale.moments.readers";
pub const XTX_SUFFIX: &str = ".in_xtx";
pub const SUM_SUFFIX: &str = ".in_sum";

/// One input's accumulated moments.
pub struct Moment {
    pub n: usize,
    /// Σ x·xᵀ, row-major n×n, summed in f32 per chunk (as the reference implementations do);
    /// only its lower triangle while collecting, mirrored when written.
    pub xtx: Vec<f32>,
    pub sum: Vec<f64>,
    pub tokens: u64,
}

/// Collects the moments of the blocks in `layers` (from inside the calibration observer).
pub struct MomentCollector {
    pub layers: Range<usize>,
    /// Owner weight → its input's moments.
    pub moments: BTreeMap<String, Moment>,
    /// Reader weight → owner weight (an owner reads its own input too).
    pub readers: BTreeMap<String, String>,
    /// Input node name → owner weight.
    inputs: BTreeMap<String, String>,
    rows: Vec<f32>,
}

impl MomentCollector {
    pub fn new(layers: Range<usize>) -> MomentCollector {
        MomentCollector {
            layers,
            moments: BTreeMap::new(),
            readers: BTreeMap::new(),
            inputs: BTreeMap::new(),
            rows: Vec::new(),
        }
    }

    /// A matrix multiplication of `weight` by `input` was computed.
    pub fn seen(&mut self, weight: &str, input: &sys::ggml_tensor) {
        if !crate::util::tensor_name::block_of(weight).is_some_and(|l| self.layers.contains(&l)) {
            return;
        }
        let key = match tensor_name(input) {
            "" => weight.to_string(),
            name => name.to_string(),
        };
        let owner = self.inputs.entry(key).or_insert_with(|| weight.to_string()).clone();
        self.readers.insert(weight.to_string(), owner.clone());
        if owner != weight {
            return; // the owner's multiplication already took this input
        }
        let Some(rows) = f32_rows(input) else { return };
        let n = rows.first().map_or(0, |r| r.len());
        let m = self.moments.entry(owner).or_insert_with(|| Moment {
            n,
            xtx: vec![0.0; n * n],
            sum: vec![0.0; n],
            tokens: 0,
        });
        if m.n != n {
            return;
        }
        self.rows.clear();
        for r in &rows {
            self.rows.extend_from_slice(r);
            for (s, &x) in m.sum.iter_mut().zip(r.iter()) {
                *s += x as f64;
            }
        }
        crate::util::linalg::add_gram_lower_f32(&self.rows, rows.len(), n, &mut m.xtx);
        m.tokens += rows.len() as u64;
    }

    /// The readers key for the calibration file.
    pub fn readers_value(readers: &BTreeMap<String, String>) -> GgufValue {
        GgufValue::strings(readers.iter().map(|(r, o)| format!("{r}={o}")))
    }
}

/// Bytes one block's moments take, from its weights' input widths (Q/K/V and gate/up share).
pub fn block_bytes(weights: &[(String, u64)]) -> u64 {
    let mut groups: BTreeMap<String, u64> = BTreeMap::new();
    for (name, n) in weights {
        let kind = name.rsplit('.').nth(1).unwrap_or("");
        let group = match kind {
            "attn_q" | "attn_k" | "attn_v" | "attn_qkv" => "attn_in".to_string(),
            "ffn_gate" | "ffn_up" => "ffn_in".to_string(),
            _ => name.clone(),
        };
        groups.insert(group, *n);
    }
    groups.values().map(|n| 4 * n * (n + 1)).sum()
}

/// Split `n_layer` blocks into windows whose moments fit `budget` bytes (at least one block each).
pub fn windows(per_block: &[u64], budget: u64) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut used = 0;
    for (l, &b) in per_block.iter().enumerate() {
        if l > start && used + b > budget {
            out.push(start..l);
            start = l;
            used = 0;
        }
        used += b;
    }
    if start < per_block.len() {
        out.push(start..per_block.len());
    }
    out
}

/// The moment tensors of `collector`'s owners: headers and their bytes, in order.
pub fn tensors(moments: &BTreeMap<String, Moment>) -> Result<Vec<(TensorInfo, Vec<u8>)>> {
    let mut out = Vec::new();
    for (owner, m) in moments {
        let n = m.n as u64;
        // Collection filled the lower triangle only (the matrix is symmetric).
        let mut full = m.xtx.clone();
        crate::util::linalg::mirror_lower(&mut full, m.n);
        let xtx: Vec<u8> = full.iter().flat_map(|v| v.to_le_bytes()).collect();
        let sum: Vec<u8> = m.sum.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect();
        out.push((TensorInfo::new(&format!("{owner}{XTX_SUFFIX}"), vec![n, n], GgmlType::F32)?, xtx));
        out.push((TensorInfo::new(&format!("{owner}{SUM_SUFFIX}"), vec![n], GgmlType::F32)?, sum));
    }
    Ok(out)
}

/// The moments in a calibration file, read on demand from its memory map.
pub struct MomentsFile {
    file: std::sync::Arc<GgufFile>,
    readers: BTreeMap<String, String>,
}

/// One input's moments as read back: H in f64 and the token count.
pub struct InputMoments {
    pub owner: String,
    pub n: usize,
    pub xtx: Vec<f64>,
    pub mean: Vec<f64>,
    pub tokens: f64,
}

impl std::fmt::Debug for MomentsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "MomentsFile({}, {} readers)", self.file.path.display(), self.readers.len())
    }
}

impl MomentsFile {
    /// `None` if the file holds no moments (a calibration made without them).
    pub fn open(path: &Path) -> Result<Option<MomentsFile>> {
        let file = GgufFile::open(path)?;
        let Some(list) = file.get(KEY_READERS).and_then(|v| v.as_array()) else { return Ok(None) };
        let mut readers = BTreeMap::new();
        for item in list {
            let s = item.as_str().unwrap_or("");
            let (r, o) = s
                .split_once('=')
                .ok_or_else(|| anyhow!("{}: {KEY_READERS} entry {s:?} is not reader=owner", path.display()))?;
            readers.insert(r.to_string(), o.to_string());
        }
        Ok(Some(MomentsFile { file: std::sync::Arc::new(file), readers }))
    }

    /// The calibration file the moments are read from.
    pub fn file(&self) -> &std::sync::Arc<GgufFile> {
        &self.file
    }

    /// Every `(reader, owner)` pair.
    pub fn readers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.readers.iter().map(|(r, o)| (r.as_str(), o.as_str()))
    }

    pub fn has(&self, weight: &str) -> bool {
        self.readers.contains_key(weight)
    }

    /// The owner whose matrices `weight` shares.
    pub fn owner(&self, weight: &str) -> Option<&str> {
        self.readers.get(weight).map(String::as_str)
    }

    /// The moments of `weight`'s input, with `tokens` from the imatrix's count for it.
    pub fn get(&self, weight: &str, tokens: f64) -> Result<InputMoments> {
        let path = self.file.path.display();
        let owner = self.owner(weight).ok_or_else(|| anyhow!("{path}: no second moments for {weight}"))?;
        let read = |name: &str| -> Result<Vec<f32>> {
            let t = self.file.tensor(name).ok_or_else(|| anyhow!("{path}: no tensor {name}"))?;
            if t.ggml_type != GgmlType::F32 {
                bail!("{path}: {name} must be F32");
            }
            crate::quant::dequantize(GgmlType::F32, self.file.tensor_data(t))
        };
        let xtx = read(&format!("{owner}{XTX_SUFFIX}"))?;
        let sum = read(&format!("{owner}{SUM_SUFFIX}"))?;
        let n = sum.len();
        if xtx.len() != n * n {
            bail!("{path}: {owner}{XTX_SUFFIX} has {} values for an input of {n}", xtx.len());
        }
        let t = tokens.max(1.0);
        Ok(InputMoments {
            owner: owner.to_string(),
            n,
            xtx: xtx.iter().map(|&v| v as f64).collect(),
            mean: sum.iter().map(|&v| v as f64 / t).collect(),
            tokens,
        })
    }
}

impl InputMoments {
    /// The moments restricted to the input columns `cols` keeps (after structured pruning).
    pub fn select(&self, cols: &[usize]) -> InputMoments {
        let k = cols.len();
        let mut xtx = vec![0.0; k * k];
        for (i, &a) in cols.iter().enumerate() {
            for (j, &b) in cols.iter().enumerate() {
                xtx[i * k + j] = self.xtx[a * self.n + b];
            }
        }
        InputMoments {
            owner: self.owner.clone(),
            n: k,
            xtx,
            mean: cols.iter().map(|&c| self.mean[c]).collect(),
            tokens: self.tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_fit_the_budget() {
        assert_eq!(windows(&[10, 10, 10, 10], 25), vec![0..2, 2..4]);
        assert_eq!(windows(&[10, 10, 10], 5), vec![0..1, 1..2, 2..3], "one block at least");
        assert_eq!(windows(&[10, 10, 10], 100), vec![0..3]);
        let b = block_bytes(&[
            ("blk.0.attn_q.weight".into(), 8),
            ("blk.0.attn_k.weight".into(), 8),
            ("blk.0.attn_output.weight".into(), 8),
            ("blk.0.ffn_down.weight".into(), 16),
        ]);
        assert_eq!(b, 4 * (8 * 9 + 8 * 9 + 16 * 17));
    }
}

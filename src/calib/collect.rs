//! The observer calibration installs in llama.cpp's graph: for every weight matrix the sum of
//! squares of each input channel (llama.cpp's imatrix), and for every block its Block Influence.

use super::moments::MomentCollector;
use crate::engine::raw::{f32_rows, tensor_name, TensorObserver};
use llama_cpp_sys_2 as sys;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// What a pass over the calibration text collects, changed between passes by the caller: the
/// first pass takes the imatrix and Block Influence, every pass the moments of its window.
#[derive(Default)]
pub struct PassState {
    pub stats: bool,
    pub moments: Option<MomentCollector>,
}

#[derive(Default)]
pub struct Collector {
    pub sums: BTreeMap<String, Vec<f64>>,
    pub tokens: BTreeMap<String, u64>,
    /// Per block: (sum of 1 - cos, tokens).
    pub influence: Vec<(f64, u64)>,
    /// The residual stream entering the current block: (block, rows), taken from the input of the
    /// block's first normalisation (`norm-N`, whose source is the block input in every llama.cpp
    /// graph), and compared with the block's output (`l_out-N`).
    input: Option<(i64, Vec<Vec<f32>>)>,
    pub pass: Arc<Mutex<PassState>>,
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

impl Collector {
    /// A collector whose passes `pass` steers.
    pub fn new(pass: Arc<Mutex<PassState>>) -> Collector {
        Collector { sums: BTreeMap::new(), tokens: BTreeMap::new(), influence: Vec::new(), input: None, pass }
    }
}

impl TensorObserver for Collector {
    fn wants(&mut self, t: &sys::ggml_tensor) -> bool {
        let stats = self.pass.lock().unwrap().stats;
        if !stats && t.op != sys::GGML_OP_MUL_MAT {
            return false;
        }
        if t.op == sys::GGML_OP_MUL_MAT {
            let w = src_name(t, 0).unwrap_or("");
            let x = t.src[1];
            return crate::util::tensor_name::in_block(w)
                && !x.is_null()
                && unsafe { (*x).type_ } == sys::GGML_TYPE_F32;
        }
        residual_node(tensor_name(t)).is_some()
    }

    fn seen(&mut self, t: &sys::ggml_tensor) {
        let mut pass = self.pass.lock().unwrap();
        if t.op == sys::GGML_OP_MUL_MAT {
            let w = src_name(t, 0).unwrap_or("").to_string();
            if let Some(m) = pass.moments.as_mut() {
                m.seen(&w, unsafe { &*t.src[1] });
            }
            if !pass.stats {
                return;
            }
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
        drop(pass);
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

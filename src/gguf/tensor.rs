//! A tensor as a GGUF header describes it: the one type for tensor descriptions in GGUF files,
//! read or written.

use crate::quant::GgmlType;
use anyhow::{anyhow, bail, Context, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `ne[0]` is the row length (innermost dimension).
    pub ne: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Absolute byte offset of the data in the file (set by the reader; the writer lays tensors
    /// out itself and ignores it).
    pub offset: u64,
    /// Bytes of data: whole rows of `ggml_type` blocks.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// A tensor description with its byte size, checked as ggml checks a header: 1 to 4
    /// dimensions, none zero, an element count that fits ggml's int64_t, rows of whole blocks, a
    /// byte size that fits in memory.
    pub fn new(name: &str, ne: Vec<u64>, ggml_type: GgmlType) -> Result<TensorInfo> {
        if ne.is_empty() || ne.len() > 4 {
            bail!("tensor {name:?} has {} dimensions (ggml allows 1 to 4)", ne.len());
        }
        if let Some(d) = ne.iter().find(|&&d| d == 0 || d > i64::MAX as u64) {
            bail!("tensor {name:?} has an impossible dimension {d} in shape {ne:?}");
        }
        let n_elements = ne
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| anyhow!("tensor {name:?} has shape {ne:?}, whose element count overflows"))?;
        let row_bytes = ggml_type.row_bytes(ne[0] as usize).with_context(|| format!("tensor {name:?}"))? as u64;
        let n_bytes = row_bytes
            .checked_mul(n_elements / ne[0])
            .filter(|&b| b <= isize::MAX as u64)
            .ok_or_else(|| anyhow!("tensor {name:?} with shape {ne:?} has a byte size that overflows"))?;
        Ok(TensorInfo { name: name.to_string(), ne, ggml_type, offset: 0, n_bytes })
    }

    pub fn n_elements(&self) -> u64 {
        self.ne.iter().product()
    }

    /// Row-major shape, outermost first (PyTorch order).
    pub fn shape(&self) -> Vec<usize> {
        self.ne.iter().rev().map(|&d| d as usize).collect()
    }
}

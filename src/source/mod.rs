//! Reading model sources: Hugging Face safetensors directories and GGUF files.
//!
//! Both are memory-mapped and read one tensor at a time; [`TensorSource::release`] hands a
//! tensor's pages back to the kernel once it has been converted, so streaming a checkpoint larger
//! than RAM keeps only one tensor's working set resident.

pub mod gguf;
pub mod hf;

use crate::gguf::GgmlType;
use anyhow::Result;
use memmap2::{Mmap, UncheckedAdvice};

pub use hf::HfCheckpoint;

/// A tensor as the source stores it: its name there, row-major shape (outermost first) and type.
#[derive(Clone, Debug)]
pub struct SourceTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: GgmlType,
}

impl SourceTensor {
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Anything that can hand out tensors by name.
pub trait TensorSource: Sync {
    fn tensors(&self) -> &[SourceTensor];
    /// The tensor's bytes as stored (a slice of the memory map).
    fn raw(&self, name: &str) -> Result<&[u8]>;
    /// Drop the tensor's pages from this process's resident set.
    fn release(&self, name: &str);
    /// Drop the pages of part of a tensor's bytes (a sub-slice of [`Self::raw`]).
    fn release_part(&self, name: &str, part: &[u8]);
    /// Where the tensor lives, for error messages.
    fn location(&self, name: &str) -> String;

    fn tensor(&self, name: &str) -> Option<&SourceTensor> {
        self.tensors().iter().find(|t| t.name == name)
    }

    /// The tensor decoded to f32.
    fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        let info = self.tensor(name).ok_or_else(|| anyhow::anyhow!("no tensor {name:?} in {}", self.location(name)))?;
        crate::quant::dequantize(info.dtype, self.raw(name)?)
            .map_err(|e| anyhow::anyhow!("{}: tensor {name:?}: {e:#}", self.location(name)))
    }
}

/// [`release_pages`] for a slice that lies inside `map` (anything else is ignored).
pub fn release_slice(map: &Mmap, part: &[u8]) {
    let base = map.as_ptr() as usize;
    let start = part.as_ptr() as usize;
    if start >= base && start + part.len() <= base + map.len() {
        release_pages(map, start - base, part.len());
    }
}

/// `madvise(MADV_DONTNEED)` over the pages of `[offset, offset+len)`.
///
/// The map is read-only and file-backed, so dropped pages are simply re-read from the file if touched
/// again; this only trims the resident set.
pub fn release_pages(map: &Mmap, offset: usize, len: usize) {
    const PAGE: usize = 4096;
    let start = offset / PAGE * PAGE;
    let end = (offset + len).next_multiple_of(PAGE).min(map.len());
    if end > start {
        // SAFETY: read-only private file mapping; no Rust reference into these pages outlives this call
        // in a way that could observe a change (the contents are re-read identically from the file).
        unsafe {
            let _ = map.unchecked_advise_range(UncheckedAdvice::DontNeed, start, end - start);
        }
    }
}

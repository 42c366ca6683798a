//! Reading model sources: Hugging Face safetensors directories and GGUF files, and what a source
//! holds ([`inspect`]).
//!
//! Both are memory-mapped and read one tensor at a time; [`TensorSource::release`] hands a
//! tensor's pages back to the kernel once it has been converted, so streaming a checkpoint larger
//! than RAM keeps only the tensors being converted (the current one and the next) resident.
//!
//! Uses `gguf`, `quant` (to decode tensor data) and `util`.

pub mod gguf;
pub mod hf;
pub mod inspect;
pub mod overlay;

use crate::gguf::GgufFile;
use crate::quant::GgmlType;
use anyhow::{bail, Result};
use std::path::Path;

pub use gguf::GgufSource;
pub use hf::HfCheckpoint;
pub use overlay::Overlay;

/// A tensor as a source stores it: its name there, row-major shape (outermost first) and type.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorDesc {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: GgmlType,
}

impl TensorDesc {
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes of the data as stored.
    pub fn n_bytes(&self) -> u64 {
        (self.n_elements() / self.dtype.block_size() * self.dtype.type_size()) as u64
    }
}

/// Anything that can hand out tensors by name.
pub trait TensorSource: Sync {
    fn tensors(&self) -> &[TensorDesc];
    /// The tensor's bytes as stored (a slice of the memory map).
    fn raw(&self, name: &str) -> Result<&[u8]>;
    /// Drop the tensor's pages from this process's resident set.
    fn release(&self, name: &str);
    /// Drop the pages of part of a tensor's bytes (a sub-slice of [`Self::raw`]).
    fn release_part(&self, name: &str, part: &[u8]);
    /// Where the tensor lives, for error messages.
    fn location(&self, name: &str) -> String;
    /// Start reading a tensor's bytes in the background (it is needed next).
    fn prefetch(&self, _name: &str) {}

    /// The bytes `range` of the tensor's stored bytes, read past the page cache into `buf` (see
    /// [`crate::util::direct`]); `None` when this source does not read so (use [`Self::raw`]).
    fn read_direct<'b>(
        &self,
        _name: &str,
        _range: std::ops::Range<usize>,
        _buf: &'b mut crate::util::direct::DirectBuffer,
    ) -> Option<Result<&'b [u8]>> {
        None
    }

    /// Does [`Self::read_direct`] read this tensor (so advising its pages into the cache is waste)?
    fn reads_direct(&self, _name: &str) -> bool {
        false
    }

    fn tensor(&self, name: &str) -> Option<&TensorDesc> {
        self.tensors().iter().find(|t| t.name == name)
    }

    /// The tensor decoded to f32.
    fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        self.decode(name, self.raw(name)?)
    }

    /// The tensor's stored `bytes` (from [`Self::raw`] or [`Self::read_direct`]) decoded to f32.
    fn decode(&self, name: &str, bytes: &[u8]) -> Result<Vec<f32>> {
        let info = self.tensor(name).ok_or_else(|| anyhow::anyhow!("no tensor {name:?} in {}", self.location(name)))?;
        crate::quant::dequantize(info.dtype, bytes)
            .map_err(|e| anyhow::anyhow!("{}: tensor {name:?}: {e:#}", self.location(name)))
    }
}

/// A model source as found on disk.
pub enum Source {
    Hf(HfCheckpoint),
    Gguf(GgufSource),
}

impl Source {
    /// A Hugging Face directory or a GGUF file (told apart by what the path is, then the magic).
    pub fn open(path: &Path) -> Result<Source> {
        if path.is_dir() {
            return Ok(Source::Hf(HfCheckpoint::open(path)?));
        }
        if !path.exists() {
            bail!("{}: no such file or directory", path.display());
        }
        if !path.is_file() {
            // A FIFO or a device would block or stream: a model is a file read twice (magic, map).
            bail!("{}: not a regular file (a model is a GGUF file or a Hugging Face directory)", path.display());
        }
        let mut magic = [0u8; 4];
        let n = std::io::Read::read(&mut std::fs::File::open(path)?, &mut magic).unwrap_or(0);
        if n == 4 && &magic == b"GGUF" {
            return Ok(Source::Gguf(GgufSource::new(GgufFile::open(path)?)));
        }
        bail!("{}: neither a Hugging Face model directory nor a GGUF file (bad magic)", path.display())
    }

    pub fn tensors(&self) -> &dyn TensorSource {
        match self {
            Source::Hf(c) => c,
            Source::Gguf(g) => g,
        }
    }
}

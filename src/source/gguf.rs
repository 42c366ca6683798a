//! A GGUF file as a tensor source (tensor names are already llama.cpp's).

use super::{TensorDesc, TensorSource};
use crate::gguf::GgufFile;
use anyhow::{anyhow, Result};

pub struct GgufSource {
    pub file: GgufFile,
    tensors: Vec<TensorDesc>,
}

impl GgufSource {
    pub fn new(file: GgufFile) -> GgufSource {
        let tensors = file
            .tensors
            .iter()
            .map(|t| TensorDesc { name: t.name.clone(), shape: t.shape(), dtype: t.ggml_type })
            .collect();
        GgufSource { file, tensors }
    }
}

impl TensorSource for GgufSource {
    fn tensors(&self) -> &[TensorDesc] {
        &self.tensors
    }

    fn raw(&self, name: &str) -> Result<&[u8]> {
        let info = self.file.tensor(name).ok_or_else(|| anyhow!("{}: no tensor {name:?}", self.file.path.display()))?;
        Ok(self.file.tensor_data(info))
    }

    fn release(&self, name: &str) {
        if let Some(info) = self.file.tensor(name) {
            self.file.release(info);
        }
    }

    fn release_part(&self, _name: &str, part: &[u8]) {
        self.file.release_slice(part);
    }

    fn prefetch(&self, name: &str) {
        if let Some(info) = self.file.tensor(name) {
            self.file.prefetch(info);
        }
    }

    fn location(&self, _name: &str) -> String {
        self.file.path.display().to_string()
    }
}

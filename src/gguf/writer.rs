//! A streaming GGUF v3 writer.
//!
//! Why not `gguf-rs`'s writer: it zero-fills the whole data section before seeking back to fill it,
//! which writes every byte twice. Here the header is written once (all tensor shapes and types are
//! known before any data is produced), then each tensor's bytes are appended in order as they are
//! produced, so a conversion holds one tensor in memory and writes each byte once.
//!
//! Output goes to a hidden temporary file beside the target and is renamed over it only by
//! [`GgufWriter::finish`]; dropping an unfinished writer removes the temporary file, so a failed or
//! interrupted conversion never leaves a half-written model behind.

use super::reader::DEFAULT_ALIGNMENT;
use super::tensor::TensorInfo;
use super::value::{GgufValue, Metadata};
use crate::util::atomic::TempOutput;
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::Path;

pub struct GgufWriter {
    out: TempOutput,
    tensors: Vec<TensorInfo>,
    next: usize,
    written: u64,
    /// The tensor being written: (size from the header, bytes so far).
    open: Option<(u64, u64)>,
}

impl GgufWriter {
    /// Write the header for `tensors` (in the order their data will follow) and get ready for data.
    pub fn create(path: &Path, metadata: &Metadata, tensors: Vec<TensorInfo>) -> Result<GgufWriter> {
        // Sizes are recomputed from name, shape and type: the header never trusts a caller's.
        let tensors =
            tensors.into_iter().map(|t| TensorInfo::new(&t.name, t.ne, t.ggml_type)).collect::<Result<Vec<_>>>()?;
        let mut out = TempOutput::create(path)?;
        let header = encode_header(metadata, &tensors)?;
        out.writer().write_all(&header).with_context(|| format!("writing {}", path.display()))?;
        Ok(GgufWriter { out, tensors, next: 0, written: header.len() as u64, open: None })
    }

    /// Append the next tensor's data; tensors must come in header order with exactly their size.
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<()> {
        self.begin_tensor(name)?;
        self.write_data(data)?;
        self.end_tensor()
    }

    /// Start the next tensor, whose bytes then come in pieces through [`Self::write_data`].
    pub fn begin_tensor(&mut self, name: &str) -> Result<()> {
        if self.open.is_some() {
            bail!("tensor {name:?} started before the previous one ended");
        }
        let Some(expected) = self.tensors.get(self.next) else {
            bail!("tensor {name:?} written after the last tensor in the header");
        };
        if expected.name != name {
            bail!("tensor {name:?} written where the header expects {:?}", expected.name);
        }
        self.open = Some((expected.n_bytes, 0));
        Ok(())
    }

    pub fn write_data(&mut self, data: &[u8]) -> Result<()> {
        let Some((size, done)) = self.open.as_mut() else { bail!("data written outside a tensor") };
        *done += data.len() as u64;
        if *done > *size {
            bail!("tensor {:?} is larger than its header says ({size} bytes)", self.tensors[self.next].name);
        }
        self.out.writer().write_all(data)?;
        Ok(())
    }

    pub fn end_tensor(&mut self) -> Result<()> {
        let Some((size, done)) = self.open.take() else { bail!("no tensor to end") };
        if done != size {
            bail!("tensor {:?} has {done} bytes, its header says {size}", self.tensors[self.next].name);
        }
        let padded = size.next_multiple_of(DEFAULT_ALIGNMENT);
        self.out.writer().write_all(&vec![0u8; (padded - size) as usize])?;
        self.written += padded;
        self.next += 1;
        Ok(())
    }

    /// Check every tensor was written, flush, sync and rename into place.
    pub fn finish(self) -> Result<u64> {
        if self.next != self.tensors.len() {
            bail!("only {} of {} tensors were written", self.next, self.tensors.len());
        }
        self.out.commit()?;
        Ok(self.written)
    }
}

/// The bytes of a GGUF v3 header: magic, counts, metadata, tensor infos, padding to the data section.
pub fn encode_header(metadata: &Metadata, tensors: &[TensorInfo]) -> Result<Vec<u8>> {
    let mut b = Vec::new();
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    b.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        put_string(&mut b, key);
        b.extend_from_slice(&value.type_tag().to_le_bytes());
        put_value(&mut b, value)?;
    }
    let mut offset = 0u64;
    for t in tensors {
        put_string(&mut b, &t.name);
        b.extend_from_slice(&(t.ne.len() as u32).to_le_bytes());
        for d in &t.ne {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.extend_from_slice(&t.ggml_type.id().to_le_bytes());
        b.extend_from_slice(&offset.to_le_bytes());
        offset += TensorInfo::new(&t.name, t.ne.clone(), t.ggml_type)?.n_bytes.next_multiple_of(DEFAULT_ALIGNMENT);
    }
    b.resize(b.len().next_multiple_of(DEFAULT_ALIGNMENT as usize), 0);
    Ok(b)
}

fn put_string(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn put_value(b: &mut Vec<u8>, v: &GgufValue) -> Result<()> {
    match v {
        GgufValue::U8(x) => b.push(*x),
        GgufValue::I8(x) => b.push(*x as u8),
        GgufValue::U16(x) => b.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => b.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => b.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => b.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => b.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => b.push(*x as u8),
        GgufValue::String(s) => put_string(b, s),
        GgufValue::U64(x) => b.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => b.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => b.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Array(elem, items) => {
            b.extend_from_slice(&elem.to_le_bytes());
            b.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                if item.type_tag() != *elem {
                    bail!("array of type {elem} holds a value of type {}", item.type_tag());
                }
                put_value(b, item)?;
            }
        }
    }
    Ok(())
}

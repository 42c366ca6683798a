//! A streaming safetensors writer: the header (names, dtypes, shapes, offsets) is written first,
//! then each tensor's bytes in order, so writing a checkpoint holds one tensor in memory.

use crate::quant::GgmlType;
use crate::util::atomic::TempOutput;
use anyhow::{bail, Result};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::Path;

pub struct SafetensorsWriter {
    out: TempOutput,
    /// (name, bytes) expected, in order.
    expected: Vec<(String, usize)>,
    next: usize,
}

fn dtype_name(t: GgmlType) -> Result<&'static str> {
    Ok(match t {
        GgmlType::F32 => "F32",
        GgmlType::F16 => "F16",
        GgmlType::BF16 => "BF16",
        other => bail!("safetensors cannot hold {other}"),
    })
}

impl SafetensorsWriter {
    /// `tensors`: (name, row-major shape, dtype), in the order their data will be written.
    pub fn create(path: &Path, tensors: &[(String, Vec<usize>, GgmlType)]) -> Result<SafetensorsWriter> {
        let mut header = Map::new();
        header.insert("__metadata__".into(), json!({"format": "pt"}));
        let mut offset = 0usize;
        let mut expected = Vec::new();
        for (name, shape, dtype) in tensors {
            let n = shape.iter().product::<usize>() * dtype.type_size();
            header.insert(
                name.clone(),
                json!({"dtype": dtype_name(*dtype)?, "shape": shape, "data_offsets": [offset, offset + n]}),
            );
            expected.push((name.clone(), n));
            offset += n;
        }
        let mut text = serde_json::to_string(&Value::Object(header))?.into_bytes();
        // The data section starts 8-byte aligned; the format pads the header with spaces.
        text.resize(text.len().next_multiple_of(8), b' ');
        let mut out = TempOutput::create(path)?;
        let w = out.writer();
        w.write_all(&(text.len() as u64).to_le_bytes())?;
        w.write_all(&text)?;
        Ok(SafetensorsWriter { out, expected, next: 0 })
    }

    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<()> {
        match self.expected.get(self.next) {
            Some((n, len)) if n == name && *len == data.len() => {}
            _ => bail!("tensor {name:?} ({} bytes) written out of order or with the wrong size", data.len()),
        }
        self.out.writer().write_all(data)?;
        self.next += 1;
        Ok(())
    }

    pub fn finish(self) -> Result<()> {
        if self.next != self.expected.len() {
            bail!("only {} of {} tensors were written", self.next, self.expected.len());
        }
        self.out.commit()
    }
}

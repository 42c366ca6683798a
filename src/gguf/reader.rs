//! A memory-mapped GGUF reader (v2 and v3).
//!
//! Why not `gguf-rs`: its metadata comes back as untyped JSON (a `u32` and an `i32` look alike), which
//! breaks byte-faithful round trips of metadata, and it has no bounds checks that name the broken part
//! of a corrupt file. This reader keeps every value's on-disk type, validates every count, length and
//! offset against the file size before use, and hands out tensor data as slices of the map.

use super::tensor::TensorInfo;
use super::value::{meta_get, value_type, GgufValue, Metadata};
use crate::quant::GgmlType;
use anyhow::{anyhow, bail, Context, Result};
use memmap2::Mmap;
use std::fs::File;
use std::path::{Path, PathBuf};

pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's `GGML_MAX_NAME`: a tensor name is shorter than this.
pub const GGML_MAX_NAME: usize = 64;
/// ggml's limits on a metadata string and an array (`GGUF_MAX_STRING_LENGTH`, `GGUF_MAX_ARRAY_ELEMENTS`).
const MAX_STRING_LENGTH: u64 = 1 << 30;
const MAX_ARRAY_ELEMENTS: u64 = 1 << 30;

/// One tensor info: name (already read), dimensions, type and relative offset, with the byte size
/// computed and checked.
fn read_tensor_info(cur: &mut Cursor, name: String) -> Result<TensorInfo> {
    let n_dims = cur.u32()?;
    if n_dims == 0 || n_dims > 4 {
        bail!("tensor {name:?} has {n_dims} dimensions (ggml allows 1 to 4)");
    }
    let ne = (0..n_dims).map(|_| cur.u64()).collect::<Result<Vec<_>>>()?;
    let type_id = cur.u32()?;
    let ggml_type = GgmlType::from_id(type_id)
        .ok_or_else(|| anyhow!("tensor {name:?} has ggml type {type_id}, which microscale does not support"))?;
    let offset = cur.u64()?;
    Ok(TensorInfo { offset, ..TensorInfo::new(&name, ne, ggml_type)? })
}

pub struct GgufFile {
    pub path: PathBuf,
    map: Mmap,
    pub version: u32,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    pub data_offset: u64,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<GgufFile> {
        if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
            bail!("{}: not a regular file", path.display());
        }
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: the map is read-only; a file truncated under us is the usual mmap caveat.
        let map = unsafe { Mmap::map(&file) }.with_context(|| format!("cannot map {}", path.display()))?;
        Self::parse(path, map).map_err(|e| anyhow!("{}: {e:#}", path.display()))
    }

    /// Parse and validate the header the way ggml's `gguf_init_from_file` does (same limits, same
    /// refusals: duplicate keys and tensor names, bad alignment, shapes that overflow, rows that are
    /// not whole blocks, tensors not stored in order), before anything is handed out. Every size
    /// and offset is computed with checked arithmetic, and no allocation exceeds what the file's
    /// remaining bytes could hold.
    fn parse(path: &Path, map: Mmap) -> Result<GgufFile> {
        let mut cur = Cursor { buf: &map, pos: 0 };
        let magic = cur.take(4).context("not a GGUF file (too short for the magic)")?;
        if magic != GGUF_MAGIC {
            bail!("not a GGUF file (bad magic {:?})", String::from_utf8_lossy(magic));
        }
        let version = cur.u32()?;
        if !(2..=3).contains(&version) {
            bail!("unsupported GGUF version {version} (microscale reads v2 and v3)");
        }
        let n_tensors = cur.u64()?;
        let n_kv = cur.u64()?;
        // Reject counts the file cannot hold: a key-value pair takes at least 13 bytes (key length,
        // one key byte, type tag, one value byte), a tensor info at least 32.
        let remaining = cur.remaining() as u64;
        if n_kv > remaining / 13 || n_tensors > remaining / 32 {
            bail!("truncated or corrupt header: {n_tensors} tensors and {n_kv} keys cannot fit in {} bytes", map.len());
        }
        let mut metadata: Metadata = Vec::with_capacity(n_kv as usize);
        let mut seen_keys = std::collections::HashSet::new();
        for i in 0..n_kv {
            let key = cur.string().with_context(|| format!("metadata key #{i}"))?;
            if key.is_empty() {
                bail!("metadata key #{i} is empty");
            }
            if !seen_keys.insert(key.clone()) {
                bail!("duplicate metadata key {key:?}");
            }
            let tag = cur.u32()?;
            let value = cur.value(tag, 0).with_context(|| format!("metadata value of {key:?}"))?;
            metadata.push((key, value));
        }
        let alignment = match meta_get(&metadata, "general.alignment") {
            Some(GgufValue::U32(a)) if *a > 0 && a.is_power_of_two() => u64::from(*a),
            Some(GgufValue::U32(a)) => bail!("general.alignment {a} is not a power of 2"),
            Some(other) => bail!("general.alignment must be a UINT32, not {other:?}"),
            None => DEFAULT_ALIGNMENT,
        };
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut seen_names = std::collections::HashSet::new();
        for i in 0..n_tensors {
            let name = cur.string().with_context(|| format!("tensor info #{i}"))?;
            if name.len() >= GGML_MAX_NAME {
                bail!("tensor name #{i} is {} bytes long (ggml allows at most {})", name.len(), GGML_MAX_NAME - 1);
            }
            if !seen_names.insert(name.clone()) {
                bail!("duplicate tensor name {name:?}");
            }
            tensors.push(read_tensor_info(&mut cur, name)?);
        }
        let data_offset = (cur.pos as u64)
            .checked_next_multiple_of(alignment)
            .ok_or_else(|| anyhow!("data section offset overflows"))?;
        let file_len = map.len() as u64;
        // ggml stores tensors back to back in header order, each padded to the alignment.
        let mut expected = 0u64;
        for t in &mut tensors {
            if t.offset != expected {
                bail!(
                    "tensor {:?} has data offset {}, expected {expected} (tensors must be stored in order, each padded to {alignment} bytes)",
                    t.name,
                    t.offset
                );
            }
            let padded = t
                .n_bytes
                .checked_next_multiple_of(alignment)
                .ok_or_else(|| anyhow!("tensor {:?}: size overflows", t.name))?;
            expected = expected.checked_add(padded).ok_or_else(|| anyhow!("tensor {:?}: offset overflows", t.name))?;
            t.offset =
                t.offset.checked_add(data_offset).ok_or_else(|| anyhow!("tensor {:?}: offset overflows", t.name))?;
            let end =
                t.offset.checked_add(t.n_bytes).ok_or_else(|| anyhow!("tensor {:?}: offset overflows", t.name))?;
            if end > file_len {
                bail!(
                    "truncated file: tensor {:?} needs bytes {}..{} but the file has {file_len}",
                    t.name,
                    t.offset,
                    end
                );
            }
        }
        Ok(GgufFile { path: path.to_path_buf(), map, version, metadata, tensors, alignment, data_offset })
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        meta_get(&self.metadata, key)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| v.as_str())
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(|v| v.as_u64())
    }

    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(|v| v.as_f64())
    }

    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
            .ok_or_else(|| anyhow!("{}: no general.architecture key", self.path.display()))
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw bytes of a tensor, borrowed from the map.
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        &self.map[info.offset as usize..(info.offset + info.n_bytes) as usize]
    }

    /// Tell the kernel we are done with a tensor's pages, so that streaming through a large file does
    /// not leave it all resident (mapped file pages count toward the process's RSS).
    pub fn release(&self, info: &TensorInfo) {
        crate::util::mmap::release_pages(&self.map, info.offset as usize, info.n_bytes as usize);
    }

    /// Start reading a tensor's data in the background.
    pub fn prefetch(&self, info: &TensorInfo) {
        crate::util::mmap::prefetch_pages(&self.map, info.offset as usize, info.n_bytes as usize);
    }

    /// Like [`Self::release`], for part of a tensor's data.
    pub fn release_slice(&self, part: &[u8]) {
        crate::util::mmap::release_slice(&self.map, part);
    }
}

/// The smallest encoding of one value of a type (None for unknown types and nested arrays).
fn value_size(tag: u32) -> Option<u64> {
    use value_type::*;
    Some(match tag {
        UINT8 | INT8 | BOOL => 1,
        UINT16 | INT16 => 2,
        UINT32 | INT32 | FLOAT32 => 4,
        UINT64 | INT64 | FLOAT64 | STRING => 8,
        _ => return None,
    })
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            bail!("truncated header: needed {n} bytes at offset {}, file has {}", self.pos, self.buf.len());
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String> {
        let len = self.u64()?;
        if len > MAX_STRING_LENGTH {
            bail!("a string of {len} bytes at offset {} exceeds ggml's limit of {MAX_STRING_LENGTH}", self.pos);
        }
        if len > self.remaining() as u64 {
            bail!("truncated header: a string of {len} bytes at offset {} runs past the end", self.pos);
        }
        let bytes = self.take(len as usize)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| anyhow!("a string at offset {} is not UTF-8", self.pos))
    }

    fn value(&mut self, tag: u32, depth: u32) -> Result<GgufValue> {
        use value_type::*;
        Ok(match tag {
            UINT8 => GgufValue::U8(self.array::<1>()?[0]),
            INT8 => GgufValue::I8(self.array::<1>()?[0] as i8),
            UINT16 => GgufValue::U16(u16::from_le_bytes(self.array()?)),
            INT16 => GgufValue::I16(i16::from_le_bytes(self.array()?)),
            UINT32 => GgufValue::U32(self.u32()?),
            INT32 => GgufValue::I32(i32::from_le_bytes(self.array()?)),
            FLOAT32 => GgufValue::F32(f32::from_le_bytes(self.array()?)),
            BOOL => GgufValue::Bool(self.array::<1>()?[0] != 0),
            STRING => GgufValue::String(self.string()?),
            UINT64 => GgufValue::U64(self.u64()?),
            INT64 => GgufValue::I64(i64::from_le_bytes(self.array()?)),
            FLOAT64 => GgufValue::F64(f64::from_le_bytes(self.array()?)),
            ARRAY => {
                if depth > 0 {
                    bail!("nested arrays are not supported");
                }
                let elem = self.u32()?;
                let n = self.u64()?;
                if n > MAX_ARRAY_ELEMENTS {
                    bail!("an array of {n} items exceeds ggml's limit of {MAX_ARRAY_ELEMENTS}");
                }
                // Each element takes at least its fixed size (a string at least its 8-byte length).
                let min_size = value_size(elem).ok_or_else(|| anyhow!("array of unknown value type {elem}"))?;
                if n.saturating_mul(min_size) > self.remaining() as u64 {
                    bail!("truncated header: an array of {n} items runs past the end");
                }
                let items = (0..n).map(|_| self.value(elem, depth + 1)).collect::<Result<Vec<_>>>()?;
                GgufValue::Array(elem, items)
            }
            other => bail!("unknown metadata value type {other}"),
        })
    }
}

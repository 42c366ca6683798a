//! GGML tensor types and GGUF metadata values, numbered exactly as `ggml.h` and `gguf.h` number them.

use anyhow::{bail, Result};
use std::fmt;

/// A ggml tensor type (`enum ggml_type`). Only the types microscale reads or writes are listed;
/// any other id in a file is reported by number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
    I8,
    I16,
    I32,
    BF16,
}

impl GgmlType {
    pub const ALL: [GgmlType; 18] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
        GgmlType::Q8K,
        GgmlType::I8,
        GgmlType::I16,
        GgmlType::I32,
        GgmlType::BF16,
    ];

    /// The id stored in GGUF tensor infos (`enum ggml_type`).
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q8_1 => 9,
            GgmlType::Q2K => 10,
            GgmlType::Q3K => 11,
            GgmlType::Q4K => 12,
            GgmlType::Q5K => 13,
            GgmlType::Q6K => 14,
            GgmlType::Q8K => 15,
            GgmlType::I8 => 24,
            GgmlType::I16 => 25,
            GgmlType::I32 => 26,
            GgmlType::BF16 => 30,
        }
    }

    pub fn from_id(id: u32) -> Option<GgmlType> {
        GgmlType::ALL.iter().copied().find(|t| t.id() == id)
    }

    /// Elements per block (`ggml_blck_size`).
    pub fn block_size(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::I8 | GgmlType::I16 | GgmlType::I32 => 1,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0 | GgmlType::Q8_1 => 32,
            GgmlType::Q2K | GgmlType::Q3K | GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K | GgmlType::Q8K => 256,
        }
    }

    /// Bytes per block (`ggml_type_size`).
    pub fn type_size(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::I32 => 4,
            GgmlType::F16 | GgmlType::BF16 | GgmlType::I16 => 2,
            GgmlType::I8 => 1,
            GgmlType::Q4_0 => 18,
            GgmlType::Q4_1 => 20,
            GgmlType::Q5_0 => 22,
            GgmlType::Q5_1 => 24,
            GgmlType::Q8_0 => 34,
            GgmlType::Q8_1 => 36,
            GgmlType::Q2K => 84,
            GgmlType::Q3K => 110,
            GgmlType::Q4K => 144,
            GgmlType::Q5K => 176,
            GgmlType::Q6K => 210,
            GgmlType::Q8K => 292,
        }
    }

    /// Bytes of `n` elements (one row), which must be a whole number of blocks.
    pub fn row_bytes(self, n: usize) -> Result<usize> {
        if !n.is_multiple_of(self.block_size()) {
            bail!("a row of {n} elements is not a whole number of {self} blocks of {}", self.block_size());
        }
        (n / self.block_size())
            .checked_mul(self.type_size())
            .ok_or_else(|| anyhow::anyhow!("a row of {n} {self} elements overflows the byte count"))
    }

    /// The name ggml prints (`ggml_type_name`): lower case, `q4_K` style.
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "f32",
            GgmlType::F16 => "f16",
            GgmlType::Q4_0 => "q4_0",
            GgmlType::Q4_1 => "q4_1",
            GgmlType::Q5_0 => "q5_0",
            GgmlType::Q5_1 => "q5_1",
            GgmlType::Q8_0 => "q8_0",
            GgmlType::Q8_1 => "q8_1",
            GgmlType::Q2K => "q2_K",
            GgmlType::Q3K => "q3_K",
            GgmlType::Q4K => "q4_K",
            GgmlType::Q5K => "q5_K",
            GgmlType::Q6K => "q6_K",
            GgmlType::Q8K => "q8_K",
            GgmlType::I8 => "i8",
            GgmlType::I16 => "i16",
            GgmlType::I32 => "i32",
            GgmlType::BF16 => "bf16",
        }
    }

    /// A block format (not a float or integer type).
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bits per weight of the format (block bytes * 8 / block elements).
    pub fn bits_per_weight(self) -> f64 {
        self.type_size() as f64 * 8.0 / self.block_size() as f64
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `enum llama_ftype`, stored as `general.file_type`.
pub mod file_type {
    pub const ALL_F32: u32 = 0;
    pub const MOSTLY_F16: u32 = 1;
    pub const MOSTLY_Q4_0: u32 = 2;
    pub const MOSTLY_Q4_1: u32 = 3;
    pub const MOSTLY_Q8_0: u32 = 7;
    pub const MOSTLY_Q5_0: u32 = 8;
    pub const MOSTLY_Q5_1: u32 = 9;
    pub const MOSTLY_Q4_K_S: u32 = 14;
    pub const MOSTLY_Q4_K_M: u32 = 15;
    pub const MOSTLY_Q5_K_S: u32 = 16;
    pub const MOSTLY_Q5_K_M: u32 = 17;
    pub const MOSTLY_Q6_K: u32 = 18;
    pub const MOSTLY_BF16: u32 = 32;

    /// llama.cpp's name for a file type, as `llama_model_ftype_name` prints it.
    pub fn name(ftype: u32) -> String {
        match ftype {
            ALL_F32 => "all F32".into(),
            MOSTLY_F16 => "F16".into(),
            MOSTLY_Q4_0 => "Q4_0".into(),
            MOSTLY_Q4_1 => "Q4_1".into(),
            MOSTLY_Q8_0 => "Q8_0".into(),
            MOSTLY_Q5_0 => "Q5_0".into(),
            MOSTLY_Q5_1 => "Q5_1".into(),
            MOSTLY_Q4_K_S => "Q4_K - Small".into(),
            MOSTLY_Q4_K_M => "Q4_K - Medium".into(),
            MOSTLY_Q5_K_S => "Q5_K - Small".into(),
            MOSTLY_Q5_K_M => "Q5_K - Medium".into(),
            MOSTLY_Q6_K => "Q6_K".into(),
            MOSTLY_BF16 => "BF16".into(),
            other => format!("file type {other}"),
        }
    }
}

/// `enum gguf_type`: the type tag of a metadata value.
pub mod value_type {
    pub const UINT8: u32 = 0;
    pub const INT8: u32 = 1;
    pub const UINT16: u32 = 2;
    pub const INT16: u32 = 3;
    pub const UINT32: u32 = 4;
    pub const INT32: u32 = 5;
    pub const FLOAT32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const UINT64: u32 = 10;
    pub const INT64: u32 = 11;
    pub const FLOAT64: u32 = 12;
}

/// A GGUF metadata value, keeping its exact on-disk type so that metadata survives a round trip.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    U64(u64),
    I64(i64),
    F64(f64),
    /// Element type tag and the elements (all of that type).
    Array(u32, Vec<GgufValue>),
}

impl GgufValue {
    pub fn type_tag(&self) -> u32 {
        use value_type::*;
        match self {
            GgufValue::U8(_) => UINT8,
            GgufValue::I8(_) => INT8,
            GgufValue::U16(_) => UINT16,
            GgufValue::I16(_) => INT16,
            GgufValue::U32(_) => UINT32,
            GgufValue::I32(_) => INT32,
            GgufValue::F32(_) => FLOAT32,
            GgufValue::Bool(_) => BOOL,
            GgufValue::String(_) => STRING,
            GgufValue::U64(_) => UINT64,
            GgufValue::I64(_) => INT64,
            GgufValue::F64(_) => FLOAT64,
            GgufValue::Array(..) => ARRAY,
        }
    }

    pub fn strings(values: impl IntoIterator<Item = String>) -> GgufValue {
        GgufValue::Array(value_type::STRING, values.into_iter().map(GgufValue::String).collect())
    }

    pub fn i32s(values: impl IntoIterator<Item = i32>) -> GgufValue {
        GgufValue::Array(value_type::INT32, values.into_iter().map(GgufValue::I32).collect())
    }

    /// Any integer value as u64 (negative values and non-integers give None).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v as u64),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::U16(v) => Some(v as u64),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::U32(v) => Some(v as u64),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::U64(v) => Some(v),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v as f64),
            GgufValue::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(_, v) => Some(v),
            _ => None,
        }
    }

    /// A short human-readable rendering (arrays abbreviated), for `inspect`.
    pub fn display_short(&self) -> String {
        match self {
            GgufValue::String(s) if s.len() > 60 => format!("{:?}…", &s[..s.floor_char_boundary_compat(60)]),
            GgufValue::String(s) => format!("{s:?}"),
            GgufValue::Array(_, v) => {
                let head: Vec<String> = v.iter().take(4).map(|x| x.display_short()).collect();
                let more = if v.len() > 4 { ", …" } else { "" };
                format!("[{}{}] ({} items)", head.join(", "), more, v.len())
            }
            GgufValue::F32(x) => format!("{x}"),
            GgufValue::F64(x) => format!("{x}"),
            GgufValue::Bool(b) => format!("{b}"),
            other => other.as_u64().map(|v| v.to_string()).unwrap_or_else(|| format!("{other:?}")),
        }
    }

    /// As JSON, for `inspect --json`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            GgufValue::String(s) => Value::String(s.clone()),
            GgufValue::Bool(b) => Value::Bool(*b),
            GgufValue::F32(x) => serde_json::json!(*x),
            GgufValue::F64(x) => serde_json::json!(*x),
            GgufValue::I8(v) => serde_json::json!(*v),
            GgufValue::I16(v) => serde_json::json!(*v),
            GgufValue::I32(v) => serde_json::json!(*v),
            GgufValue::I64(v) => serde_json::json!(*v),
            GgufValue::Array(_, v) => Value::Array(v.iter().map(|x| x.to_json()).collect()),
            other => serde_json::json!(other.as_u64()),
        }
    }
}

trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, i: usize) -> usize;
}

impl FloorCharBoundary for str {
    fn floor_char_boundary_compat(&self, mut i: usize) -> usize {
        while !self.is_char_boundary(i) {
            i -= 1;
        }
        i
    }
}

/// Ordered metadata, as written: llama.cpp does not care about order, but people diffing files do.
pub type Metadata = Vec<(String, GgufValue)>;

/// Look a key up in ordered metadata.
pub fn meta_get<'a>(meta: &'a Metadata, key: &str) -> Option<&'a GgufValue> {
    meta.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Insert or replace a key, keeping its position when it exists.
pub fn meta_set(meta: &mut Metadata, key: &str, value: GgufValue) {
    match meta.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => meta.push((key.to_string(), value)),
    }
}

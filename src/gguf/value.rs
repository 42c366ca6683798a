//! GGUF metadata values, typed exactly as `gguf.h` types them, so that metadata survives a round
//! trip byte for byte.

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

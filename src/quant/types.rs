//! ggml's tensor types, one table row each: the id `ggml.h` gives it, the name `ggml_type_name`
//! prints, its block geometry, its codec (the row quantizer and block decoder in this folder, each
//! bit-exact with ggml's), and the type llama.cpp falls back to when a row is not a whole number of
//! its blocks (`tensor_type_fallback` in `llama-quant.cpp`).
//!
//! Adding a type is its codec in its family's file and one line in [`ggml_types!`] below.

use super::{float, iq1, iq2, iq3, iq4, kquants, legacy, ternary};
use anyhow::{anyhow, bail, Result};
use std::fmt;

/// Quantize one row (a whole number of blocks) with optional per-column importance weights
/// (`x.len()` entries), writing the encoded blocks to `y`.
pub type RowQuantizer = fn(x: &[f32], y: &mut [u8], quant_weights: Option<&[f32]>);
/// Decode one block of `type_size` bytes into `block_size` values.
pub type BlockDequantizer = fn(block: &[u8], y: &mut [f32]);

/// Everything microscale knows about one ggml type.
pub struct TypeInfo {
    /// `enum ggml_type`, as stored in GGUF tensor infos.
    pub id: u32,
    /// `ggml_type_name`: lower case, `q4_K` style.
    pub name: &'static str,
    /// Elements per block (`ggml_blck_size`).
    pub block_size: usize,
    /// Bytes per block (`ggml_type_size`).
    pub type_size: usize,
    /// ggml's `quantize_*` for this type (None: microscale does not write it).
    pub quantize_row: Option<RowQuantizer>,
    /// ggml's `to_float` for this type (None: microscale does not read it).
    pub dequantize_block: Option<BlockDequantizer>,
    /// llama.cpp's fallback for rows that are not whole blocks of this type.
    pub fallback: Option<GgmlType>,
}

macro_rules! ggml_types {
    ($($variant:ident = $id:literal, $name:literal, $block:literal x $bytes:literal, $quantize:expr, $dequantize:expr, fallback $fallback:expr;)*) => {
        /// A ggml tensor type (`enum ggml_type`). Only the types microscale reads or writes are
        /// listed; any other id in a file is reported by number.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum GgmlType {
            $($variant),*
        }

        impl GgmlType {
            /// Every listed type, in `ggml.h` order.
            pub const ALL: &'static [GgmlType] = &[$(GgmlType::$variant),*];

            /// The type's table row.
            pub fn info(self) -> &'static TypeInfo {
                match self {
                    $(GgmlType::$variant => {
                        const INFO: TypeInfo = TypeInfo {
                            id: $id,
                            name: $name,
                            block_size: $block,
                            type_size: $bytes,
                            quantize_row: $quantize,
                            dequantize_block: $dequantize,
                            fallback: $fallback,
                        };
                        &INFO
                    })*
                }
            }
        }
    };
}

use GgmlType::*;

ggml_types! {
    F32  = 0,  "f32",  1 x 4,     Some(float::quantize_row_f32), Some(float::dequantize_f32), fallback None;
    F16  = 1,  "f16",  1 x 2,     Some(float::quantize_row_f16), Some(float::dequantize_f16), fallback None;
    Q4_0 = 2,  "q4_0", 32 x 18,   Some(legacy::quantize_row_q4_0), Some(legacy::dequantize_q4_0), fallback None;
    Q4_1 = 3,  "q4_1", 32 x 20,   Some(legacy::quantize_row_q4_1), Some(legacy::dequantize_q4_1), fallback None;
    Q5_0 = 6,  "q5_0", 32 x 22,   Some(legacy::quantize_row_q5_0), Some(legacy::dequantize_q5_0), fallback None;
    Q5_1 = 7,  "q5_1", 32 x 24,   Some(legacy::quantize_row_q5_1), Some(legacy::dequantize_q5_1), fallback None;
    Q8_0 = 8,  "q8_0", 32 x 34,   Some(legacy::quantize_row_q8_0), Some(legacy::dequantize_q8_0), fallback None;
    Q8_1 = 9,  "q8_1", 32 x 36,   None, None, fallback None;
    Q2K  = 10, "q2_K", 256 x 84,  Some(kquants::quantize_row_q2_k), Some(kquants::dequantize_q2_k), fallback Some(Q4_0);
    Q3K  = 11, "q3_K", 256 x 110, Some(kquants::quantize_row_q3_k), Some(kquants::dequantize_q3_k), fallback Some(Q4_0);
    Q4K  = 12, "q4_K", 256 x 144, Some(kquants::quantize_row_q4_k), Some(kquants::dequantize_q4_k), fallback Some(Q5_0);
    Q5K  = 13, "q5_K", 256 x 176, Some(kquants::quantize_row_q5_k), Some(kquants::dequantize_q5_k), fallback Some(Q5_1);
    Q6K  = 14, "q6_K", 256 x 210, Some(kquants::quantize_row_q6_k), Some(kquants::dequantize_q6_k), fallback Some(Q8_0);
    Q8K  = 15, "q8_K", 256 x 292, None, None, fallback None;
    IQ2XXS = 16, "iq2_xxs", 256 x 66, Some(iq2::quantize_row_iq2_xxs), Some(iq2::dequantize_iq2_xxs), fallback Some(IQ4NL);
    IQ2XS  = 17, "iq2_xs",  256 x 74, Some(iq2::quantize_row_iq2_xs), Some(iq2::dequantize_iq2_xs), fallback Some(IQ4NL);
    IQ3XXS = 18, "iq3_xxs", 256 x 98, Some(iq3::quantize_row_iq3_xxs), Some(iq3::dequantize_iq3_xxs), fallback Some(IQ4NL);
    IQ1S   = 19, "iq1_s",   256 x 50, Some(iq1::quantize_row_iq1_s), Some(iq1::dequantize_iq1_s), fallback Some(IQ4NL);
    IQ4NL  = 20, "iq4_nl",  32 x 18,  Some(iq4::quantize_row_iq4_nl), Some(iq4::dequantize_iq4_nl), fallback None;
    IQ3S   = 21, "iq3_s",   256 x 110, Some(iq3::quantize_row_iq3_s), Some(iq3::dequantize_iq3_s), fallback Some(IQ4NL);
    IQ2S   = 22, "iq2_s",   256 x 82, Some(iq2::quantize_row_iq2_s), Some(iq2::dequantize_iq2_s), fallback Some(IQ4NL);
    IQ4XS  = 23, "iq4_xs",  256 x 136, Some(iq4::quantize_row_iq4_xs), Some(iq4::dequantize_iq4_xs), fallback Some(IQ4NL);
    I8   = 24, "i8",   1 x 1,     None, None, fallback None;
    I16  = 25, "i16",  1 x 2,     None, None, fallback None;
    I32  = 26, "i32",  1 x 4,     None, None, fallback None;
    IQ1M   = 29, "iq1_m",   256 x 56, Some(iq1::quantize_row_iq1_m), Some(iq1::dequantize_iq1_m), fallback Some(IQ4NL);
    BF16 = 30, "bf16", 1 x 2,     Some(float::quantize_row_bf16), Some(float::dequantize_bf16), fallback None;
    TQ1_0   = 34, "tq1_0",   256 x 54, Some(ternary::quantize_row_tq1_0), Some(ternary::dequantize_tq1_0), fallback Some(Q4_0);
    TQ2_0   = 35, "tq2_0",   256 x 66, Some(ternary::quantize_row_tq2_0), Some(ternary::dequantize_tq2_0), fallback Some(Q4_0);
}

impl GgmlType {
    /// The id stored in GGUF tensor infos (`enum ggml_type`).
    pub fn id(self) -> u32 {
        self.info().id
    }

    pub fn from_id(id: u32) -> Option<GgmlType> {
        GgmlType::ALL.iter().copied().find(|t| t.id() == id)
    }

    /// Elements per block (`ggml_blck_size`).
    pub fn block_size(self) -> usize {
        self.info().block_size
    }

    /// Bytes per block (`ggml_type_size`).
    pub fn type_size(self) -> usize {
        self.info().type_size
    }

    /// The name ggml prints (`ggml_type_name`): lower case, `q4_K` style.
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// Parse a type name as llama-quantize's `--tensor-type` does (case-insensitive).
    pub fn parse(s: &str) -> Result<GgmlType> {
        GgmlType::ALL
            .iter()
            .copied()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| anyhow!("unknown ggml type {s:?}"))
    }

    /// Bytes of `n` elements (one row), which must be a whole number of blocks.
    pub fn row_bytes(self, n: usize) -> Result<usize> {
        if !n.is_multiple_of(self.block_size()) {
            bail!("a row of {n} elements is not a whole number of {self} blocks of {}", self.block_size());
        }
        (n / self.block_size())
            .checked_mul(self.type_size())
            .ok_or_else(|| anyhow!("a row of {n} {self} elements overflows the byte count"))
    }

    /// A block format (not a float or integer type).
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bits per weight of the format (block bytes * 8 / block elements).
    pub fn bits_per_weight(self) -> f64 {
        self.type_size() as f64 * 8.0 / self.block_size() as f64
    }

    /// ggml: `ggml_quantize_requires_imatrix`: the types ggml refuses to quantize without
    /// importance weights (IQ2_XXS, IQ2_XS, IQ1_S; IQ1_M is commented out of the list in ggml).
    pub fn requires_imatrix(self) -> bool {
        matches!(self, GgmlType::IQ2XXS | GgmlType::IQ2XS | GgmlType::IQ1S)
    }

    /// The types microscale can encode.
    pub fn writable() -> impl Iterator<Item = GgmlType> {
        GgmlType::ALL.iter().copied().filter(|t| t.info().quantize_row.is_some())
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

//! Tensor data formats: conversion of f32 rows to and from every ggml type microscale handles,
//! and llama.cpp's rules for which type each tensor of a model gets.
//!
//! [`types`] is the one table of ggml types (id, name, geometry, codec, fallback). `float` holds
//! f32/f16/bf16, `legacy` the 32-element block formats, `kquants` the 256-element super-block
//! formats, `iq4` the non-linear 4-bit formats, `iq3`, `iq2` and `iq1` the lattice formats (their
//! grids and search tables in `grids`), `ternary` TQ1_0/TQ2_0, and `common` the quantization
//! helpers they share. Each function names the ggml function it mirrors so the two can be read
//! side by side; quantized bytes are identical to what `ggml_quantize_chunk` writes, with and
//! without importance weights (IQ2_XXS, IQ2_XS and IQ1_S require them, as in ggml). [`mix`]
//! holds the schemes (`--outtype`) and llama.cpp's per-tensor choice of type. [`gptq`] is
//! error-compensated rounding onto the affine formats' grids (whose integer levels [`levels`]
//! reads and writes), the solver SparseGPT shares.
//!
//! The lowest stage but `util`: it uses nothing else of microscale.

pub mod budget;
pub mod common;
pub mod float;
pub mod gptq;
pub mod grids;
pub mod iq1;
pub mod iq2;
pub mod iq3;
pub mod iq4;
pub mod kquants;
pub mod legacy;
pub mod levels;
pub mod mix;
mod simd;
pub mod ternary;
pub mod types;

use anyhow::{anyhow, bail, Result};
use rayon::prelude::*;
pub use types::{BlockDequantizer, GgmlType, RowQuantizer, TypeInfo};

/// Rows handed to one rayon task: large enough to amortise scheduling, small enough to balance.
const PAR_CHUNK_ELEMS: usize = 1 << 16;

/// Decode `data` (a whole number of blocks of `ty`) into f32, in parallel.
pub fn dequantize(ty: GgmlType, data: &[u8]) -> Result<Vec<f32>> {
    let n_blocks = data.len() / ty.type_size();
    if n_blocks * ty.type_size() != data.len() {
        bail!("{} bytes are not a whole number of {ty} blocks", data.len());
    }
    let mut out = vec![0f32; n_blocks * ty.block_size()];
    dequantize_into(ty, data, &mut out)?;
    Ok(out)
}

/// Decode into a caller-provided buffer of exactly the right length.
pub fn dequantize_into(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<()> {
    let (bs, ts) = (ty.block_size(), ty.type_size());
    if data.len() / ts * bs != out.len() || !data.len().is_multiple_of(ts) {
        bail!("{ty}: {} bytes do not decode to {} values", data.len(), out.len());
    }
    // The float types element by element, inlined (a call per value through the table would
    // dominate: a 7B BF16 checkpoint is 6.7e9 of them).
    match ty {
        GgmlType::F32 => decode_floats(data, out, |b: &[u8; 4]| f32::from_le_bytes(*b)),
        GgmlType::F16 => decode_floats(data, out, |b: &[u8; 2]| float::f16_bits_to_f32(u16::from_le_bytes(*b))),
        GgmlType::BF16 => decode_floats(data, out, |b: &[u8; 2]| float::bf16_bits_to_f32(u16::from_le_bytes(*b))),
        _ => return dequantize_blocks(ty, data, out),
    }
    Ok(())
}

/// [`dequantize_into`] for the block formats, through the type table.
fn dequantize_blocks(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<()> {
    let (bs, ts) = (ty.block_size(), ty.type_size());
    let block_fn = ty.info().dequantize_block.ok_or_else(|| anyhow!("dequantizing {ty} is not supported yet"))?;
    let chunk_blocks = (PAR_CHUNK_ELEMS / bs).max(1);
    out.par_chunks_mut(chunk_blocks * bs).zip(data.par_chunks(chunk_blocks * ts)).for_each(|(y, x)| {
        for (yb, xb) in y.chunks_exact_mut(bs).zip(x.chunks_exact(ts)) {
            block_fn(xb, yb);
        }
    });
    Ok(())
}

/// `out[i] = decode(value i of data)` for a float type of `N` bytes, in parallel.
fn decode_floats<const N: usize>(data: &[u8], out: &mut [f32], decode: impl Fn(&[u8; N]) -> f32 + Sync) {
    out.par_chunks_mut(PAR_CHUNK_ELEMS).zip(data.par_chunks(PAR_CHUNK_ELEMS * N)).for_each(|(y, x)| {
        for (y, b) in y.iter_mut().zip(x.as_chunks::<N>().0) {
            *y = decode(b);
        }
    });
}

/// Encode f32 values as `ty`, in parallel. `row_len` is the tensor's row length (`ne[0]`): block
/// formats never straddle rows. Same as [`quantize_weighted`] without importance weights.
pub fn quantize(ty: GgmlType, values: &[f32], row_len: usize) -> Result<Vec<u8>> {
    quantize_weighted(ty, values, row_len, None)
}

/// Encode f32 values as `ty`, in parallel over rows, byte-identical to ggml's
/// `ggml_quantize_chunk(ty, values, .., nrows, row_len, quant_weights)`. `quant_weights` (an
/// importance matrix's diagonal: `row_len` entries, the same for every row) steers the block
/// formats that use it; the float formats, Q8_0 and TQ1_0/TQ2_0 ignore it, as ggml does. The
/// types ggml cannot quantize without it (`ggml_quantize_requires_imatrix`) are an error
/// without it.
pub fn quantize_weighted(
    ty: GgmlType,
    values: &[f32],
    row_len: usize,
    quant_weights: Option<&[f32]>,
) -> Result<Vec<u8>> {
    if row_len == 0 || !values.len().is_multiple_of(row_len) {
        bail!("{} values are not whole rows of {row_len}", values.len());
    }
    if let Some(qw) = quant_weights {
        if qw.len() != row_len {
            bail!("{} importance weights for rows of {row_len}", qw.len());
        }
    }
    if quant_weights.is_none() && ty.requires_imatrix() {
        bail!("{ty} needs an importance matrix (ggml_quantize_requires_imatrix)");
    }
    let row_bytes = ty.row_bytes(row_len)?;
    let n_rows = values.len() / row_len;
    let mut out = vec![0u8; n_rows * row_bytes];
    let row_fn = ty.info().quantize_row.ok_or_else(|| anyhow!("quantizing to {ty} is not supported yet"))?;
    // Whole rows per task: the weighted formats need the whole row (Q4_0..Q5_1 scale their weights
    // by the row's mean square).
    let rows_per_task = (PAR_CHUNK_ELEMS / row_len).max(1);
    out.par_chunks_mut(rows_per_task * row_bytes).zip(values.par_chunks(rows_per_task * row_len)).for_each(|(o, v)| {
        for (y, x) in o.chunks_exact_mut(row_bytes).zip(v.chunks_exact(row_len)) {
            row_fn(x, y, quant_weights);
        }
    });
    Ok(out)
}

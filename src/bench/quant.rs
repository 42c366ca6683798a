//! `microscale bench-quant`: rows per second of our quantizers and of ggml's C functions
//! (`ggml_quantize_chunk`, what llama-quantize calls) on the same data and thread count, run
//! alternately in one process so that a noisy machine affects both sides alike; the ratio is the
//! figure to read.

use crate::quant::quantize_weighted;
use crate::quant::GgmlType;
use anyhow::Result;
use llama_cpp_sys_2 as sys;
use serde::Serialize;
use std::time::Instant;

#[derive(Clone, Debug, Serialize)]
pub struct QuantBenchRow {
    pub ggml_type: String,
    pub imatrix: bool,
    pub rows: usize,
    pub row_len: usize,
    pub threads: usize,
    /// Median rows/s over the repetitions.
    pub ours_rows_per_s: f64,
    pub ggml_rows_per_s: f64,
    /// ours / ggml: above 1 means microscale is faster.
    pub speed_ratio: f64,
    pub identical: bool,
}

pub const BENCH_TYPES: [GgmlType; 19] = [
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::IQ4NL,
    GgmlType::IQ4XS,
    GgmlType::IQ3XXS,
    GgmlType::IQ3S,
    GgmlType::IQ2XXS,
    GgmlType::IQ2XS,
    GgmlType::IQ2S,
    GgmlType::IQ1S,
    GgmlType::IQ1M,
    GgmlType::TQ1_0,
    GgmlType::TQ2_0,
];

/// The weightings to measure a type with: without and with an importance matrix, or only with
/// one for the types ggml cannot quantize without (`ggml_quantize_requires_imatrix`).
pub fn imatrix_settings(ty: GgmlType) -> &'static [bool] {
    if ty.requires_imatrix() {
        &[true]
    } else {
        &[false, true]
    }
}

/// Gaussian-like test data (sum of uniforms), deterministic.
pub fn bench_data(n: usize) -> Vec<f32> {
    let mut rng = crate::util::rng::XorShift64::new(0x9E37_79B9_7F4A_7C15);
    (0..n).map(|_| ((0..3).map(|_| rng.next_f32()).sum::<f32>() - 1.5) * 0.05).collect()
}

/// ggml's quantizer over `threads` threads, rows split evenly (as llama-quantize splits chunks).
fn ggml_quantize(ty: GgmlType, data: &[f32], row_len: usize, weights: Option<&[f32]>, threads: usize) -> Vec<u8> {
    let rows = data.len() / row_len;
    let row_bytes = ty.row_bytes(row_len).expect("whole blocks");
    let mut out = vec![0u8; rows * row_bytes];
    let per = rows.div_ceil(threads);
    unsafe { sys::ggml_quantize_init(ty.id() as sys::ggml_type) };
    std::thread::scope(|s| {
        for (chunk_out, chunk_in) in out.chunks_mut(per * row_bytes).zip(data.chunks(per * row_len)) {
            s.spawn(move || unsafe {
                sys::ggml_quantize_chunk(
                    ty.id() as sys::ggml_type,
                    chunk_in.as_ptr(),
                    chunk_out.as_mut_ptr() as *mut _,
                    0,
                    (chunk_in.len() / row_len) as i64,
                    row_len as i64,
                    weights.map_or(std::ptr::null(), |w| w.as_ptr()),
                )
            });
        }
    });
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Time both quantizers on `rows` rows of `row_len`, `reps` alternating repetitions.
pub fn bench_type(
    ty: GgmlType,
    rows: usize,
    row_len: usize,
    threads: usize,
    reps: usize,
    imatrix: bool,
) -> Result<QuantBenchRow> {
    let data = bench_data(rows * row_len);
    let weights: Option<Vec<f32>> = imatrix.then(|| (0..row_len).map(|i| 0.5 + (i % 13) as f32 * 0.1).collect());
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
    // One row each first, untimed: the IQ formats build their grid tables once, on first use,
    // on both sides (`ggml_quantize_init` in ggml).
    quantize_weighted(ty, &data[..row_len], row_len, weights.as_deref())?;
    ggml_quantize(ty, &data[..row_len], row_len, weights.as_deref(), 1);
    let (mut ours_t, mut ggml_t) = (Vec::new(), Vec::new());
    let mut identical = true;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        let a = pool.install(|| quantize_weighted(ty, &data, row_len, weights.as_deref()))?;
        ours_t.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let b = ggml_quantize(ty, &data, row_len, weights.as_deref(), threads);
        ggml_t.push(t.elapsed().as_secs_f64());
        identical &= a == b;
    }
    let ours = rows as f64 / median(ours_t);
    let ggml = rows as f64 / median(ggml_t);
    Ok(QuantBenchRow {
        ggml_type: ty.name().to_string(),
        imatrix,
        rows,
        row_len,
        threads,
        ours_rows_per_s: ours,
        ggml_rows_per_s: ggml,
        speed_ratio: ours / ggml,
        identical,
    })
}

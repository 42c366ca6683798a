//! Our quantizers against ggml's own (linked through llama-cpp-sys-2): for every block format we
//! write, the bytes must equal `ggml_quantize_chunk`'s, with and without importance weights, on
//! synthetic rows from many distributions (including degenerate ones) and on real model rows;
//! our dequantization must equal ggml's `to_float` bit for bit; and the round trip must stay
//! within a per-format error bound.

mod common;

use llama_cpp_sys_2 as sys;
use microscale::quant::GgmlType;
use microscale::quant::{dequantize, quantize, quantize_weighted};
use microscale::source::{HfCheckpoint, TensorSource};
use microscale::util::rng::XorShift64;

const LEGACY: [GgmlType; 5] = [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0];
const KQUANTS: [GgmlType; 5] = [GgmlType::Q2K, GgmlType::Q3K, GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K];

fn all_types() -> impl Iterator<Item = GgmlType> {
    LEGACY.into_iter().chain(KQUANTS)
}

fn ggml_quantize(t: GgmlType, values: &[f32], row_len: usize, qw: Option<&[f32]>) -> Vec<u8> {
    let n_rows = values.len() / row_len;
    let mut out = vec![0u8; n_rows * t.row_bytes(row_len).unwrap()];
    let written = unsafe {
        sys::ggml_quantize_chunk(
            t.id() as sys::ggml_type,
            values.as_ptr(),
            out.as_mut_ptr() as *mut _,
            0,
            n_rows as i64,
            row_len as i64,
            qw.map_or(std::ptr::null(), |q| q.as_ptr()),
        )
    };
    assert_eq!(written, out.len(), "{t}: ggml wrote an unexpected size");
    out
}

fn ggml_dequantize(t: GgmlType, data: &[u8]) -> Vec<f32> {
    let to_float = unsafe { &*sys::ggml_get_type_traits(t.id() as sys::ggml_type) }.to_float.unwrap();
    let mut out = vec![0f32; data.len() / t.type_size() * t.block_size()];
    unsafe { to_float(data.as_ptr() as *const _, out.as_mut_ptr(), out.len() as i64) };
    out
}

/// The project's seeded generator with the few distributions the tests need.
struct Rng(XorShift64);

/// Uniform in (0, 1): the top 24 bits, centred in their interval (never 0, for `ln`).
fn open_unit(r: &mut XorShift64) -> f32 {
    ((r.next_u64() >> 40) as f32 + 0.5) / (1u64 << 24) as f32
}

impl Rng {
    fn uniform(&mut self) -> f32 {
        open_unit(&mut self.0)
    }

    fn gaussian(&mut self) -> f32 {
        let (u, v) = (self.uniform() as f64, self.uniform() as f64);
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }

    /// Student-t-like heavy tail: a gaussian over a small, variable denominator.
    fn heavy(&mut self) -> f32 {
        self.gaussian() / (self.uniform() + 0.02)
    }
}

/// One named row of `n` values.
type Row = (&'static str, Vec<f32>);

/// Rows from many distributions, including the degenerate ones where C semantics matter: zero
/// and constant blocks (zero scale), subnormal magnitudes (a scale whose reciprocal overflows),
/// magnitudes up to near `f32::MAX` (sums of squares overflow to inf, f16 scales to inf), exact
/// rounding ties, and single-signed rows (the min/offset formats).
fn synthetic_rows(n: usize, seed: u64) -> Vec<Row> {
    let mut r = Rng(XorShift64::new(seed));
    let gaussian: Vec<f32> = (0..n).map(|_| r.gaussian()).collect();
    let mut outlier = gaussian.clone();
    outlier[n / 3] = 250.0;
    let mut neg_outlier = gaussian.clone();
    neg_outlier[n - 5] = -80.0;
    let mut sparse = vec![0f32; n];
    for i in (0..n).step_by(37) {
        sparse[i] = r.gaussian();
    }
    let spiky: Vec<f32> = (0..n)
        .map(|_| match r.uniform() {
            u if u < 0.3 => 0.0,
            u if u < 0.4 => 50.0 * (r.uniform() - 0.3),
            _ => r.uniform() - 0.3,
        })
        .collect();
    vec![
        ("gaussian", gaussian),
        ("spiky", spiky),
        ("gaussian*0.02", (0..n).map(|_| 0.02 * r.gaussian()).collect()),
        ("heavy-tailed", (0..n).map(|_| r.heavy()).collect()),
        ("outlier", outlier),
        ("negative outlier", neg_outlier),
        ("sparse", sparse),
        ("all zero", vec![0.0; n]),
        ("negative zero", vec![-0.0; n]),
        ("constant", vec![0.75; n]),
        ("negative constant", vec![-3.0; n]),
        ("positive", (0..n).map(|_| r.uniform()).collect()),
        ("negative", (0..n).map(|_| -1.0 - r.uniform()).collect()),
        ("ties", (0..n).map(|i| ((i * 7 % 17) as f32 - 8.0) * 0.25).collect()),
        ("ramp", (0..n).map(|i| i as f32 - n as f32 / 2.0).collect()),
        ("tiny", (0..n).map(|_| r.gaussian() * 10f32.powf(-30.0 - 8.0 * r.uniform())).collect()),
        ("subnormal", (0..n).map(|_| r.gaussian() * 1e-40).collect()),
        ("mixed tiny", (0..n).map(|i| r.gaussian() * if i % 32 < 16 { 1e-39 } else { 1e-44 }).collect()),
        ("huge", (0..n).map(|_| r.gaussian() * 10f32.powf(4.0 + 26.0 * r.uniform())).collect()),
        // Finite, but squares and sums overflow to inf and the f16 scales round to inf.
        ("near max", (0..n).map(|_| r.gaussian() * 5e37).collect()),
    ]
}

/// Importance vectors: none, positive and varying over columns, with zeros (including one whole
/// block of zeros, which makes every weighted sum of that block zero), extreme magnitudes, and
/// half zeros with rare large spikes (with the "spiky" row, this drives the weighted fits of
/// `make_qkx3_quants` to negative scales, the path where `make_qp_quants` wraps a negative
/// quant into its `uint8_t` array).
fn importances(n: usize) -> Vec<(&'static str, Option<Vec<f32>>)> {
    let mut r = Rng(XorShift64::new(0x9E37_79B9_7F4A_7C15));
    let varying: Vec<f32> = (0..n).map(|_| (3.0 * r.gaussian()).exp()).collect();
    let sparse: Vec<f32> = (0..n)
        .map(|_| match r.uniform() {
            u if u < 0.5 => 0.0,
            u if u < 0.6 => 1e4 * r.uniform(),
            _ => r.uniform(),
        })
        .collect();
    let mut zeros = varying.clone();
    for (j, w) in zeros.iter_mut().enumerate() {
        if j % 5 == 0 || (32..64).contains(&j) {
            *w = 0.0;
        }
    }
    vec![
        ("none", None),
        ("varying", Some(varying)),
        ("with zeros", Some(zeros)),
        ("tiny and huge", Some((0..n).map(|j| if j % 2 == 0 { 1e-30 } else { 1e20 }).collect())),
        ("sparse spikes", Some(sparse)),
    ]
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Byte-compares ours with ggml's and, on a mismatch, names the first differing block.
fn assert_same_bytes(t: GgmlType, what: &str, ours: &[u8], theirs: &[u8], row_len: usize) {
    if ours == theirs {
        return;
    }
    let ts = t.type_size();
    let at = ours.iter().zip(theirs).position(|(a, b)| a != b).unwrap_or(ours.len().min(theirs.len()));
    let blk = at / ts;
    let per_row = row_len / t.block_size();
    panic!(
        "{t} {what}: bytes differ from ggml at byte {at} (row {}, block {})\n ours: {:?}\ntheirs: {:?}",
        blk / per_row,
        blk % per_row,
        &ours[blk * ts..(blk + 1) * ts],
        &theirs[blk * ts..(blk + 1) * ts]
    );
}

/// Quantizes the rows with us and with ggml, one call for all rows, for every importance vector;
/// bytes and dequantized values must match.
fn check_against_ggml(t: GgmlType, rows: &[Row], row_len: usize, label: &str) {
    let values: Vec<f32> = rows.iter().flat_map(|(_, r)| r.iter().copied()).collect();
    for (qw_name, qw) in importances(row_len) {
        let qw = qw.as_deref();
        let ours = quantize_weighted(t, &values, row_len, qw).unwrap();
        let theirs = ggml_quantize(t, &values, row_len, qw);
        let row_bytes = t.row_bytes(row_len).unwrap();
        for (i, (name, _)) in rows.iter().enumerate() {
            let r = i * row_bytes..(i + 1) * row_bytes;
            assert_same_bytes(
                t,
                &format!("{label}, {name} row, importance {qw_name}"),
                &ours[r.clone()],
                &theirs[r],
                row_len,
            );
        }
        let deq = dequantize(t, &ours).unwrap();
        assert!(
            same_bits(&deq, &ggml_dequantize(t, &ours)),
            "{t} {label}, importance {qw_name}: dequantization differs"
        );
    }
}

#[test]
fn legacy_formats_match_ggml_on_synthetic_rows() {
    for (i, row_len) in [32usize, 96, 576].into_iter().enumerate() {
        let rows = synthetic_rows(row_len, 0x2545_F491_4F6C_DD1D + i as u64);
        for t in LEGACY {
            check_against_ggml(t, &rows, row_len, &format!("rows of {row_len}"));
        }
    }
}

#[test]
fn k_quants_match_ggml_on_synthetic_rows() {
    for (i, row_len) in [256usize, 768].into_iter().enumerate() {
        let rows = synthetic_rows(row_len, 0x5DEE_CE66_D1CE_4E5B + i as u64);
        for t in KQUANTS {
            check_against_ggml(t, &rows, row_len, &format!("rows of {row_len}"));
        }
    }
}

/// Super-blocks where a weighted sub-block fit comes out with a negative scale larger than the
/// positive ones, so `make_qp_quants` stores negative quants into its `uint8_t` array (which
/// wraps) and Q5_K then clamps them to 63. A seeded search over sub-block 0 = sparse values with
/// outliers under sparse, spiky importance, sub-block 1 = small positive values, the rest zero,
/// found these iterations (a few in 10^4); the generator is replayed to rebuild them.
fn wrapped_scale_blocks() -> (Vec<f32>, Vec<f32>) {
    const HITS: [usize; 4] = [5786, 6068, 11440, 56921];
    let mut s = XorShift64::new(12345);
    let mut u = move || open_unit(&mut s);
    let (mut xs, mut qws) = (Vec::new(), Vec::new());
    for it in 0..=HITS[HITS.len() - 1] {
        let mut x = [0f32; 256];
        let mut qw = [0f32; 256];
        let scale1 = 10f32.powf(-3.0 * u());
        for i in 0..256 {
            x[i] = match i / 32 {
                0 if u() < 0.3 => 0.0,
                0 => (u() - 0.3) * if u() < 0.1 { 50.0 } else { 1.0 },
                1 => scale1 * u(),
                _ => 0.0,
            };
            qw[i] = match i / 32 {
                0 if u() < 0.5 => 0.0,
                0 => u() * if u() < 0.2 { 1e4 } else { 1.0 },
                _ => 1.0,
            };
        }
        if HITS.contains(&it) {
            xs.extend_from_slice(&x);
            qws.extend_from_slice(&qw);
        }
    }
    (xs, qws)
}

#[test]
fn negative_sub_block_scales_wrap_as_in_ggml() {
    let (x, qw) = wrapped_scale_blocks();
    for t in [GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q2K, GgmlType::Q3K] {
        let ours = quantize_weighted(t, &x, x.len(), Some(&qw)).unwrap();
        assert_same_bytes(t, "wrapped scales", &ours, &ggml_quantize(t, &x, x.len(), Some(&qw)), x.len());
    }
}

fn model_rows(name: &str, n_rows: usize) -> (Vec<Row>, usize) {
    let dir = common::default_model::hf_dir();
    let ckpt = HfCheckpoint::open(&dir).unwrap();
    let shape = ckpt.tensor(name).unwrap().shape.clone();
    let row_len = *shape.last().unwrap();
    let data = ckpt.read_f32(name).unwrap();
    // Rows spread over the tensor rather than the first few only.
    let stride = (data.len() / row_len / n_rows).max(1);
    let rows =
        (0..n_rows).map(|i| ("model", data[i * stride * row_len..(i * stride + 1) * row_len].to_vec())).collect();
    (rows, row_len)
}

#[test]
fn all_formats_match_ggml_on_model_rows() {
    // down_proj rows (1536) are whole super-blocks; q_proj rows (576) are not, so legacy only.
    let (rows, row_len) = model_rows("model.layers.0.mlp.down_proj.weight", 8);
    assert_eq!(row_len, 1536);
    for t in all_types() {
        check_against_ggml(t, &rows, row_len, "down_proj");
    }
    let (rows, row_len) = model_rows("model.layers.0.self_attn.q_proj.weight", 8);
    assert_eq!(row_len, 576);
    for t in LEGACY {
        check_against_ggml(t, &rows, row_len, "q_proj");
    }
}

/// Relative RMSE bound of each format on gaussian-like rows, `k * 2^-bits` with `bits` the bits
/// per quant. A uniform quantizer with step `s` has RMSE `s/sqrt(12)`; for the absmax formats
/// `s = 2*amax/2^bits` and the max of 32 gaussians is ~2.5 sigma, so `k ≈ 5/sqrt(12) ≈ 1.45`.
/// Min/offset and searched formats do better, and the 16-element K-quant groups have a smaller
/// max (~2.1 sigma), so `k = 1.6` leaves margin for the f16/6-bit scale rounding and for rows
/// whose blocks happen to hold an outlier, while still failing on a wrong bit width, a
/// mis-packed nibble or a lost scale (any of which costs a factor of 2 or more).
fn rmse_bound(t: GgmlType) -> f64 {
    let bits = match t {
        GgmlType::Q2K => 2,
        GgmlType::Q3K => 3,
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4K => 4,
        GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q5K => 5,
        GgmlType::Q6K => 6,
        GgmlType::Q8_0 => 8,
        _ => unreachable!(),
    };
    1.6 * 2f64.powi(-bits)
}

fn relative_rmse(x: &[f32], y: &[f32]) -> f64 {
    let err: f64 = x.iter().zip(y).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum();
    let sig: f64 = x.iter().map(|&a| (a as f64).powi(2)).sum();
    (err / sig).sqrt()
}

#[test]
fn round_trip_error_is_within_format_bounds() {
    let mut r = Rng(XorShift64::new(7));
    let gaussian: Vec<f32> = (0..1536 * 8).map(|_| r.gaussian()).collect();
    let (model, row_len) = model_rows("model.layers.0.mlp.down_proj.weight", 16);
    let model: Vec<f32> = model.into_iter().flat_map(|(_, r)| r).collect();
    let qw: Vec<f32> = (0..row_len).map(|_| (r.gaussian()).exp()).collect();
    for t in all_types() {
        for (name, values, n) in [("gaussian", &gaussian, 1536), ("model", &model, row_len)] {
            for weights in [None, Some(&qw[..n])] {
                let q = quantize_weighted(t, values, n, weights).unwrap();
                let e = relative_rmse(values, &dequantize(t, &q).unwrap());
                let bound = rmse_bound(t);
                assert!(e < bound, "{t} {name} (imatrix: {}): relative RMSE {e:.5} >= {bound:.5}", weights.is_some());
            }
        }
    }
}

#[test]
fn bad_shapes_are_errors() {
    let v = vec![0.5f32; 512];
    assert!(quantize(GgmlType::Q4K, &v, 128).is_err(), "row not a whole super-block");
    assert!(quantize(GgmlType::Q4_0, &v, 48).is_err(), "row not a whole block");
    assert!(quantize(GgmlType::Q4_0, &v[..500], 64).is_err(), "values not whole rows");
    assert!(quantize_weighted(GgmlType::Q4K, &v, 256, Some(&[1.0; 128])).is_err(), "importance of wrong length");
    assert_eq!(quantize(GgmlType::Q6K, &v, 256).unwrap().len(), 2 * 210);
}

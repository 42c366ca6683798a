//! Our quantizers against ggml's own (linked through llama-cpp-sys-2): for every block format we
//! write, the bytes must equal `ggml_quantize_chunk`'s, with and without importance weights, on
//! synthetic rows from many distributions (including degenerate ones) and on real model rows;
//! our dequantization must equal ggml's `to_float` bit for bit; and the round trip must stay
//! within a per-format error bound.

#[path = "it/common/mod.rs"]
mod common;

use llama_cpp_sys_2 as sys;
use microscale::quant::GgmlType;
use microscale::quant::{dequantize, quantize, quantize_weighted};
use microscale::source::{HfCheckpoint, TensorSource};
use microscale::util::rng::XorShift64;

const LEGACY: [GgmlType; 5] = [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0];
const KQUANTS: [GgmlType; 5] = [GgmlType::Q2K, GgmlType::Q3K, GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K];
/// The lattice (IQ) and ternary (TQ) formats.
const IQUANTS: [GgmlType; 11] = [
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

fn all_types() -> impl Iterator<Item = GgmlType> {
    LEGACY.into_iter().chain(KQUANTS).chain(IQUANTS)
}

// ggml is called one call at a time (`common::ggml::lock`): its quantizers share tables built on
// first use, and [`ggml_quantize_or_abort`] forks, which must not happen while another thread is
// inside ggml (its critical section would stay locked in the child).
use common::ggml::{dequantize as ggml_dequantize, lock as ggml_lock, quantize as ggml_quantize};

/// The exit status of a forked ggml that hit a `GGML_ASSERT`/`GGML_ABORT`.
const ABORTED: i32 = 86;

unsafe extern "C" fn exit_on_abort(_message: *const std::os::raw::c_char) {
    unsafe { libc::_exit(ABORTED) }
}

/// ggml's bytes, or `None` where ggml aborts: the IQ quantizers `GGML_ASSERT` on blocks whose
/// weighted distances are all infinite or NaN (squares of values near `f32::MAX` overflow), which
/// would take the test process down. ggml runs in a forked child (its abort callback exits the
/// child) and hands its bytes back through shared memory.
fn ggml_quantize_or_abort(t: GgmlType, values: &[f32], row_len: usize, qw: Option<&[f32]>) -> Option<Vec<u8>> {
    let _ggml = ggml_lock();
    // The one-time table building happens here in the parent, not in every child.
    unsafe { sys::ggml_quantize_init(t.id() as sys::ggml_type) };
    let n_rows = values.len() / row_len;
    let len = n_rows * t.row_bytes(row_len).unwrap();
    unsafe {
        let shared = libc::mmap(
            std::ptr::null_mut(),
            len.max(1),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(shared, libc::MAP_FAILED, "mmap");
        let pid = libc::fork();
        assert!(pid >= 0, "fork");
        if pid == 0 {
            sys::ggml_set_abort_callback(Some(exit_on_abort));
            let written = sys::ggml_quantize_chunk(
                t.id() as sys::ggml_type,
                values.as_ptr(),
                shared,
                0,
                n_rows as i64,
                row_len as i64,
                qw.map_or(std::ptr::null(), |q| q.as_ptr()),
            );
            libc::_exit(if written == len { 0 } else { 2 });
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid, "waitpid");
        let out = std::slice::from_raw_parts(shared as *const u8, len).to_vec();
        libc::munmap(shared, len.max(1));
        assert!(libc::WIFEXITED(status), "{t}: the ggml child died with status {status}");
        match libc::WEXITSTATUS(status) {
            0 => Some(out),
            ABORTED => None,
            code => panic!("{t}: the ggml child exited with {code}"),
        }
    }
}

/// Rows on which ggml may abort: their squares (and so the IQ weights) overflow to infinity.
const OVERFLOWING_ROWS: [&str; 2] = ["huge", "near max"];

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

/// ggml's bytes for each row (`None` where it aborts). The K-quants and legacy formats run in
/// process, one call for all rows; the IQ/TQ formats in a forked child, one call for all rows
/// and, if that aborts, one per row.
fn ggml_rows(t: GgmlType, values: &[f32], row_len: usize, qw: Option<&[f32]>) -> Vec<Option<Vec<u8>>> {
    let row_bytes = t.row_bytes(row_len).unwrap();
    let split = |all: Vec<u8>| all.chunks(row_bytes).map(|r| Some(r.to_vec())).collect();
    if !IQUANTS.contains(&t) {
        return split(ggml_quantize(t, values, row_len, qw));
    }
    match ggml_quantize_or_abort(t, values, row_len, qw) {
        Some(all) => split(all),
        None => values.chunks(row_len).map(|row| ggml_quantize_or_abort(t, row, row_len, qw)).collect(),
    }
}

/// What [`check_against_ggml`] compared: rows byte-compared with ggml's, rows skipped because
/// ggml aborts on them, weightings refused for want of an importance matrix.
#[derive(Default, Debug, Clone, Copy)]
struct Checked {
    rows: usize,
    ggml_aborted: usize,
    refused: usize,
}

impl std::ops::AddAssign for Checked {
    fn add_assign(&mut self, o: Checked) {
        self.rows += o.rows;
        self.ggml_aborted += o.ggml_aborted;
        self.refused += o.refused;
    }
}

/// Quantizes the rows with us and with ggml for every importance vector; bytes and dequantized
/// values must match. Without importance weights, the types ggml requires them for must be
/// refused with an error (ggml asserts). Rows ggml aborts on must be ones whose squares overflow
/// ([`OVERFLOWING_ROWS`]); ours must still quantize them (no panic) and decode as ggml decodes.
fn check_against_ggml(t: GgmlType, rows: &[Row], row_len: usize, label: &str) -> Checked {
    let values: Vec<f32> = rows.iter().flat_map(|(_, r)| r.iter().copied()).collect();
    let mut checked = Checked::default();
    for (qw_name, qw) in importances(row_len) {
        let qw = qw.as_deref();
        if qw.is_none() && t.requires_imatrix() {
            let err = quantize_weighted(t, &values, row_len, None).unwrap_err();
            assert!(err.to_string().contains("needs an importance matrix"), "{t}: {err}");
            assert!(unsafe { sys::ggml_quantize_requires_imatrix(t.id() as sys::ggml_type) });
            checked.refused += 1;
            continue;
        }
        let ours = quantize_weighted(t, &values, row_len, qw).unwrap();
        let theirs = ggml_rows(t, &values, row_len, qw);
        let row_bytes = t.row_bytes(row_len).unwrap();
        for (i, (name, _)) in rows.iter().enumerate() {
            let what = format!("{label}, {name} row, importance {qw_name}");
            let Some(theirs) = &theirs[i] else {
                assert!(OVERFLOWING_ROWS.contains(name), "{t} {what}: ggml aborts");
                checked.ggml_aborted += 1;
                continue;
            };
            let r = i * row_bytes..(i + 1) * row_bytes;
            assert_same_bytes(t, &what, &ours[r], theirs, row_len);
            checked.rows += 1;
        }
        let deq = dequantize(t, &ours).unwrap();
        assert!(
            same_bits(&deq, &ggml_dequantize(t, &ours)),
            "{t} {label}, importance {qw_name}: dequantization differs"
        );
    }
    checked
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

#[test]
fn i_quants_match_ggml_on_synthetic_rows() {
    let mut per_type = vec![Checked::default(); IQUANTS.len()];
    for (i, row_len) in [256usize, 768].into_iter().enumerate() {
        let rows = synthetic_rows(row_len, 0x9FB2_1C65_1E98_DF25 + i as u64);
        for (k, t) in IQUANTS.into_iter().enumerate() {
            per_type[k] += check_against_ggml(t, &rows, row_len, &format!("rows of {row_len}"));
        }
    }
    // IQ4_NL has blocks of 32: rows that are not whole super-blocks too.
    let rows = synthetic_rows(96, 0x2545_F491_4F6C_DD1D);
    per_type[0] += check_against_ggml(GgmlType::IQ4NL, &rows, 96, "rows of 96");
    for (t, c) in IQUANTS.iter().zip(&per_type) {
        eprintln!(
            "{t}: {} rows byte-identical, {} rows ggml aborts on, {} weightings refused without an imatrix",
            c.rows, c.ggml_aborted, c.refused
        );
        assert!(c.rows > 0);
    }
}

/// Seeded random rows of 256 from eight kinds of distribution (scales from 1e-6 to 1e4): ties
/// on a small set of values, signed zeros, ternary-like rows, sparse rows, outliers, halves of
/// different magnitude; every IQ/TQ type under every importance vector.
#[test]
fn i_quants_match_ggml_on_random_rows() {
    const KINDS: [&str; 8] =
        ["gaussian", "half zero", "ties", "heavy", "two scales", "positive", "ternary-like", "signed zeros"];
    let mut r = Rng(XorShift64::new(0x6A09_E667_F3BC_C908));
    let rows: Vec<Row> = (0..96)
        .map(|i| {
            let kind = i % KINDS.len();
            let scale = 10f32.powf(-6.0 + 10.0 * r.uniform());
            let row = (0..256)
                .map(|j| {
                    let g = r.gaussian();
                    scale
                        * match kind {
                            0 => g,
                            1 if r.uniform() < 0.5 => 0.0,
                            1 => g,
                            2 => ((r.uniform() * 7.0) as i32 - 3) as f32 * 0.5,
                            3 => r.heavy(),
                            4 if j % 64 < 32 => g * 1e-3,
                            4 => g,
                            5 => r.uniform(),
                            6 if r.uniform() < 0.9 => (r.uniform() * 3.0).floor() - 1.0,
                            6 => g,
                            _ if r.uniform() < 0.5 => -0.0,
                            _ => ((r.uniform() * 3.0) as i32 - 1) as f32,
                        }
                })
                .collect();
            (KINDS[kind], row)
        })
        .collect();
    for t in IQUANTS {
        let c = check_against_ggml(t, &rows, 256, "random rows");
        assert_eq!(c.ggml_aborted, 0, "{t}");
    }
}

#[test]
fn imatrix_requirement_matches_ggml() {
    for &t in GgmlType::ALL {
        let ggml = unsafe { sys::ggml_quantize_requires_imatrix(t.id() as sys::ggml_type) };
        assert_eq!(t.requires_imatrix(), ggml, "{t}");
    }
    let v = vec![0.5f32; 512];
    for t in [GgmlType::IQ2XXS, GgmlType::IQ2XS, GgmlType::IQ1S] {
        let err = quantize(t, &v, 256).unwrap_err().to_string();
        assert!(err.contains(t.name()) && err.contains("importance matrix"), "{t}: {err}");
        assert!(quantize_weighted(t, &v, 256, Some(&[1.0; 256])).is_ok());
    }
}

/// Random bytes as blocks (finite f16 scales), decoded by us and by ggml's `to_float`: every
/// index, sign and scale bit of every block format exercised, not only the ones our quantizers
/// happen to write.
#[test]
fn dequantization_of_arbitrary_blocks_matches_ggml() {
    let mut r = XorShift64::new(0xD1B5_4A32_D192_ED03);
    for t in all_types() {
        let n_blocks = 512;
        let mut data: Vec<u8> = (0..n_blocks * t.type_size()).map(|_| r.next_u64() as u8).collect();
        // Keep every 16-bit word's exponent below 31 (finite as an f16 scale) so that no NaN,
        // whose payload C and Rust need not agree on, enters the comparison.
        for w in data.chunks_exact_mut(2) {
            if w[1] & 0x7c == 0x7c {
                w[1] &= !0x40;
            }
        }
        let ours = dequantize(t, &data).unwrap();
        let theirs = ggml_dequantize(t, &data);
        let first = ours.iter().zip(&theirs).position(|(a, b)| a.to_bits() != b.to_bits());
        assert!(first.is_none(), "{t}: dequantization differs at value {}", first.unwrap());
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
        let c = check_against_ggml(t, &rows, row_len, "down_proj");
        assert_eq!(c.ggml_aborted, 0, "{t}");
    }
    let (rows, row_len) = model_rows("model.layers.0.self_attn.q_proj.weight", 8);
    assert_eq!(row_len, 576);
    for t in LEGACY.into_iter().chain([GgmlType::IQ4NL]) {
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
        _ => return iq_rmse_bound(t),
    };
    1.6 * 2f64.powi(-bits)
}

/// The lattice and ternary formats: the bound is about 1.2 times the error they reach here (the
/// lattices trade some of a uniform quantizer's accuracy for fewer bits, and a ternary code on
/// gaussian data keeps little more than the sign of the large values; see
/// [`ternary_formats_are_exact_on_ternary_rows`] for the data those are made for). A mis-packed
/// index, sign or scale costs far more than the margin.
fn iq_rmse_bound(t: GgmlType) -> f64 {
    match t {
        GgmlType::IQ4NL | GgmlType::IQ4XS => 1.6 * 2f64.powi(-4),
        GgmlType::IQ3S => 1.6 * 2f64.powi(-3),
        GgmlType::IQ3XXS => 0.27,
        GgmlType::IQ2S => 0.33,
        GgmlType::IQ2XS => 0.39,
        GgmlType::IQ2XXS => 0.45,
        GgmlType::IQ1S => 0.63,
        GgmlType::IQ1M => 0.71,
        GgmlType::TQ1_0 | GgmlType::TQ2_0 => 0.95,
        _ => unreachable!(),
    }
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
                if weights.is_none() && t.requires_imatrix() {
                    continue;
                }
                let q = quantize_weighted(t, values, n, weights).unwrap();
                let e = relative_rmse(values, &dequantize(t, &q).unwrap());
                let bound = rmse_bound(t);
                assert!(e < bound, "{t} {name} (imatrix: {}): relative RMSE {e:.5} >= {bound:.5}", weights.is_some());
            }
        }
    }
}

/// The ternary formats on what they are for, rows of `{-1, 0, 1}` times a scale per super-block:
/// the round trip is exact but for the f16 rounding of the scale.
#[test]
fn ternary_formats_are_exact_on_ternary_rows() {
    let mut r = Rng(XorShift64::new(11));
    let n = 256 * 12;
    let scales: Vec<f32> = (0..n / 256).map(|_| 0.01 + r.uniform()).collect();
    let values: Vec<f32> = (0..n).map(|i| scales[i / 256] * ((r.0.next_u64() % 3) as f32 - 1.0)).collect();
    for t in [GgmlType::TQ1_0, GgmlType::TQ2_0] {
        let q = quantize(t, &values, 1536).unwrap();
        let e = relative_rmse(&values, &dequantize(t, &q).unwrap());
        assert!(e < 1e-3, "{t}: relative RMSE {e} on ternary rows");
        assert_same_bytes(t, "ternary rows", &q, &ggml_quantize(t, &values, 1536, None), 1536);
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
    assert!(quantize(GgmlType::IQ4XS, &v, 128).is_err(), "row not a whole IQ4_XS super-block");
    assert_eq!(quantize(GgmlType::IQ4NL, &v, 64).unwrap().len(), 16 * 18);
    assert!(quantize_weighted(GgmlType::IQ2XXS, &v, 256, Some(&[1.0; 128])).is_err(), "importance of wrong length");
}

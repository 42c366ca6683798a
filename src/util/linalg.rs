//! Dense linear algebra in f64 for error compensation: matrix products (the `matrixmultiply`
//! crate's blocked kernels, in parallel over row blocks), a blocked Cholesky factorisation, the
//! inverse of a triangular factor, and the two solves GPTQ/SparseGPT and healing need (the upper
//! Cholesky factor of H⁻¹, and ridge least squares).
//!
//! Matrices are row-major `Vec<f64>` with their dimensions passed alongside, as ggml and BLAS do.

use anyhow::{bail, Result};
use rayon::prelude::*;

/// Rows of the output one parallel task multiplies.
const PAR_ROWS: usize = 64;
/// Panel width of the blocked factorisations.
const NB: usize = 64;

/// `c[m×n] += alpha · a[m×k] · b[k×n]`, every matrix row-major with its own row stride
/// (`lda`, `ldb`, `ldc`), in parallel over blocks of rows of `c`.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f64,
    a: &[f64],
    lda: usize,
    b: &[f64],
    ldb: usize,
    c: &mut [f64],
    ldc: usize,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    assert!(a.len() >= (m - 1) * lda + k && b.len() >= (k - 1) * ldb + n && c.len() >= (m - 1) * ldc + n);
    c.par_chunks_mut(PAR_ROWS * ldc).enumerate().for_each(|(blk, c)| {
        let r0 = blk * PAR_ROWS;
        if r0 >= m {
            return;
        }
        let rows = PAR_ROWS.min(m - r0);
        // SAFETY: the bounds were checked above for the whole product; this task's rows of `a`
        // and `c` are the r0.. rows, and `c`'s chunk is its own.
        unsafe {
            matrixmultiply::dgemm(
                rows,
                k,
                n,
                alpha,
                a.as_ptr().add(r0 * lda),
                lda as isize,
                1,
                b.as_ptr(),
                ldb as isize,
                1,
                1.0,
                c.as_mut_ptr(),
                ldc as isize,
                1,
            );
        }
    });
}

/// The lower triangle (diagonal included) of `c[n×n] += aᵀ·a` for `a` of `m` rows of `n` f32
/// values: the second moment of `m` samples, in f32 (a calibration chunk's activations), in
/// parallel over blocks of rows of `c`. The product is symmetric, so each block of rows stops at
/// the diagonal — half the work; [`mirror_lower`] fills the upper triangle once at the end.
pub fn add_gram_lower_f32(a: &[f32], m: usize, n: usize, c: &mut [f32]) {
    add_at_b_f32(a, n, a, n, m, c, |r0, rows| r0 + rows);
}

/// `c[p×q] += aᵀ·b` for `a` of `m` rows of `p` f32 values and `b` of `m` rows of `q`: the cross
/// moment of `m` paired samples, in f32, in parallel over blocks of rows of `c`.
pub fn add_cross_f32(a: &[f32], b: &[f32], m: usize, p: usize, q: usize, c: &mut [f32]) {
    add_at_b_f32(a, p, b, q, m, c, |_, _| q);
}

/// `c[p×q] += aᵀ·b` (a: m×p, b: m×q), each block of rows r0..r0+rows of `c` updated in its first
/// `cols(r0, rows)` columns only (at most q).
fn add_at_b_f32(
    a: &[f32],
    p: usize,
    b: &[f32],
    q: usize,
    m: usize,
    c: &mut [f32],
    cols: impl Fn(usize, usize) -> usize + Sync,
) {
    assert!(a.len() >= m * p && b.len() >= m * q && c.len() == p * q);
    if m == 0 || q == 0 {
        return;
    }
    c.par_chunks_mut(PAR_ROWS * q).enumerate().for_each(|(blk, c)| {
        let r0 = blk * PAR_ROWS;
        let rows = c.len() / q;
        let cols = cols(r0, rows).min(q);
        // SAFETY: rows r0..r0+rows of aᵀ are columns r0.. of `a` (stride p between samples), and
        // columns 0..cols of `b` are in bounds, as checked; `c`'s chunk is this task's own.
        unsafe {
            matrixmultiply::sgemm(
                rows,
                m,
                cols,
                1.0,
                a.as_ptr().add(r0),
                1,
                p as isize,
                b.as_ptr(),
                q as isize,
                1,
                1.0,
                c.as_mut_ptr(),
                q as isize,
                1,
            );
        }
    });
}

/// Copy the lower triangle of the symmetric `c[n×n]` onto its upper one.
pub fn mirror_lower(c: &mut [f32], n: usize) {
    for i in 0..n {
        for j in i + 1..n {
            c[i * n + j] = c[j * n + i];
        }
    }
}

/// In place, the lower Cholesky factor L of the symmetric positive definite `a` (n×n, only its
/// lower triangle read): a = L·Lᵀ; the strict upper triangle is zeroed. Blocked: panels of NB
/// columns are factored and the trailing matrix updated with one product per panel.
pub fn cholesky(a: &mut [f64], n: usize) -> Result<()> {
    assert_eq!(a.len(), n * n);
    for k0 in (0..n).step_by(NB) {
        let kb = NB.min(n - k0);
        // The diagonal block, unblocked.
        for j in k0..k0 + kb {
            let mut d = a[j * n + j];
            for p in k0..j {
                d -= a[j * n + p] * a[j * n + p];
            }
            if d <= 0.0 || !d.is_finite() {
                bail!("matrix is not positive definite (pivot {j} is {d:e})");
            }
            let d = d.sqrt();
            a[j * n + j] = d;
            for i in j + 1..k0 + kb {
                let mut s = a[i * n + j];
                for p in k0..j {
                    s -= a[i * n + p] * a[j * n + p];
                }
                a[i * n + j] = s / d;
            }
        }
        // The panel below it: rows i solve L_kk · x = a[i, k0..k0+kb] (forward substitution).
        let (top, below) = a.split_at_mut((k0 + kb) * n);
        below.par_chunks_mut(n).for_each(|row| {
            for j in k0..k0 + kb {
                let mut s = row[j];
                for p in k0..j {
                    s -= row[p] * top[j * n + p];
                }
                row[j] = s / top[j * n + j];
            }
        });
        // The trailing matrix: a[r, c] -= Σ_p L[r, p]·L[c, p] for r, c beyond the panel.
        let rest = n - k0 - kb;
        if rest > 0 {
            let panel: Vec<f64> = (k0 + kb..n).flat_map(|r| a[r * n + k0..r * n + k0 + kb].to_vec()).collect();
            let panel_t: Vec<f64> =
                (0..kb).flat_map(|p| (0..rest).map(move |r| (r, p))).map(|(r, p)| panel[r * kb + p]).collect();
            let off = (k0 + kb) * n + k0 + kb;
            gemm(rest, kb, rest, -1.0, &panel, kb, &panel_t, rest, &mut a[off..], n);
        }
    }
    for i in 0..n {
        a[i * n + i + 1..(i + 1) * n].fill(0.0);
    }
    Ok(())
}

/// The inverse of the lower triangular `l` (n×n), lower triangular, blocked:
/// X_ii = L_ii⁻¹ and X_ij = −X_ii · Σ_{j≤p<i} L_ip · X_pj.
pub fn lower_inverse(l: &[f64], n: usize) -> Vec<f64> {
    let mut x = vec![0.0; n * n];
    let blocks: Vec<usize> = (0..n).step_by(NB).collect();
    for &i0 in &blocks {
        let ib = NB.min(n - i0);
        // The diagonal block by forward substitution on the identity.
        for c in i0..i0 + ib {
            x[c * n + c] = 1.0 / l[c * n + c];
            for r in c + 1..i0 + ib {
                let mut s = 0.0;
                for p in c..r {
                    s += l[r * n + p] * x[p * n + c];
                }
                x[r * n + c] = -s / l[r * n + r];
            }
        }
        // Off-diagonal blocks of this block row: S = L[i, j0..i0] · X[j0..i0, j], then −X_ii·S.
        for &j0 in blocks.iter().take_while(|&&j| j < i0) {
            let jb = NB.min(n - j0);
            let inner = i0 - j0;
            let mut s = vec![0.0; ib * jb];
            gemm(ib, inner, jb, 1.0, &l[i0 * n + j0..], n, &x[j0 * n + j0..], n, &mut s, jb);
            let mut out = vec![0.0; ib * jb];
            let xii: Vec<f64> = (0..ib).flat_map(|r| x[(i0 + r) * n + i0..(i0 + r) * n + i0 + ib].to_vec()).collect();
            gemm(ib, ib, jb, -1.0, &xii, ib, &s, jb, &mut out, jb);
            for r in 0..ib {
                x[(i0 + r) * n + j0..(i0 + r) * n + j0 + jb].copy_from_slice(&out[r * jb..(r + 1) * jb]);
            }
        }
    }
    x
}

/// The upper triangular U with Uᵀ·U = h⁻¹ (what GPTQ and SparseGPT iterate over), for the
/// symmetric positive definite `h` (n×n).
///
/// With J the order reversal, J·h·J = L·Lᵀ gives h = R·Rᵀ for the upper triangular R = J·L·J, so
/// h⁻¹ = R⁻ᵀ·R⁻¹ and U = R⁻¹ = J·L⁻¹·J: one factorisation and one triangular inverse, where the
/// reference implementations factor, invert and factor again.
pub fn inverse_upper_cholesky(h: &[f64], n: usize) -> Result<Vec<f64>> {
    let rev = |i: usize| n - 1 - i;
    let mut a: Vec<f64> = (0..n * n).map(|k| h[rev(k / n) * n + rev(k % n)]).collect();
    cholesky(&mut a, n)?;
    let linv = lower_inverse(&a, n);
    Ok((0..n * n).map(|k| linv[rev(k / n) * n + rev(k % n)]).collect())
}

/// Solve x·a = b for x (`b` is m×n, `a` n×n symmetric positive definite): the normal equations
/// of least squares, x = b·a⁻¹, through a's Cholesky factor.
pub fn solve_spd_right(a: &[f64], n: usize, b: &[f64], m: usize) -> Result<Vec<f64>> {
    let mut l = a.to_vec();
    cholesky(&mut l, n)?;
    let linv = lower_inverse(&l, n);
    // a⁻¹ = L⁻ᵀ·L⁻¹, so x = (b·L⁻ᵀ)·L⁻¹.
    let linv_t: Vec<f64> = (0..n * n).map(|k| linv[(k % n) * n + k / n]).collect();
    let mut t = vec![0.0; m * n];
    gemm(m, n, n, 1.0, b, n, &linv_t, n, &mut t, n);
    let mut x = vec![0.0; m * n];
    gemm(m, n, n, 1.0, &t, n, &linv, n, &mut x, n);
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::XorShift64 as Rng;

    /// A random symmetric positive definite matrix: Gᵀ·G + n·I.
    fn spd(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = Rng::new(seed);
        let g: Vec<f64> = (0..n * n).map(|_| rng.normal()).collect();
        let mut h = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                h[i * n + j] =
                    (0..n).map(|p| g[p * n + i] * g[p * n + j]).sum::<f64>() + if i == j { n as f64 } else { 0.0 };
            }
        }
        h
    }

    fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
        (0..n * n).map(|k| (0..n).map(|p| a[(k / n) * n + p] * b[p * n + k % n]).sum()).collect()
    }

    fn transpose(a: &[f64], n: usize) -> Vec<f64> {
        (0..n * n).map(|k| a[(k % n) * n + k / n]).collect()
    }

    fn assert_close(a: &[f64], b: &[f64], tol: f64) {
        let scale = b.iter().fold(0f64, |m, x| m.max(x.abs()));
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * scale, "element {i}: {x} vs {y}");
        }
    }

    #[test]
    fn cholesky_reconstructs_across_panels() {
        // 150 spans three panels of 64, so the blocked updates are exercised.
        let n = 150;
        let h = spd(n, 1);
        let mut l = h.clone();
        cholesky(&mut l, n).unwrap();
        assert_close(&matmul(&l, &transpose(&l, n), n), &h, 1e-12);
        let eye: Vec<f64> = (0..n * n).map(|k| if k / n == k % n { 1.0 } else { 0.0 }).collect();
        assert_close(&matmul(&l, &lower_inverse(&l, n), n), &eye, 1e-12);
    }

    #[test]
    fn upper_factor_of_the_inverse() {
        let n = 130;
        let h = spd(n, 2);
        let u = inverse_upper_cholesky(&h, n).unwrap();
        for i in 0..n {
            for j in 0..i {
                assert_eq!(u[i * n + j], 0.0, "U is upper triangular");
            }
        }
        // Uᵀ·U·h = I.
        let eye: Vec<f64> = (0..n * n).map(|k| if k / n == k % n { 1.0 } else { 0.0 }).collect();
        assert_close(&matmul(&matmul(&transpose(&u, n), &u, n), &h, n), &eye, 1e-10);
        assert!(cholesky(&mut [1.0, 2.0, 2.0, 1.0], 2).is_err(), "indefinite");
    }

    #[test]
    fn cross_moment_in_f32() {
        // Three row blocks of the result (the last one partial).
        let (m, p, q) = (29, 150, 17);
        let mut rng = Rng::new(6);
        let a: Vec<f32> = (0..m * p).map(|_| rng.normal() as f32).collect();
        let b: Vec<f32> = (0..m * q).map(|_| rng.normal() as f32).collect();
        let mut c = vec![1f32; p * q];
        add_cross_f32(&a, &b, m, p, q, &mut c);
        for i in 0..p {
            for j in 0..q {
                let want = 1.0 + (0..m).map(|t| a[t * p + i] as f64 * b[t * q + j] as f64).sum::<f64>();
                assert!((c[i * q + j] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()));
            }
        }
    }

    #[test]
    fn least_squares_on_the_right() {
        let n = 70;
        let a = spd(n, 3);
        let mut rng = Rng::new(4);
        let x0: Vec<f64> = (0..5 * n).map(|_| rng.normal()).collect();
        let mut b = vec![0.0; 5 * n];
        gemm(5, n, n, 1.0, &x0, n, &a, n, &mut b, n);
        assert_close(&solve_spd_right(&a, n, &b, 5).unwrap(), &x0, 1e-10);
    }

    #[test]
    fn gram_in_f32_accumulates_and_mirrors() {
        // Three row blocks (the last one partial), two accumulated batches.
        let (m, n) = (37, 150);
        let mut rng = Rng::new(5);
        let a: Vec<f32> = (0..2 * m * n).map(|_| rng.normal() as f32).collect();
        let mut c = vec![0f32; n * n];
        add_gram_lower_f32(&a[..m * n], m, n, &mut c);
        add_gram_lower_f32(&a[m * n..], m, n, &mut c);
        mirror_lower(&mut c, n);
        for i in 0..n {
            for j in 0..n {
                let want: f64 = (0..2 * m).map(|p| a[p * n + i] as f64 * a[p * n + j] as f64).sum();
                assert!((c[i * n + j] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()));
            }
        }
    }
}

//! Error compensation for one linear layer: the Optimal Brain Surgeon column sweep in the
//! lazy-batch form of GPTQ (Frantar et al. 2022) and SparseGPT (Frantar & Alistarh 2023), with
//! rounding onto ggml's own block grids.
//!
//! The objective, for a weight matrix W (rows = outputs, columns = inputs) and its inputs X over
//! the calibration tokens: choose Ŵ (on the format's grid, and/or with the mask's zeros) that
//! minimises ‖W·X − Ŵ·X‖² = tr(ΔW·H·ΔWᵀ) with H = X·Xᵀ. Columns are fixed left to right; the error
//! each fixed column leaves is spread over the columns not yet fixed through H⁻¹ (its upper
//! Cholesky factor U: column i's error `(w_i − q_i)/U_ii` times row i of U), so the later columns
//! absorb what the earlier ones lost. H is dampened by a fraction of its mean diagonal, as in the
//! papers (1%).
//!
//! Rounding onto ggml's formats ([`Grid`]): when a column starts a ggml block (a super-block for
//! the K-quants), the block's scales and mins are chosen by ggml's own algorithm (with the
//! importance weights) on the row's error-updated weights; each column of the block is then
//! rounded to the nearest level of that block's grid, and its error propagated. The bytes are a
//! standard block of the format: only the chosen integers differ from plain quantization.
//!
//! Pruning ([`MaskRule`], SparseGPT's in `prune::sparsegpt`) chooses which weights become zero,
//! from the OBS saliency w²/U_ii² of the current weights, and the same sweep compensates; with a
//! grid too, pruning and quantization happen in one pass (the pruned weights are rounded from 0).

use super::levels::{affine_grid, level_range, set_level};
use super::GgmlType;
use crate::util::linalg::{gemm, inverse_upper_cholesky};
use anyhow::{bail, Result};
use rayon::prelude::*;

/// The fraction of H's mean diagonal added to its diagonal (the papers' `percdamp`).
pub const DAMPING: f64 = 0.01;

/// Columns per lazy batch (the papers' B = 128); 256 when the grid's blocks are super-blocks, so
/// every ggml block lies inside one batch and is chosen from fully updated weights.
const LAZY_BATCH: usize = 128;

/// What the sweep iterates over: U with Uᵀ·U = (H + λI)⁻¹, for H of `n` inputs.
pub struct InverseHessian {
    pub n: usize,
    pub u: Vec<f64>,
    /// The order the columns are swept in, when not left to right (`u` is then that of the
    /// permuted H): GPTQ's "act order", largest diagonal first.
    pub order: Option<Vec<usize>>,
}

impl InverseHessian {
    /// From H = X·Xᵀ (n×n, any float layout convertible to f64). Inputs never active (a zero
    /// diagonal) get a unit diagonal: their columns are rounded alone and pass no error on.
    /// With `act_order`, the columns are swept by decreasing H diagonal, so the
    /// inputs that matter most are fixed first and the many others absorb their errors.
    pub fn with_order(h: &[f64], n: usize, damping: f64, act_order: bool) -> Result<InverseHessian> {
        if h.len() != n * n {
            bail!("second moment of {} values is not {n}×{n}", h.len());
        }
        let mut h = h.to_vec();
        for i in 0..n {
            if h[i * n + i] == 0.0 {
                h[i * n + i] = 1.0;
            }
        }
        let mean_diag = (0..n).map(|i| h[i * n + i]).sum::<f64>() / n as f64;
        for i in 0..n {
            h[i * n + i] += damping * mean_diag;
        }
        if !act_order {
            return Ok(InverseHessian { n, u: inverse_upper_cholesky(&h, n)?, order: None });
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| h[b * n + b].total_cmp(&h[a * n + a]).then(a.cmp(&b)));
        let hp: Vec<f64> = (0..n * n).map(|k| h[order[k / n] * n + order[k % n]]).collect();
        Ok(InverseHessian { n, u: inverse_upper_cholesky(&hp, n)?, order: Some(order) })
    }

    fn diag(&self) -> Vec<f64> {
        (0..self.n).map(|i| self.u[i * self.n + i]).collect()
    }
}

/// Which weights become zero. Either all columns of a lazy batch are decided together before it
/// (`batch_mask`: SparseGPT's unstructured selection), or row by row in groups as the sweep
/// reaches them (`group`/`group_mask`: N:M), from the weights as updated so far.
pub trait MaskRule: Sync {
    /// For the batch of columns `i1..i2` of `w` (`rows`×`cols`, row-major): `true` where a weight
    /// is pruned, `rows`×(i2−i1); `None` if this rule decides per group.
    fn batch_mask(
        &self,
        w: &[f64],
        rows: usize,
        cols: usize,
        i1: usize,
        i2: usize,
        u_diag: &[f64],
    ) -> Option<Vec<bool>>;
    /// Columns per group decided in the sweep (0: none).
    fn group(&self) -> usize;
    /// Decide one group: `w` and `u_diag` are its columns; set `pruned`.
    fn group_mask(&self, w: &[f64], u_diag: &[f64], pruned: &mut [bool]);
}

/// Rounding onto a ggml format's block grid, choosing each block's scales with ggml's algorithm.
#[derive(Clone, Copy)]
pub struct Grid<'a> {
    pub ty: GgmlType,
    /// Importance weights for the row's columns (the imatrix), as ggml's quantizers take them.
    pub weights: Option<&'a [f32]>,
}

impl Grid<'_> {
    /// ggml's choice of block `b` of `row` (the row's current values).
    fn choose_block(&self, row: &[f32], b: usize, out: &mut [u8]) {
        let bs = self.ty.block_size();
        let x = &row[b * bs..(b + 1) * bs];
        let qw = self.weights.map(|w| &w[b * bs..(b + 1) * bs]);
        // The 32-element formats weigh by the whole row's mean square: that of the row as it is now.
        use super::legacy::*;
        match (self.ty, qw) {
            (GgmlType::Q4_0, Some(qw)) => quantize_blocks_q4_0_impl(x, out, qw, row_sigma2(row)),
            (GgmlType::Q4_1, Some(qw)) => quantize_blocks_q4_1_impl(x, out, qw, row_sigma2(row)),
            (GgmlType::Q5_0, Some(qw)) => quantize_blocks_q5_0_impl(x, out, qw, row_sigma2(row)),
            (GgmlType::Q5_1, Some(qw)) => quantize_blocks_q5_1_impl(x, out, qw, row_sigma2(row)),
            _ => (self.ty.info().quantize_row.expect("affine formats quantize"))(x, out, qw),
        }
    }
}

/// The result of compensating one matrix.
pub struct Compensated {
    /// Ŵ in f32, row-major (on the grid when there was one: exactly what the bytes decode to).
    pub values: Vec<f32>,
    /// The encoded rows, when rounding onto a grid.
    pub bytes: Option<Vec<u8>>,
    /// Weights the mask set to zero.
    pub pruned: usize,
}

/// Run the sweep over `w` (`rows`×`cols`, row-major) with the inverse Hessian of its inputs.
pub fn compensate(
    w: &[f32],
    rows: usize,
    cols: usize,
    hinv: &InverseHessian,
    grid: Option<Grid>,
    mask: Option<&dyn MaskRule>,
) -> Result<Compensated> {
    if hinv.n != cols || w.len() != rows * cols {
        bail!("a {rows}×{cols} matrix with the second moment of {} inputs", hinv.n);
    }
    let gbs = grid.map_or(1, |g| g.ty.block_size());
    if let Some(g) = grid {
        if level_range(g.ty).is_none() {
            bail!("error-compensated rounding onto {} is not supported (affine block formats only)", g.ty);
        }
        if !cols.is_multiple_of(gbs) {
            bail!("rows of {cols} are not whole {} blocks", g.ty);
        }
        if g.weights.is_some_and(|qw| qw.len() != cols) {
            bail!("importance weights for rows of {cols} do not match");
        }
    }
    if let Some(order) = &hinv.order {
        let Some(g) = grid.filter(|_| mask.is_none()) else {
            bail!("act order sweeps columns out of place: only for GPTQ rounding without pruning");
        };
        return compensate_in_order(w, rows, cols, hinv, order, g);
    }
    let batch = LAZY_BATCH.max(gbs);
    let row_bytes = grid.map_or(Ok(0), |g| g.ty.row_bytes(cols))?;
    let mut w64: Vec<f64> = w.iter().map(|&x| x as f64).collect();
    let mut bytes = vec![0u8; rows * row_bytes];
    let diag = hinv.diag();
    let n = hinv.n;
    let mut pruned = 0usize;
    for i1 in (0..cols).step_by(batch) {
        let i2 = (i1 + batch).min(cols);
        let count = i2 - i1;
        let batch_mask = mask.and_then(|m| m.batch_mask(&w64, rows, cols, i1, i2, &diag));
        let mut err = vec![0f64; rows * count];
        let row_bytes_chunks: Vec<&mut [u8]> = if row_bytes > 0 {
            bytes.chunks_mut(row_bytes).collect()
        } else {
            (0..rows).map(|_| &mut [][..]).collect()
        };
        pruned += w64
            .par_chunks_mut(cols)
            .zip(err.par_chunks_mut(count))
            .zip(row_bytes_chunks.into_par_iter())
            .enumerate()
            .map(|(r, ((wr, er), br))| {
                let row_mask = batch_mask.as_ref().map(|m| &m[r * count..(r + 1) * count]);
                sweep_row(wr, er, br, i1, i2, hinv, &diag, grid, mask, row_mask)
            })
            .sum::<usize>();
        // The lazy update: the batch's errors reach the columns after it in one product.
        if i2 < cols {
            gemm(rows, count, cols - i2, -1.0, &err, count, &hinv.u[i1 * n + i2..], n, &mut w64[i2..], cols);
        }
    }
    let values = match grid {
        Some(g) => crate::quant::dequantize(g.ty, &bytes)?,
        None => w64.iter().map(|&x| x as f32).collect(),
    };
    Ok(Compensated { values, bytes: grid.map(|_| bytes), pruned })
}

/// GPTQ in act order: every block's grid is fixed before the sweep — ggml's own choice on the
/// row, GPTQ's "static groups" — so columns can be rounded in any order; each is rounded onto
/// its own block's grid. (Choosing the grids again from the values the sweep rounded, and
/// sweeping again, measured no better on the default model.)
fn compensate_in_order(
    w: &[f32],
    rows: usize,
    cols: usize,
    hinv: &InverseHessian,
    order: &[usize],
    g: Grid,
) -> Result<Compensated> {
    let n = hinv.n;
    let diag = hinv.diag();
    let row_bytes = g.ty.row_bytes(cols)?;
    let mut bytes = crate::quant::quantize_weighted(g.ty, w, cols, g.weights)?;
    // Every row's grid, once.
    let mut grids: Vec<BlockGrid> = bytes.chunks_mut(row_bytes).map(|br| BlockGrid::new(g.ty, br)).collect();
    // The weights in sweep order.
    let mut wp: Vec<f64> = (0..rows * cols).map(|k| w[(k / cols) * cols + order[k % cols]] as f64).collect();
    for i1 in (0..cols).step_by(LAZY_BATCH) {
        let i2 = (i1 + LAZY_BATCH).min(cols);
        let count = i2 - i1;
        let mut err = vec![0f64; rows * count];
        wp.par_chunks_mut(cols).zip(err.par_chunks_mut(count)).zip(grids.par_iter_mut()).for_each(
            |((wr, er), grid)| {
                let mut sweep = RowSweep {
                    hinv,
                    diag: &diag,
                    mask: None,
                    batch_mask: None,
                    i1,
                    i2,
                    group_pruned: vec![],
                    pruned: 0,
                };
                for col in i1..i2 {
                    er[col - i1] = sweep.fix(wr, col, Some((grid, order[col])));
                }
            },
        );
        if i2 < cols {
            gemm(rows, count, cols - i2, -1.0, &err, count, &hinv.u[i1 * n + i2..], n, &mut wp[i2..], cols);
        }
    }
    drop(grids);
    let values = crate::quant::dequantize(g.ty, &bytes)?;
    Ok(Compensated { values, bytes: Some(bytes), pruned: 0 })
}

/// One row through one lazy batch: fix columns i1..i2 in order, updating the rest of the batch.
/// With a grid, each block's scales are ggml's choice on the row as it stands when the sweep
/// reaches the block.
#[allow(clippy::too_many_arguments)]
fn sweep_row(
    wr: &mut [f64],
    er: &mut [f64],
    br: &mut [u8],
    i1: usize,
    i2: usize,
    hinv: &InverseHessian,
    diag: &[f64],
    grid: Option<Grid>,
    mask: Option<&dyn MaskRule>,
    batch_mask: Option<&[bool]>,
) -> usize {
    let group = mask.map_or(0, |m| m.group());
    let mut sweep = RowSweep { hinv, diag, mask, batch_mask, i1, i2, group_pruned: vec![false; group], pruned: 0 };
    let Some(g) = grid else {
        for col in i1..i2 {
            er[col - i1] = sweep.fix(wr, col, None);
        }
        return sweep.pruned;
    };
    let (bs, ts) = (g.ty.block_size(), g.ty.type_size());
    for b0 in (i1..i2).step_by(bs) {
        let b = b0 / bs;
        let block = &mut br[b * ts..(b + 1) * ts];
        g.choose_block(&sweep.row_for_scales(wr), b, block);
        let mut on_grid = BlockGrid::new(g.ty, block);
        for col in b0..b0 + bs {
            er[col - i1] = sweep.fix(wr, col, Some((&mut on_grid, col - b0)));
        }
    }
    sweep.pruned
}

/// Consecutive blocks' grids while their levels are chosen: the bytes, and each element's
/// `x = a·L + c`.
struct BlockGrid<'b> {
    ty: GgmlType,
    bytes: &'b mut [u8],
    a: Vec<f32>,
    c: Vec<f32>,
}

impl<'b> BlockGrid<'b> {
    fn new(ty: GgmlType, bytes: &'b mut [u8]) -> BlockGrid<'b> {
        let (mut a, mut c) = (Vec::new(), Vec::new());
        for block in bytes.chunks(ty.type_size()) {
            let (ab, cb) = affine_grid(ty, block);
            a.extend(ab);
            c.extend(cb);
        }
        BlockGrid { ty, bytes, a, c }
    }

    /// Round `x` for element `j` to its nearest level, record it, and return the level's value.
    fn round(&mut self, j: usize, x: f64) -> f64 {
        let (a, c) = (self.a[j] as f64, self.c[j] as f64);
        if a == 0.0 {
            return c; // a degenerate block: every level decodes to c, ggml's choice stays
        }
        let (lo, hi) = level_range(self.ty).unwrap();
        let l = ((x - c) / a).round().clamp(lo as f64, hi as f64) as i32;
        let (bs, ts) = (self.ty.block_size(), self.ty.type_size());
        set_level(self.ty, &mut self.bytes[j / bs * ts..(j / bs + 1) * ts], j % bs, l);
        a * l as f64 + c
    }
}

/// The state of one row's sweep through a lazy batch.
struct RowSweep<'a> {
    hinv: &'a InverseHessian,
    diag: &'a [f64],
    mask: Option<&'a dyn MaskRule>,
    batch_mask: Option<&'a [bool]>,
    i1: usize,
    i2: usize,
    /// The current N:M group's choice.
    group_pruned: Vec<bool>,
    pruned: usize,
}

impl RowSweep<'_> {
    /// The row in f32 for choosing scales, with the weights already known to be pruned at 0.
    fn row_for_scales(&self, wr: &[f64]) -> Vec<f32> {
        let mut row: Vec<f32> = wr.iter().map(|&x| x as f32).collect();
        if let Some(m) = self.batch_mask {
            for (k, &p) in m.iter().enumerate() {
                if p {
                    row[self.i1 + k] = 0.0;
                }
            }
        }
        row
    }

    /// Fix column `col`: prune and/or round it, spread its error over the rest of the batch,
    /// and return the scaled error the lazy update passes on.
    fn fix(&mut self, wr: &mut [f64], col: usize, grid: Option<(&mut BlockGrid, usize)>) -> f64 {
        let group = self.group_pruned.len();
        if group > 0 && col.is_multiple_of(group) {
            let end = (col + group).min(self.i2);
            self.mask.unwrap().group_mask(&wr[col..end], &self.diag[col..end], &mut self.group_pruned[..end - col]);
        }
        let is_pruned =
            self.batch_mask.is_some_and(|m| m[col - self.i1]) || (group > 0 && self.group_pruned[col % group]);
        self.pruned += is_pruned as usize;
        let w = wr[col];
        let target = if is_pruned { 0.0 } else { w };
        let q = match grid {
            Some((g, j)) => g.round(j, target),
            None => target,
        };
        let e = (w - q) / self.diag[col];
        let n = self.hinv.n;
        let urow = &self.hinv.u[col * n..col * n + n];
        for k in col + 1..self.i2 {
            wr[k] -= e * urow[k];
        }
        wr[col] = q;
        e
    }
}

/// The output error ‖ΔW·X‖² = Σ_rows Δ_r·H·Δ_rᵀ of replacing `w` by `w_hat`, relative to
/// ‖W·X‖² (H = X·Xᵀ, undamped): what compensation minimises, for reporting.
pub fn relative_output_error(w: &[f32], w_hat: &[f32], rows: usize, cols: usize, h: &[f64]) -> f64 {
    let quad = |v: &[f64]| -> f64 {
        let mut hv = vec![0f64; rows * cols];
        gemm(rows, cols, cols, 1.0, v, cols, h, cols, &mut hv, cols);
        hv.iter().zip(v).map(|(a, b)| a * b).sum()
    };
    let delta: Vec<f64> = w.iter().zip(w_hat).map(|(&a, &b)| a as f64 - b as f64).collect();
    let base: Vec<f64> = w.iter().map(|&a| a as f64).collect();
    let denom = quad(&base);
    if denom > 0.0 {
        quad(&delta) / denom
    } else {
        0.0
    }
}

/// `--quant-method`: how the levels of a quantized weight are chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub enum QuantMethod {
    #[default]
    Rtn,
    Gptq,
}
crate::impl_choice!(QuantMethod {
    Rtn => "rtn": "Round to nearest on ggml's grid (ggml's own quantizers; llama-quantize's result)",
    Gptq => "gptq": "GPTQ: the same grids, levels chosen column by column with the error compensated through the \
        inverse Hessian of the layer's inputs (needs calibration)",
});

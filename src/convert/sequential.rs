//! Sequential calibration (`--sequential K`): each block's importance matrix and second moments
//! measured on the inputs the already-compressed blocks before it produce — the order in which
//! SparseGPT and GPTQ calibrate (Frantar & Alistarh 2023; Frantar et al. 2022: block by block,
//! each block's inputs taken from the compressed blocks before it) — instead of on the
//! uncompressed model's (one-shot). Later blocks then compensate for what earlier ones lost.
//!
//! The blocks are split into K consecutive groups. Stage 0 is the one-shot calibration (every
//! block on the unpruned model; `--calib FILE` keeps and reuses it). At stage s the model is
//! written to a scratch GGUF with the groups before s compressed by the calibration merged so
//! far, and the blocks from group s on left as they are (F32, as the reference implementations
//! leave the blocks they have not reached); llama.cpp runs it over the same calibration chunks,
//! and group s's imatrix entries and moments replace the one-shot ones. The conversion then uses
//! the last merged calibration. Within a group (and within a block, as without the papers'
//! `--true-sequential`) the inputs stay those of the uncompressed group.
//!
//! Cost: K − 1 more conversions (of the compressed groups so far) and calibration passes, each
//! collecting only its group's moments; K = the number of blocks is the papers' order.

use super::{pruning, ConvertOptions};
use crate::calib::{calibrate, moments::layer_of, CalibModel, Calibration};
use crate::prune::structured::Dims;
use crate::util::atomic::TempDir;
use anyhow::{bail, Result};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// `n_layer` blocks in `stages` consecutive groups of (nearly) equal size, earlier groups larger.
pub fn groups(n_layer: usize, stages: usize) -> Vec<Range<usize>> {
    let stages = stages.clamp(1, n_layer.max(1));
    let (size, extra) = (n_layer / stages, n_layer % stages);
    let mut start = 0;
    (0..stages)
        .map(|s| {
            let end = start + size + usize::from(s < extra);
            let g = start..end;
            start = end;
            g
        })
        .collect()
}

/// Check a `--sequential` request against the model: a calibrated unstructured method or GPTQ,
/// no structured pruning, no more stages than blocks.
pub fn check(opts: &ConvertOptions, dims: &Dims) -> Result<()> {
    let spec = &opts.prune;
    let k = spec.sequential;
    if spec.wants_structured() || spec.heal {
        bail!("--sequential {k} applies to unstructured pruning and GPTQ, not to removing blocks, channels or heads");
    }
    if !pruning::needs_moments(opts) && !spec.needs_calibration() {
        bail!(
            "--sequential {k} re-calibrates for a calibrated method: give --sparsity-method wanda or sparsegpt, or --quant-method gptq"
        );
    }
    if k > dims.n_layer {
        bail!("--sequential {k}: the model has only {} blocks (at most one stage per block)", dims.n_layer);
    }
    Ok(())
}

/// The sequential calibration for converting `input` to `output` with `opts` (whose
/// `prune.sequential` gives the stages). Scratch files go beside `output` and are removed.
pub fn calibration(input: &Path, output: &Path, opts: &ConvertOptions) -> Result<Calibration> {
    let (mut merged, dims, planned) = super::one_shot(input, opts, |dims| check(opts, dims))?;
    if !pruning::needs_moments(opts) {
        merged.moments = None; // Wanda reads the imatrix only: the stages need not collect moments
    }
    let groups = groups(dims.n_layer, opts.prune.sequential);
    let scratch = TempDir::create(&scratch_path(output))?;
    for (s, layers) in groups.iter().enumerate().skip(1) {
        if !opts.quiet {
            eprintln!(
                "sequential calibration, stage {s} of {}: blocks {}–{} on the model compressed up to block {}",
                groups.len() - 1,
                layers.start,
                layers.end - 1,
                layers.start - 1
            );
        }
        let model = scratch.path().join(format!("stage-{s}.gguf"));
        let stage_opts = ConvertOptions { calibration: Some(merged.clone()), quiet: true, ..opts.clone() };
        super::write(input, &model, &stage_opts, Some(layers.start))?;
        let mut copts = pruning::calib_options(opts, &dims)?;
        pruning::same_chunks(&mut copts, &merged);
        if merged.moments.is_some() {
            let path = scratch.path().join(format!("stage-{s}.calib.gguf"));
            let mut request = pruning::moments_request(Some(&path), &planned, dims.n_layer);
            request.layers = layers.clone();
            copts.moments = Some(request);
        }
        let update = calibrate(CalibModel::File(&model), &merged.fingerprint, dims.n_layer, &copts, opts.quiet)?;
        let in_group = |name: &str| layer_of(name).is_some_and(|l| layers.contains(&l));
        merged = merged.replaced(&update, in_group, &scratch.path().join(format!("merged-{s}.gguf")))?;
        // Only the newest merged file is read from now on (each holds every moment): the scratch
        // directory stays at one stage's files, not K of them.
        for done in [
            model,
            scratch.path().join(format!("stage-{s}.calib.gguf")),
            scratch.path().join(format!("merged-{}.gguf", s - 1)),
        ] {
            let _ = std::fs::remove_file(done);
        }
    }
    // The statistics are no longer those of the file --calib names (nor of any file kept).
    merged.imatrix.path = None;
    Ok(merged)
}

/// The scratch directory beside the output (hidden: [`TempDir`] gives it a dot and a suffix).
fn scratch_path(output: &Path) -> PathBuf {
    let name = output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    output.with_file_name(format!("{name}.sequential"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_cover_every_block_once_in_order() {
        assert_eq!(groups(30, 4), vec![0..8, 8..16, 16..23, 23..30]);
        assert_eq!(groups(3, 3), vec![0..1, 1..2, 2..3]);
        assert_eq!(groups(5, 1), vec![0..5]);
    }
}

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
//!
//! With `--heal` the stages serve healing instead ([`healing`]): each stage's healed blocks are
//! refit on the student's own inputs, and the stage's first block against the teacher's residual
//! stream (`calib::paired`), so that it takes the error the pruned blocks before it left.

use super::request::{check_sequential, needs_moments};
use super::{pruning, ConvertOptions, StageState};
use crate::calib::gaps::{Gap, GapMoments};
use crate::calib::paired::PairTarget;
use crate::calib::{calibrate, measure_gaps, measure_paired, CalibModel, CalibOptions, Calibration};
use crate::util::atomic::TempDir;
use crate::util::tensor_name::{block_of as layer_of, renumbered};
use anyhow::Result;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// The sequential calibration for converting `input` to `output` with `opts` (whose
/// `prune.sequential` gives the stages). Scratch files go beside `output` and are removed.
pub fn calibration(input: &Path, output: &Path, opts: &ConvertOptions) -> Result<Calibration> {
    let (mut merged, dims, planned) = super::one_shot(input, opts, |dims| check_sequential(opts, dims))?;
    if !needs_moments(opts) {
        merged.moments = None; // Wanda reads the imatrix only: the stages need not collect moments
    }
    let groups = groups(dims.n_layer, opts.prune.sequential);
    let scratch = TempDir::create(&scratch_path(output))?;
    for (s, layers) in groups.iter().enumerate().skip(1) {
        announce(opts, s, groups.len(), layers, "on the model compressed");
        let model = write_stage(input, scratch.path(), s, layers.start, &merged, None, opts)?;
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

/// Say which stage runs (unless quiet).
fn announce(opts: &ConvertOptions, s: usize, stages: usize, layers: &Range<usize>, what: &str) {
    if !opts.quiet {
        let (first, last) = (layers.start, layers.end - 1);
        let kind = if opts.prune.heal { "healing" } else { "calibration" };
        eprintln!(
            "sequential {kind}, stage {s} of {}: blocks {first}–{last} {what} up to block {}",
            stages - 1,
            first - 1
        );
    }
}

/// Write stage `s`'s model into `scratch`: the blocks before `first` compressed with
/// `calibration` (and healed towards `heal_targets`), the rest whole.
fn write_stage(
    input: &Path,
    scratch: &Path,
    s: usize,
    first: usize,
    calibration: &Calibration,
    heal_targets: Option<Vec<Arc<GapMoments>>>,
    opts: &ConvertOptions,
) -> Result<PathBuf> {
    let model = scratch.join(format!("stage-{s}.gguf"));
    let stage = StageState { calibration: Some(calibration.clone()), heal_targets, open_from: Some(first) };
    let stage_opts = ConvertOptions { stage, quiet: true, ..opts.clone() };
    super::write(input, &model, &stage_opts)?;
    Ok(model)
}

/// The scratch directory beside the output (hidden: [`TempDir`] gives it a dot and a suffix).
fn scratch_path(output: &Path) -> PathBuf {
    let name = output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    output.with_file_name(format!("{name}.sequential"))
}

/// The stages of sequential healing: [`groups`], each starting at a kept block, so that a gap of
/// dropped blocks stays in the stage of the block healed for it. (Extra stages starting right
/// after each gap did not help on the default model: bench-results/pruning.md.)
pub fn healing_groups(n_layer: usize, stages: usize, dropped: &[usize]) -> Vec<Range<usize>> {
    let mut starts: Vec<usize> = groups(n_layer, stages).iter().map(|g| g.start).collect();
    for start in starts.iter_mut().skip(1) {
        while *start < n_layer && dropped.contains(start) {
            *start += 1;
        }
    }
    starts.retain(|&s| s < n_layer);
    starts.dedup();
    let ends = starts.iter().skip(1).copied().chain([n_layer]);
    starts.iter().zip(ends).map(|(&s, e)| s..e).collect()
}

/// What the paired pass measures for the stage of blocks `layers`, the student numbering them
/// `shift` lower: the stage's first block takes the error the blocks before it left (and the gap
/// after it, if any); every other block before a gap takes that gap's addition.
pub fn stage_targets(layers: &Range<usize>, gaps: &[Gap], shift: usize) -> Vec<PairTarget> {
    let gap_after = |l: usize| gaps.iter().find(|g| g.kept == l).map_or(l, |g| g.last);
    let first = PairTarget {
        block: layers.start,
        student: layers.start - shift,
        teacher_out: gap_after(layers.start),
        against_student: true,
    };
    let others = gaps.iter().filter(|g| layers.contains(&g.kept) && g.kept != layers.start).map(|g| PairTarget {
        block: g.kept,
        student: g.kept - shift,
        teacher_out: g.last,
        against_student: false,
    });
    std::iter::once(first).chain(others).collect()
}

/// Sequential healing (`--heal --sequential K`): the calibration whose second moments, for the
/// blocks from the second stage on, are the student's, and every healed block's target.
///
/// The structured plan is the one-shot calibration's and stays fixed. Stage 0 heals its blocks on
/// the unpruned model, as one-shot healing does (its gaps from the one-shot gap pass). At stage s
/// the student is written: the blocks before the stage pruned and healed with what the stages
/// before measured, the rest whole (F32). Over the same calibration chunks, the student gives the
/// stage's blocks' input moments (which replace the one-shot ones), and the paired pass beside
/// the unpruned teacher gives each target ([`crate::calib::paired`]): the stage's first block is
/// refit so the student's residual stream after it matches the teacher's, which undoes, as far as
/// a linear map of its FFN activations can, what the compressed blocks before it lost.
///
/// Cost: K − 1 more conversions and 3(K − 1) passes over the calibration text (the student's
/// moments, then teacher and student side by side).
pub fn healing(input: &Path, output: &Path, opts: &ConvertOptions) -> Result<(Calibration, Vec<Arc<GapMoments>>)> {
    let (mut merged, dims, planned) = super::one_shot(input, opts, |dims| check_sequential(opts, dims))?;
    let stage = StageState { calibration: Some(merged.clone()), heal_targets: Some(vec![]), open_from: None };
    let plan_opts = ConvertOptions { stage, quiet: true, ..opts.clone() };
    let dropped = super::plan_only(input, &plan_opts)?.structure.map_or(vec![], |s| s.dropped);
    let gaps = crate::calib::gaps::gaps(&dropped, dims.n_layer);
    let groups = healing_groups(dims.n_layer, opts.prune.sequential, &dropped);
    let mut copts = pruning::calib_options(opts, &dims)?;
    pruning::same_chunks(&mut copts, &merged);

    let first_gaps: Vec<Gap> = gaps.iter().filter(|g| groups[0].contains(&g.kept)).copied().collect();
    let mut targets: Vec<Arc<GapMoments>> = vec![];
    if !first_gaps.is_empty() {
        let measured = super::with_unpruned(input, opts, |m| measure_gaps(m, &first_gaps, &copts, opts.quiet))?;
        targets.extend(measured.into_iter().map(Arc::new));
    }
    let scratch = TempDir::create(&scratch_path(output))?;
    for (s, layers) in groups.iter().enumerate().skip(1) {
        let shift = dropped.iter().filter(|&&l| l < layers.start).count();
        announce(opts, s, groups.len(), layers, "against the teacher, on the model pruned and healed");
        let model = write_stage(input, scratch.path(), s, layers.start, &merged, Some(targets.clone()), opts)?;

        // The student's inputs of the stage's blocks, numbered as the student numbers them.
        let student_layers = dims.n_layer - shift;
        let moments_path = scratch.path().join(format!("stage-{s}.calib.gguf"));
        let mut request = pruning::moments_request(Some(&moments_path), &planned, dims.n_layer);
        request.per_block = (0..student_layers).map(|i| request.per_block[i + shift]).collect();
        request.layers = layers.start - shift..layers.end - shift;
        let student_block = request.layers.clone();
        let stage_copts = CalibOptions { moments: Some(request), ..copts.clone() };
        let update =
            calibrate(CalibModel::File(&model), &merged.fingerprint, student_layers, &stage_copts, opts.quiet)?;
        let rename = |name: &str| {
            let l = layer_of(name).filter(|l| student_block.contains(l))?;
            renumbered(name, l + shift)
        };
        merged = merged.with_moments_from(&update, rename, &scratch.path().join(format!("merged-{s}.gguf")))?;

        let stage = stage_targets(layers, &gaps, shift);
        let measured = super::with_unpruned(input, opts, |m| measure_paired(m, &model, &stage, &copts, opts.quiet))?;
        targets.extend(measured.into_iter().map(Arc::new));
        for done in [model, moments_path, scratch.path().join(format!("merged-{}.gguf", s - 1))] {
            let _ = std::fs::remove_file(done);
        }
    }
    Ok((merged, targets))
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

    #[test]
    fn healing_stages_start_at_kept_blocks() {
        // groups(30, 4) starts at 0, 8, 16, 23; 16 and 17 are dropped, so that stage starts at 18
        // (the gap stays with block 15, healed for it); 23 is dropped and 24 too: the last stage
        // starts at 25.
        let dropped = [16, 17, 23, 24];
        assert_eq!(healing_groups(30, 4, &dropped), vec![0..8, 8..18, 18..25, 25..30]);
        assert_eq!(healing_groups(4, 2, &[2, 3]), vec![0..4], "no kept block left to start a stage");
        assert_eq!(healing_groups(4, 2, &[1]), vec![0..2, 2..4]);
        assert_eq!(healing_groups(6, 1, &[]), vec![0..6]);
    }

    #[test]
    fn a_stage_s_first_block_takes_the_error_before_it_and_the_others_only_their_gaps() {
        let gaps = [Gap { kept: 8, last: 9 }, Gap { kept: 12, last: 14 }];
        // Block 9 is dropped before the stage 10..16: the student numbers its blocks one lower.
        let t = stage_targets(&(10..16), &gaps, 1);
        assert_eq!(
            t,
            vec![
                PairTarget { block: 10, student: 9, teacher_out: 10, against_student: true },
                PairTarget { block: 12, student: 11, teacher_out: 14, against_student: false },
            ]
        );
        let t = stage_targets(&(12..20), &gaps, 1);
        assert_eq!(t, vec![PairTarget { block: 12, student: 11, teacher_out: 14, against_student: true }]);
        assert_eq!(renumbered("blk.11.ffn_down.weight", 12).as_deref(), Some("blk.12.ffn_down.weight"));
        assert_eq!(renumbered("output.weight", 3), None);
    }
}

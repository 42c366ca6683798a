//! The paired pass of sequential healing: the unpruned model (the teacher) and a partly
//! compressed one (the student: the blocks before a stage pruned and healed, the rest whole) run
//! over the same calibration chunk, one after the other, and each healed block's target is
//! measured against the student's own inputs.
//!
//! For a target block l (block `student` in the student's numbering, which dropped blocks
//! shift), with a_t the student's input of l's down projection, the collected moments are
//! Σ δ·aᵀ, Σ δ and Σ ‖δ‖² (a [`GapMoments`]) of
//!
//! ```text
//!   δ_t = T_j,t − S_l,t   (the stage's first block: it also takes the error the compressed
//!                          blocks before it left in the residual stream)
//!   δ_t = T_j,t − T_l,t   (the others: only what a gap of dropped blocks after l added)
//! ```
//!
//! where T_j is the teacher's residual stream after block j (l itself, or the last block of the
//! gap of dropped blocks after l), S_l the student's after block l and T_l the teacher's. Only one
//! block per stage takes the accumulated error: the others are measured with the stage's blocks
//! still whole, so each would take the same error again (`prune::heal` has the refit they feed).
//!
//! Memory: both models at once (the student in F32 from the stage on), the teacher's outputs of
//! the targets' blocks for one chunk, and one n_embd × n_ff cross moment per target.

use super::gaps::{down_layer, is_output_of, output_layer, route, weight_of, DownAndOutput, Gap, GapMoments};
use crate::engine::raw::{f32_rows, ObservedContext, TensorObserver};
use llama_cpp_sys_2 as sys;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One block whose target the paired pass measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PairTarget {
    /// The block healed, in the teacher's (source) numbering.
    pub block: usize,
    /// The same block in the student's numbering.
    pub student: usize,
    /// The teacher's block whose output the healed block should reproduce (`block`, or the last
    /// of the dropped blocks after it).
    pub teacher_out: usize,
    /// Measure δ against the student's output (true) or the teacher's (false).
    pub against_student: bool,
}

/// The teacher's block outputs for the current chunk, by teacher block.
#[derive(Default)]
struct TeacherRows {
    rows: HashMap<usize, Vec<f32>>,
    width: usize,
}

struct TeacherSide {
    shared: Arc<Mutex<TeacherRows>>,
    wanted: Vec<usize>,
    /// The last wanted block's output was seen: the blocks after it need not run.
    done: bool,
}

impl TensorObserver for TeacherSide {
    fn wants(&mut self, t: &sys::ggml_tensor) -> bool {
        self.done = false;
        t.op != sys::GGML_OP_MUL_MAT && output_layer(t).is_some_and(|l| self.wanted.contains(&l))
    }

    fn seen(&mut self, t: &sys::ggml_tensor) {
        self.done = is_output_of(t, self.wanted.last().copied());
        let (Some(l), Some(rows)) = (output_layer(t), f32_rows(t)) else { return };
        let mut shared = self.shared.lock().unwrap();
        shared.width = rows.first().map_or(0, |r| r.len());
        shared.rows.insert(l, rows.concat());
    }

    fn finished(&self) -> bool {
        self.done
    }
}

/// The student's side: each target's down-projection input, held until its block's output
/// arrives, when δ is formed against the teacher's rows of the same chunk.
struct StudentSide {
    shared: Arc<Mutex<TeacherRows>>,
    targets: Vec<PairTarget>,
    moments: Vec<GapMoments>,
    input: Vec<Option<Vec<f32>>>,
    /// The last target's output was seen.
    done: bool,
}

impl DownAndOutput for StudentSide {
    fn down_input(&mut self, layer: usize, x: &sys::ggml_tensor) {
        let Some(rows) = f32_rows(x) else { return };
        let n = rows.first().map_or(0, |r| r.len());
        for i in (0..self.targets.len()).filter(|&i| self.targets[i].student == layer) {
            self.moments[i].n = n;
            self.input[i] = Some(rows.concat());
        }
    }

    fn block_output(&mut self, layer: usize, out: &sys::ggml_tensor) {
        let Some(rows) = f32_rows(out) else { return };
        let own: Vec<f32> = rows.concat();
        let shared = self.shared.lock().unwrap();
        for i in 0..self.targets.len() {
            let target = self.targets[i];
            if target.student != layer {
                continue;
            }
            let Some(a) = self.input[i].take() else { continue };
            let Some(after) = shared.rows.get(&target.teacher_out) else { continue };
            let reference = if target.against_student { Some(&own) } else { shared.rows.get(&target.block) };
            let Some(reference) = reference.filter(|r| r.len() == after.len()) else { continue };
            let delta: Vec<f32> = after.iter().zip(reference).map(|(t, s)| t - s).collect();
            self.moments[i].add(&delta, shared.width, &a);
        }
    }
}

impl TensorObserver for StudentSide {
    fn wants(&mut self, t: &sys::ggml_tensor) -> bool {
        self.done = false;
        let watched = |l: usize| self.targets.iter().any(|p| p.student == l);
        if t.op == sys::GGML_OP_MUL_MAT {
            return down_layer(weight_of(t)).is_some_and(watched);
        }
        output_layer(t).is_some_and(watched)
    }

    fn seen(&mut self, t: &sys::ggml_tensor) {
        route(self, t);
        self.done = is_output_of(t, self.targets.iter().map(|p| p.student).max());
        if self.done {
            // This chunk's teacher rows are used up: a block the teacher fails to give for the next
            // chunk then adds no tokens (and the pass's token count says so) instead of old rows.
            self.shared.lock().unwrap().rows.clear();
        }
    }

    fn finished(&self) -> bool {
        self.done
    }
}

/// The observers of one paired pass, to install in the teacher's and the student's contexts.
pub(super) fn observers(targets: &[PairTarget]) -> (Box<dyn TensorObserver>, Box<dyn TensorObserver>) {
    let shared = Arc::new(Mutex::new(TeacherRows::default()));
    let mut wanted: Vec<usize> = targets.iter().flat_map(|t| [t.teacher_out, t.block]).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let teacher = TeacherSide { shared: shared.clone(), wanted, done: false };
    let moments = targets.iter().map(|t| GapMoments::empty(Gap { kept: t.block, last: t.teacher_out })).collect();
    let student =
        StudentSide { shared, targets: targets.to_vec(), moments, input: vec![None; targets.len()], done: false };
    (Box::new(teacher), Box::new(student))
}

/// Run one chunk through the teacher, then the student.
pub(super) fn decode_pair(
    teacher: &mut ObservedContext,
    student: &mut ObservedContext,
    chunk: &[i32],
) -> anyhow::Result<()> {
    teacher.decode_all(chunk)?;
    student.decode_all(chunk)
}

/// The moments collected by the student's observer (from [`observers`]), in the targets' order.
pub(super) fn into_moments(student: ObservedContext) -> Vec<GapMoments> {
    let observer = student.into_observer();
    // SAFETY: the student's observer is the StudentSide boxed by `observers`.
    let side = unsafe { Box::from_raw(Box::into_raw(observer) as *mut StudentSide) };
    side.moments
}

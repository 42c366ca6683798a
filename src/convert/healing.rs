//! Healing inside the conversion (`--heal`): after structured pruning, each block's down and
//! attention output projections are refit on the channels and heads they keep, and the down
//! projection of the last kept block before each gap of dropped blocks is refit to add what the
//! gap added (`prune::heal`, whose module states the objectives), from the calibration's second
//! moments and, for gaps, the gap pass's cross moments (`calib::gaps`).
//!
//! The refit needs the whole unpruned projection, so a healed tensor is read without its column
//! selection and solved whole. Its mean compensation goes to the layer's bias tensor: the
//! checkpoint's own (moved right after the weight, so the delta is known when the bias is
//! written), or a new zero one where llama.cpp's graph reads an optional bias (LLaMA, DeciLM);
//! other architectures heal without it. Each healed tensor's output error before and after is
//! reported with the compensation statistics.

use super::compensation::CompensationStat;
use super::Job;
use crate::arch::PlannedTensor;
use crate::calib::gaps::GapMoments;
use crate::calib::moments::MomentsFile;
use crate::prune::heal::{refit_kept_inputs, relative_errors, Refit};
use anyhow::{anyhow, bail, Result};
use std::collections::HashMap;
use std::sync::Arc;

/// The projections healing refits: those whose inputs structured pruning removes.
const HEALED: [&str; 2] = ["ffn_down.weight", "attn_output.weight"];

/// Architectures whose llama.cpp graph adds an optional bias after these projections when the
/// file has one (`src/models/{llama,deci,gpt2}.cpp` pass `wo_b` and `ffn_down_b` to the
/// graph; GPT-2's are always present).
const READS_OPTIONAL_BIAS: [&str; 3] = ["llama", "deci", "gpt2"];

/// What one healed tensor's job does.
#[derive(Clone)]
pub enum Healing {
    /// Refit the projection on its `kept` input columns (adding `gap` when a gap of dropped
    /// blocks follows); its mean goes to `bias` (the next tensor in the file) when set.
    Weight {
        moments: Arc<MomentsFile>,
        tokens: f64,
        kept: Vec<usize>,
        bias: Option<String>,
        gap: Option<Arc<GapMoments>>,
    },
    /// Add the refit's mean to this bias.
    Bias,
}

/// The planned role of a tensor, before the moments are attached.
#[derive(Clone, Debug)]
pub enum HealingPlan {
    Weight { bias: Option<String>, gap: Option<Arc<GapMoments>> },
    Bias,
}

/// The gap moments whose kept block owns `p` (an unpruned `blk.N.ffn_down.weight`).
fn gap_of<'g>(p: &PlannedTensor, gaps: &'g [Arc<GapMoments>]) -> Option<&'g Arc<GapMoments>> {
    gaps.iter().find(|g| p.stats_name == crate::util::tensor_name::name(g.gap.kept, "ffn_down.weight"))
}

fn is_healed(p: &PlannedTensor, gaps: &[Arc<GapMoments>]) -> bool {
    let narrowed = HEALED.iter().any(|h| p.name.ends_with(&format!(".{h}")))
        && p.select.as_ref().is_some_and(|s| s.cols.is_some());
    narrowed || gap_of(p, gaps).is_some()
}

fn bias_of(weight: &str) -> String {
    format!("{}.bias", weight.strip_suffix(".weight").unwrap_or(weight))
}

/// Zero biases for the projections healing may refit, where the graph reads a bias the model
/// lacks: sources named as the unpruned model's GGUF tensor they become (no checkpoint or GGUF
/// tensor has that name, or the bias would exist).
pub fn zero_biases(planned: &[PlannedTensor], arch: &str) -> Vec<crate::arch::Generated> {
    if !READS_OPTIONAL_BIAS.contains(&arch) {
        return vec![];
    }
    planned
        .iter()
        .filter(|p| HEALED.iter().any(|h| p.name.ends_with(&format!(".{h}"))))
        .filter(|p| !planned.iter().any(|b| b.name == bias_of(&p.name)))
        .map(|p| crate::arch::Generated {
            name: bias_of(&p.name),
            shape: vec![p.shape[0]],
            data: vec![0.0; p.shape[0]],
        })
        .collect()
}

/// Mark the planned tensors healing refits (after structured pruning chose their columns and
/// blocks, and the gap pass measured `gaps`) and put each one's bias right after it — the
/// checkpoint's own, or the zero one [`zero_biases`] added to the source. Returns each touched
/// tensor's role.
pub fn plan(
    planned: Vec<PlannedTensor>,
    arch: &str,
    gaps: &[Arc<GapMoments>],
) -> (Vec<PlannedTensor>, HashMap<String, HealingPlan>) {
    let with_bias = READS_OPTIONAL_BIAS.contains(&arch);
    let healed: Vec<String> = planned.iter().filter(|p| is_healed(p, gaps)).map(|p| p.name.clone()).collect();
    let biases: Vec<String> = if with_bias { healed.iter().map(|w| bias_of(w)).collect() } else { vec![] };
    let (mut moved, rest): (Vec<PlannedTensor>, Vec<PlannedTensor>) =
        planned.into_iter().partition(|p| biases.contains(&p.name));
    let mut out = Vec::with_capacity(rest.len() + biases.len());
    let mut plans = HashMap::new();
    for p in rest {
        let (name, unpruned) = (p.name.clone(), p.stats_name.clone());
        let rows = p.shape.first().copied().unwrap_or(1);
        let gap = gap_of(&p, gaps).cloned();
        out.push(p);
        if !healed.contains(&name) {
            continue;
        }
        let bias = with_bias.then(|| bias_of(&name));
        if let Some(b) = &bias {
            let tensor = match moved.iter().position(|m| m.name == *b) {
                Some(j) => moved.remove(j),
                None => PlannedTensor::new(b.clone(), bias_of(&unpruned), vec![rows], crate::arch::Transform::Copy),
            };
            out.push(tensor);
            plans.insert(b.clone(), HealingPlan::Bias);
        }
        plans.insert(name, HealingPlan::Weight { bias, gap });
    }
    (out, plans)
}

/// Heal one tensor (whole): a weight read without its column selection becomes the refit on the
/// kept columns (its bias delta kept in `deltas`, and its output errors in `stats`); a bias gets
/// its delta added.
pub fn apply(
    job: &Job,
    h: &Healing,
    data: Vec<f32>,
    deltas: &mut HashMap<String, Vec<f32>>,
    stats: &mut Vec<CompensationStat>,
) -> Result<Vec<f32>> {
    let p = &job.planned;
    match h {
        Healing::Weight { moments, tokens, kept, bias, gap } => {
            let m = moments.get(&p.stats_name, *tokens)?;
            let rows = p.shape[0];
            if data.len() != rows * m.n {
                bail!("{}: {} values read for a {rows}×{} projection", p.name, data.len(), m.n);
            }
            let gap = gap.as_deref();
            let fit = refit_kept_inputs(&data, rows, &m, kept, bias.is_some(), gap)
                .map_err(|e| anyhow!("{}: {e}", p.name))?;
            let n = m.n;
            let plain = Refit {
                weight: (0..rows).flat_map(|r| kept.iter().map(|&c| data[r * n + c]).collect::<Vec<_>>()).collect(),
                bias_delta: None,
            };
            let errors = relative_errors(&data, rows, &m, kept, &[&plain, &fit], gap);
            stats.push(CompensationStat {
                tensor: p.name.clone(),
                ggml_type: "F32".into(),
                method: format!(
                    "heal{}{}",
                    match gap {
                        // A sequential stage's first block with no gap after it: towards the
                        // teacher's residual stream after the block itself.
                        Some(g) if g.gap.last == g.gap.kept => "-stream",
                        Some(_) => "-gap",
                        None => "",
                    },
                    if bias.is_some() { "+bias" } else { "" }
                ),
                error_plain: errors[0],
                error_compensated: errors[1],
            });
            if let (Some(b), Some(d)) = (bias, fit.bias_delta) {
                deltas.insert(b.clone(), d);
            }
            Ok(fit.weight)
        }
        Healing::Bias => {
            let delta = deltas.remove(&p.name).ok_or_else(|| anyhow!("{}: its weight was not healed first", p.name))?;
            if data.len() != delta.len() {
                bail!("{}: a bias of {} values for {} outputs", p.name, data.len(), delta.len());
            }
            Ok(data.iter().zip(&delta).map(|(b, d)| b + d).collect())
        }
    }
}

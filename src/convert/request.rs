//! What a conversion asks for, checked in one place before any work is done or any file
//! created: the pruning flags (`PruneSpec::validate`), GPTQ's need of a quantized type,
//! `--sequential`'s combinations and stage count, N:M against the rows it applies to. `pruning`
//! and `sequential` both ask here (`sequential` uses `pruning`'s calibration helpers; `pruning` uses
//! nothing of `sequential`).

use super::ConvertOptions;
use crate::arch::PlannedTensor;
use crate::gguf::Metadata;
use crate::prune::structured::Dims;
use crate::quant::gptq::QuantMethod;
use anyhow::{bail, Result};

/// Every check of a conversion's options against the model (`meta`, its `planned` tensors).
pub fn check(opts: &ConvertOptions, meta: &Metadata, planned: &[PlannedTensor]) -> Result<()> {
    let spec = &opts.prune;
    spec.validate()?;
    if spec.sequential > 1 {
        check_sequential(opts, &Dims::from_metadata(meta)?)?;
    }
    if opts.quant_method == QuantMethod::Gptq && opts.scheme.is_float() {
        bail!(
            "--quant-method gptq rounds onto a quantized type's grid: give a quantized --outtype, not {}",
            opts.scheme.name()
        );
    }
    if spec.is_noop() {
        return Ok(());
    }
    if let Some(nm) = spec.nm {
        if let Some(p) = planned.iter().find(|p| {
            sparsity_applies(&p.name, spec.sparsity_all) && p.shape.last().is_some_and(|&n| n % nm.group != 0)
        }) {
            bail!(
                "--nm {}:{}: rows of {} have {} weights, not a multiple of {}",
                nm.keep,
                nm.group,
                p.name,
                p.shape.last().unwrap(),
                nm.group
            );
        }
    }
    Ok(())
}

/// Check a `--sequential` request against the model: a calibrated unstructured method or GPTQ,
/// or healing after structured pruning; no more stages than blocks.
pub fn check_sequential(opts: &ConvertOptions, dims: &Dims) -> Result<()> {
    let spec = &opts.prune;
    let k = spec.sequential;
    if spec.heal {
        if spec.wants_unstructured() || opts.quant_method == QuantMethod::Gptq {
            bail!("--sequential {k} with --heal heals stage by stage; it does not combine with --sparsity or --quant-method gptq (give those in another conversion)");
        }
        let narrows = spec.prune_ffn.is_some_and(|r| r > 0.0) || spec.prune_heads.is_some_and(|r| r > 0.0);
        if narrows && dims.arch != "llama" {
            bail!(
                "--sequential {k} --heal: a stage's model has narrowed blocks before whole ones, unequal widths llama.cpp's {} cannot hold (only llama has the per-layer form); heal {} in one shot",
                dims.arch,
                dims.arch
            );
        }
    } else if spec.wants_structured() {
        bail!("--sequential {k} applies to unstructured pruning, GPTQ and --heal, not to removing blocks, channels or heads alone");
    }
    if !needs_moments(opts) && !spec.needs_calibration() {
        bail!(
            "--sequential {k} re-calibrates for a calibrated method: give --sparsity-method wanda or sparsegpt, --quant-method gptq, or --heal"
        );
    }
    if k > dims.n_layer {
        bail!("--sequential {k}: the model has only {} blocks (at most one stage per block)", dims.n_layer);
    }
    Ok(())
}

/// Does the conversion need the second moments of the layers' inputs (GPTQ, SparseGPT)?
pub fn needs_moments(opts: &ConvertOptions) -> bool {
    opts.prune.needs_moments() || (opts.quant_method == QuantMethod::Gptq && !opts.scheme.is_float())
}

/// Tensors unstructured pruning applies to: the blocks' linear weights (and, on request, the
/// embeddings and output head).
pub fn sparsity_applies(name: &str, all: bool) -> bool {
    const LINEAR: [&str; 8] =
        ["attn_q", "attn_k", "attn_v", "attn_output", "attn_qkv", "ffn_gate", "ffn_up", "ffn_down"];
    if all && (name == "token_embd.weight" || name == "output.weight") {
        return true;
    }
    crate::util::tensor_name::in_block(name)
        && name.ends_with(".weight")
        && LINEAR.iter().any(|l| name.contains(&format!(".{l}.weight")))
}

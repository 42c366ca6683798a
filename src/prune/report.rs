//! `prune-plan`: what pruning would remove and what the model becomes, as text or JSON.

use super::structured::StructuredPlan;
use super::PruneSpec;
use crate::convert::Job;
use crate::gguf::{meta_get, Metadata};
use anyhow::Result;
use serde_json::json;
use std::fmt::Write;

fn bytes(job: &Job) -> u64 {
    let row = *job.planned.shape.last().unwrap_or(&1);
    let rows = job.planned.n_elements() / row.max(1);
    job.ty.row_bytes(row).map(|b| (b * rows) as u64).unwrap_or(0)
}

pub fn plan_text(
    before: &[Job],
    meta: &Metadata,
    jobs: &[Job],
    structure: Option<&StructuredPlan>,
    spec: &PruneSpec,
    as_json: bool,
) -> Result<String> {
    let params = |j: &[Job]| j.iter().map(|j| j.planned.n_elements() as u64).sum::<u64>();
    let size = |j: &[Job]| j.iter().map(bytes).sum::<u64>();
    let arch = meta_get(meta, "general.architecture").and_then(|v| v.as_str()).unwrap_or("?");
    if as_json {
        let v = json!({
            "architecture": arch,
            "params_before": params(before),
            "params_after": params(jobs),
            "bytes_before": size(before),
            "bytes_after": size(jobs),
            "structure": structure,
            "sparsity": spec.effective_sparsity(),
            "sparsity_method": spec.method,
            "sparsified_tensors": jobs.iter().filter(|j| j.sparsity.is_some()).map(|j| j.planned.name.clone()).collect::<Vec<_>>(),
            "tensors": jobs.iter().map(|j| json!({"name": j.planned.name, "shape": j.planned.shape, "type": j.ty.name(), "bytes": bytes(j)})).collect::<Vec<_>>(),
        });
        return Ok(serde_json::to_string_pretty(&v)? + "\n");
    }
    let mut s = String::new();
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    if let Some(p) = structure {
        let _ = writeln!(s, "architecture: {} -> {}", p.dims.arch, p.out_arch);
        let _ = writeln!(s, "blocks: {} -> {}", p.dims.n_layer, p.layers.len());
        if !p.dropped.is_empty() {
            let bi = |i: usize| {
                p.block_influence.as_ref().and_then(|b| b.get(i)).map(|x| format!(" (BI {x:.4})")).unwrap_or_default()
            };
            let list: Vec<String> = p.dropped.iter().map(|&i| format!("{i}{}", bi(i))).collect();
            let _ = writeln!(s, "dropped blocks: {}", list.join(", "));
        }
        let widths: Vec<String> = p.layers.iter().map(|l| l.ffn.len().to_string()).collect();
        let heads: Vec<String> = p.layers.iter().map(|l| format!("{}/{}", l.heads.len(), l.kv_heads.len())).collect();
        let _ = writeln!(s, "FFN width per block ({} before): {}", p.dims.n_ff, widths.join(" "));
        let _ = writeln!(
            s,
            "heads/KV heads per block ({}/{} before): {}",
            p.dims.n_head,
            p.dims.n_head_kv,
            heads.join(" ")
        );
    }
    if spec.wants_unstructured() {
        let n = jobs.iter().filter(|j| j.sparsity.is_some()).count();
        let how = match spec.nm {
            Some(nm) => format!("{}:{} (keep {} of every {})", nm.keep, nm.group, nm.keep, nm.group),
            None => format!("{:.0}% of each row", 100.0 * spec.effective_sparsity()),
        };
        let _ = writeln!(s, "unstructured: {how}, {:?}, over {n} tensors", spec.method);
    }
    let _ = writeln!(
        s,
        "parameters: {:.2}M -> {:.2}M\nsize: {:.1} MiB -> {:.1} MiB",
        params(before) as f64 / 1e6,
        params(jobs) as f64 / 1e6,
        mib(size(before)),
        mib(size(jobs))
    );
    let _ = writeln!(s, "\ntensors (changed shapes marked *):");
    for j in jobs {
        let mark = if j.planned.select.is_some() || j.planned.name != j.planned.stats_name { "*" } else { " " };
        let _ = writeln!(
            s,
            "{mark} {:<28} {:<14} {:<6} {:>10}",
            j.planned.name,
            format!("{:?}", j.planned.shape),
            j.ty.name(),
            bytes(j)
        );
    }
    Ok(s)
}

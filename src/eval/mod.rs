//! Evaluation through the llama.cpp engine: perplexity and KL divergence with llama-perplexity's
//! semantics, and multiple-choice tasks (SST-2, ARC, any JSONL) scored by log-likelihood.

pub mod choice;
pub mod data;
pub mod kld;
pub mod perplexity;
pub mod run;

use crate::report::rows::ModelId;
use run::EvalOutput;
use std::fmt::Write;

/// The human-readable report of one `eval`: llama-perplexity's lines for perplexity and KLD, then a
/// table of every metric.
pub fn report_text(id: &ModelId, out: &EvalOutput) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "model: {} ({} MiB, {:.2} bits/weight, sha256 {})",
        id.file,
        id.size_bytes / (1 << 20),
        id.bits_per_weight,
        id.sha256
    );
    if let Some(p) = &out.perplexity {
        let _ = writeln!(s, "Final estimate: PPL = {:.4} +/- {:.5}", p.ppl, p.ppl_stderr);
    }
    if let Some(k) = &out.kld {
        let _ = writeln!(s, "Mean PPL(Q)/PPL(base)         : {:10.6} ± {:10.6}", k.ppl_ratio, k.ppl_ratio_stderr);
        let _ = writeln!(s, "Mean    KLD: {:10.6} ± {:10.6}", k.kld_mean, k.kld_stderr);
        let _ = writeln!(s, "99.9%   KLD: {:10.6}", k.kld_p999);
        let _ = writeln!(s, "99.0%   KLD: {:10.6}", k.kld_p99);
        let _ = writeln!(s, "Same top p: {:6.3} ± {:5.3} %", 100.0 * k.same_top, 100.0 * k.same_top_stderr);
    }
    let _ = writeln!(s, "\n| metric | value | ± | items | time (s) |\n| --- | ---: | ---: | ---: | ---: |");
    for r in &out.rows {
        let _ = writeln!(s, "| {} | {:.4} | {:.4} | {} | {:.1} |", r.metric, r.value, r.stderr, r.items, r.wall_s);
    }
    s
}

//! `OUT.md`: a model card in the Hugging Face style, written from the search's trace alone (so
//! its numbers are the trace's): front matter, what the file is and how it was chosen, the
//! measures with 95% intervals beside the references, the data, and the command that rebuilds it.

use super::trace::{Interval, Row, Trace};
use super::ShrinkOptions;
use crate::util::mem::format_size;
use anyhow::{anyhow, Result};
use std::fmt::Write;

pub fn card(t: &Trace, opts: &ShrinkOptions) -> Result<String> {
    let pick = t.pick.as_deref().ok_or_else(|| anyhow!("no pick to describe"))?;
    let row = t.row(pick).ok_or_else(|| anyhow!("{pick}: not among the study's rows"))?;
    let step = t.steps.iter().find(|s| s.candidate.name == pick).ok_or_else(|| anyhow!("{pick}: not in the search"))?;
    let mut md = String::new();
    let base_model = opts.base_model.clone().unwrap_or_else(|| base_model(t));
    let _ = writeln!(
        md,
        "---\nbase_model: {base_model}\ntags:\n- gguf\n- microscale\n- quantized\nquantized_by: microscale\n---\n"
    );
    let file = opts.out.file_name().map_or("the file".into(), |f| f.to_string_lossy().into_owned());
    let _ = writeln!(md, "# {file}\n");
    let _ = writeln!(
        md,
        "{} of `{}`, found by `microscale shrink` {}: the smallest file it found that fits the `{}` profile \
         and stays within +{:.1}% perplexity and {:.1} point(s) of mean accuracy of the baseline, at {:.0}% \
         paired confidence.\n",
        format_size(row.size_bytes.unwrap_or(0)),
        t.model,
        t.microscale,
        t.profile,
        100.0 * t.max_ppl_increase,
        100.0 * t.max_acc_drop,
        100.0 * t.confidence_level
    );
    if let Some(src) = t.references.iter().find(|r| r.kind == "source") {
        let (a, b) = (row.size_bytes.unwrap_or(0) as f64, src.size_bytes.unwrap_or(1) as f64);
        let _ = writeln!(
            md,
            "Against the file the model came as (`{}`, {}): {:+.1}% in size.\n",
            t.as_shipped.as_deref().unwrap_or(&src.name),
            format_size(src.size_bytes.unwrap_or(0)),
            100.0 * (a / b - 1.0)
        );
    }
    let _ = writeln!(md, "## What it is made of\n");
    for (ty, n, bytes) in &step.candidate.composition {
        let _ = writeln!(md, "- {ty}: {n} tensor(s), {}", format_size(*bytes));
    }
    let _ = writeln!(
        md,
        "\nEvery weight matrix's type (the token embedding and output head included) was chosen by \
         `convert --target-size {} --quant-method gptq`: GPTQ rounding onto each candidate type, its error \
         against the inputs' second moments, weighed per tensor role by the sensitivities measured below. \
         Stock llama.cpp runs it.\n",
        step.candidate.target_bytes
    );
    measures(&mut md, t, pick);
    search(&mut md, t);
    let _ = writeln!(md, "## Data\n");
    let _ = writeln!(
        md,
        "- Calibration (importance matrix, second moments): {} chunks of 512 tokens of WikiText-2 validation.\n\
         - Proxy: mean KL divergence from the baseline over {} windows of {} tokens of WikiText-2 validation after \
         the calibration's {} tokens (disjoint from calibration and from the final check).\n\
         - Final check: perplexity and KL divergence over {} windows of 512 tokens of WikiText-2 test; {} ({}). \
         Paired 95% intervals: bootstrap over windows and items against the baseline (the F32 model).",
        t.calib_chunks,
        t.proxy.windows,
        t.proxy.n_ctx,
        t.proxy.skip_tokens,
        t.ppl_windows,
        t.tasks.join(", "),
        t.limit.map_or("every item of the dev sets".into(), |l| format!("{l} items per task, a seeded sample"))
    );
    let _ = writeln!(md, "\n## Reproduce\n");
    let _ = writeln!(md, "The search:\n\n```sh\n{}\n```\n", t.command);
    if let Some(r) = &t.rebuild {
        let _ = writeln!(
            md,
            "This file alone (the calibration file is in the search's study directory):\n\n```sh\n{r}\n```\n"
        );
    }
    let _ = writeln!(
        md,
        "microscale {}, llama.cpp (llama-cpp-sys-2) {}; this run of the search took {:.1} min (a run resumed on \
         a study reuses what the study holds).",
        t.microscale,
        t.llama_cpp,
        t.elapsed_s / 60.0
    );
    Ok(md)
}

/// The Hugging Face id of the base model when the metadata names it, else the model's path.
fn base_model(t: &Trace) -> String {
    let from = t.as_shipped.as_deref().unwrap_or(&t.model);
    let f = crate::gguf::GgufFile::open(std::path::Path::new(from)).ok();
    let repo = f.as_ref().and_then(|f| f.get_str("general.base_model.0.repo_url").map(str::to_string));
    match repo {
        Some(url) => url.trim_start_matches("https://huggingface.co/").to_string(),
        None => f.and_then(|f| f.get_str("general.name").map(str::to_string)).unwrap_or_else(|| from.to_string()),
    }
}

fn iv(i: &Option<Interval>, decimals: usize, sign: bool) -> String {
    match i {
        Some(i) if sign => format!("{:+.d$} [{:+.d$}, {:+.d$}]", i.estimate, i.lo, i.hi, d = decimals),
        Some(i) => format!("{:.d$} [{:.d$}, {:.d$}]", i.estimate, i.lo, i.hi, d = decimals),
        None => "—".into(),
    }
}

fn measures(md: &mut String, t: &Trace, pick: &str) {
    let _ = writeln!(md, "## Measures, beside the references\n");
    let _ = writeln!(
        md,
        "Each row on the same windows and items, under the `{}` profile's caps; point estimate [95% interval] \
         against the baseline.\n",
        t.profile
    );
    let tasks: Vec<String> =
        t.references.first().map(|r| r.acc.iter().map(|a| a.0.clone()).collect()).unwrap_or_default();
    let mut head = vec!["file", "kind", "size", "bpw", "PPL", "PPL change %", "KLD"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    head.extend(tasks.iter().map(|m| format!("{m} (Δ points)")));
    head.extend(["Δ mean accuracy (points)", "tg t/s", "peak RSS MiB", "status", "within budget"].map(String::from));
    let _ = writeln!(md, "| {} |", head.join(" | "));
    let _ = writeln!(md, "|{}|", vec!["---"; head.len()].join("|"));
    let order = t
        .references
        .iter()
        .filter(|r| r.name == pick)
        .chain(t.references.iter().filter(|r| r.name != pick && !r.name.starts_with("shrink-")));
    for r in order {
        let _ = writeln!(md, "| {} |", cells(r, pick, &tasks).join(" | "));
    }
    md.push('\n');
}

fn cells(r: &Row, pick: &str, tasks: &[String]) -> Vec<String> {
    let name = if r.name == pick { format!("**{}** (this file)", r.name) } else { format!("`{}`", r.name) };
    let mut c = vec![
        name,
        r.kind.clone(),
        r.size_bytes.map_or("—".into(), format_size),
        r.bpw.map_or("—".into(), |b| format!("{b:.2}")),
        r.ppl.map_or("—".into(), |p| format!("{p:.3}")),
        iv(&r.ppl_change_pct, 2, true),
        iv(&r.kld, 4, false),
    ];
    for m in tasks {
        c.push(match r.acc.iter().find(|a| &a.0 == m) {
            Some((_, a, d)) => format!("{:.1}% ({})", 100.0 * a, iv(d, 1, true)),
            None => "—".into(),
        });
    }
    c.push(iv(&r.acc_mean_change_points, 1, true));
    c.push(r.tg_tps.map_or("—".into(), |x| format!("{x:.1}")));
    c.push(r.peak_rss_mib.map_or("—".into(), |x| format!("{x:.0}")));
    c.push(r.status.clone().unwrap_or_else(|| "—".into()));
    c.push(match (r.within_budget, r.confidence) {
        (Some(true), Some(k)) => format!("yes ({:.1}%)", 100.0 * k),
        (Some(true), None) => "yes".into(),
        (Some(false), k) => format!("no{}", k.map_or(String::new(), |k| format!(" ({:.1}%)", 100.0 * k))),
        (None, _) => "—".into(),
    });
    c
}

fn search(md: &mut String, t: &Trace) {
    let _ = writeln!(md, "## How it was found\n");
    let _ = writeln!(
        md,
        "Bisection on the file size between {} (assumed to fail) and `{}`'s {}, each candidate judged by the proxy \
         (mean KLD at most {:.4}), then the smallest passing candidates confirmed on the budget's own metrics.\n",
        t.steps.first().map_or("—".into(), |s| format_size(s.bracket.lo)),
        t.reference.name,
        format_size(t.reference.bytes),
        t.proxy_kld_limit
    );
    let _ = writeln!(md, "| step | candidate | size | proxy KLD | proxy PPL ratio | passes | bracket after |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    for s in &t.steps {
        let c = &s.candidate;
        let (k, p) = c
            .proxy
            .as_ref()
            .map_or(("—".into(), "—".into()), |p| (format!("{:.4}", p.kld), format!("{:.4}", p.ppl_ratio)));
        let _ = writeln!(
            md,
            "| {} | `{}` | {} | {k} | {p} | {} | {} – {} |",
            s.step,
            c.name,
            format_size(c.file_bytes),
            if c.passes { "yes" } else { "no" },
            format_size(s.bracket.lo),
            format_size(s.bracket.hi)
        );
    }
    let _ = writeln!(md);
    for c in &t.prune_trials {
        let label = c.prune.as_ref().map_or_else(String::new, |p| p.label());
        let verdict = match (&c.proxy, &c.error) {
            (Some(p), _) if c.passes => format!("proxy KLD {:.4}: pruning pays here, a candidate", p.kld),
            (Some(p), _) => format!("proxy KLD {:.4}: pruning does not pay here", p.kld),
            (None, Some(e)) => format!("not built: {e}"),
            (None, None) => "not built".into(),
        };
        let _ = writeln!(
            md,
            "- pruning trial `{}` ({label}, built to {}, the largest size that failed unpruned): {verdict}",
            c.name,
            format_size(c.target_bytes)
        );
    }
    for c in &t.confirms {
        let _ = writeln!(
            md,
            "- confirmed `{}` ({}): {}",
            c.candidate,
            format_size(c.file_bytes),
            match (&c.why, c.within_budget && c.fits) {
                (_, true) => format!(
                    "within the budget, fits ({})",
                    c.confidence.map_or("—".into(), |k| format!("confidence {:.1}%", 100.0 * k))
                ),
                (Some(w), _) => format!("rejected: {w}"),
                (None, _) => "rejected".into(),
            }
        );
    }
    let _ = writeln!(md, "\nSensitivities (KLD per unit of the budget's loss, relative to the median role; one probe each: the role at {} in an all-Q8_0 file):\n", t.sensitivities.first().map_or("q4_0", |s| s.probe_type.as_str()));
    for s in &t.sensitivities {
        let _ = writeln!(md, "- {}: ×{:.3} (KLD +{:.4} over {} tensor(s))", s.role, s.scale, s.kld_added, s.tensors);
    }
    md.push('\n');
}

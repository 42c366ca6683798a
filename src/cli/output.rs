//! Everything the command line prints: the tables in the shape of llama.cpp's tools
//! (llama-bench's, llama-perplexity's final lines), JSON documents for scripts, and the one-line
//! errors. The library returns data; this module turns it into text.

use anyhow::Result;
use microscale::bench::generate::{CappedGeneration, GenerationReport};
use microscale::bench::profiles::Profile;
use microscale::bench::quant::QuantBenchRow;
use microscale::bench::run::BenchRow;
use microscale::convert::pruning::SparsityStat;
use microscale::convert::{ConvertReport, Plan};
use microscale::engine::info::EngineInfo;
use microscale::eval::run::EvalOutput;
use microscale::prune::PruneSpec;
use microscale::quant::mix::Scheme;
use microscale::record::rows::ModelId;
use microscale::record::Status;
use microscale::sandbox::caps::Enforcement;
use microscale::source::inspect::Summary;
use microscale::util::mem::format_size_short;
use serde_json::{json, Value};
use std::fmt::Write;
use std::path::Path;

// ---------------------------------------------------------------------------------------------
// Errors and JSON
// ---------------------------------------------------------------------------------------------

/// An error and its causes on one line, each cause once; the default model's missing files say
/// how to get them.
pub fn error_line(e: &anyhow::Error) -> String {
    let mut out: Vec<String> = Vec::new();
    for part in e.chain().map(|c| c.to_string().replace('\n', " ")) {
        // Skip causes already quoted by the message above them.
        if !out.iter().any(|o| o.contains(&part)) {
            out.push(part);
        }
    }
    let line = out.join(": ");
    let missing = line.contains("no such file") || line.contains("no such model file");
    if missing && line.starts_with("models/") {
        line + " (the default model is fetched by scripts/fetch-default-model.sh)"
    } else {
        line
    }
}

/// clap's usage error, on one line like every other error: its first paragraph (the missing
/// flags follow "were not provided:" on lines of their own; tips and usage come after a blank line).
pub fn usage_error_line(rendered: &str) -> String {
    let message: Vec<&str> = rendered.lines().map(str::trim).take_while(|l| !l.is_empty()).collect();
    let line = if message.is_empty() { "invalid arguments".to_string() } else { message.join(" ") };
    if line.starts_with("error:") {
        line
    } else {
        format!("error: {line}")
    }
}

pub fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub fn print_json_line(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// info, inspect
// ---------------------------------------------------------------------------------------------

/// The `microscale info` text.
pub fn engine_info(info: &EngineInfo) -> String {
    let amx = match (info.amx_compiled, info.host_has_amx) {
        (false, true) => {
            "not compiled in (this CPU has AMX; ggml's AMX backend crashes on it, llama.cpp issue 20824)"
        }
        (false, false) => "not compiled in (ggml's AMX backend crashes on Sapphire Rapids, llama.cpp issue 20824)",
        (true, _) => {
            "COMPILED IN: rebuild with the project's .cargo/config.toml (ggml's AMX backend crashes, llama.cpp issue 20824)"
        }
    };
    format!(
        "microscale {}\nengine: llama.cpp via llama-cpp-2 {} / llama-cpp-sys-2 {} (pinned)\n\
         CPU features compiled in: {}\nAMX: {amx}\nbackends compiled in: {}\nGPU offload: {}\ndevices: {}\nllama.cpp system info: {}\n",
        info.microscale,
        info.llama_cpp_2,
        info.llama_cpp_sys_2,
        info.cpu_features.join(" "),
        info.backends.join(", "),
        match (info.gpu_devices.is_empty(), info.backends.len() > 1) {
            (false, _) => format!("available: {}", info.gpu_devices.join("; ")),
            (true, true) => "none: no GPU device found (--gpu-layers runs on the CPU)".to_string(),
            (true, false) => "no (CPU build)".to_string(),
        },
        info.devices.join("; "),
        info.system_info
    )
}

pub fn summary_json(s: &Summary) -> Value {
    json!({
        "path": s.path,
        "format": s.format,
        "architecture": s.architecture,
        "hparams": s.hparams.iter().cloned().collect::<serde_json::Map<_, _>>(),
        "n_params": s.n_params(),
        "tensor_bytes": s.total_bytes(),
        "bits_per_weight": s.bits_per_weight(),
        "tensors": s.tensors.iter().map(|t| json!({"name": t.name, "shape": t.shape, "dtype": t.dtype.name(), "bytes": t.n_bytes()})).collect::<Vec<_>>(),
    })
}

pub fn summary_table(sm: &Summary) -> String {
    let render = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut s = String::new();
    let _ = writeln!(s, "{} ({}, {})", sm.path, sm.format, sm.architecture);
    for (k, v) in &sm.hparams {
        let _ = writeln!(s, "  {k:<42} {}", render(v));
    }
    let _ = writeln!(
        s,
        "  {:<42} {:.2}M\n  {:<42} {:.2} MiB\n  {:<42} {:.3}",
        "parameters",
        sm.n_params() as f64 / 1e6,
        "tensor data",
        sm.total_bytes() as f64 / (1 << 20) as f64,
        "bits per weight",
        sm.bits_per_weight()
    );
    let w = sm.tensors.iter().map(|t| t.name.len()).max().unwrap_or(4).max(4);
    let _ = writeln!(s, "\n  {:<w$}  {:<20} {:<6} {:>12}", "name", "shape", "type", "bytes");
    for t in &sm.tensors {
        let shape = format!("{:?}", t.shape);
        let _ = writeln!(s, "  {:<w$}  {:<20} {:<6} {:>12}", t.name, shape, t.dtype.name(), t.n_bytes());
    }
    s
}

// ---------------------------------------------------------------------------------------------
// convert, prune-plan
// ---------------------------------------------------------------------------------------------

/// What unstructured pruning achieved per tensor, before and after quantization.
pub fn sparsity_table(stats: &[SparsityStat]) -> String {
    let mut s = String::from(
        "| tensor | type | requested | zeroed | zeros after quantization |\n| --- | --- | ---: | ---: | ---: |\n",
    );
    for st in stats {
        let _ = writeln!(
            s,
            "| {} | {} | {:.2}% | {:.2}% | {:.2}% |",
            st.tensor,
            st.ggml_type,
            100.0 * st.requested,
            100.0 * st.achieved,
            100.0 * st.after_quantization
        );
    }
    s
}

/// Each compensated tensor's output error ‖ΔW·X‖²/‖W·X‖², without and with compensation, and
/// the total over them.
pub fn compensation_table(stats: &[microscale::convert::compensation::CompensationStat]) -> String {
    let mut s = String::from(
        "| tensor | type | method | output error, plain | compensated | ratio |\n| --- | --- | --- | ---: | ---: | ---: |\n",
    );
    let ratio = |a: f64, b: f64| if a > 0.0 { b / a } else { 1.0 };
    for st in stats {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.3e} | {:.3e} | {:.3} |",
            st.tensor,
            st.ggml_type,
            st.method,
            st.error_plain,
            st.error_compensated,
            ratio(st.error_plain, st.error_compensated)
        );
    }
    let (p, c) = stats.iter().fold((0.0, 0.0), |(p, c), st| (p + st.error_plain, c + st.error_compensated));
    let _ = writeln!(s, "| all {} tensors (sum) | | | {p:.3e} | {c:.3e} | {:.3} |", stats.len(), ratio(p, c));
    s
}

/// The line `convert` ends with.
pub fn conversion_summary(output: &Path, scheme: Scheme, r: &ConvertReport) -> String {
    format!(
        "wrote {} ({} {}, {} tensors, {:.1}M params, {:.1} MiB)",
        output.display(),
        r.arch,
        scheme.name(),
        r.n_tensors,
        r.n_params as f64 / 1e6,
        r.bytes as f64 / (1 << 20) as f64
    )
}

fn plan_params(p: &Plan) -> u64 {
    p.jobs.iter().map(|j| j.planned.n_elements() as u64).sum()
}

fn plan_bytes(p: &Plan) -> u64 {
    p.jobs.iter().map(|j| j.n_bytes()).sum()
}

/// `prune-plan --json`: kept blocks, channels and heads; every tensor's shape and type.
pub fn prune_plan_json(before: &Plan, after: &Plan, spec: &PruneSpec) -> Value {
    let arch = microscale::gguf::meta_get(&after.metadata, "general.architecture").and_then(|v| v.as_str());
    json!({
        "architecture": arch.unwrap_or("?"),
        "params_before": plan_params(before),
        "params_after": plan_params(after),
        "bytes_before": plan_bytes(before),
        "bytes_after": plan_bytes(after),
        "structure": after.structure,
        "sparsity": spec.effective_sparsity(),
        "sparsity_method": spec.method,
        "sparsified_tensors": after.jobs.iter().filter(|j| j.sparsity.is_some()).map(|j| j.planned.name.clone()).collect::<Vec<_>>(),
        "compensation": after.jobs.iter().filter_map(|j| Some((j.planned.name.clone(), Value::String(j.compensation_method()?)))).collect::<serde_json::Map<_, _>>(),
        "tensors": after.jobs.iter().map(|j| json!({"name": j.planned.name, "shape": j.planned.shape, "type": j.ty.name(), "bytes": j.n_bytes()})).collect::<Vec<_>>(),
    })
}

/// `prune-plan`: what pruning removes and what the model becomes.
pub fn prune_plan_text(before: &Plan, after: &Plan, spec: &PruneSpec) -> String {
    let mut s = String::new();
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    if let Some(p) = &after.structure {
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
        let n = after.jobs.iter().filter(|j| j.sparsity.is_some()).count();
        let how = match spec.nm {
            Some(nm) => format!("{}:{} (keep {} of every {})", nm.keep, nm.group, nm.keep, nm.group),
            None => format!("{:.0}% of each row", 100.0 * spec.effective_sparsity()),
        };
        let _ = writeln!(s, "unstructured: {how}, {:?}, over {n} tensors", spec.method);
    }
    let mut compensated: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
    for j in &after.jobs {
        if let Some(m) = j.compensation_method() {
            compensated.entry(m).or_default().push(&j.planned.name);
        }
    }
    for (method, tensors) in &compensated {
        let list = if tensors.len() <= 4 { tensors.join(", ") } else { format!("{} tensors", tensors.len()) };
        let _ = writeln!(s, "compensation: {method}: {list}");
    }
    let _ = writeln!(
        s,
        "parameters: {:.2}M -> {:.2}M\nsize: {:.1} MiB -> {:.1} MiB",
        plan_params(before) as f64 / 1e6,
        plan_params(after) as f64 / 1e6,
        mib(plan_bytes(before)),
        mib(plan_bytes(after))
    );
    let mut types: std::collections::BTreeMap<&str, (usize, u64)> = Default::default();
    for j in &after.jobs {
        let e = types.entry(j.ty.name()).or_default();
        e.0 += 1;
        e.1 += j.n_bytes();
    }
    let list: Vec<String> =
        types.iter().map(|(t, (n, b))| format!("{t} x{n} ({:.1} MiB)", *b as f64 / (1 << 20) as f64)).collect();
    let _ = writeln!(s, "types: {}", list.join(", "));
    let _ = writeln!(s, "\ntensors (changed shapes marked *):");
    for j in &after.jobs {
        let mark = if j.planned.select.is_some() || j.planned.name != j.planned.stats_name { "*" } else { " " };
        let _ = writeln!(
            s,
            "{mark} {:<28} {:<14} {:<6} {:>10}",
            j.planned.name,
            format!("{:?}", j.planned.shape),
            j.ty.name(),
            j.n_bytes()
        );
    }
    s
}

// ---------------------------------------------------------------------------------------------
// eval
// ---------------------------------------------------------------------------------------------

/// The human-readable report of one `eval`: llama-perplexity's lines for perplexity and KLD, then a
/// table of every metric.
pub fn eval_text(id: &ModelId, out: &EvalOutput) -> String {
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

// ---------------------------------------------------------------------------------------------
// bench, bench-quant
// ---------------------------------------------------------------------------------------------

/// `bench --list-profiles`.
pub fn profile_list<'a>(profiles: impl Iterator<Item = &'a Profile>) -> String {
    let mut s = String::new();
    for p in profiles {
        let _ = writeln!(
            s,
            "{:<22} threads {:<3} memory {:<9} {}",
            p.name,
            if p.threads == 0 { "all".to_string() } else { p.threads.to_string() },
            p.memory.map(format_size_short).unwrap_or_else(|| "none".into()),
            p.note
        );
    }
    s
}

/// A table in the shape of llama-bench's, with microscale's extra columns, then the notes (caps
/// that cannot be honoured, and how the caps were enforced).
pub fn bench_table(rows: &[BenchRow]) -> String {
    let mut s = String::from(
        "| model | size | params | profile | threads | mem cap | test | t/s | load s | TTFT s | peak RSS | repacked | status |\n",
    );
    s += "| --- | ---: | ---: | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |\n";
    for r in rows {
        let name = Path::new(&r.model).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        let common = format!(
            "| {name} | {} | {:.2} M | {} | {} | {} |",
            format_size_short(r.size_bytes),
            r.n_params as f64 / 1e6,
            r.profile,
            r.threads,
            r.memory_cap.map(format_size_short).unwrap_or_else(|| "none".into())
        );
        let tail = |load: Option<f64>, ttft: Option<f64>| {
            format!(
                " {} | {} | {} | {} | {} |",
                load.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into()),
                ttft.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into()),
                format_size_short(r.peak_rss),
                repacked_cell(r.repacked_mib),
                match &r.reason {
                    None => r.status.to_string(),
                    Some(why) => format!("{}: {why}", r.status),
                }
            )
        };
        if r.status != Status::Fits {
            s += &format!("{common} - | - |{}\n", tail(None, None));
            continue;
        }
        if let Some(pp) = r.pp {
            s += &format!("{common} pp{} | {:.2} ± {:.2} |{}\n", r.n_prompt, pp.mean, pp.sd, tail(r.load_s, r.ttft_s));
        }
        if let Some(tg) = r.tg {
            s += &format!("{common} tg{} | {:.2} ± {:.2} |{}\n", r.n_gen, tg.mean, tg.sd, tail(r.load_s, r.ttft_s));
        }
    }
    let mut notes: Vec<String> = rows.iter().flat_map(|r| r.warnings.clone()).collect();
    notes.dedup();
    if let Some(r) = rows.first() {
        notes.push(enforcement_note(&r.enforcement));
    }
    for n in notes {
        let _ = writeln!(s, "note: {n}");
    }
    s
}

// ---------------------------------------------------------------------------------------------
// generate, chat
// ---------------------------------------------------------------------------------------------

/// What a generation cost, after its text: llama.cpp's `prompt eval` / `eval` speeds, the time to
/// first token, load time and peak memory.
pub fn generation_stats(r: &GenerationReport) -> String {
    let name = Path::new(&r.model).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let sampling = if r.greedy { "greedy".to_string() } else { format!("seed {}", r.seed) };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{name} ({}), {} threads, context {}, {sampling}",
        format_size_short(r.size_bytes),
        r.threads,
        r.ctx_size
    );
    let _ = writeln!(
        s,
        "{}",
        reply_stats_line(r.prompt_tokens, r.prompt_tps, r.generated_tokens, r.generation_tps, r.ttft_s)
    );
    let _ = writeln!(
        s,
        "load {:.2} s | peak memory {} | stop: {}",
        r.load_s,
        format_size_short(r.peak_rss),
        r.stop.map(|x| x.as_str()).unwrap_or("-")
    );
    s
}

/// One reply's speeds, on one line (also `chat`'s `/stats`).
pub fn reply_stats_line(prompt_tokens: usize, prompt_tps: f64, gen_tokens: usize, gen_tps: f64, ttft_s: f64) -> String {
    format!(
        "prompt {prompt_tokens} tokens, {prompt_tps:.1} t/s | generation {gen_tokens} tokens, {gen_tps:.1} t/s | time to first token {ttft_s:.3} s"
    )
}

/// A capped generation: the profile and its caps, then the generation's stats or why it failed.
pub fn capped_generation_stats(run: &CappedGeneration) -> String {
    let mut s = format!(
        "profile {}: {} threads, memory cap {}, CPU quota {}: {}\n",
        run.profile,
        run.threads,
        run.memory_cap.map(format_size_short).unwrap_or_else(|| "none".into()),
        run.cpu_quota.map(|q| format!("{q} CPUs")).unwrap_or_else(|| "none".into()),
        match &run.reason {
            None => run.status.to_string(),
            Some(why) => format!("{}: {why}", run.status),
        }
    );
    if let Some(r) = &run.report {
        s += &generation_stats(r);
    }
    for w in &run.warnings {
        let _ = writeln!(s, "note: {w}");
    }
    let _ = writeln!(s, "note: {}", enforcement_note(&run.enforcement));
    s
}

/// Whether llama.cpp repacked the model's weights at load, and how much.
pub fn repacked_cell(mib: Option<f64>) -> String {
    match mib {
        None => "-".into(),
        Some(m) if m > 0.0 => format!("yes, {m:.1} MiB"),
        Some(_) => "no".into(),
    }
}

/// How the caps were enforced, for a note under `bench`'s table or a capped generation.
fn enforcement_note(e: &Enforcement) -> String {
    format!("memory cap: {}; CPU quota: {}; affinity: {}", e.memory, e.cpu_quota, e.affinity)
}

/// `bench-quant`: microscale's and ggml's quantizers side by side.
pub fn quant_bench_table(rows: &[QuantBenchRow]) -> String {
    let mut s = String::from(
        "| type | imatrix | rows × cols | threads | microscale rows/s | ggml rows/s | ratio | identical |\n",
    );
    s += "| --- | --- | --- | --- | ---: | ---: | ---: | --- |\n";
    for r in rows {
        s += &format!(
            "| {} | {} | {} × {} | {} | {:.0} | {:.0} | {:.2} | {} |\n",
            r.ggml_type,
            if r.imatrix { "yes" } else { "no" },
            r.rows,
            r.row_len,
            r.threads,
            r.ours_rows_per_s,
            r.ggml_rows_per_s,
            r.speed_ratio,
            if r.identical { "yes" } else { "NO" }
        );
    }
    s
}

/// `imatrix --show-statistics`, with llama-imatrix's columns.
pub fn imatrix_statistics_table(stats: &[microscale::gguf::imatrix::TensorStats]) -> String {
    let mut out = format!(
        "{:>5}  {:<28} {:>12} {:>10} {:>12} {:>10} {:>10} {:>8} {:>7} {:>9} {:>8} {:>7} {:>7}\n",
        "layer",
        "tensor",
        "sum(act^2)",
        "min",
        "max",
        "mean",
        "stddev",
        "active",
        "N",
        "entropy",
        "E(norm)",
        "ZD",
        "CosSim"
    );
    for s in stats {
        let layer = if s.layer == usize::MAX { "-".to_string() } else { s.layer.to_string() };
        out += &format!(
            "{layer:>5}  {:<28} {:>12.2} {:>10.4} {:>12.4} {:>10.2} {:>10.2} {:>7.2}% {:>7} {:>9.4} {:>7.2}% {:>6.2}% {:>7}\n",
            s.kind,
            s.total,
            s.min,
            s.max,
            s.mean,
            s.stddev,
            100.0 * s.active,
            s.elements,
            s.entropy,
            s.entropy_norm,
            100.0 * s.zd,
            s.cos_sim.map_or("-".to_string(), |c| format!("{c:.4}")),
        );
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Sweeps on SLURM
// ---------------------------------------------------------------------------------------------

/// What `sweep --slurm` submitted, and how to follow it.
pub fn slurm_submitted_text(jobs: &microscale::sweep::slurm::JobRecord, out: &Path) -> String {
    let mut s = String::new();
    let n = jobs.variants.len();
    let _ = writeln!(s, "submitted {n} variant(s) of {} to SLURM:", jobs.grid.display());
    let _ = writeln!(s, "  preparation job {} (baseline, calibration, baseline log-probabilities)", jobs.prepare);
    let _ = writeln!(s, "  array job {} (tasks 0-{}, after the preparation)", jobs.array, n.saturating_sub(1));
    if let Some(m) = &jobs.merge {
        let _ = writeln!(s, "  merge job {m} (rows into results.csv, after the array)");
    }
    let _ = writeln!(
        s,
        "scripts in {}/slurm/, logs in {}/logs/; progress: microscale sweep --status {}",
        out.display(),
        out.display(),
        out.display()
    );
    s
}

/// `--wait`'s failure: which variants failed and how, on one line.
pub fn slurm_failures_line(failed: &[(String, String)], submitted: usize, out: &Path) -> String {
    let list: Vec<String> = failed.iter().map(|(n, st)| format!("{n} ({st})")).collect();
    format!(
        "{} of {submitted} submitted variant(s) failed: {}; rows in {}, logs in {}/logs (a variant with no row \
         was cancelled or killed: run the same command again to submit it)",
        failed.len(),
        list.join(", "),
        out.join("results.csv").display(),
        out.display()
    )
}

/// `sweep --status`: one line of counts, then the names behind each count but ok.
pub fn sweep_status_text(st: &microscale::sweep::slurm::SweepStatus) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: {} variants: {} ok, {} failed, {} running, {} pending, {} without a row",
        st.out.display(),
        st.variants,
        st.ok.len(),
        st.failed.len(),
        st.running.len(),
        st.pending.len(),
        st.without_row.len()
    );
    if !st.failed.is_empty() {
        let f: Vec<String> = st.failed.iter().map(|(n, status)| format!("{n} ({status})")).collect();
        let _ = writeln!(s, "  failed: {}", f.join(", "));
    }
    for (what, names) in [("running", &st.running), ("pending", &st.pending), ("without a row", &st.without_row)] {
        if !names.is_empty() {
            let _ = writeln!(s, "  {what}: {}", names.join(", "));
        }
    }
    if let Some(j) = &st.jobs {
        let merge = j.merge.as_deref().map(|m| format!(", merge job {m}")).unwrap_or_default();
        let _ = writeln!(
            s,
            "SLURM: preparation job {}, array job {}{merge}; task states: {}",
            j.prepare, j.array, st.scheduler
        );
    }
    s
}

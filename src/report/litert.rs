//! "On Android's stack (LiteRT)": the baseline and the sweet spots exported to LiteRT
//! (`sweep --litert`), each beside the GGUF it came from — what moving to Android's own runtime
//! costs or saves in size, quality and speed on this host.

use crate::record::results::Results;
use crate::record::twins::{TwinRow, RUNTIME_LITERT as LITERT, RUNTIME_LLAMA_CPP as LLAMA_CPP};
use std::fmt::Write as _;

fn opt(x: Option<f64>, digits: usize) -> String {
    x.map_or("—".into(), |x| format!("{x:.digits$}"))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// A speed and its spread over repetitions (none shown for a single one).
fn with_sd(mean: Option<f64>, sd: Option<f64>) -> String {
    match (mean, sd) {
        (Some(m), Some(s)) if s > 0.0 => format!("{m:.1} ± {s:.1}"),
        (Some(m), _) => format!("{m:.1}"),
        _ => "—".into(),
    }
}

/// A KL divergence to 4 places; a file scored against its own log-probabilities reads 0, not
/// the -0.0000 of rounding.
fn kld(x: Option<f64>) -> String {
    x.map_or("—".into(), |x| format!("{:.4}", if x.abs() < 5e-5 { 0.0 } else { x }))
}

/// Each LiteRT row with the GGUF row of its pick, in the order measured.
fn twins(rows: &[TwinRow]) -> Vec<(&TwinRow, &TwinRow)> {
    let litert = rows.iter().filter(|r| r.runtime == LITERT);
    litert
        .filter_map(|l| rows.iter().find(|g| g.runtime == LLAMA_CPP && g.variant == l.variant).map(|g| (g, l)))
        .collect()
}

/// `a` against `b` as a ratio, or "—".
fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "—".into(),
    }
}

/// One sentence per pick: the LiteRT file against its GGUF twin.
fn verdict(g: &TwinRow, l: &TwinRow) -> String {
    let ppl = match (l.ppl, g.ppl) {
        (Some(a), Some(b)) => format!("perplexity {a:.3} against {b:.3} ({:+.2}%)", 100.0 * (a / b - 1.0)),
        _ => "perplexity not measured".into(),
    };
    let kld = match (l.kld, g.kld) {
        (Some(_), Some(_)) => format!("KL divergence from the baseline {} against {}", kld(l.kld), kld(g.kld)),
        _ => "no KL divergence".into(),
    };
    format!(
        "`{}` ({}): the LiteRT file ({}) is {:.1} MiB against the GGUF's {:.1} MiB ({}); {ppl}; {kld}; \
         prompt {} and generation {} llama.cpp's speed on this host.",
        g.variant,
        g.role,
        l.weights,
        mib(l.size_bytes),
        mib(g.size_bytes),
        ratio(Some(l.size_bytes as f64), Some(g.size_bytes as f64)),
        ratio(l.pp_tps, g.pp_tps),
        ratio(l.tg_tps, g.tg_tps),
    )
}

pub fn litert_section(md: &mut String, r: &Results) {
    let Some(rows) = r.twins.as_ref().filter(|rows| !rows.is_empty()) else { return };
    let pairs = twins(rows);
    let first = &rows[0];
    let _ = writeln!(md, "## On Android's stack (LiteRT)\n");
    let _ = writeln!(
        md,
        "The baseline and each profile's sweet spot, exported to LiteRT by litert-torch (`microscale sweep --litert`) \
         and run here through LiteRT's own interpreter (ai-edge-litert, XNNPACK), beside the GGUF each came from \
         through llama.cpp. Both files of a pair are scored on the same {} windows of 512 tokens of WikiText-2 \
         test, their KL divergence against the baseline GGUF's log-probabilities; their speeds (a prompt of {} \
         tokens, then {} generated, {} thread(s)) are measured one right after the other. The GGUF is what \
         llama.cpp-based Android apps load; the `.tflite` is what Android's own stack (LiteRT, LiteRT-LM, \
         MediaPipe) loads.\n",
        first.eval_chunks, first.n_prompt, first.n_gen, first.threads
    );
    let _ = writeln!(
        md,
        "| variant | role | runtime | weights | MiB | PPL | KLD | same top | pp t/s | tg t/s | peak RSS MiB | conversion |"
    );
    let _ = writeln!(md, "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for row in rows {
        let conversion = match (row.export_s, row.export_peak_rss_mib) {
            (Some(s), Some(m)) => format!("{s:.0} s, {m:.0} MiB"),
            (Some(s), None) => format!("{s:.0} s"),
            _ => "—".into(),
        };
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {} |",
            row.variant,
            row.role,
            row.runtime,
            row.weights,
            mib(row.size_bytes),
            opt(row.ppl, 3),
            kld(row.kld),
            row.same_top.map_or("—".into(), |s| format!("{:.1}%", 100.0 * s)),
            with_sd(row.pp_tps, row.pp_tps_sd),
            with_sd(row.tg_tps, row.tg_tps_sd),
            opt(row.peak_rss_mib, 0),
            conversion
        );
    }
    md.push('\n');
    for (g, l) in &pairs {
        let _ = writeln!(md, "- {}", verdict(g, l));
    }
    let _ = writeln!(
        md,
        "- How LiteRT ran here: through its Python interpreter binding, which copies the whole KV cache into and \
         out of every decode call (LiteRT-LM on a phone keeps it in place), so its generation speed is a lower \
         bound; its peak RSS is that of the Python process holding the interpreter. The weights' format follows \
         the GGUF's: float32 from F32; from a quantized GGUF, 8-bit per-channel weights two ways — \
         `weight_only_int8`, which LiteRT dequantizes to float32 as it prepares each signature (the GGUF's \
         quality, several times its memory), and `dynamic_int8`, which stays int8 and computes in int8 \
         (activations quantized on the fly: less memory, more error). LiteRT's 4-bit blocks are symmetric and \
         cannot hold Q4_1 or K-quant values.\n"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(variant: &str, runtime: &str, size: u64, ppl: f64, tg: f64) -> TwinRow {
        TwinRow {
            variant: variant.into(),
            role: if variant == "baseline-f32" { "baseline".into() } else { "sweet spot: host".into() },
            runtime: runtime.into(),
            file: format!("{variant}.{runtime}"),
            weights: if runtime == LITERT { "weight_only_int8".into() } else { "q4_1".into() },
            size_bytes: size,
            ppl: Some(ppl),
            ppl_stderr: Some(0.5),
            kld: Some(0.01),
            kld_stderr: Some(0.001),
            same_top: Some(0.95),
            pp_tps: Some(300.0),
            pp_tps_sd: Some(3.0),
            tg_tps: Some(tg),
            tg_tps_sd: Some(1.0),
            load_s: Some(0.2),
            peak_rss_mib: Some(150.0),
            threads: 2,
            n_prompt: 64,
            n_gen: 16,
            eval_chunks: 40,
            export_s: (runtime == LITERT).then_some(75.0),
            export_peak_rss_mib: (runtime == LITERT).then_some(4290.0),
            date: String::new(),
        }
    }

    #[test]
    fn each_litert_file_is_stated_against_its_gguf_twin() {
        let rows = vec![
            row("as-shipped", LLAMA_CPP, 100 << 20, 20.0, 100.0),
            row("as-shipped", LITERT, 150 << 20, 20.2, 25.0),
        ];
        let results = Results {
            path: "results.csv".into(),
            profiles: vec![],
            acc_metrics: vec![],
            variants: vec![],
            measured: Default::default(),
            speeds: None,
            twins: Some(rows),
        };
        let mut md = String::new();
        litert_section(&mut md, &results);
        assert!(md.contains("## On Android's stack (LiteRT)"), "{md}");
        assert!(
            md.contains("same 40 windows") && md.contains("a prompt of 64 tokens, then 16 generated, 2 thread(s)"),
            "{md}"
        );
        assert!(
            md.contains("| `as-shipped` | sweet spot: host | litert | weight_only_int8 | 150.0 | 20.200 |"),
            "{md}"
        );
        assert!(md.contains("| 75 s, 4290 MiB |"), "{md}");
        // 150 MiB against 100: 1.50×; perplexity +1.00%; generation 25 against 100 t/s: 0.25×.
        assert!(md.contains("is 150.0 MiB against the GGUF's 100.0 MiB (1.50×)"), "{md}");
        assert!(md.contains("(+1.00%)") && md.contains("generation 0.25×"), "{md}");
        let mut none = String::new();
        litert_section(&mut none, &Results { twins: None, ..results });
        assert!(none.is_empty(), "no section without rows: {none}");
    }
}

//! The measurements' names and results.csv's columns, defined once: `sweep` writes them,
//! `report` reads them, `bench --csv` names its metrics with the same words.

/// The columns before the tasks: what the variant is, its size, perplexity and KL divergence.
pub const IDENTITY: &[&str] = &[
    "variant",
    "kind",
    "recipe",
    "method",
    "prune_ratio",
    "quant",
    "file_size_bytes",
    "n_params",
    "bits_per_weight",
    "ppl",
    "ppl_stderr",
    "kld",
    "kld_stderr",
    "same_top",
];

/// The task columns (each with `_stderr`), between the identity columns and the profiles.
pub const TASKS: &[&str] = &[
    "sst2_acc",
    "sst2_acc_stderr",
    "arc_easy_acc",
    "arc_easy_acc_stderr",
    "arc_easy_acc_norm",
    "arc_easy_acc_norm_stderr",
    "arc_challenge_acc",
    "arc_challenge_acc_stderr",
    "arc_challenge_acc_norm",
    "arc_challenge_acc_norm_stderr",
];

/// One device profile's measurements, as `P:NAME` columns (and `bench --csv` metrics):
/// the run's status, peak RSS, prompt and generation tokens/s with their sd, load time, time to
/// first token, the memory cap, and whether llama.cpp repacked the weights at load (`yes`/`no`).
pub const PROFILE: &[&str] = &[
    "status",
    "peak_rss_mib",
    "pp_tps",
    "pp_tps_sd",
    "tg_tps",
    "tg_tps_sd",
    "load_s",
    "ttft_s",
    "mem_cap_mib",
    "repacked",
];

/// Profile columns a results.csv written by an earlier microscale lacks.
pub const PROFILE_OPTIONAL: &[&str] = &["repacked"];

/// The columns after the profiles: how the variant ended, how it was run (the sampling behind the
/// numbers, the layers offloaded to a GPU), and provenance.
pub const TRAILER: &[&str] =
    &["status", "error", "eval_chunks", "eval_limit", "gpu_layers", "microscale", "llama_cpp", "date"];

/// Columns a results.csv written by an earlier microscale lacks, which readers do without.
pub const OPTIONAL: &[&str] = &["gpu_layers"];

/// The columns every results.csv has (the profile and task columns go between them).
pub fn required() -> impl Iterator<Item = &'static str> {
    IDENTITY.iter().chain(TRAILER).copied().filter(|c| !OPTIONAL.contains(c))
}

/// `P:NAME`.
pub fn profile_column(profile: &str, measurement: &str) -> String {
    format!("{profile}:{measurement}")
}

/// results.csv's header for these device profiles, in order.
pub fn results_header(profiles: &[String]) -> Vec<String> {
    let mut h: Vec<String> = IDENTITY.iter().chain(TASKS).map(|s| s.to_string()).collect();
    for p in profiles {
        h.extend(PROFILE.iter().map(|c| profile_column(p, c)));
    }
    h.extend(TRAILER.iter().map(|s| s.to_string()));
    h
}

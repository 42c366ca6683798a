//! `general.*` metadata for a conversion from Hugging Face, as gguf-py's `Metadata` derives it:
//! the model's name and the sampling defaults of `generation_config.json`.

use crate::gguf::{GgufValue, Metadata};
use crate::source::HfCheckpoint;
use anyhow::Result;
use serde_json::Value;

/// generation_config.json key → (`general.sampling.*` key, is an integer).
const SAMPLING_KEYS: [(&str, &str, bool); 12] = [
    ("sequence", "sequence", false),
    ("top_k", "top_k", true),
    ("top_p", "top_p", false),
    ("min_p", "min_p", false),
    ("xtc_probability", "xtc_probability", false),
    ("xtc_threshold", "xtc_threshold", false),
    ("temperature", "temp", false),
    ("penalty_last_n", "penalty_last_n", true),
    ("penalty_repeat", "penalty_repeat", false),
    ("mirostat", "mirostat", true),
    ("mirostat_tau", "mirostat_tau", false),
    ("mirostat_eta", "mirostat_eta", false),
];

/// `general.architecture`, `general.type`, sampling keys and `general.name`, in the converter's order.
pub fn general_metadata(ckpt: &HfCheckpoint, arch: &str) -> Result<Metadata> {
    let mut meta: Metadata = vec![
        ("general.architecture".into(), GgufValue::String(arch.into())),
        ("general.type".into(), GgufValue::String("model".into())),
    ];
    if let Some(gen) = ckpt.side_file("generation_config.json")? {
        meta.extend(sampling_metadata(&gen));
    }
    meta.push(("general.name".into(), GgufValue::String(model_name(ckpt))));
    Ok(meta)
}

pub fn sampling_metadata(gen: &Value) -> Metadata {
    let mut meta = Metadata::new();
    for (hf, key, integer) in SAMPLING_KEYS {
        let value = match gen.get(hf) {
            Some(Value::String(s)) if hf == "sequence" => GgufValue::String(s.clone()),
            Some(Value::Number(n)) if integer => match n.as_i64() {
                Some(v) => GgufValue::I32(v as i32),
                None => continue,
            },
            Some(Value::Number(n)) if !integer => GgufValue::F32(n.as_f64().unwrap_or(0.0) as f32),
            _ => continue,
        };
        meta.push((format!("general.sampling.{key}"), value));
    }
    meta
}

/// The reverse, for `import`: `general.sampling.*` back to generation_config.json keys.
pub fn generation_config(meta: &Metadata) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    for (hf, key, _) in SAMPLING_KEYS {
        if let Some((_, v)) = meta.iter().find(|(k, _)| *k == format!("general.sampling.{key}")) {
            out.insert(hf.to_string(), v.to_json());
        }
    }
    out
}

/// The converter's name heuristic: `_name_or_path` from config.json when it is a plain model id,
/// else the directory's name, turned into a title (`SmolLM2-135M` → `SmolLM2 135M`).
pub fn model_name(ckpt: &HfCheckpoint) -> String {
    let from_config = ckpt
        .config
        .get("_name_or_path")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.matches('/').count() <= 1)
        .map(|s| s.rsplit('/').next().unwrap_or(s).to_string());
    let id = from_config.unwrap_or_else(|| {
        let dir = std::fs::canonicalize(&ckpt.dir).unwrap_or(ckpt.dir.clone());
        dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into())
    });
    id_to_title(&id)
}

/// gguf-py's `id_to_title`: dashes become spaces; all-lowercase words are capitalised unless they
/// look like a version (`v1.2`) or start with a digit.
pub fn id_to_title(id: &str) -> String {
    id.replace('-', " ")
        .split_whitespace()
        .map(|w| {
            let versionish = w.starts_with(|c: char| c.is_ascii_digit())
                || (w.starts_with('v')
                    && w.len() > 1
                    && w[1..].split('.').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())));
            if w.chars().all(|c| !c.is_uppercase()) && !versionish {
                let mut c = w.chars();
                c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_like_gguf_py() {
        assert_eq!(id_to_title("SmolLM2-135M-Instruct"), "SmolLM2 135M Instruct");
        assert_eq!(id_to_title("smollm2-135m"), "Smollm2 135m");
        assert_eq!(id_to_title("llama-v2.1-7b"), "Llama v2.1 7b");
    }

    #[test]
    fn sampling_keys_follow_gguf_py_and_round_trip() {
        let gen = serde_json::json!({"temperature": 0.2, "top_k": 50, "top_p": 0.9, "do_sample": true});
        let meta = sampling_metadata(&gen);
        assert_eq!(
            meta,
            vec![
                ("general.sampling.top_k".to_string(), GgufValue::I32(50)),
                ("general.sampling.top_p".to_string(), GgufValue::F32(0.9)),
                ("general.sampling.temp".to_string(), GgufValue::F32(0.2)),
            ]
        );
        let back = generation_config(&meta);
        assert_eq!(back["top_k"], 50);
        assert_eq!(sampling_metadata(&Value::Object(back)), meta);
    }
}

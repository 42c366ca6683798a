//! `microscale inspect`: what a model holds (architecture, hyper-parameters, tensors, size).

use super::{Source, TensorDesc, TensorSource};
use crate::quant::mix::Scheme;
use anyhow::Result;
use serde_json::{json, Value};
use std::path::Path;

pub struct Summary {
    pub path: String,
    /// "gguf" or "hf".
    pub format: &'static str,
    pub architecture: String,
    /// Hyper-parameters as (key, rendered value).
    pub hparams: Vec<(String, Value)>,
    pub tensors: Vec<TensorDesc>,
}

impl Summary {
    pub fn n_params(&self) -> u64 {
        self.tensors.iter().map(|t| t.shape.iter().product::<usize>() as u64).sum()
    }

    pub fn total_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.n_bytes()).sum()
    }

    pub fn bits_per_weight(&self) -> f64 {
        self.total_bytes() as f64 * 8.0 / self.n_params().max(1) as f64
    }
}

pub fn inspect(path: &Path) -> Result<Summary> {
    let source = Source::open(path)?;
    let (format, architecture, hparams, tensors): (&'static str, String, Vec<(String, Value)>, &dyn TensorSource) =
        match &source {
            Source::Gguf(g) => {
                let arch = g.file.architecture()?.to_string();
                let mut hp: Vec<(String, Value)> = g
                    .file
                    .metadata
                    .iter()
                    .filter(|(k, _)| k.starts_with(&format!("{arch}.")) || k == "general.name")
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect();
                if let Some(ft) = g.file.get_u64("general.file_type") {
                    hp.push((
                        "general.file_type".into(),
                        json!(format!("{ft} ({})", Scheme::label_of_file_type(ft as u32))),
                    ));
                }
                for key in ["tokenizer.ggml.model", "tokenizer.ggml.pre"] {
                    if let Some(v) = g.file.get(key) {
                        hp.push((key.into(), v.to_json()));
                    }
                }
                if let Some(n) = g.file.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()).map(|a| a.len()) {
                    hp.push(("tokenizer.ggml.tokens".into(), json!(n)));
                }
                ("gguf", arch, hp, g)
            }
            Source::Hf(c) => {
                let arch = c.architecture_name()?;
                let hp = c
                    .config
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .filter(|(_, v)| v.is_number() || v.is_boolean() || v.is_string())
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                ("hf", arch, hp, c)
            }
        };
    let tensors = tensors.tensors().to_vec();
    Ok(Summary { path: path.display().to_string(), format, architecture, hparams, tensors })
}

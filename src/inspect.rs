//! `microscale inspect`: what a model holds (architecture, hyper-parameters, tensors, size).

use crate::convert::Source;
use crate::gguf::file_type;
use crate::source::TensorSource;
use anyhow::Result;
use serde_json::{json, Value};
use std::fmt::Write;
use std::path::Path;

pub struct TensorRow {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: String,
    pub bytes: u64,
}

pub struct Summary {
    pub path: String,
    /// "gguf" or "hf".
    pub format: &'static str,
    pub architecture: String,
    /// Hyper-parameters as (key, rendered value).
    pub hparams: Vec<(String, Value)>,
    pub tensors: Vec<TensorRow>,
}

impl Summary {
    pub fn n_params(&self) -> u64 {
        self.tensors.iter().map(|t| t.shape.iter().product::<usize>() as u64).sum()
    }

    pub fn total_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.bytes).sum()
    }

    pub fn bits_per_weight(&self) -> f64 {
        self.total_bytes() as f64 * 8.0 / self.n_params().max(1) as f64
    }

    pub fn to_json(&self) -> Value {
        json!({
            "path": self.path,
            "format": self.format,
            "architecture": self.architecture,
            "hparams": self.hparams.iter().cloned().collect::<serde_json::Map<_, _>>(),
            "n_params": self.n_params(),
            "tensor_bytes": self.total_bytes(),
            "bits_per_weight": self.bits_per_weight(),
            "tensors": self.tensors.iter().map(|t| json!({"name": t.name, "shape": t.shape, "dtype": t.dtype, "bytes": t.bytes})).collect::<Vec<_>>(),
        })
    }

    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{} ({}, {})", self.path, self.format, self.architecture);
        for (k, v) in &self.hparams {
            let _ = writeln!(s, "  {k:<42} {}", render(v));
        }
        let _ = writeln!(
            s,
            "  {:<42} {:.2}M\n  {:<42} {:.2} MiB\n  {:<42} {:.3}",
            "parameters",
            self.n_params() as f64 / 1e6,
            "tensor data",
            self.total_bytes() as f64 / (1 << 20) as f64,
            "bits per weight",
            self.bits_per_weight()
        );
        let w = self.tensors.iter().map(|t| t.name.len()).max().unwrap_or(4).max(4);
        let _ = writeln!(s, "\n  {:<w$}  {:<20} {:<6} {:>12}", "name", "shape", "type", "bytes");
        for t in &self.tensors {
            let shape = format!("{:?}", t.shape);
            let _ = writeln!(s, "  {:<w$}  {:<20} {:<6} {:>12}", t.name, shape, t.dtype, t.bytes);
        }
        s
    }
}

fn render(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
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
                    hp.push(("general.file_type".into(), json!(format!("{ft} ({})", file_type::name(ft as u32)))));
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
    let tensors = tensors
        .tensors()
        .iter()
        .map(|t| TensorRow {
            name: t.name.clone(),
            shape: t.shape.clone(),
            dtype: t.dtype.name().to_string(),
            bytes: (t.n_elements() / t.dtype.block_size() * t.dtype.type_size()) as u64,
        })
        .collect();
    Ok(Summary { path: path.display().to_string(), format, architecture, hparams, tensors })
}

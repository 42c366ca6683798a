//! RoPE as config.json describes it — transformers 4's top-level `rope_theta` and `rope_scaling`,
//! or transformers 5's `rope_parameters` — read the way `convert_hf_to_gguf.py`'s `TextModel`
//! reads it, and written as llama.cpp's `{arch}.rope.*` keys. Llama 3's scaling is not a key but a
//! tensor of frequency factors (`rope_freqs.weight`), computed here as the converter computes it.

use crate::gguf::{GgufValue, Metadata};
use crate::source::HfCheckpoint;
use anyhow::{bail, Result};
use serde_json::{Map, Value};

#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    Linear {
        factor: f64,
    },
    Yarn {
        factor: f64,
        original_context: u64,
        ext_factor: Option<f64>,
        attn_factor: Option<f64>,
        beta_fast: Option<f64>,
        beta_slow: Option<f64>,
    },
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_context: u64,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct RopeConfig {
    /// `rope_theta` when config.json gives one (llama.cpp's default is 10000 otherwise).
    pub theta: Option<f64>,
    pub scaling: RopeScaling,
}

fn num(m: &Map<String, Value>, key: &str) -> Option<f64> {
    m.get(key).and_then(Value::as_f64)
}

impl RopeConfig {
    /// The checkpoint's RoPE: an unknown scaling type, or one llama.cpp computes differently from
    /// what the config asks, is an error naming the key — never a silent default.
    pub fn from_config(ckpt: &HfCheckpoint) -> Result<RopeConfig> {
        let c = &ckpt.config;
        let cfg = ckpt.dir.join("config.json");
        let key =
            if c.get("rope_parameters").is_some_and(|v| !v.is_null()) { "rope_parameters" } else { "rope_scaling" };
        let mut params: Map<String, Value> = match c.get(key) {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(other) => bail!("{}: {key} = {other} is not an object", cfg.display()),
        };
        if params.contains_key("full_attention") || params.contains_key("sliding_attention") {
            bail!(
                "{}: {key} with per-attention-type RoPE (full_attention / sliding_attention) is not supported",
                cfg.display()
            );
        }
        // TextModel mirrors the top-level keys into the RoPE parameters.
        let top_theta =
            ["global_rope_theta", "rope_global_theta", "rope_theta_global", "rope_theta", "rotary_emb_base"]
                .iter()
                .find_map(|k| c.get(*k).filter(|v| !v.is_null()).cloned());
        if let Some(t) = top_theta {
            params.entry("rope_theta").or_insert(t);
        }
        if let Some(t) = params.get("type").cloned() {
            params.entry("rope_type").or_insert(t);
        }
        if let Some(o) = c.get("original_max_position_embeddings").filter(|v| !v.is_null()).cloned() {
            params.entry("original_max_position_embeddings").or_insert(o);
        }
        let theta = match params.get("rope_theta") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_f64() {
                Some(t) if t > 0.0 && t.is_finite() => Some(t),
                _ => bail!("{}: {key}.rope_theta = {v} is impossible (expected a positive number)", cfg.display()),
            },
        };
        let rope_type = params.get("rope_type").and_then(Value::as_str).map(str::to_ascii_lowercase);
        let factor = num(&params, "factor");
        let orig = params.get("original_max_position_embeddings").and_then(Value::as_u64);
        let need = |what: Option<f64>, name: &str| -> Result<f64> {
            match what {
                Some(v) if v > 0.0 && v.is_finite() => Ok(v),
                _ => bail!(
                    "{}: {key}.{name} is missing or impossible for rope_type {:?}",
                    cfg.display(),
                    rope_type.as_deref().unwrap_or("")
                ),
            }
        };
        let scaling = match rope_type.as_deref() {
            None | Some("default") => RopeScaling::None,
            Some("linear") if factor.is_some() => RopeScaling::Linear { factor: need(factor, "factor")? },
            Some("yarn") if factor.is_some() => RopeScaling::Yarn {
                factor: need(factor, "factor")?,
                original_context: orig.ok_or_else(|| {
                    anyhow::anyhow!("{}: {key}.original_max_position_embeddings is required for YaRN", cfg.display())
                })?,
                ext_factor: num(&params, "extrapolation_factor"),
                attn_factor: num(&params, "attention_factor").or_else(|| num(&params, "attn_factor")),
                beta_fast: num(&params, "beta_fast"),
                beta_slow: num(&params, "beta_slow"),
            },
            // The converter ignores a linear or YaRN type without a factor: so does llama.cpp.
            Some("linear" | "yarn") => RopeScaling::None,
            Some("llama3") => RopeScaling::Llama3 {
                factor: num(&params, "factor").unwrap_or(8.0),
                low_freq_factor: num(&params, "low_freq_factor").unwrap_or(1.0),
                high_freq_factor: num(&params, "high_freq_factor").unwrap_or(4.0),
                original_context: orig.unwrap_or(8192),
            },
            Some(other) => bail!(
                "{}: {key}.rope_type = {other:?} is not supported (microscale handles default, linear, yarn and llama3 RoPE)",
                cfg.display()
            ),
        };
        if let RopeScaling::Llama3 { low_freq_factor, high_freq_factor, .. } = scaling {
            if low_freq_factor == high_freq_factor {
                bail!("{}: {key}: llama3 low_freq_factor equals high_freq_factor", cfg.display());
            }
        }
        Ok(RopeConfig { theta, scaling })
    }

    /// The `{arch}.rope.*` keys in the converter's order: scaling, then the frequency base.
    pub fn metadata(&self, arch: &str) -> Metadata {
        let k = |s: &str| format!("{arch}.rope.{s}");
        let mut m = Metadata::new();
        match &self.scaling {
            RopeScaling::None | RopeScaling::Llama3 { .. } => {}
            RopeScaling::Linear { factor } => {
                m.push((k("scaling.type"), GgufValue::String("linear".into())));
                m.push((k("scaling.factor"), GgufValue::F32(*factor as f32)));
            }
            RopeScaling::Yarn { factor, original_context, ext_factor, attn_factor, beta_fast, beta_slow } => {
                m.push((k("scaling.type"), GgufValue::String("yarn".into())));
                m.push((k("scaling.factor"), GgufValue::F32(*factor as f32)));
                m.push((k("scaling.original_context_length"), GgufValue::U32(*original_context as u32)));
                for (key, v) in [
                    ("scaling.yarn_ext_factor", ext_factor),
                    ("scaling.yarn_attn_factor", attn_factor),
                    ("scaling.yarn_beta_fast", beta_fast),
                    ("scaling.yarn_beta_slow", beta_slow),
                ] {
                    if let Some(v) = v {
                        m.push((k(key), GgufValue::F32(*v as f32)));
                    }
                }
            }
        }
        if let Some(t) = self.theta {
            m.push((k("freq_base"), GgufValue::F32(t as f32)));
        }
        m
    }

    /// Llama 3's frequency factors for heads of `dim`, in float32 as the converter's torch code
    /// computes them (`generate_extra_tensors`).
    pub fn llama3_factors(&self, dim: usize) -> Vec<f32> {
        let RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_context } = self.scaling else {
            return vec![];
        };
        let base = self.theta.unwrap_or(10000.0) as f32;
        let (factor, low, high, old) =
            (factor as f32, low_freq_factor as f32, high_freq_factor as f32, original_context as f32);
        let low_wavelen = (original_context as f64 / low_freq_factor) as f32;
        let high_wavelen = (original_context as f64 / high_freq_factor) as f32;
        (0..dim)
            .step_by(2)
            .map(|i| {
                let freq = 1.0f32 / base.powf(i as f32 / dim as f32);
                let wavelen = (2.0 * std::f64::consts::PI) as f32 / freq;
                if wavelen < high_wavelen {
                    1.0
                } else if wavelen > low_wavelen {
                    factor
                } else {
                    let smooth = (old / wavelen - low) / (high - low);
                    1.0 / ((1.0 - smooth) / factor + smooth)
                }
            })
            .collect()
    }
}

//! `microscale import`: a GGUF file back to a Hugging Face directory.
//!
//! Quantized tensors are dequantized exactly (the f32 values are precisely what llama.cpp computes
//! with), LLaMA's Q/K permutation is undone and GPT-2's Conv1D layout restored, so `convert` on the
//! result gives back the model llama.cpp ran, with the same tokenizer metadata.

use super::safetensors_writer::SafetensorsWriter;
use super::OutType;
use crate::arch::{apply_transform, gpt2, llama, Transform};
use crate::gguf::GgufFile;
use crate::quant::GgmlType;
use crate::source::gguf::GgufSource;
use crate::source::TensorSource;
use crate::tokenizer::{export, Vocab};
use crate::util::atomic::{write_file, TempDir};
use crate::util::progress::Progress;
use anyhow::{anyhow, bail, Result};
use serde_json::{json, Map, Value};
use std::path::Path;

/// One tensor to write: GGUF name, Hugging Face name, HF shape and the transform from GGUF layout.
struct Item {
    gguf: String,
    hf: String,
    shape: Vec<usize>,
    transform: Transform,
}

pub fn import(gguf_path: &Path, out_dir: &Path, dtype: OutType, quiet: bool) -> Result<()> {
    let file = GgufFile::open(gguf_path)?;
    let arch = file.architecture()?.to_string();
    let shapes: Vec<(String, Vec<u64>)> = file.tensors.iter().map(|t| (t.name.clone(), t.ne.clone())).collect();
    crate::arch::check::check_gguf_tensors(&file.metadata, &shapes)
        .map_err(|e| anyhow!("{}: {e:#}", gguf_path.display()))?;
    let vocab = Vocab::from_metadata(&file.metadata).map_err(|e| anyhow!("{}: {e:#}", gguf_path.display()))?;
    let (items, mut config) = match arch.as_str() {
        "llama" | "qwen2" | "qwen3" => plan_llama_family(&file, &arch)?,
        "gpt2" => plan_gpt2(&file)?,
        other => bail!(
            "{}: cannot import architecture {other:?} (supported: llama, qwen2, qwen3, gpt2)",
            gguf_path.display()
        ),
    };
    let staging = TempDir::create(out_dir)?;
    let dir = staging.path();
    let source = GgufSource::new(file);

    let st_type = dtype.weight_type();
    let headers: Vec<(String, Vec<usize>, GgmlType)> =
        items.iter().map(|i| (i.hf.clone(), i.shape.clone(), st_type)).collect();
    let mut writer = SafetensorsWriter::create(&dir.join("model.safetensors"), &headers)?;
    let total: u64 = items.iter().map(|i| i.shape.iter().product::<usize>() as u64).sum();
    let progress = Progress::new(total, "importing", quiet);
    for item in &items {
        progress.set_message(&item.hf);
        let data = source.read_f32(&item.gguf)?;
        let gguf_shape = source.tensor(&item.gguf).expect("planned from this file").shape.clone();
        let data = apply_transform(item.transform, data, &gguf_shape)?;
        let row = *item.shape.last().unwrap_or(&1);
        writer.write_tensor(&item.hf, &crate::quant::quantize(st_type, &data, row)?)?;
        source.release(&item.gguf);
        progress.inc(data.len() as u64);
    }
    progress.finish();
    writer.finish()?;

    let specials = export::write_hf_tokenizer(&vocab, dir)?;
    for (kind, id) in specials {
        config.insert(format!("{kind}_token_id"), json!(id));
    }
    config.insert(
        "torch_dtype".into(),
        json!(match dtype {
            OutType::F32 => "float32",
            OutType::F16 => "float16",
            OutType::Bf16 => "bfloat16",
        }),
    );
    let gen = super::general::generation_config(&source.file.metadata);
    if !gen.is_empty() {
        write_file(&dir.join("generation_config.json"), serde_json::to_string_pretty(&Value::Object(gen))?.as_bytes())?;
    }
    write_file(&dir.join("config.json"), serde_json::to_string_pretty(&Value::Object(config))?.as_bytes())?;
    write_provenance(gguf_path, dir)?;
    staging.commit()
}

/// The file beside config.json that names the GGUF a directory was imported from, so that a
/// study of the directory measures that file as shipped without being told (`sweep`, `shrink`).
pub const PROVENANCE_FILE: &str = "microscale_import.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct Provenance {
    /// The GGUF as given, made absolute.
    source: std::path::PathBuf,
    size_bytes: u64,
    sha256: String,
}

fn write_provenance(gguf_path: &Path, dir: &Path) -> Result<()> {
    let source = std::path::absolute(gguf_path)?;
    let p = Provenance {
        size_bytes: std::fs::metadata(gguf_path)?.len(),
        sha256: crate::util::digest::sha256_file(gguf_path)?,
        source,
    };
    write_file(&dir.join(PROVENANCE_FILE), serde_json::to_string_pretty(&p)?.as_bytes())
}

/// The GGUF `dir` was imported from, when `microscale import` recorded it and the file is still
/// there unchanged (at the recorded path, or beside the directory under its name, as after moving
/// both). None for any other directory, or when the file is gone or differs.
pub fn imported_from(dir: &Path) -> Option<std::path::PathBuf> {
    let text = std::fs::read_to_string(dir.join(PROVENANCE_FILE)).ok()?;
    let p: Provenance = serde_json::from_str(&text).ok()?;
    let beside = dir.parent().zip(p.source.file_name()).map(|(parent, name)| parent.join(name));
    std::iter::once(p.source.clone()).chain(beside).find(|path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == p.size_bytes)
            && crate::util::digest::sha256_file(path).is_ok_and(|h| h == p.sha256)
    })
}

fn need_u64(file: &GgufFile, key: &str) -> Result<u64> {
    file.get_u64(key).ok_or_else(|| anyhow!("{}: missing {key}", file.path.display()))
}

/// A float as its shortest f32 spelling, so config.json reads naturally and converts back exactly.
fn f32_json(x: f64) -> Value {
    let short: f64 = (x as f32).to_string().parse().unwrap_or(x);
    json!(short)
}

/// The Hugging Face class of a llama.cpp architecture in the LLaMA family.
fn llama_family_class(arch: &str) -> (&'static str, &'static str) {
    match arch {
        "qwen2" => ("Qwen2ForCausalLM", "qwen2"),
        "qwen3" => ("Qwen3ForCausalLM", "qwen3"),
        _ => ("LlamaForCausalLM", "llama"),
    }
}

/// `rope_scaling` for config.json from the `{arch}.rope.scaling.*` keys. Llama 3's scaling lives
/// in `rope_freqs.weight`, whose parameters the GGUF does not keep: refused rather than guessed.
fn rope_scaling_json(file: &GgufFile, arch: &str) -> Result<Option<Value>> {
    if file.tensor("rope_freqs.weight").is_some() {
        bail!(
            "{}: rope_freqs.weight (Llama 3 RoPE frequency factors) cannot be written back as config.json's rope_scaling: the GGUF does not keep its parameters",
            file.path.display()
        );
    }
    let k = |s: &str| format!("{arch}.rope.scaling.{s}");
    let Some(ty) = file.get_str(&k("type")) else { return Ok(None) };
    let factor = file
        .get_f64(&k("factor"))
        .ok_or_else(|| anyhow!("{}: {} without {}", file.path.display(), k("type"), k("factor")))?;
    Ok(match ty {
        "none" => None,
        "linear" => Some(json!({"rope_type": "linear", "factor": f32_json(factor)})),
        "yarn" => {
            let mut m = Map::new();
            m.insert("rope_type".into(), json!("yarn"));
            m.insert("factor".into(), f32_json(factor));
            m.insert("original_max_position_embeddings".into(), json!(need_u64(file, &k("original_context_length"))?));
            for (key, name) in [
                ("yarn_ext_factor", "extrapolation_factor"),
                ("yarn_attn_factor", "attention_factor"),
                ("yarn_beta_fast", "beta_fast"),
                ("yarn_beta_slow", "beta_slow"),
            ] {
                if let Some(v) = file.get_f64(&k(key)) {
                    m.insert(name.into(), f32_json(v));
                }
            }
            Some(Value::Object(m))
        }
        other => bail!("{}: {} = {other:?} has no config.json form in microscale", file.path.display(), k("type")),
    })
}

fn plan_llama_family(file: &GgufFile, arch: &str) -> Result<(Vec<Item>, Map<String, Value>)> {
    let key = |s: &str| format!("{arch}.{s}");
    let n_head = need_u64(file, &key("attention.head_count"))? as usize;
    let n_head_kv = file.get_u64(&key("attention.head_count_kv")).map_or(n_head, |v| v as usize);
    let n_embd = need_u64(file, &key("embedding_length"))? as usize;
    let head_dim = file.get_u64(&key("attention.key_length")).map(|v| v as usize);
    let tied = file.tensor("output.weight").is_none();
    let vocab_size = file
        .tensor("token_embd.weight")
        .map(|t| t.ne[1] as usize)
        .ok_or_else(|| anyhow!("{}: no token_embd.weight", file.path.display()))?;
    let rope_dim = head_dim.unwrap_or(n_embd / n_head);
    if let Some(rot) = file.get_u64(&key("rope.dimension_count")) {
        if rot as usize != rope_dim {
            bail!(
                "{}: partial rotary embeddings (rope.dimension_count {rot}) cannot be expressed in a Hugging Face config",
                file.path.display()
            );
        }
    }
    if head_dim.is_some() && file.get_u64(&key("attention.value_length")) != head_dim.map(|d| d as u64) {
        bail!(
            "{}: key and value heads of different widths cannot be expressed in a Hugging Face config",
            file.path.display()
        );
    }
    let rope_scaling = rope_scaling_json(file, arch)?;
    // Only llama's interleaved RoPE was permuted by the converter.
    let permuted = arch == "llama";
    let mut items = Vec::new();
    for t in &file.tensors {
        let hf = llama::hf_name(&t.name).ok_or_else(|| {
            anyhow!("{}: tensor {:?} has no Hugging Face name in this architecture", file.path.display(), t.name)
        })?;
        let transform = match (permuted, t.name.contains(".attn_q."), t.name.contains(".attn_k.")) {
            (true, true, _) => Transform::UnpermuteQk { n_head },
            (true, _, true) => Transform::UnpermuteQk { n_head: n_head_kv },
            _ => Transform::Copy,
        };
        items.push(Item { gguf: t.name.clone(), hf, shape: t.shape(), transform });
    }
    items.sort_by(|a, b| a.hf.cmp(&b.hf));
    let has = |suffix: &str| file.tensors.iter().any(|t| t.name.ends_with(suffix));
    // transformers' flags switch whole groups of biases on: a GGUF with part of a group has no
    // config.json form.
    if arch == "llama" {
        for group in [
            &[".attn_q.bias", ".attn_k.bias", ".attn_v.bias", ".attn_output.bias"][..],
            &[".ffn_gate.bias", ".ffn_up.bias", ".ffn_down.bias"][..],
        ] {
            if group.iter().any(|g| has(g)) && !group.iter().all(|g| has(g)) {
                bail!(
                    "{}: some but not all of the biases {} exist; LlamaForCausalLM has all or none",
                    file.path.display(),
                    group.join(", ")
                );
            }
        }
    }
    let (class, model_type) = llama_family_class(arch);
    let mut c = Map::new();
    c.insert("architectures".into(), json!([class]));
    c.insert("model_type".into(), json!(model_type));
    c.insert("hidden_act".into(), json!("silu"));
    c.insert("hidden_size".into(), json!(n_embd));
    c.insert("intermediate_size".into(), json!(need_u64(file, &key("feed_forward_length"))?));
    c.insert("num_hidden_layers".into(), json!(need_u64(file, &key("block_count"))?));
    c.insert("num_attention_heads".into(), json!(n_head));
    c.insert("num_key_value_heads".into(), json!(n_head_kv));
    if let Some(d) = head_dim {
        c.insert("head_dim".into(), json!(d));
    }
    c.insert("max_position_embeddings".into(), json!(need_u64(file, &key("context_length"))?));
    c.insert("rms_norm_eps".into(), f32_json(file.get_f64(&key("attention.layer_norm_rms_epsilon")).unwrap_or(1e-5)));
    c.insert("rope_theta".into(), f32_json(file.get_f64(&key("rope.freq_base")).unwrap_or(10000.0)));
    if let Some(r) = rope_scaling {
        c.insert("rope_scaling".into(), r);
    }
    if arch != "qwen2" {
        c.insert("attention_bias".into(), json!(has(".attn_q.bias")));
    }
    if arch == "llama" {
        c.insert("mlp_bias".into(), json!(has(".ffn_up.bias")));
    }
    c.insert("tie_word_embeddings".into(), json!(tied));
    c.insert("vocab_size".into(), json!(vocab_size));
    if let Some(name) = file.get_str("general.name") {
        c.insert("_name_or_path".into(), json!(name));
    }
    Ok((items, c))
}

fn plan_gpt2(file: &GgufFile) -> Result<(Vec<Item>, Map<String, Value>)> {
    let n_embd = need_u64(file, "gpt2.embedding_length")? as usize;
    let vocab_size = file
        .tensor("token_embd.weight")
        .map(|t| t.ne[1] as usize)
        .ok_or_else(|| anyhow!("{}: no token_embd.weight", file.path.display()))?;
    let mut items = Vec::new();
    for t in &file.tensors {
        if t.name == "output.weight" {
            continue; // tied to wte in GPT2LMHeadModel
        }
        let (hf, transpose) = gpt2::hf_name(&t.name)
            .ok_or_else(|| anyhow!("{}: tensor {:?} has no Hugging Face GPT-2 name", file.path.display(), t.name))?;
        let mut shape = t.shape();
        let transform = if transpose {
            shape.reverse();
            Transform::Transpose
        } else {
            Transform::Copy
        };
        items.push(Item { gguf: t.name.clone(), hf, shape, transform });
    }
    items.sort_by(|a, b| a.hf.cmp(&b.hf));
    let n_ctx = need_u64(file, "gpt2.context_length")?;
    let mut c = Map::new();
    c.insert("architectures".into(), json!(["GPT2LMHeadModel"]));
    c.insert("model_type".into(), json!("gpt2"));
    c.insert("activation_function".into(), json!("gelu_new"));
    c.insert("n_embd".into(), json!(n_embd));
    c.insert("n_head".into(), json!(need_u64(file, "gpt2.attention.head_count")?));
    c.insert("n_layer".into(), json!(need_u64(file, "gpt2.block_count")?));
    c.insert("n_ctx".into(), json!(n_ctx));
    c.insert("n_positions".into(), json!(n_ctx));
    c.insert("n_inner".into(), json!(need_u64(file, "gpt2.feed_forward_length")?));
    c.insert("layer_norm_epsilon".into(), f32_json(file.get_f64("gpt2.attention.layer_norm_epsilon").unwrap_or(1e-5)));
    c.insert("vocab_size".into(), json!(vocab_size));
    Ok((items, c))
}

/// The file a study measures as shipped when not told: the model itself when it is a GGUF, else
/// the GGUF its directory was imported from ([`imported_from`]).
pub fn as_shipped_default(model: &Path) -> Option<std::path::PathBuf> {
    if model.is_file() {
        return Some(model.to_path_buf());
    }
    imported_from(model)
}

//! A GGUF's tensors checked against its own hyper-parameters, as llama.cpp's loader checks them
//! (`create_tensor` / `check_tensor_dims`) — but before microscale writes anything, so that a file
//! whose shapes lie is refused with the tensor's name instead of producing a file llama.cpp refuses.
//!
//! Shapes here are in GGUF order (`ne[0]` first, the row length).

use crate::gguf::{meta_get, GgufValue, Metadata};
use anyhow::{anyhow, bail, Result};
use std::collections::BTreeMap;

/// Whether a tensor must be present.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Required,
    Optional,
}

/// The tensors an architecture's hyper-parameters imply: name → (ne, need).
type Expected = BTreeMap<String, (Vec<u64>, Need)>;

/// A hyper-parameter that is a count: present, an integer, positive, and small enough for ggml.
fn count(meta: &Metadata, key: &str) -> Result<u64> {
    let v = meta_get(meta, key).ok_or_else(|| anyhow!("missing {key}"))?;
    positive(key, v)
}

fn positive(key: &str, v: &GgufValue) -> Result<u64> {
    match v.as_u64() {
        Some(n) if n > 0 && n <= i32::MAX as u64 => Ok(n),
        Some(n) => bail!("{key} = {n} is impossible (a count must be at least 1)"),
        None => bail!("{key} must be a positive integer, not {}", v.display_short()),
    }
}

/// A per-layer count (a scalar for every layer, or one array entry per layer, as llama.cpp's
/// `get_key_or_arr` reads it). `allow_zero` lets a layer have none (deci's attention-free blocks).
fn per_layer(meta: &Metadata, key: &str, n_layer: usize, allow_zero: bool) -> Result<Vec<u64>> {
    let v = meta_get(meta, key).ok_or_else(|| anyhow!("missing {key}"))?;
    let values: Vec<u64> = match v {
        GgufValue::Array(_, items) => {
            if items.len() != n_layer {
                bail!("{key} has {} entries for {n_layer} blocks", items.len());
            }
            items
                .iter()
                .map(|x| match x.as_u64() {
                    Some(n) if n <= i32::MAX as u64 => Ok(n),
                    _ => bail!("{key} holds {}, not a count", x.display_short()),
                })
                .collect::<Result<_>>()?
        }
        scalar => vec![positive(key, scalar)?; n_layer],
    };
    if !allow_zero && values.contains(&0) {
        bail!("{key} is 0 for a block");
    }
    Ok(values)
}

fn optional_count(meta: &Metadata, key: &str) -> Result<Option<u64>> {
    match meta_get(meta, key) {
        None => Ok(None),
        Some(v) => positive(key, v).map(Some),
    }
}

/// The vocabulary size as the tokenizer metadata gives it (None when there is no token list).
fn n_vocab(meta: &Metadata) -> Option<u64> {
    meta_get(meta, "tokenizer.ggml.tokens").and_then(|v| v.as_array()).map(|a| a.len() as u64)
}

fn put(e: &mut Expected, name: String, ne: Vec<u64>, need: Need) {
    e.insert(name, (ne, need));
}

/// LLaMA-style models: `llama`, `deci` (per-layer widths), `qwen2` (q/k/v biases, attention as
/// wide as the embedding) and `qwen3` (RMS norms on q and k), with the tensors each of llama.cpp's
/// loaders creates.
fn llama_like(meta: &Metadata, arch: &str, vocab: Option<u64>) -> Result<Expected> {
    let k = |s: &str| format!("{arch}.{s}");
    let n_layer = count(meta, &k("block_count"))? as usize;
    let n_embd = count(meta, &k("embedding_length"))?;
    let (deci, qwen) = (arch == "deci", arch.starts_with("qwen"));
    let n_head = per_layer(meta, &k("attention.head_count"), n_layer, deci)?;
    let n_head_kv = match meta_get(meta, &k("attention.head_count_kv")) {
        Some(_) => per_layer(meta, &k("attention.head_count_kv"), n_layer, deci)?,
        None => n_head.clone(),
    };
    let n_ff = per_layer(meta, &k("feed_forward_length"), n_layer, deci)?;
    if qwen {
        // llama.cpp's qwen loaders size every block by hparams.n_ff() / n_head(): one value.
        for (key, v) in
            [("attention.head_count", &n_head), ("attention.head_count_kv", &n_head_kv), ("feed_forward_length", &n_ff)]
        {
            if v.iter().any(|x| *x != v[0]) {
                bail!(
                    "{} varies between blocks, which llama.cpp's {arch} cannot load (one width for every block)",
                    k(key)
                );
            }
        }
    }
    let first_heads = n_head.iter().copied().find(|&h| h > 0).unwrap_or(1);
    let head_k = match optional_count(meta, &k("attention.key_length"))? {
        Some(v) => v,
        None if n_embd % first_heads == 0 => n_embd / first_heads,
        None => bail!(
            "{} = {n_embd} is not a multiple of {} = {first_heads}",
            k("embedding_length"),
            k("attention.head_count")
        ),
    };
    let head_v = optional_count(meta, &k("attention.value_length"))?.unwrap_or(head_k);
    if arch == "qwen2" && first_heads * head_k != n_embd {
        bail!(
            "{} x {} = {} must equal {} = {n_embd} (llama.cpp's qwen2 attention is as wide as the embedding)",
            k("attention.head_count"),
            k("attention.key_length"),
            first_heads * head_k,
            k("embedding_length")
        );
    }
    let mut e = Expected::new();
    // 0: any vocabulary size, when the file carries no token list to compare with.
    let vocab_ne = vec![n_embd, vocab.unwrap_or(0)];
    put(&mut e, "token_embd.weight".into(), vocab_ne.clone(), Need::Required);
    put(&mut e, "output.weight".into(), vocab_ne, Need::Optional);
    put(&mut e, "output_norm.weight".into(), vec![n_embd], Need::Required);
    if !qwen {
        put(&mut e, "rope_freqs.weight".into(), vec![head_k / 2], Need::Optional);
    }
    for l in 0..n_layer {
        let b = |s: &str| crate::util::tensor_name::name(l, s);
        let (h, hkv, ff) = (n_head[l], n_head_kv[l], n_ff[l]);
        if h > 0 {
            if hkv == 0 || h % hkv != 0 {
                bail!("block {l}: {h} query heads cannot share {hkv} key/value heads");
            }
            put(&mut e, b("attn_norm.weight"), vec![n_embd], Need::Required);
            for (t, rows) in [("attn_q", h * head_k), ("attn_k", hkv * head_k), ("attn_v", hkv * head_v)] {
                put(&mut e, b(&format!("{t}.weight")), vec![n_embd, rows], Need::Required);
                put(&mut e, b(&format!("{t}.bias")), vec![rows], Need::Optional);
            }
            put(&mut e, b("attn_output.weight"), vec![h * head_v, n_embd], Need::Required);
            if !qwen {
                put(&mut e, b("attn_output.bias"), vec![n_embd], Need::Optional);
            }
            if arch == "qwen3" {
                put(&mut e, b("attn_q_norm.weight"), vec![head_k], Need::Required);
                put(&mut e, b("attn_k_norm.weight"), vec![head_k], Need::Required);
            }
        }
        if ff > 0 {
            put(&mut e, b("ffn_norm.weight"), vec![n_embd], Need::Required);
            put(&mut e, b("ffn_gate.weight"), vec![n_embd, ff], Need::Required);
            put(&mut e, b("ffn_up.weight"), vec![n_embd, ff], Need::Required);
            put(&mut e, b("ffn_down.weight"), vec![ff, n_embd], Need::Required);
            if !qwen {
                for (t, n) in [("ffn_gate", ff), ("ffn_up", ff), ("ffn_down", n_embd)] {
                    put(&mut e, b(&format!("{t}.bias")), vec![n], Need::Optional);
                }
            }
        }
    }
    Ok(e)
}

fn gpt2(meta: &Metadata, vocab: Option<u64>) -> Result<Expected> {
    let n_layer = count(meta, "gpt2.block_count")? as usize;
    let n_embd = count(meta, "gpt2.embedding_length")?;
    let n_head = count(meta, "gpt2.attention.head_count")?;
    let n_ff = count(meta, "gpt2.feed_forward_length")?;
    let n_ctx = count(meta, "gpt2.context_length")?;
    if n_embd % n_head != 0 {
        bail!("gpt2.embedding_length = {n_embd} is not a multiple of gpt2.attention.head_count = {n_head}");
    }
    let mut e = Expected::new();
    let vocab_ne = vec![n_embd, vocab.unwrap_or(0)];
    put(&mut e, "token_embd.weight".into(), vocab_ne.clone(), Need::Required);
    put(&mut e, "output.weight".into(), vocab_ne, Need::Optional);
    put(&mut e, "position_embd.weight".into(), vec![n_embd, n_ctx], Need::Required);
    put(&mut e, "output_norm.weight".into(), vec![n_embd], Need::Required);
    put(&mut e, "output_norm.bias".into(), vec![n_embd], Need::Required);
    for l in 0..n_layer {
        let b = |s: &str| crate::util::tensor_name::name(l, s);
        for (t, ne) in [
            ("attn_norm", vec![n_embd]),
            ("ffn_norm", vec![n_embd]),
            ("attn_qkv", vec![n_embd, 3 * n_embd]),
            ("attn_output", vec![n_embd, n_embd]),
            ("ffn_up", vec![n_embd, n_ff]),
            ("ffn_down", vec![n_ff, n_embd]),
        ] {
            let bias = vec![*ne.last().unwrap()];
            put(&mut e, b(&format!("{t}.weight")), ne, Need::Required);
            put(&mut e, b(&format!("{t}.bias")), bias, Need::Required);
        }
    }
    Ok(e)
}

/// Check every tensor of a GGUF (name, ne) against what its metadata implies: no tensor missing,
/// none unknown, every shape exact. Architectures microscale does not know are refused.
pub fn check_gguf_tensors(meta: &Metadata, tensors: &[(String, Vec<u64>)]) -> Result<()> {
    check_tensors(meta, n_vocab(meta), tensors)
}

/// [`check_gguf_tensors`] with the vocabulary size given (a conversion's plan, before the
/// tokenizer metadata exists).
pub fn check_tensors(meta: &Metadata, vocab: Option<u64>, tensors: &[(String, Vec<u64>)]) -> Result<()> {
    let arch = meta_get(meta, "general.architecture")
        .and_then(|v| v.as_str())
        .ok_or_else(|| anyhow!("no general.architecture key"))?;
    let expected = match arch {
        "llama" | "deci" | "qwen2" | "qwen3" => llama_like(meta, arch, vocab)?,
        "gpt2" => gpt2(meta, vocab)?,
        other => bail!(
            "architecture {other:?} is not supported (microscale handles llama, deci, qwen2, qwen3 and gpt2 GGUFs)"
        ),
    };
    for (name, ne) in tensors {
        let Some((want, _)) = expected.get(name) else {
            bail!("tensor {name:?} is not part of a {arch} model with these hyper-parameters");
        };
        let matches = want.len() == ne.len() && want.iter().zip(ne).all(|(w, n)| *w == 0 || w == n);
        if !matches {
            bail!("tensor {name:?} has shape {ne:?}, but the hyper-parameters imply {want:?}");
        }
    }
    for (name, (want, need)) in &expected {
        if *need == Need::Required && !tensors.iter().any(|(n, _)| n == name) {
            bail!("tensor {name:?} ({want:?}) is missing");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama_meta(n_ff: u32) -> Metadata {
        vec![
            ("general.architecture".into(), GgufValue::String("llama".into())),
            ("llama.block_count".into(), GgufValue::U32(1)),
            ("llama.embedding_length".into(), GgufValue::U32(64)),
            ("llama.feed_forward_length".into(), GgufValue::U32(n_ff)),
            ("llama.attention.head_count".into(), GgufValue::U32(4)),
            ("llama.attention.head_count_kv".into(), GgufValue::U32(2)),
        ]
    }

    fn llama_tensors() -> Vec<(String, Vec<u64>)> {
        [
            ("token_embd.weight", vec![64, 100]),
            ("output_norm.weight", vec![64]),
            ("blk.0.attn_norm.weight", vec![64]),
            ("blk.0.attn_q.weight", vec![64, 64]),
            ("blk.0.attn_k.weight", vec![64, 32]),
            ("blk.0.attn_v.weight", vec![64, 32]),
            ("blk.0.attn_output.weight", vec![64, 64]),
            ("blk.0.ffn_norm.weight", vec![64]),
            ("blk.0.ffn_gate.weight", vec![64, 128]),
            ("blk.0.ffn_up.weight", vec![64, 128]),
            ("blk.0.ffn_down.weight", vec![128, 64]),
        ]
        .into_iter()
        .map(|(n, s)| (n.to_string(), s))
        .collect()
    }

    #[test]
    fn a_consistent_model_passes_and_every_lie_is_named() {
        check_gguf_tensors(&llama_meta(128), &llama_tensors()).unwrap();
        let mut t = llama_tensors();
        t[10].1 = vec![127, 64];
        let e = check_gguf_tensors(&llama_meta(128), &t).unwrap_err().to_string();
        assert!(e.contains("blk.0.ffn_down.weight") && e.contains("[127, 64]") && e.contains("[128, 64]"), "{e}");
        let e = check_gguf_tensors(&llama_meta(0), &llama_tensors()).unwrap_err().to_string();
        assert!(e.contains("llama.feed_forward_length"), "{e}");
        let mut t = llama_tensors();
        t.pop();
        let e = check_gguf_tensors(&llama_meta(128), &t).unwrap_err().to_string();
        assert!(e.contains("blk.0.ffn_down.weight") && e.contains("missing"), "{e}");
        let mut t = llama_tensors();
        t.push(("blk.1.attn_q.weight".into(), vec![64, 64]));
        let e = check_gguf_tensors(&llama_meta(128), &t).unwrap_err().to_string();
        assert!(e.contains("blk.1.attn_q.weight") && e.contains("not part"), "{e}");
        let mut m = llama_meta(128);
        m[4].1 = GgufValue::U32(0);
        let e = check_gguf_tensors(&m, &llama_tensors()).unwrap_err().to_string();
        assert!(e.contains("head_count"), "{e}");
    }
}

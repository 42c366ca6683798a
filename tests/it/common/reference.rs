//! Independent reference forward passes (Hugging Face semantics) for LLaMA and
//! GPT-2 checkpoints stored as safetensors. Plain Rust, f64 arithmetic, clarity
//! over speed. Shares no code with `src/`.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors};
use serde_json::Value;

/// A tensor converted to f32.
#[derive(Debug, Clone)]
pub struct RefTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Loads every tensor of a HF checkpoint directory (single `model.safetensors`
/// or sharded via `model.safetensors.index.json`), converted to f32.
pub fn load_tensors(dir: &Path) -> Result<HashMap<String, RefTensor>> {
    let index = dir.join("model.safetensors.index.json");
    let files: Vec<String> = if index.exists() {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&index)?)?;
        let map = v["weight_map"].as_object().context("index.json has no weight_map")?;
        let mut f: Vec<String> = map
            .values()
            .map(|x| x.as_str().map(str::to_string).context("bad weight_map entry"))
            .collect::<Result<_>>()?;
        f.sort();
        f.dedup();
        f
    } else {
        vec!["model.safetensors".to_string()]
    };
    let mut out = HashMap::new();
    for f in files {
        let path = dir.join(&f);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let st = SafeTensors::deserialize(&bytes)?;
        for (name, view) in st.tensors() {
            let raw = view.data();
            let data: Vec<f32> = match view.dtype() {
                Dtype::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
                Dtype::F16 => raw.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
                Dtype::BF16 => raw.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
                Dtype::F64 => raw.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
                other => bail!("{name}: unsupported dtype {other:?}"),
            };
            let prev = out.insert(name.clone(), RefTensor { shape: view.shape().to_vec(), data });
            ensure!(prev.is_none(), "duplicate tensor {name}");
        }
    }
    Ok(out)
}

fn load_config(dir: &Path) -> Result<Value> {
    let p = dir.join("config.json");
    Ok(serde_json::from_str(&std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?)?)
}

fn cfg_usize(cfg: &Value, key: &str) -> Result<usize> {
    cfg[key].as_u64().map(|v| v as usize).with_context(|| format!("config.json: missing/invalid {key}"))
}

fn cfg_f64(cfg: &Value, key: &str, default: f64) -> f64 {
    cfg[key].as_f64().unwrap_or(default)
}

struct Weights(HashMap<String, RefTensor>);

impl Weights {
    /// Fetches a tensor and checks its shape.
    fn get(&self, name: &str, shape: &[usize]) -> Result<&[f32]> {
        let t = self.0.get(name).with_context(|| format!("missing tensor {name}"))?;
        ensure!(t.shape == shape, "{name}: shape {:?}, expected {:?}", t.shape, shape);
        Ok(&t.data)
    }

    /// The first dimension of a tensor (per-layer widths of pruned checkpoints come from shapes).
    fn rows(&self, name: &str) -> Result<usize> {
        Ok(self.0.get(name).with_context(|| format!("missing tensor {name}"))?.shape[0])
    }
}

// ---------------------------------------------------------------------------
// Math helpers (activations are f64).
// ---------------------------------------------------------------------------

/// nn.Linear: w is [out, in] row-major; y[o] = sum_i w[o, i] x[i].
fn linear(w: &[f32], x: &[f64], n_out: usize) -> Vec<f64> {
    let n_in = x.len();
    assert_eq!(w.len(), n_out * n_in);
    (0..n_out).map(|o| w[o * n_in..(o + 1) * n_in].iter().zip(x).map(|(a, b)| *a as f64 * b).sum()).collect()
}

/// HF Conv1D: w is [in, out] row-major; y[o] = sum_i x[i] w[i, o] + b[o].
fn conv1d(w: &[f32], b: &[f32], x: &[f64]) -> Vec<f64> {
    let n_in = x.len();
    let n_out = b.len();
    assert_eq!(w.len(), n_out * n_in);
    let mut y: Vec<f64> = b.iter().map(|v| *v as f64).collect();
    for (i, xi) in x.iter().enumerate() {
        let row = &w[i * n_out..(i + 1) * n_out];
        for (yo, wv) in y.iter_mut().zip(row) {
            *yo += xi * *wv as f64;
        }
    }
    y
}

fn rms_norm(x: &[f64], w: &[f32], eps: f64) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let r = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(v, g)| v * r * *g as f64).collect()
}

fn layer_norm(x: &[f64], w: &[f32], b: &[f32], eps: f64) -> Vec<f64> {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    let r = 1.0 / (var + eps).sqrt();
    x.iter().zip(w.iter().zip(b)).map(|(v, (g, bb))| (v - mean) * r * *g as f64 + *bb as f64).collect()
}

fn softmax_in_place(v: &mut [f64]) {
    let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut s = 0.0;
    for x in v.iter_mut() {
        *x = (*x - m).exp();
        s += *x;
    }
    for x in v.iter_mut() {
        *x /= s;
    }
}

fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

fn gelu_new(x: f64) -> f64 {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
}

/// Causal multi-head attention with GQA.
/// q[t]: n_head*hd, k[t], v[t]: n_head_kv*hd. Returns per-position n_head*hd.
fn causal_attention(
    q: &[Vec<f64>],
    k: &[Vec<f64>],
    v: &[Vec<f64>],
    n_head: usize,
    n_head_kv: usize,
    hd: usize,
) -> Vec<Vec<f64>> {
    let group = n_head / n_head_kv;
    let scale = 1.0 / (hd as f64).sqrt();
    let n = q.len();
    let mut out = vec![vec![0.0; n_head * hd]; n];
    for (t, out_t) in out.iter_mut().enumerate() {
        for h in 0..n_head {
            let kh = h / group;
            let qh = &q[t][h * hd..(h + 1) * hd];
            let mut scores: Vec<f64> = (0..=t)
                .map(|s| {
                    let ks = &k[s][kh * hd..(kh + 1) * hd];
                    qh.iter().zip(ks).map(|(a, b)| a * b).sum::<f64>() * scale
                })
                .collect();
            softmax_in_place(&mut scores);
            let o = &mut out_t[h * hd..(h + 1) * hd];
            for (s, p) in scores.iter().enumerate() {
                let vs = &v[s][kh * hd..(kh + 1) * hd];
                for (oi, vi) in o.iter_mut().zip(vs) {
                    *oi += p * vi;
                }
            }
        }
    }
    out
}

/// RoPE as transformers computes it (`ROPE_INIT_FUNCTIONS`): inverse frequencies per pair and
/// the factor cos/sin are scaled by.
pub struct Rope {
    pub inv_freq: Vec<f64>,
    pub attention_factor: f64,
}

/// The RoPE of a config: transformers 5's `rope_parameters` or transformers 4's top-level
/// `rope_theta` and `rope_scaling`; default, linear, llama3 and yarn types.
pub fn rope_from_config(cfg: &Value, hd: usize) -> Result<Rope> {
    let params = if cfg["rope_parameters"].is_object() { &cfg["rope_parameters"] } else { &cfg["rope_scaling"] };
    let base = params["rope_theta"].as_f64().or(cfg["rope_theta"].as_f64()).unwrap_or(10000.0);
    let rope_type = params["rope_type"].as_str().or(params["type"].as_str()).unwrap_or("default");
    let num = |k: &str| params[k].as_f64();
    let default: Vec<f64> = (0..hd / 2).map(|j| 1.0 / base.powf(2.0 * j as f64 / hd as f64)).collect();
    let original =
        params["original_max_position_embeddings"].as_f64().or(cfg["original_max_position_embeddings"].as_f64());
    Ok(match rope_type {
        "default" => Rope { inv_freq: default, attention_factor: 1.0 },
        "linear" => {
            let f = num("factor").context("linear rope without factor")?;
            Rope { inv_freq: default.iter().map(|x| x / f).collect(), attention_factor: 1.0 }
        }
        "llama3" => {
            // _compute_llama3_parameters
            let factor = num("factor").context("factor")?;
            let low = num("low_freq_factor").context("low_freq_factor")?;
            let high = num("high_freq_factor").context("high_freq_factor")?;
            let old = original.context("original_max_position_embeddings")?;
            let (low_wavelen, high_wavelen) = (old / low, old / high);
            let inv_freq = default
                .iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - low) / (high - low);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect();
            Rope { inv_freq, attention_factor: 1.0 }
        }
        "yarn" => {
            // _compute_yarn_parameters (no mscale keys, truncate = true)
            let factor = num("factor").context("factor")?;
            let old = original.or(cfg["max_position_embeddings"].as_f64()).context("original context")?;
            let beta_fast = num("beta_fast").unwrap_or(32.0);
            let beta_slow = num("beta_slow").unwrap_or(1.0);
            let attention_factor =
                num("attention_factor").unwrap_or(if factor <= 1.0 { 1.0 } else { 0.1 * factor.ln() + 1.0 });
            let d = hd as f64;
            let corr = |rot: f64| d * (old / (rot * 2.0 * std::f64::consts::PI)).ln() / (2.0 * base.ln());
            let low = corr(beta_fast).floor().max(0.0);
            let high = corr(beta_slow).ceil().min(d - 1.0);
            let high = if low == high { high + 0.001 } else { high };
            let inv_freq = default
                .iter()
                .enumerate()
                .map(|(j, &extrapolation)| {
                    let ramp = ((j as f64 - low) / (high - low)).clamp(0.0, 1.0);
                    let extrapolation_factor = 1.0 - ramp;
                    let interpolation = extrapolation / factor;
                    interpolation * (1.0 - extrapolation_factor) + extrapolation * extrapolation_factor
                })
                .collect();
            Rope { inv_freq, attention_factor }
        }
        other => bail!("rope type {other:?} not supported by the reference"),
    })
}

/// HF `rotate_half` RoPE applied in place to every head of `x`.
fn rope_in_place(x: &mut [f64], n_heads: usize, hd: usize, pos: usize, rope: &Rope) {
    let half = hd / 2;
    for h in 0..n_heads {
        let head = &mut x[h * hd..(h + 1) * hd];
        for j in 0..half {
            let ang = pos as f64 * rope.inv_freq[j];
            let (sin, cos) = ang.sin_cos();
            let (sin, cos) = (sin * rope.attention_factor, cos * rope.attention_factor);
            let a = head[j];
            let b = head[j + half];
            head[j] = a * cos - b * sin;
            head[j + half] = b * cos + a * sin;
        }
    }
}

/// Qwen3's per-head RMS norm of q or k (over head_dim, before RoPE).
fn head_rms_norm(x: &mut [f64], hd: usize, w: &[f32], eps: f64) {
    for head in x.chunks_mut(hd) {
        let normed = rms_norm(head, w, eps);
        head.copy_from_slice(&normed);
    }
}

fn add_bias(x: &mut [f64], b: Option<&[f32]>) {
    if let Some(b) = b {
        for (v, b) in x.iter_mut().zip(b) {
            *v += *b as f64;
        }
    }
}

fn to_f32_rows(rows: Vec<Vec<f64>>) -> Vec<Vec<f32>> {
    rows.into_iter().map(|r| r.into_iter().map(|v| v as f32).collect()).collect()
}

// ---------------------------------------------------------------------------
// LLaMA
// ---------------------------------------------------------------------------

/// One block's activations per token: its down projection's input and its output (the residual
/// stream after it).
#[allow(dead_code)] // not every test binary reads them
pub struct BlockTrace {
    pub down_input: Vec<Vec<f64>>,
    pub output: Vec<Vec<f64>>,
}

/// Logits `[n_tokens][vocab]` of a HF LLaMA-family checkpoint (LLaMA, Mistral, Qwen2, Qwen3),
/// causal, positions 0..n: biases and Qwen3's q/k norms are applied where the checkpoint has them.
pub fn llama_forward(dir: &Path, tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
    llama_run(dir, tokens, None)
}

/// [`llama_forward`]'s activations, block by block.
#[allow(dead_code)]
pub fn llama_trace(dir: &Path, tokens: &[u32]) -> Result<Vec<BlockTrace>> {
    let mut trace = Vec::new();
    llama_run(dir, tokens, Some(&mut trace))?;
    Ok(trace)
}

fn llama_run(dir: &Path, tokens: &[u32], mut trace: Option<&mut Vec<BlockTrace>>) -> Result<Vec<Vec<f32>>> {
    let cfg = load_config(dir)?;
    let w = Weights(load_tensors(dir)?);
    let e = cfg_usize(&cfg, "hidden_size")?;
    let n_layer = cfg_usize(&cfg, "num_hidden_layers")?;
    let n_head = cfg_usize(&cfg, "num_attention_heads")?;
    let n_head_kv = cfg_usize(&cfg, "num_key_value_heads").unwrap_or(n_head);
    let vocab = cfg_usize(&cfg, "vocab_size")?;
    let eps = cfg_f64(&cfg, "rms_norm_eps", 1e-6);
    let tied = cfg["tie_word_embeddings"].as_bool().unwrap_or(false);
    let hd = cfg_usize(&cfg, "head_dim").unwrap_or(e / n_head);
    ensure!(n_head.is_multiple_of(n_head_kv), "n_head % n_head_kv != 0");
    ensure!(hd.is_multiple_of(2), "odd head_dim");
    let rope = rope_from_config(&cfg, hd)?;
    let bias = |name: String| w.0.get(&name).map(|t| t.data.as_slice());

    let embed = w.get("model.embed_tokens.weight", &[vocab, e])?;
    let mut x: Vec<Vec<f64>> = tokens
        .iter()
        .map(|&t| {
            let t = t as usize;
            ensure!(t < vocab, "token {t} out of range");
            Ok(embed[t * e..(t + 1) * e].iter().map(|v| *v as f64).collect())
        })
        .collect::<Result<_>>()?;

    for l in 0..n_layer {
        let p = format!("model.layers.{l}");
        // Per-layer widths from the tensors themselves, so pruned checkpoints with unequal layers
        // (DeciLM-style) run too; equal to the config's for an ordinary checkpoint.
        let ff = w.rows(&format!("{p}.mlp.gate_proj.weight"))?;
        let n_head = w.rows(&format!("{p}.self_attn.q_proj.weight"))? / hd;
        let n_head_kv = w.rows(&format!("{p}.self_attn.k_proj.weight"))? / hd;
        ensure!(n_head_kv > 0 && n_head.is_multiple_of(n_head_kv), "layer {l}: {n_head} heads, {n_head_kv} KV heads");
        let ln1 = w.get(&format!("{p}.input_layernorm.weight"), &[e])?;
        let wq = w.get(&format!("{p}.self_attn.q_proj.weight"), &[n_head * hd, e])?;
        let wk = w.get(&format!("{p}.self_attn.k_proj.weight"), &[n_head_kv * hd, e])?;
        let wv = w.get(&format!("{p}.self_attn.v_proj.weight"), &[n_head_kv * hd, e])?;
        let wo = w.get(&format!("{p}.self_attn.o_proj.weight"), &[e, n_head * hd])?;
        let ln2 = w.get(&format!("{p}.post_attention_layernorm.weight"), &[e])?;
        let wg = w.get(&format!("{p}.mlp.gate_proj.weight"), &[ff, e])?;
        let wu = w.get(&format!("{p}.mlp.up_proj.weight"), &[ff, e])?;
        let wd = w.get(&format!("{p}.mlp.down_proj.weight"), &[e, ff])?;
        let b = |part: &str| bias(format!("{p}.{part}.bias"));
        let q_norm = w.0.get(&format!("{p}.self_attn.q_norm.weight")).map(|t| t.data.as_slice());
        let k_norm = w.0.get(&format!("{p}.self_attn.k_norm.weight")).map(|t| t.data.as_slice());

        let mut q = Vec::new();
        let mut k = Vec::new();
        let mut v = Vec::new();
        for (pos, xt) in x.iter().enumerate() {
            let h = rms_norm(xt, ln1, eps);
            let mut qt = linear(wq, &h, n_head * hd);
            let mut kt = linear(wk, &h, n_head_kv * hd);
            let mut vt = linear(wv, &h, n_head_kv * hd);
            add_bias(&mut qt, b("self_attn.q_proj"));
            add_bias(&mut kt, b("self_attn.k_proj"));
            add_bias(&mut vt, b("self_attn.v_proj"));
            if let Some(wn) = q_norm {
                head_rms_norm(&mut qt, hd, wn, eps);
            }
            if let Some(wn) = k_norm {
                head_rms_norm(&mut kt, hd, wn, eps);
            }
            rope_in_place(&mut qt, n_head, hd, pos, &rope);
            rope_in_place(&mut kt, n_head_kv, hd, pos, &rope);
            q.push(qt);
            k.push(kt);
            v.push(vt);
        }
        let att = causal_attention(&q, &k, &v, n_head, n_head_kv, hd);
        let mut block = BlockTrace { down_input: vec![], output: vec![] };
        for (xt, at) in x.iter_mut().zip(&att) {
            let mut o = linear(wo, at, e);
            add_bias(&mut o, b("self_attn.o_proj"));
            for (a, b) in xt.iter_mut().zip(&o) {
                *a += b;
            }
            let h = rms_norm(xt, ln2, eps);
            let mut g = linear(wg, &h, ff);
            let mut u = linear(wu, &h, ff);
            add_bias(&mut g, b("mlp.gate_proj"));
            add_bias(&mut u, b("mlp.up_proj"));
            let act: Vec<f64> = g.iter().zip(&u).map(|(g, u)| silu(*g) * u).collect();
            let mut d = linear(wd, &act, e);
            add_bias(&mut d, b("mlp.down_proj"));
            for (a, b) in xt.iter_mut().zip(&d) {
                *a += b;
            }
            if trace.is_some() {
                block.down_input.push(act);
                block.output.push(xt.clone());
            }
        }
        if let Some(t) = trace.as_deref_mut() {
            t.push(block);
        }
    }

    let norm = w.get("model.norm.weight", &[e])?;
    let head = if tied { embed } else { w.get("lm_head.weight", &[vocab, e])? };
    Ok(to_f32_rows(x.iter().map(|xt| linear(head, &rms_norm(xt, norm, eps), vocab)).collect()))
}

// ---------------------------------------------------------------------------
// GPT-2
// ---------------------------------------------------------------------------

/// Logits `[n_tokens][vocab]` of a HF GPT-2 checkpoint, causal, positions 0..n.
pub fn gpt2_forward(dir: &Path, tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
    let cfg = load_config(dir)?;
    let w = Weights(load_tensors(dir)?);
    let e = cfg_usize(&cfg, "n_embd")?;
    let n_head = cfg_usize(&cfg, "n_head")?;
    let n_layer = cfg_usize(&cfg, "n_layer")?;
    let n_pos = cfg_usize(&cfg, "n_positions")?;
    let vocab = cfg_usize(&cfg, "vocab_size")?;
    let ff = cfg_usize(&cfg, "n_inner").unwrap_or(4 * e);
    let eps = cfg_f64(&cfg, "layer_norm_epsilon", 1e-5);
    let act = cfg["activation_function"].as_str().unwrap_or("gelu_new");
    ensure!(act == "gelu_new", "unsupported activation {act}");
    ensure!(e.is_multiple_of(n_head), "n_embd % n_head != 0");
    ensure!(tokens.len() <= n_pos, "sequence longer than n_positions");
    let hd = e / n_head;

    let wte = w.get("transformer.wte.weight", &[vocab, e])?;
    let wpe = w.get("transformer.wpe.weight", &[n_pos, e])?;
    let mut x: Vec<Vec<f64>> = tokens
        .iter()
        .enumerate()
        .map(|(pos, &t)| {
            let t = t as usize;
            ensure!(t < vocab, "token {t} out of range");
            Ok((0..e).map(|i| wte[t * e + i] as f64 + wpe[pos * e + i] as f64).collect())
        })
        .collect::<Result<_>>()?;

    for l in 0..n_layer {
        let p = format!("transformer.h.{l}");
        let ln1w = w.get(&format!("{p}.ln_1.weight"), &[e])?;
        let ln1b = w.get(&format!("{p}.ln_1.bias"), &[e])?;
        let caw = w.get(&format!("{p}.attn.c_attn.weight"), &[e, 3 * e])?;
        let cab = w.get(&format!("{p}.attn.c_attn.bias"), &[3 * e])?;
        let cpw = w.get(&format!("{p}.attn.c_proj.weight"), &[e, e])?;
        let cpb = w.get(&format!("{p}.attn.c_proj.bias"), &[e])?;
        let ln2w = w.get(&format!("{p}.ln_2.weight"), &[e])?;
        let ln2b = w.get(&format!("{p}.ln_2.bias"), &[e])?;
        let fcw = w.get(&format!("{p}.mlp.c_fc.weight"), &[e, ff])?;
        let fcb = w.get(&format!("{p}.mlp.c_fc.bias"), &[ff])?;
        let mpw = w.get(&format!("{p}.mlp.c_proj.weight"), &[ff, e])?;
        let mpb = w.get(&format!("{p}.mlp.c_proj.bias"), &[e])?;

        let mut q = Vec::new();
        let mut k = Vec::new();
        let mut v = Vec::new();
        for xt in &x {
            let h = layer_norm(xt, ln1w, ln1b, eps);
            let qkv = conv1d(caw, cab, &h);
            q.push(qkv[..e].to_vec());
            k.push(qkv[e..2 * e].to_vec());
            v.push(qkv[2 * e..].to_vec());
        }
        let att = causal_attention(&q, &k, &v, n_head, n_head, hd);
        for (xt, at) in x.iter_mut().zip(&att) {
            let o = conv1d(cpw, cpb, at);
            for (a, b) in xt.iter_mut().zip(&o) {
                *a += b;
            }
            let h = layer_norm(xt, ln2w, ln2b, eps);
            let f: Vec<f64> = conv1d(fcw, fcb, &h).into_iter().map(gelu_new).collect();
            let m = conv1d(mpw, mpb, &f);
            for (a, b) in xt.iter_mut().zip(&m) {
                *a += b;
            }
        }
    }

    let lnfw = w.get("transformer.ln_f.weight", &[e])?;
    let lnfb = w.get("transformer.ln_f.bias", &[e])?;
    Ok(to_f32_rows(x.iter().map(|xt| linear(wte, &layer_norm(xt, lnfw, lnfb, eps), vocab)).collect()))
}

/// Row-wise softmax of logits (f64 internally), handy for comparisons.
pub fn softmax_rows(logits: &[Vec<f32>]) -> Vec<Vec<f32>> {
    logits
        .iter()
        .map(|r| {
            let mut v: Vec<f64> = r.iter().map(|x| *x as f64).collect();
            softmax_in_place(&mut v);
            v.into_iter().map(|x| x as f32).collect()
        })
        .collect()
}

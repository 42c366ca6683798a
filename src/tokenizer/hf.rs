//! Reading a Hugging Face tokenizer into llama.cpp's vocabulary terms, following
//! `convert_hf_to_gguf.py` (`get_vocab_base`, `_set_vocab_gpt2`) and gguf-py's `SpecialVocab`.

use super::{looks_special, pre, token_type, Vocab};
use crate::source::HfCheckpoint;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::collections::HashMap;
use tokenizers::Tokenizer;

/// An added token as tokenizer.json (or tokenizer_config.json's `added_tokens_decoder`) lists it.
struct AddedToken {
    id: u32,
    content: String,
    special: bool,
}

/// The raw pieces, from tokenizer.json or from GPT-2's vocab.json + merges.txt.
struct RawTokenizer {
    vocab: HashMap<String, u32>,
    merges: Vec<String>,
    added: Vec<AddedToken>,
    /// tokenizer.json as parsed (or as synthesised from vocab.json + merges.txt).
    json: Value,
    /// Whether `json` came from a tokenizer.json file (SpecialVocab reads ids only from one).
    json_is_file: bool,
    hf: Tokenizer,
}

/// Load the vocabulary of `ckpt`, padded to the model's `vocab_size`, for architecture `arch`.
pub fn load(ckpt: &HfCheckpoint, vocab_size: usize, arch: &str) -> Result<Vocab> {
    let dir = &ckpt.dir;
    let tok_config = ckpt.side_file("tokenizer_config.json")?.unwrap_or(Value::Null);
    let raw = read_raw(ckpt, &tok_config)?;
    if let Some(max) = raw.vocab.values().chain(raw.added.iter().map(|a| &a.id)).max() {
        if *max as usize >= vocab_size {
            bail!("{}: tokenizer has token id {max} but config.json says vocab_size {vocab_size}", dir.display());
        }
    }

    let mut reverse: HashMap<u32, &str> = raw.vocab.iter().map(|(t, &i)| (i, t.as_str())).collect();
    for a in &raw.added {
        reverse.insert(a.id, &a.content);
    }
    let mut tokens = Vec::with_capacity(vocab_size);
    let mut token_types = Vec::with_capacity(vocab_size);
    for i in 0..vocab_size as u32 {
        match reverse.get(&i) {
            None => {
                tokens.push(format!("[PAD{i}]"));
                token_types.push(token_type::UNUSED);
            }
            Some(tok) => match raw.added.iter().find(|a| a.id == i) {
                Some(a) if a.special || looks_special(tok) => {
                    tokens.push(tok.to_string());
                    token_types.push(token_type::CONTROL);
                }
                Some(_) => {
                    tokens.push(tok.replace('\u{2581}', " "));
                    token_types.push(token_type::USER_DEFINED);
                }
                None => {
                    tokens.push(tok.to_string());
                    token_types.push(token_type::NORMAL);
                }
            },
        }
    }

    let chkhsh = pre::chkhsh(&raw.hf)?;
    let pre = match pre::known_pre(&chkhsh) {
        Some(name) => name.to_string(),
        None => pre::by_structure(&raw.json).ok_or_else(|| {
            anyhow!(
                "{}: unrecognised BPE pre-tokenizer (chkhsh {chkhsh}); llama.cpp's converter does not know it either",
                dir.display()
            )
        })?,
    };

    let mut vocab = Vocab { pre, tokens, token_types, merges: raw.merges.clone(), ..Default::default() };
    vocab.add_space_prefix = tok_config.get("add_prefix_space").and_then(Value::as_bool);
    special_ids(&mut vocab, &raw, &tok_config, &ckpt.config, vocab_size);
    add_flags(&mut vocab, &raw.json, &tok_config);
    vocab.chat_template = chat_template(ckpt, &tok_config)?;
    // LlamaModel.set_vocab: SmolLM-style 49152-token vocabularies never get a BOS.
    if arch == "llama" && vocab_size == 49152 {
        match vocab.add_flags.iter_mut().find(|(k, _)| k == "bos") {
            Some(slot) => slot.1 = false,
            None => vocab.add_flags.push(("bos".into(), false)),
        }
    }
    Ok(vocab)
}

fn read_raw(ckpt: &HfCheckpoint, tok_config: &Value) -> Result<RawTokenizer> {
    let dir = &ckpt.dir;
    let json_path = dir.join("tokenizer.json");
    if json_path.exists() {
        let json = crate::source::hf::read_json(&json_path)?;
        let model = &json["model"];
        if model["type"].as_str() != Some("BPE") {
            bail!(
                "{}: tokenizer model {:?} is not supported (microscale handles byte-level BPE)",
                json_path.display(),
                model["type"]
            );
        }
        if model["byte_fallback"].as_bool() == Some(true) {
            bail!(
                "{}: SentencePiece-style BPE (byte_fallback) is not supported yet; microscale handles byte-level BPE",
                json_path.display()
            );
        }
        let vocab = parse_vocab(&model["vocab"]).with_context(|| format!("{}", json_path.display()))?;
        let merges = parse_merges(&model["merges"]).with_context(|| format!("{}", json_path.display()))?;
        let added = json["added_tokens"]
            .as_array()
            .map(|arr| {
                arr.iter()
                    .filter_map(|t| {
                        Some(AddedToken {
                            id: t["id"].as_u64()? as u32,
                            content: t["content"].as_str()?.to_string(),
                            special: t["special"].as_bool().unwrap_or(false),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let hf = Tokenizer::from_file(&json_path).map_err(|e| anyhow!("{}: {e}", json_path.display()))?;
        return Ok(RawTokenizer { vocab, merges, added, json, json_is_file: true, hf });
    }
    let (vocab_path, merges_path) = (dir.join("vocab.json"), dir.join("merges.txt"));
    if vocab_path.exists() && merges_path.exists() {
        let vocab = parse_vocab(&crate::source::hf::read_json(&vocab_path)?)
            .with_context(|| format!("{}", vocab_path.display()))?;
        let text =
            std::fs::read_to_string(&merges_path).with_context(|| format!("{}: cannot read", merges_path.display()))?;
        let merges: Vec<String> = text
            .lines()
            .enumerate()
            .filter(|(i, l)| !(*i == 0 && l.starts_with('#')) && l.split(' ').count() == 2)
            .map(|(_, l)| l.to_string())
            .collect();
        let added = gpt2_added_tokens(&vocab, tok_config);
        let json = super::export::tokenizer_json(&vocab, &merges, &added_as_export(&added), "gpt-2", None)?;
        let hf =
            Tokenizer::from_bytes(serde_json::to_vec(&json)?).map_err(|e| anyhow!("{}: {e}", vocab_path.display()))?;
        return Ok(RawTokenizer { vocab, merges, added, json, json_is_file: false, hf });
    }
    if dir.join("tokenizer.model").exists() {
        bail!("{}: SentencePiece tokenizer.model is not supported yet; microscale handles byte-level BPE (tokenizer.json or vocab.json + merges.txt)", dir.display());
    }
    bail!("{}: no tokenizer (tokenizer.json, or vocab.json + merges.txt)", dir.display())
}

fn added_as_export(added: &[AddedToken]) -> Vec<(u32, String, bool)> {
    added.iter().map(|a| (a.id, a.content.clone(), a.special)).collect()
}

/// GPT-2's slow tokenizer registers its special tokens (default `<|endoftext|>`) as added tokens.
fn gpt2_added_tokens(vocab: &HashMap<String, u32>, tok_config: &Value) -> Vec<AddedToken> {
    let mut added = Vec::new();
    if let Some(map) = tok_config.get("added_tokens_decoder").and_then(Value::as_object) {
        for (id, t) in map {
            if let (Ok(id), Some(content)) = (id.parse::<u32>(), t["content"].as_str()) {
                added.push(AddedToken {
                    id,
                    content: content.into(),
                    special: t["special"].as_bool().unwrap_or(false),
                });
            }
        }
        return added;
    }
    let mut names: Vec<String> = ["bos_token", "eos_token", "unk_token", "pad_token"]
        .iter()
        .filter_map(|k| token_content(tok_config.get(*k)?))
        .collect();
    if names.is_empty() {
        names.push("<|endoftext|>".into());
    }
    for n in names {
        if let Some(&id) = vocab.get(&n) {
            if !added.iter().any(|a: &AddedToken| a.id == id) {
                added.push(AddedToken { id, content: n, special: true });
            }
        }
    }
    added
}

fn parse_vocab(v: &Value) -> Result<HashMap<String, u32>> {
    let obj = v.as_object().ok_or_else(|| anyhow!("the vocabulary is not a JSON object"))?;
    obj.iter()
        .map(|(t, id)| Ok((t.clone(), id.as_u64().ok_or_else(|| anyhow!("token {t:?} has a non-integer id"))? as u32)))
        .collect()
}

/// Merges as `"a b"`: tokenizer.json holds strings, or (newer files) pairs whose parts may contain a
/// literal space, which the converter writes as `Ġ`.
fn parse_merges(v: &Value) -> Result<Vec<String>> {
    let Some(arr) = v.as_array() else { return Ok(vec![]) };
    arr.iter()
        .map(|m| match m {
            Value::String(s) => Ok(s.clone()),
            Value::Array(pair) if pair.len() == 2 => {
                let part =
                    |p: &Value| p.as_str().map(|s| s.replace(' ', "\u{120}")).ok_or_else(|| anyhow!("bad merge {m}"));
                Ok(format!("{} {}", part(&pair[0])?, part(&pair[1])?))
            }
            other => bail!("bad merge {other}"),
        })
        .collect()
}

fn token_content(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// SpecialVocab: ids named in tokenizer_config.json (looked up among tokenizer.json's added
/// tokens), then `*_token_id` from config.json for the kinds still missing.
fn special_ids(vocab: &mut Vocab, raw: &RawTokenizer, tok_config: &Value, config: &Value, n_vocab: usize) {
    let mut found: Vec<(String, u32)> = Vec::new();
    let has_json_added =
        raw.json_is_file && raw.json.get("added_tokens").is_some_and(|a| a.as_array().is_some_and(|a| !a.is_empty()));
    for (kind, _) in super::SPECIAL_KINDS {
        let Some(content) = tok_config.get(format!("{kind}_token")).and_then(token_content) else { continue };
        if !has_json_added {
            continue;
        }
        if let Some(a) = raw.added.iter().find(|a| a.content == content) {
            if (a.id as usize) < n_vocab {
                found.push((kind.to_string(), a.id));
            }
        }
    }
    let fallback = |found: &mut Vec<(String, u32)>, kind: &str, from: &str| {
        if !found.iter().any(|(k, _)| k == kind) {
            if let Some(id) = found.iter().find(|(k, _)| k == from).map(|(_, id)| *id) {
                found.push((kind.to_string(), id));
            }
        }
    };
    fallback(&mut found, "bos", "cls");
    fallback(&mut found, "eos", "sep");
    for (kind, _) in super::SPECIAL_KINDS {
        if found.iter().any(|(k, _)| k == kind) {
            continue;
        }
        let id = config.get(format!("{kind}_token_id")).and_then(Value::as_u64);
        if let Some(id) = id.filter(|&id| (id as usize) < n_vocab) {
            found.push((kind.to_string(), id as u32));
        }
    }
    vocab.special = found;
}

/// add_bos/add_eos/add_sep: from tokenizer.json's post-processor, overridden by tokenizer_config.json.
fn add_flags(vocab: &mut Vocab, json: &Value, tok_config: &Value) {
    let mut flags: Vec<(String, bool)> = Vec::new();
    let set = |flags: &mut Vec<(String, bool)>, k: &str, v: bool| match flags.iter_mut().find(|(x, _)| x == k) {
        Some(slot) => slot.1 = v,
        None => flags.push((k.to_string(), v)),
    };
    let post = &json["post_processor"];
    let processors: Vec<&Value> = match post["type"].as_str() {
        Some("Sequence") => post["processors"].as_array().map(|a| a.iter().collect()).unwrap_or_default(),
        Some(_) => vec![post],
        None => vec![],
    };
    let bos = vocab.special_id("bos");
    let cls = vocab.special_id("cls");
    let eos = vocab.special_id("eos");
    for p in processors {
        match p["type"].as_str() {
            Some("RobertaProcessing") => {
                set(&mut flags, "bos", true);
                set(&mut flags, "eos", true);
                set(&mut flags, "sep", true);
            }
            Some("TemplateProcessing") => {
                let single = p["single"].as_array().cloned().unwrap_or_default();
                let special_id = |item: &Value| -> Option<u32> {
                    let tok = item["SpecialToken"]["id"].as_str()?;
                    p["special_tokens"][tok]["ids"][0].as_u64().map(|x| x as u32)
                };
                if single.len() > 1 {
                    if let Some(id) = special_id(&single[0]) {
                        set(&mut flags, "bos", Some(id) == bos || Some(id) == cls);
                    }
                }
                if let Some(id) = single.last().and_then(special_id) {
                    set(&mut flags, "eos", Some(id) == eos);
                }
            }
            _ => {}
        }
    }
    for (kind, _) in super::SPECIAL_KINDS {
        if let Some(v) = tok_config.get(format!("add_{kind}_token")).and_then(Value::as_bool) {
            set(&mut flags, kind, v);
        }
    }
    vocab.add_flags = flags;
}

fn chat_template(ckpt: &HfCheckpoint, tok_config: &Value) -> Result<Option<String>> {
    if let Some(t) = tok_config.get("chat_template").and_then(Value::as_str) {
        return Ok(Some(t.to_string()));
    }
    let jinja = ckpt.dir.join("chat_template.jinja");
    if jinja.exists() {
        return Ok(Some(std::fs::read_to_string(&jinja).with_context(|| format!("{}: cannot read", jinja.display()))?));
    }
    Ok(ckpt.side_file("chat_template.json")?.and_then(|j| j["chat_template"].as_str().map(str::to_string)))
}

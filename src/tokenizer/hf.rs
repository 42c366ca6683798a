//! Reading a Hugging Face tokenizer into llama.cpp's vocabulary terms, following
//! `convert_hf_to_gguf.py` (`set_vocab` of each architecture: `_set_vocab_sentencepiece`,
//! `_set_vocab_llama_hf`, `_set_vocab_gpt2`) and gguf-py's `SpecialVocab` ([`special`]).

use super::{looks_special, pre, special, spm, token_type, Vocab};
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

/// How an architecture's converter class reads its vocabulary (`set_vocab`), in the order it tries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VocabStyle {
    /// `LlamaModel.set_vocab` (LLaMA, Mistral): `add_prefix_space`, then SentencePiece, then a
    /// SentencePiece-style tokenizer.json (`LlamaHfVocab`), then byte-level BPE; 49152-token
    /// vocabularies (SmolLM, Granite) never add a BOS.
    Llama,
    /// `Qwen2Model.set_vocab`: SentencePiece, else byte-level BPE.
    Qwen,
    /// `GPT2Model`: byte-level BPE.
    Gpt2,
}

/// Load the vocabulary of `ckpt`, padded to the model's `vocab_size`.
pub fn load(ckpt: &HfCheckpoint, vocab_size: usize, style: VocabStyle) -> Result<Vocab> {
    let tok_config = ckpt.side_file("tokenizer_config.json")?;
    let spm = ckpt.dir.join("tokenizer.model");
    let mut vocab = if style != VocabStyle::Gpt2 && spm.is_file() {
        load_sentencepiece(ckpt, vocab_size, tok_config.as_ref())?
    } else if style == VocabStyle::Llama && is_llama_hf(ckpt)? {
        load_llama_hf(ckpt, vocab_size, tok_config.as_ref())?
    } else {
        load_bpe(ckpt, vocab_size, tok_config.as_ref())?
    };
    if style == VocabStyle::Llama {
        vocab.add_space_prefix = tok_config.as_ref().and_then(|c| c.get("add_prefix_space")).and_then(Value::as_bool);
        // LlamaModel.set_vocab: 49152-token vocabularies (SmolLM, Granite) never get a BOS.
        if vocab_size == 49152 {
            match vocab.add_flags.iter_mut().find(|(k, _)| k == "bos") {
                Some(slot) => slot.1 = false,
                None => vocab.add_flags.push(("bos".into(), false)),
            }
        }
    }
    Ok(vocab)
}

/// SpecialVocab's part of a vocabulary: special ids, add flags, chat template.
fn apply_specials(
    vocab: &mut Vocab,
    ckpt: &HfCheckpoint,
    tok_json: Option<&Value>,
    tok_config: Option<&Value>,
) -> Result<()> {
    let s = special::special_vocab(
        &special::Files {
            tokenizer_json: tok_json,
            tokenizer_config: tok_config,
            config: &ckpt.config,
            n_vocab: vocab.tokens.len(),
        },
        &[],
    );
    vocab.special = s.ids;
    vocab.add_flags = s.add;
    vocab.chat_template = match tok_config {
        Some(c) => chat_template(ckpt, c)?,
        None => None,
    };
    Ok(())
}

/// `_set_vocab_sentencepiece`.
fn load_sentencepiece(ckpt: &HfCheckpoint, vocab_size: usize, tok_config: Option<&Value>) -> Result<Vocab> {
    let path = ckpt.dir.join("tokenizer.model");
    let model = spm::read_model(&path)?;
    let added = ckpt.side_file("added_tokens.json")?;
    let t = spm::vocab_tokens(&model, vocab_size, added.as_ref(), tok_config)?;
    let mut vocab = Vocab {
        model: "llama".into(),
        pre: "default".into(),
        tokens: t.tokens,
        scores: Some(t.scores),
        token_types: t.types,
        ..Default::default()
    };
    let tok_json = ckpt.side_file("tokenizer.json")?;
    apply_specials(&mut vocab, ckpt, tok_json.as_ref(), tok_config)?;
    Ok(vocab)
}

/// `LlamaHfVocab`'s test: a tokenizer.json holding a SentencePiece-style BPE (byte fallback, a
/// Sequence decoder); a LLaMA-3-style one (merges ignored, no byte fallback) is byte-level BPE.
fn is_llama_hf(ckpt: &HfCheckpoint) -> Result<bool> {
    let Some(json) = ckpt.side_file("tokenizer.json")? else { return Ok(false) };
    let model = &json["model"];
    let bpe = model["type"].as_str() == Some("BPE");
    let llama3 =
        bpe && model["ignore_merges"].as_bool() == Some(true) && !model["byte_fallback"].as_bool().unwrap_or(true);
    Ok(!llama3
        && bpe
        && model["byte_fallback"].as_bool() == Some(true)
        && json["decoder"]["type"].as_str() == Some("Sequence"))
}

/// `_set_vocab_llama_hf`: a SentencePiece vocabulary known only from its tokenizer.json.
fn load_llama_hf(ckpt: &HfCheckpoint, vocab_size: usize, tok_config: Option<&Value>) -> Result<Vocab> {
    let path = ckpt.dir.join("tokenizer.json");
    let json = crate::source::hf::read_json(&path)?;
    let base = parse_vocab(&json["model"]["vocab"]).with_context(|| format!("{}", path.display()))?;
    let added: Vec<AddedToken> = added_tokens_of(&json);
    // transformers' all_special_tokens: the tokenizer_config's special tokens and the added
    // tokens marked special.
    let mut special_texts: Vec<String> =
        ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"]
            .iter()
            .filter_map(|k| tok_config.and_then(|c| c.get(*k)).and_then(token_content))
            .collect();
    special_texts.extend(added.iter().filter(|a| a.special).map(|a| a.content.clone()));
    let mut reverse: Vec<Option<&str>> = vec![None; base.len()];
    for (t, &i) in &base {
        if let Some(slot) = reverse.get_mut(i as usize) {
            *slot = Some(t.as_str());
        }
    }
    let n_base = base.len();
    let (mut tokens, mut scores, mut types) = (Vec::new(), Vec::new(), Vec::new());
    let type_of = |id: u32, text: &str| {
        let is_byte = text.len() == 6
            && text.starts_with("<0x")
            && text.ends_with('>')
            && u8::from_str_radix(&text[3..5], 16).is_ok();
        if is_byte {
            token_type::BYTE
        } else if special_texts
            .iter()
            .any(|s| base.get(s) == Some(&id) || added.iter().any(|a| a.content == *s && a.id == id))
        {
            token_type::CONTROL
        } else {
            token_type::NORMAL
        }
    };
    for (i, t) in reverse.iter().enumerate() {
        let t = t.ok_or_else(|| anyhow!("{}: no token with id {i}", path.display()))?;
        if added.iter().any(|a| a.id as usize == i) {
            continue;
        }
        tokens.push(t.to_string());
        scores.push(-1000.0);
        types.push(type_of(i as u32, t));
    }
    let mut extra: Vec<&AddedToken> = added.iter().filter(|a| a.id as usize >= n_base).collect();
    extra.sort_by_key(|a| a.id);
    for a in extra {
        tokens.push(a.content.clone());
        scores.push(-1000.0);
        types.push(if special_texts.contains(&a.content) { type_of(a.id, "") } else { token_type::USER_DEFINED });
    }
    if tokens.len() != vocab_size {
        bail!("{}: {} tokens, but config.json says vocab_size {vocab_size}", path.display(), tokens.len());
    }
    let mut vocab = Vocab {
        model: "llama".into(),
        pre: "default".into(),
        tokens,
        scores: Some(scores),
        token_types: types,
        ..Default::default()
    };
    apply_specials(&mut vocab, ckpt, Some(&json), tok_config)?;
    Ok(vocab)
}

/// `_set_vocab_gpt2`: byte-level BPE.
fn load_bpe(ckpt: &HfCheckpoint, vocab_size: usize, tok_config: Option<&Value>) -> Result<Vocab> {
    let dir = &ckpt.dir;
    let null = Value::Null;
    let raw = read_raw(ckpt, tok_config.unwrap_or(&null))?;
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
    let mut vocab =
        Vocab { model: "gpt2".into(), pre, tokens, token_types, merges: raw.merges.clone(), ..Default::default() };
    let tok_json = raw.json_is_file.then_some(&raw.json);
    apply_specials(&mut vocab, ckpt, tok_json, tok_config)?;
    Ok(vocab)
}

fn added_tokens_of(json: &Value) -> Vec<AddedToken> {
    json["added_tokens"]
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
        .unwrap_or_default()
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
                "{}: a SentencePiece-style BPE tokenizer (byte_fallback) for an architecture that reads byte-level BPE only",
                json_path.display()
            );
        }
        let vocab = parse_vocab(&model["vocab"]).with_context(|| format!("{}", json_path.display()))?;
        let merges = parse_merges(&model["merges"]).with_context(|| format!("{}", json_path.display()))?;
        let added = added_tokens_of(&json);
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
    bail!("{}: no tokenizer (tokenizer.model, tokenizer.json, or vocab.json + merges.txt)", dir.display())
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

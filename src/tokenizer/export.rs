//! Writing a vocabulary as Hugging Face tokenizer files (`tokenizer.json`, `tokenizer_config.json`,
//! `special_tokens_map.json`), so that a GGUF-only model becomes an ordinary checkpoint whose
//! tokenizer the `tokenizers` library, transformers and our own converter all read back identically.

use super::{token_type, Vocab};
use crate::util::atomic::write_file;
use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;

/// The Hugging Face `pre_tokenizer` (and `normalizer`) whose splits equal llama.cpp's regexes for `pre`.
pub fn pre_tokenizer_for(pre: &str) -> Result<(Value, Value)> {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split =
        |regex: &str| json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false});
    Ok(match pre {
        "gpt-2" => (Value::Null, byte_level(true)),
        "smollm" => (
            Value::Null,
            json!({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        ),
        "llama-bpe" | "llama3" => (
            Value::Null,
            json!({"type": "Sequence", "pretokenizers": [
                split(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
                byte_level(false)]}),
        ),
        "qwen2" => (
            json!({"type": "NFC"}),
            json!({"type": "Sequence", "pretokenizers": [
                split(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
                byte_level(false)]}),
        ),
        other => bail!("pre-tokenizer {other:?} has no Hugging Face equivalent in microscale yet (supported: gpt-2, smollm, llama-bpe, qwen2)"),
    })
}

/// A complete tokenizer.json for a byte-level BPE vocabulary.
///
/// `added` lists (id, content, special). `bos` makes the post-processor prepend that token.
pub fn tokenizer_json(
    vocab: &HashMap<String, u32>,
    merges: &[String],
    added: &[(u32, String, bool)],
    pre: &str,
    bos: Option<(&str, u32)>,
) -> Result<Value> {
    let (normalizer, pre_tokenizer) = pre_tokenizer_for(pre)?;
    let mut entries: Vec<(&String, &u32)> = vocab.iter().collect();
    entries.sort_by_key(|(_, &id)| id);
    let vocab_obj: serde_json::Map<String, Value> =
        entries.into_iter().map(|(t, &id)| (t.clone(), json!(id))).collect();
    let byte_level_post =
        json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true});
    let post_processor = match bos {
        Some((tok, id)) => json!({"type": "Sequence", "processors": [
            byte_level_post,
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": tok, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"SpecialToken": {"id": tok, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                      {"SpecialToken": {"id": tok, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {tok: {"id": tok, "ids": [id], "tokens": [tok]}}}]}),
        None => byte_level_post,
    };
    let added_tokens: Vec<Value> = added
        .iter()
        .map(|(id, content, special)| {
            json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": !special, "special": special})
        })
        .collect();
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": matches!(pre, "llama-bpe" | "llama3"),
            "vocab": vocab_obj, "merges": merges,
        }
    }))
}

/// Write tokenizer.json, tokenizer_config.json and special_tokens_map.json for `vocab` into `dir`.
/// Returns the special token ids for config.json (`bos_token_id`, …).
pub fn write_hf_tokenizer(vocab: &Vocab, dir: &Path) -> Result<Vec<(String, u32)>> {
    let mut map = HashMap::new();
    let mut added = Vec::new();
    for (id, (tok, &ty)) in vocab.tokens.iter().zip(&vocab.token_types).enumerate() {
        let id = id as u32;
        match ty {
            token_type::UNUSED => continue, // [PADn] fillers: regenerated from vocab_size
            token_type::CONTROL => added.push((id, tok.clone(), true)),
            token_type::USER_DEFINED => added.push((id, tok.clone(), false)),
            _ => {}
        }
        map.insert(tok.clone(), id);
    }
    let add_bos = vocab.add_flag("bos").unwrap_or(false);
    let bos = vocab.special_id("bos").map(|id| (vocab.tokens[id as usize].as_str(), id));
    let json = tokenizer_json(&map, &vocab.merges, &added, &vocab.pre, if add_bos { bos } else { None })?;
    write_file(&dir.join("tokenizer.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;

    let mut config = serde_json::Map::new();
    let mut special_map = serde_json::Map::new();
    for (kind, id) in &vocab.special {
        let tok = &vocab.tokens[*id as usize];
        // SpecialVocab finds ids by content among the added tokens; others go to config.json only.
        if added.iter().any(|(aid, _, _)| aid == id) {
            config.insert(format!("{kind}_token"), json!(tok));
            special_map.insert(format!("{kind}_token"), json!(tok));
        }
    }
    for (kind, v) in &vocab.add_flags {
        config.insert(format!("add_{kind}_token"), json!(v));
    }
    if let Some(v) = vocab.add_space_prefix {
        config.insert("add_prefix_space".into(), json!(v));
    }
    if let Some(t) = &vocab.chat_template {
        config.insert("chat_template".into(), json!(t));
    }
    config.insert("clean_up_tokenization_spaces".into(), json!(false));
    config.insert("tokenizer_class".into(), json!("GPT2Tokenizer"));
    let decoder: serde_json::Map<String, Value> = added
        .iter()
        .map(|(id, content, special)| {
            (
                id.to_string(),
                json!({"content": content, "lstrip": false, "normalized": !special, "rstrip": false,
                                    "single_word": false, "special": special}),
            )
        })
        .collect();
    config.insert("added_tokens_decoder".into(), Value::Object(decoder));
    write_file(&dir.join("tokenizer_config.json"), serde_json::to_string_pretty(&Value::Object(config))?.as_bytes())?;
    write_file(
        &dir.join("special_tokens_map.json"),
        serde_json::to_string_pretty(&Value::Object(special_map))?.as_bytes(),
    )?;
    Ok(vocab.special.clone())
}

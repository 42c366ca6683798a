//! Writing a vocabulary as Hugging Face tokenizer files (`tokenizer.json`, `tokenizer_config.json`,
//! `special_tokens_map.json`, and `tokenizer.model` for SentencePiece), so that a GGUF-only model
//! becomes an ordinary checkpoint whose tokenizer the `tokenizers` library, transformers and our
//! own converter all read back identically.

use super::{spm, token_type, Vocab};
use crate::util::atomic::write_file;
use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;

/// The Hugging Face `normalizer` and `pre_tokenizer` of the tokenizers llama.cpp names `pre`, as
/// those models' own tokenizer.json files define them, so that an exported tokenizer splits text
/// exactly as the original (and as llama.cpp's regexes for `pre`) and hashes to the same chkhsh.
pub fn pre_tokenizer_for(pre: &str) -> Result<(Value, Value)> {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split =
        |regex: &str| json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false});
    let digits = |individual: bool| json!({"type": "Digits", "individual_digits": individual});
    let seq = |parts: Vec<Value>| json!({"type": "Sequence", "pretokenizers": parts});
    let nfc = json!({"type": "NFC"});
    let qwen2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    let qwen35 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    let llama3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    let cjk = "[\u{4e00}-\u{9fa5}\u{800}-\u{4e00}\u{ac00}-\u{d7ff}]+";
    Ok(match pre {
        "gpt-2" => (Value::Null, byte_level(true)),
        // GPT-NeoX-20B's tokenizer (MPT, OLMo).
        "mpt" | "olmo" => (nfc, byte_level(true)),
        "smollm" | "starcoder" | "refact" => (Value::Null, seq(vec![digits(true), byte_level(true)])),
        "command-r" => (nfc, seq(vec![digits(true), byte_level(true)])),
        "llama-bpe" | "llama3" => (Value::Null, seq(vec![split(llama3), byte_level(false)])),
        "qwen2" => (nfc, seq(vec![split(qwen2), byte_level(false)])),
        // Qwen3.5 dropped Qwen2's NFC normalizer.
        "qwen35" => (Value::Null, seq(vec![split(qwen35), byte_level(false)])),
        "falcon" => (
            Value::Null,
            seq(vec![
                json!({"type": "Punctuation", "behavior": "Contiguous"}),
                json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}),
                digits(false),
                split("[0-9][0-9][0-9]"),
            ]),
        ),
        "deepseek-coder" => (
            json!({"type": "Sequence", "normalizers": []}),
            seq(vec![split("[\r\n]"), split(r"\s?\p{L}+"), split(r"\s?\p{P}+"), split(cjk), digits(true), byte_level(false)]),
        ),
        "deepseek-llm" => (
            json!({"type": "Sequence", "normalizers": []}),
            seq(vec![
                split("[\r\n]"),
                split("\\s?[A-Za-z\u{b5}\u{c0}-\u{d6}\u{d8}-\u{f6}\u{f8}-\u{1ba}\u{1bc}-\u{1bf}\u{1c4}-\u{293}\u{295}-\u{2af}\u{370}-\u{373}\u{376}\u{377}\u{37b}-\u{37d}\u{37f}\u{386}\u{388}-\u{38a}\u{38c}\u{38e}-\u{3a1}\u{3a3}-\u{3f5}\u{3f7}-\u{481}\u{48a}-\u{52f}\u{531}-\u{556}\u{10a0}-\u{10c5}\u{13a0}-\u{13f5}\u{13f8}-\u{13fd}\u{1c90}-\u{1cba}\u{1cbd}-\u{1cbf}\u{1d00}-\u{1d2b}\u{1d6b}-\u{1d77}\u{1d79}-\u{1d9a}\u{1e00}-\u{1f15}\u{1f18}-\u{1f1d}\u{1f20}-\u{1f45}\u{1f48}-\u{1f4d}\u{1f50}-\u{1f57}\u{1f59}\u{1f5b}\u{1f5d}\u{1f5f}-\u{1f7d}\u{1f80}-\u{1fb4}\u{1fb6}-\u{1fbc}\u{1fbe}\u{1fc2}-\u{1fc4}\u{1fc6}-\u{1fcc}\u{1fd0}-\u{1fd3}\u{1fd6}-\u{1fdb}\u{1fe0}-\u{1fec}\u{1ff2}-\u{1ff4}\u{1ff6}-\u{1ffc}\u{2102}\u{2107}\u{210a}-\u{2113}\u{2115}\u{2119}-\u{211d}\u{2124}\u{2126}\u{2128}\u{212a}-\u{212d}\u{212f}-\u{2134}\u{2139}\u{213c}-\u{213f}\u{2145}-\u{2149}\u{214e}\u{2183}\u{2184}\u{2c00}-\u{2c7b}\u{2c7e}-\u{2ce4}\u{2ceb}-\u{2cee}\u{2cf2}\u{2cf3}\u{a640}-\u{a66d}\u{a680}-\u{a69b}\u{a722}-\u{a76f}\u{a771}-\u{a787}\u{a78b}-\u{a78e}\u{ab70}-\u{abbf}\u{fb00}-\u{fb06}\u{fb13}-\u{fb17}\u{ff21}-\u{ff3a}\u{ff41}-\u{ff5a}\u{10400}-\u{1044f}\u{104b0}-\u{104d3}\u{104d8}-\u{104fb}\u{10c80}-\u{10cb2}\u{10cc0}-\u{10cf2}\u{118a0}-\u{118df}\u{1e900}-\u{1e943}]+"),
                split("\\s?[!-/:-~\u{ff01}-\u{ff0f}\u{ff1a}-\u{ff5e}\u{2018}-\u{201f}\u{3000}-\u{3002}]+"),
                split(r"\s+$"),
                split(cjk),
                digits(false),
                byte_level(false),
            ]),
        ),
        other => bail!("pre-tokenizer {other:?} has no Hugging Face equivalent in microscale yet (supported: gpt-2, mpt, olmo, smollm, starcoder, refact, command-r, llama-bpe, qwen2, qwen35, falcon, deepseek-coder, deepseek-llm)"),
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
    let added_tokens: Vec<Value> =
        added.iter().map(|(id, content, special)| added_token_json(*id, content, *special)).collect();
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

/// Write the tokenizer files for `vocab` into `dir`: tokenizer.json, tokenizer_config.json and
/// special_tokens_map.json, and tokenizer.model for a SentencePiece (`llama`) vocabulary.
/// Returns the special token ids for config.json (`bos_token_id`, …).
pub fn write_hf_tokenizer(vocab: &Vocab, dir: &Path) -> Result<Vec<(String, u32)>> {
    match vocab.model.as_str() {
        "llama" => write_sentencepiece(vocab, dir),
        _ => write_bpe(vocab, dir),
    }
}

/// An added-token entry as tokenizer.json lists it.
fn added_token_json(id: u32, content: &str, special: bool) -> Value {
    json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
           "normalized": !special, "special": special})
}

/// tokenizer_config.json's `added_tokens_decoder`.
fn added_tokens_decoder(added: &[(u32, String, bool)]) -> Value {
    let map: serde_json::Map<String, Value> = added
        .iter()
        .map(|(id, content, special)| {
            let entry = json!({"content": content, "lstrip": false, "normalized": !special, "rstrip": false,
                               "single_word": false, "special": special});
            (id.to_string(), entry)
        })
        .collect();
    Value::Object(map)
}

/// The special tokens (`bos_token`: "<s>", …) whose ids the converter can find by content among
/// tokenizer.json's added tokens; the rest reach it through config.json's `*_token_id`.
fn named_specials(vocab: &Vocab, added: &[(u32, String, bool)]) -> serde_json::Map<String, Value> {
    vocab
        .special
        .iter()
        .filter(|(_, id)| added.iter().any(|(aid, _, _)| aid == id))
        .map(|(kind, id)| (format!("{kind}_token"), json!(vocab.tokens[*id as usize])))
        .collect()
}

/// The keys tokenizer_config.json shares between both kinds: special tokens, add flags, prefix
/// space, chat template.
fn common_config(vocab: &Vocab, added: &[(u32, String, bool)]) -> serde_json::Map<String, Value> {
    let mut config = named_specials(vocab, added);
    for (kind, v) in &vocab.add_flags {
        config.insert(format!("add_{kind}_token"), json!(v));
    }
    if let Some(v) = vocab.add_space_prefix {
        config.insert("add_prefix_space".into(), json!(v));
    }
    if let Some(t) = &vocab.chat_template {
        config.insert("chat_template".into(), json!(t));
    }
    config
}

fn write_configs(
    dir: &Path,
    vocab: &Vocab,
    config: serde_json::Map<String, Value>,
    added: &[(u32, String, bool)],
) -> Result<()> {
    write_file(&dir.join("tokenizer_config.json"), serde_json::to_string_pretty(&Value::Object(config))?.as_bytes())?;
    let special_map = named_specials(vocab, added);
    write_file(
        &dir.join("special_tokens_map.json"),
        serde_json::to_string_pretty(&Value::Object(special_map))?.as_bytes(),
    )
}

/// A SentencePiece vocabulary: `tokenizer.model` (the pieces the model had), a `tokenizer.json`
/// in transformers' LlamaTokenizerFast form (BPE with byte fallback and the pieces' merges,
/// BOS/EOS from tokenizer_config.json's flags), and
/// a tokenizer_config.json whose `added_tokens_decoder` holds exactly the tokens the converter
/// added after the model's pieces, so that converting the directory again gives the same keys.
fn write_sentencepiece(vocab: &Vocab, dir: &Path) -> Result<Vec<(String, u32)>> {
    let scores = vocab.scores.as_deref().unwrap_or(&[]);
    let n_pieces = spm::model_piece_count(vocab);
    write_file(&dir.join("tokenizer.model"), &spm::encode_model(&spm::model_from_vocab(vocab)?))?;

    // Converter-added tokens: score -1000, control or user-defined (fillers are regenerated).
    let converter_added = |i: usize| {
        let ty = vocab.token_types[i];
        scores.get(i) == Some(&-1000.0) && (ty == token_type::CONTROL || ty == token_type::USER_DEFINED)
    };
    let decoder_entries: Vec<(u32, String, bool)> = (0..vocab.tokens.len())
        .filter(|&i| converter_added(i))
        .map(|i| (i as u32, vocab.tokens[i].clone(), vocab.token_types[i] == token_type::CONTROL))
        .collect();
    // tokenizer.json's added tokens: the model's own control and unknown pieces, and the above.
    let mut added: Vec<(u32, String, bool)> = (0..n_pieces)
        .filter(|&i| matches!(vocab.token_types[i], token_type::CONTROL | token_type::UNKNOWN) && !converter_added(i))
        .map(|i| (i as u32, vocab.tokens[i].clone(), true))
        .collect();
    added.extend(decoder_entries.iter().cloned());
    added.sort_by_key(|a| a.0);

    let pieces: serde_json::Map<String, Value> = (0..n_pieces).map(|i| (vocab.tokens[i].clone(), json!(i))).collect();
    let merges: Vec<Value> =
        spm::merges_of(&vocab.tokens, scores, n_pieces).into_iter().map(|(l, r)| json!([l, r])).collect();
    let unk = vocab.special_id("unk").map(|i| vocab.tokens[i as usize].clone());
    let replace = |from: &str, to: &str| json!({"type": "Replace", "pattern": {"String": from}, "content": to});
    let normalizer = match vocab.add_space_prefix {
        Some(false) => replace(" ", "\u{2581}"),
        _ => {
            json!({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u{2581}"}, replace(" ", "\u{2581}")]})
        }
    };
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added.iter().map(|(id, c, sp)| added_token_json(*id, c, *sp)).collect::<Vec<_>>(),
        "normalizer": normalizer,
        "pre_tokenizer": null,
        // transformers' LlamaTokenizerFast builds the BOS/EOS template from tokenizer_config's
        // add_bos_token / add_eos_token when it loads; a template here would also make the
        // converter's SpecialVocab write an add_sep_token the source never had.
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": [
            replace("\u{2581}", " "), {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
            "vocab": pieces, "merges": merges,
        }
    });
    write_file(&dir.join("tokenizer.json"), serde_json::to_string_pretty(&tokenizer)?.as_bytes())?;

    let mut config = common_config(vocab, &added);
    config.insert("clean_up_tokenization_spaces".into(), json!(false));
    config.insert("legacy".into(), json!(false));
    config.insert("tokenizer_class".into(), json!("LlamaTokenizer"));
    config.insert("added_tokens_decoder".into(), added_tokens_decoder(&decoder_entries));
    write_configs(dir, vocab, config, &added)?;
    Ok(vocab.special.clone())
}

/// A byte-level BPE vocabulary.
fn write_bpe(vocab: &Vocab, dir: &Path) -> Result<Vec<(String, u32)>> {
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

    let mut config = common_config(vocab, &added);
    config.insert("clean_up_tokenization_spaces".into(), json!(false));
    // The generic fast tokenizer loads tokenizer.json as it is (a model-specific class may add
    // tokens or rebuild the pre-tokenizer from its own defaults).
    config.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
    config.insert("added_tokens_decoder".into(), added_tokens_decoder(&added));
    write_configs(dir, vocab, config, &added)?;
    Ok(vocab.special.clone())
}

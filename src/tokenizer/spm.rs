//! SentencePiece vocabularies (LLaMA-2, Mistral v0.1, Phi-3): `tokenizer.model` read in Rust
//! (its protobuf, through the `sentencepiece-model` crate — no C++ library), turned into
//! `tokenizer.ggml.*` exactly as `convert_hf_to_gguf.py`'s `_create_vocab_sentencepiece` does, and
//! written back from a GGUF for `import`.

use super::{looks_special, token_type, Vocab};
use anyhow::{anyhow, bail, Context, Result};
use sentencepiece_model::{ModelProto, NormalizerSpec, SentencePiece, SentencePieceModel, TrainerSpec, Type};
use serde_json::Value;
use std::path::Path;

/// The pieces of a SentencePiece model: text, score and llama.cpp token type, padded to
/// `vocab_size` and with the checkpoint's added tokens applied.
pub struct SpmTokens {
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub types: Vec<i32>,
}

pub fn read_model(path: &Path) -> Result<ModelProto> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let m = SentencePieceModel::from_slice(&bytes)
        .map_err(|e| anyhow!("{}: not a SentencePiece model ({e})", path.display()))?;
    if m.pieces().is_empty() {
        bail!("{}: a SentencePiece model without pieces", path.display());
    }
    Ok(m.model().clone())
}

/// `SentencePieceProcessor`'s view of a piece's type, as the converter reads it (`IsUnknown`,
/// `IsControl`, `IsUnused`, `IsByte`; everything else, user-defined pieces too, is NORMAL).
fn piece_type(p: &SentencePiece) -> i32 {
    match p.r#type() {
        Type::Unknown => token_type::UNKNOWN,
        Type::Control => token_type::CONTROL,
        Type::Unused => token_type::UNUSED,
        Type::Byte => token_type::BYTE,
        Type::Normal | Type::UserDefined => token_type::NORMAL,
    }
}

/// `_create_vocab_sentencepiece`: the model's pieces, then `added_tokens.json`, then
/// tokenizer_config.json's `added_tokens_decoder`, over `[PAD{i}]` fillers up to `vocab_size`.
pub fn vocab_tokens(
    model: &ModelProto,
    vocab_size: usize,
    added_tokens: Option<&Value>,
    tok_config: Option<&Value>,
) -> Result<SpmTokens> {
    let mut out = SpmTokens {
        tokens: (0..vocab_size).map(|i| format!("[PAD{i}]")).collect(),
        scores: vec![-10000.0; vocab_size],
        types: vec![token_type::UNUSED; vocab_size],
    };
    for (id, p) in model.pieces.iter().enumerate().take(vocab_size) {
        out.tokens[id] = p.piece().to_string();
        out.scores[id] = p.score();
        out.types[id] = piece_type(p);
    }
    if let Some(map) = added_tokens.and_then(Value::as_object) {
        for (text, id) in map {
            let Some(id) = id.as_u64().map(|i| i as usize).filter(|&i| i < vocab_size) else { continue };
            out.tokens[id] = text.clone();
            out.scores[id] = -1000.0;
            out.types[id] = token_type::USER_DEFINED;
        }
    }
    let decoder = tok_config.and_then(|c| c.get("added_tokens_decoder")).and_then(Value::as_object);
    for (id, data) in decoder.into_iter().flatten() {
        let Some(id) = id.parse::<usize>().ok().filter(|&i| i < vocab_size) else { continue };
        let Some(text) = data.get("content").and_then(Value::as_str) else { continue };
        let special = data.get("special").and_then(Value::as_bool).unwrap_or(false);
        if special || looks_special(text) {
            out.types[id] = token_type::CONTROL;
            out.tokens[id] = text.to_string();
        } else {
            // Pre-normalise user-defined spaces, as the converter does.
            out.types[id] = token_type::USER_DEFINED;
            out.tokens[id] = text.replace('\u{2581}', " ");
        }
        out.scores[id] = -1000.0;
    }
    Ok(out)
}

/// Which tokens of a `llama` vocabulary came from the SentencePiece model: all but the trailing
/// tokens the converter adds (score −1000, user-defined or control) and its `[PAD{i}]` fillers.
pub fn model_piece_count(v: &Vocab) -> usize {
    let scores = v.scores.as_deref().unwrap_or(&[]);
    let added = |i: usize| {
        let ty = v.token_types[i];
        let filler = ty == token_type::UNUSED && v.tokens[i] == format!("[PAD{i}]");
        filler || (scores.get(i) == Some(&-1000.0) && (ty == token_type::USER_DEFINED || ty == token_type::CONTROL))
    };
    let mut n = v.tokens.len();
    while n > 0 && added(n - 1) {
        n -= 1;
    }
    n
}

/// A `tokenizer.model` for a `llama` vocabulary (for `import`): its pieces with scores and types,
/// a BPE trainer spec with the special ids, and the normalizer LLaMA's models use.
pub fn model_from_vocab(v: &Vocab) -> Result<ModelProto> {
    let scores = v.scores.as_ref().ok_or_else(|| anyhow!("a llama vocabulary without tokenizer.ggml.scores"))?;
    let n = model_piece_count(v);
    let pieces = (0..n)
        .map(|i| {
            let ty = match v.token_types[i] {
                token_type::UNKNOWN => Type::Unknown,
                token_type::CONTROL => Type::Control,
                token_type::UNUSED => Type::Unused,
                token_type::BYTE => Type::Byte,
                token_type::USER_DEFINED => Type::UserDefined,
                _ => Type::Normal,
            };
            let mut p = SentencePiece { piece: Some(v.tokens[i].clone()), score: Some(scores[i]), r#type: None };
            p.set_type(ty);
            p
        })
        .collect();
    let id = |kind: &str, default: i32| v.special_id(kind).map_or(default, |i| i as i32);
    let trainer = TrainerSpec {
        model_type: Some(sentencepiece_model::ModelType::Bpe as i32),
        vocab_size: Some(n as i32),
        unk_id: Some(id("unk", 0)),
        bos_id: Some(id("bos", -1)),
        eos_id: Some(id("eos", -1)),
        pad_id: Some(v.special_id("pad").filter(|&p| (p as usize) < n).map_or(-1, |p| p as i32)),
        byte_fallback: Some(v.token_types.contains(&token_type::BYTE)),
        ..Default::default()
    };
    let normalizer = NormalizerSpec {
        name: Some("identity".into()),
        add_dummy_prefix: Some(v.add_space_prefix.unwrap_or(true)),
        remove_extra_whitespaces: Some(false),
        escape_whitespaces: Some(true),
        ..Default::default()
    };
    Ok(ModelProto { pieces, trainer_spec: Some(trainer), normalizer_spec: Some(normalizer), ..Default::default() })
}

/// The model's bytes (protobuf), for writing `tokenizer.model`.
pub fn encode_model(m: &ModelProto) -> Vec<u8> {
    prost::Message::encode_to_vec(m)
}

/// The merges of a SentencePiece BPE vocabulary as a Hugging Face `tokenizer.json` lists them
/// (transformers' `generate_merges`): every split of a piece into two pieces of the vocabulary,
/// each piece's splits by the parts' ids, then all of them by the merged piece's score, the left
/// part's length and the right part's length, highest first (a stable sort, as Python's).
pub fn merges_of(tokens: &[String], scores: &[f32], n_pieces: usize) -> Vec<(String, String)> {
    use std::collections::HashMap;
    let id: HashMap<&str, usize> = tokens[..n_pieces].iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
    // (score, left, right) in generation order.
    let mut merges: Vec<(f32, usize, usize)> = Vec::new();
    for (merged, piece) in tokens[..n_pieces].iter().enumerate() {
        let mut local: Vec<(f32, usize, usize)> = Vec::new();
        for (cut, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(cut);
            if let (Some(&li), Some(&ri)) = (id.get(l), id.get(r)) {
                local.push((scores[merged], li, ri));
            }
        }
        local.sort_by_key(|&(_, l, r)| (l, r));
        merges.extend(local);
    }
    let chars = |i: usize| tokens[i].chars().count();
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(chars(b.1).cmp(&chars(a.1))).then(chars(b.2).cmp(&chars(a.2))));
    merges.into_iter().map(|(_, l, r)| (tokens[l].clone(), tokens[r].clone())).collect()
}

//! Vocabularies: a model's tokenizer as llama.cpp's `tokenizer.ggml.*` metadata, read from Hugging
//! Face tokenizer files ([`hf`]), read from GGUF, and written back as Hugging Face files ([`export`]).
//!
//! Two kinds: byte-level BPE (`tokenizer.ggml.model = "gpt2"`: GPT-2, SmolLM, LLaMA-3, Qwen) and
//! SentencePiece (`"llama"`: LLaMA-2, Mistral v0.1, Phi-3; [`spm`] reads and writes
//! `tokenizer.model`). [`special`] is gguf-py's SpecialVocab.
//!
//! Uses `source` (the checkpoint's tokenizer files) and `gguf` (metadata values).

pub mod export;
pub mod hf;
pub mod pre;
pub mod special;
pub mod spm;

use crate::gguf::{meta_get, GgufValue, Metadata};
use anyhow::{anyhow, bail, Result};

/// llama.cpp token types (`enum llama_token_type`).
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// The special token kinds, with their GGUF key names (`seperator` is the format's own spelling).
pub const SPECIAL_KINDS: [(&str, &str); 9] = [
    ("bos", "tokenizer.ggml.bos_token_id"),
    ("eos", "tokenizer.ggml.eos_token_id"),
    ("unk", "tokenizer.ggml.unknown_token_id"),
    ("sep", "tokenizer.ggml.seperator_token_id"),
    ("pad", "tokenizer.ggml.padding_token_id"),
    ("cls", "tokenizer.ggml.cls_token_id"),
    ("mask", "tokenizer.ggml.mask_token_id"),
    ("eot", "tokenizer.ggml.eot_token_id"),
    ("eom", "tokenizer.ggml.eom_token_id"),
];

/// A vocabulary in llama.cpp's terms.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Vocab {
    /// `tokenizer.ggml.model`: "gpt2" (byte-level BPE) or "llama" (SentencePiece).
    pub model: String,
    /// `tokenizer.ggml.pre`: which pre-tokenizer regexes llama.cpp applies.
    pub pre: String,
    /// Token strings (byte-level form `Ġ` for BPE; `▁` pieces for SentencePiece), indexed by id.
    pub tokens: Vec<String>,
    /// SentencePiece scores (None for BPE).
    pub scores: Option<Vec<f32>>,
    pub token_types: Vec<i32>,
    /// `"left right"` pairs, highest priority first.
    pub merges: Vec<String>,
    /// Special token ids by kind (`bos`, `eos`, …), in the order found.
    pub special: Vec<(String, u32)>,
    /// `add_bos`, `add_eos`, … flags, in the order found.
    pub add_flags: Vec<(String, bool)>,
    pub add_space_prefix: Option<bool>,
    pub chat_template: Option<String>,
}

impl Vocab {
    pub fn special_id(&self, kind: &str) -> Option<u32> {
        self.special.iter().find(|(k, _)| k == kind).map(|(_, id)| *id)
    }

    pub fn add_flag(&self, kind: &str) -> Option<bool> {
        self.add_flags.iter().find(|(k, _)| k == kind).map(|(_, v)| *v)
    }

    /// The `tokenizer.*` keys, in the order llama.cpp's converter writes them.
    pub fn to_metadata(&self) -> Metadata {
        let mut m: Metadata = Vec::new();
        if let Some(v) = self.add_space_prefix {
            m.push(("tokenizer.ggml.add_space_prefix".into(), GgufValue::Bool(v)));
        }
        m.push(("tokenizer.ggml.model".into(), GgufValue::String(self.model.clone())));
        m.push(("tokenizer.ggml.pre".into(), GgufValue::String(self.pre.clone())));
        m.push(("tokenizer.ggml.tokens".into(), GgufValue::strings(self.tokens.iter().cloned())));
        if let Some(scores) = &self.scores {
            let values = scores.iter().map(|&x| GgufValue::F32(x)).collect();
            m.push(("tokenizer.ggml.scores".into(), GgufValue::Array(crate::gguf::value::value_type::FLOAT32, values)));
        }
        m.push(("tokenizer.ggml.token_type".into(), GgufValue::i32s(self.token_types.iter().copied())));
        if !self.merges.is_empty() {
            m.push(("tokenizer.ggml.merges".into(), GgufValue::strings(self.merges.iter().cloned())));
        }
        for (kind, id) in &self.special {
            if let Some((_, key)) = SPECIAL_KINDS.iter().find(|(k, _)| k == kind) {
                m.push((key.to_string(), GgufValue::U32(*id)));
            }
        }
        for (kind, v) in &self.add_flags {
            m.push((format!("tokenizer.ggml.add_{kind}_token"), GgufValue::Bool(*v)));
        }
        if let Some(t) = self.chat_template.as_ref().filter(|t| !t.is_empty()) {
            m.push(("tokenizer.chat_template".into(), GgufValue::String(t.clone())));
        }
        m
    }

    /// Read a vocabulary back from GGUF metadata.
    pub fn from_metadata(meta: &Metadata) -> Result<Vocab> {
        let model = meta_get(meta, "tokenizer.ggml.model").and_then(|v| v.as_str()).unwrap_or("");
        if model != "gpt2" && model != "llama" {
            bail!(
                "tokenizer model {model:?} is not supported (microscale handles byte-level BPE, \"gpt2\", and SentencePiece, \"llama\")"
            );
        }
        let strings = |key: &str| -> Result<Vec<String>> {
            let arr = meta_get(meta, key).and_then(|v| v.as_array()).ok_or_else(|| anyhow!("no {key} array"))?;
            arr.iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(|| anyhow!("{key} holds a non-string")))
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let token_types = match meta_get(meta, "tokenizer.ggml.token_type").and_then(|v| v.as_array()) {
            Some(arr) => arr.iter().map(|v| v.as_u64().map(|x| x as i32).unwrap_or(token_type::NORMAL)).collect(),
            None => vec![token_type::NORMAL; tokens.len()],
        };
        if token_types.len() != tokens.len() {
            bail!("{} token types for {} tokens", token_types.len(), tokens.len());
        }
        let merges =
            if meta_get(meta, "tokenizer.ggml.merges").is_some() { strings("tokenizer.ggml.merges")? } else { vec![] };
        let scores = match meta_get(meta, "tokenizer.ggml.scores").and_then(|v| v.as_array()) {
            Some(arr) => Some(
                arr.iter()
                    .map(|v| {
                        v.as_f64().map(|x| x as f32).ok_or_else(|| anyhow!("tokenizer.ggml.scores holds a non-number"))
                    })
                    .collect::<Result<Vec<f32>>>()?,
            ),
            None if model == "llama" => bail!("a SentencePiece (\"llama\") vocabulary without tokenizer.ggml.scores"),
            None => None,
        };
        if scores.as_ref().is_some_and(|s| s.len() != tokens.len()) {
            bail!("{} scores for {} tokens", scores.as_ref().map_or(0, Vec::len), tokens.len());
        }
        let mut special = Vec::new();
        let mut add_flags = Vec::new();
        for (k, v) in meta {
            if let Some((kind, _)) = SPECIAL_KINDS.iter().find(|(_, key)| key == k) {
                if let Some(id) = v.as_u64() {
                    if id >= tokens.len() as u64 {
                        bail!("{k} = {id} is out of range for a vocabulary of {} tokens", tokens.len());
                    }
                    special.push((kind.to_string(), id as u32));
                }
            } else if let Some(kind) = k.strip_prefix("tokenizer.ggml.add_").and_then(|r| r.strip_suffix("_token")) {
                if let Some(b) = v.as_bool() {
                    add_flags.push((kind.to_string(), b));
                }
            }
        }
        Ok(Vocab {
            model: model.to_string(),
            scores,
            pre: meta_get(meta, "tokenizer.ggml.pre").and_then(|v| v.as_str()).unwrap_or("default").to_string(),
            tokens,
            token_types,
            merges,
            special,
            add_flags,
            add_space_prefix: meta_get(meta, "tokenizer.ggml.add_space_prefix").and_then(|v| v.as_bool()),
            chat_template: meta_get(meta, "tokenizer.chat_template").and_then(|v| v.as_str()).map(str::to_string),
        })
    }
}

/// The converter's `does_token_look_special`.
pub fn looks_special(token: &str) -> bool {
    matches!(token, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (token.starts_with("<|") && token.ends_with("|>"))
        || (token.starts_with("<\u{ff5c}") && token.ends_with("\u{ff5c}>"))
        || (token.starts_with("<unused") && token.ends_with('>'))
}

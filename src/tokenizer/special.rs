//! gguf-py's `SpecialVocab`, ported line by line: which ids are the special tokens (bos, eos, …)
//! and whether the tokenizer adds them, from tokenizer.json's post-processor and added tokens,
//! tokenizer_config.json, and config.json's `*_token_id` — in the order and with the precedence the
//! converter uses, so that the `tokenizer.ggml.*` keys come out identical.

use serde_json::Value;

/// The kinds SpecialVocab looks for, in its order (`eot`/`eom` join when a template needs them).
pub const DEFAULT_TYPES: [&str; 7] = ["bos", "eos", "unk", "sep", "pad", "cls", "mask"];

/// What SpecialVocab found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Specials {
    /// Special token ids by kind, in the order found (the GGUF keys' order).
    pub ids: Vec<(String, u32)>,
    /// `add_{kind}_token` flags, in the order found.
    pub add: Vec<(String, bool)>,
    pub lowercase: Option<bool>,
    pub strip_accents: Option<bool>,
}

/// The inputs: the checkpoint's tokenizer files as parsed JSON (None where absent).
pub struct Files<'a> {
    pub tokenizer_json: Option<&'a Value>,
    pub tokenizer_config: Option<&'a Value>,
    pub config: &'a Value,
    pub n_vocab: usize,
}

struct State {
    types: Vec<String>,
    n_vocab: usize,
    out: Specials,
}

impl State {
    /// `_set_special_token`: the first id of a kind wins; ids beyond the vocabulary are skipped.
    fn set_special(&mut self, kind: &str, id: Option<&Value>) {
        let Some(id) = id.and_then(Value::as_u64) else { return };
        if (id as usize) < self.n_vocab && !self.out.ids.iter().any(|(k, _)| k == kind) {
            self.out.ids.push((kind.to_string(), id as u32));
        }
    }

    fn add_flag(&mut self, kind: &str) -> Option<bool> {
        self.out.add.iter().find(|(k, _)| k == kind).map(|(_, v)| *v)
    }

    /// `add_special_token[kind] = value`.
    fn set_add(&mut self, kind: &str, value: bool) {
        match self.out.add.iter_mut().find(|(k, _)| k == kind) {
            Some(slot) => slot.1 = value,
            None => self.out.add.push((kind.to_string(), value)),
        }
    }

    /// `add_special_token.setdefault(kind, value)`.
    fn set_add_default(&mut self, kind: &str, value: bool) {
        if self.add_flag(kind).is_none() {
            self.out.add.push((kind.to_string(), value));
        }
    }

    fn parse_normalizer(&mut self, n: &Value) {
        match n.get("type").and_then(Value::as_str) {
            Some("Lowercase") => self.out.lowercase = Some(true),
            Some("StripAccents") => self.out.strip_accents = Some(true),
            Some("BertNormalizer") => {
                if let Some(v) = n.get("lowercase").and_then(Value::as_bool) {
                    self.out.lowercase = Some(v);
                }
                if let Some(v) = n.get("strip_accents").and_then(Value::as_bool) {
                    self.out.strip_accents = Some(v);
                }
            }
            Some("Sequence") => {
                for m in n.get("normalizers").and_then(Value::as_array).into_iter().flatten() {
                    self.parse_normalizer(m);
                }
            }
            _ => {}
        }
    }
}

/// A tokenizer_config entry's content: a string, or `{"content": …}`.
fn content(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// A template item's special token (`{"SpecialToken": {"id": "<s>"}}`).
fn template_special(item: Option<&Value>) -> Option<String> {
    item?.get("SpecialToken")?.get("id")?.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

fn template_sequence(item: Option<&Value>) -> Option<String> {
    item?.get("Sequence")?.get("id")?.as_str().map(str::to_string)
}

/// Run SpecialVocab over the files (`load_merges` is handled by the callers).
pub fn special_vocab(f: &Files, extra_types: &[&str]) -> Specials {
    let mut st = State {
        types: DEFAULT_TYPES.iter().chain(extra_types).map(|s| s.to_string()).collect(),
        n_vocab: f.n_vocab,
        out: Specials::default(),
    };
    // tokenizer_config as a mutable map: the template parsing below rewrites it, as gguf-py does.
    let mut cfg: Option<serde_json::Map<String, Value>> = f.tokenizer_config.and_then(|c| c.as_object().cloned());
    let added: Vec<Value> =
        f.tokenizer_json.and_then(|t| t.get("added_tokens")).and_then(Value::as_array).cloned().unwrap_or_default();
    if let Some(tok) = f.tokenizer_json {
        if let Some(n) = tok.get("normalizer").filter(|n| !n.is_null()) {
            st.parse_normalizer(n);
        }
        post_processor(&mut st, tok, &mut cfg);
    }
    if let Some(cfg) = &cfg {
        for kind in st.types.clone() {
            if let Some(v) = cfg.get(&format!("add_{kind}_token")).and_then(Value::as_bool) {
                // A post-processor's value wins over tokenizer_config's ("opting for the latter").
                if st.add_flag(&kind).is_none() {
                    st.set_add(&kind, v);
                }
            }
            let Some(c) = content(cfg.get(&format!("{kind}_token"))) else { continue };
            let id = added.iter().find(|a| a.get("content").and_then(Value::as_str) == Some(c.as_str()));
            st.set_special(&kind, id.and_then(|a| a.get("id")));
        }
    }
    for kind in st.types.clone() {
        let id = f
            .config
            .get(format!("{kind}_token_id"))
            .or_else(|| f.config.get("text_config").and_then(|t| t.get(format!("{kind}_token_id"))));
        st.set_special(&kind, id);
    }
    st.out
}

/// The post-processor part of `_try_load_from_tokenizer_json`.
fn post_processor(st: &mut State, tok: &Value, cfg: &mut Option<serde_json::Map<String, Value>>) {
    let get = |cfg: &Option<serde_json::Map<String, Value>>, k: &str| content(cfg.as_ref().and_then(|c| c.get(k)));
    let mut special_bos = get(cfg, "bos_token");
    let mut special_cls = get(cfg, "cls_token");
    let mut special_eos = get(cfg, "eos_token");
    let mut special_sep = get(cfg, "sep_token");
    if special_bos.is_none() && special_cls.is_some() {
        if let Some(c) = cfg.as_mut() {
            c.insert("bos_token".into(), Value::String(special_cls.clone().unwrap()));
            special_bos = special_cls.clone();
        }
    }
    if special_eos.is_none() && special_sep.is_some() {
        if let Some(c) = cfg.as_mut() {
            c.insert("eos_token".into(), Value::String(special_sep.clone().unwrap()));
            special_eos = special_sep.clone();
        }
    }
    let Some(post) = tok.get("post_processor").filter(|p| !p.is_null()) else { return };
    let processors: Vec<Value> = match post.get("processors").and_then(Value::as_array) {
        Some(list) => list.clone(),
        None => vec![post.clone()],
    };
    for p in &processors {
        match p.get("type").and_then(Value::as_str) {
            Some("ByteLevel") => {
                st.set_add_default("bos", false);
                st.set_add_default("eos", false);
            }
            Some("RobertaProcessing") => {
                st.set_add("bos", true);
                st.set_add("eos", true);
                st.set_add("sep", true);
                if special_cls.is_none() {
                    if let Some(c) = cfg.as_mut() {
                        special_cls = p
                            .get("cls")
                            .and_then(|v| v.get(0))
                            .and_then(Value::as_str)
                            .map(str::to_string)
                            .or(special_bos.clone());
                        c.insert("cls_token".into(), special_cls.clone().map_or(Value::Null, Value::String));
                    }
                }
                if special_sep.is_none() {
                    if let Some(c) = cfg.as_mut() {
                        special_sep = p
                            .get("sep")
                            .and_then(|v| v.get(0))
                            .and_then(Value::as_str)
                            .map(str::to_string)
                            .or(special_eos.clone());
                        c.insert("sep_token".into(), special_sep.clone().map_or(Value::Null, Value::String));
                    }
                }
            }
            Some("TemplateProcessing") => {
                template(st, p, cfg, &mut special_bos, &mut special_cls, &mut special_eos, &special_sep);
            }
            _ => {}
        }
    }
}

/// The crude TemplateProcessing parse gguf-py makes (simple templates only, like it).
fn template(
    st: &mut State,
    p: &Value,
    cfg: &mut Option<serde_json::Map<String, Value>>,
    special_bos: &mut Option<String>,
    special_cls: &mut Option<String>,
    special_eos: &mut Option<String>,
    special_sep: &Option<String>,
) {
    let single: Vec<Value> = p.get("single").and_then(Value::as_array).cloned().unwrap_or_default();
    let pair: Vec<Value> = p.get("pair").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut special_first = None;
    let mut special_last = None;
    if single.len() > 1 {
        special_first = template_special(single.first());
        if let Some(first) = &special_first {
            match cfg.as_mut() {
                None => *special_bos = Some(first.clone()),
                Some(c) => {
                    if Some(first) != special_bos.as_ref() && Some(first) != special_cls.as_ref() {
                        if special_bos.is_none() {
                            c.insert("bos_token".into(), Value::String(first.clone()));
                            *special_bos = Some(first.clone());
                        }
                        if special_cls.is_none() {
                            c.insert("cls_token".into(), Value::String(first.clone()));
                            *special_cls = Some(first.clone());
                        }
                    }
                }
            }
            let is_bos = Some(first) == special_bos.as_ref() || Some(first) == special_cls.as_ref();
            st.set_add("bos", is_bos);
        }
        special_last = template_special(single.last());
        if let Some(last) = &special_last {
            match cfg.as_mut() {
                None => *special_eos = Some(last.clone()),
                Some(c) => {
                    if Some(last) != special_eos.as_ref() {
                        let old = special_eos.clone().map_or(Value::Null, Value::String);
                        if !st.types.iter().any(|t| t == "eot") {
                            st.types.push("eot".into());
                            c.insert("eot_token".into(), old);
                        } else if !st.types.iter().any(|t| t == "eom") {
                            st.types.push("eom".into());
                            c.insert("eom_token".into(), old);
                        }
                        c.insert("eos_token".into(), Value::String(last.clone()));
                        *special_eos = Some(last.clone());
                    }
                }
            }
            st.set_add("eos", Some(last) == special_eos.as_ref());
        }
    }
    if pair.is_empty() {
        return;
    }
    let start = usize::from(special_first.is_some() && template_special(pair.first()) == special_first);
    let stop_trim = special_last.is_some() && template_special(pair.last()) == special_last;
    let end = if stop_trim { pair.len().saturating_sub(1) } else { pair.len() };
    if start >= end {
        return;
    }
    let middle = &pair[start..end];
    let (a, b) = (template_sequence(middle.first()), template_sequence(middle.last()));
    if a.as_deref() != Some("A") || b.as_deref() != Some("B") || middle.len() < 3 {
        return;
    }
    let inner = &middle[1..middle.len() - 1];
    let mut add_sep = false;
    let is_sep = |t: &Option<String>| t.is_some() && (t == special_sep || t == special_eos);
    let entry = template_special(inner.first());
    if is_sep(&entry) && special_last.is_none() {
        add_sep = true;
    }
    if inner.len() == 2 && is_sep(&template_special(inner.get(1))) {
        add_sep = true;
    }
    st.set_add("sep", add_sep);
    if add_sep && special_sep.is_none() {
        if let Some(c) = cfg.as_mut() {
            c.insert("sep_token".into(), special_eos.clone().map_or(Value::Null, Value::String));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn byte_level_post_processors_say_no_bos_and_no_eos() {
        let tok =
            json!({"post_processor": {"type": "ByteLevel"}, "added_tokens": [{"id": 0, "content": "<|endoftext|>"}]});
        let cfg = json!({"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "add_bos_token": true});
        let s = special_vocab(
            &Files { tokenizer_json: Some(&tok), tokenizer_config: Some(&cfg), config: &json!({}), n_vocab: 10 },
            &[],
        );
        assert_eq!(s.add, vec![("bos".into(), false), ("eos".into(), false)], "the post-processor wins");
        assert_eq!(s.ids, vec![("bos".into(), 0), ("eos".into(), 0)]);
    }

    #[test]
    fn llama3_templates_add_bos_but_no_sep_and_lists_of_eos_ids_are_ignored() {
        let tok = json!({
            "post_processor": {"type": "Sequence", "processors": [
                {"type": "ByteLevel"},
                {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|begin_of_text|>"}}, {"Sequence": {"id": "A"}}],
                 "pair": [{"SpecialToken": {"id": "<|begin_of_text|>"}}, {"Sequence": {"id": "A"}}, {"SpecialToken": {"id": "<|begin_of_text|>"}}, {"Sequence": {"id": "B"}}]}]},
            "added_tokens": [{"id": 5, "content": "<|begin_of_text|>"}, {"id": 6, "content": "<|end_of_text|>"}]});
        let cfg = json!({"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"});
        let config = json!({"bos_token_id": 5, "eos_token_id": [6, 7]});
        let s = special_vocab(
            &Files { tokenizer_json: Some(&tok), tokenizer_config: Some(&cfg), config: &config, n_vocab: 10 },
            &[],
        );
        // gguf-py's SpecialVocab on these three files (llama-cpp-python 0.3.36) gives
        // {'bos': True, 'eos': False, 'sep': False} and ids {'bos': 5, 'eos': 6}: the pair
        // template's middle <|begin_of_text|> is "an unknown separator", so add_sep is false.
        assert_eq!(s.add, vec![("bos".into(), true), ("eos".into(), false), ("sep".into(), false)]);
        assert_eq!(s.ids, vec![("bos".into(), 5), ("eos".into(), 6)]);
    }
}

//! Real vocabularies: llama.cpp's own `models/ggml-vocab-*.gguf` files with their `.inp` / `.out`
//! tokenizer cases (fetched by scripts/fetch-vocabs.sh from the llama-cpp-python 0.3.36 sdist).
//!
//! - SentencePiece (LLaMA-2's `llama-spm`, `phi-3`): a `tokenizer.model` rebuilt here from the
//!   file's pieces, scores and types (a protobuf encoder of this test's own), in a small
//!   LLaMA-2-shaped checkpoint, converts to exactly the file's `tokenizer.*` keys, and llama.cpp
//!   tokenizes every case of the converted model into the file's ids; `import` writes the
//!   tokenizer back (tokenizer.model, and a tokenizer.json the `tokenizers` library tokenizes the
//!   cases with identically) and converting that again gives the same keys.
//! - Byte-level BPE (every shipped BPE vocabulary with cases): a tokenizer.json exported from the
//!   file hashes (chkhsh) to the file's own `tokenizer.ggml.pre`, the `tokenizers` library
//!   tokenizes the cases into the file's ids with it, and llama.cpp does too on the model
//!   converted from it.

use crate::common;

use common::synth::{self, SynthSpec};
use microscale::convert::{convert, import::import, ConvertOptions, OutType};
use microscale::engine::Model;
use microscale::gguf::{GgufFile, GgufValue, Metadata};
use microscale::quant::mix::Scheme;
use microscale::tokenizer::{export, pre, Vocab};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn vocab_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/vocabs");
    assert!(
        dir.join("ggml-vocab-llama-spm.gguf").is_file(),
        "llama.cpp's vocabularies are missing from {}: run scripts/fetch-vocabs.sh (scripts/test.sh does)",
        dir.display()
    );
    dir
}

fn vocab_file(name: &str) -> PathBuf {
    vocab_dir().join(format!("ggml-vocab-{name}.gguf"))
}

/// The `.inp` texts and `.out` ids of a vocabulary, split as llama.cpp's test-tokenizer-0 splits them.
fn cases(name: &str) -> Vec<(String, Vec<i32>)> {
    let base = vocab_file(name);
    let inp = std::fs::read_to_string(base.with_extension("gguf.inp")).unwrap();
    let out = std::fs::read_to_string(base.with_extension("gguf.out")).unwrap();
    let texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    // The file ends with a separator: the empty remainder after it is not a case.
    let texts = if texts.last() == Some(&"") { &texts[..texts.len() - 1] } else { &texts[..] };
    let ids: Vec<Vec<i32>> = out.lines().map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect()).collect();
    assert_eq!(texts.len(), ids.len(), "{name}: cases and expected ids disagree in number");
    assert!(texts.len() >= 30, "{name}: only {} cases", texts.len());
    texts.iter().map(|t| t.to_string()).zip(ids).collect()
}

fn metadata(path: &Path) -> Metadata {
    GgufFile::open(path).unwrap().metadata
}

fn tokenizer_keys(meta: &Metadata) -> Vec<(String, GgufValue)> {
    let mut keys: Vec<(String, GgufValue)> =
        meta.iter().filter(|(k, _)| k.starts_with("tokenizer.")).cloned().collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    keys
}

/// Every `tokenizer.*` key of `want` equals the one in `got`, and `got` has no others.
fn assert_same_tokenizer_keys(got: &Metadata, want: &Metadata, what: &str) {
    let (got, want) = (tokenizer_keys(got), tokenizer_keys(want));
    let names = |v: &[(String, GgufValue)]| v.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(names(&got), names(&want), "{what}: tokenizer keys");
    for (k, _) in &want {
        assert_same_value(&got, &want, k, what);
    }
}

/// One key equal in both, with the first differing entry of an array named (not printed whole).
fn assert_same_value(got: &Metadata, want: &Metadata, key: &str, what: &str) {
    let (g, w) = (microscale::gguf::meta_get(got, key), microscale::gguf::meta_get(want, key));
    if g == w {
        return;
    }
    match (g.and_then(|v| v.as_array()), w.and_then(|v| v.as_array())) {
        (Some(ga), Some(wa)) => {
            let first = ga.iter().zip(wa).position(|(a, b)| a != b);
            let show = |a: &[GgufValue], i: Option<usize>| i.and_then(|i| a.get(i)).map(|v| v.display_short());
            panic!(
                "{what}: {key} differs ({} vs {} entries; first difference at {first:?}: {:?} vs {:?})",
                ga.len(),
                wa.len(),
                show(ga, first),
                show(wa, first)
            );
        }
        _ => panic!(
            "{what}: {key} = {:?} but the vocabulary file has {:?}",
            g.map(|v| v.display_short()),
            w.map(|v| v.display_short())
        ),
    }
}

/// llama.cpp, loading `model`, tokenizes every case of `name` into the expected ids.
fn assert_llama_cpp_tokenizes_cases(model: &Path, name: &str, full_model: bool) {
    let m = if full_model { Model::load(model).unwrap() } else { Model::load_vocab_only(model).unwrap() };
    for (i, (text, want)) in cases(name).iter().enumerate() {
        assert_eq!(&m.tokenize(text, false), want, "{name}: case {i} {text:?}");
    }
}

// ---------------------------------------------------------------------------
// A SentencePiece model, encoded by hand (protobuf wire format), independent of microscale's
// reader and writer.
// ---------------------------------------------------------------------------

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field_bytes(field: u32, bytes: &[u8], out: &mut Vec<u8>) {
    varint(((field << 3) | 2) as u64, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn field_varint(field: u32, v: i64, out: &mut Vec<u8>) {
    varint((field << 3) as u64, out);
    varint(v as u64, out); // negative int32s are sign-extended to 10 bytes, as protobuf does
}

fn field_f32(field: u32, v: f32, out: &mut Vec<u8>) {
    varint(((field << 3) | 5) as u64, out);
    out.extend_from_slice(&v.to_le_bytes());
}

/// llama.cpp token type → SentencePiece piece type (NORMAL 1, UNKNOWN 2, CONTROL 3,
/// USER_DEFINED 4, BYTE 6, UNUSED 5).
fn piece_type(llama_type: i64) -> i64 {
    match llama_type {
        2 => 2,
        3 => 3,
        5 => 5,
        6 => 6,
        _ => 1,
    }
}

/// `tokenizer.model` bytes: every token of the vocabulary as a piece with its score and type
/// (user-defined tokens as normal pieces: tokenizer_config.json re-declares them), a BPE trainer
/// spec with byte fallback and the special ids, LLaMA's normalizer spec.
fn sentencepiece_model(tokens: &[String], scores: &[f32], types: &[i64], specials: (i64, i64, i64)) -> Vec<u8> {
    let mut out = Vec::new();
    for ((t, s), ty) in tokens.iter().zip(scores).zip(types) {
        let mut piece = Vec::new();
        field_bytes(1, t.as_bytes(), &mut piece);
        field_f32(2, *s, &mut piece);
        field_varint(3, piece_type(*ty), &mut piece);
        field_bytes(1, &piece, &mut out);
    }
    let mut trainer = Vec::new();
    field_varint(3, 2, &mut trainer); // model_type = BPE
    field_varint(4, tokens.len() as i64, &mut trainer); // vocab_size
    field_varint(35, 1, &mut trainer); // byte_fallback
    field_varint(40, specials.0, &mut trainer); // unk_id
    field_varint(41, specials.1, &mut trainer); // bos_id
    field_varint(42, specials.2, &mut trainer); // eos_id
    field_varint(43, -1, &mut trainer); // pad_id
    field_bytes(2, &trainer, &mut out);
    let mut normalizer = Vec::new();
    field_bytes(1, b"identity", &mut normalizer);
    field_varint(3, 1, &mut normalizer); // add_dummy_prefix
    field_varint(4, 0, &mut normalizer); // remove_extra_whitespaces
    field_varint(5, 1, &mut normalizer); // escape_whitespaces
    field_bytes(3, &normalizer, &mut out);
    out
}

fn strings(meta: &Metadata, key: &str) -> Vec<String> {
    microscale::gguf::meta_get(meta, key)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn numbers(meta: &Metadata, key: &str) -> Vec<f64> {
    microscale::gguf::meta_get(meta, key).unwrap().as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

fn meta_u64(meta: &Metadata, key: &str) -> Option<u64> {
    microscale::gguf::meta_get(meta, key).and_then(|v| v.as_u64())
}

fn meta_bool(meta: &Metadata, key: &str) -> Option<bool> {
    microscale::gguf::meta_get(meta, key).and_then(|v| v.as_bool())
}

/// A LLaMA-2-shaped checkpoint (MHA, untied, RoPE 10000) whose tokenizer is the SentencePiece
/// vocabulary `name`, with LLaMA-2's side files: config.json's special ids, tokenizer_config.json's
/// add flags, chat template and user-defined tokens.
fn sentencepiece_checkpoint(name: &str, dir: &Path) {
    let meta = metadata(&vocab_file(name));
    let tokens = strings(&meta, "tokenizer.ggml.tokens");
    let scores: Vec<f32> = numbers(&meta, "tokenizer.ggml.scores").into_iter().map(|x| x as f32).collect();
    let types: Vec<i64> = numbers(&meta, "tokenizer.ggml.token_type").into_iter().map(|x| x as i64).collect();
    let id = |k: &str| meta_u64(&meta, &format!("tokenizer.ggml.{k}")).map(|v| v as i64);
    let spec = SynthSpec {
        n_layer: 1,
        n_embd: 32,
        n_head: 4,
        n_head_kv: 4,
        n_ff: 64,
        vocab_size: tokens.len(),
        seed: 51,
        ..SynthSpec::tiny_llama()
    };
    synth::write_llama_weights(dir, &spec).unwrap();
    let specials =
        (id("unknown_token_id").unwrap_or(0), id("bos_token_id").unwrap_or(-1), id("eos_token_id").unwrap_or(-1));
    std::fs::write(dir.join("tokenizer.model"), sentencepiece_model(&tokens, &scores, &types, specials)).unwrap();

    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    for (kind, key) in
        [("bos", "bos_token_id"), ("eos", "eos_token_id"), ("unk", "unknown_token_id"), ("pad", "padding_token_id")]
    {
        config[format!("{kind}_token_id")] = id(key).map_or(Value::Null, |v| json!(v));
    }
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();

    let mut tok_config = json!({"tokenizer_class": "LlamaTokenizer", "legacy": false});
    for flag in ["add_bos_token", "add_eos_token"] {
        if let Some(b) = meta_bool(&meta, &format!("tokenizer.ggml.{flag}")) {
            tok_config[flag] = json!(b);
        }
    }
    if let Some(t) = microscale::gguf::meta_get(&meta, "tokenizer.chat_template").and_then(|v| v.as_str()) {
        tok_config["chat_template"] = json!(t);
    }
    let decoder: serde_json::Map<String, Value> = types
        .iter()
        .enumerate()
        .filter(|(_, &t)| t == 4)
        .map(|(i, _)| (i.to_string(), json!({"content": tokens[i], "special": false, "normalized": false})))
        .collect();
    tok_config["added_tokens_decoder"] = Value::Object(decoder);
    std::fs::write(dir.join("tokenizer_config.json"), serde_json::to_string_pretty(&tok_config).unwrap()).unwrap();
}

fn check_sentencepiece_vocabulary(name: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hf");
    sentencepiece_checkpoint(name, &dir);
    let gguf = tmp.path().join("model.gguf");
    convert(&dir, &gguf, &ConvertOptions::new(Scheme::F32)).unwrap();
    let want = metadata(&vocab_file(name));
    assert_same_tokenizer_keys(&metadata(&gguf), &want, name);
    assert_llama_cpp_tokenizes_cases(&gguf, name, true);

    // import writes tokenizer.model (and tokenizer.json) back; converting that gives the same keys.
    let back = tmp.path().join("imported");
    import(&gguf, &back, OutType::F32, true).unwrap();
    assert!(back.join("tokenizer.model").is_file());
    // The tokenizer.json written beside it (transformers' LlamaTokenizerFast form) tokenizes
    // every case as llama.cpp does.
    let hf = tokenizers::Tokenizer::from_file(back.join("tokenizer.json")).unwrap();
    for (i, (text, want)) in cases(name).iter().enumerate() {
        let got: Vec<i32> = hf.encode(text.as_str(), false).unwrap().get_ids().iter().map(|&t| t as i32).collect();
        assert_eq!(&got, want, "{name}: the imported tokenizer.json on case {i} {text:?}");
    }
    let again = tmp.path().join("again.gguf");
    convert(&back, &again, &ConvertOptions::new(Scheme::F32)).unwrap();
    assert_same_tokenizer_keys(&metadata(&again), &want, &format!("{name} after import"));
}

#[test]
fn llama_2_sentencepiece_vocabulary_converts_to_llama_cpps_keys_and_tokenizes_its_cases() {
    check_sentencepiece_vocabulary("llama-spm");
}

#[test]
fn phi_3_sentencepiece_vocabulary_converts_to_llama_cpps_keys_and_tokenizes_its_cases() {
    check_sentencepiece_vocabulary("phi-3");
}

// ---------------------------------------------------------------------------
// Byte-level BPE
// ---------------------------------------------------------------------------

/// Every BPE vocabulary the sdist ships with tokenizer cases.
const BPE_VOCABS: [&str; 11] = [
    "gpt-2",
    "llama-bpe",
    "qwen2",
    "qwen35",
    "mpt",
    "starcoder",
    "refact",
    "command-r",
    "falcon",
    "deepseek-coder",
    "deepseek-llm",
];

/// The name the converter's own hash table gives: MPT's tokenizer is GPT-NeoX-20B's, which the
/// table lists again, later, as OLMo's (the later entry wins there too); llama.cpp runs both
/// with the same regexes.
fn converter_name(pre: &str) -> &str {
    match pre {
        "mpt" => "olmo",
        "qwen35" => "qwen2",
        other => other,
    }
}

/// The vocabulary as its model's published tokenizer has it. Llama 3's tokenizer.json prepends
/// `<|begin_of_text|>` (which changes the probe's hash); the 2024 vocabulary file predates the
/// `add_bos_token` key and does not record it.
fn as_published(name: &str, meta: &Metadata) -> Vocab {
    let mut vocab = Vocab::from_metadata(meta).unwrap();
    if name == "llama-bpe" {
        vocab.add_flags.push(("bos".into(), true));
    }
    vocab
}

#[test]
fn every_shipped_bpe_vocabulary_exports_a_tokenizer_detected_as_its_own_pre_that_tokenizes_its_cases() {
    let mut failures = Vec::new();
    for name in BPE_VOCABS {
        let tmp = tempfile::tempdir().unwrap();
        let meta = metadata(&vocab_file(name));
        let vocab = as_published(name, &meta);
        assert_eq!(vocab.model, "gpt2", "{name}");
        export::write_hf_tokenizer(&vocab, tmp.path()).unwrap();
        let hf = tokenizers::Tokenizer::from_file(tmp.path().join("tokenizer.json")).unwrap();
        let hash = pre::chkhsh(&hf).unwrap();
        if pre::known_pre(&hash) != Some(converter_name(&vocab.pre)) {
            failures.push(format!("{name}: chkhsh {hash} names {:?}", pre::known_pre(&hash)));
        }
        for (i, (text, want)) in cases(name).iter().enumerate() {
            let got: Vec<i32> = hf.encode(text.as_str(), false).unwrap().get_ids().iter().map(|&t| t as i32).collect();
            if &got != want {
                failures.push(format!("{name}: the exported tokenizer.json on case {i} {text:?}: {got:?} != {want:?}"));
                break;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The token types today's converter writes for the file's tokens: added tokens that look special
/// (`<|...|>`, `<pad>`, …: `does_token_look_special`) are CONTROL; some 2024 files, made before
/// that rule, have them USER_DEFINED (Command-R's `<|START_OF_TURN_TOKEN|>`).
fn with_current_token_types(meta: &Metadata) -> Metadata {
    let tokens = strings(meta, "tokenizer.ggml.tokens");
    let looks_special = |t: &str| {
        matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
            || (t.starts_with("<|") && t.ends_with("|>"))
            || (t.starts_with("<\u{ff5c}") && t.ends_with("\u{ff5c}>"))
    };
    let mut out = meta.clone();
    for (k, v) in out.iter_mut() {
        if k == "tokenizer.ggml.token_type" {
            let types = v.as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as i32);
            let fixed = types.zip(&tokens).map(|(t, tok)| if t == 4 && looks_special(tok) { 3 } else { t });
            *v = GgufValue::i32s(fixed);
        }
    }
    out
}

#[test]
fn every_shipped_bpe_vocabulary_converts_from_its_tokenizer_json_and_llama_cpp_tokenizes_its_cases() {
    for name in BPE_VOCABS {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("hf");
        let meta = metadata(&vocab_file(name));
        let vocab = as_published(name, &meta);
        let spec = SynthSpec {
            n_layer: 1,
            n_embd: 16,
            n_head: 2,
            n_head_kv: 2,
            n_ff: 32,
            vocab_size: vocab.tokens.len(),
            tied_embeddings: true,
            ..SynthSpec::tiny_llama()
        };
        synth::write_llama_weights(&dir, &spec).unwrap();
        export::write_hf_tokenizer(&vocab, &dir).unwrap();
        let gguf = tmp.path().join("model.gguf");
        convert(&dir, &gguf, &ConvertOptions::new(Scheme::F32)).unwrap();
        let got = metadata(&gguf);
        let want = with_current_token_types(&meta);
        for key in
            ["tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges"]
        {
            assert_same_value(&got, &want, key, name);
        }
        let pre = microscale::gguf::meta_get(&got, "tokenizer.ggml.pre").and_then(|v| v.as_str()).map(str::to_string);
        assert_eq!(pre.as_deref(), Some(converter_name(&vocab.pre)), "{name}");
        assert_llama_cpp_tokenizes_cases(&gguf, name, true);
    }
}

/// The shipped files themselves, through the engine: proves the case reader and the engine's
/// tokenizer call (add_special and parse_special off, as test-tokenizer-0).
#[test]
fn llama_cpp_tokenizes_every_case_with_the_shipped_vocabulary_files() {
    for name in BPE_VOCABS.iter().chain(&["llama-spm", "phi-3"]) {
        assert_llama_cpp_tokenizes_cases(&vocab_file(name), name, false);
    }
}

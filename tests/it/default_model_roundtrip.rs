//! The default model (SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF) through the whole front end:
//! GGUF → `import` → Hugging Face directory → `convert --outtype f32` → llama.cpp.
//!
//! Needs the model fetched by `scripts/fetch-default-model.sh` (the README's test command runs it);
//! without it these tests fail, never skip.

use crate::common;

use microscale::convert::{convert, import::import, ConvertOptions, OutType};
use microscale::engine::Model;
use microscale::eval::perplexity::{perplexity_of_tokens, PerplexityOptions};
use microscale::gguf::{GgufFile, GgufValue};
use microscale::quant::mix::Scheme;
use microscale::source::gguf::GgufSource;
use microscale::source::TensorSource;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const WIKI_TEST: &str = "data/wikitext-2/wiki.test.raw";

fn source_gguf() -> PathBuf {
    common::default_model::gguf()
}

/// One import + one F32 conversion shared by the tests of this file.
fn converted() -> &'static (tempfile::TempDir, PathBuf, PathBuf) {
    static CELL: OnceLock<(tempfile::TempDir, PathBuf, PathBuf)> = OnceLock::new();
    CELL.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let hf = tmp.path().join("smollm2-135m");
        import(&source_gguf(), &hf, OutType::F32, true).unwrap();
        let f32_gguf = tmp.path().join("smollm2-f32.gguf");
        convert(&hf, &f32_gguf, &ConvertOptions::new(Scheme::F32)).unwrap();
        (tmp, hf, f32_gguf)
    })
}

fn tokenizer_keys(path: &Path) -> BTreeMap<String, GgufValue> {
    let f = GgufFile::open(path).unwrap();
    f.metadata.into_iter().filter(|(k, _)| k.starts_with("tokenizer.")).collect()
}

#[test]
fn tokenizer_metadata_survives_the_round_trip() {
    let (_, _, f32_gguf) = converted();
    let mut want = tokenizer_keys(&source_gguf());
    // The shipped file was made by an older converter; today's writes add_eos_token = false for
    // SmolLM2's tokenizer (its ByteLevel post-processor adds neither BOS nor EOS: gguf-py's
    // SpecialVocab, and llama-cpp-python 0.3.36's convert_hf_to_gguf.py on the imported
    // directory, write exactly this key set).
    assert!(!want.contains_key("tokenizer.ggml.add_eos_token"));
    want.insert("tokenizer.ggml.add_eos_token".into(), GgufValue::Bool(false));
    let got = tokenizer_keys(f32_gguf);
    for key in ["tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.pre"] {
        assert!(want.contains_key(key), "source lacks {key}");
    }
    let want_keys: Vec<_> = want.keys().collect();
    let got_keys: Vec<_> = got.keys().collect();
    assert_eq!(got_keys, want_keys);
    for (k, v) in &want {
        assert!(got[k] == *v, "{k} differs");
    }
}

#[test]
fn weights_are_the_exact_dequantized_source() {
    // Q/K were un-permuted by import and permuted again by convert: every F32 tensor must equal the
    // dequantized source tensor bit for bit, and the names, shapes and order must be the source's.
    let (_, _, f32_gguf) = converted();
    let src = GgufSource::new(GgufFile::open(&source_gguf()).unwrap());
    let out = GgufSource::new(GgufFile::open(f32_gguf).unwrap());
    let names = |s: &GgufSource| s.tensors().iter().map(|t| (t.name.clone(), t.shape.clone())).collect::<Vec<_>>();
    assert_eq!(names(&out), names(&src));
    for t in src.tensors() {
        let a = src.read_f32(&t.name).unwrap();
        let b = out.read_f32(&t.name).unwrap();
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "{} differs", t.name);
    }
}

#[test]
fn gguf_to_gguf_conversion_dequantizes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("direct-f32.gguf");
    convert(&source_gguf(), &out, &ConvertOptions::new(Scheme::F32)).unwrap();
    let (_, _, via_hf) = converted();
    let a = GgufSource::new(GgufFile::open(&out).unwrap());
    let b = GgufSource::new(GgufFile::open(via_hf).unwrap());
    for t in a.tensors() {
        assert_eq!(a.raw(&t.name).unwrap(), b.raw(&t.name).unwrap(), "{}", t.name);
    }
}

#[test]
fn llama_cpp_tokenizes_and_scores_both_files_alike() {
    let (_, _, f32_gguf) = converted();
    let text = std::fs::read_to_string(WIKI_TEST).unwrap();
    let source = Model::load(&source_gguf()).unwrap();
    let ours = Model::load(f32_gguf).unwrap();
    let src_tokens = source.tokenize(&text, true);
    let our_tokens = ours.tokenize(&text, true);
    assert!(src_tokens.len() > 200_000, "wiki.test.raw should be ~300k tokens");
    assert!(src_tokens == our_tokens, "token ids differ");

    let opts = PerplexityOptions::new(microscale::engine::default_threads(), Some(8));
    let a = perplexity_of_tokens(&source, &src_tokens, &opts, true).unwrap();
    let b = perplexity_of_tokens(&ours, &our_tokens, &opts, true).unwrap();
    assert_eq!((a.chunks, b.chunks), (8, 8));
    let rel = (a.ppl - b.ppl).abs() / a.ppl;
    eprintln!("PPL source Q4_1 {:.4}, F32 round trip {:.4} ({:.3}%)", a.ppl, b.ppl, rel * 100.0);
    assert!(a.ppl > 5.0 && a.ppl < 100.0, "implausible perplexity {}", a.ppl);
    assert!(rel < 0.005, "perplexity differs by {:.3}%", rel * 100.0);
}

#[test]
fn import_refuses_a_non_empty_directory() {
    let (_, hf, _) = converted();
    let err = import(&source_gguf(), hf, OutType::F32, true).unwrap_err();
    assert!(format!("{err:#}").contains("not empty"), "{err:#}");
}

/// The directory names the GGUF it came from, so that a study of it measures that file as
/// shipped unasked; a file moved beside the directory is still found, a changed one is not.
#[test]
fn an_imported_directory_names_the_file_it_came_from_while_that_file_is_unchanged() {
    use microscale::convert::import::{as_shipped_default, imported_from};
    let (_, hf, _) = converted();
    let source = std::path::absolute(source_gguf()).unwrap();
    assert_eq!(imported_from(hf), Some(source.clone()));
    assert_eq!(as_shipped_default(hf), Some(source.clone()));
    assert_eq!(as_shipped_default(&source), Some(source.clone()), "a GGUF is its own");
    assert_eq!(imported_from(&common::default_model::hf_dir().join("no-such")), None);

    // Both moved elsewhere together (the recorded path no longer exists): found beside the directory.
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir(&a).unwrap();
    std::fs::copy(&source, a.join("model.gguf")).unwrap();
    import(&a.join("model.gguf"), &a.join("imported"), OutType::F32, true).unwrap();
    assert_eq!(imported_from(&a.join("imported")), Some(a.join("model.gguf")));
    std::fs::rename(&a, &b).unwrap();
    let copy = b.join("model.gguf");
    assert_eq!(imported_from(&b.join("imported")), Some(copy.clone()), "not found beside the directory");
    let dir = b.join("imported");
    // A changed file is not the one imported.
    let mut bytes = std::fs::read(&copy).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&copy, bytes).unwrap();
    assert_eq!(imported_from(&dir), None, "a changed file was taken for the one imported");
}

//! Bad input gets one clear error line naming the problem and the file, a non-zero exit, no panic,
//! and leaves no output behind.

use crate::common;

use common::synth::{self, SynthSpec};
use std::path::Path;
use std::process::Command;

/// Run the binary; return (exit code, stderr).
fn microscale(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_microscale")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The command fails cleanly with a message containing every one of `needles`, and `dir` gains no files.
fn assert_clean_failure(args: &[&str], needles: &[&str], dir: &Path) {
    let before: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    let (code, stderr) = microscale(args);
    assert_eq!(code, 1, "exit code for {args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "panic for {args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line for {args:?}, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "{args:?}: {:?} lacks {n:?}", lines[0]);
    }
    let after: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(before, after, "{args:?} left files behind");
}

fn llama_dir(root: &Path) -> std::path::PathBuf {
    let dir = root.join("llama");
    std::fs::create_dir(&dir).unwrap();
    synth::write_llama_checkpoint(&dir, &SynthSpec::tiny_llama()).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn truncated_safetensors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = llama_dir(tmp.path());
    let st = dir.join("model.safetensors");
    let len = std::fs::metadata(&st).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&st).unwrap().set_len(len - 1000).unwrap();
    let out = tmp.path().join("out.gguf");
    assert_clean_failure(
        &["convert", s(&dir), "-o", s(&out), "--outtype", "f32"],
        &["model.safetensors", "truncated"],
        tmp.path(),
    );
}

#[test]
fn safetensors_header_with_lying_offsets() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = llama_dir(tmp.path());
    let st = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&st).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[8..8 + n].to_vec()).unwrap();
    // Shift the first data offset pair: same length, so the header still parses.
    let at = header.find("\"data_offsets\":[0,").expect("a tensor at offset 0");
    let mut lied = header.clone();
    lied.replace_range(at..at + 18, "\"data_offsets\":[4,");
    bytes[8..8 + n].copy_from_slice(lied.as_bytes());
    std::fs::write(&st, bytes).unwrap();
    let out = tmp.path().join("out.gguf");
    assert_clean_failure(&["convert", s(&dir), "-o", s(&out)], &["model.safetensors", "offsets"], tmp.path());
}

#[test]
fn gguf_with_bad_magic() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.gguf");
    std::fs::write(&bad, b"GGUX\x03\x00\x00\x00rest of a file").unwrap();
    let out = tmp.path().join("out.gguf");
    assert_clean_failure(&["convert", s(&bad), "-o", s(&out)], &["bad.gguf", "magic"], tmp.path());
    assert_clean_failure(&["inspect", s(&bad)], &["bad.gguf", "magic"], tmp.path());
}

#[test]
fn gguf_with_a_truncated_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = llama_dir(tmp.path());
    let good = tmp.path().join("good.gguf");
    let (code, err) = microscale(&["convert", s(&dir), "-o", s(&good), "--outtype", "f16", "-q"]);
    assert_eq!(code, 0, "{err}");
    let cut = tmp.path().join("cut.gguf");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() - 4096]).unwrap();
    let out = tmp.path().join("out.gguf");
    assert_clean_failure(&["convert", s(&cut), "-o", s(&out)], &["cut.gguf", "truncated"], tmp.path());
    let cut_header = tmp.path().join("cut-header.gguf");
    std::fs::write(&cut_header, &bytes[..200]).unwrap();
    assert_clean_failure(
        &["import", s(&cut_header), "-o", s(&tmp.path().join("hf"))],
        &["cut-header.gguf", "truncated"],
        tmp.path(),
    );
}

#[test]
fn missing_config_json() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = llama_dir(tmp.path());
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let out = tmp.path().join("out.gguf");
    assert_clean_failure(&["convert", s(&dir), "-o", s(&out)], &["config.json", "llama"], tmp.path());
}

#[test]
fn unknown_architecture() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = llama_dir(tmp.path());
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap().replace("LlamaForCausalLM", "MambaForCausalLM");
    std::fs::write(dir.join("config.json"), cfg).unwrap();
    let out = tmp.path().join("out.gguf");
    assert_clean_failure(&["convert", s(&dir), "-o", s(&out)], &["MambaForCausalLM", "config.json"], tmp.path());
}

#[test]
fn non_finite_weights_name_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = llama_dir(tmp.path());
    // Overwrite the first f32 of a known tensor with NaN.
    let st = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&st).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let name = "model.layers.1.mlp.up_proj.weight";
    let start = header[name]["data_offsets"][0].as_u64().unwrap() as usize + 8 + n;
    bytes[start..start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&st, bytes).unwrap();
    let out = tmp.path().join("out.gguf");
    assert_clean_failure(&["convert", s(&dir), "-o", s(&out), "--outtype", "f16"], &[name, "non-finite"], tmp.path());
}

#[test]
fn refuses_to_overwrite_the_input() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = llama_dir(tmp.path());
    let gguf = tmp.path().join("m.gguf");
    assert_eq!(microscale(&["convert", s(&dir), "-o", s(&gguf), "-q"]).0, 0);
    let before = std::fs::read(&gguf).unwrap();
    // Through another spelling of the same path.
    let other = tmp.path().join(".").join("m.gguf");
    assert_clean_failure(
        &["convert", s(&gguf), "-o", s(&other), "--outtype", "f32"],
        &["overwrite the input"],
        tmp.path(),
    );
    assert_eq!(std::fs::read(&gguf).unwrap(), before);
}

/// The tiny LLaMA as a GGUF of `outtype`.
fn tiny_gguf(root: &Path, outtype: &str) -> std::path::PathBuf {
    let dir = root.join(format!("llama-{outtype}"));
    std::fs::create_dir(&dir).unwrap();
    synth::write_llama_checkpoint(&dir, &SynthSpec::tiny_llama()).unwrap();
    let out = root.join(format!("tiny-{outtype}.gguf"));
    let (code, err) = microscale(&["convert", s(&dir), "-o", s(&out), "--outtype", outtype, "-q"]);
    assert_eq!(code, 0, "{err}");
    out
}

/// Rewrite a GGUF through microscale's writer, letting `edit` change metadata and tensors (each
/// tensor's bytes are regenerated as zeros of the right size for its possibly new shape).
fn rewrite_gguf(
    src: &Path,
    dst: &Path,
    edit: impl FnOnce(&mut microscale::gguf::Metadata, &mut Vec<microscale::gguf::TensorInfo>),
) {
    use microscale::gguf::{GgufFile, GgufWriter, TensorInfo};
    let f = GgufFile::open(src).unwrap();
    let mut meta = f.metadata.clone();
    meta.retain(|(k, _)| k != "general.alignment");
    let mut headers: Vec<TensorInfo> =
        f.tensors.iter().map(|t| TensorInfo::new(&t.name, t.ne.clone(), t.ggml_type).unwrap()).collect();
    edit(&mut meta, &mut headers);
    let mut w = GgufWriter::create(dst, &meta, headers.clone()).unwrap();
    for h in &headers {
        let n = TensorInfo::new(&h.name, h.ne.clone(), h.ggml_type).unwrap().n_bytes;
        w.write_tensor(&h.name, &vec![0u8; n as usize]).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn a_gguf_shape_that_disagrees_with_the_hyper_parameters_is_refused_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tiny_gguf(tmp.path(), "f16");
    let lie = tmp.path().join("lie.gguf");
    rewrite_gguf(&good, &lie, |_, t| {
        let down = t.iter_mut().find(|h| h.name == "blk.0.ffn_down.weight").unwrap();
        assert_eq!(down.ne, vec![128, 64]);
        down.ne = vec![127, 64];
    });
    let out = tmp.path().join("out.gguf");
    for args in [
        vec!["convert", s(&lie), "-o", s(&out), "--outtype", "f32"],
        vec!["import", s(&lie), "-o", s(&tmp.path().join("hf-out"))],
    ] {
        assert_clean_failure(&args, &["lie.gguf", "blk.0.ffn_down.weight", "[127, 64]", "[128, 64]"], tmp.path());
    }
    // A 1-D token_embd, and head_count 0: the same check, not a panic.
    let flat = tmp.path().join("flat.gguf");
    rewrite_gguf(&good, &flat, |_, t| {
        let e = t.iter_mut().find(|h| h.name == "token_embd.weight").unwrap();
        e.ne = vec![e.ne[0] * e.ne[1]];
    });
    assert_clean_failure(
        &["import", s(&flat), "-o", s(&tmp.path().join("hf-out"))],
        &["flat.gguf", "token_embd.weight"],
        tmp.path(),
    );
    let headless = tmp.path().join("headless.gguf");
    rewrite_gguf(&good, &headless, |m, _| {
        microscale::gguf::meta_set(m, "llama.attention.head_count", microscale::gguf::GgufValue::U32(0));
    });
    for args in [
        vec!["import", s(&headless), "-o", s(&tmp.path().join("hf-out"))],
        vec!["convert", s(&headless), "-o", s(&out)],
    ] {
        assert_clean_failure(&args, &["headless.gguf", "head_count"], tmp.path());
    }
    // An out-of-range special token id.
    let special = tmp.path().join("special.gguf");
    rewrite_gguf(&good, &special, |m, _| {
        microscale::gguf::meta_set(m, "tokenizer.ggml.eos_token_id", microscale::gguf::GgufValue::U32(99_999));
    });
    assert_clean_failure(
        &["import", s(&special), "-o", s(&tmp.path().join("hf-out"))],
        &["special.gguf", "eos_token_id", "99999"],
        tmp.path(),
    );
}

#[test]
fn a_tensor_claiming_2_pow_62_elements_is_refused_by_every_reader() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tiny_gguf(tmp.path(), "f16");
    // Patch the one dimension of output_norm.weight (1-D, f32) to 2^62: the byte size would wrap.
    let mut bytes = std::fs::read(&good).unwrap();
    let name = b"output_norm.weight";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    assert_eq!(u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()), 1, "1-D");
    bytes[at + 4..at + 12].copy_from_slice(&(1u64 << 62).to_le_bytes());
    let huge = tmp.path().join("huge.gguf");
    std::fs::write(&huge, bytes).unwrap();
    let out = tmp.path().join("out.gguf");
    assert_clean_failure(&["inspect", s(&huge)], &["huge.gguf", "output_norm.weight"], tmp.path());
    assert_clean_failure(&["convert", s(&huge), "-o", s(&out)], &["huge.gguf", "output_norm.weight"], tmp.path());
}

#[test]
fn config_values_that_make_no_sense_are_errors_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = llama_dir(tmp.path());
    let original = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let out = tmp.path().join("out.gguf");
    for (key, value) in [
        ("num_hidden_layers", "0"),
        ("rms_norm_eps", "-1"),
        ("rms_norm_eps", "\"x\""),
        ("hidden_size", "63"),
        ("num_attention_heads", "0"),
        ("num_key_value_heads", "3"),
        ("vocab_size", "18446744073709551615"),
        ("rope_theta", "0"),
        ("max_position_embeddings", "-5"),
        ("tie_word_embeddings", "\"yes\""),
    ] {
        let mut cfg: serde_json::Value = serde_json::from_str(&original).unwrap();
        cfg[key] = serde_json::from_str(value).unwrap();
        std::fs::write(dir.join("config.json"), serde_json::to_string(&cfg).unwrap()).unwrap();
        let needle = if key == "num_key_value_heads" || key == "hidden_size" { "heads" } else { key };
        assert_clean_failure(&["convert", s(&dir), "-o", s(&out)], &["config.json", needle], tmp.path());
    }
    // More layers in the weights than config.json says: the extra block is named.
    let mut cfg: serde_json::Value = serde_json::from_str(&original).unwrap();
    cfg["num_hidden_layers"] = 1.into();
    std::fs::write(dir.join("config.json"), serde_json::to_string(&cfg).unwrap()).unwrap();
    assert_clean_failure(&["convert", s(&dir), "-o", s(&out)], &["blk.1.", "model.layers.1."], tmp.path());
}

/// Keys that change the model's math and that microscale does not handle: an error naming the
/// key, never a silent default.
#[test]
fn unhandled_rope_types_sliding_windows_and_other_math_changing_keys_are_errors_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = llama_dir(tmp.path());
    let original = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let out = tmp.path().join("out.gguf");
    let cases: &[(&str, &str, &[&str])] = &[
        ("rope_scaling", r#"{"rope_type": "dynamic", "factor": 2.0}"#, &["rope_scaling.rope_type", "dynamic"]),
        ("rope_scaling", r#"{"type": "longrope", "factor": 2.0}"#, &["rope_scaling.rope_type", "longrope"]),
        ("rope_parameters", r#"{"rope_type": "su", "rope_theta": 10000.0}"#, &["rope_parameters.rope_type", "su"]),
        (
            "rope_parameters",
            r#"{"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0}"#,
            &["original_max_position_embeddings"],
        ),
        ("rope_scaling", "7", &["rope_scaling"]),
        ("sliding_window", "4096", &["sliding_window", "4096"]),
        ("layer_types", r#"["sliding_attention", "full_attention"]"#, &["layer_types"]),
        ("hidden_act", r#""gelu""#, &["hidden_act", "gelu"]),
        ("partial_rotary_factor", "0.5", &["partial_rotary_factor"]),
        ("attn_logit_softcapping", "50.0", &["attn_logit_softcapping"]),
        ("num_local_experts", "8", &["num_local_experts"]),
    ];
    for (key, value, needles) in cases {
        let mut cfg: serde_json::Value = serde_json::from_str(&original).unwrap();
        cfg[*key] = serde_json::from_str(value).unwrap();
        std::fs::write(dir.join("config.json"), serde_json::to_string(&cfg).unwrap()).unwrap();
        let mut want = vec!["config.json"];
        want.extend_from_slice(needles);
        assert_clean_failure(&["convert", s(&dir), "-o", s(&out)], &want, tmp.path());
    }
    // Mistral's sliding window is refused the same way; Qwen2's counts only with use_sliding_window.
    for (arch, extra) in [
        ("MistralForCausalLM", serde_json::json!({"sliding_window": 4096})),
        ("Qwen2ForCausalLM", serde_json::json!({"sliding_window": 4096, "use_sliding_window": true})),
    ] {
        let mut cfg: serde_json::Value = serde_json::from_str(&original).unwrap();
        cfg["architectures"] = serde_json::json!([arch]);
        synth::merge_config(&mut cfg, &extra);
        std::fs::write(dir.join("config.json"), serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_clean_failure(&["convert", s(&dir), "-o", s(&out)], &["config.json", "sliding_window"], tmp.path());
    }
}

#[test]
fn requantizing_a_quantized_gguf_needs_allow_requantize() {
    let tmp = tempfile::tempdir().unwrap();
    let q8 = tiny_gguf(tmp.path(), "q8_0");
    let out = tmp.path().join("out.gguf");
    assert_clean_failure(
        &["convert", s(&q8), "-o", s(&out), "--outtype", "q4_0"],
        &["tiny-q8_0.gguf", "already q8_0", "--allow-requantize"],
        tmp.path(),
    );
    // Dequantizing is exact, and a same-type copy is no re-quantization: both allowed.
    for outtype in ["f32", "q8_0"] {
        let (code, err) = microscale(&["convert", s(&q8), "-o", s(&out), "--outtype", outtype, "-q"]);
        assert_eq!(code, 0, "{outtype}: {err}");
        std::fs::remove_file(&out).unwrap();
    }
    let (code, err) = microscale(&["convert", s(&q8), "-o", s(&out), "--outtype", "q4_0", "--allow-requantize", "-q"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.exists());
}

#[test]
fn an_imatrix_that_does_not_match_a_tensor_is_an_error_naming_both() {
    use microscale::gguf::imatrix::{Imatrix, ImatrixEntry};
    let tmp = tempfile::tempdir().unwrap();
    let dir = llama_dir(tmp.path());
    let mut m = Imatrix { datasets: vec!["t".into()], chunk_count: 1, chunk_size: 64, ..Default::default() };
    // blk.0.ffn_down.weight has rows of 128 (n_ff); this entry has 64 values.
    m.entries.insert("blk.0.ffn_down.weight".into(), ImatrixEntry { sums: vec![1.0; 64], counts: vec![1.0] });
    let im = tmp.path().join("other.imatrix.gguf");
    m.save(&im).unwrap();
    let out = tmp.path().join("out.gguf");
    assert_clean_failure(
        &["convert", s(&dir), "-o", s(&out), "--outtype", "q4_0", "--imatrix", s(&im)],
        &["other.imatrix.gguf", "blk.0.ffn_down.weight", "64 values", "128"],
        tmp.path(),
    );
    // A legacy imatrix whose name length is negative.
    let legacy = tmp.path().join("negative.dat");
    let mut b = 1i32.to_le_bytes().to_vec();
    b.extend((-5i32).to_le_bytes());
    b.extend([0u8; 32]);
    std::fs::write(&legacy, b).unwrap();
    assert_clean_failure(
        &["convert", s(&dir), "-o", s(&out), "--outtype", "q4_0", "--imatrix", s(&legacy)],
        &["negative.dat", "-5"],
        tmp.path(),
    );
}

#[test]
fn impossible_flag_values_are_one_line_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (vec!["eval", "m.gguf", "-c", "0"], "--ctx-size"),
        (vec!["eval", "m.gguf", "--threads", "0"], "--threads"),
        (vec!["eval", "m.gguf", "--chunks", "0"], "--chunks"),
        (vec!["bench", "m.gguf", "--reps", "0"], "--reps"),
        (vec!["convert", "m", "-o", "x.gguf", "--calib-chunks", "0"], "--calib-chunks"),
        (vec!["sweep", "--model", "m", "--grid", "g", "--out", "o", "--threads", "0"], "--threads"),
    ] {
        let before: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        let out = Command::new(env!("CARGO_BIN_EXE_microscale")).current_dir(tmp.path()).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: {err}");
        assert!(lines[0].starts_with("error: ") && lines[0].contains(needle), "{args:?}: {err}");
        assert_eq!(before.len(), std::fs::read_dir(tmp.path()).unwrap().count());
    }
}

/// A context whose KV cache alone exceeds the machine's memory is refused before llama.cpp
/// allocates it, as out of memory (the exit code a measuring parent reads as "does not fit"), in
/// one line that says what it needs and what is free; a thread count past ggml's thread pool is
/// a usage error.
#[test]
fn a_context_past_the_free_memory_is_out_of_memory_before_allocation() {
    let model = common::default_model::gguf();
    let m = model.to_str().unwrap();
    // SmolLM2-135M: 30 blocks × 2 × 192 KV values × 2 bytes = 23 KB a token; 2^24 tokens is 386 GB.
    let (code, stderr) = microscale(&["generate", m, "-p", "hi", "-n", "1", "-c", "16777216", "-q"]);
    assert_eq!(code, microscale::record::status::EXIT_OUT_OF_MEMORY, "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("16777216 tokens") && lines[0].contains("needs") && lines[0].contains("free"),
        "{stderr}"
    );
    let (code, stderr) = microscale(&["generate", m, "-p", "hi", "-n", "1", "-t", "513"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--threads") && stderr.contains("512"), "{stderr}");
}

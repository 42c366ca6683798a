//! Bad input gets one clear error line naming the problem and the file, a non-zero exit, no panic,
//! and leaves no output behind.

mod common;

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

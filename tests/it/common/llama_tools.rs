//! llama.cpp's own command-line tools as test oracles, built once by scripts/build-llama-tools.sh.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory holding llama-imatrix, llama-quantize and llama-perplexity.
pub fn dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("scripts/build-llama-tools.sh")).output().unwrap();
    assert!(out.status.success(), "building llama.cpp's tools failed: {}", String::from_utf8_lossy(&out.stderr));
    let dir = String::from_utf8(out.stdout).unwrap().lines().last().unwrap().to_string();
    root.join(dir)
}

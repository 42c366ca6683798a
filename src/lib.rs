//! microscale: shrink open LLMs for edge devices, and measure how far they can shrink and stay useful.
//!
//! The library follows the data flow, one folder per stage; the `microscale` binary is a thin CLI
//! over it (`src/cli/`). Each stage uses only the stages listed above it here (a test,
//! `tests/it/layering.rs`, keeps it so):
//!
//! - [`util`]: atomic outputs, progress bars, memory maps, the data folder, a seeded RNG.
//! - [`quant`]: ggml's tensor types (one table), their formats bit-exact with ggml, and
//!   llama.cpp's per-tensor type choice (schemes such as `q4_k_m`).
//! - [`gguf`]: the GGUF container: metadata values, a validating reader, a streaming writer,
//!   imatrix files.
//! - [`source`]: Hugging Face safetensors directories and GGUF files as tensor sources; `inspect`.
//! - [`tokenizer`]: vocabularies, to and from llama.cpp's `tokenizer.ggml.*` metadata.
//! - [`arch`]: how each architecture's tensors and config map onto llama.cpp's GGUF, and the
//!   shape checks llama.cpp's loader makes.
//! - [`engine`]: the llama.cpp engine (via `llama-cpp-2` / `llama-cpp-sys-2`).
//! - [`calib`]: calibration statistics collected inside llama.cpp (imatrix, Block Influence).
//! - [`prune`]: unstructured and structured pruning.
//! - [`convert`]: the streaming conversion pipeline (`convert`, `import`).
//! - [`record`]: the record schema every measurement is written in: metric rows, model identity,
//!   statuses, results.csv columns.
//! - [`sandbox`]: child processes under a device's caps, and how they ended (fits, oom, crash,
//!   error, timeout).
//! - [`eval`]: evaluation through the engine (perplexity, KL divergence, tasks).
//! - [`bench`]: benchmarks under edge-device caps, and quantizer throughput.
//! - [`sweep`]: the experiment grid, crash-isolated, one row per variant.
//! - [`report`]: report.md and plots from results.csv.
//! - [`shrink`]: the smallest GGUF within a quality budget on a device, found by search (a study
//!   run through `sweep`, judged as `report` judges).
//! - [`mobile`]: a study's baseline and sweet spots exported to LiteRT (Android's runtime) and
//!   measured beside their GGUF twins (`sweep --litert`).

pub mod util;

pub mod quant;

pub mod gguf;

pub mod source;

pub mod tokenizer;

pub mod arch;

pub mod engine;

pub mod calib;

pub mod prune;

pub mod convert;

pub mod record;

pub mod sandbox;

pub mod bench;
pub mod eval;

pub mod export;

pub mod sweep;

pub mod report;

pub mod shrink;

pub mod mobile;

/// The stages in the order above: a stage may use the stages before it, never one after it
/// (`eval` and `bench` share a level and do not use each other).
pub const LAYERS: &[&[&str]] = &[
    &["util"],
    &["quant"],
    &["gguf"],
    &["source"],
    &["tokenizer"],
    &["arch"],
    &["engine"],
    &["calib"],
    &["prune"],
    &["convert"],
    &["record"],
    &["sandbox"],
    &["eval", "bench"],
    &["export"],
    &["sweep"],
    &["report"],
    &["shrink", "mobile"],
];

//! Evaluation through the llama.cpp engine: perplexity and KL divergence with llama-perplexity's
//! semantics, and multiple-choice tasks (SST-2, ARC, any JSONL) scored by log-likelihood.
//!
//! Uses `engine`, `record` (its results are metric rows) and `util` (the data folder).

pub mod choice;
pub mod data;
pub mod kld;
pub mod perplexity;
pub mod run;

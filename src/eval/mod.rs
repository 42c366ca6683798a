//! Evaluation through the llama.cpp engine.

pub mod perplexity;

//! The integration tests, one binary: each area a module (`cargo test --release --test it bench::`
//! runs one area). One binary links llama.cpp once, where one binary per file linked it 27 times.
//! `tests/quant_oracle.rs` stays a binary of its own: `scripts/test-aarch64.sh` cross-builds it
//! alone for aarch64 and runs it under qemu.

mod common;

mod aarch64;
mod bad_input;
mod bad_input_corpus;
mod bench;
mod budget;
mod compensation;
mod default_model_roundtrip;
mod engine_build;
mod eval;
mod export;
mod generate;
mod ggml_oracle;
mod gpt2_medium;
mod gpu_layers;
mod imatrix;
mod layering;
mod paired;
mod prune;
mod quant_whole_file;
mod reference_selfcheck;
mod report;
mod same_bytes;
mod sequential;
mod shrink;
mod slurm;
mod sweep;
mod synthetic_models;
mod vocabs;

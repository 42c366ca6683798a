//! Shared test support: synthetic HF checkpoints, a reference forward pass, llama.cpp's tools.
#![allow(dead_code)]

pub mod default_model;
pub mod digests;
pub mod ggml;
pub mod llama_tools;
pub mod reference;
pub mod synth;

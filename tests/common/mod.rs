//! Shared test support: synthetic HF checkpoints and a reference forward pass.
#![allow(dead_code)]

pub mod default_model;
pub mod reference;
pub mod synth;

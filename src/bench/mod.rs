//! Benchmarks that are features of the tool: quantizer throughput against ggml's own.

pub mod quant;

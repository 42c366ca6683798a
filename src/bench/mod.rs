//! Benchmarks that are features of the tool: edge-device benchmarking under caps (`bench`), and
//! quantizer throughput against ggml's own (`bench-quant`).

pub mod caps;
pub mod child;
pub mod profiles;
pub mod quant;
pub mod run;

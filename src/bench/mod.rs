//! Benchmarks that are features of the tool: edge-device benchmarking under caps (`bench`), and
//! quantizer throughput against ggml's own (`bench-quant`). The measuring child runs in
//! [`crate::sandbox`], which caps it and names how it ended.
//!
//! Uses `sandbox`, `engine`, `record`, `source` (a model's summary), `quant`, `util`.

pub mod child;
pub mod device;
pub mod generate;
pub mod profiles;
pub mod quant;
pub mod run;

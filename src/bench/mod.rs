//! Benchmarks that are features of the tool: edge-device benchmarking under caps (`bench`), and
//! quantizer throughput against ggml's own (`bench-quant`). A measuring child's end is named by
//! [`status`].

pub mod caps;
pub mod child;
pub mod profiles;
pub mod quant;
pub mod run;
pub mod status;

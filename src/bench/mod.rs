//! Benchmarks that are features of the tool: edge-device benchmarking under caps (`bench`), and
//! quantizer throughput against ggml's own (`bench-quant`). How a measuring child ended is named
//! by [`failure`] with `record`'s statuses.
//!
//! Uses `engine`, `record`, `source` (a model's summary), `quant`, `util`.

pub mod caps;
pub mod child;
pub mod device;
pub mod failure;
pub mod generate;
pub mod profiles;
pub mod quant;
pub mod run;

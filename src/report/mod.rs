//! The report: results.csv (read through `record`) in, report.md and PNG plots out — trade-off
//! curves against file size, the Pareto frontier, llama.cpp's stock quants drawn apart, and the
//! sweet spot per device profile.
//!
//! Uses `record` only: a report can be written on any machine from a results.csv.

pub mod markdown;
pub mod pareto;
pub mod plots;
pub mod sweet_spot;

//! The report: results.csv (read through `record`) in, report.md and PNG plots out — trade-off
//! curves against file size, the Pareto frontier, llama.cpp's stock quants drawn apart, and the
//! sweet spot per device profile, judged at 95% confidence from the paired comparisons
//! ([`paired`]) when the sweep left item files beside results.csv.
//!
//! Uses `record` and `util` only: a report can be written on any machine from a results.csv (and
//! its `items/`).

pub mod devices;
pub mod litert;
pub mod markdown;
pub mod paired;
pub mod pareto;
pub mod plots;
pub mod speeds;
pub mod sweet_spot;

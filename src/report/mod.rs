//! Results as rows: one CSV convention shared by `eval`, `bench` and `sweep`, so that every
//! measurement can be appended to one file and read back by `report`.

pub mod markdown;
pub mod pareto;
pub mod plots;
pub mod results;
pub mod rows;
pub mod sweet_spot;

//! Results as rows: one CSV convention shared by `eval`, `bench` and `sweep`, so that every
//! measurement can be appended to one file and read back by `report`.

pub mod rows;

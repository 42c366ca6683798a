//! The record schema: how every measurement is written down, by `eval`, `bench` and `sweep`,
//! and read back by `report`.
//!
//! - [`rows`]: one metric of one model (`eval --csv`, `bench --csv`) and the model's identity.
//! - [`status`]: how a measuring child ended (`fits`, `oom`, `crash`, `error`, `timeout`).
//! - [`columns`]: the names of the measurements and the columns of results.csv, defined once.
//! - [`results`]: results.csv read back into typed rows.
//! - [`device_rows`]: rows measured on the device itself (`bench --out`), read by `report --device-rows`.
//! - [`items`]: per-variant item files (`OUT/items/NAME.json`): what each window and item scored,
//!   for paired comparisons.
//! - [`speeds`]: how `sweep --rebench` re-took a study's speeds (`OUT/speeds.json`), every round kept.
//! - [`twins`]: the study's picks on LiteRT beside their GGUF twins (`export --study`,
//!   `OUT/litert/results.csv`).
//!
//! Uses `source` (a model's identity), `util`.

pub mod columns;
pub mod device_rows;
pub mod items;
pub mod results;
pub mod rows;
pub mod speeds;
pub mod status;
pub mod twins;

pub use status::Status;

//! Small shared pieces: atomic outputs, progress bars, the data folder, test-only fault injection.

pub mod atomic;
pub mod data;
pub mod fault;
pub mod progress;

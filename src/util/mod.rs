//! Small shared pieces: atomic outputs and progress bars.

pub mod atomic;
pub mod progress;

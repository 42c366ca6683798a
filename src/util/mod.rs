//! Small shared pieces, the lowest stage: atomic outputs, named choices (flags' values), progress bars, memory maps that release
//! their pages, the output policy (paths), the data folder, a seeded RNG, block tensor names (`blk.N.*`), dense f64 linear algebra, paired bootstrap
//! intervals, test-only fault injection.

pub mod atomic;
pub mod choice;
pub mod data;
pub mod digest;
pub mod direct;
pub mod fault;
pub mod linalg;
pub mod mem;
pub mod mmap;
pub mod names;
pub mod paths;
pub mod progress;
pub mod rng;
pub mod stats;
pub mod tensor_name;

//! The GGUF container: types, a validating memory-mapped reader and a streaming writer.

pub mod reader;
pub mod types;
pub mod writer;

pub use reader::{GgufFile, GgufTensorInfo};
pub use types::{file_type, meta_get, meta_set, GgmlType, GgufValue, Metadata};
pub use writer::{GgufWriter, TensorHeader};

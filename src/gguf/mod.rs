//! The GGUF container: typed metadata values, tensor descriptions, a validating memory-mapped
//! reader, a streaming writer, and llama.cpp's imatrix files (a GGUF of their own).
//!
//! Uses `quant` (ggml types) and `util`.

pub mod imatrix;
pub mod reader;
pub mod tensor;
pub mod value;
pub mod writer;

pub use reader::GgufFile;
pub use tensor::TensorInfo;
pub use value::{meta_get, meta_set, GgufValue, Metadata};
pub use writer::GgufWriter;

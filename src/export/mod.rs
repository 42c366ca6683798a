//! Export to phones' own runtimes, with the vendors' converters: LiteRT (the former TensorFlow
//! Lite; Android's on-device stack) through `litert-torch`. The weights the converter reads are
//! microscale's: a GGUF is dequantized to a Hugging Face directory first (`convert::import`), so
//! pruned or quantized files microscale wrote export like a checkpoint. The converters run in the
//! export environment ([`crate::engine::python_env`]).

pub mod litert;

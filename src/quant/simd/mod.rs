//! Vector versions of scalar reference code, one file per instruction set. Each does the scalar
//! code's operations in the same order, one IEEE rounding each (no fused multiply-add), so every
//! lane is bit-identical to the reference it stands beside (`quant::common`), and the quantizer
//! oracle (`tests/quant_oracle.rs`) checks the bytes against ggml's on each CPU. An aarch64 (NEON)
//! file goes beside `x86_64.rs`; until then aarch64 runs the scalar reference.

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;

//! ggml's own quantizer and dequantizer (linked through llama-cpp-sys-2), the oracles.

use llama_cpp_sys_2 as sys;
use microscale::quant::GgmlType;
use std::sync::{Mutex, MutexGuard};

/// Calls into ggml's quantizers one at a time: they share tables built on first use.
static GGML: Mutex<()> = Mutex::new(());

pub fn lock() -> MutexGuard<'static, ()> {
    GGML.lock().unwrap_or_else(|e| e.into_inner())
}

/// `ggml_quantize_chunk` over whole rows.
pub fn quantize(t: GgmlType, values: &[f32], row_len: usize, qw: Option<&[f32]>) -> Vec<u8> {
    let _ggml = lock();
    unsafe { sys::ggml_quantize_init(t.id() as sys::ggml_type) };
    let n_rows = values.len() / row_len;
    let mut out = vec![0u8; n_rows * t.row_bytes(row_len).unwrap()];
    let written = unsafe {
        sys::ggml_quantize_chunk(
            t.id() as sys::ggml_type,
            values.as_ptr(),
            out.as_mut_ptr() as *mut _,
            0,
            n_rows as i64,
            row_len as i64,
            qw.map_or(std::ptr::null(), |q| q.as_ptr()),
        )
    };
    assert_eq!(written, out.len(), "{t}: ggml wrote an unexpected size");
    out
}

/// ggml's `to_float`.
pub fn dequantize(t: GgmlType, data: &[u8]) -> Vec<f32> {
    let to_float = unsafe { &*sys::ggml_get_type_traits(t.id() as sys::ggml_type) }.to_float.unwrap();
    let mut out = vec![0f32; data.len() / t.type_size() * t.block_size()];
    unsafe { to_float(data.as_ptr() as *const _, out.as_mut_ptr(), out.len() as i64) };
    out
}

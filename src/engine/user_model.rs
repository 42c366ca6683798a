//! A model llama.cpp builds from metadata and tensor data microscale hands it
//! (`llama_model_init_from_user`), without a GGUF file on disk: calibration runs the source
//! checkpoint through llama.cpp this way instead of writing a full-precision copy first (28 GB for
//! a 7B model).
//!
//! llama.cpp creates every tensor the architecture can have, each in the type the header gives
//! (F32 when the header does not list it), and asks for its data through a callback. Tensors the
//! architecture allows but the checkpoint lacks come back to the filler too; it decides (a tied
//! `output.weight` is the token embedding, an absent bias is zeros).

use crate::gguf::{Metadata, TensorInfo};
use crate::quant::GgmlType;
use anyhow::{anyhow, bail, Result};
use llama_cpp_sys_2 as sys;
use std::ffi::{c_void, CStr};

/// Fills one tensor llama.cpp asks for: its name, type, `ne`, and the bytes to write.
pub type Filler<'a> = dyn FnMut(&str, GgmlType, &[u64], &mut [u8]) -> Result<()> + 'a;

struct FillState<'a, 'b> {
    filler: &'a mut Filler<'b>,
    error: Option<anyhow::Error>,
    filled: usize,
}

unsafe extern "C" fn set_tensor_data(t: *mut sys::ggml_tensor, user: *mut c_void) {
    // SAFETY: `user` is the FillState passed to llama_model_init_from_user below, alive for the
    // call; llama.cpp calls this from that call's thread, once per tensor.
    let state = unsafe { &mut *(user as *mut FillState) };
    if state.error.is_some() {
        return;
    }
    let t = unsafe { &mut *t };
    let name = unsafe { CStr::from_ptr(t.name.as_ptr()) }.to_string_lossy().into_owned();
    let n_dims = (0..4).rev().find(|&i| t.ne[i] > 1).map_or(1, |i| i + 1);
    let ne: Vec<u64> = t.ne[..n_dims].iter().map(|&d| d as u64).collect();
    let result = GgmlType::from_id(t.type_)
        .ok_or_else(|| anyhow!("tensor {name:?}: llama.cpp chose ggml type {}", t.type_))
        .and_then(|ty| {
            let n_bytes = unsafe { sys::ggml_nbytes(t) };
            let mut buf = vec![0u8; n_bytes];
            // No panic may unwind into llama.cpp.
            let filled =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (state.filler)(&name, ty, &ne, &mut buf)))
                    .map_err(|_| anyhow!("tensor {name:?}: the filler panicked"))?;
            filled?;
            // SAFETY: `t` is allocated in a host or device buffer of exactly n_bytes.
            unsafe { sys::ggml_backend_tensor_set(t, buf.as_ptr() as *const c_void, 0, n_bytes) };
            Ok(())
        });
    match result {
        Ok(()) => state.filled += 1,
        Err(e) => state.error = Some(e),
    }
}

/// A model made by llama.cpp from `metadata` (architecture, hyper-parameters, vocabulary) and the
/// types in `tensors`, its data produced by `filler`. Returns the raw model, owned by the caller
/// (`llama_model_free`).
pub fn model_from_parts(
    metadata: &Metadata,
    tensors: &[TensorInfo],
    filler: &mut Filler,
) -> Result<*mut sys::llama_model> {
    super::init(false);
    let header = crate::gguf::writer::encode_header(metadata, tensors)?;
    let params = sys::gguf_init_params { no_alloc: true, ctx: std::ptr::null_mut() };
    // SAFETY: the buffer outlives the call; the context copies what it keeps.
    let gguf = unsafe { sys::gguf_init_from_buffer(header.as_ptr() as *const c_void, header.len(), params) };
    if gguf.is_null() {
        bail!("llama.cpp refused the model's metadata: {}", super::log::last_error().unwrap_or_default());
    }
    let mut state = FillState { filler, error: None, filled: 0 };
    super::log::clear();
    // SAFETY: the gguf context and the state live until the call returns; the callback is the
    // only user of the state.
    let model = unsafe {
        sys::llama_model_init_from_user(
            gguf,
            Some(set_tensor_data),
            &mut state as *mut FillState as *mut c_void,
            sys::llama_model_default_params(),
        )
    };
    unsafe { sys::gguf_free(gguf) };
    if let Some(e) = state.error {
        if !model.is_null() {
            unsafe { sys::llama_model_free(model) };
        }
        return Err(e);
    }
    if model.is_null() {
        bail!(
            "llama.cpp could not build the model from its metadata: {}",
            super::log::last_error().unwrap_or_else(|| "no reason given (run with -v)".into())
        );
    }
    Ok(model)
}

//! `stock-quantize`: llama.cpp's own quantizer (`llama_model_quantize`, what `llama-quantize` runs),
//! so that every comparison can include stock llama.cpp quants made from the same input.

use crate::gguf::imatrix::Imatrix;
use crate::quant::mix::{Scheme, TensorTypeOverride};
use crate::util::atomic::{refuse_overwrite, TempOutput};
use anyhow::{anyhow, bail, Result};
use llama_cpp_sys_2 as sys;
use std::ffi::CString;
use std::path::Path;

#[derive(Clone, Debug, Default)]
pub struct StockOptions {
    pub threads: usize,
    pub allow_requantize: bool,
    pub tensor_types: Vec<TensorTypeOverride>,
}

/// Quantize `input` (a GGUF) to `output` with llama.cpp. The output appears only when complete.
pub fn stock_quantize(
    input: &Path,
    output: &Path,
    scheme: Scheme,
    imatrix: Option<&Imatrix>,
    opts: &StockOptions,
) -> Result<()> {
    if !input.is_file() {
        bail!("{}: no such file", input.display());
    }
    refuse_overwrite(input, output)?;
    super::init(false);
    // llama.cpp writes the file itself: give it our temporary path, and rename only on success.
    let temp = TempOutput::create(output)?;
    let c_in = CString::new(input.to_string_lossy().as_bytes())?;
    let c_out = CString::new(temp.path().to_string_lossy().as_bytes())?;

    // The imatrix and override arrays must outlive the call; both are terminated by a null name.
    let names: Vec<CString> =
        imatrix.map_or(vec![], |m| m.entries.keys().map(|k| CString::new(k.as_str()).unwrap()).collect());
    let values: Vec<Vec<f32>> = imatrix.map_or(vec![], |m| {
        m.entries
            .keys()
            .map(|k| {
                let e = &m.entries[k];
                m.weights(k, e.sums.len() / e.counts.len().max(1)).unwrap_or_default()
            })
            .collect()
    });
    let mut im: Vec<sys::llama_model_imatrix_data> = names
        .iter()
        .zip(&values)
        .filter(|(_, v)| !v.is_empty())
        .map(|(n, v)| sys::llama_model_imatrix_data { name: n.as_ptr(), data: v.as_ptr(), size: v.len() })
        .collect();
    im.push(sys::llama_model_imatrix_data { name: std::ptr::null(), data: std::ptr::null(), size: 0 });
    let patterns: Vec<CString> = opts.tensor_types.iter().map(|o| CString::new(o.pattern.as_str()).unwrap()).collect();
    let mut tt: Vec<sys::llama_model_tensor_override> = patterns
        .iter()
        .zip(&opts.tensor_types)
        .map(|(p, o)| sys::llama_model_tensor_override { pattern: p.as_ptr(), type_: o.ty.id() as sys::ggml_type })
        .collect();
    tt.push(sys::llama_model_tensor_override { pattern: std::ptr::null(), type_: 0 });

    let mut params = unsafe { sys::llama_model_quantize_default_params() };
    params.nthread = opts.threads as i32;
    params.ftype = scheme.file_type() as sys::llama_ftype;
    params.allow_requantize = opts.allow_requantize;
    if imatrix.is_some() {
        params.imatrix = im.as_ptr();
    }
    if !opts.tensor_types.is_empty() {
        params.tt_overrides = tt.as_ptr();
    }
    let rc = unsafe { sys::llama_model_quantize(c_in.as_ptr(), c_out.as_ptr(), &params) };
    if rc != 0 {
        return Err(anyhow!(
            "{}: llama_model_quantize failed (is the input quantized already? pass --allow-requantize; run with -v for llama.cpp's log)",
            input.display()
        ));
    }
    temp.commit_written()
}

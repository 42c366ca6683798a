//! `stock-quantize`: llama.cpp's own quantizer (`llama_model_quantize`, what `llama-quantize` runs),
//! so that every comparison can include stock llama.cpp quants made from the same input.

use crate::gguf::imatrix::Imatrix;
use crate::gguf::GgufValue;
use crate::quant::mix::{MixFlags, Scheme, TensorTypeOverride};
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
    /// `--output-tensor-type`, `--token-embedding-type`, `--leave-output-tensor`, `--pure`.
    pub mix_flags: MixFlags,
    /// No warnings (importance-matrix entries that name no tensor).
    pub quiet: bool,
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
    if let Some(m) = imatrix {
        let model = crate::gguf::GgufFile::open(input)?;
        m.check_names(model.tensors.iter().map(|t| t.name.as_str()), opts.quiet)?;
    }
    super::init(false);
    // llama.cpp writes the file itself: give it our temporary path, and rename only on success.
    let temp = TempOutput::create(output)?;
    let c_in = CString::new(input.to_string_lossy().as_bytes())?;
    let c_out = CString::new(temp.path().to_string_lossy().as_bytes())?;

    // The imatrix and override arrays must outlive the call; both are terminated by a null name.
    let names: Vec<CString> = imatrix.map_or(Ok(vec![]), |m| {
        m.entries
            .keys()
            .map(|k| CString::new(k.as_str()).map_err(|_| anyhow!("{}: entry {k:?} holds a NUL byte", m.shown())))
            .collect::<Result<_>>()
    })?;
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
    let patterns: Vec<CString> = opts
        .tensor_types
        .iter()
        .map(|o| {
            CString::new(o.pattern.as_str()).map_err(|_| anyhow!("--tensor-type {:?} holds a NUL byte", o.pattern))
        })
        .collect::<Result<_>>()?;
    let mut tt: Vec<sys::llama_model_tensor_override> = patterns
        .iter()
        .zip(&opts.tensor_types)
        .map(|(p, o)| sys::llama_model_tensor_override { pattern: p.as_ptr(), type_: o.ty.id() as sys::ggml_type })
        .collect();
    tt.push(sys::llama_model_tensor_override { pattern: std::ptr::null(), type_: 0 });

    // llama-quantize (the tool, not the library call) records the imatrix in the output's
    // metadata through key overrides; so do we, so that stock files say what made them.
    let mut overrides: Vec<sys::llama_model_kv_override> =
        imatrix.map_or(vec![], |m| m.quantize_keys().iter().map(|(k, v)| kv_override(k, v)).collect());
    overrides.push(unsafe { std::mem::zeroed() }); // key[0] == 0 ends the list

    let mut params = unsafe { sys::llama_model_quantize_default_params() };
    if let Some(t) = opts.mix_flags.output_tensor_type {
        params.output_tensor_type = t.id() as sys::ggml_type;
    }
    if let Some(t) = opts.mix_flags.token_embedding_type {
        params.token_embedding_type = t.id() as sys::ggml_type;
    }
    params.quantize_output_tensor = !opts.mix_flags.leave_output_tensor;
    params.pure_ = opts.mix_flags.pure;
    if overrides.len() > 1 {
        params.kv_overrides = overrides.as_ptr();
    }
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
        // llama.cpp says why only in its log; name the two usual causes, the likelier first.
        let causes = if imatrix.is_none() {
            format!("{} may need an importance matrix (pass --imatrix FILE), or the input is quantized already (pass --allow-requantize)", scheme.name())
        } else {
            "is the input quantized already? pass --allow-requantize".to_string()
        };
        return Err(anyhow!(
            "{}: llama_model_quantize failed ({causes}; run with -v for llama.cpp's log)",
            input.display()
        ));
    }
    temp.commit_written()
}

/// One `llama_model_kv_override` (string values and keys cut to the 127 bytes its buffers hold;
/// integers are written by llama.cpp as u32, as llama-quantize's are).
fn kv_override(key: &str, value: &GgufValue) -> sys::llama_model_kv_override {
    let mut o: sys::llama_model_kv_override = unsafe { std::mem::zeroed() };
    copy_c_str(&mut o.key, key);
    match value {
        GgufValue::String(s) => {
            o.tag = sys::LLAMA_KV_OVERRIDE_TYPE_STR;
            copy_c_str(unsafe { &mut o.__bindgen_anon_1.val_str }, s);
        }
        GgufValue::Bool(b) => {
            o.tag = sys::LLAMA_KV_OVERRIDE_TYPE_BOOL;
            o.__bindgen_anon_1.val_bool = *b;
        }
        other => {
            o.tag = sys::LLAMA_KV_OVERRIDE_TYPE_INT;
            o.__bindgen_anon_1.val_i64 = other.as_u64().unwrap_or(0) as i64;
        }
    }
    o
}

fn copy_c_str(dst: &mut [std::os::raw::c_char; 128], s: &str) {
    for (d, b) in dst.iter_mut().zip(s.bytes().take(127)) {
        *d = b as std::os::raw::c_char;
    }
}

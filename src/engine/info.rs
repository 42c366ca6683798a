//! What llama.cpp was built with, as ggml itself reports it (`microscale info`): the CPU features
//! compiled into the kernels, the backends and devices, and whether ggml's AMX backend is in —
//! it must not be: its matrix multiplication segfaults on Sapphire Rapids (llama.cpp issue 20824),
//! so `.cargo/config.toml` builds llama.cpp with `-mno-amx-*`.

use llama_cpp_sys_2 as sys;
use serde::Serialize;
use std::ffi::CStr;

#[derive(Clone, Debug, Serialize)]
pub struct EngineInfo {
    pub microscale: String,
    /// The pinned engine crates.
    pub llama_cpp_sys_2: String,
    pub llama_cpp_2: String,
    /// CPU features compiled into ggml's kernels (`ggml_cpu_has_*`, all compile-time facts).
    pub cpu_features: Vec<String>,
    /// ggml's AMX int8 kernels are compiled in (`ggml_cpu_has_amx_int8`): must be false.
    pub amx_compiled: bool,
    /// This CPU has AMX (from /proc/cpuinfo): where the AMX backend would have crashed.
    pub host_has_amx: bool,
    pub gpu_offload: bool,
    /// The backends compiled in (ggml's registries: `CPU`, `CUDA`, …).
    pub backends: Vec<String>,
    /// ggml backends and their devices: "backend: device (description)".
    pub devices: Vec<String>,
    /// The GPU devices among them (none on a CPU build, or a GPU build on a machine without one).
    pub gpu_devices: Vec<String>,
    /// llama.cpp's own system line (`llama_print_system_info`).
    pub system_info: String,
}

fn c_str(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: ggml returns static NUL-terminated strings.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Does this CPU advertise AMX (Intel Sapphire Rapids and later)?
pub fn host_has_amx() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.lines().any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f.starts_with("amx"))))
        .unwrap_or(false)
}

pub fn engine_info() -> EngineInfo {
    super::init(false);
    let has: [(&str, unsafe extern "C" fn() -> std::ffi::c_int); 26] = [
        ("SSE3", sys::ggml_cpu_has_sse3),
        ("SSSE3", sys::ggml_cpu_has_ssse3),
        ("AVX", sys::ggml_cpu_has_avx),
        ("AVX_VNNI", sys::ggml_cpu_has_avx_vnni),
        ("AVX2", sys::ggml_cpu_has_avx2),
        ("BMI2", sys::ggml_cpu_has_bmi2),
        ("F16C", sys::ggml_cpu_has_f16c),
        ("FMA", sys::ggml_cpu_has_fma),
        ("AVX512", sys::ggml_cpu_has_avx512),
        ("AVX512_VBMI", sys::ggml_cpu_has_avx512_vbmi),
        ("AVX512_VNNI", sys::ggml_cpu_has_avx512_vnni),
        ("AVX512_BF16", sys::ggml_cpu_has_avx512_bf16),
        ("AMX_INT8", sys::ggml_cpu_has_amx_int8),
        ("NEON", sys::ggml_cpu_has_neon),
        ("ARM_FMA", sys::ggml_cpu_has_arm_fma),
        ("FP16_VA", sys::ggml_cpu_has_fp16_va),
        ("DOTPROD", sys::ggml_cpu_has_dotprod),
        ("MATMUL_INT8", sys::ggml_cpu_has_matmul_int8),
        ("SVE", sys::ggml_cpu_has_sve),
        ("SME", sys::ggml_cpu_has_sme),
        ("SME2", sys::ggml_cpu_has_sme2),
        ("RISCV_V", sys::ggml_cpu_has_riscv_v),
        ("VSX", sys::ggml_cpu_has_vsx),
        ("VXE", sys::ggml_cpu_has_vxe),
        ("WASM_SIMD", sys::ggml_cpu_has_wasm_simd),
        ("LLAMAFILE", sys::ggml_cpu_has_llamafile),
    ];
    let mut cpu_features = Vec::new();
    for (name, f) in has {
        // SAFETY: ggml's feature queries take no arguments and only read compile-time constants.
        if unsafe { f() } != 0 {
            cpu_features.push(name.to_string());
        }
    }
    let devices = device_names(false);
    // SAFETY: the registry is initialised by llama_backend_init; indices are in range.
    let backends = unsafe {
        (0..sys::ggml_backend_reg_count())
            .map(|i| c_str(sys::ggml_backend_reg_name(sys::ggml_backend_reg_get(i))))
            .collect()
    };
    EngineInfo {
        microscale: env!("CARGO_PKG_VERSION").to_string(),
        llama_cpp_sys_2: super::LLAMA_CPP_SYS_VERSION.to_string(),
        llama_cpp_2: super::LLAMA_CPP_2_VERSION.to_string(),
        // SAFETY: as above.
        amx_compiled: unsafe { sys::ggml_cpu_has_amx_int8() } != 0,
        host_has_amx: host_has_amx(),
        gpu_offload: unsafe { sys::llama_supports_gpu_offload() },
        cpu_features,
        backends,
        devices,
        gpu_devices: device_names(true),
        system_info: c_str(unsafe { sys::llama_print_system_info() }).trim().to_string(),
    }
}

/// ggml's devices as "name (description)": all of them, or the GPUs only (discrete or integrated).
fn device_names(gpus_only: bool) -> Vec<String> {
    super::init(false);
    let mut names = Vec::new();
    // SAFETY: the registry is initialised by llama_backend_init; indices are in range.
    unsafe {
        for i in 0..sys::ggml_backend_dev_count() {
            let dev = sys::ggml_backend_dev_get(i);
            let ty = sys::ggml_backend_dev_type(dev);
            let gpu = ty == sys::GGML_BACKEND_DEVICE_TYPE_GPU || ty == sys::GGML_BACKEND_DEVICE_TYPE_IGPU;
            if gpu || !gpus_only {
                let (name, what) = (sys::ggml_backend_dev_name(dev), sys::ggml_backend_dev_description(dev));
                names.push(format!("{} ({})", c_str(name), c_str(what)));
            }
        }
    }
    names
}

/// The GPU devices llama.cpp can offload to on this machine.
pub fn gpu_devices() -> Vec<String> {
    device_names(true)
}

/// The layers that will really be offloaded here: `requested`, or 0 when there is no GPU to take
/// them, with the one line that says so. llama.cpp itself would keep the layers on the CPU
/// without a word, and a row would then record GPU layers for a CPU run.
pub fn layers_to_offload(requested: u32) -> (u32, Option<String>) {
    if requested == 0 || !gpu_devices().is_empty() {
        return (requested, None);
    }
    let why = if cfg!(feature = "cuda") {
        "this build has llama.cpp's CUDA backend, and it finds no CUDA device (no GPU, or no NVIDIA driver)"
    } else {
        "this build has no GPU backend (build with --features cuda, or scripts/build-cuda.sh)"
    };
    (0, Some(format!("--gpu-layers {requested}: no GPU here: {why}; running on the CPU, recorded as gpu_layers 0")))
}

//! Our tensor formats against ggml's own C functions (linked through llama-cpp-sys-2): type sizes,
//! f16/bf16 rounding and block dequantization must agree bit for bit.

use llama_cpp_sys_2 as sys;
use microscale::quant::GgmlType;
use microscale::quant::{dequantize, quantize};

fn traits(t: GgmlType) -> &'static sys::ggml_type_traits {
    unsafe { &*sys::ggml_get_type_traits(t.id() as sys::ggml_type) }
}

/// Deterministic test rows from several distributions, including edge cases.
fn rows(n: usize) -> Vec<Vec<f32>> {
    let mut rng = microscale::util::rng::XorShift64::new(0x2545_F491_4F6C_DD1D);
    let mut uniform = move || rng.next_f32();
    let gaussian: Vec<f32> = (0..n).map(|_| (uniform() + uniform() + uniform() - 1.5) * 2.0).collect();
    let heavy: Vec<f32> = (0..n).map(|_| (uniform() - 0.5) / (uniform() + 1e-3)).collect();
    let mut outlier = gaussian.clone();
    outlier[n / 3] = 1000.0;
    vec![
        gaussian,
        heavy,
        outlier,
        vec![0.0; n],
        vec![0.75; n],
        (0..n).map(|i| (i as f32 - n as f32 / 2.0) * 1e-30).collect(),
        (0..n).map(|i| (i as f32 - n as f32 / 2.0) * 1e4).collect(),
    ]
}

#[test]
fn type_table_matches_ggml() {
    for &t in GgmlType::ALL {
        let tr = traits(t);
        assert_eq!(tr.blck_size as usize, t.block_size(), "{t} block size");
        assert_eq!(tr.type_size, t.type_size(), "{t} type size");
        let name = unsafe { std::ffi::CStr::from_ptr(tr.type_name) }.to_str().unwrap();
        assert_eq!(name, t.name(), "{t} name");
    }
}

#[test]
fn float_conversions_match_ggml() {
    for row in rows(4096) {
        let mut want = vec![0u16; row.len()];
        unsafe { sys::ggml_fp32_to_fp16_row(row.as_ptr(), want.as_mut_ptr(), row.len() as i64) };
        let got = quantize(GgmlType::F16, &row, row.len()).unwrap();
        let want_bytes: Vec<u8> = want.iter().flat_map(|h| h.to_le_bytes()).collect();
        assert_eq!(got, want_bytes, "f16");

        let mut want = vec![0u16; row.len()];
        unsafe {
            sys::ggml_fp32_to_bf16_row_ref(row.as_ptr(), want.as_mut_ptr() as *mut sys::ggml_bf16_t, row.len() as i64)
        };
        let got = quantize(GgmlType::BF16, &row, row.len()).unwrap();
        let want_bytes: Vec<u8> = want.iter().flat_map(|h| h.to_le_bytes()).collect();
        assert_eq!(got, want_bytes, "bf16");
    }
}

#[test]
fn dequantization_matches_ggml() {
    let types = [
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::IQ4NL,
        GgmlType::IQ4XS,
        GgmlType::IQ3XXS,
        GgmlType::IQ3S,
        GgmlType::IQ2S,
        GgmlType::TQ1_0,
        GgmlType::TQ2_0,
    ];
    for t in types {
        // The IQ reference quantizers need their grid tables built first.
        unsafe { sys::ggml_quantize_init(t.id() as sys::ggml_type) };
        let tr = traits(t);
        let from_float = tr.from_float_ref.expect("reference quantizer");
        let to_float = tr.to_float.expect("dequantizer");
        for row in rows(1024) {
            // Blocks made by ggml's own reference quantizer, then decoded both ways.
            let mut blocks = vec![0u8; row.len() / t.block_size() * t.type_size()];
            unsafe { from_float(row.as_ptr(), blocks.as_mut_ptr() as *mut _, row.len() as i64) };
            let mut want = vec![0f32; row.len()];
            unsafe { to_float(blocks.as_ptr() as *const _, want.as_mut_ptr(), row.len() as i64) };
            let got = dequantize(t, &blocks).unwrap();
            assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{t} dequantization differs");
        }
    }
}

//! f16 and bf16 conversions, bit-exact with ggml's scalar reference code (`ggml-impl.h`).

/// ggml: `ggml_compute_fp32_to_fp16` (round to nearest even; NaN becomes 0x7E00 with its sign).
pub fn f32_to_f16_bits(f: f32) -> u16 {
    let scale_to_inf = f32::from_bits(0x7780_0000);
    let scale_to_zero = f32::from_bits(0x0880_0000);
    let mut base = (f.abs() * scale_to_inf) * scale_to_zero;

    let w = f.to_bits();
    let shl1_w = w.wrapping_add(w);
    let sign = w & 0x8000_0000;
    let mut bias = shl1_w & 0xFF00_0000;
    if bias < 0x7100_0000 {
        bias = 0x7100_0000;
    }
    base += f32::from_bits((bias >> 1).wrapping_add(0x0780_0000));
    let bits = base.to_bits();
    let exp_bits = (bits >> 13) & 0x0000_7C00;
    let mantissa_bits = bits & 0x0000_0FFF;
    let nonsign = exp_bits + mantissa_bits;
    ((sign >> 16) | if shl1_w > 0xFF00_0000 { 0x7E00 } else { nonsign }) as u16
}

/// ggml: `ggml_compute_fp16_to_fp32` (exact).
pub fn f16_bits_to_f32(h: u16) -> f32 {
    half::f16::from_bits(h).to_f32()
}

/// ggml: `ggml_compute_fp32_to_bf16` (round to nearest even; NaN forced quiet).
pub fn f32_to_bf16_bits(f: f32) -> u16 {
    let u = f.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// ggml: `ggml_compute_bf16_to_fp32` (exact).
pub fn bf16_bits_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// The float types as ggml codecs (block size 1): rows converted element by element.
pub fn quantize_row_f32(x: &[f32], y: &mut [u8], _quant_weights: Option<&[f32]>) {
    for (out, v) in y.chunks_exact_mut(4).zip(x) {
        out.copy_from_slice(&v.to_le_bytes());
    }
}

pub fn quantize_row_f16(x: &[f32], y: &mut [u8], _quant_weights: Option<&[f32]>) {
    for (out, &v) in y.chunks_exact_mut(2).zip(x) {
        out.copy_from_slice(&f32_to_f16_bits(v).to_le_bytes());
    }
}

pub fn quantize_row_bf16(x: &[f32], y: &mut [u8], _quant_weights: Option<&[f32]>) {
    for (out, &v) in y.chunks_exact_mut(2).zip(x) {
        out.copy_from_slice(&f32_to_bf16_bits(v).to_le_bytes());
    }
}

pub fn dequantize_f32(b: &[u8], y: &mut [f32]) {
    y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
}

pub fn dequantize_f16(b: &[u8], y: &mut [f32]) {
    y[0] = f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]));
}

pub fn dequantize_bf16(b: &[u8], y: &mut [f32]) {
    y[0] = bf16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_rounding_matches_half_for_finite_values() {
        // half's conversion is IEEE round-to-nearest-even; ggml's bit trick must agree on all finite inputs.
        for bits in (0u32..=u32::MAX).step_by(9973) {
            let f = f32::from_bits(bits);
            if f.is_nan() {
                assert_eq!(f32_to_f16_bits(f) & 0x7fff, 0x7E00);
                continue;
            }
            assert_eq!(f32_to_f16_bits(f), half::f16::from_f32(f).to_bits(), "{f:e}");
        }
    }

    #[test]
    fn bf16_round_trip_is_exact_for_bf16_values() {
        for h in 0..=u16::MAX {
            let f = bf16_bits_to_f32(h);
            if !f.is_nan() {
                assert_eq!(f32_to_bf16_bits(f), h);
            }
        }
    }
}

//! All 256 codes of both FP8 formats, against a derivation independent of the simd crate's.
//!
//! The simd crate decodes by arithmetic (`(1 + m/2^M) · 2^(e − bias)` with `powi`). Here:
//! - E5M2 is the top byte of an IEEE half (same 5-bit exponent, bias 15, infinities and NaNs), so
//!   `f16::from_bits(code << 8)` from the `half` crate gives every value, specials included.
//! - E4M3 (`float8_e4m3fn`) is assembled from bits: a normal code maps to the f32 with the same
//!   sign, exponent `e − 7 + 127` and mantissa `m << 20`; a subnormal (e = 0) is `m · 2⁻⁹`
//!   (`m / 512`, exact); `S.1111.111` is NaN and there are no infinities.
//!
//! Plus anchors everyone agrees on (max normals 448 and 57344, smallest subnormals 2⁻⁹, 2⁻¹⁶).

use crate::util::StBuilder;
use nano_infer_quant::{Linear, QuantScheme};
use nano_infer_simd::{fp8_to_f32, Fp8Format};

fn e4m3_reference(code: u8) -> f32 {
    let sign = (code as u32 >> 7) << 31;
    let e = (code as u32 >> 3) & 15;
    let m = code as u32 & 7;
    if e == 15 && m == 7 {
        return f32::NAN;
    }
    if e == 0 {
        let v = m as f32 / 512.0;
        return if sign != 0 { -v } else { v };
    }
    f32::from_bits(sign | (e + 127 - 7) << 23 | m << 20)
}

fn e5m2_reference(code: u8) -> f32 {
    half::f16::from_bits((code as u16) << 8).to_f32()
}

fn same(a: f32, b: f32) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

#[test]
fn all_codes_decode_exactly() {
    for code in 0..=255u8 {
        let (got, want) = (fp8_to_f32(Fp8Format::E4M3, code), e4m3_reference(code));
        assert!(
            same(got, want),
            "E4M3 {code:#04x}: got {got:e}, want {want:e}"
        );
        let (got, want) = (fp8_to_f32(Fp8Format::E5M2, code), e5m2_reference(code));
        assert!(
            same(got, want),
            "E5M2 {code:#04x}: got {got:e}, want {want:e}"
        );
    }
}

#[test]
fn anchors() {
    use Fp8Format::{E4M3, E5M2};
    assert_eq!(fp8_to_f32(E4M3, 0x7E), 448.0);
    assert_eq!(fp8_to_f32(E4M3, 0xFE), -448.0);
    assert_eq!(fp8_to_f32(E4M3, 0x38), 1.0);
    assert_eq!(fp8_to_f32(E4M3, 0x08), 2f32.powi(-6));
    assert_eq!(fp8_to_f32(E4M3, 0x01), 2f32.powi(-9));
    assert!(fp8_to_f32(E4M3, 0x7F).is_nan() && fp8_to_f32(E4M3, 0xFF).is_nan());
    assert_eq!(fp8_to_f32(E4M3, 0x80).to_bits(), (-0.0f32).to_bits());
    assert_eq!(fp8_to_f32(E5M2, 0x7B), 57344.0);
    assert_eq!(fp8_to_f32(E5M2, 0x3C), 1.0);
    assert_eq!(fp8_to_f32(E5M2, 0x01), 2f32.powi(-16));
    assert_eq!(fp8_to_f32(E5M2, 0x7C), f32::INFINITY);
    assert_eq!(fp8_to_f32(E5M2, 0xFC), f32::NEG_INFINITY);
    assert!((0x7D..=0x7F).all(|c| fp8_to_f32(E5M2, c).is_nan()));
}

/// The same 256 codes through a loaded `Linear` (one row, per-tensor scale 1): what the layer
/// decodes is what the format defines, for both dtypes.
#[test]
fn linear_decodes_all_codes() {
    for (dtype, reference) in [
        ("F8_E4M3", e4m3_reference as fn(u8) -> f32),
        ("F8_E5M2", e5m2_reference),
    ] {
        let mut b = StBuilder::default();
        b.add("m.weight", dtype, &[1, 256], (0..=255u8).collect())
            .f32s("m.weight_scale", &[1], &[1.0]);
        let scheme = QuantScheme::from_config(Some(&crate::util::ct_config("tensor"))).unwrap();
        let linear = Linear::load(&b.store(), "m", &scheme, 1, 256).unwrap();
        for (code, v) in linear.dequantize().into_iter().enumerate() {
            assert!(same(v, reference(code as u8)), "{dtype} {code:#04x}: {v:e}");
        }
    }
}

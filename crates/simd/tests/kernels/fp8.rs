//! Known answers for all 256 codes of both FP8 formats, from tables built independently of the
//! crate's decoder: E5M2 through `half` (it is the top byte of an f16), E4M3 by assembling f32
//! bits. The vector levels are checked on the same 256 codes through `gemm_fp8`, and on the
//! finite ones through `gemm_fp8_finite` (integer decode).

use crate::{scalar, vector_levels};
use nano_infer_simd::{f16, fp8_codes_finite, fp8_to_f32, Fp8Format};

fn e5m2(code: u8) -> f32 {
    f16::from_bits((code as u16) << 8).to_f32()
}

fn e4m3(code: u8) -> f32 {
    let sign = (code as u32 >> 7) << 31;
    let exp = (code as u32 >> 3) & 15;
    let man = code as u32 & 7;
    if exp == 15 && man == 7 {
        return f32::NAN;
    }
    let magnitude = if exp == 0 {
        // Subnormal: man · 2⁻⁹, which is a normal f32: exponent of the leading bit, rest shifted.
        if man == 0 {
            0
        } else {
            let lead = 31 - man.leading_zeros(); // 0, 1 or 2
            let rest = man & !(1 << lead);
            ((lead + 127 - 9) << 23) | (rest << (23 - lead))
        }
    } else {
        ((exp + 127 - 7) << 23) | (man << 20)
    };
    f32::from_bits(sign | magnitude)
}

fn same(a: f32, b: f32) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

fn table(format: Fp8Format) -> fn(u8) -> f32 {
    match format {
        Fp8Format::E4M3 => e4m3,
        Fp8Format::E5M2 => e5m2,
    }
}

#[test]
fn reference_tables_pin_the_formats() {
    assert_eq!(e4m3(0x7e), 448.0);
    assert_eq!(e4m3(0xfe), -448.0);
    assert_eq!(e4m3(0x08), 2f32.powi(-6)); // smallest normal
    assert_eq!(e4m3(0x01), 2f32.powi(-9)); // smallest subnormal
    assert_eq!(e4m3(0x07), 7.0 * 2f32.powi(-9)); // largest subnormal
    assert_eq!(e4m3(0x38), 1.0);
    assert!(e4m3(0x7f).is_nan() && e4m3(0xff).is_nan());
    assert_eq!(e4m3(0x80).to_bits(), (-0.0f32).to_bits());
    assert_eq!(e5m2(0x7b), 57344.0);
    assert_eq!(e5m2(0x7c), f32::INFINITY);
    assert_eq!(e5m2(0xfc), f32::NEG_INFINITY);
    assert!((0x7d..=0x7f).all(|c| e5m2(c).is_nan()));
    assert_eq!(e5m2(0x01), 2f32.powi(-16));
    assert_eq!(e5m2(0x3c), 1.0);
    assert_eq!(e5m2(0x80).to_bits(), (-0.0f32).to_bits());
    // The E4M3 NaN is the only non-finite E4M3 code.
    assert_eq!((0..=255u8).filter(|&c| !e4m3(c).is_finite()).count(), 2);
}

#[test]
fn scalar_decodes_all_256_codes_exactly() {
    for format in [Fp8Format::E4M3, Fp8Format::E5M2] {
        let want = table(format);
        for code in 0..=255u8 {
            let got = fp8_to_f32(format, code);
            assert!(
                same(got, want(code)),
                "{format:?} {code:#04x}: got {got}, want {}",
                want(code)
            );
        }
    }
}

/// Which matmul entry a check runs through.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Entry {
    /// `gemm_fp8`: every code, NaN and infinities included.
    Checked,
    /// `gemm_fp8_finite`: codes the caller has checked finite.
    Finite,
}

/// Row `c` of a `(256, 32)` weight holds code `c` at column `c % 32` and +0 elsewhere; with `x = 1`
/// and scale 1 each output is exactly that code's value (adding +0 changes nothing, and ±inf/NaN
/// survive), so the vector decoders are checked bit for bit, for one token (decode) and for every
/// few-token tile (a server step's 2 to 15 tokens, and past them). Through `gemm_fp8_finite`
/// the non-finite codes' rows hold +0 instead (that entry does not take them).
fn decode_all_codes(entry: Entry) {
    let k = 32;
    for format in [Fp8Format::E4M3, Fp8Format::E5M2] {
        let want = table(format);
        let taken = |c: u8| entry == Entry::Checked || want(c).is_finite();
        let mut w = vec![0u8; 256 * k];
        for c in 0..=255u8 {
            if taken(c) {
                w[c as usize * k + c as usize % k] = c;
            }
        }
        assert_eq!(fp8_codes_finite(format, &w), entry == Entry::Finite);
        let scales = vec![1.0f32; 256];
        for kern in vector_levels().into_iter().chain([scalar()]) {
            for n_tok in 1..=16 {
                let mut out = vec![0.0; 256 * n_tok];
                let x = vec![1.0; k * n_tok];
                match entry {
                    Entry::Checked => kern.gemm_fp8(format, &w, &scales, k, &x, k, &mut out),
                    Entry::Finite => kern.gemm_fp8_finite(format, &w, &scales, k, &x, k, &mut out),
                }
                for code in (0..=255u8).filter(|&c| taken(c)) {
                    for t in 0..n_tok {
                        let got = out[code as usize * n_tok + t];
                        // −0 + (+0) = +0, so negative zero comes back as +0: compare zeros by value.
                        let ok = same(got, want(code)) || (got == 0.0 && want(code) == 0.0);
                        assert!(
                            ok,
                            "{} {entry:?} {format:?} {code:#04x}, token {t} of {n_tok}: got {got}, want {}",
                            kern.isa(),
                            want(code)
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn vector_levels_decode_all_256_codes_exactly() {
    decode_all_codes(Entry::Checked);
}

#[test]
fn vector_levels_decode_all_finite_codes_exactly_through_the_finite_entry() {
    decode_all_codes(Entry::Finite);
}

#[test]
fn codes_finite_finds_every_nan_and_infinity() {
    for format in [Fp8Format::E4M3, Fp8Format::E5M2] {
        for code in 0..=255u8 {
            // One bad code in the middle of a long run of good ones (past the scan's chunk).
            let mut codes = vec![0x38u8; 10_000];
            codes[6_000] = code;
            assert_eq!(
                fp8_codes_finite(format, &codes),
                table(format)(code).is_finite(),
                "{format:?} {code:#04x}"
            );
        }
        assert!(fp8_codes_finite(format, &[]));
    }
}

/// The finite entry's decode is short of the value by 2¹²⁰ (E4M3) or 2¹¹² (E5M2); it must come
/// back before the scale does, or a large (legal) scale would overflow to infinity.
#[test]
fn finite_entry_keeps_large_scales_finite() {
    let k = 64;
    for (format, code, value) in [
        (Fp8Format::E4M3, 0x7eu8, 448.0f32),
        (Fp8Format::E5M2, 0x7b, 57344.0),
    ] {
        let w = vec![code; k];
        let scale = 1e30f32;
        let x = vec![1.0f32; k];
        let want = value * scale * k as f32;
        for kern in vector_levels().into_iter().chain([scalar()]) {
            let mut out = [0.0f32];
            kern.gemm_fp8_finite(format, &w, &[scale], k, &x, k, &mut out);
            let err = (out[0] - want).abs() / want;
            assert!(
                err < 1e-6,
                "{} {format:?}: got {}, want {want}",
                kern.isa(),
                out[0]
            );
        }
    }
}

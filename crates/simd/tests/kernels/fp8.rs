//! Known answers for all 256 codes of both FP8 formats, from tables built independently of the
//! crate's decoder: E5M2 through `half` (it is the top byte of an f16), E4M3 by assembling f32
//! bits. The vector levels are checked on the same 256 codes through `gemm_fp8`.

use crate::{scalar, vector_levels};
use nano_infer_simd::{f16, fp8_to_f32, Fp8Format};

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

/// Row `c` of a `(256, 32)` weight holds code `c` at column `c % 32` and +0 elsewhere; with `x = 1`
/// and scale 1 each output is exactly that code's value (adding +0 changes nothing, and ±inf/NaN
/// survive), so the vector decoders are checked bit for bit, for one token (decode) and for every
/// few-token tile (a server step's 2 to 15 tokens, and past them).
#[test]
fn vector_levels_decode_all_256_codes_exactly() {
    let k = 32;
    for format in [Fp8Format::E4M3, Fp8Format::E5M2] {
        let want = table(format);
        let mut w = vec![0u8; 256 * k];
        for c in 0..256 {
            w[c * k + c % k] = c as u8;
        }
        let scales = vec![1.0f32; 256];
        for kern in vector_levels().into_iter().chain([scalar()]) {
            for n_tok in 1..=16 {
                let mut out = vec![0.0; 256 * n_tok];
                kern.gemm_fp8(format, &w, &scales, k, &vec![1.0; k * n_tok], k, &mut out);
                for code in 0..=255u8 {
                    for t in 0..n_tok {
                        let got = out[code as usize * n_tok + t];
                        // −0 + (+0) = +0, so negative zero comes back as +0: compare zeros by value.
                        let ok = same(got, want(code)) || (got == 0.0 && want(code) == 0.0);
                        assert!(
                            ok,
                            "{} {format:?} {code:#04x}, token {t} of {n_tok}: got {got}, want {}",
                            kern.isa(),
                            want(code)
                        );
                    }
                }
            }
        }
    }
}

/// A server step multiplies a weight by all its running sequences' tokens at once, a lone
/// request by one: each output should be the same bits either way, or a request's greedy
/// answer could depend on who else is being served. The levels pick different tiles per token
/// count (and AVX-512 with VBMI a table decode for a lone token whose `k` and `block_k` are
/// multiples of 64); they must all round alike.
#[test]
fn outputs_do_not_depend_on_the_token_count() {
    use crate::Rng;
    for format in [Fp8Format::E4M3, Fp8Format::E5M2] {
        let mut rng = Rng::new(11);
        let finite: Vec<u8> = (0..=255u8)
            .filter(|&c| fp8_to_f32(format, c).is_finite())
            .collect();
        for (k, block_k) in [(256usize, 128usize), (200, 64), (64, 64)] {
            let rows = 9;
            let w: Vec<u8> = (0..rows * k)
                .map(|_| finite[rng.u8() as usize % finite.len()])
                .collect();
            let scales: Vec<f32> = (0..rows * k.div_ceil(block_k))
                .map(|_| rng.f32().abs() * 0.01 + 1e-4)
                .collect();
            for kern in vector_levels().into_iter().chain([scalar()]) {
                for n_tok in 1..=16 {
                    // Inputs of ordinary size, tiny ones (a token of 1e-6 inputs keeps every
                    // block sum below 2⁻⁶, where a decode whose sums went subnormal would round
                    // differently) and large ones (past 2¹⁶ AVX2's one-token integer decode,
                    // which scales the inputs by 2¹¹², hands over to F16C).
                    let size = [4.0, 1e-3, 1e-6, 1e5];
                    let x: Vec<f32> = (0..n_tok * k)
                        .map(|i| rng.f32() * size[(i / k + n_tok) % size.len()])
                        .collect();
                    let mut together = vec![0.0; rows * n_tok];
                    kern.gemm_fp8(format, &w, &scales, block_k, &x, k, &mut together);
                    for t in 0..n_tok {
                        let xt = &x[t * k..(t + 1) * k];
                        let mut alone = vec![0.0; rows];
                        kern.gemm_fp8(format, &w, &scales, block_k, xt, k, &mut alone);
                        for r in 0..rows {
                            let (a, b) = (alone[r], together[r * n_tok + t]);
                            assert!(
                                a.to_bits() == b.to_bits(),
                                "{} {format:?} k {k} block {block_k}, {n_tok} tokens, row {r} token {t}: alone {a:e}, together {b:e}",
                                kern.isa()
                            );
                        }
                    }
                }
            }
        }
    }
}

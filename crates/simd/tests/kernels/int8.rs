//! The integer-dot matmuls (q4x16 and q8x16 weights × int8 activations): every level is
//! bit-identical to the scalar twin (the integer dots are exact and the float epilogue is the
//! same fused operations in the same order per row), and the scalar twin is the f64 dot of the
//! dequantized weights and activations up to f32 rounding. Plus the layout's known answers.

use crate::{scalar, vector_levels, Rng};
use nano_infer_simd::q8::{pack_q4x16, pack_q8x16, q8_block_for_group, tile_params, TILE_ROWS};
use nano_infer_simd::Q8Acts;
use proptest::prelude::*;

fn same_bits(got: &[f32], want: &[f32], what: &str) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
            "{what} out[{i}]: got {g}, want {w}"
        );
    }
}

/// Activations with a spread of magnitudes across blocks, as real hidden states have.
fn acts(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| rng.f32() * if i % 37 == 0 { 20.0 } else { 1.0 })
        .collect()
}

/// The dequantized activation `sx_b · xq_j`.
fn deq_x(x: &Q8Acts, t: usize, j: usize) -> f64 {
    let k = x.k();
    x.codes()[t * k + j] as f64 * x.scales()[t * (k / x.block()) + j / x.block()] as f64
}

proptest! {
    #[test]
    fn q4x16(
        groups in 1usize..4,
        group in prop::sample::select(&[8usize, 16, 24, 32, 64, 128][..]),
        rows in 1usize..40,
        n_tok in 0usize..40,
        seed in any::<u64>(),
    ) {
        let k = groups * group;
        let block = q8_block_for_group(group).unwrap();
        let mut rng = Rng::new(seed);
        let codes: Vec<u8> = (0..rows * k).map(|_| rng.u8() & 15).collect();
        let s: Vec<f32> = (0..rows * groups).map(|_| rng.f32().abs() * 0.02 + 1e-3).collect();
        let zs: Vec<f32> = s.iter().map(|s| s * (rng.next_u64() % 16) as f32).collect();
        let x = acts(&mut rng, n_tok * k);
        let mut xa = Q8Acts::new();
        xa.quantize(&x, k, block, group);
        let (w, ts, tz) = (
            pack_q4x16(&codes, rows, k),
            tile_params(&s, rows, groups),
            tile_params(&zs, rows, groups),
        );
        let mut want = vec![0.0; rows * n_tok];
        scalar().gemm_q4x16_q8(&w, &ts, &tz, group, &xa, &mut want);
        // The definition against f64 arithmetic on the same quantized values: each of the
        // O(k/block + groups) f32 roundings is relative to partial sums bounded by `mag`.
        for r in 0..rows {
            for t in 0..n_tok {
                let (mut exact, mut mag) = (0.0f64, 0.0f64);
                for j in 0..k {
                    let g = r * groups + j / group;
                    let wv = codes[r * k + j] as f64 * s[g] as f64 - zs[g] as f64;
                    exact += wv * deq_x(&xa, t, j);
                    mag += (codes[r * k + j] as f64 * s[g] as f64 + zs[g] as f64) * deq_x(&xa, t, j).abs();
                }
                let got = want[r * n_tok + t] as f64;
                let tol = 4.0 * (k / block + 2 * groups) as f64 * f32::EPSILON as f64 * mag + 1e-30;
                prop_assert!((got - exact).abs() <= tol, "scalar r{r} t{t}: {got} vs {exact} (tol {tol:e})");
            }
        }
        for kern in vector_levels() {
            let mut got = vec![0.0; rows * n_tok];
            kern.gemm_q4x16_q8(&w, &ts, &tz, group, &xa, &mut got);
            same_bits(&got, &want, &format!("{} gemm_q4x16_q8 group {group}", kern.isa()));
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(t) = nano_infer_simd::x86::Avx2Fma::try_new() {
            // The AVX2 version is also what AVX-512 CPUs without VNNI run.
            let mut got = vec![0.0; rows * n_tok];
            nano_infer_simd::x86::avx2::gemm_q4x16_q8(t, &w, &ts, &tz, group, &xa, &mut got);
            same_bits(&got, &want, "avx2 gemm_q4x16_q8");
        }
    }

    #[test]
    fn q8x16(
        blocks in 1usize..12,
        block in prop::sample::select(&[8usize, 16, 32][..]),
        rows in 1usize..40,
        n_tok in 0usize..40,
        seed in any::<u64>(),
    ) {
        let k = blocks * block;
        let mut rng = Rng::new(seed);
        // Full i8 range, −128 included: the kernels must not saturate on it.
        let codes: Vec<i8> = (0..rows * k).map(|_| rng.u8() as i8).collect();
        let s: Vec<f32> = (0..rows).map(|_| rng.f32().abs() * 0.02 + 1e-3).collect();
        let x = acts(&mut rng, n_tok * k);
        let mut xa = Q8Acts::new();
        xa.quantize(&x, k, block, block);
        let w = pack_q8x16(&codes, rows, k);
        let mut ts = s.clone();
        ts.resize(rows.div_ceil(TILE_ROWS) * TILE_ROWS, 0.0);
        let mut want = vec![0.0; rows * n_tok];
        scalar().gemm_q8x16_q8(&w, &ts, &xa, &mut want);
        for r in 0..rows {
            for t in 0..n_tok {
                let (mut exact, mut mag) = (0.0f64, 0.0f64);
                for j in 0..k {
                    let p = codes[r * k + j] as f64 * s[r] as f64 * deq_x(&xa, t, j);
                    exact += p;
                    mag += p.abs();
                }
                let got = want[r * n_tok + t] as f64;
                let tol = 4.0 * (k / block + 2) as f64 * f32::EPSILON as f64 * mag + 1e-30;
                prop_assert!((got - exact).abs() <= tol, "scalar r{r} t{t}: {got} vs {exact}");
            }
        }
        for kern in vector_levels() {
            let mut got = vec![0.0; rows * n_tok];
            kern.gemm_q8x16_q8(&w, &ts, &xa, &mut got);
            same_bits(&got, &want, &format!("{} gemm_q8x16_q8 block {block}", kern.isa()));
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(t) = nano_infer_simd::x86::Avx2Fma::try_new() {
            let mut got = vec![0.0; rows * n_tok];
            nano_infer_simd::x86::avx2::gemm_q8x16_q8(t, &w, &ts, &xa, &mut got);
            same_bits(&got, &want, "avx2 gemm_q8x16_q8");
        }
    }

    /// `Kernels::quantize_q8` is `Q8Acts::quantize` bit for bit on every level, special values
    /// included: NaN (ignored by the block maximum, code 0), ±inf (infinite scale), ±0, tiny
    /// subnormal maxima (127/amax overflows to inf) and values that round to ±127.5.
    #[test]
    fn quantize_every_level(
        block in prop::sample::select(&[8usize, 16, 32][..]),
        groups in 1usize..4,
        n_tok in 0usize..4,
        specials in prop::collection::vec((any::<u16>(), 0usize..8), 0..6),
        seed in any::<u64>(),
    ) {
        let (group, k) = (2 * block, 2 * block * groups);
        let mut rng = Rng::new(seed);
        let mut x = acts(&mut rng, n_tok * k);
        let pool = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 1e-45, 127.5, -0.5, 2.5];
        for (at, which) in specials {
            if !x.is_empty() {
                let i = at as usize % x.len();
                x[i] = pool[which];
            }
        }
        let mut want = Q8Acts::new();
        want.quantize(&x, k, block, group);
        for kern in vector_levels() {
            let mut got = Q8Acts::new();
            kern.quantize_q8(&x, k, block, group, &mut got);
            prop_assert_eq!(got.codes(), want.codes(), "{} codes", kern.isa());
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(got.scales()), bits(want.scales()), "{} scales", kern.isa());
            let mut out_got = vec![0.0; 3 * n_tok];
            let mut out_want = vec![0.0; 3 * n_tok];
            let w = pack_q4x16(&vec![5u8; 3 * k], 3, k);
            let p = tile_params(&vec![0.25; 3 * groups], 3, groups);
            kern.gemm_q4x16_q8(&w, &p, &p, group, &got, &mut out_got);
            kern.gemm_q4x16_q8(&w, &p, &p, group, &want, &mut out_want);
            same_bits(&out_got, &out_want, "q4x16 over both quantizations (sums, group sums)");
        }
    }

    /// Each dequantized activation is within half a step (`sx/2 = absmax/254`) of the input, up
    /// to the f32 roundings of the quantizer (`q = round(v · fl(127/amax))`, `sx = fl(amax/127)`,
    /// as llama.cpp's): with `u = 2⁻²⁴`, `|fl(v·inv) − 127v/amax| ≤ 127·2u(1+u)`, which can move
    /// a value just past a half-step boundary to the farther integer, and `|q|·|sx − amax/127| ≤
    /// amax·u`. Together `err ≤ amax/254 · (1 + 762u)`, about `1 + 4.5e-5` (seed
    /// 1790013084402552755 at n = 4 lands between `1 + 1e-6` and that).
    #[test]
    fn quantize_error(n in 1usize..6, seed in any::<u64>()) {
        let k = 64;
        let mut rng = Rng::new(seed);
        let x = acts(&mut rng, n * k);
        let mut xa = Q8Acts::new();
        xa.quantize(&x, k, 32, 64);
        for t in 0..n {
            for j in 0..k {
                let b = j / 32;
                let amax = x[t * k + b * 32..t * k + b * 32 + 32].iter().fold(0f32, |m, v| m.max(v.abs()));
                let err = (deq_x(&xa, t, j) - x[t * k + j] as f64).abs();
                let u = f32::EPSILON as f64 / 2.0;
                prop_assert!(err <= amax as f64 / 254.0 * (1.0 + 762.0 * u), "err {err}, amax {amax}");
            }
        }
    }
}

/// A hand-written tile: the exact bytes of the q4x16 and q8x16 layouts.
#[test]
fn tile_layout_known_answer() {
    // Two rows, k = 16: row r, input j has code (r + j) % 16.
    let (rows, k) = (2, 16);
    let codes: Vec<u8> = (0..rows * k)
        .map(|i| ((i / k + i % k) % 16) as u8)
        .collect();
    let w = pack_q4x16(&codes, rows, k);
    assert_eq!(w.len(), 2 * 64, "one tile of k/8 = 2 chunks");
    // Chunk 0, row 0: bytes j = 0..4 hold inputs j (low) and 4 + j (high).
    assert_eq!(&w[0..4], &[0x40, 0x51, 0x62, 0x73]);
    // Chunk 0, row 1: inputs shifted by one.
    assert_eq!(&w[4..8], &[0x51, 0x62, 0x73, 0x84]);
    // Padding rows 2..16 are zero; chunk 1, row 0 holds inputs 8..16.
    assert!(w[8..64].iter().all(|&b| b == 0));
    assert_eq!(&w[64..68], &[0xc8, 0xd9, 0xea, 0xfb]);

    let codes: Vec<i8> = (0..rows * 8).map(|i| i as i8 - 8).collect();
    let w = pack_q8x16(&codes, rows, 8);
    assert_eq!(&w[0..8], &[-8, -7, -6, -5, 0, 1, 2, 3]);
    assert_eq!(&w[64..72], &[-4, -3, -2, -1, 4, 5, 6, 7]);

    let p = tile_params(&[1.0, 2.0, 3.0, 4.0], 2, 2);
    assert_eq!(p.len(), 32);
    assert_eq!((p[0], p[1], p[16], p[17]), (1.0, 3.0, 2.0, 4.0));
}

/// Zero tokens and all-zero activations (scale 0): no panic, zero outputs, on every level.
#[test]
fn degenerate_inputs() {
    let (rows, k) = (3, 32);
    let w = pack_q4x16(&vec![7u8; rows * k], rows, k);
    let p = tile_params(&[0.5; 3], rows, 1);
    for kern in vector_levels().into_iter().chain([scalar()]) {
        let mut xa = Q8Acts::new();
        xa.quantize(&[], k, 32, 32);
        kern.gemm_q4x16_q8(&w, &p, &p, 32, &xa, &mut []);
        xa.quantize(&[0.0; 32], k, 32, 32);
        let mut out = [1.0; 3];
        kern.gemm_q4x16_q8(&w, &p, &p, 32, &xa, &mut out);
        assert_eq!(out, [0.0; 3], "{}", kern.isa());
    }
}

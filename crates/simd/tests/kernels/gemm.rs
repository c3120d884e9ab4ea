//! The matmuls (f32, bf16, f16, fp8, q4) against their scalar twins, on awkward shapes.

use crate::{assert_close, scalar, vector_levels, Rng, LENGTHS};
use nano_infer_simd::{bf16, f16, fp8_to_f32, Fp8Format};
use proptest::prelude::*;

/// Magnitudes `Σ_j |w(r,j)·x(t,j)|` in the `(rows, n_tok)` output layout.
fn magnitudes(w: impl Fn(usize, usize) -> f32, x: &[f32], k: usize, rows: usize) -> Vec<f64> {
    let n_tok = x.len() / k;
    let mut m = vec![0.0; rows * n_tok];
    for r in 0..rows {
        for t in 0..n_tok {
            m[r * n_tok + t] = (0..k)
                .map(|j| (w(r, j) as f64 * x[t * k + j] as f64).abs())
                .sum();
        }
    }
    m
}

fn check(got: &[f32], want: &[f32], mag: &[f64], k: usize, what: &str) {
    for (i, ((&g, &w), &m)) in got.iter().zip(want).zip(mag).enumerate() {
        assert_close(g, w, k, m, &format!("{what} out[{i}]"));
    }
}

fn shape() -> impl Strategy<Value = (usize, usize, usize, u64)> {
    (
        prop::sample::select(&LENGTHS[1..]),
        1usize..10,
        // Every few-token tile (1 to 15 tokens, one or two tiles a row pass) and the generic
        // tiles past them (attention and direct callers reach any count).
        1usize..33,
        any::<u64>(),
    )
}

proptest! {
    #[test]
    fn dense((k, rows, n_tok, seed) in shape()) {
        let mut rng = Rng::new(seed);
        let w32 = rng.vec(rows * k);
        let x = rng.vec(n_tok * k);
        let wb: Vec<bf16> = w32.iter().map(|&v| bf16::from_f32(v)).collect();
        let wh: Vec<f16> = w32.iter().map(|&v| f16::from_f32(v)).collect();
        let mag = magnitudes(|r, j| w32[r * k + j], &x, k, rows);
        let mut want = vec![0.0; rows * n_tok];
        let mut got = vec![0.0; rows * n_tok];
        for kern in vector_levels() {
            let isa = kern.isa();
            scalar().gemm_f32(&w32, &x, k, &mut want);
            kern.gemm_f32(&w32, &x, k, &mut got);
            check(&got, &want, &mag, k, &format!("{isa} gemm_f32"));
            scalar().gemm_bf16(&wb, &x, k, &mut want);
            kern.gemm_bf16(&wb, &x, k, &mut got);
            check(&got, &want, &mag, k, &format!("{isa} gemm_bf16"));
            scalar().gemm_f16(&wh, &x, k, &mut want);
            kern.gemm_f16(&wh, &x, k, &mut got);
            check(&got, &want, &mag, k, &format!("{isa} gemm_f16"));
        }
    }

    #[test]
    fn fp8(
        (k, rows, n_tok, seed) in shape(),
        block_k in prop::sample::select(&[1usize, 7, 8, 16, 32, 100, 128][..]),
        e4m3 in any::<bool>(),
    ) {
        let format = if e4m3 { Fp8Format::E4M3 } else { Fp8Format::E5M2 };
        let mut rng = Rng::new(seed);
        // Finite codes only (NaN and ±inf poison the comparison; a separate test covers them).
        let w: Vec<u8> = (0..rows * k)
            .map(|_| loop {
                let c = rng.u8();
                if fp8_to_f32(format, c).is_finite() {
                    break c;
                }
            })
            .collect();
        let blocks = k.div_ceil(block_k);
        let scales: Vec<f32> = (0..rows * blocks).map(|_| rng.f32().abs() * 0.01 + 1e-4).collect();
        let x = rng.vec(n_tok * k);
        let wf = |r: usize, j: usize| fp8_to_f32(format, w[r * k + j]) * scales[r * blocks + j / block_k];
        // One more rounding than a plain dot (the scale), covered by the `k + 4` slack.
        let mag = magnitudes(wf, &x, k, rows);
        let mut want = vec![0.0; rows * n_tok];
        scalar().gemm_fp8(format, &w, &scales, block_k, &x, k, &mut want);
        for kern in vector_levels() {
            let mut got = vec![0.0; rows * n_tok];
            kern.gemm_fp8(format, &w, &scales, block_k, &x, k, &mut got);
            check(&got, &want, &mag, k, &format!("{} gemm_fp8 {format:?} block {block_k}", kern.isa()));
        }
    }

    #[test]
    fn q4(
        groups in 1usize..5,
        group in prop::sample::select(&[2usize, 8, 14, 16, 32, 64, 128][..]),
        rows in 1usize..10,
        n_tok in 1usize..10,
        seed in any::<u64>(),
    ) {
        q4_case(groups, group, rows, n_tok, seed);
    }

    /// One token with groups of 64 to 256: the block GEMVs (AVX-512 on 128 weights, AVX2 on 64),
    /// which the general case above reaches only now and then.
    #[test]
    fn q4_gemv_blocks(
        groups in 1usize..5,
        group in prop::sample::select(&[64usize, 128, 256][..]),
        rows in 1usize..10,
        seed in any::<u64>(),
    ) {
        q4_case(groups, group, rows, 1, seed);
    }

    /// A few tokens (2 to 15, a server's batch of running sequences): the few-token kernels
    /// (AVX-512 on groups of 128·m, AVX2 on 64·m, in tiles of rows × up to 8 tokens, with row
    /// and token remainders), and the tile driver for the other groups.
    #[test]
    fn q4_few_tokens(
        groups in 1usize..4,
        group in prop::sample::select(&[32usize, 64, 128, 192, 256][..]),
        rows in 1usize..10,
        n_tok in 2usize..16,
        seed in any::<u64>(),
    ) {
        q4_case(groups, group, rows, n_tok, seed);
    }
}

fn q4_case(groups: usize, group: usize, rows: usize, n_tok: usize, seed: u64) {
    let k = groups * group;
    let mut rng = Rng::new(seed);
    let w: Vec<u8> = (0..rows * k / 2).map(|_| rng.u8()).collect();
    let scales: Vec<f32> = (0..rows * groups)
        .map(|_| rng.f32().abs() * 0.02 + 1e-3)
        .collect();
    // Zero points 0..=15, as AWQ stores them.
    let zs: Vec<f32> = scales
        .iter()
        .map(|s| s * (rng.next_u64() % 16) as f32)
        .collect();
    let x = rng.vec(n_tok * k);
    // The scalar twin computes `s·Σqx − zs·Σx`, the vector levels `Σ(q·s − zs)·x`: both are
    // bounded by the magnitude of the two terms.
    let wmag = |r: usize, j: usize| {
        let byte = w[(r * k + j) / 2];
        let q = if j.is_multiple_of(2) {
            byte & 15
        } else {
            byte >> 4
        };
        let g = r * groups + j / group;
        q as f32 * scales[g] + zs[g]
    };
    let mag = magnitudes(wmag, &x, k, rows);
    let mut want = vec![0.0; rows * n_tok];
    scalar().gemm_q4(&w, &scales, &zs, group, &x, k, &mut want);
    for kern in vector_levels() {
        let mut got = vec![0.0; rows * n_tok];
        kern.gemm_q4(&w, &scales, &zs, group, &x, k, &mut got);
        check(
            &got,
            &want,
            &mag,
            k,
            &format!("{} gemm_q4 group {group}", kern.isa()),
        );
    }
}

/// Zero tokens: an empty output, no panic, on every level.
#[test]
fn zero_tokens() {
    for kern in vector_levels().into_iter().chain([scalar()]) {
        let mut out = [];
        kern.gemm_bf16(&[], &[], 8, &mut out);
        kern.gemm_fp8(Fp8Format::E4M3, &[], &[], 128, &[], 8, &mut out);
        kern.gemm_q4(&[], &[], &[], 8, &[], 8, &mut out);
    }
}

/// Shape errors panic on every level, like the scalar twin.
#[test]
fn bad_shapes_panic() {
    for kern in vector_levels().into_iter().chain([scalar()]) {
        let r = std::panic::catch_unwind(|| {
            let mut out = [0.0; 2];
            kern.gemm_f32(&[0.0; 15], &[0.0; 8], 8, &mut out);
        });
        assert!(r.is_err(), "{}: short w accepted", kern.isa());
        let r = std::panic::catch_unwind(|| {
            let mut out = [0.0; 2];
            kern.gemm_fp8(Fp8Format::E5M2, &[0; 16], &[1.0], 8, &[0.0; 8], 8, &mut out);
        });
        assert!(r.is_err(), "{}: short scales accepted", kern.isa());
    }
}

/// A NaN weight code gives a NaN output on every level (E4M3 NaN goes through a special case in
/// the vector decoders), and E5M2 infinities stay infinite.
#[test]
fn fp8_non_finite_codes() {
    let k = 32;
    for kern in vector_levels().into_iter().chain([scalar()]) {
        for (format, code) in [
            (Fp8Format::E4M3, 0x7f),
            (Fp8Format::E4M3, 0xff),
            (Fp8Format::E5M2, 0x7e),
        ] {
            let mut w = vec![0x38u8; k];
            w[5] = code;
            let mut out = [0.0];
            kern.gemm_fp8(format, &w, &[1.0], k, &[1.0; 32], k, &mut out);
            assert!(
                out[0].is_nan(),
                "{} {format:?} code {code:#x}: {}",
                kern.isa(),
                out[0]
            );
        }
        let mut w = vec![0u8; k];
        w[3] = 0xfc; // E5M2 −inf
        let mut out = [0.0];
        kern.gemm_fp8(Fp8Format::E5M2, &w, &[1.0], k, &[1.0; 32], k, &mut out);
        assert_eq!(out[0], f32::NEG_INFINITY, "{}", kern.isa());
    }
}

/// Only the rows holding an E4M3 NaN code come out NaN, wherever the code sits: in a 4-row
/// decode pass or a tail row, in the first chunk or a later one, next to rows whose largest codes
/// (±448, `0x7e`/`0xfe`) are one below the NaN pattern.
#[test]
fn fp8_nan_marks_only_its_row() {
    let (rows, k) = (6, 64);
    for kern in vector_levels().into_iter().chain([scalar()]) {
        let mut w = vec![0x38u8; rows * k];
        for r in 0..rows {
            w[r * k + 7] = 0x7e;
            w[r * k + 50] = 0xfe;
        }
        w[2 * k + 40] = 0x7f;
        w[5 * k + 63] = 0xff;
        let mut out = [0.0; 6];
        kern.gemm_fp8(Fp8Format::E4M3, &w, &[1.0; 6], k, &[1.0; 64], k, &mut out);
        for (r, v) in out.iter().enumerate() {
            assert_eq!(v.is_nan(), r == 2 || r == 5, "{} row {r}: {v}", kern.isa());
        }
    }
}

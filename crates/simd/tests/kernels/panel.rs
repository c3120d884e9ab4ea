//! The prefill matmul and its helpers: `PanelActs` packing, `gemm_panel` on every level against
//! the scalar twin (bit for bit: one fused multiply-add chain per output everywhere), against a
//! plain f64 matmul (within the summation bound), the kernels that fill its weight blocks
//! (widening, FP8 and 4-bit dequantization), bit for bit, and attention's `mix_rows`.

use crate::{assert_close, scalar, vector_levels, Rng, LENGTHS};
use nano_infer_simd::{
    bf16, f16, fp8_to_f32, Fp8Format, Kernels, PanelActs, PANEL_K_BLOCK, PANEL_TOKEN_TILE,
};
use proptest::prelude::*;

fn same_bits(got: &[f32], want: &[f32], what: &str) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
            "{what}[{i}]: got {g}, want {w}"
        );
    }
}

/// `out (rows, n_tok) = W · xᵀ` through `gemm_panel`, one `(rows, PANEL_K_BLOCK)` block at a
/// time, as the quant crate drives it.
fn panel_matmul(kern: Kernels, w: &[f32], x: &PanelActs, rows: usize, out: &mut [f32]) {
    let k = x.k();
    let mut block = vec![f32::NAN; rows * PANEL_K_BLOCK];
    for k0 in (0..k).step_by(PANEL_K_BLOCK) {
        let kc = (k - k0).min(PANEL_K_BLOCK);
        for r in 0..rows {
            block[r * PANEL_K_BLOCK..r * PANEL_K_BLOCK + kc]
                .copy_from_slice(&w[r * k + k0..r * k + k0 + kc]);
        }
        kern.gemm_panel(&block, x, k0, kc, out, k0 > 0);
    }
}

fn shape() -> impl Strategy<Value = (usize, usize, usize, u64)> {
    (
        prop::sample::select(&LENGTHS[1..]),
        // Rows around the micro-kernels' groups (12, 8, 6, 4, 2, 1) and a task's 96.
        prop_oneof![1usize..30, Just(96usize), Just(97usize)],
        // Tokens around the 32-token tiles and every vector width.
        prop_oneof![1usize..70, Just(128usize)],
        any::<u64>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn pack_round_trips((k, _rows, n_tok, seed) in shape()) {
        let x = Rng::new(seed).vec(n_tok * k);
        let mut acts = PanelActs::new();
        // Packing a larger input first: the buffer is reused, padding must still be zero.
        acts.pack(&Rng::new(seed ^ 1).vec((n_tok + 40) * k), k);
        acts.pack(&x, k);
        prop_assert_eq!((acts.k(), acts.n_tok()), (k, n_tok));
        for t in 0..n_tok {
            for j in 0..k {
                prop_assert_eq!(acts.get(t, j).to_bits(), x[t * k + j].to_bits());
            }
        }
    }

    /// Packing in parts of whole runs, in any order (as threads do), packs what `pack` does.
    #[test]
    fn pack_in_parts((k, _rows, n_tok, seed) in shape(), runs_per_part in 1usize..300) {
        let x = Rng::new(seed).vec(n_tok * k);
        let mut whole = PanelActs::new();
        whole.pack(&x, k);
        let mut parts = PanelActs::new();
        let (data, packer) = parts.start_pack(&x, k);
        data.fill(f32::NAN);
        let len = runs_per_part * PANEL_TOKEN_TILE;
        for (i, part) in data.chunks_mut(len).enumerate().rev() {
            packer.fill(i * len, part);
        }
        prop_assert!(data.iter().all(|v| !v.is_nan()), "every float filled, padding included");
        prop_assert_eq!((parts.k(), parts.n_tok()), (k, n_tok));
        for t in 0..n_tok {
            for j in 0..k {
                prop_assert_eq!(parts.get(t, j).to_bits(), whole.get(t, j).to_bits());
            }
        }
    }

    #[test]
    fn gemm_panel_matches_scalar_bit_for_bit((k, rows, n_tok, seed) in shape()) {
        let mut rng = Rng::new(seed);
        let w = rng.vec(rows * k);
        let x = rng.vec(n_tok * k);
        let mut acts = PanelActs::new();
        acts.pack(&x, k);
        let mut want = vec![0.0; rows * n_tok];
        panel_matmul(scalar(), &w, &acts, rows, &mut want);
        for t in 0..n_tok {
            for r in 0..rows {
                let (mut exact, mut mag) = (0f64, 0f64);
                for j in 0..k {
                    let p = w[r * k + j] as f64 * x[t * k + j] as f64;
                    exact += p;
                    mag += p.abs();
                }
                assert_close(want[r * n_tok + t], exact as f32, k, mag, "scalar gemm_panel vs f64");
            }
        }
        for kern in vector_levels() {
            let mut got = vec![f32::NAN; rows * n_tok];
            panel_matmul(kern, &w, &acts, rows, &mut got);
            same_bits(&got, &want, &format!("{} gemm_panel", kern.isa()));
        }
    }

    /// Every code (NaN and infinity codes included) times a scale: one rounding of the exact
    /// product on every level, so bit-identical to `fp8_to_f32(c) * s`.
    #[test]
    fn dequant_fp8_is_decode_times_scale((n, seed) in (prop::sample::select(LENGTHS), any::<u64>()), e5m2 in any::<bool>()) {
        let mut rng = Rng::new(seed);
        let format = if e5m2 { Fp8Format::E5M2 } else { Fp8Format::E4M3 };
        let codes: Vec<u8> = (0..n).map(|_| rng.u8()).collect();
        let scale = rng.f32().abs() * 0.01 + 1e-6;
        let want: Vec<f32> = codes.iter().map(|&c| fp8_to_f32(format, c) * scale).collect();
        for kern in vector_levels().into_iter().chain([scalar()]) {
            let mut got = vec![0.0; n];
            kern.dequant_fp8(format, &codes, scale, &mut got);
            same_bits(&got, &want, &format!("{} dequant_fp8 {format:?}", kern.isa()));
        }
    }

    #[test]
    fn dequant_q4_is_fused_q_s_minus_zs((n, seed) in (prop::sample::select(LENGTHS), any::<u64>())) {
        let mut rng = Rng::new(seed);
        let bytes: Vec<u8> = (0..n).map(|_| rng.u8()).collect();
        let (scale, zs) = (rng.f32() * 0.02, rng.f32() * 0.2);
        let want: Vec<f32> = bytes
            .iter()
            .flat_map(|&b| [b & 15, b >> 4])
            .map(|q| f32::from(q).mul_add(scale, -zs))
            .collect();
        for kern in vector_levels().into_iter().chain([scalar()]) {
            let mut got = vec![0.0; 2 * n];
            kern.dequant_q4(&bytes, scale, zs, &mut got);
            same_bits(&got, &want, &format!("{} dequant_q4", kern.isa()));
        }
    }

    /// Attention's probabilities times value rows: one FMA chain per output on every level, so
    /// bit for bit; the scalar twin within the summation bound of an f64 sum.
    #[test]
    fn mix_rows_matches_scalar_bit_for_bit(
        d in prop::sample::select(vec![1usize, 8, 15, 16, 17, 33, 64, 128]),
        n in 0usize..40, groups in 1usize..10, pad in 0usize..3, seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let ldp = n + pad;
        let p = rng.vec(groups * ldp);
        let v = rng.vec(n * d);
        let vb: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
        let vh: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
        let out0 = rng.vec(groups * d);
        let run = |kern: Kernels, which: usize| {
            let mut out = out0.clone();
            match which {
                0 => kern.mix_rows_f32(&p, ldp, &v, d, &mut out),
                1 => kern.mix_rows_bf16(&p, ldp, &vb, d, &mut out),
                _ => kern.mix_rows_f16(&p, ldp, &vh, d, &mut out),
            }
            out
        };
        let want = run(scalar(), 0);
        for g in 0..groups {
            for c in 0..d {
                let (mut exact, mut mag) = (out0[g * d + c] as f64, out0[g * d + c].abs() as f64);
                for i in 0..n {
                    let t = p[g * ldp + i] as f64 * v[i * d + c] as f64;
                    exact += t;
                    mag += t.abs();
                }
                assert_close(want[g * d + c], exact as f32, n + 1, mag, "scalar mix_rows vs f64");
            }
        }
        for kern in vector_levels() {
            for which in 0..3 {
                let want = run(scalar(), which);
                same_bits(&run(kern, which), &want, &format!("{} mix_rows #{which}", kern.isa()));
            }
        }
    }

    #[test]
    fn widen_is_exact((n, seed) in (prop::sample::select(LENGTHS), any::<u64>())) {
        let mut rng = Rng::new(seed);
        // Random bit patterns: normals, subnormals, infinities and NaNs alike.
        let b: Vec<bf16> = (0..n).map(|_| bf16::from_bits(rng.next_u64() as u16)).collect();
        let h: Vec<f16> = (0..n).map(|_| f16::from_bits(rng.next_u64() as u16)).collect();
        let want_b: Vec<f32> = b.iter().map(|v| v.to_f32()).collect();
        let want_h: Vec<f32> = h.iter().map(|v| v.to_f32()).collect();
        for kern in vector_levels().into_iter().chain([scalar()]) {
            let mut got = vec![0.0; n];
            kern.widen_bf16(&b, &mut got);
            same_bits(&got, &want_b, &format!("{} widen_bf16", kern.isa()));
            kern.widen_f16(&h, &mut got);
            same_bits(&got, &want_h, &format!("{} widen_f16", kern.isa()));
        }
    }
}

#[test]
fn gemm_panel_rejects_bad_shapes() {
    let mut acts = PanelActs::new();
    acts.pack(&[1.0; 6 * 10], 10);
    let w = vec![1.0; 2 * PANEL_K_BLOCK];
    let bad: [(&[f32], usize, usize, usize); 3] = [
        (&w[..PANEL_K_BLOCK], 0, 10, 12), // w has one row, out two
        (&w, 4, 7, 12),                   // inputs 4..11 exceed k = 10
        (&w, 0, 10, 13),                  // out is not (rows, 6)
    ];
    for (w, k0, kc, out_len) in bad {
        let mut out = vec![0.0; out_len];
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            scalar().gemm_panel(w, &acts, k0, kc, &mut out, false)
        }));
        assert!(r.is_err(), "accepted k0 {k0}, kc {kc}, out {out_len}");
    }
}

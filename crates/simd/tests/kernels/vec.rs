//! Dots, axpys, RMSNorm, softmax and SwiGLU against their scalar twins.

use crate::{assert_close, scalar, vector_levels, Rng, LENGTHS};
use nano_infer_simd::{bf16, f16};
use proptest::prelude::*;

fn len_seed() -> impl Strategy<Value = (usize, u64)> {
    (prop::sample::select(LENGTHS), any::<u64>())
}

proptest! {
    #[test]
    fn dots((n, seed) in len_seed()) {
        let mut rng = Rng::new(seed);
        let a = rng.vec(n);
        let b = rng.vec(n);
        let ab: Vec<bf16> = a.iter().map(|&v| bf16::from_f32(v)).collect();
        let ah: Vec<f16> = a.iter().map(|&v| f16::from_f32(v)).collect();
        let mag = |w: &dyn Fn(usize) -> f32| (0..n).map(|i| (w(i) as f64 * b[i] as f64).abs()).sum::<f64>();
        for kern in vector_levels() {
            let isa = kern.isa();
            assert_close(kern.dot_f32(&a, &b), scalar().dot_f32(&a, &b), n, mag(&|i| a[i]), &format!("{isa} dot_f32"));
            assert_close(kern.dot_bf16(&ab, &b), scalar().dot_bf16(&ab, &b), n, mag(&|i| ab[i].to_f32()), &format!("{isa} dot_bf16"));
            assert_close(kern.dot_f16(&ah, &b), scalar().dot_f16(&ah, &b), n, mag(&|i| ah[i].to_f32()), &format!("{isa} dot_f16"));
        }
    }

    /// One fused multiply-add against a multiply then an add: at most one rounding of `a·x`
    /// apart, well inside the `k = 1` bound.
    #[test]
    fn axpys((n, seed) in len_seed()) {
        let mut rng = Rng::new(seed);
        let a = rng.f32() * 3.0;
        let x = rng.vec(n);
        let y0 = rng.vec(n);
        let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
        let xh: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
        for kern in vector_levels() {
            let isa = kern.isa();
            let (mut got, mut want) = (y0.clone(), y0.clone());
            kern.axpy(a, &x, &mut got);
            scalar().axpy(a, &x, &mut want);
            for i in 0..n {
                assert_close(got[i], want[i], 1, (a * x[i]).abs() as f64 + y0[i].abs() as f64, &format!("{isa} axpy[{i}]"));
            }
            let (mut got, mut want) = (y0.clone(), y0.clone());
            kern.axpy_bf16(a, &xb, &mut got);
            scalar().axpy_bf16(a, &xb, &mut want);
            for i in 0..n {
                assert_close(got[i], want[i], 1, (a * x[i]).abs() as f64 * 1.01 + y0[i].abs() as f64, &format!("{isa} axpy_bf16[{i}]"));
            }
            let (mut got, mut want) = (y0.clone(), y0.clone());
            kern.axpy_f16(a, &xh, &mut got);
            scalar().axpy_f16(a, &xh, &mut want);
            for i in 0..n {
                assert_close(got[i], want[i], 1, (a * x[i]).abs() as f64 * 1.01 + y0[i].abs() as f64, &format!("{isa} axpy_f16[{i}]"));
            }
        }
    }

    /// Only the sum of squares is ordered differently; it enters through `1/sqrt`, which halves
    /// its relative error, so the `k`-scaled bound on `|out|` holds.
    #[test]
    fn rms_norm((n, seed) in len_seed()) {
        prop_assume!(n > 0);
        let mut rng = Rng::new(seed);
        let x: Vec<f32> = rng.vec(n).iter().map(|v| v * 4.0).collect();
        let w = rng.vec(n);
        let mut want = vec![0.0; n];
        scalar().rms_norm(&x, &w, 1e-6, &mut want);
        for kern in vector_levels() {
            let mut got = vec![0.0; n];
            kern.rms_norm(&x, &w, 1e-6, &mut got);
            for i in 0..n {
                assert_close(got[i], want[i], n, want[i].abs() as f64, &format!("{} rms_norm[{i}]", kern.isa()));
            }
        }
    }

    /// `p_i = e_i / Σe`: the vector `exp` is within a few ulp of libm and the sum is reordered,
    /// so each `p_i` is within `≈ 2·k·ε` relative of the scalar one.
    #[test]
    fn softmax((n, seed) in len_seed(), spread in prop::sample::select(&[1.0f32, 20.0, 100.0][..]), masked in any::<bool>()) {
        let mut rng = Rng::new(seed);
        let mut x: Vec<f32> = rng.vec(n).iter().map(|v| v * spread).collect();
        if masked {
            // Causal masks arrive as −inf; they must come out as exact zeros.
            for v in x.iter_mut().skip(1).step_by(3) {
                *v = f32::NEG_INFINITY;
            }
        }
        let mut want = x.clone();
        scalar().softmax(&mut want);
        for kern in vector_levels() {
            let mut got = x.clone();
            kern.softmax(&mut got);
            for i in 0..n {
                assert_close(got[i], want[i], n, want[i].abs() as f64, &format!("{} softmax[{i}]", kern.isa()));
            }
        }
    }

    /// Element-wise: `exp` within a few ulp plus a division and a multiply, so a `k = 1` bound on
    /// `|out|` (10 ε relative) covers it.
    #[test]
    fn silu_mul((n, seed) in len_seed(), spread in prop::sample::select(&[1.0f32, 10.0, 100.0][..])) {
        let mut rng = Rng::new(seed);
        let gate: Vec<f32> = rng.vec(n).iter().map(|v| v * spread).collect();
        let up = rng.vec(n);
        let mut want = gate.clone();
        scalar().silu_mul(&mut want, &up);
        for kern in vector_levels() {
            let mut got = gate.clone();
            kern.silu_mul(&mut got, &up);
            for i in 0..n {
                assert_close(got[i], want[i], 1, want[i].abs() as f64, &format!("{} silu_mul[{i}] (gate {})", kern.isa(), gate[i]));
            }
        }
    }
}

/// A dense sweep of the vector `exp` (through softmax of two values, `[x, 0]` → `e^x/(e^x+1)`,
/// would mix errors, so we use SiLU with `up = 1` on a grid): every gate in [−87, 87].
#[test]
fn silu_grid() {
    let gate: Vec<f32> = (-87_000..=87_000).map(|i| i as f32 * 1e-3).collect();
    let up = vec![1.0; gate.len()];
    let mut want = gate.clone();
    scalar().silu_mul(&mut want, &up);
    for kern in vector_levels() {
        let mut got = gate.clone();
        kern.silu_mul(&mut got, &up);
        for i in 0..gate.len() {
            assert_close(
                got[i],
                want[i],
                1,
                want[i].abs() as f64,
                &format!("{} silu({})", kern.isa(), gate[i]),
            );
        }
    }
}

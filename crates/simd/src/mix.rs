//! Attention's probabilities times value rows ([`crate::Kernels::mix_rows_f32`] and its bf16/f16
//! siblings), one driver for every vector level: up to 4 output rows (query heads) at a time,
//! `NV` vectors of columns per pass over the value rows, so each value vector is loaded once for
//! all of them. Every output is the chain `fma(p, v, acc)` over the rows in order, as in the
//! scalar twin, so all levels agree bit for bit.

use crate::scalar::mix_rows_shape;
use crate::tile::Lanes;

/// A value-row element a level loads as `L::N` f32 lanes.
pub(crate) trait LoadLanes<L: Lanes>: Copy {
    /// # Safety
    /// `p..p+L::N` is readable and the CPU has the level.
    unsafe fn load(p: *const Self) -> L::V;
    fn to_f32(self) -> f32;
}

/// See [`crate::Kernels::mix_rows_f32`]; shapes are checked here.
///
/// # Safety
/// The CPU has the level of `L`.
#[inline(always)]
pub(crate) unsafe fn mix_rows<L: Lanes, E: LoadLanes<L>, const NV: usize>(
    p: &[f32],
    ldp: usize,
    v: &[E],
    d: usize,
    out: &mut [f32],
) {
    let (groups, n) = mix_rows_shape(p.len(), ldp, v.len(), d, out.len());
    let mut g = 0;
    // SAFETY (all calls): rows g..g+G of out and p exist (mix_rows_shape); the level is the
    // caller's contract.
    while g + 4 <= groups {
        unsafe { mix_group::<L, E, NV, 4>(p, ldp, v, d, n, g, out) };
        g += 4;
    }
    match groups - g {
        3 => unsafe { mix_group::<L, E, NV, 3>(p, ldp, v, d, n, g, out) },
        2 => unsafe { mix_group::<L, E, NV, 2>(p, ldp, v, d, n, g, out) },
        1 => unsafe { mix_group::<L, E, NV, 1>(p, ldp, v, d, n, g, out) },
        _ => {}
    }
}

/// Output rows `g0..g0+G`.
///
/// # Safety
/// `(groups, n)` came from `mix_rows_shape` and `g0 + G <= groups`; the CPU has the level.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // index loops over the register tile read clearer here
unsafe fn mix_group<L: Lanes, E: LoadLanes<L>, const NV: usize, const G: usize>(
    p: &[f32],
    ldp: usize,
    v: &[E],
    d: usize,
    n: usize,
    g0: usize,
    out: &mut [f32],
) {
    let w = NV * L::N;
    let (pp, vp, op) = (p.as_ptr(), v.as_ptr(), out.as_mut_ptr());
    let mut c = 0;
    // SAFETY (whole loop): columns c..c+w <= d of rows g0..g0+G of out, of every value row, and
    // the weights (g0+g)·ldp + i exist (caller's contract); the CPU has the level.
    while c + w <= d {
        unsafe {
            let mut acc = [[L::zero(); NV]; G];
            for g in 0..G {
                for u in 0..NV {
                    acc[g][u] = L::load(op.add((g0 + g) * d + c + u * L::N));
                }
            }
            for i in 0..n {
                let row = vp.add(i * d + c);
                let mut vv = [L::zero(); NV];
                for u in 0..NV {
                    vv[u] = E::load(row.add(u * L::N));
                }
                for g in 0..G {
                    let a = L::splat(*pp.add((g0 + g) * ldp + i));
                    for u in 0..NV {
                        acc[g][u] = L::fma(a, vv[u], acc[g][u]);
                    }
                }
            }
            for g in 0..G {
                for u in 0..NV {
                    L::store(op.add((g0 + g) * d + c + u * L::N), acc[g][u]);
                }
            }
        }
        c += w;
    }
    // Columns past the last full pass: the same chain, one column at a time.
    for c in c..d {
        for g in 0..G {
            let o = &mut out[(g0 + g) * d + c];
            for i in 0..n {
                *o = p[(g0 + g) * ldp + i].mul_add(v[i * d + c].to_f32(), *o);
            }
        }
    }
}

//! Scalar twins of every kernel: the fallback and the test oracle. Written for clarity, not speed.

use crate::panel::{panel_shape, PanelActs, PANEL_K_BLOCK, TOKEN_TILE};
use crate::q8::{q4x16_shape, q8x16_shape, quantize_shape, Q8Acts, CHUNK_BYTES, TILE_ROWS};
use crate::Fp8Format;
use half::{bf16, f16};

/// `Σ a[i]·b[i]`, summed in order.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f32: length mismatch");
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `Σ a[i]·x[i]` with `a` widened to f32.
pub fn dot_bf16(a: &[bf16], x: &[f32]) -> f32 {
    assert_eq!(a.len(), x.len(), "dot_bf16: length mismatch");
    a.iter().zip(x).map(|(a, b)| a.to_f32() * b).sum()
}

/// `Σ a[i]·x[i]` with `a` widened to f32.
pub fn dot_f16(a: &[f16], x: &[f32]) -> f32 {
    assert_eq!(a.len(), x.len(), "dot_f16: length mismatch");
    a.iter().zip(x).map(|(a, b)| a.to_f32() * b).sum()
}

/// `dst[i] = src[i]` as f32 (exact).
pub fn widen_bf16(src: &[bf16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "widen_bf16: length mismatch");
    dst.iter_mut().zip(src).for_each(|(d, s)| *d = s.to_f32());
}

/// `dst[i] = src[i]` as f32 (exact).
pub fn widen_f16(src: &[f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "widen_f16: length mismatch");
    dst.iter_mut().zip(src).for_each(|(d, s)| *d = s.to_f32());
}

/// Every code decoded exactly, times `scale`: one rounding.
pub fn dequant_fp8(format: Fp8Format, codes: &[u8], scale: f32, dst: &mut [f32]) {
    assert_eq!(codes.len(), dst.len(), "dequant_fp8: length mismatch");
    let table = fp8_table(format);
    for (d, &c) in dst.iter_mut().zip(codes) {
        *d = table[c as usize] * scale;
    }
}

/// The 256 values of `format`'s codes, built once: decoding with `powi` per code was the
/// slowest part of a scalar prefill block.
fn fp8_table(format: Fp8Format) -> &'static [f32; 256] {
    static TABLES: [std::sync::OnceLock<[f32; 256]>; 2] =
        [std::sync::OnceLock::new(), std::sync::OnceLock::new()];
    let i = (format == Fp8Format::E5M2) as usize;
    TABLES[i].get_or_init(|| std::array::from_fn(|c| fp8_to_f32(format, c as u8)))
}

/// Checks that `dst` holds the two weights of every byte of a q4 stretch.
pub(crate) fn dequant_shape_q4(bytes: &[u8], dst: &[f32]) {
    assert_eq!(
        2 * bytes.len(),
        dst.len(),
        "dequant_q4: dst is not 2 × bytes"
    );
}

/// `q·s − z·s` with one rounding (a fused multiply-add, as the q4 matmuls decode), low nibble
/// first.
pub fn dequant_q4(bytes: &[u8], scale: f32, zero_scaled: f32, dst: &mut [f32]) {
    dequant_shape_q4(bytes, dst);
    for (pair, &b) in dst.chunks_exact_mut(2).zip(bytes) {
        pair[0] = f32::from(b & 15).mul_add(scale, -zero_scaled);
        pair[1] = f32::from(b >> 4).mul_add(scale, -zero_scaled);
    }
}

/// Checks a `mix_rows` call; returns `(groups, n)`: `v` is `(n, d)`, `out` is `(groups, d)`, and
/// `p` holds `groups` rows of `n` weights `ldp` apart.
pub(crate) fn mix_rows_shape(
    p_len: usize,
    ldp: usize,
    v_len: usize,
    d: usize,
    out_len: usize,
) -> (usize, usize) {
    assert!(
        d > 0 && v_len.is_multiple_of(d) && out_len.is_multiple_of(d),
        "mix_rows: v or out is not a whole number of rows of {d}"
    );
    let (groups, n) = (out_len / d, v_len / d);
    assert!(
        groups == 0 || (ldp >= n && p_len >= (groups - 1) * ldp + n),
        "mix_rows: p does not hold {groups} rows of {n} weights {ldp} apart"
    );
    (groups, n)
}

/// `out[g, c] = fma(p[g·ldp + i], v[i, c], out[g, c])` for `i = 0..n` in order: one fused
/// chain per output, which every level reproduces bit for bit.
pub fn mix_rows<E: Copy + Into<f32>>(p: &[f32], ldp: usize, v: &[E], d: usize, out: &mut [f32]) {
    let (groups, n) = mix_rows_shape(p.len(), ldp, v.len(), d, out.len());
    for g in 0..groups {
        let o = &mut out[g * d..(g + 1) * d];
        for i in 0..n {
            let a = p[g * ldp + i];
            for (o, &x) in o.iter_mut().zip(&v[i * d..(i + 1) * d]) {
                *o = a.mul_add(x.into(), *o);
            }
        }
    }
}

/// [`mix_rows`] over f32 values.
pub fn mix_rows_f32(p: &[f32], ldp: usize, v: &[f32], d: usize, out: &mut [f32]) {
    mix_rows(p, ldp, v, d, out)
}

/// [`mix_rows`] over bf16 values.
pub fn mix_rows_bf16(p: &[f32], ldp: usize, v: &[bf16], d: usize, out: &mut [f32]) {
    mix_rows(p, ldp, v, d, out)
}

/// [`mix_rows`] over f16 values.
pub fn mix_rows_f16(p: &[f32], ldp: usize, v: &[f16], d: usize, out: &mut [f32]) {
    mix_rows(p, ldp, v, d, out)
}

/// Checks the matmul layout (`w` of `w_len` scalars is `(rows, k)`, `x` is `(n_tok, k)`, `out` is
/// `(rows, n_tok)`) and returns `(rows, n_tok)`. Every level calls this before touching memory,
/// so the vector kernels may index without further bounds checks.
pub(crate) fn gemm_shape(w_len: usize, x_len: usize, k: usize, out_len: usize) -> (usize, usize) {
    assert!(
        k > 0 && x_len.is_multiple_of(k),
        "gemm: x is not (n_tok, k)"
    );
    let n_tok = x_len / k;
    let rows = out_len / n_tok.max(1);
    assert_eq!(out_len, rows * n_tok, "gemm: out is not (rows, n_tok)");
    assert_eq!(w_len, rows * k, "gemm: w is not (rows, k)");
    (rows, n_tok)
}

// Shape checks of the parameterised formats, shared by the vector levels; they panic where the
// scalar twins would.

/// Checks the fp8 parameters; returns `(rows, n_tok, blocks)`.
pub(crate) fn fp8_shape(
    w: &[u8],
    scales: &[f32],
    block_k: usize,
    x: &[f32],
    k: usize,
    out: &[f32],
) -> (usize, usize, usize) {
    let (rows, n_tok) = gemm_shape(w.len(), x.len(), k, out.len());
    assert!(block_k > 0, "gemm_fp8: block_k must be positive");
    let blocks = k.div_ceil(block_k);
    assert!(
        scales.len() >= rows * blocks,
        "gemm_fp8: scales is not (rows, k/block_k)"
    );
    (rows, n_tok, blocks)
}

/// Checks the q4 parameters; returns `(rows, n_tok, groups)`.
pub(crate) fn q4_shape(
    w: &[u8],
    scales: &[f32],
    zero_scaled: &[f32],
    group: usize,
    x: &[f32],
    k: usize,
    out: &[f32],
) -> (usize, usize, usize) {
    assert!(
        group > 0 && k.is_multiple_of(group) && group.is_multiple_of(2),
        "gemm_q4: group must divide k and be even"
    );
    let (rows, n_tok) = gemm_shape(w.len() * 2, x.len(), k, out.len());
    let groups = k / group;
    assert!(
        scales.len() >= rows * groups && zero_scaled.len() >= rows * groups,
        "gemm_q4: scales/zero_scaled are not (rows, k/group)"
    );
    (rows, n_tok, groups)
}

/// Shared driver of the dense matmuls: `out` is `(rows, n_tok)`.
fn gemm_with(
    w_len: usize,
    x: &[f32],
    k: usize,
    out: &mut [f32],
    row: impl Fn(usize, &[f32]) -> f32,
) {
    let (rows, n_tok) = gemm_shape(w_len, x.len(), k, out.len());
    for r in 0..rows {
        for t in 0..n_tok {
            out[r * n_tok + t] = row(r, &x[t * k..(t + 1) * k]);
        }
    }
}

/// `out (rows, n_tok) = w (rows, k) · x (n_tok, k)ᵀ`, one in-order dot per output.
pub fn gemm_f32(w: &[f32], x: &[f32], k: usize, out: &mut [f32]) {
    gemm_with(w.len(), x, k, out, |r, xt| {
        dot_f32(&w[r * k..(r + 1) * k], xt)
    })
}

/// [`gemm_f32`] with bf16 weights.
pub fn gemm_bf16(w: &[bf16], x: &[f32], k: usize, out: &mut [f32]) {
    gemm_with(w.len(), x, k, out, |r, xt| {
        w[r * k..(r + 1) * k]
            .iter()
            .zip(xt)
            .map(|(a, b)| a.to_f32() * b)
            .sum()
    })
}

/// [`gemm_f32`] with f16 weights.
pub fn gemm_f16(w: &[f16], x: &[f32], k: usize, out: &mut [f32]) {
    gemm_with(w.len(), x, k, out, |r, xt| {
        w[r * k..(r + 1) * k]
            .iter()
            .zip(xt)
            .map(|(a, b)| a.to_f32() * b)
            .sum()
    })
}

/// [`gemm_f32`] with FP8 codes: each `block_k` span of a row is summed, then scaled by
/// `scales (rows, k.div_ceil(block_k))`.
pub fn gemm_fp8(
    format: Fp8Format,
    w: &[u8],
    scales: &[f32],
    block_k: usize,
    x: &[f32],
    k: usize,
    out: &mut [f32],
) {
    let blocks = k.div_ceil(block_k);
    gemm_with(w.len(), x, k, out, |r, xt| {
        let row = &w[r * k..(r + 1) * k];
        (0..blocks)
            .map(|b| {
                let span = b * block_k..((b + 1) * block_k).min(k);
                let s: f32 = row[span.clone()]
                    .iter()
                    .zip(&xt[span])
                    .map(|(&c, v)| fp8_to_f32(format, c) * v)
                    .sum();
                s * scales[r * blocks + b]
            })
            .sum()
    })
}

/// [`gemm_f32`] with 4-bit weights `(rows, k/2)` bytes (low nibble first) and per-group
/// `scales` and `zero_scaled` `(rows, k/group)`: `w = q·s − z·s`.
pub fn gemm_q4(
    w: &[u8],
    scales: &[f32],
    zero_scaled: &[f32],
    group: usize,
    x: &[f32],
    k: usize,
    out: &mut [f32],
) {
    assert!(
        k.is_multiple_of(group) && group.is_multiple_of(2),
        "gemm_q4: group must divide k and be even"
    );
    let groups = k / group;
    gemm_with(w.len() * 2, x, k, out, |r, xt| {
        let row = &w[r * k / 2..(r + 1) * k / 2];
        (0..groups)
            .map(|g| {
                let mut qx = 0.0f32;
                let mut sx = 0.0f32;
                for j in g * group..(g + 1) * group {
                    let byte = row[j / 2];
                    let q = if j.is_multiple_of(2) {
                        byte & 15
                    } else {
                        byte >> 4
                    };
                    qx += q as f32 * xt[j];
                    sx += xt[j];
                }
                scales[r * groups + g] * qx - zero_scaled[r * groups + g] * sx
            })
            .sum()
    })
}

/// `out = weight · x / sqrt(mean(x²) + eps)`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    assert!(
        x.len() == weight.len() && x.len() == out.len(),
        "rms_norm: length mismatch"
    );
    let mean_sq = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (mean_sq + eps).sqrt();
    for ((o, v), w) in out.iter_mut().zip(x).zip(weight) {
        *o = w * (v * inv);
    }
}

/// In-place softmax, with the maximum subtracted first.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

/// `gate = silu(gate) · up` (the SwiGLU MLP).
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "silu_mul: length mismatch");
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// `y += a·x`.
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy: length mismatch");
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// `y += a·x` with `x` widened to f32.
pub fn axpy_bf16(a: f32, x: &[bf16], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy_bf16: length mismatch");
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi.to_f32();
    }
}

/// `y += a·x` with `x` widened to f32.
pub fn axpy_f16(a: f32, x: &[f16], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy_f16: length mismatch");
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi.to_f32();
    }
}

/// Exact decoding of one FP8 code.
pub fn fp8_to_f32(format: Fp8Format, code: u8) -> f32 {
    let sign = if code & 0x80 != 0 { -1.0f32 } else { 1.0 };
    let (exp_bits, man_bits, bias) = match format {
        Fp8Format::E4M3 => (4u32, 3u32, 7i32),
        Fp8Format::E5M2 => (5, 2, 15),
    };
    let exp = ((code as u32 >> man_bits) & ((1 << exp_bits) - 1)) as i32;
    let man = (code as u32 & ((1 << man_bits) - 1)) as f32;
    let exp_max = (1 << exp_bits) - 1;
    match format {
        Fp8Format::E4M3 if exp == exp_max && man == 7.0 => return f32::NAN,
        Fp8Format::E5M2 if exp == exp_max => {
            return if man == 0.0 {
                sign * f32::INFINITY
            } else {
                f32::NAN
            };
        }
        _ => {}
    }
    let scale = (1u32 << man_bits) as f32;
    if exp == 0 {
        sign * (man / scale) * 2f32.powi(1 - bias)
    } else {
        sign * (1.0 + man / scale) * 2f32.powi(exp - bias)
    }
}

/// The definition of int8 activation quantization (see [`crate::q8`]): per block of `block`
/// inputs, `sx = absmax/127` (NaN inputs ignored), codes `round_ties_even(x·127/absmax)` clamped
/// to ±127 (NaN products give 0), and the codes' sum.
pub fn quantize_q8(x: &[f32], block: usize, xq: &mut [i8], xs: &mut [f32], isum: &mut [i32]) {
    quantize_shape(x, block, xq, xs, isum);
    for (b, (xb, qb)) in x
        .chunks_exact(block)
        .zip(xq.chunks_exact_mut(block))
        .enumerate()
    {
        let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        let mut sum = 0i32;
        for (q, v) in qb.iter_mut().zip(xb) {
            // `as` saturates (NaN → 0); |v·inv| ≤ 127 up to rounding, the clamp makes it sure.
            *q = (v * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
            sum += *q as i32;
        }
        xs[b] = amax / 127.0;
        isum[b] = sum;
    }
}

/// The integer dot of row `i` of a q4x16 tile over block `[j0, j0 + block)` with token `xq`.
fn q4x16_idot(tile: &[u8], i: usize, xq: &[i8], j0: usize, block: usize) -> i32 {
    let mut dot = 0i32;
    for j in j0..j0 + block {
        let byte = tile[(j / 8) * CHUNK_BYTES + 4 * i + j % 4];
        let q = if j % 8 < 4 { byte & 15 } else { byte >> 4 };
        dot += q as i32 * xq[j] as i32;
    }
    dot
}

/// The definition of the q4x16 × int8 algorithm (see [`crate::q8`]): exact integer dots per
/// activation block, then the float epilogue in a fixed order with fused multiply-adds.
pub fn gemm_q4x16_q8(
    w: &[u8],
    scales: &[f32],
    zero_scaled: &[f32],
    group: usize,
    x: &Q8Acts,
    out: &mut [f32],
) {
    let (rows, _, groups) = q4x16_shape(w, scales, zero_scaled, group, x, out);
    let (k, n_tok, block) = (x.k, x.n_tok, x.block);
    let tile_bytes = k / 8 * CHUNK_BYTES;
    for r in 0..rows {
        let (t, i) = (r / TILE_ROWS, r % TILE_ROWS);
        let tile = &w[t * tile_bytes..(t + 1) * tile_bytes];
        for tok in 0..n_tok {
            let xq = &x.xq[tok * k..(tok + 1) * k];
            let mut acc = 0.0f32;
            for g in 0..groups {
                let mut ga = 0.0f32;
                for b in g * group / block..(g + 1) * group / block {
                    let dot = q4x16_idot(tile, i, xq, b * block, block);
                    ga = (dot as f32).mul_add(x.xs[tok * (k / block) + b], ga);
                }
                let p = (t * groups + g) * TILE_ROWS + i;
                acc = scales[p].mul_add(ga, acc);
                acc = (-zero_scaled[p]).mul_add(x.gsum[tok * groups + g], acc);
            }
            out[r * n_tok + tok] = acc;
        }
    }
}

/// The definition of the q8x16 × int8 algorithm (see [`crate::q8`]).
pub fn gemm_q8x16_q8(w: &[i8], scales: &[f32], x: &Q8Acts, out: &mut [f32]) {
    let (rows, _) = q8x16_shape(w, scales, x, out);
    let (k, n_tok, block) = (x.k, x.n_tok, x.block);
    let tile_bytes = k / 4 * CHUNK_BYTES;
    for r in 0..rows {
        let (t, i) = (r / TILE_ROWS, r % TILE_ROWS);
        let tile = &w[t * tile_bytes..(t + 1) * tile_bytes];
        for tok in 0..n_tok {
            let xq = &x.xq[tok * k..(tok + 1) * k];
            let mut acc = 0.0f32;
            for b in 0..k / block {
                let dot: i32 = (b * block..(b + 1) * block)
                    .map(|j| tile[(j / 4) * CHUNK_BYTES + 4 * i + j % 4] as i32 * xq[j] as i32)
                    .sum();
                acc = (dot as f32).mul_add(x.xs[tok * (k / block) + b], acc);
            }
            out[r * n_tok + tok] = acc * scales[r];
        }
    }
}

/// See [`crate::Kernels::gemm_panel`]: one fused multiply-add chain per output, the definition
/// every level reproduces bit for bit.
pub fn gemm_panel(
    w: &[f32],
    x: &PanelActs,
    k0: usize,
    kc: usize,
    out: &mut [f32],
    accumulate: bool,
) {
    let rows = panel_shape(w, x, k0, kc, out);
    let n_tok = x.n_tok;
    for r in 0..rows {
        let wr = &w[r * PANEL_K_BLOCK..r * PANEL_K_BLOCK + kc];
        for t in 0..n_tok {
            let o = &mut out[r * n_tok + t];
            let mut acc = if accumulate { *o } else { 0.0 };
            // Token t's inputs k0.. inside its packed tile, one every TOKEN_TILE floats.
            let start = ((t / TOKEN_TILE) * x.k + k0) * TOKEN_TILE + t % TOKEN_TILE;
            let xs = x.data[start..].iter().step_by(TOKEN_TILE);
            for (&wj, &xj) in wr.iter().zip(xs) {
                acc = wj.mul_add(xj, acc);
            }
            *o = acc;
        }
    }
}

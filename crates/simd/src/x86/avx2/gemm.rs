//! AVX2 matmuls for the dense formats and f32-activation q4, on the shared [`crate::tile`] driver
//! (FP8 has its own kernel with per-block accumulators in `fp8.rs`).
//!
//! Tile: 4 rows × 3 tokens = 12 accumulators + 4 decoded weight vectors = all 16 ymm registers
//! (activations are FMA memory operands); dense formats with 2 to 14 tokens take tiles sized to
//! their count ([`gemm_dense`]). Decoding per 8 weights: bf16 is zero-extend + shift,
//! f16 is one `vcvtph2ps`, and q4 shifts a broadcast 32-bit word by 0, 4, …, 28 and masks.

use super::{hsum, Avx2Fma, Elem};
use crate::panel::{self, panel_shape, PanelActs};
use crate::scalar::{self, q4_shape};
use crate::tile::{self, Decode};
use crate::x86::few::{self, FEW_MAX_TOK, FEW_T};
use core::arch::x86_64::*;
use half::{bf16, f16};

const R: usize = 4;
const T: usize = 3;

/// Dense weights of element type `E`, one segment per row.
struct Dense<'a, E> {
    w: &'a [E],
    k: usize,
}

impl<E: Elem> Decode for Dense<'_, E> {
    type L = Avx2Fma;
    type P = ();
    fn seg(&self) -> usize {
        self.k
    }
    #[inline(always)]
    unsafe fn params(&self, _: usize, _: usize) {}
    #[inline(always)]
    unsafe fn load(&self, r: usize, j: usize, _: ()) -> __m256 {
        // SAFETY: (r, j..j+8) is inside the (rows, k) weight (caller's contract).
        unsafe { E::load8(self.w.as_ptr().add(r * self.k + j)) }
    }
    #[inline(always)]
    fn scalar(&self, r: usize, j: usize, _: usize) -> f32 {
        self.w[r * self.k + j].to_f32()
    }
    #[inline(always)]
    fn prefetch(&self, r: usize, j: usize) {
        let at = self.w.as_ptr().wrapping_add(r * self.k + j);
        // SAFETY: a prefetch hint reads nothing and never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast()) }
    }
}

/// 4-bit weights with a scale and a scaled zero per (row, group): `w = q·s − z·s`, one FMA after
/// the unpack.
struct Q4<'a> {
    w: &'a [u8],
    scales: &'a [f32],
    zero_scaled: &'a [f32],
    group: usize,
    groups: usize,
    k: usize,
}

impl Decode for Q4<'_> {
    type L = Avx2Fma;
    type P = (__m256, __m256);
    fn seg(&self) -> usize {
        self.group
    }
    #[inline(always)]
    unsafe fn params(&self, r: usize, g: usize) -> (__m256, __m256) {
        let i = r * self.groups + g;
        // SAFETY: i < rows·groups and both parameter slices hold that many entries (checked);
        // broadcasts need only the avx target feature the caller runs under.
        unsafe {
            let s = *self.scales.get_unchecked(i);
            let z = *self.zero_scaled.get_unchecked(i);
            (_mm256_set1_ps(s), _mm256_set1_ps(-z))
        }
    }
    #[inline(always)]
    unsafe fn load(&self, r: usize, j: usize, (s, neg_z): (__m256, __m256)) -> __m256 {
        // SAFETY: j is even, so the 4 bytes holding weights (r, j..j+8) start at (r·k + j)/2 and
        // are inside w (caller's contract); the rest is register arithmetic under avx2+fma.
        unsafe {
            let word = self
                .w
                .as_ptr()
                .add((r * self.k + j) / 2)
                .cast::<u32>()
                .read_unaligned();
            let shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
            let q = _mm256_srlv_epi32(_mm256_set1_epi32(word as i32), shifts);
            let q = _mm256_and_si256(q, _mm256_set1_epi32(15));
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), s, neg_z)
        }
    }
    #[inline(always)]
    fn scalar(&self, r: usize, j: usize, g: usize) -> f32 {
        let byte = self.w[(r * self.k + j) / 2];
        let q = if j.is_multiple_of(2) {
            byte & 15
        } else {
            byte >> 4
        };
        let i = r * self.groups + g;
        q as f32 * self.scales[i] - self.zero_scaled[i]
    }
    #[inline(always)]
    fn prefetch(&self, r: usize, j: usize) {
        let at = self.w.as_ptr().wrapping_add((r * self.k + j) / 2);
        // SAFETY: a prefetch hint reads nothing and never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast()) }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_imp<D: Decode<L = Avx2Fma>>(
    d: &D,
    x: &[f32],
    k: usize,
    rows: usize,
    n_tok: usize,
    out: &mut [f32],
) {
    // SAFETY: the caller checked the shapes, and this function runs with avx2+fma+f16c.
    unsafe { tile::gemm::<_, R, T>(d, x, k, rows, n_tok, out) }
}

/// Dense weights (bf16, f16, f32). A server step's running sequences (up to 8 tokens) get the
/// tile that measured fastest for their count, most often one that covers every token so each
/// weight is decoded once (the 4 × 3 tile decoded an 8-token step's rows three times); 8 tokens
/// run as two 3 × 4 tiles, since 16 accumulators leave no ymm register for the weights.
/// Measured (`few_tokens` bench, 2560 → 9728 bf16 from DRAM, Zen 4): 4 tokens 9.3 → 13.5 GiB/s,
/// 7 tokens 5.6 (1 × 7) → 7.0 (2 × 7), 8 tokens 4.4 → 7.0 (5.3 as one 1 × 8 tile). 9 to 14
/// tokens (decodes beside a prompt chunk) run two tiles a row pass: 9 tokens 4.8 → 6.9, 12
/// tokens 3.7 → 5.5.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_dense<E: Elem>(
    w: &[E],
    x: &[f32],
    k: usize,
    rows: usize,
    n_tok: usize,
    out: &mut [f32],
) {
    let d = &Dense { w, k };
    // SAFETY (every arm): the caller checked the shapes, and this function runs with the level.
    unsafe {
        match n_tok {
            2 => tile::gemm::<_, 4, 2>(d, x, k, rows, n_tok, out),
            4 => tile::gemm::<_, 3, 4>(d, x, k, rows, n_tok, out),
            5 => tile::gemm::<_, 2, 5>(d, x, k, rows, n_tok, out),
            6 => tile::gemm::<_, 2, 6>(d, x, k, rows, n_tok, out),
            7 => tile::gemm::<_, 2, 7>(d, x, k, rows, n_tok, out),
            8 => tile::gemm::<_, 3, 4>(d, x, k, rows, n_tok, out),
            9 => tile::gemm_two_tiles::<_, 2, 5, 4>(d, x, k, rows, n_tok, out),
            10 => tile::gemm_two_tiles::<_, 2, 5, 5>(d, x, k, rows, n_tok, out),
            11 => tile::gemm_two_tiles::<_, 2, 6, 5>(d, x, k, rows, n_tok, out),
            12 => tile::gemm_two_tiles::<_, 2, 6, 6>(d, x, k, rows, n_tok, out),
            13 => tile::gemm_two_tiles::<_, 2, 7, 6>(d, x, k, rows, n_tok, out),
            14 => tile::gemm_two_tiles::<_, 2, 7, 7>(d, x, k, rows, n_tok, out),
            _ => tile::gemm::<_, R, T>(d, x, k, rows, n_tok, out),
        }
    }
}

/// See [`crate::Kernels::gemm_f32`].
pub fn gemm_f32(_: Avx2Fma, w: &[f32], x: &[f32], k: usize, out: &mut [f32]) {
    let (rows, n_tok) = scalar::gemm_shape(w.len(), x.len(), k, out.len());
    // SAFETY: the token proves avx2+fma+f16c; gemm_shape checked the layout.
    unsafe { gemm_dense(w, x, k, rows, n_tok, out) }
}

/// See [`crate::Kernels::gemm_bf16`].
pub fn gemm_bf16(_: Avx2Fma, w: &[bf16], x: &[f32], k: usize, out: &mut [f32]) {
    let (rows, n_tok) = scalar::gemm_shape(w.len(), x.len(), k, out.len());
    // SAFETY: the token proves avx2+fma+f16c; gemm_shape checked the layout.
    unsafe { gemm_dense(w, x, k, rows, n_tok, out) }
}

/// See [`crate::Kernels::gemm_f16`].
pub fn gemm_f16(_: Avx2Fma, w: &[f16], x: &[f32], k: usize, out: &mut [f32]) {
    let (rows, n_tok) = scalar::gemm_shape(w.len(), x.len(), k, out.len());
    // SAFETY: the token proves avx2+fma+f16c; gemm_shape checked the layout.
    unsafe { gemm_dense(w, x, k, rows, n_tok, out) }
}

/// See [`crate::Kernels::gemm_q4`].
#[allow(clippy::too_many_arguments)]
pub fn gemm_q4(
    _: Avx2Fma,
    w: &[u8],
    scales: &[f32],
    zero_scaled: &[f32],
    group: usize,
    x: &[f32],
    k: usize,
    out: &mut [f32],
) {
    let (rows, n_tok, groups) = q4_shape(w, scales, zero_scaled, group, x, k, out);
    let d = Q4 {
        w,
        scales,
        zero_scaled,
        group,
        groups,
        k,
    };
    if n_tok == 1 && group.is_multiple_of(64) && k <= BLOCKED_MAX_K {
        // SAFETY: the token proves avx2+fma+f16c; q4_shape checked the layout and parameters.
        return unsafe { gemv_q4_blocked(&d, x, rows, out) };
    }
    if n_tok == 1 && group.is_multiple_of(16) {
        // SAFETY: the token proves avx2+fma+f16c; q4_shape checked the layout and parameters.
        return unsafe { gemv_q4(&d, x, rows, out) };
    }
    if (2..FEW_MAX_TOK).contains(&n_tok) && group.is_multiple_of(64) {
        // SAFETY: the token proves avx2+fma+f16c; q4_shape checked the layout and parameters.
        return unsafe { gemm_q4_few(&d, x, rows, n_tok, out) };
    }
    // SAFETY: the token proves avx2+fma+f16c; q4_shape checked the layout and the parameters.
    unsafe { gemm_imp(&d, x, k, rows, n_tok, out) }
}

/// One token times 4-bit weights, groups a multiple of 16: the decode-time GEMV.
///
/// Why not the tile driver: it unpacks 8 nibbles with five shuffle/shift ops and applies scale
/// and zero per weight (`q·s − zs`, an FMA per 8 weights before the dot's FMA). Here 8 bytes
/// (16 weights) widen to 8 dwords once; `& 15` and `>> 4` give the low (even inputs) and high
/// (odd inputs) nibbles, each converted and multiplied: 7 ops per 16 weights instead of 16.
/// Each group sums `Σ q·x`, then folds in as `fma(Σqx, s, acc)` with its zero point through
/// `Σ zs·Σx` (the scalar twin's `s·Σqx − zs·Σx`). The activations are split into even and odd
/// inputs with four shuffles per 16, shared by the pass's 4 rows. Each pass prefetches the next
/// pass's rows (short rows side by side defeat the hardware prefetcher).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemv_q4(d: &Q4<'_>, x: &[f32], rows: usize, out: &mut [f32]) {
    let mut r = 0;
    // SAFETY (all calls): rows r..r+N exist and the caller checked the layout.
    while r + R <= rows {
        unsafe { gemv_q4_rows::<R>(d, x, r, out) };
        r += R;
    }
    while r < rows {
        unsafe { gemv_q4_rows::<1>(d, x, r, out) };
        r += 1;
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // index loops over the register tile read clearer here
unsafe fn gemv_q4_rows<const N: usize>(d: &Q4<'_>, x: &[f32], r0: usize, out: &mut [f32]) {
    // SAFETY (whole body): rows r0..r0+N, their (k/2) bytes and (groups) parameters exist, x
    // holds k inputs, and k and group are multiples of 16 (checked by the caller).
    unsafe {
        let fifteen = _mm256_set1_epi32(15);
        let (wp, xp) = (d.w.as_ptr(), x.as_ptr());
        let half_k = d.k / 2;
        let mut total = [_mm256_setzero_ps(); N];
        let mut zero = [_mm256_setzero_ps(); N];
        for g in 0..d.groups {
            let mut acc_lo = [_mm256_setzero_ps(); N];
            let mut acc_hi = [_mm256_setzero_ps(); N];
            let mut xsum = _mm256_setzero_ps();
            let mut j = g * d.group;
            while j < (g + 1) * d.group {
                let (xa, xb) = (_mm256_loadu_ps(xp.add(j)), _mm256_loadu_ps(xp.add(j + 8)));
                // [x0 x2 x8 x10 | x4 x6 x12 x14] -> 64-bit lanes 0 2 1 3 -> x0 x2 … x14.
                let even = _mm256_shuffle_ps::<0b10_00_10_00>(xa, xb);
                let odd = _mm256_shuffle_ps::<0b11_01_11_01>(xa, xb);
                let x_even = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(
                    _mm256_castps_pd(even),
                ));
                let x_odd = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(
                    _mm256_castps_pd(odd),
                ));
                xsum = _mm256_add_ps(xsum, _mm256_add_ps(xa, xb));
                for i in 0..N {
                    let at = (r0 + i) * half_k + j / 2;
                    if j.is_multiple_of(128) {
                        // The same line of the next pass's row.
                        _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(at + N * half_k).cast());
                    }
                    let dw = _mm256_cvtepu8_epi32(_mm_loadl_epi64(wp.add(at).cast()));
                    let lo = _mm256_cvtepi32_ps(_mm256_and_si256(dw, fifteen));
                    let hi = _mm256_cvtepi32_ps(_mm256_srli_epi32::<4>(dw));
                    acc_lo[i] = _mm256_fmadd_ps(lo, x_even, acc_lo[i]);
                    acc_hi[i] = _mm256_fmadd_ps(hi, x_odd, acc_hi[i]);
                }
                j += 16;
            }
            for i in 0..N {
                let p = (r0 + i) * d.groups + g;
                let s = _mm256_set1_ps(*d.scales.get_unchecked(p));
                let zs = _mm256_set1_ps(*d.zero_scaled.get_unchecked(p));
                total[i] = _mm256_fmadd_ps(_mm256_add_ps(acc_lo[i], acc_hi[i]), s, total[i]);
                zero[i] = _mm256_fmadd_ps(xsum, zs, zero[i]);
            }
        }
        for i in 0..N {
            out[r0 + i] = hsum(_mm256_sub_ps(total[i], zero[i]));
        }
    }
}

/// Longest row [`gemv_q4_blocked`] takes: its transposed copy of `x` lives on the stack (64 KB).
const BLOCKED_MAX_K: usize = 16384;

/// One token times 4-bit weights, groups a multiple of 64: the decode-time GEMV on 32-byte
/// blocks of 64 weights, with no widening and no shift for most nibbles.
///
/// A 32-byte load is 8 dwords of 8 nibbles; nibble `p` of dword `l` is weight `8l + p` of the
/// block. Masking nibble `p` in place leaves the integer `q·2^4p` (below 2^28 for p < 7, so
/// `vcvtdq2ps` converts it exactly), and the FMA's other operand is `x[8l + p]·2^-4p`, also
/// exact (a power-of-two scaling), so each product is `q·x` to the bit. Per 64 weights of a
/// row: 7 masks, 1 shift (the top nibble), 8 conversions and 8 FMAs, 17 of them on the two
/// FMA/convert ports against [`gemv_q4`]'s 20. `x` is transposed per 64-block and scaled once
/// per call (an 8 × 8 transpose, 24 shuffles per block, ~2% of a 64-row task); each group's
/// `Σx` is summed once per call too. Groups fold in as in [`gemv_q4`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemv_q4_blocked(d: &Q4<'_>, x: &[f32], rows: usize, out: &mut [f32]) {
    let mut xt = [core::mem::MaybeUninit::<f32>::uninit(); BLOCKED_MAX_K];
    let mut xsum = [0f32; BLOCKED_MAX_K / 64];
    // SAFETY: k ≤ BLOCKED_MAX_K and k is a multiple of 64 (the caller checked), so every block
    // reads 64 floats of x and writes 64 of xt; xt is fully written before the rows read it.
    unsafe {
        transpose_blocks(x, d.k, xt.as_mut_ptr().cast());
        for (g, sum) in xsum[..d.groups].iter_mut().enumerate() {
            let mut v = _mm256_setzero_ps();
            for j in (g * d.group..(g + 1) * d.group).step_by(8) {
                v = _mm256_add_ps(v, _mm256_loadu_ps(x.as_ptr().add(j)));
            }
            *sum = hsum(v);
        }
        let xt: *const f32 = xt.as_ptr().cast();
        let mut r = 0;
        // SAFETY (both loops): rows r..r+N exist and the caller checked the layout.
        while r + R <= rows {
            gemv_q4_blocked_rows::<R>(d, xt, &xsum, r, out);
            r += R;
        }
        while r < rows {
            gemv_q4_blocked_rows::<1>(d, xt, &xsum, r, out);
            r += 1;
        }
    }
}

/// Writes each 64-input block of `x` as 8 vectors `xt[8p + l] = x[8l + p]·2^-4p` for p < 7 and
/// `x[8l + 7]` for p = 7 (the scalings that [`gemv_q4_blocked`]'s masked nibbles need): the
/// classic 8 × 8 transpose ([`transpose8`]), then one multiply per vector.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn transpose_blocks(x: &[f32], k: usize, xt: *mut f32) {
    for blk in 0..k / 64 {
        // SAFETY: block blk's 64 inputs are inside x and its 64 outputs inside xt (k ≤ the
        // buffer, checked by the caller).
        unsafe {
            let columns = transpose8(x.as_ptr().add(blk * 64));
            for (p, c) in columns.iter().enumerate() {
                // 2^-4p, exact in f32 (p ≤ 6: down to 2^-24).
                let scale = if p < 7 {
                    1.0 / (1u32 << (4 * p)) as f32
                } else {
                    1.0
                };
                let v = _mm256_mul_ps(*c, _mm256_set1_ps(scale));
                _mm256_storeu_ps(xt.add(blk * 64 + 8 * p), v);
            }
        }
    }
}

/// Rows of one [`gemm_q4_few`] register tile (of up to `FEW_T` tokens).
const FEW_R: usize = 1;
/// Activation bytes of one [`gemm_q4_few`] k-chunk: half of a 32 KB L1.
const FEW_CHUNK_BYTES: usize = 16 << 10;
/// How many rows ahead [`gemm_q4_few`] prefetches the weights.
const FEW_PREFETCH_ROWS: usize = 2;

/// A few tokens (2 to 15: one per running sequence of a server batch) times 4-bit weights,
/// groups a multiple of 64: the batched-decode GEMM.
///
/// Why not the tile driver: it unpacks 8 nibbles with five shuffle/shift ops and applies scale
/// and zero per row before its 3 tokens' FMAs, so 8 tokens cost 8 times one token: batching
/// bought nothing. Here a row's weights are decoded once for up to 8 tokens, on
/// [`gemv_q4_blocked`]'s 32-byte blocks (nibble `p` of each of 8 dwords is weight `8l + p`):
/// per 8 weights one shift, one mask, one conversion and `fma(q, s, −zs)` (the tile driver's
/// rounding), then one FMA per token. The activations are transposed per 64-block (unscaled)
/// once per call into a reused buffer, the tokens of a block side by side.
///
/// Tile: 1 row × up to 8 tokens = 8 accumulators, scale, zero, mask, the weight dwords and a
/// decoded weight: 13 of 16 registers, activations as FMA memory operands. Up to 4 tokens the
/// tile is 2 rows × `n_tok`, each activation load feeding both rows (measured 15% faster at 4
/// tokens; at 8, 2 × 4 was no faster in cache and slower from memory). With one row per
/// tile every FMA loads an activation, two per cycle: more than L2 delivers, so `k` is cut into
/// chunks whose activations (all tokens) stay in L1, and every row runs chunk by chunk, its
/// partial sums added into `out` (one reduction per row, chunk and token tile). The weights
/// still stream from memory once; each row prefetches its chunk of the row
/// [`FEW_PREFETCH_ROWS`] ahead (a few hundred bytes per row: no stream to train on).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_q4_few(d: &Q4<'_>, x: &[f32], rows: usize, n_tok: usize, out: &mut [f32]) {
    few::with_scratch(n_tok * d.k, |xt| {
        let blocks = d.k / 64;
        for blk in 0..blocks {
            for t in 0..n_tok {
                // SAFETY: block blk of token t (64 inputs) is inside x (n_tok, k) and its 64
                // outputs inside xt (n_tok·k floats); k is a multiple of 64 (checked by the caller).
                unsafe {
                    let columns = transpose8(x.as_ptr().add(t * d.k + blk * 64));
                    let dst = xt.as_mut_ptr().add((blk * n_tok + t) * 64);
                    for (p, c) in columns.iter().enumerate() {
                        _mm256_storeu_ps(dst.add(8 * p), *c);
                    }
                }
            }
        }
        out.fill(0.0);
        let chunk = (FEW_CHUNK_BYTES / (n_tok * 64 * 4)).max(1);
        for c0 in (0..blocks).step_by(chunk) {
            let c1 = (c0 + chunk).min(blocks);
            let mut r = 0;
            // SAFETY (all loops): rows r..r+N exist, blocks c0..c1 are inside k, xt is x
            // transposed, and the caller checked the layout.
            if n_tok <= FEW_T / 2 {
                while r + 2 * FEW_R <= rows {
                    unsafe { few_q4_rows::<{ 2 * FEW_R }>(d, xt, n_tok, r, c0..c1, out) };
                    r += 2 * FEW_R;
                }
            }
            while r + FEW_R <= rows {
                unsafe { few_q4_rows::<FEW_R>(d, xt, n_tok, r, c0..c1, out) };
                r += FEW_R;
            }
            while r < rows {
                unsafe { few_q4_rows::<1>(d, xt, n_tok, r, c0..c1, out) };
                r += 1;
            }
        }
    })
}

/// Rows `r0..r0+N` of [`gemm_q4_few`] over 64-weight blocks `blocks`, for all tokens in tiles of
/// at most [`FEW_T`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn few_q4_rows<const N: usize>(
    d: &Q4<'_>,
    xt: &[f32],
    n_tok: usize,
    r0: usize,
    blocks: core::ops::Range<usize>,
    out: &mut [f32],
) {
    for (t0, n) in few::token_tiles(n_tok) {
        let b = blocks.clone();
        // SAFETY: tokens t0..t0+n exist (n ≤ FEW_T) and rows r0..r0+N (the caller's contract).
        unsafe {
            match n {
                1 => few_q4_tile::<N, 1>(d, xt, n_tok, r0, t0, b, out),
                2 => few_q4_tile::<N, 2>(d, xt, n_tok, r0, t0, b, out),
                3 => few_q4_tile::<N, 3>(d, xt, n_tok, r0, t0, b, out),
                4 => few_q4_tile::<N, 4>(d, xt, n_tok, r0, t0, b, out),
                5 => few_q4_tile::<N, 5>(d, xt, n_tok, r0, t0, b, out),
                6 => few_q4_tile::<N, 6>(d, xt, n_tok, r0, t0, b, out),
                7 => few_q4_tile::<N, 7>(d, xt, n_tok, r0, t0, b, out),
                _ => few_q4_tile::<N, 8>(d, xt, n_tok, r0, t0, b, out),
            }
        }
    }
}

/// One `N × T` tile of [`gemm_q4_few`] over 64-weight blocks `blocks`: adds the partial dot
/// products of rows `r0..r0+N` and tokens `t0..t0+T` into `out`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // index loops over the register tile read clearer here
unsafe fn few_q4_tile<const N: usize, const T: usize>(
    d: &Q4<'_>,
    xt: &[f32],
    n_tok: usize,
    r0: usize,
    t0: usize,
    blocks: core::ops::Range<usize>,
    out: &mut [f32],
) {
    // SAFETY (whole body): rows r0..r0+N, their (k/2) bytes and (groups) parameters exist,
    // tokens t0..t0+T exist, the blocks are inside k, xt holds the n_tok·k transposed inputs,
    // and k and group are multiples of 64 (checked by the callers).
    unsafe {
        let fifteen = _mm256_set1_epi32(15);
        let (wp, xp) = (d.w.as_ptr(), xt.as_ptr());
        let half_k = d.k / 2;
        let blocks_per_group = d.group / 64;
        let mut acc = [[_mm256_setzero_ps(); T]; N];
        for blk in blocks {
            let mut s = [_mm256_setzero_ps(); N];
            let mut neg_zs = [_mm256_setzero_ps(); N];
            let mut dw = [_mm256_setzero_si256(); N];
            for i in 0..N {
                let p = (r0 + i) * d.groups + blk / blocks_per_group;
                s[i] = _mm256_set1_ps(*d.scales.get_unchecked(p));
                neg_zs[i] = _mm256_set1_ps(-*d.zero_scaled.get_unchecked(p));
                let at = (r0 + i) * half_k + blk * 32;
                let ahead = wp.wrapping_add(at + FEW_PREFETCH_ROWS * half_k);
                _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                dw[i] = _mm256_loadu_si256(wp.add(at).cast());
            }
            let xb = xp.add((blk * n_tok + t0) * 64);
            for p in 0..8 {
                let w: [__m256; N] = core::array::from_fn(|i| {
                    // The top nibble needs no mask once shifted down.
                    let q = if p < 7 {
                        _mm256_and_si256(dw[i], fifteen)
                    } else {
                        dw[i]
                    };
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), s[i], neg_zs[i])
                });
                for t in 0..T {
                    let xv = _mm256_loadu_ps(xb.add(t * 64 + 8 * p));
                    for i in 0..N {
                        acc[i][t] = _mm256_fmadd_ps(w[i], xv, acc[i][t]);
                    }
                }
                for i in 0..N {
                    dw[i] = _mm256_srli_epi32::<4>(dw[i]);
                }
            }
        }
        for i in 0..N {
            let sums = hsum8(acc[i]);
            let at = (r0 + i) * n_tok + t0;
            for (o, v) in out[at..at + T].iter_mut().zip(sums) {
                *o += v;
            }
        }
    }
}

/// The horizontal sums of up to 8 vectors, as one `hadd` tree (9 ops for 8 sums instead of
/// 8 separate reductions).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum8<const T: usize>(v: [__m256; T]) -> [f32; 8] {
    // SAFETY: register arithmetic under avx, and an unaligned store into an array of 8.
    unsafe {
        let a: [__m256; 8] =
            core::array::from_fn(|i| if i < T { v[i] } else { _mm256_setzero_ps() });
        let h01 = _mm256_hadd_ps(a[0], a[1]);
        let h23 = _mm256_hadd_ps(a[2], a[3]);
        let h45 = _mm256_hadd_ps(a[4], a[5]);
        let h67 = _mm256_hadd_ps(a[6], a[7]);
        // Lanes: the low half's sums of a0..a3, then the high half's.
        let q0 = _mm256_hadd_ps(h01, h23);
        let q1 = _mm256_hadd_ps(h45, h67);
        let lo = _mm256_permute2f128_ps::<0x20>(q0, q1);
        let hi = _mm256_permute2f128_ps::<0x31>(q0, q1);
        let mut sums = [0f32; 8];
        _mm256_storeu_ps(sums.as_mut_ptr(), _mm256_add_ps(lo, hi));
        sums
    }
}

/// The 64 floats at `src` seen as 8 rows of 8, transposed: column `p` holds `src[8l + p]` in
/// lane `l` (unpack, shuffle, swap halves: 24 shuffles).
///
/// # Safety
/// `src..src+64` is readable and the CPU has AVX.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn transpose8(src: *const f32) -> [__m256; 8] {
    // SAFETY: the caller guarantees the 64 floats; the rest is register arithmetic.
    unsafe {
        let r: [__m256; 8] = core::array::from_fn(|l| _mm256_loadu_ps(src.add(8 * l)));
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ]
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // index loops over the register tile read clearer here
unsafe fn gemv_q4_blocked_rows<const N: usize>(
    d: &Q4<'_>,
    xt: *const f32,
    xsum: &[f32],
    r0: usize,
    out: &mut [f32],
) {
    // SAFETY (whole body): rows r0..r0+N, their (k/2) bytes and (groups) parameters exist, xt
    // holds k transposed inputs and xsum one sum per group, and k and group are multiples of
    // 64 (checked by the caller).
    unsafe {
        let masks: [__m256i; 7] = core::array::from_fn(|p| _mm256_set1_epi32(15 << (4 * p)));
        let wp = d.w.as_ptr();
        let half_k = d.k / 2;
        let blocks_per_group = d.group / 64;
        let mut total = [_mm256_setzero_ps(); N];
        let mut zero = [0f32; N];
        for g in 0..d.groups {
            // Two accumulators per row (even and odd nibbles): 2N independent FMA chains.
            let mut acc_even = [_mm256_setzero_ps(); N];
            let mut acc_odd = [_mm256_setzero_ps(); N];
            for blk in g * blocks_per_group..(g + 1) * blocks_per_group {
                let xb = xt.add(blk * 64);
                for i in 0..N {
                    let at = (r0 + i) * half_k + blk * 32;
                    if blk % 2 == 0 {
                        // The same line of the next pass's row: see `gemv_q4`'s note.
                        _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(at + N * half_k).cast());
                    }
                    let dw = _mm256_loadu_si256(wp.add(at).cast());
                    for p in 0..8 {
                        let q = if p < 7 {
                            _mm256_and_si256(dw, masks[p])
                        } else {
                            _mm256_srli_epi32::<28>(dw)
                        };
                        let prod_x = _mm256_loadu_ps(xb.add(8 * p));
                        let q = _mm256_cvtepi32_ps(q);
                        if p % 2 == 0 {
                            acc_even[i] = _mm256_fmadd_ps(q, prod_x, acc_even[i]);
                        } else {
                            acc_odd[i] = _mm256_fmadd_ps(q, prod_x, acc_odd[i]);
                        }
                    }
                }
            }
            for i in 0..N {
                let p = (r0 + i) * d.groups + g;
                let s = _mm256_set1_ps(*d.scales.get_unchecked(p));
                let sum = _mm256_add_ps(acc_even[i], acc_odd[i]);
                total[i] = _mm256_fmadd_ps(sum, s, total[i]);
                zero[i] += *d.zero_scaled.get_unchecked(p) * xsum[g];
            }
        }
        for i in 0..N {
            out[r0 + i] = hsum(total[i]) - zero[i];
        }
    }
}

/// See [`crate::Kernels::gemm_panel`]. Micro-kernel 6 rows × 16 tokens: 12 accumulators, two
/// token vectors and a broadcast weight out of 16 registers (the BLIS Haswell shape).
pub fn gemm_panel(
    _: Avx2Fma,
    w: &[f32],
    x: &PanelActs,
    k0: usize,
    kc: usize,
    out: &mut [f32],
    accumulate: bool,
) {
    let rows = panel_shape(w, x, k0, kc, out);
    // SAFETY: the token proves avx2+fma+f16c; panel_shape checked the operands.
    unsafe { gemm_panel_imp(w, x, k0, kc, rows, out, accumulate) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_panel_imp(
    w: &[f32],
    x: &PanelActs,
    k0: usize,
    kc: usize,
    rows: usize,
    out: &mut [f32],
    accumulate: bool,
) {
    // SAFETY: the caller checked the operands, and this function runs with the level.
    unsafe { panel::gemm_panel::<Avx2Fma, 6, 2>(w, x, k0, kc, rows, out, accumulate) }
}

//! AVX-512 matmuls for the dense formats and f32-activation q4, on the shared [`crate::tile`]
//! driver (FP8 has its own kernel in `fp8.rs`).
//!
//! Same decoding as the AVX2 level, 16 lanes wide: bf16 is zero-extend + shift, f16 one
//! `vcvtph2ps zmm`, q4 duplicates each of 8 bytes and shifts the pairs by 0/4 (one-token q4
//! has its own GEMV, [`gemv_q4`]). Tile: 4 rows × 6 tokens = 24 accumulators + 4 weight vectors
//! out of 32 zmm registers; dense formats with 2 to 15 tokens take tiles sized to their count
//! ([`gemm_dense`]). `vdpbf16ps` (AVX512-BF16) is not used: it rounds the activations to
//! bf16, which the f32 reference does not; splitting them into three exact bf16 parts keeps
//! the precision but was slower than these kernels on Sapphire Rapids (measured: FP8 GEMV 8.5
//! vs 12.3 G weights/s in cache).
//!
//! This level cannot be tested on a host without AVX-512; the property tests run it wherever
//! `Isa::Avx512.is_available()`.

use super::Avx512;
use crate::panel::{self, panel_shape, PanelActs};
use crate::scalar::{self, q4_shape};
use crate::tile::{self, Decode, Lanes};
use crate::x86::few::{self, FEW_MAX_TOK, FEW_T};
use core::arch::x86_64::*;
use half::{bf16, f16};

const R: usize = 4;
const T: usize = 6;

impl Lanes for Avx512 {
    type V = __m512;
    const N: usize = 16;
    #[inline(always)]
    unsafe fn zero() -> __m512 {
        // SAFETY: the caller runs under the avx512f target feature.
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: the caller runs under the avx512f target feature.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        // SAFETY: the caller guarantees 16 readable floats.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn hsum(v: __m512) -> f32 {
        // SAFETY: the caller runs under the avx512f target feature.
        unsafe { _mm512_reduce_add_ps(v) }
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> __m512 {
        // SAFETY: the caller runs under the avx512f target feature.
        unsafe { _mm512_set1_ps(v) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        // SAFETY: the caller guarantees 16 writable floats.
        unsafe { _mm512_storeu_ps(p, v) }
    }
}

/// Element types that load as 16 f32 lanes.
trait Elem16: Copy {
    /// # Safety
    /// `p..p+16` is readable and the CPU has AVX-512F.
    unsafe fn load16(p: *const Self) -> __m512;
    fn to_f32(self) -> f32;
}

impl Elem16 for f32 {
    #[inline(always)]
    unsafe fn load16(p: *const f32) -> __m512 {
        // SAFETY: the caller guarantees 16 readable floats.
        unsafe { _mm512_loadu_ps(p) }
    }
    fn to_f32(self) -> f32 {
        self
    }
}

impl Elem16 for bf16 {
    #[inline(always)]
    unsafe fn load16(p: *const bf16) -> __m512 {
        // SAFETY: the caller guarantees 16 readable bf16 (32 bytes); loadu has no alignment need.
        unsafe {
            let h = _mm256_loadu_si256(p.cast());
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        }
    }
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

impl Elem16 for f16 {
    #[inline(always)]
    unsafe fn load16(p: *const f16) -> __m512 {
        // SAFETY: the caller guarantees 16 readable f16 (32 bytes); loadu has no alignment need.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
    }
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

struct Dense<'a, E> {
    w: &'a [E],
    k: usize,
}

impl<E: Elem16> Decode for Dense<'_, E> {
    type L = Avx512;
    type P = ();
    fn seg(&self) -> usize {
        self.k
    }
    #[inline(always)]
    unsafe fn params(&self, _: usize, _: usize) {}
    #[inline(always)]
    unsafe fn load(&self, r: usize, j: usize, _: ()) -> __m512 {
        // SAFETY: (r, j..j+16) is inside the (rows, k) weight (caller's contract).
        unsafe { E::load16(self.w.as_ptr().add(r * self.k + j)) }
    }
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

struct Q4<'a> {
    w: &'a [u8],
    scales: &'a [f32],
    zero_scaled: &'a [f32],
    group: usize,
    groups: usize,
    k: usize,
}

impl Decode for Q4<'_> {
    type L = Avx512;
    type P = (__m512, __m512);
    fn seg(&self) -> usize {
        self.group
    }
    #[inline(always)]
    unsafe fn params(&self, r: usize, g: usize) -> (__m512, __m512) {
        let i = r * self.groups + g;
        // SAFETY: i < rows·groups and both parameter slices hold that many entries (checked).
        unsafe {
            let s = *self.scales.get_unchecked(i);
            let z = *self.zero_scaled.get_unchecked(i);
            (_mm512_set1_ps(s), _mm512_set1_ps(-z))
        }
    }
    #[inline(always)]
    unsafe fn load(&self, r: usize, j: usize, (s, neg_z): (__m512, __m512)) -> __m512 {
        // SAFETY: j is even, so the 8 bytes holding weights (r, j..j+16) start at (r·k + j)/2 and
        // are inside w (caller's contract); the rest is register arithmetic under avx512f.
        unsafe {
            let b = _mm_loadl_epi64(self.w.as_ptr().add((r * self.k + j) / 2).cast());
            // b0 b0 b1 b1 … b7 b7: lane 2i takes the low nibble of byte i, lane 2i+1 the high one.
            let pairs = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(b, b));
            let shifts = _mm512_set_epi32(4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0);
            let q = _mm512_and_si512(_mm512_srlv_epi32(pairs, shifts), _mm512_set1_epi32(15));
            _mm512_fmadd_ps(_mm512_cvtepi32_ps(q), s, neg_z)
        }
    }
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
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn gemm_imp<D: Decode<L = Avx512>>(
    d: &D,
    x: &[f32],
    k: usize,
    rows: usize,
    n_tok: usize,
    out: &mut [f32],
) {
    // SAFETY: the caller checked the shapes, and this function runs with the whole level.
    unsafe { tile::gemm::<_, R, T>(d, x, k, rows, n_tok, out) }
}

/// Dense weights (bf16, f16, f32). A server step's running sequences (up to 8 tokens) get one
/// tile that covers every token, so each weight is decoded once (the 4 × 6 tile decoded the rows
/// of a 4- or 8-token step twice), with as many rows as 32 zmm registers hold beside it.
/// Measured (`few_tokens` bench, 2560 → 9728 bf16 from DRAM, Zen 4): 4 tokens 10.2 → 15.2 GiB/s
/// (as fast as one token), 8 tokens 6.8 → 9.9. 9 to 15 tokens (decodes beside a prompt chunk)
/// run two tiles a row pass: 9 tokens 8.2 → 8.6, 15 tokens 5.5 → 5.9 (the FMA bound is near).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn gemm_dense<E: Elem16>(
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
            2 => tile::gemm::<_, 8, 2>(d, x, k, rows, n_tok, out),
            3 => tile::gemm::<_, 6, 3>(d, x, k, rows, n_tok, out),
            4 => tile::gemm::<_, 6, 4>(d, x, k, rows, n_tok, out),
            5 => tile::gemm::<_, 5, 5>(d, x, k, rows, n_tok, out),
            7 => tile::gemm::<_, 3, 7>(d, x, k, rows, n_tok, out),
            8 => tile::gemm::<_, 3, 8>(d, x, k, rows, n_tok, out),
            9 => tile::gemm_two_tiles::<_, 4, 5, 4>(d, x, k, rows, n_tok, out),
            10 => tile::gemm_two_tiles::<_, 4, 5, 5>(d, x, k, rows, n_tok, out),
            11 => tile::gemm_two_tiles::<_, 4, 6, 5>(d, x, k, rows, n_tok, out),
            13 => tile::gemm_two_tiles::<_, 3, 7, 6>(d, x, k, rows, n_tok, out),
            14 => tile::gemm_two_tiles::<_, 3, 7, 7>(d, x, k, rows, n_tok, out),
            15 => tile::gemm_two_tiles::<_, 3, 8, 7>(d, x, k, rows, n_tok, out),
            _ => tile::gemm::<_, R, T>(d, x, k, rows, n_tok, out),
        }
    }
}

/// See [`crate::Kernels::gemm_f32`].
pub fn gemm_f32(_: Avx512, w: &[f32], x: &[f32], k: usize, out: &mut [f32]) {
    let (rows, n_tok) = scalar::gemm_shape(w.len(), x.len(), k, out.len());
    // SAFETY: the token proves the level; gemm_shape checked the layout.
    unsafe { gemm_dense(w, x, k, rows, n_tok, out) }
}

/// See [`crate::Kernels::gemm_bf16`].
pub fn gemm_bf16(_: Avx512, w: &[bf16], x: &[f32], k: usize, out: &mut [f32]) {
    let (rows, n_tok) = scalar::gemm_shape(w.len(), x.len(), k, out.len());
    // SAFETY: the token proves the level; gemm_shape checked the layout.
    unsafe { gemm_dense(w, x, k, rows, n_tok, out) }
}

/// See [`crate::Kernels::gemm_f16`].
pub fn gemm_f16(_: Avx512, w: &[f16], x: &[f32], k: usize, out: &mut [f32]) {
    let (rows, n_tok) = scalar::gemm_shape(w.len(), x.len(), k, out.len());
    // SAFETY: the token proves the level; gemm_shape checked the layout.
    unsafe { gemm_dense(w, x, k, rows, n_tok, out) }
}

/// See [`crate::Kernels::gemm_q4`].
#[allow(clippy::too_many_arguments)]
pub fn gemm_q4(
    _: Avx512,
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
    if n_tok == 1 && group.is_multiple_of(128) && k <= BLOCKED_MAX_K {
        // SAFETY: the token proves the level; q4_shape checked the layout and the parameters.
        return unsafe { gemv_q4_blocked(&d, x, rows, out) };
    }
    if n_tok == 1 && group.is_multiple_of(32) {
        // SAFETY: the token proves the level; q4_shape checked the layout and the parameters.
        return unsafe { gemv_q4(&d, x, rows, out) };
    }
    if (2..FEW_MAX_TOK).contains(&n_tok) && group.is_multiple_of(128) {
        // SAFETY: the token proves the level; q4_shape checked the layout and the parameters.
        return unsafe { gemm_q4_few(&d, x, rows, n_tok, out) };
    }
    // SAFETY: the token proves the level; q4_shape checked the layout and the parameters.
    unsafe { gemm_imp(&d, x, k, rows, n_tok, out) }
}

/// One token times 4-bit weights, groups a multiple of 32: the decode-time GEMV.
///
/// Why not the tile driver: it applies scale and zero per weight (`q·s − zs`, one FMA per 16
/// weights before the dot's FMA) and spends five shuffle/convert ops unpacking 16 nibbles. Here
/// 16 bytes (32 weights) widen to 16 dwords once; `vpermps` reads only an index's low 4 bits, so
/// a 16-entry table of `f32(0..16)` turns the low nibbles into floats directly and the high
/// nibbles after one shift: 6 ops per 32 weights instead of 14. Each group sums `Σ q·x` per
/// nibble half; the group then folds in as `fma(Σqx, s, acc)` and its zero point through
/// `Σ zs·Σx`, summed over the group's activations once per 4-row pass (the scalar twin's
/// `s·Σqx − zs·Σx`). The activations come in input order and are split into even (low nibble)
/// and odd (high nibble) inputs with two `vpermt2ps` per 32, shared by the pass's 4 rows.
///
/// Prefetch: a pass reads 4 short rows (1280 bytes at k = 2560) side by side, too short for the
/// hardware stream prefetcher to train on before they end, so the GEMV ran at a fraction of
/// the memory bandwidth out of cache. Each pass prefetches the lines of the next pass's rows as
/// it goes: one pass ahead, a few KB, enough to cover memory latency.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
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
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // index loops over the register tile read clearer here
unsafe fn gemv_q4_rows<const N: usize>(d: &Q4<'_>, x: &[f32], r0: usize, out: &mut [f32]) {
    // SAFETY (whole body): rows r0..r0+N, their (k/2) bytes and (groups) parameters exist, x
    // holds k inputs, and k and group are multiples of 32 (checked by the caller).
    unsafe {
        let table = _mm512_setr_ps(
            0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
        );
        let even_idx = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd_idx = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        let (wp, xp) = (d.w.as_ptr(), x.as_ptr());
        let half_k = d.k / 2;
        let mut total = [_mm512_setzero_ps(); N];
        let mut zero = [_mm512_setzero_ps(); N];
        for g in 0..d.groups {
            let mut acc_lo = [_mm512_setzero_ps(); N];
            let mut acc_hi = [_mm512_setzero_ps(); N];
            let mut xsum = _mm512_setzero_ps();
            let mut j = g * d.group;
            while j < (g + 1) * d.group {
                let (xa, xb) = (_mm512_loadu_ps(xp.add(j)), _mm512_loadu_ps(xp.add(j + 16)));
                let x_even = _mm512_permutex2var_ps(xa, even_idx, xb);
                let x_odd = _mm512_permutex2var_ps(xa, odd_idx, xb);
                xsum = _mm512_add_ps(xsum, _mm512_add_ps(xa, xb));
                for i in 0..N {
                    let at = (r0 + i) * half_k + j / 2;
                    if j.is_multiple_of(128) {
                        // The same line of the next pass's row: see `gemv_q4`'s note.
                        _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(at + N * half_k).cast());
                    }
                    let bytes = _mm_loadu_si128(wp.add(at).cast());
                    let dw = _mm512_cvtepu8_epi32(bytes);
                    let lo = _mm512_permutexvar_ps(dw, table);
                    let hi = _mm512_permutexvar_ps(_mm512_srli_epi32::<4>(dw), table);
                    acc_lo[i] = _mm512_fmadd_ps(lo, x_even, acc_lo[i]);
                    acc_hi[i] = _mm512_fmadd_ps(hi, x_odd, acc_hi[i]);
                }
                j += 32;
            }
            for i in 0..N {
                let p = (r0 + i) * d.groups + g;
                let s = _mm512_set1_ps(*d.scales.get_unchecked(p));
                let zs = _mm512_set1_ps(*d.zero_scaled.get_unchecked(p));
                total[i] = _mm512_fmadd_ps(_mm512_add_ps(acc_lo[i], acc_hi[i]), s, total[i]);
                zero[i] = _mm512_fmadd_ps(xsum, zs, zero[i]);
            }
        }
        for i in 0..N {
            out[r0 + i] = _mm512_reduce_add_ps(_mm512_sub_ps(total[i], zero[i]));
        }
    }
}

/// Longest row [`gemv_q4_blocked`] takes: its transposed copy of `x` lives on the stack (64 KB).
const BLOCKED_MAX_K: usize = 16384;

/// One token times 4-bit weights, groups a multiple of 128 (AWQ's usual 128): the decode-time
/// GEMV on 64-byte blocks of 128 weights, without the byte-to-dword widening of [`gemv_q4`].
///
/// A 64-byte load is 16 dwords of 8 nibbles; nibble `p` of dword `l` is weight `8l + p` of the
/// block. `vpermps` reads only its index's low 4 bits, so `vpermps(d >> 4p, f32(0..16))` is
/// nibble `p` of every dword as a float: 8 lookups, 7 shifts and 8 FMAs per 128 weights of a
/// row (23 ops, against [`gemv_q4`]'s 28 with its share of splitting `x` into even and odd
/// inputs). The FMA's other operand is then `x[8l + p]` over the 16 lanes `l`: `x` transposed
/// per block, once per call, with three stages of `vpermt2ps` (24 per 128 inputs, ~3% of a
/// 64-row task); each group's `Σx` is summed once per call as well. Groups fold in as in
/// [`gemv_q4`]: `fma(Σqx, s, acc)` per group, `Σ zs·Σx` subtracted at the end.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn gemv_q4_blocked(d: &Q4<'_>, x: &[f32], rows: usize, out: &mut [f32]) {
    let mut xt = [core::mem::MaybeUninit::<f32>::uninit(); BLOCKED_MAX_K];
    let mut xsum = [0f32; BLOCKED_MAX_K / 128];
    // SAFETY: k ≤ BLOCKED_MAX_K and k is a multiple of 128 (the caller checked), so every block
    // reads 128 floats of x and writes 128 of xt; xt is fully written before the rows read it.
    unsafe {
        transpose_blocks(x, d.k, 1, xt.as_mut_ptr().cast());
        for (g, sum) in xsum[..d.groups].iter_mut().enumerate() {
            let mut v = _mm512_setzero_ps();
            for j in (g * d.group..(g + 1) * d.group).step_by(16) {
                v = _mm512_add_ps(v, _mm512_loadu_ps(x.as_ptr().add(j)));
            }
            *sum = _mm512_reduce_add_ps(v);
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

/// Writes each 128-input block of each token of `x (n_tok, k)` as 8 vectors
/// `xt[16p + l] = x[8l + p]` (p < 8, l < 16), block `blk` of token `t` at `(blk·n_tok + t)·128`
/// (the tokens of a block side by side, as [`gemm_q4_few`] reads them): an 8 × 16 transpose of
/// the block seen as 16 rows of 8, done as three stages that each swap one bit of the vector
/// number with one bit of the lane (two-source `vpermt2ps` per output vector), the last stage
/// also putting the lanes in order.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn transpose_blocks(x: &[f32], k: usize, n_tok: usize, xt: *mut f32) {
    let stage = |lo: [i32; 16], hi: [i32; 16]| {
        // SAFETY: loading 16 i32 from an array of 16.
        unsafe {
            (
                _mm512_loadu_si512(lo.as_ptr().cast()),
                _mm512_loadu_si512(hi.as_ptr().cast()),
            )
        }
    };
    let s1 = stage(
        [0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30],
        [1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31],
    );
    let s2 = stage(
        [0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29],
        [2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31],
    );
    let s3 = stage(
        [0, 8, 1, 9, 2, 10, 3, 11, 16, 24, 17, 25, 18, 26, 19, 27],
        [4, 12, 5, 13, 6, 14, 7, 15, 20, 28, 21, 29, 22, 30, 23, 31],
    );
    // Output vector v of a stage swapping vector bit `b` takes the pair (v without bit b,
    // v with it), through the index of v's bit b.
    #[inline(always)]
    unsafe fn swap_bit(v: [__m512; 8], b: usize, (lo, hi): (__m512i, __m512i)) -> [__m512; 8] {
        core::array::from_fn(|i| {
            let (a, c) = (v[i & !(1 << b)], v[i | (1 << b)]);
            let idx = if i & (1 << b) == 0 { lo } else { hi };
            // SAFETY: register arithmetic under the caller's avx512f.
            unsafe { _mm512_permutex2var_ps(a, idx, c) }
        })
    }
    for blk in 0..k / 128 {
        for t in 0..n_tok {
            // SAFETY: block blk of token t (128 inputs) is inside x (n_tok, k), and its 128
            // outputs inside xt, which holds n_tok·k floats (checked by the caller).
            unsafe {
                let src = x.as_ptr().add(t * k + blk * 128);
                let dst = xt.add((blk * n_tok + t) * 128);
                let v: [__m512; 8] = core::array::from_fn(|m| _mm512_loadu_ps(src.add(16 * m)));
                let v = swap_bit(swap_bit(swap_bit(v, 0, s1), 1, s2), 2, s3);
                for (p, vp) in v.iter().enumerate() {
                    _mm512_storeu_ps(dst.add(16 * p), *vp);
                }
            }
        }
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
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
    // 128 (checked by the caller).
    unsafe {
        let table = _mm512_setr_ps(
            0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
        );
        let wp = d.w.as_ptr();
        let half_k = d.k / 2;
        let blocks_per_group = d.group / 128;
        let mut total = [_mm512_setzero_ps(); N];
        let mut zero = [0f32; N];
        for g in 0..d.groups {
            // Two accumulators per row (even and odd nibbles): 2N independent FMA chains.
            let mut acc_even = [_mm512_setzero_ps(); N];
            let mut acc_odd = [_mm512_setzero_ps(); N];
            for blk in g * blocks_per_group..(g + 1) * blocks_per_group {
                let xb = xt.add(blk * 128);
                let xv: [__m512; 8] = core::array::from_fn(|p| _mm512_loadu_ps(xb.add(16 * p)));
                for i in 0..N {
                    let at = (r0 + i) * half_k + blk * 64;
                    // The same line of the next pass's row: see `gemv_q4`'s note.
                    _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(at + N * half_k).cast());
                    let mut dw = _mm512_loadu_si512(wp.add(at).cast());
                    for p in 0..8 {
                        let q = _mm512_permutexvar_ps(dw, table);
                        if p % 2 == 0 {
                            acc_even[i] = _mm512_fmadd_ps(q, xv[p], acc_even[i]);
                        } else {
                            acc_odd[i] = _mm512_fmadd_ps(q, xv[p], acc_odd[i]);
                        }
                        dw = _mm512_srli_epi32::<4>(dw);
                    }
                }
            }
            for i in 0..N {
                let p = (r0 + i) * d.groups + g;
                let s = _mm512_set1_ps(*d.scales.get_unchecked(p));
                let sum = _mm512_add_ps(acc_even[i], acc_odd[i]);
                total[i] = _mm512_fmadd_ps(sum, s, total[i]);
                zero[i] += *d.zero_scaled.get_unchecked(p) * xsum[g];
            }
        }
        for i in 0..N {
            out[r0 + i] = _mm512_reduce_add_ps(total[i]) - zero[i];
        }
    }
}

/// Rows of one [`gemm_q4_few`] register tile (of up to `FEW_T` tokens).
const FEW_R: usize = 2;

/// A few tokens (2 to 15: one per running sequence of a server batch) times 4-bit weights,
/// groups a multiple of 128: the batched-decode GEMM.
///
/// Why not the tile driver: it decodes 16 weights with ~5 shuffle/convert ops plus a scale FMA
/// per row, and its 4 × 6 tile (24 accumulators, 4 weights, 8 scale/zero vectors) does not fit
/// the 32 registers, so 8 tokens cost 7–9 times one token: batching bought nothing. Here the
/// decode is [`gemv_q4_blocked`]'s (a 64-byte load is 128 weights; nibble `p` of every dword is
/// `vpermps(d >> 4p, table)`), with the table `q·s − zs` for `q = 0..16` built once per
/// (row, block) by one FMA on `f32(0..16)`: each `vpermps` yields 16 finished weights, rounded
/// once as the tile driver's `fma(q, s, −zs)`, and no group fold is left. Per 16 weights of a row
/// that is one shift and one lookup shared by up to 8 tokens' FMAs, so the kernel is bound by the
/// FMAs themselves. The activations are transposed per 128-block as the GEMV's, once per call
/// into a reused buffer, with the tokens of a block side by side.
///
/// Tile: 2 rows × up to 8 tokens = 16 accumulators, 2 tables, 2 weight dwords, 2 decoded
/// weights and an activation: 23 of 32 registers, no spills; each activation load feeds both
/// rows. Up to 4 tokens the tile is 4 rows × `n_tok` (29 registers at 4 tokens): each load
/// feeds 4 rows (measured 10% faster at 4 tokens; the same at 8). Token counts above 8 split
/// into two balanced tiles that re-read the rows from L1. Each pass prefetches the next pass's
/// rows, as the GEMVs do.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn gemm_q4_few(d: &Q4<'_>, x: &[f32], rows: usize, n_tok: usize, out: &mut [f32]) {
    few::with_scratch(n_tok * d.k, |xt| {
        // SAFETY: x is (n_tok, k) with k a multiple of 128 (checked by the caller) and xt holds
        // n_tok·k floats.
        unsafe { transpose_blocks(x, d.k, n_tok, xt.as_mut_ptr()) };
        // SAFETY: xt is x transposed, and the caller checked the layout.
        unsafe {
            if n_tok <= FEW_T / 2 {
                few_q4_all_rows::<{ 2 * FEW_R }>(d, xt, rows, n_tok, out)
            } else {
                few_q4_all_rows::<FEW_R>(d, xt, rows, n_tok, out)
            }
        }
    })
}

/// Every row of [`gemm_q4_few`] in passes of `N` rows, then one by one.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn few_q4_all_rows<const N: usize>(
    d: &Q4<'_>,
    xt: &[f32],
    rows: usize,
    n_tok: usize,
    out: &mut [f32],
) {
    let mut r = 0;
    // SAFETY (both loops): rows r..r+N exist; the rest is the caller's contract.
    while r + N <= rows {
        unsafe { few_q4_rows::<N>(d, xt, n_tok, r, out) };
        r += N;
    }
    while r < rows {
        unsafe { few_q4_rows::<1>(d, xt, n_tok, r, out) };
        r += 1;
    }
}

/// Rows `r0..r0+N` of [`gemm_q4_few`], for all tokens in tiles of at most [`FEW_T`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn few_q4_rows<const N: usize>(
    d: &Q4<'_>,
    xt: &[f32],
    n_tok: usize,
    r0: usize,
    out: &mut [f32],
) {
    for (t0, n) in few::token_tiles(n_tok) {
        // SAFETY: tokens t0..t0+n exist (n ≤ FEW_T) and rows r0..r0+N (the caller's contract).
        unsafe {
            match n {
                1 => few_q4_tile::<N, 1>(d, xt, n_tok, r0, t0, out),
                2 => few_q4_tile::<N, 2>(d, xt, n_tok, r0, t0, out),
                3 => few_q4_tile::<N, 3>(d, xt, n_tok, r0, t0, out),
                4 => few_q4_tile::<N, 4>(d, xt, n_tok, r0, t0, out),
                5 => few_q4_tile::<N, 5>(d, xt, n_tok, r0, t0, out),
                6 => few_q4_tile::<N, 6>(d, xt, n_tok, r0, t0, out),
                7 => few_q4_tile::<N, 7>(d, xt, n_tok, r0, t0, out),
                _ => few_q4_tile::<N, 8>(d, xt, n_tok, r0, t0, out),
            }
        }
    }
}

/// One `N × T` tile of [`gemm_q4_few`]: rows `r0..r0+N`, tokens `t0..t0+T`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // index loops over the register tile read clearer here
unsafe fn few_q4_tile<const N: usize, const T: usize>(
    d: &Q4<'_>,
    xt: &[f32],
    n_tok: usize,
    r0: usize,
    t0: usize,
    out: &mut [f32],
) {
    // SAFETY (whole body): rows r0..r0+N, their (k/2) bytes and (groups) parameters exist,
    // tokens t0..t0+T exist, xt holds the n_tok·k transposed inputs, and k and group are
    // multiples of 128 (checked by the callers).
    unsafe {
        let iota = _mm512_setr_ps(
            0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
        );
        let (wp, xp) = (d.w.as_ptr(), xt.as_ptr());
        let half_k = d.k / 2;
        let blocks_per_group = d.group / 128;
        let mut acc = [[_mm512_setzero_ps(); T]; N];
        for blk in 0..d.k / 128 {
            let g = blk / blocks_per_group;
            let mut table = [iota; N];
            let mut dw = [_mm512_setzero_si512(); N];
            for i in 0..N {
                let p = (r0 + i) * d.groups + g;
                let s = _mm512_set1_ps(*d.scales.get_unchecked(p));
                let zs = _mm512_set1_ps(*d.zero_scaled.get_unchecked(p));
                // q·s − zs for q = 0..16, rounded once: the tile driver's decode.
                table[i] = _mm512_fmsub_ps(iota, s, zs);
                let at = (r0 + i) * half_k + blk * 64;
                // The same line of the next pass's row: see `gemv_q4`'s note.
                _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(at + N * half_k).cast());
                dw[i] = _mm512_loadu_si512(wp.add(at).cast());
            }
            let xb = xp.add((blk * n_tok + t0) * 128);
            for p in 0..8 {
                let w: [__m512; N] =
                    core::array::from_fn(|i| _mm512_permutexvar_ps(dw[i], table[i]));
                for t in 0..T {
                    let xv = _mm512_loadu_ps(xb.add(t * 128 + 16 * p));
                    for i in 0..N {
                        acc[i][t] = _mm512_fmadd_ps(w[i], xv, acc[i][t]);
                    }
                }
                for i in 0..N {
                    dw[i] = _mm512_srli_epi32::<4>(dw[i]);
                }
            }
        }
        for i in 0..N {
            for t in 0..T {
                out[(r0 + i) * n_tok + t0 + t] = _mm512_reduce_add_ps(acc[i][t]);
            }
        }
    }
}

/// See [`crate::Kernels::gemm_panel`]. Micro-kernel 12 rows × 32 tokens: 24 accumulators, two
/// token vectors and a broadcast weight out of 32 registers; per input 2 loads + 12 broadcasts
/// feed 24 FMAs, under the two load ports' limit.
pub fn gemm_panel(
    _: Avx512,
    w: &[f32],
    x: &PanelActs,
    k0: usize,
    kc: usize,
    out: &mut [f32],
    accumulate: bool,
) {
    let rows = panel_shape(w, x, k0, kc, out);
    // SAFETY: the token proves the level; panel_shape checked the operands.
    unsafe { gemm_panel_imp(w, x, k0, kc, rows, out, accumulate) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn gemm_panel_imp(
    w: &[f32],
    x: &PanelActs,
    k0: usize,
    kc: usize,
    rows: usize,
    out: &mut [f32],
    accumulate: bool,
) {
    // SAFETY: the caller checked the operands, and this function runs with the whole level.
    unsafe { panel::gemm_panel::<Avx512, 12, 2>(w, x, k0, kc, rows, out, accumulate) }
}

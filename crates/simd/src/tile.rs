//! The register-tiled matmul driver shared by every vector level and weight format.
//!
//! A level supplies its vector type through [`Lanes`] and one [`Decode`] per weight format
//! (bf16, f16, f32, fp8, q4) that turns `LANES` weights into f32 lanes. The driver walks the output
//! in tiles of `R` weight rows × `T` tokens, keeping `R·T` accumulators in registers: each weight
//! vector is decoded once per tile and used for `T` tokens, each activation vector is loaded once
//! and used for `R` rows. For decode (`n_tok = 1`) that is 4 independent FMA chains over 4 rows
//! streaming in parallel, the bandwidth-bound case. With a few tokens every weight byte is read
//! from memory once per row tile and from L1/L2 once per token tile; a whole prompt (16+
//! tokens) goes to the packed prefill kernel of [`crate::panel`] instead, which shares only
//! [`Lanes`] with this driver.
//!
//! Formats with per-(row, k-block) parameters (fp8 scales, q4 scale and zero) split `k` into
//! segments; parameters are loaded once per segment and folded into the decoded weight. A segment
//! whose length is not a multiple of `LANES` ends with a scalar tail, as does `k` itself.
//!
//! Everything here is `#[inline(always)]`: it is instantiated inside each level's
//! `#[target_feature]` function, so the intrinsics behind [`Lanes`] and [`Decode`] inline into
//! code compiled for that level (the pattern pulp uses).

/// One vector level's f32 vector and the operations the driver needs.
pub(crate) trait Lanes {
    type V: Copy;
    const N: usize;
    /// # Safety
    /// The CPU has the level.
    unsafe fn zero() -> Self::V;
    /// `a·b + c`, fused.
    /// # Safety
    /// The CPU has the level.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// # Safety
    /// `p..p+N` is readable and the CPU has the level.
    unsafe fn load(p: *const f32) -> Self::V;
    /// # Safety
    /// The CPU has the level.
    unsafe fn hsum(v: Self::V) -> f32;
    /// `v` in every lane.
    /// # Safety
    /// The CPU has the level.
    unsafe fn splat(v: f32) -> Self::V;
    /// # Safety
    /// `p..p+N` is writable and the CPU has the level.
    unsafe fn store(p: *mut f32, v: Self::V);
}

/// One weight format on one level: decodes `L::N` weights of a row into f32 lanes.
pub(crate) trait Decode {
    type L: Lanes;
    /// Per-(row, segment) parameters, loaded once per segment.
    type P: Copy;
    /// Length of a segment sharing one `P` (`k` for formats without block parameters).
    fn seg(&self) -> usize;
    /// # Safety
    /// `r < rows` and `s < k.div_ceil(seg)` for the shape the caller checked.
    unsafe fn params(&self, r: usize, s: usize) -> Self::P;
    /// The weights `(r, j..j+N)` decoded and with `p` applied.
    /// # Safety
    /// `r < rows`, `j + N <= k`, `j` lies in segment `s` with `p = params(r, s)`, `j` is even, and
    /// the CPU has the level.
    unsafe fn load(&self, r: usize, j: usize, p: Self::P) -> <Self::L as Lanes>::V;
    /// The weight `(r, j)` of segment `s` as `load` would produce it: the tails use this.
    fn scalar(&self, r: usize, j: usize, s: usize) -> f32;
    /// Asks the cache for the line holding weight `(r, j)`; `r` may be past the last row (a
    /// prefetch never faults). Formats that do not implement it prefetch nothing.
    #[inline(always)]
    fn prefetch(&self, _r: usize, _j: usize) {}
}

type V<D> = <<D as Decode>::L as Lanes>::V;

/// `out (rows, n_tok) = W (rows, k) · xᵀ` where `x` is `(n_tok, k)`, in tiles of `R × T`.
///
/// # Safety
/// The shapes were checked (`scalar::gemm_shape` and the format's own parameter checks), so that
/// every `(r < rows, j < k)` is a valid weight index, and the CPU has the level of `D::L`.
#[inline(always)]
pub(crate) unsafe fn gemm<D: Decode, const R: usize, const T: usize>(
    d: &D,
    x: &[f32],
    k: usize,
    rows: usize,
    n_tok: usize,
    out: &mut [f32],
) {
    debug_assert!(x.len() == n_tok * k && out.len() == rows * n_tok);
    let mut r = 0;
    while r + R <= rows {
        // SAFETY: rows r..r+R exist; the rest is the caller's contract.
        unsafe { row_pass::<D, R, T>(d, r, x, k, n_tok, out) };
        r += R;
    }
    while r < rows {
        // SAFETY: row r exists; the rest is the caller's contract.
        unsafe { row_pass::<D, 1, T>(d, r, x, k, n_tok, out) };
        r += 1;
    }
}

/// [`gemm`] for exactly `T1 + T2` tokens (9 to 15: a server step's decodes beside a prompt
/// chunk): each pass of `R` rows runs one `T1`-token tile and one `T2`-token tile, so its rows
/// are decoded twice, where [`gemm`]'s tiles of `T` plus pairs and singles decode them 3 to 5
/// times.
///
/// Only the x86 levels size their tiles per token count (NEON's few-token path is unmeasured).
///
/// # Safety
/// As [`gemm`], and `n_tok == T1 + T2`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn gemm_two_tiles<D: Decode, const R: usize, const T1: usize, const T2: usize>(
    d: &D,
    x: &[f32],
    k: usize,
    rows: usize,
    n_tok: usize,
    out: &mut [f32],
) {
    debug_assert!(n_tok == T1 + T2 && x.len() == n_tok * k && out.len() == rows * n_tok);
    let mut r = 0;
    while r + R <= rows {
        // SAFETY: rows r..r+R and tokens 0..T1, T1..T1+T2 exist; the rest is the caller's.
        unsafe {
            tile::<D, R, T1>(d, r, 0, x, k, n_tok, out);
            tile::<D, R, T2>(d, r, T1, x, k, n_tok, out);
        }
        r += R;
    }
    while r < rows {
        // SAFETY: as above, for row r.
        unsafe {
            tile::<D, 1, T1>(d, r, 0, x, k, n_tok, out);
            tile::<D, 1, T2>(d, r, T1, x, k, n_tok, out);
        }
        r += 1;
    }
}

#[inline(always)]
unsafe fn row_pass<D: Decode, const R: usize, const T: usize>(
    d: &D,
    r0: usize,
    x: &[f32],
    k: usize,
    n_tok: usize,
    out: &mut [f32],
) {
    let mut t = 0;
    while t + T <= n_tok {
        // SAFETY: rows r0..r0+R and tokens t..t+T exist; the rest is the caller's contract.
        unsafe { tile::<D, R, T>(d, r0, t, x, k, n_tok, out) };
        t += T;
    }
    while t + 2 <= n_tok {
        // SAFETY: rows r0..r0+R and tokens t..t+2 exist; the rest is the caller's contract.
        unsafe { tile::<D, R, 2>(d, r0, t, x, k, n_tok, out) };
        t += 2;
    }
    if t < n_tok {
        // SAFETY: rows r0..r0+R and token t exist; the rest is the caller's contract.
        unsafe { tile::<D, R, 1>(d, r0, t, x, k, n_tok, out) };
    }
}

/// One `R × T` output tile: `R·T` vector accumulators plus scalar ones for the tails.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // index loops over the register tile read clearer here
unsafe fn tile<D: Decode, const R: usize, const T: usize>(
    d: &D,
    r0: usize,
    t0: usize,
    x: &[f32],
    k: usize,
    n_tok: usize,
    out: &mut [f32],
) {
    let n = D::L::N;
    let seg = d.seg();
    let xp = x.as_ptr();
    // SAFETY: the CPU has the level (caller's contract).
    let zero = unsafe { D::L::zero() };
    let mut acc: [[V<D>; T]; R] = [[zero; T]; R];
    let mut tail = [[0.0f32; T]; R];
    let (mut s, mut s0) = (0, 0);
    while s0 < k {
        let s1 = (s0 + seg).min(k);
        // SAFETY: r0+i < rows and s < k.div_ceil(seg).
        let mut p = [unsafe { d.params(r0, s) }; R];
        for i in 1..R {
            // SAFETY: as above.
            p[i] = unsafe { d.params(r0 + i, s) };
        }
        let mut j = s0;
        while j + n <= s1 {
            if t0 == 0 {
                // Decode reads R rows side by side, each only a few KB: too short for the
                // hardware stream prefetcher to train on, which left a GEMV at a fraction of
                // the memory bandwidth. Fetch the next pass's rows one pass ahead instead. A
                // few tokens (a server step) need it as much: the first token tile over these
                // rows fetches them, the others find them in cache.
                for i in 0..R {
                    d.prefetch(r0 + R + i, j);
                }
            }
            let mut w = [zero; R];
            for i in 0..R {
                // SAFETY: j + n <= s1 <= k inside segment s; j is even because segments start at
                // multiples of `seg` (even for q4, the only format that needs it) and n is even.
                w[i] = unsafe { d.load(r0 + i, j, p[i]) };
            }
            for t in 0..T {
                // SAFETY: token t0+t < n_tok and j + n <= k, so the n floats are inside x.
                let xv = unsafe { D::L::load(xp.add((t0 + t) * k + j)) };
                for i in 0..R {
                    // SAFETY: the CPU has the level.
                    acc[i][t] = unsafe { D::L::fma(w[i], xv, acc[i][t]) };
                }
            }
            j += n;
        }
        while j < s1 {
            for i in 0..R {
                let wj = d.scalar(r0 + i, j, s);
                for t in 0..T {
                    tail[i][t] += wj * x[(t0 + t) * k + j];
                }
            }
            j += 1;
        }
        s0 = s1;
        s += 1;
    }
    for i in 0..R {
        for t in 0..T {
            // SAFETY: the CPU has the level.
            out[(r0 + i) * n_tok + t0 + t] = unsafe { D::L::hsum(acc[i][t]) } + tail[i][t];
        }
    }
}

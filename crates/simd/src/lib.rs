#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
mod isa;
pub mod margin;
mod mix;
pub mod panel;
pub mod q8;
pub mod scalar;
pub(crate) mod tile;
#[cfg(target_arch = "x86_64")]
pub mod x86;

pub use half::{bf16, f16};
pub use isa::{set_max_isa, CpuFeatures, Isa};
pub use panel::{PanelActs, PanelPacker, PANEL_K_BLOCK, PANEL_TOKEN_TILE};
pub use q8::Q8Acts;

/// FP8 encodings found in safetensors checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fp8Format {
    /// `float8_e4m3fn`: bias 7, no infinities, NaN is `S.1111.111`, max 448.
    E4M3,
    /// `float8_e5m2`: bias 15, IEEE-like with infinities and NaNs, max 57344.
    E5M2,
}

/// The token of one level, held by [`Kernels`]: its existence proves the CPU has the level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Imp {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2(x86::Avx2Fma),
    #[cfg(target_arch = "x86_64")]
    Avx512(x86::Avx512),
    #[cfg(target_arch = "aarch64")]
    Neon(aarch64::Neon),
}

/// Calls `$f` from the module of the kernel table's level: `scalar::$f`, `x86::avx2::$f(token, ..)`…
/// Levels that lack a dedicated version of a kernel fall back to the next lower one inside their
/// module (AVX-512 reuses AVX2 for the cheap element-wise kernels), never here.
macro_rules! dispatch {
    ($self:ident, $f:ident($($arg:expr),* $(,)?)) => {
        match $self.imp {
            Imp::Scalar => scalar::$f($($arg),*),
            #[cfg(target_arch = "x86_64")]
            Imp::Avx2(t) => x86::avx2::$f(t, $($arg),*),
            #[cfg(target_arch = "x86_64")]
            Imp::Avx512(t) => x86::avx512::$f(t, $($arg),*),
            #[cfg(target_arch = "aarch64")]
            Imp::Neon(t) => aarch64::neon::$f(t, $($arg),*),
        }
    };
}

/// A kernel table for one instruction-set level. Cheap to copy; hold one per model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernels {
    imp: Imp,
}

impl Kernels {
    /// Kernels for the best level the host has, under the process-wide cap.
    pub fn best() -> Self {
        let isa = Isa::active();
        Self::for_isa(isa).expect("Isa::active returns an available level")
    }

    /// Kernels for `isa`, or `None` when the host CPU lacks it.
    pub fn for_isa(isa: Isa) -> Option<Self> {
        let imp = match isa {
            Isa::Scalar => Some(Imp::Scalar),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86::Avx2Fma::try_new().map(Imp::Avx2),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => x86::Avx512::try_new().map(Imp::Avx512),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => aarch64::Neon::try_new().map(Imp::Neon),
            #[allow(unreachable_patterns)]
            _ => None,
        }?;
        Some(Self { imp })
    }

    /// The instruction set these kernels use.
    pub fn isa(&self) -> Isa {
        match self.imp {
            Imp::Scalar => Isa::Scalar,
            #[cfg(target_arch = "x86_64")]
            Imp::Avx2(_) => Isa::Avx2,
            #[cfg(target_arch = "x86_64")]
            Imp::Avx512(_) => Isa::Avx512,
            #[cfg(target_arch = "aarch64")]
            Imp::Neon(_) => Isa::Neon,
        }
    }

    /// `Σ a[i]·b[i]`.
    pub fn dot_f32(&self, a: &[f32], b: &[f32]) -> f32 {
        dispatch!(self, dot_f32(a, b))
    }

    /// `Σ a[i]·x[i]` for a BF16 vector (a row of a BF16 KV cache), accumulating in f32.
    pub fn dot_bf16(&self, a: &[bf16], x: &[f32]) -> f32 {
        dispatch!(self, dot_bf16(a, x))
    }

    /// `Σ a[i]·x[i]` for an F16 vector (a row of an F16 KV cache), accumulating in f32.
    pub fn dot_f16(&self, a: &[f16], x: &[f32]) -> f32 {
        dispatch!(self, dot_f16(a, x))
    }

    /// `out[r*n_tok + t] = Σ_j w[r*k + j] · x[t*k + j]` for f32 weights.
    ///
    /// Attention scores over a cache are this call too: `w` = the keys `(positions, head_dim)`,
    /// `x` = the query heads sharing that KV head `(n_q_per_kv, head_dim)`.
    pub fn gemm_f32(&self, w: &[f32], x: &[f32], k: usize, out: &mut [f32]) {
        dispatch!(self, gemm_f32(w, x, k, out))
    }

    /// Like [`Kernels::gemm_f32`] for BF16 weights, accumulating in f32.
    pub fn gemm_bf16(&self, w: &[bf16], x: &[f32], k: usize, out: &mut [f32]) {
        dispatch!(self, gemm_bf16(w, x, k, out))
    }

    /// Like [`Kernels::gemm_f32`] for F16 weights, accumulating in f32.
    pub fn gemm_f16(&self, w: &[f16], x: &[f32], k: usize, out: &mut [f32]) {
        dispatch!(self, gemm_f16(w, x, k, out))
    }

    /// FP8 weights `(rows, k)` with one f32 multiplier per `(row, k-block)`:
    /// `scales` is `(rows, k.div_ceil(block_k))`. Per-channel and per-tensor scales are the case
    /// `block_k == k`; 128×128 block scales are expanded to rows by the caller.
    /// Vector levels are fastest when `block_k` is a multiple of 16.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_fp8(
        &self,
        format: Fp8Format,
        w: &[u8],
        scales: &[f32],
        block_k: usize,
        x: &[f32],
        k: usize,
        out: &mut [f32],
    ) {
        dispatch!(self, gemm_fp8(format, w, scales, block_k, x, k, out))
    }

    /// 4-bit weights `(rows, k/2)` bytes, value `2j` in the low nibble of byte `j`, `2j+1` in the
    /// high one; `scales` and `zero_scaled` (= zero point × scale) are `(rows, k/group)`:
    /// `w = q·s − z·s`. Vector levels are fastest when `group` is a multiple of 16.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_q4(
        &self,
        w: &[u8],
        scales: &[f32],
        zero_scaled: &[f32],
        group: usize,
        x: &[f32],
        k: usize,
        out: &mut [f32],
    ) {
        dispatch!(self, gemm_q4(w, scales, zero_scaled, group, x, k, out))
    }

    /// The prefill matmul ([`panel`]): `out (rows, n_tok) = W · x[:, k0..k0+kc]ᵀ`, plus `out`'s
    /// previous contents when `accumulate`. `w` is one block of f32 weights, `(rows,`
    /// [`PANEL_K_BLOCK`]`)` with the first `kc` columns used (the caller widens or dequantizes
    /// the format a block at a time), `x` the packed activations. Bit-identical on every level.
    pub fn gemm_panel(
        &self,
        w: &[f32],
        x: &PanelActs,
        k0: usize,
        kc: usize,
        out: &mut [f32],
        accumulate: bool,
    ) {
        dispatch!(self, gemm_panel(w, x, k0, kc, out, accumulate))
    }

    /// 4-bit weights in the row-interleaved q4x16 layout ([`q8`]) times int8 activations:
    /// `scales` and `zero_scaled` are `(tiles, k/group, 16)`, `x` was quantized with this
    /// `group`, `out` is `(rows, n_tok)` with `rows` in the last tile. Bit-identical on every level.
    pub fn gemm_q4x16_q8(
        &self,
        w: &[u8],
        scales: &[f32],
        zero_scaled: &[f32],
        group: usize,
        x: &Q8Acts,
        out: &mut [f32],
    ) {
        dispatch!(self, gemm_q4x16_q8(w, scales, zero_scaled, group, x, out))
    }

    /// Int8 weights in the row-interleaved q8x16 layout ([`q8`]) with one scale per row
    /// (`(tiles·16)`), times int8 activations. Bit-identical on every level.
    pub fn gemm_q8x16_q8(&self, w: &[i8], scales: &[f32], x: &Q8Acts, out: &mut [f32]) {
        dispatch!(self, gemm_q8x16_q8(w, scales, x, out))
    }

    /// `acts = x (n_tok, k)` quantized to int8 in blocks of `block` with group sums over
    /// `group`: [`Q8Acts::quantize`]'s result, bit for bit, with the blocks on this level.
    pub fn quantize_q8(&self, x: &[f32], k: usize, block: usize, group: usize, acts: &mut Q8Acts) {
        acts.quantize_by(x, k, block, group, |x, block, xq, xs, isum| {
            dispatch!(self, quantize_q8(x, block, xq, xs, isum))
        })
    }

    /// `dst[i] = src[i]` widened to f32, exactly (a BF16 weight block for the prefill matmul).
    pub fn widen_bf16(&self, src: &[bf16], dst: &mut [f32]) {
        dispatch!(self, widen_bf16(src, dst))
    }

    /// `dst[i] = src[i]` widened to f32, exactly.
    pub fn widen_f16(&self, src: &[f16], dst: &mut [f32]) {
        dispatch!(self, widen_f16(src, dst))
    }

    /// `dst[i] = decode(codes[i]) · scale` (one rounding): a stretch of an FP8 row sharing one
    /// scale, for a prefill weight block.
    pub fn dequant_fp8(&self, format: Fp8Format, codes: &[u8], scale: f32, dst: &mut [f32]) {
        dispatch!(self, dequant_fp8(format, codes, scale, dst))
    }

    /// `dst[2i] = lo(bytes[i])·scale − zero_scaled`, `dst[2i+1]` the same for the high nibble, each
    /// with one rounding (fused): a stretch of a 4-bit row inside one group.
    pub fn dequant_q4(&self, bytes: &[u8], scale: f32, zero_scaled: f32, dst: &mut [f32]) {
        dispatch!(self, dequant_q4(bytes, scale, zero_scaled, dst))
    }

    /// `out = weight · x / sqrt(mean(x²) + eps)`, computed in f32 as transformers' `Qwen3RMSNorm`.
    pub fn rms_norm(&self, x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
        dispatch!(self, rms_norm(x, weight, eps, out))
    }

    /// Numerically stable softmax in place.
    pub fn softmax(&self, x: &mut [f32]) {
        dispatch!(self, softmax(x))
    }

    /// `gate[i] = silu(gate[i]) · up[i]`: the SwiGLU activation.
    pub fn silu_mul(&self, gate: &mut [f32], up: &[f32]) {
        dispatch!(self, silu_mul(gate, up))
    }

    /// `out[g, :] += Σ_i p[g·ldp + i] · v[i, :]` for `v (n, d)` and `out (groups, d)`: attention's
    /// probabilities times a chunk of value rows, each value row read once for all `groups`
    /// query heads. One fused multiply-add chain per output over `i` in order, bit-identical on
    /// every level.
    pub fn mix_rows_f32(&self, p: &[f32], ldp: usize, v: &[f32], d: usize, out: &mut [f32]) {
        dispatch!(self, mix_rows_f32(p, ldp, v, d, out))
    }

    /// [`Kernels::mix_rows_f32`] for BF16 value rows (a BF16 V cache).
    pub fn mix_rows_bf16(&self, p: &[f32], ldp: usize, v: &[bf16], d: usize, out: &mut [f32]) {
        dispatch!(self, mix_rows_bf16(p, ldp, v, d, out))
    }

    /// [`Kernels::mix_rows_f32`] for F16 value rows (an F16 V cache).
    pub fn mix_rows_f16(&self, p: &[f32], ldp: usize, v: &[f16], d: usize, out: &mut [f32]) {
        dispatch!(self, mix_rows_f16(p, ldp, v, d, out))
    }

    /// `y += a · x`.
    pub fn axpy(&self, a: f32, x: &[f32], y: &mut [f32]) {
        dispatch!(self, axpy(a, x, y))
    }

    /// `y += a · x` for a BF16 `x` (a row of a BF16 V cache).
    pub fn axpy_bf16(&self, a: f32, x: &[bf16], y: &mut [f32]) {
        dispatch!(self, axpy_bf16(a, x, y))
    }

    /// `y += a · x` for an F16 `x` (a row of an F16 V cache).
    pub fn axpy_f16(&self, a: f32, x: &[f16], y: &mut [f32]) {
        dispatch!(self, axpy_f16(a, x, y))
    }
}

/// Decodes one FP8 code to f32, exactly.
pub fn fp8_to_f32(format: Fp8Format, code: u8) -> f32 {
    scalar::fp8_to_f32(format, code)
}

/// Asks the cache hierarchy (L2 and outer levels) for every 64-byte line of `bytes`, without
/// waiting. For reads the hardware prefetcher cannot predict: a prefill weight block is a few
/// hundred bytes from each of ~100 rows, too short a run per row for the stream prefetcher.
/// A no-op on targets without a stable prefetch instruction here.
pub fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: SSE is part of x86_64; a prefetch reads nothing architecturally and never
        // faults, and the address is inside a live slice anyway.
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T1 }>(
                line.as_ptr().cast(),
            )
        }
    }
    #[cfg(target_arch = "aarch64")]
    for line in bytes.chunks(64) {
        // SAFETY: `prfm` is a hint: it reads nothing architecturally, never faults, and
        // touches no register or flag but its address operand.
        unsafe {
            core::arch::asm!("prfm pldl2keep, [{0}]", in(reg) line.as_ptr(), options(nostack, preserves_flags, readonly))
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = bytes;
}

//! Bit-level encodings the synthetic checkpoints need: a seedable PRNG, an
//! approximately normal sampler, f32 -> bf16 rounding, the two FP8 formats and
//! AutoAWQ's int4 packing.
//!
//! Everything here is written from the format definitions, not borrowed from the
//! workspace's own quant crate, so the generated files can catch loader bugs
//! instead of sharing them.

/// SplitMix64 finaliser: turns any 64-bit value into a well-mixed one. Used to
/// derive independent stream seeds from (seed, tensor name, chunk index).
pub(crate) fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a over a tensor name, so each tensor's stream depends on its name and not on
/// the order tensors happen to be written in.
pub(crate) fn hash_name(name: &str) -> u64 {
    name.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// wyrand: one multiply per 64 random bits, which keeps generation well ahead of
/// the disk. Statistical quality is far beyond what random weights need.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(splitmix64(seed))
    }

    #[inline]
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xA076_1D64_78BD_642F);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xE703_7ED1_A0B4_28DB);
        ((t >> 64) ^ t) as u64
    }

    /// Uniform in [0, 1).
    #[inline]
    pub(crate) fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Approximately standard normal: the Irwin-Hall sum of four 16-bit uniforms,
    /// centred and scaled to unit variance. One PRNG call per sample; the tails are
    /// cut at about +-3.46 sigma, which suits weights that are later quantized.
    #[inline]
    pub(crate) fn normal(&mut self) -> f32 {
        let r = self.next_u64();
        let sum = (r & 0xFFFF) + ((r >> 16) & 0xFFFF) + ((r >> 32) & 0xFFFF) + (r >> 48);
        // Mean 4 * 65535 / 2; variance 4 * (65536^2 - 1) / 12.
        const MEAN: f32 = 131_070.0;
        const INV_STD: f32 = 1.0 / 37_837.23;
        (sum as f32 - MEAN) * INV_STD
    }
}

/// f32 -> bf16 bits with round-to-nearest-even. Inputs here are finite, so the NaN
/// case torch handles specially cannot arise.
#[inline]
pub(crate) fn f32_to_bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

/// One of the two FP8 formats safetensors knows. Both are sign / exponent / mantissa
/// with subnormals; they differ in the special values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fp8 {
    /// E4M3 "fn": bias 7, no infinities, the single NaN pattern S.1111.111, max 448.
    E4M3,
    /// E5M2: bias 15, IEEE-like, exponent 31 is inf/NaN, max 57344.
    E5M2,
}

impl Fp8 {
    const fn mant_bits(self) -> u32 {
        match self {
            Fp8::E4M3 => 3,
            Fp8::E5M2 => 2,
        }
    }

    const fn bias(self) -> i32 {
        match self {
            Fp8::E4M3 => 7,
            Fp8::E5M2 => 15,
        }
    }

    /// The largest finite magnitude's code (sign bit clear).
    pub(crate) const fn max_code(self) -> u8 {
        match self {
            Fp8::E4M3 => 0x7E,
            Fp8::E5M2 => 0x7B,
        }
    }

    pub(crate) fn max_value(self) -> f32 {
        self.decode(self.max_code())
    }

    /// Whether `code` is NaN or infinite.
    pub(crate) fn is_special(self, code: u8) -> bool {
        match self {
            Fp8::E4M3 => code & 0x7F == 0x7F,
            Fp8::E5M2 => code & 0x7C == 0x7C,
        }
    }

    /// Decodes one code to f32 (NaN for the NaN codes, +-inf for E5M2's infinities).
    pub(crate) fn decode(self, code: u8) -> f32 {
        let m = self.mant_bits();
        let sign = if code & 0x80 != 0 { -1.0 } else { 1.0 };
        let exp = i32::from((code & 0x7F) >> m);
        let mant = f32::from(code & ((1 << m) - 1));
        if self.is_special(code) {
            return match self {
                Fp8::E5M2 if mant == 0.0 => sign * f32::INFINITY,
                _ => f32::NAN,
            };
        }
        let frac = mant / (1u32 << m) as f32;
        if exp == 0 {
            sign * frac * 2f32.powi(1 - self.bias())
        } else {
            sign * (1.0 + frac) * 2f32.powi(exp - self.bias())
        }
    }

    /// Encodes a finite f32 with round-to-nearest-even, saturating to the largest
    /// finite value (what `torch.clamp` before `.to(float8)` gives in quantizers).
    pub(crate) fn encode(self, x: f32) -> u8 {
        let m = self.mant_bits();
        let sign: u8 = if x.is_sign_negative() { 0x80 } else { 0 };
        let a = x.abs();
        let min_normal = 2f32.powi(1 - self.bias());
        let mag = if a < min_normal {
            // Subnormal: an integer number of steps of 2^(1 - bias - m). A result of
            // 2^m steps lands exactly on the smallest normal's code, as it should.
            (a * 2f32.powi(self.bias() - 1 + m as i32)).round_ties_even() as u32
        } else {
            // Round the f32 mantissa to m bits (RNE), then move the exponent from
            // f32's bias to ours; a mantissa carry bumps the exponent for free.
            let b = a.to_bits();
            let shift = 23 - m;
            let r = (b + ((1 << (shift - 1)) - 1) + ((b >> shift) & 1)) >> shift;
            r - (((127 - self.bias()) as u32) << m)
        };
        sign | mag.min(u32::from(self.max_code())) as u8
    }
}

/// Column permutation of AutoAWQ's GEMM packing: nibble `i` of a packed word holds
/// column `8c + AWQ_ORDER[i]` of its group of eight.
pub(crate) const AWQ_ORDER: [usize; 8] = [0, 2, 4, 6, 1, 3, 5, 7];

/// The inverse of [`AWQ_ORDER`]: column `j` of a group of eight goes to nibble
/// `AWQ_NIBBLE[j]`.
pub(crate) const AWQ_NIBBLE: [u32; 8] = [0, 4, 1, 5, 2, 6, 3, 7];

// The two tables must be inverse permutations; checked at compile time.
const _: () = {
    let mut i = 0;
    while i < 8 {
        assert!(AWQ_NIBBLE[AWQ_ORDER[i]] as usize == i);
        i += 1;
    }
};

/// Packs eight 4-bit values (columns 8c..8c+8, in column order) into one AutoAWQ
/// GEMM word.
#[inline]
pub(crate) fn awq_pack(vals: &[u8; 8]) -> u32 {
    vals.iter().zip(AWQ_NIBBLE).fold(0u32, |w, (&v, nib)| {
        debug_assert!(v < 16);
        w | (u32::from(v) << (4 * nib))
    })
}

/// Unpacks one AutoAWQ GEMM word back to its eight columns, in column order.
#[cfg(test)]
pub(crate) fn awq_unpack(word: u32) -> [u8; 8] {
    let mut out = [0u8; 8];
    for (i, &col) in AWQ_ORDER.iter().enumerate() {
        out[col] = ((word >> (4 * i)) & 0xF) as u8;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn awq_pack_known_tile() {
        // Columns 0..8 hold 0..8: the nibbles, low to high, must read 0,2,4,6,1,3,5,7.
        assert_eq!(awq_pack(&[0, 1, 2, 3, 4, 5, 6, 7]), 0x7531_6420);
        // A single non-zero column lands in exactly one nibble.
        assert_eq!(awq_pack(&[0, 0xF, 0, 0, 0, 0, 0, 0]), 0x000F_0000);
        assert_eq!(awq_pack(&[0, 0, 0, 0, 0, 0, 0, 9]), 0x9000_0000);
        assert_eq!(awq_pack(&[0, 0, 3, 0, 0, 0, 0, 0]), 0x0000_0030);
        // A 2x16 tile (two rows, two words per row), as it sits in `qweight`.
        let tile: [[u8; 16]; 2] = [
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0],
            [15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
        ];
        let words: Vec<u32> = tile
            .iter()
            .flat_map(|row| row.chunks(8).map(|g| awq_pack(g.try_into().unwrap())))
            .collect();
        assert_eq!(words, [0x8642_7531, 0x0ECA_FDB9, 0x8ACE_9BDF, 0x0246_1357]);
        for w in words {
            assert_eq!(awq_pack(&awq_unpack(w)), w);
        }
    }

    #[test]
    fn e4m3_known_codes_and_round_trip() {
        let f = Fp8::E4M3;
        assert_eq!(f.decode(0x38), 1.0);
        assert_eq!(f.decode(0x7E), 448.0);
        assert_eq!(f.decode(0xFE), -448.0);
        assert_eq!(f.decode(0x01), 2f32.powi(-9));
        assert_eq!(f.decode(0x08), 2f32.powi(-6));
        assert_eq!(f.decode(0x07), 7.0 * 2f32.powi(-9));
        assert!(f.decode(0x7F).is_nan() && f.decode(0xFF).is_nan());
        assert_eq!(f.decode(0x78), 256.0); // E4M3fn uses exponent 15 for normals.
        for c in 0..=255u8 {
            if !f.is_special(c) {
                assert_eq!(f.encode(f.decode(c)), c, "code {c:#04x}");
            }
        }
        // Saturation and ties-to-even.
        assert_eq!(f.encode(1e6), 0x7E);
        assert_eq!(f.encode(-464.0), 0xFE);
        assert_eq!(f.encode(1.0625), 0x38); // halfway 1.0 / 1.125 -> even (1.0)
        assert_eq!(f.encode(1.1875), 0x3A); // halfway 1.125 / 1.25 -> even (1.25)
        assert_eq!(f.encode(1.5 * 2f32.powi(-9)), 0x02); // subnormal tie -> even
        assert_eq!(f.encode(2f32.powi(-11)), 0x00);
        assert_eq!(f.encode(15.5 * 2f32.powi(-10)), 0x08); // rounds up into normals
    }

    #[test]
    fn e5m2_known_codes_and_round_trip() {
        let f = Fp8::E5M2;
        assert_eq!(f.decode(0x3C), 1.0);
        assert_eq!(f.decode(0x7B), 57344.0);
        assert_eq!(f.decode(0x7C), f32::INFINITY);
        assert_eq!(f.decode(0xFC), f32::NEG_INFINITY);
        assert!(f.decode(0x7D).is_nan());
        assert_eq!(f.decode(0x01), 2f32.powi(-16));
        for c in 0..=255u8 {
            if !f.is_special(c) {
                assert_eq!(f.encode(f.decode(c)), c, "code {c:#04x}");
            }
        }
        assert_eq!(f.encode(61440.0), 0x7B); // would round to inf; saturates
        assert_eq!(f.encode(1.125), 0x3C); // tie -> even
    }

    #[test]
    fn bf16_rounding() {
        assert_eq!(f32_to_bf16_bits(1.0), 0x3F80);
        assert_eq!(f32_to_bf16_bits(-2.0), 0xC000);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1.0).
        assert_eq!(f32_to_bf16_bits(1.0 + 2f32.powi(-8)), 0x3F80);
        assert_eq!(f32_to_bf16_bits(1.0 + 3.0 * 2f32.powi(-8)), 0x3F82);
        for x in [0.02f32, -1e-3, 3.5, 1e-30] {
            assert_eq!(f32_to_bf16_bits(x), half::bf16::from_f32(x).to_bits());
        }
    }

    #[test]
    fn normal_sampler_moments() {
        let mut rng = Rng::new(7);
        let n = 200_000;
        let (mut s, mut s2) = (0f64, 0f64);
        for _ in 0..n {
            let x = f64::from(rng.normal());
            s += x;
            s2 += x * x;
        }
        let mean = s / f64::from(n);
        let var = s2 / f64::from(n) - mean * mean;
        // Standard errors at n = 2e5 are ~0.002 (mean) and ~0.003 (variance).
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
    }
}

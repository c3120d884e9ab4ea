//! Element types that appear in Qwen3 checkpoints, as safetensors names them.

use half::{bf16, f16};

/// A tensor element type. Names and sizes follow the safetensors specification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// bfloat16: the usual Qwen3 weight type.
    BF16,
    /// IEEE half precision (AWQ scales, F16 checkpoints).
    F16,
    /// IEEE single precision.
    F32,
    /// `float8_e4m3fn`: bias 7, no infinities, max 448.
    F8E4M3,
    /// `float8_e5m2`: bias 15, IEEE-like.
    F8E5M2,
    /// 32-bit integer (AWQ `qweight` and `qzeros` hold 8 nibbles each).
    I32,
    /// Byte.
    U8,
}

impl Dtype {
    /// Parses a safetensors header dtype string; `None` for types no Qwen3 checkpoint uses.
    pub fn from_safetensors(name: &str) -> Option<Dtype> {
        Some(match name {
            "BF16" => Dtype::BF16,
            "F16" => Dtype::F16,
            "F32" => Dtype::F32,
            "F8_E4M3" => Dtype::F8E4M3,
            "F8_E5M2" => Dtype::F8E5M2,
            "I32" => Dtype::I32,
            "U8" => Dtype::U8,
            _ => return None,
        })
    }

    /// The name safetensors uses.
    pub fn safetensors_name(self) -> &'static str {
        match self {
            Dtype::BF16 => "BF16",
            Dtype::F16 => "F16",
            Dtype::F32 => "F32",
            Dtype::F8E4M3 => "F8_E4M3",
            Dtype::F8E5M2 => "F8_E5M2",
            Dtype::I32 => "I32",
            Dtype::U8 => "U8",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F8E4M3 | Dtype::F8E5M2 | Dtype::U8 => 1,
            Dtype::BF16 | Dtype::F16 => 2,
            Dtype::F32 | Dtype::I32 => 4,
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.safetensors_name())
    }
}

/// A Rust type that a tensor's bytes can be viewed as.
pub trait Element: bytemuck::Pod {
    /// The dtypes whose bytes are this type. FP8 codes are viewed as `u8`.
    const DTYPES: &'static [Dtype];
}

impl Element for bf16 {
    const DTYPES: &'static [Dtype] = &[Dtype::BF16];
}
impl Element for f16 {
    const DTYPES: &'static [Dtype] = &[Dtype::F16];
}
impl Element for f32 {
    const DTYPES: &'static [Dtype] = &[Dtype::F32];
}
impl Element for i32 {
    const DTYPES: &'static [Dtype] = &[Dtype::I32];
}
impl Element for u8 {
    const DTYPES: &'static [Dtype] = &[Dtype::U8, Dtype::F8E4M3, Dtype::F8E5M2];
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Dtype; 7] = [
        Dtype::BF16,
        Dtype::F16,
        Dtype::F32,
        Dtype::F8E4M3,
        Dtype::F8E5M2,
        Dtype::I32,
        Dtype::U8,
    ];

    #[test]
    fn names_round_trip_and_sizes_match_the_rust_types() {
        for d in ALL {
            assert_eq!(Dtype::from_safetensors(d.safetensors_name()), Some(d));
            assert_eq!(d.to_string(), d.safetensors_name());
        }
        assert_eq!(Dtype::BF16.size(), std::mem::size_of::<bf16>());
        assert_eq!(Dtype::F16.size(), std::mem::size_of::<f16>());
        assert_eq!(Dtype::F32.size(), std::mem::size_of::<f32>());
        assert_eq!(Dtype::I32.size(), std::mem::size_of::<i32>());
        assert_eq!(Dtype::U8.size(), 1);
        assert_eq!(Dtype::F8E4M3.size(), 1);
        assert_eq!(Dtype::F8E5M2.size(), 1);
    }

    #[test]
    fn unsupported_names_are_rejected() {
        for name in ["F64", "I64", "I16", "U16", "BOOL", "bf16", "F8_E4M3FN", ""] {
            assert_eq!(Dtype::from_safetensors(name), None, "{name}");
        }
    }

    /// `Tensor::new` uses the dtype size as the alignment an `Element` view needs.
    #[test]
    fn every_element_type_is_aligned_to_its_size_and_claims_matching_dtypes() {
        fn check<T: Element>() {
            assert_eq!(std::mem::align_of::<T>(), std::mem::size_of::<T>());
            for d in T::DTYPES {
                assert_eq!(d.size(), std::mem::size_of::<T>(), "{d}");
            }
        }
        check::<bf16>();
        check::<f16>();
        check::<f32>();
        check::<i32>();
        check::<u8>();
    }
}

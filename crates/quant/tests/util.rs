//! Test helpers: in-memory safetensors images, a deterministic RNG, the f64 oracle and its
//! error bound.

use nano_infer_quant::{Linear, QuantScheme};
use nano_infer_simd::{Isa, Kernels};
use nano_infer_tensor::{SafetensorsFile, WeightStore};
use serde_json::{json, Map, Value};

/// Collects tensors and serialises them as a safetensors image: 8-byte header length, JSON header
/// padded with spaces to a multiple of 8, then the data with every tensor 8-byte aligned.
#[derive(Default)]
pub struct StBuilder {
    tensors: Vec<(String, &'static str, Vec<usize>, Vec<u8>)>,
}

impl StBuilder {
    pub fn add(
        &mut self,
        name: &str,
        dtype: &'static str,
        shape: &[usize],
        bytes: Vec<u8>,
    ) -> &mut Self {
        self.tensors
            .push((name.to_owned(), dtype, shape.to_vec(), bytes));
        self
    }

    pub fn i32s(&mut self, name: &str, shape: &[usize], v: &[i32]) -> &mut Self {
        self.add(
            name,
            "I32",
            shape,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
    }

    pub fn f32s(&mut self, name: &str, shape: &[usize], v: &[f32]) -> &mut Self {
        self.add(
            name,
            "F32",
            shape,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
    }

    pub fn f16s(&mut self, name: &str, shape: &[usize], v: &[f32]) -> &mut Self {
        let b = v
            .iter()
            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
            .collect();
        self.add(name, "F16", shape, b)
    }

    pub fn bf16s(&mut self, name: &str, shape: &[usize], v: &[f32]) -> &mut Self {
        let b = v
            .iter()
            .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
            .collect();
        self.add(name, "BF16", shape, b)
    }

    /// Scale values in `dtype` (`F32`, `BF16` or `F16`); values should be exact in it.
    pub fn scales(&mut self, name: &str, dtype: &str, shape: &[usize], v: &[f32]) -> &mut Self {
        match dtype {
            "F32" => self.f32s(name, shape, v),
            "BF16" => self.bf16s(name, shape, v),
            _ => self.f16s(name, shape, v),
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut header = Map::new();
        let mut data = Vec::new();
        // Widest elements first, as the reference writer orders them: every tensor starts
        // aligned for its type with no padding between tensors, which the format forbids.
        let elem = |dtype: &str| match dtype {
            "F32" | "I32" => 4,
            "BF16" | "F16" => 2,
            _ => 1,
        };
        let mut tensors: Vec<_> = self.tensors.iter().collect();
        tensors.sort_by_key(|(_, dtype, _, _)| std::cmp::Reverse(elem(dtype)));
        for (name, dtype, shape, bytes) in tensors {
            let begin = data.len();
            data.extend_from_slice(bytes);
            header.insert(
                name.clone(),
                json!({"dtype": dtype, "shape": shape, "data_offsets": [begin, data.len()]}),
            );
        }
        let mut h = serde_json::to_vec(&Value::Object(header)).unwrap();
        h.resize(h.len().next_multiple_of(8), b' ');
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&h);
        out.extend_from_slice(&data);
        out
    }

    pub fn store(&self) -> WeightStore {
        let file =
            SafetensorsFile::from_bytes("mem.safetensors", self.bytes()).expect("valid image");
        WeightStore::from_files("mem", vec![file]).unwrap()
    }
}

/// xorshift64*: deterministic inputs without a rand dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.unit()).collect()
    }
}

/// `y (n_tok, rows) = x · Wᵀ` in f64 from an exact f32 `w (rows, k)`; products of two f32 are
/// exact in f64 and k ≤ 1000 terms keep the f64 sum within 1e-13 relative, so this is the
/// exact answer for the purpose of an f32 tolerance.
pub fn matmul_f64(w: &[f32], x: &[f32], k: usize) -> Vec<f64> {
    let rows = w.len() / k;
    let n_tok = x.len() / k;
    let mut y = vec![0f64; n_tok * rows];
    for t in 0..n_tok {
        for r in 0..rows {
            y[t * rows + r] = (0..k)
                .map(|j| x[t * k + j] as f64 * w[r * k + j] as f64)
                .sum();
        }
    }
    y
}

/// The error bound of an f32 kernel for each output: `(k + 4) · 2⁻²⁴ · Σ_j |x_j| · m_rj`.
///
/// Why: a sum of k rounded products has error at most γ_k·Σ|terms| ≈ k·u·Σ|terms| (u = 2⁻²⁴) in
/// any summation order, tree or sequential, with or without FMA; the per-block scale multiply and
/// the sum over blocks add a few more roundings (the +4). `m` is the magnitude the kernel
/// actually sums: |W| for dense and FP8, but `q·s + z·s` for AWQ, whose kernel computes
/// `s·Σqx − zs·Σx` and can cancel.
pub fn bound(mag: &[f64], x: &[f32], k: usize) -> Vec<f64> {
    let rows = mag.len() / k;
    let n_tok = x.len() / k;
    let u = (k as f64 + 4.0) * f64::from(f32::EPSILON) / 2.0;
    let mut b = vec![0f64; n_tok * rows];
    for t in 0..n_tok {
        for r in 0..rows {
            let s: f64 = (0..k)
                .map(|j| (x[t * k + j] as f64).abs() * mag[r * k + j])
                .sum();
            b[t * rows + r] = u * s + f64::from(f32::MIN_POSITIVE);
        }
    }
    b
}

/// Per-element magnitudes the kernel sums for `linear` (see [`bound`]).
pub fn magnitudes(linear: &Linear) -> Vec<f64> {
    match linear {
        Linear::Awq(w) => {
            let (k, g) = (w.k(), w.group_size());
            let groups = k / g;
            (0..w.rows() * k)
                .map(|i| {
                    let (r, j) = (i / k, i % k);
                    let byte = w.packed()[r * k / 2 + j / 2];
                    let q = if j % 2 == 0 { byte & 15 } else { byte >> 4 };
                    let gi = r * groups + j / g;
                    (q as f64 * w.scales()[gi] as f64).abs() + (w.zero_scaled()[gi] as f64).abs()
                })
                .collect()
        }
        other => other
            .dequantize()
            .iter()
            .map(|v| (*v as f64).abs())
            .collect(),
    }
}

/// Runs `linear.forward` with every ISA the host has and checks each against `x · Wᵀ` for the
/// exact `w`, within [`bound`]. Returns the largest |error| / bound seen.
pub fn check_forward(linear: &Linear, w: &[f32], x: &[f32]) -> f64 {
    let k = linear.in_features();
    let want = matmul_f64(w, x, k);
    let tol = bound(&magnitudes(linear), x, k);
    let mut worst = 0f64;
    for isa in Isa::available() {
        let kernels = Kernels::for_isa(isa).expect("available");
        let mut out = vec![f32::NAN; want.len()];
        let mut scratch = Vec::new();
        linear.forward(kernels, x, &mut out, &mut scratch);
        for (i, (&got, (&exp, &tol))) in out.iter().zip(want.iter().zip(&tol)).enumerate() {
            let err = (got as f64 - exp).abs();
            assert!(
                err <= tol,
                "{isa}: {} output {i} (tok {}, row {}): got {got}, want {exp}, |err| {err:e} > bound {tol:e}",
                linear.format_name(),
                i / linear.out_features(),
                i % linear.out_features(),
            );
            worst = worst.max(err / tol);
        }
    }
    worst
}

/// Loads `prefix` from a store built by `b` with config `cfg`.
pub fn load(
    b: &StBuilder,
    cfg: Value,
    prefix: &str,
    out: usize,
    inp: usize,
) -> nano_infer_quant::Result<Linear> {
    let scheme = QuantScheme::from_config(Some(&cfg))?;
    Linear::load(&b.store(), prefix, &scheme, out, inp)
}

pub fn awq_config(group: usize) -> Value {
    json!({"bits": 4, "group_size": group, "modules_to_not_convert": null, "quant_method": "awq", "version": "gemm", "zero_point": true})
}

pub fn fp8_block_config(br: usize, bc: usize) -> Value {
    json!({"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [br, bc]})
}

/// compressed-tensors 0.20 layout with `strategy` (`channel` or `tensor`), `ignore: [lm_head]`.
pub fn ct_config(strategy: &str) -> Value {
    json!({
        "config_groups": {"group_0": {
            "format": null, "input_activations": null, "output_activations": null, "targets": ["Linear"],
            "weights": {"dynamic": false, "group_size": null, "num_bits": 8, "observer": "minmax",
                        "strategy": strategy, "symmetric": true, "type": "float"}
        }},
        "format": "float-quantized", "global_compression_ratio": null, "ignore": ["lm_head"],
        "kv_cache_scheme": null, "quant_method": "compressed-tensors", "quantization_status": "compressed",
        "sparsity_config": {}, "transform_config": {}, "version": "0.20.0"
    })
}

/// Whether `code` decodes to a finite value (random weights avoid NaN/Inf codes).
pub fn finite_code(e5m2: bool, code: u8) -> bool {
    if e5m2 {
        (code >> 2) & 31 != 31
    } else {
        code & 0x7F != 0x7F
    }
}

/// A fixture directory under the repository's `testdata/fixtures`.
pub fn fixture_dir(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/fixtures")
        .join(name)
}

/// `(prefix, rows, k)` of every linear of layer 0, from a fixture's `config.json`.
pub fn layer0_linears(config: &Value) -> Vec<(String, usize, usize)> {
    let dim = |key: &str| config[key].as_u64().unwrap() as usize;
    let (hidden, inter, hd) = (
        dim("hidden_size"),
        dim("intermediate_size"),
        dim("head_dim"),
    );
    let (q, kv) = (
        dim("num_attention_heads") * hd,
        dim("num_key_value_heads") * hd,
    );
    [
        ("self_attn.q_proj", q, hidden),
        ("self_attn.k_proj", kv, hidden),
        ("self_attn.v_proj", kv, hidden),
        ("self_attn.o_proj", hidden, q),
        ("mlp.gate_proj", inter, hidden),
        ("mlp.up_proj", inter, hidden),
        ("mlp.down_proj", hidden, inter),
    ]
    .into_iter()
    .map(|(l, r, k)| (format!("model.layers.0.{l}"), r, k))
    .collect()
}

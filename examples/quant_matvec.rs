//! The quant crate on its own, as another engine would use it: open one AWQ int4 or FP8
//! layer of a checkpoint with `nano_infer::tensor` + `nano_infer::quant` (no model code), and
//! multiply a vector by it.
//!
//! ```text
//! cargo run --release --example quant_matvec -- [FIXTURE_DIR] [LAYER]
//! ```
//! Defaults: `testdata/fixtures/awq` (AutoAWQ GEMM int4, group 64) and
//! `model.layers.0.self_attn.k_proj`; `testdata/fixtures/fp8_block` is an FP8 checkpoint with
//! 128×128 block scales. The fixtures also hold transformers' own f32 dequantization of that
//! layer (`reference.safetensors`), which the example multiplies too, as an independent check.

use nano_infer::quant::{Linear, QuantScheme};
use nano_infer::simd::Kernels;
use nano_infer::tensor::{SafetensorsFile, WeightStore};
use std::error::Error;
use std::io::Write;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .unwrap_or_else(|| format!("{}/testdata/fixtures/awq", env!("CARGO_MANIFEST_DIR")));
    let layer = args
        .next()
        .unwrap_or_else(|| "model.layers.0.self_attn.k_proj".into());
    run(&dir, &layer, &mut std::io::stdout())?;
    Ok(())
}

/// Loads `layer` of the checkpoint in `dir`, computes `y = W·x` for a fixed `x`, and returns
/// the largest difference from the same product with the reference f32 weight.
pub fn run(dir: &str, layer: &str, out: &mut dyn Write) -> Result<f32, Box<dyn Error>> {
    // 1. Map every safetensors file of the directory (one file or shards); headers are checked,
    //    no tensor data is read yet.
    let store = WeightStore::open_dir(dir)?;
    // 2. The format comes from config.json's `quantization_config` (absent: dense weights).
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{dir}/config.json"))?)?;
    let scheme = QuantScheme::from_config(config.get("quantization_config"))?;
    // 3. The reference dequantization gives the layer's shape (out_features, in_features).
    let reference = SafetensorsFile::open(format!("{dir}/reference.safetensors"))?
        .get(&format!("dequant.{layer}.weight"))?;
    let &[rows, k] = reference.shape() else {
        return Err("the reference weight is not 2-D".into());
    };
    // 4. Bind the layer: AWQ's qweight/qzeros/scales are checked against each other and the
    //    scheme, then repacked once into the kernel's layout; FP8 codes are used in place.
    let linear = Linear::load(&store, layer, &scheme, rows, k)?;

    // 5. Multiply. `Kernels::best()` picks AVX-512, AVX2 or NEON at run time (scalar otherwise);
    //    x is (n_tok, k) and y (n_tok, rows), here one token. `scratch` is reused across calls.
    let x: Vec<f32> = (0..k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect();
    let mut y = vec![0.0f32; rows];
    let mut scratch = Vec::new();
    linear.forward(Kernels::best(), &x, &mut y, &mut scratch);

    // The same product from transformers' dequantized f32 weight, summed naively.
    let w = reference.to_f32_vec()?;
    let max_diff = (0..rows)
        .map(|r| {
            let want: f32 = w[r * k..(r + 1) * k]
                .iter()
                .zip(&x)
                .map(|(a, b)| a * b)
                .sum();
            (y[r] - want).abs()
        })
        .fold(0.0f32, f32::max);
    let _ = writeln!(
        out,
        "{layer}: {} weight ({rows} x {k}, {} bytes kept), y[..4] = {:.4?}, max |y - y_ref| = {max_diff:.2e}",
        linear.format_name(),
        linear.weight_bytes(),
        &y[..4.min(rows)],
    );
    Ok(max_diff)
}

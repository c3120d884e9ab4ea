//! Which format a checkpoint's linear layers use, from `config.json`'s `quantization_config`.
//!
//! Parsing is strict: every option that would change the numbers (bits, zero points, static
//! activation scales, KV-cache quantization, transforms) is either implemented or rejected here,
//! naming the field, so a model never loads and then computes something else than transformers.
//! Options that only describe how the checkpoint was made (`observer`, `actorder: null`,
//! `global_compression_ratio`, `version`) are ignored.
//!
//! The config says which format *should* be stored; [`crate::Linear::load`] then checks the
//! tensors that *are* stored (the FP8 flavour E4M3/E5M2 is read from the weight's dtype, the
//! compressed-tensors scale layout from the scale's shape) and refuses a layer whose parts do
//! not fit together.

use crate::pattern::ModulePattern;
use crate::{QuantError, Result};
use nano_infer_simd::Fp8Format;
use serde_json::{Map, Value};

/// The quantization scheme of a whole checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub enum QuantScheme {
    /// No `quantization_config`: every linear weight is a dense `.weight`.
    None,
    /// AutoAWQ GEMM int4 (`quant_method: awq`).
    Awq(AwqConfig),
    /// Fine-grained FP8 with block scales (`quant_method: fp8`, DeepSeek-V3 / Qwen3-FP8 style).
    Fp8Block(Fp8BlockConfig),
    /// compressed-tensors `float-quantized` FP8 (llm-compressor's FP8 / FP8-dynamic schemes).
    CompressedFp8(CompressedFp8Config),
}

/// `quant_method: awq`, `version: gemm`.
#[derive(Clone, Debug, PartialEq)]
pub struct AwqConfig {
    /// Always 4: other widths are rejected.
    pub bits: u32,
    /// Input features per (scale, zero) pair.
    pub group_size: usize,
    /// Always true (asymmetric int4 with packed zero points).
    pub zero_point: bool,
    /// Modules kept dense (substring match, as AutoAWQ and transformers do). `lm_head` is always
    /// dense: AutoAWQ never quantizes it.
    pub modules_to_not_convert: Vec<String>,
}

/// `quant_method: fp8` with `weight_block_size`.
#[derive(Clone, Debug, PartialEq)]
pub struct Fp8BlockConfig {
    /// `[rows, cols]` of W covered by one `weight_scale_inv` entry; edge blocks may be partial.
    pub block: [usize; 2],
    /// `fmt`: the code format the weights must have.
    pub format: Fp8Format,
    /// Modules kept dense (substring match, as transformers does); `lm_head` is always dense.
    pub modules_to_not_convert: Vec<String>,
}

/// How one compressed-tensors group scales its FP8 weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fp8Strategy {
    /// One scale for the whole matrix: `weight_scale` `[1]`.
    Tensor,
    /// One scale per output row: `weight_scale` `[out, 1]`.
    Channel,
    /// One scale per `[rows, cols]` block: `weight_scale` `[ceil(out/rows), ceil(in/cols)]`.
    Block([usize; 2]),
}

/// One entry of compressed-tensors' `config_groups`.
#[derive(Clone, Debug, PartialEq)]
pub struct CompressedGroup {
    /// The group's key in `config_groups` (`group_0`).
    pub name: String,
    /// The modules it applies to.
    pub targets: Vec<ModulePattern>,
    /// How its weight scales are laid out.
    pub strategy: Fp8Strategy,
}

/// `quant_method: compressed-tensors`, `format: float-quantized`.
#[derive(Clone, Debug, PartialEq)]
pub struct CompressedFp8Config {
    /// The quantized groups, in config order.
    pub groups: Vec<CompressedGroup>,
    /// Modules kept dense.
    pub ignore: Vec<ModulePattern>,
}

/// What [`QuantScheme::layer_format`] decides for one module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LayerFormat {
    Dense,
    Awq {
        group_size: usize,
    },
    Fp8 {
        block: Option<[usize; 2]>,
        expect: Option<Fp8Format>,
        strategy: Option<Fp8Strategy>,
    },
}

impl QuantScheme {
    /// Reads `quantization_config` (absent or null means unquantized).
    pub fn from_config(config: Option<&Value>) -> Result<Self> {
        let obj = match config {
            None | Some(Value::Null) => return Ok(QuantScheme::None),
            Some(Value::Object(obj)) => obj,
            Some(other) => {
                return Err(QuantError::config(
                    "",
                    format!("expected an object, found {other}"),
                ))
            }
        };
        let method = str_field(obj, "quant_method")?
            .ok_or_else(|| QuantError::config("quant_method", "missing"))?;
        match method.to_ascii_lowercase().as_str() {
            "awq" => parse_awq(obj).map(QuantScheme::Awq),
            "fp8" => parse_fp8_block(obj).map(QuantScheme::Fp8Block),
            "compressed-tensors" => parse_compressed(obj).map(QuantScheme::CompressedFp8),
            other => Err(QuantError::config(
                "quant_method",
                format!("`{other}` is not supported (supported: awq, fp8, compressed-tensors)"),
            )),
        }
    }

    /// The format module `name` (e.g. `model.layers.0.mlp.up_proj`) must be stored in.
    pub(crate) fn layer_format(&self, name: &str) -> LayerFormat {
        let is_lm_head = name == "lm_head" || name.ends_with(".lm_head");
        match self {
            QuantScheme::None => LayerFormat::Dense,
            QuantScheme::Awq(c) => {
                if is_lm_head
                    || c.modules_to_not_convert
                        .iter()
                        .any(|m| name.contains(m.as_str()))
                {
                    LayerFormat::Dense
                } else {
                    LayerFormat::Awq {
                        group_size: c.group_size,
                    }
                }
            }
            QuantScheme::Fp8Block(c) => {
                if is_lm_head
                    || c.modules_to_not_convert
                        .iter()
                        .any(|m| name.contains(m.as_str()))
                {
                    LayerFormat::Dense
                } else {
                    LayerFormat::Fp8 {
                        block: Some(c.block),
                        expect: Some(c.format),
                        strategy: None,
                    }
                }
            }
            QuantScheme::CompressedFp8(c) => {
                if c.ignore.iter().any(|p| p.matches_linear(name)) {
                    return LayerFormat::Dense;
                }
                // compressed-tensors applies the first group whose targets match.
                match c
                    .groups
                    .iter()
                    .find(|g| g.targets.iter().any(|t| t.matches_linear(name)))
                {
                    None => LayerFormat::Dense,
                    Some(g) => LayerFormat::Fp8 {
                        block: None,
                        expect: None,
                        strategy: Some(g.strategy),
                    },
                }
            }
        }
    }
}

fn str_field<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(QuantError::config(
            field,
            format!("expected a string, found {other}"),
        )),
    }
}

fn uint_field(obj: &Map<String, Value>, field: &str) -> Result<Option<u64>> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            QuantError::config(field, format!("expected a non-negative integer, found {v}"))
        }),
    }
}

fn bool_field(obj: &Map<String, Value>, field: &str) -> Result<Option<bool>> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(QuantError::config(
            field,
            format!("expected true or false, found {other}"),
        )),
    }
}

fn str_list(obj: &Map<String, Value>, field: &str) -> Result<Vec<String>> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().map(str::to_owned).ok_or_else(|| {
                    QuantError::config(field, format!("expected a list of strings, found {v}"))
                })
            })
            .collect(),
        Some(other) => Err(QuantError::config(
            field,
            format!("expected a list of strings, found {other}"),
        )),
    }
}

/// `[rows, cols]` of positive integers.
fn block_pair(field: &str, v: &Value) -> Result<[usize; 2]> {
    let pair = v.as_array().filter(|a| a.len() == 2).and_then(|a| {
        let r = a[0].as_u64().filter(|&n| n > 0)?;
        let c = a[1].as_u64().filter(|&n| n > 0)?;
        Some([r as usize, c as usize])
    });
    pair.ok_or_else(|| {
        QuantError::config(
            field,
            format!("expected [rows, cols] of positive integers, found {v}"),
        )
    })
}

fn parse_awq(obj: &Map<String, Value>) -> Result<AwqConfig> {
    // Defaults are transformers' `AwqConfig` defaults.
    let bits = uint_field(obj, "bits")?.unwrap_or(4);
    if bits != 4 {
        return Err(QuantError::config(
            "bits",
            format!("{bits}-bit AWQ is not supported (only 4)"),
        ));
    }
    let group_size = match obj.get("group_size") {
        None | Some(Value::Null) => 128,
        Some(v) => match v.as_u64() {
            Some(g) if g > 0 && g % 2 == 0 => g as usize,
            _ => {
                return Err(QuantError::config(
                    "group_size",
                    format!("{v} is not supported (a positive even number of input features is)"),
                ))
            }
        },
    };
    if bool_field(obj, "zero_point")? == Some(false) {
        return Err(QuantError::config(
            "zero_point",
            "symmetric AWQ (zero_point: false) is not supported",
        ));
    }
    let version = str_field(obj, "version")?.unwrap_or("gemm");
    if !version.eq_ignore_ascii_case("gemm") {
        return Err(QuantError::config(
            "version",
            format!(
                "AWQ version `{version}` is not supported (only gemm, AutoAWQ's default layout)"
            ),
        ));
    }
    Ok(AwqConfig {
        bits: 4,
        group_size,
        zero_point: true,
        modules_to_not_convert: str_list(obj, "modules_to_not_convert")?,
    })
}

fn parse_fp8_format(field: &str, name: &str) -> Result<Fp8Format> {
    match name.to_ascii_lowercase().as_str() {
        "e4m3" | "float8_e4m3fn" => Ok(Fp8Format::E4M3),
        "e5m2" | "float8_e5m2" => Ok(Fp8Format::E5M2),
        other => Err(QuantError::config(
            field,
            format!("FP8 format `{other}` is not supported (e4m3 or e5m2)"),
        )),
    }
}

fn parse_fp8_block(obj: &Map<String, Value>) -> Result<Fp8BlockConfig> {
    let format = parse_fp8_format("fmt", str_field(obj, "fmt")?.unwrap_or("e4m3"))?;
    let activation = str_field(obj, "activation_scheme")?.unwrap_or("dynamic");
    if activation != "dynamic" {
        return Err(QuantError::config(
            "activation_scheme",
            format!("`{activation}` is not supported (only dynamic: activations stay f32 here)"),
        ));
    }
    // transformers' `FineGrainedFP8Config` defaults to 128×128; an explicit null would mean
    // per-tensor FP8, which this method does not store.
    let block = match obj.get("weight_block_size") {
        None => [128, 128],
        Some(Value::Null) => {
            return Err(QuantError::config(
                "weight_block_size",
                "null (per-tensor `fp8`) is not supported",
            ))
        }
        Some(v) => block_pair("weight_block_size", v)?,
    };
    Ok(Fp8BlockConfig {
        block,
        format,
        modules_to_not_convert: str_list(obj, "modules_to_not_convert")?,
    })
}

fn parse_compressed(obj: &Map<String, Value>) -> Result<CompressedFp8Config> {
    let top_format = str_field(obj, "format")?;
    if let Some(status) = str_field(obj, "quantization_status")? {
        if status != "compressed" {
            return Err(QuantError::config(
                "quantization_status",
                format!("`{status}` is not supported (only compressed checkpoints)"),
            ));
        }
    }
    if obj.get("kv_cache_scheme").is_some_and(|v| !v.is_null()) {
        return Err(QuantError::config(
            "kv_cache_scheme",
            "quantized KV caches are not supported",
        ));
    }
    for field in ["sparsity_config", "transform_config"] {
        if obj
            .get(field)
            .is_some_and(|v| !v.is_null() && v.as_object().is_none_or(|o| !o.is_empty()))
        {
            return Err(QuantError::config(
                field,
                "must be empty: sparsity and transforms are not supported",
            ));
        }
    }
    let ignore = str_list(obj, "ignore")?
        .iter()
        .map(|s| ModulePattern::parse("ignore", s))
        .collect::<Result<Vec<_>>>()?;
    let groups_obj = match obj.get("config_groups") {
        Some(Value::Object(g)) if !g.is_empty() => g,
        _ => return Err(QuantError::config("config_groups", "missing or empty")),
    };
    let mut groups = Vec::new();
    for (name, group) in groups_obj {
        let field = |f: &str| format!("config_groups.{name}.{f}");
        let group = group
            .as_object()
            .ok_or_else(|| QuantError::config(&field(""), "expected an object"))?;
        let format = str_field(group, "format")?
            .or(top_format)
            .unwrap_or("float-quantized");
        if format != "float-quantized" {
            return Err(QuantError::config(
                &field("format"),
                format!("`{format}` is not supported (only float-quantized, i.e. FP8 weights)"),
            ));
        }
        let targets = str_list(group, "targets")?
            .iter()
            .map(|s| ModulePattern::parse(&field("targets"), s))
            .collect::<Result<Vec<_>>>()?;
        let weights = group
            .get("weights")
            .and_then(Value::as_object)
            .ok_or_else(|| QuantError::config(&field("weights"), "missing"))?;
        let strategy = parse_ct_weights(&field("weights"), weights)?;
        check_ct_activations(&field("input_activations"), group.get("input_activations"))?;
        if group
            .get("output_activations")
            .is_some_and(|v| !v.is_null())
        {
            return Err(QuantError::config(
                &field("output_activations"),
                "output quantization is not supported",
            ));
        }
        groups.push(CompressedGroup {
            name: name.clone(),
            targets,
            strategy,
        });
    }
    Ok(CompressedFp8Config { groups, ignore })
}

fn parse_ct_weights(field: &str, w: &Map<String, Value>) -> Result<Fp8Strategy> {
    let sub = |f: &str| format!("{field}.{f}");
    let bad = |f: &str, why: String| QuantError::config(&sub(f), why);
    let num_bits =
        uint_field(w, "num_bits").map_err(|_| bad("num_bits", "not an integer".into()))?;
    if num_bits != Some(8) {
        return Err(bad(
            "num_bits",
            format!("{num_bits:?} is not supported (only 8-bit float)"),
        ));
    }
    let ty = str_field(w, "type").map_err(|_| bad("type", "not a string".into()))?;
    if ty != Some("float") {
        return Err(bad("type", format!("{ty:?} is not supported (only float)")));
    }
    if bool_field(w, "symmetric").ok().flatten() == Some(false) {
        return Err(bad(
            "symmetric",
            "asymmetric FP8 (zero points) is not supported".into(),
        ));
    }
    if bool_field(w, "dynamic").ok().flatten() == Some(true) {
        return Err(bad(
            "dynamic",
            "dynamic weight scales are not supported".into(),
        ));
    }
    if w.get("group_size").is_some_and(|v| !v.is_null()) {
        return Err(bad(
            "group_size",
            "grouped FP8 weights are not supported".into(),
        ));
    }
    let strategy = str_field(w, "strategy").map_err(|_| bad("strategy", "not a string".into()))?;
    match strategy {
        Some("tensor") => Ok(Fp8Strategy::Tensor),
        Some("channel") => Ok(Fp8Strategy::Channel),
        Some("block") => match w.get("block_structure") {
            Some(v) if !v.is_null() => {
                Ok(Fp8Strategy::Block(block_pair(&sub("block_structure"), v)?))
            }
            _ => Err(bad("block_structure", "missing for strategy block".into())),
        },
        other => Err(bad(
            "strategy",
            format!("{other:?} is not supported (tensor, channel or block)"),
        )),
    }
}

/// Dynamic per-token activation quantization is accepted and not simulated: activations stay
/// f32, which is what the reference fixtures compute. Static activation scales would change the
/// numbers, so they are rejected.
fn check_ct_activations(field: &str, v: Option<&Value>) -> Result<()> {
    match v {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(a)) if bool_field(a, "dynamic").ok().flatten() == Some(true) => Ok(()),
        Some(_) => Err(QuantError::config(
            field,
            "static activation quantization (input_scale) is not supported (only dynamic or none)",
        )),
    }
}

//! One linear layer in any supported format, and the threaded matmul over it.

use crate::panel;
use crate::scheme::LayerFormat;
use crate::{
    AwqActivations, AwqSource, AwqWeight, DenseWeight, Fp8Weight, Q8Weight, QuantError,
    QuantScheme, Result,
};
use nano_infer_simd::{Kernels, PanelActs, Q8Acts};
use nano_infer_team::Team;
use nano_infer_tensor::{Dtype, SpillFile, Tensor, WeightStore};
use std::cell::RefCell;
use std::ops::Range;

/// Load-time choices that change how a layer is stored and multiplied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LinearOptions {
    /// Activations of AWQ layers: f32 (exact up to summation order, the default here) or int8.
    pub awq_activations: AwqActivations,
}

thread_local! {
    /// The int8 activations of the matmul this thread is running: sized by the first call and
    /// reused, so decode allocates nothing.
    static Q8_SCRATCH: RefCell<Q8Acts> = RefCell::new(Q8Acts::new());
    /// The packed activations of the prefill matmul this thread is running, reused likewise.
    static PANEL_SCRATCH: RefCell<PanelActs> = RefCell::new(PanelActs::new());
}

/// Output rows handed to one team task: large enough to amortise the task, small enough that
/// two to sixteen threads get even shares of a 2560-row projection.
const ROWS_PER_TASK: usize = 64;

/// A linear layer's weight `(out_features, in_features)`, in the format the checkpoint stores.
#[derive(Clone, Debug)]
pub enum Linear {
    /// BF16/F16/F32, in place in the memory map.
    Dense(DenseWeight),
    /// AutoAWQ int4, repacked at load (4 + 64/group bits per weight).
    Awq(AwqWeight),
    /// FP8 codes in place, scales expanded per (row, k-block) (8 + 32/block_k bits per weight).
    Fp8(Fp8Weight),
    /// An int8 copy with per-row scales, times int8 activations (8 + 32/k bits per weight);
    /// built from another layer by [`Linear::to_q8`] (`--lm-head q8`).
    Q8(Q8Weight),
}

impl Linear {
    /// Number of outputs (rows of W).
    pub fn out_features(&self) -> usize {
        match self {
            Linear::Dense(w) => w.rows(),
            Linear::Awq(w) => w.rows(),
            Linear::Fp8(w) => w.rows(),
            Linear::Q8(w) => w.rows(),
        }
    }

    /// Number of inputs (columns of W).
    pub fn in_features(&self) -> usize {
        match self {
            Linear::Dense(w) => w.k(),
            Linear::Awq(w) => w.k(),
            Linear::Fp8(w) => w.k(),
            Linear::Q8(w) => w.k(),
        }
    }

    /// `out (n_tok, out_features) = x (n_tok, in_features) · Wᵀ`.
    ///
    /// `scratch` holds the kernel's `(out_features, n_tok)` result before the transpose when
    /// `n_tok > 1`; it is resized as needed, so a caller reusing it allocates nothing per call.
    pub fn forward(&self, kernels: Kernels, x: &[f32], out: &mut [f32], scratch: &mut Vec<f32>) {
        Self::forward_fused(kernels, &[self], x, out, scratch)
    }

    /// Whether this layer's prefill runs on the panel kernel (every format but the int8
    /// activation ones, which have their own integer matmul).
    fn has_panel_path(&self) -> bool {
        match self {
            Linear::Dense(_) | Linear::Fp8(_) => true,
            Linear::Awq(w) => w.has_row_layout(),
            Linear::Q8(_) => false,
        }
    }

    /// `W[rows, k0..k1]` as f32 into a `(rows.len(), PANEL_K_BLOCK)` block: the panel path's
    /// weights, for the formats [`Linear::has_panel_path`] admits.
    fn dequantize_block(
        &self,
        kernels: Kernels,
        rows: Range<usize>,
        k_range: (usize, usize),
        block: &mut [f32],
    ) {
        match self {
            Linear::Dense(w) => w.dequantize_block(kernels, rows, k_range, block),
            Linear::Fp8(w) => w.dequantize_block(kernels, rows, k_range, block),
            Linear::Awq(w) => w.dequantize_block(kernels, rows, k_range, block),
            Linear::Q8(_) => unreachable!("has_panel_path is false for Q8"),
        }
    }

    fn gemm_rows(
        &self,
        kernels: Kernels,
        rows: std::ops::Range<usize>,
        x: &[f32],
        xq: Option<&Q8Acts>,
        out: &mut [f32],
    ) {
        match self {
            Linear::Dense(w) => w.gemm_rows(kernels, rows, x, out),
            Linear::Awq(w) => w.gemm_rows(kernels, rows, x, xq, out),
            Linear::Fp8(w) => w.gemm_rows(kernels, rows, x, out),
            Linear::Q8(w) => w.gemm_rows(kernels, rows, xq.expect("quantized in forward"), out),
        }
    }

    /// How this layer's kernel wants its activations quantized to int8, `(block, group)` for
    /// [`Kernels::quantize_q8`], if it takes int8 activations.
    fn q8_params(&self) -> Option<(usize, usize)> {
        match self {
            Linear::Awq(w) => w.q8_block().map(|block| (block, w.group_size())),
            Linear::Q8(w) => Some((w.q8_block(), w.q8_block())),
            _ => None,
        }
    }

    /// `out = [x · W₀ᵀ | x · W₁ᵀ | …]`: the layers' outputs one after another, each laid out as
    /// [`Linear::forward`] lays it out (`(n_tok, out_features)`). The layers must share
    /// `in_features`.
    ///
    /// Why: q/k/v and gate/up read the same input, so on the prefill (panel) path the prompt is
    /// packed once for all of them (3 packs per layer instead of 7: a 128-token prefill ran
    /// 1.04–1.05× faster in paired runs), and int8 activations are quantized once when the
    /// layers agree on how. At one token the layers' row blocks form one team loop; that
    /// measured neutral (0.97–1.00×: the team already ends each loop within one 64-row task),
    /// and keeps a single path for every token count. Layers that take their activations
    /// differently run one by one.
    pub fn forward_fused(
        kernels: Kernels,
        layers: &[&Linear],
        x: &[f32],
        out: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        let Some(first) = layers.first() else {
            return assert!(
                out.is_empty(),
                "Linear::forward_fused: no layers, some output"
            );
        };
        let k = first.in_features();
        assert!(
            layers.iter().all(|l| l.in_features() == k),
            "Linear::forward_fused: the layers' in_features differ"
        );
        assert_eq!(x.len() % k, 0, "Linear::forward: x is not (n_tok, {k})");
        let n_tok = x.len() / k;
        let total: usize = n_tok * layers.iter().map(|l| l.out_features()).sum::<usize>();
        assert_eq!(
            out.len(),
            total,
            "Linear::forward: out is not (n_tok, out_features) for each layer, one after another"
        );
        if n_tok == 0 {
            return;
        }
        let alike = |l: &&Linear| {
            l.q8_params() == first.q8_params() && l.has_panel_path() == first.has_panel_path()
        };
        if layers.len() > MAX_FUSED || !layers.iter().all(alike) {
            // Not one loop: in groups that are (at most MAX_FUSED alike layers each).
            let split = layers
                .iter()
                .take(MAX_FUSED)
                .take_while(|l| alike(l))
                .count();
            let (head, tail) = layers.split_at(split);
            let rows: usize = head.iter().map(|l| l.out_features()).sum();
            let (o, rest) = out.split_at_mut(n_tok * rows);
            Self::forward_fused(kernels, head, x, o, scratch);
            return Self::forward_fused(kernels, tail, x, rest, scratch);
        }
        if n_tok >= panel::PANEL_MIN_TOKENS && first.has_panel_path() {
            // Prefill: pack x once, then every task multiplies f32 weight blocks (`panel`).
            return panel_fused(kernels, layers, x, out, scratch);
        }
        if n_tok == 1 {
            // With one token the kernels' (rows, n_tok) layout is already (n_tok, rows).
            return rows_fused(kernels, layers, x, 1, out);
        }
        scratch.resize(total, 0.0);
        rows_fused(kernels, layers, x, n_tok, &mut scratch[..total]);
        transpose_segments(layers, n_tok, &scratch[..total], out);
    }

    /// An int8 copy of this layer (symmetric, one scale per row) that multiplies int8
    /// activations; `None` when `in_features` is not a multiple of 8. See [`Q8Weight`].
    pub fn to_q8(&self) -> Option<Self> {
        Q8Weight::quantize(self).map(Linear::Q8)
    }

    /// Bytes of weight data this layer reads per forward pass (and keeps resident): the mapped
    /// tensor for dense, the repacked codes + f32 scales and zero·scales for AWQ, the mapped
    /// codes + expanded f32 scales for FP8.
    pub fn weight_bytes(&self) -> usize {
        match self {
            Linear::Dense(w) => w.tensor().bytes().len(),
            Linear::Awq(w) => w.weight_bytes(),
            Linear::Fp8(w) => w.weight_bytes(),
            Linear::Q8(w) => w.weight_bytes(),
        }
    }

    /// The tensors this layer reads in place from a memory map (dense weights, FP8 codes, an
    /// AWQ layer moved to a spill file by [`LinearSource::finish_spilled`]): what a memory
    /// budget can page out and back in. Data repacked into process memory (AWQ of resident
    /// layers, Q8) is not among them.
    pub fn mapped_tensors(&self) -> Vec<nano_infer_tensor::Tensor> {
        match self {
            Linear::Dense(w) => vec![w.tensor().clone()],
            Linear::Fp8(w) => vec![w.codes_tensor().clone()],
            Linear::Awq(w) => w.mapped_tensors(),
            Linear::Q8(_) => Vec::new(),
        }
    }

    /// Bytes of this layer held in process memory rather than mapped from the file.
    pub fn owned_bytes(&self) -> usize {
        let mapped: usize = self.mapped_tensors().iter().map(|t| t.bytes().len()).sum();
        self.weight_bytes() - mapped
    }

    /// The format's name, for logs and `--verbose` output.
    pub fn format_name(&self) -> &'static str {
        match self {
            Linear::Dense(w) => match w.tensor().dtype() {
                Dtype::BF16 => "bf16",
                Dtype::F16 => "f16",
                _ => "f32",
            },
            Linear::Awq(w) => match w.activations() {
                AwqActivations::F32 => "awq-int4",
                AwqActivations::Int8 => "awq-int4-q8act",
            },
            Linear::Q8(_) => "q8",
            Linear::Fp8(w) => match w.format() {
                nano_infer_simd::Fp8Format::E4M3 => "fp8-e4m3",
                nano_infer_simd::Fp8Format::E5M2 => "fp8-e5m2",
            },
        }
    }

    /// Row `r` of W as f32 into `out` (`in_features` long), exactly as the format's
    /// dequantization rule defines it. For tests and tools: the forward pass never dequantizes.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        match self {
            Linear::Dense(w) => w.row_to_f32(r, out),
            Linear::Awq(w) => w.dequantize_row(r, out),
            Linear::Fp8(w) => w.dequantize_row(r, out),
            Linear::Q8(w) => w.dequantize_row(r, out),
        }
    }

    /// The whole `(out_features, in_features)` matrix as f32: a full-size copy, for tests only.
    pub fn dequantize(&self) -> Vec<f32> {
        let k = self.in_features();
        let mut w = vec![0f32; self.out_features() * k];
        for (r, row) in w.chunks_exact_mut(k).enumerate() {
            self.dequantize_row(r, row);
        }
        w
    }

    /// Loads the linear layer `prefix` (e.g. `model.layers.0.self_attn.q_proj`) stored in
    /// `scheme`'s format, checking it is `(out_features, in_features)`.
    ///
    /// The scheme says whether this module is quantized (modules in `ignore` /
    /// `modules_to_not_convert`, and `lm_head` for AWQ and `fp8`, are dense); the stored tensors
    /// must then agree: a quantized layer missing its scale or zero points is an error, never a
    /// layer that runs on raw codes.
    pub fn load(
        store: &WeightStore,
        prefix: &str,
        scheme: &QuantScheme,
        out_features: usize,
        in_features: usize,
    ) -> Result<Self> {
        Self::load_with(
            store,
            prefix,
            scheme,
            out_features,
            in_features,
            LinearOptions::default(),
        )
    }

    /// [`Linear::load`] with load-time options (int8 activations for AWQ).
    pub fn load_with(
        store: &WeightStore,
        prefix: &str,
        scheme: &QuantScheme,
        out_features: usize,
        in_features: usize,
        options: LinearOptions,
    ) -> Result<Self> {
        LinearSource::open(store, prefix, scheme, out_features, in_features, options)?.finish()
    }

    /// Builds a dense layer from a tensor.
    pub fn dense(tensor: Tensor) -> Result<Self> {
        Ok(Linear::Dense(DenseWeight::new(tensor)?))
    }
}

/// A linear layer found and checked in the checkpoint, before its load-time repack (AWQ) runs:
/// what a memory budget is planned from. [`LinearSource::weight_bytes`] is exactly the finished
/// layer's [`Linear::weight_bytes`], and [`LinearSource::movable_bytes`] what a budget can page
/// out once the layer is finished with [`LinearSource::finish_spilled`].
#[derive(Clone, Debug)]
pub struct LinearSource {
    prefix: String,
    source: Source,
}

#[derive(Clone, Debug)]
enum Source {
    /// Formats used in place from the memory map (dense, FP8): nothing left to do.
    Ready(Linear),
    Awq(AwqSource),
}

impl LinearSource {
    /// Finds and checks the linear layer `prefix`: see [`Linear::load`].
    pub fn open(
        store: &WeightStore,
        prefix: &str,
        scheme: &QuantScheme,
        out_features: usize,
        in_features: usize,
        options: LinearOptions,
    ) -> Result<Self> {
        if out_features == 0 || in_features == 0 {
            return Err(QuantError::invalid(
                &format!("{prefix}.weight"),
                format!("empty layer shape ({out_features}, {in_features})"),
            ));
        }
        let source = match scheme.layer_format(prefix) {
            LayerFormat::Dense => {
                let tensor = store.get(&format!("{prefix}.weight"));
                let tensor = match tensor {
                    Err(e) if store.contains(&format!("{prefix}.qweight")) => {
                        return Err(QuantError::invalid(
                            &format!("{prefix}.qweight"),
                            format!("`{prefix}` is stored AWQ-quantized, but quantization_config says it is not quantized ({e})"),
                        ))
                    }
                    other => other?,
                };
                if matches!(tensor.dtype(), Dtype::F8E4M3 | Dtype::F8E5M2) {
                    return Err(QuantError::invalid(
                        tensor.name(),
                        format!(
                            "stored as {} but quantization_config says `{prefix}` is not quantized (ignore / modules_to_not_convert); refusing to use FP8 codes without a scale",
                            tensor.dtype()
                        ),
                    ));
                }
                tensor.expect_shape(&[out_features, in_features])?;
                Linear::dense(tensor).map(Source::Ready)
            }
            LayerFormat::Awq { group_size } => AwqSource::open(
                store,
                prefix,
                group_size,
                out_features,
                in_features,
                options.awq_activations,
            )
            .map(Source::Awq),
            LayerFormat::Fp8 {
                block,
                expect,
                strategy,
            } => Fp8Weight::load(
                store,
                prefix,
                block,
                expect,
                strategy,
                out_features,
                in_features,
            )
            .map(|w| Source::Ready(Linear::Fp8(w))),
        }?;
        Ok(Self {
            prefix: prefix.to_owned(),
            source,
        })
    }

    /// Bytes the finished layer reads per forward pass ([`Linear::weight_bytes`]).
    pub fn weight_bytes(&self) -> usize {
        match &self.source {
            Source::Ready(l) => l.weight_bytes(),
            Source::Awq(a) => a.weight_bytes(),
        }
    }

    /// Bytes a memory budget can page out when this layer is streamed: the mapped tensors of
    /// in-place formats, and all of an AWQ layer's repacked data (it goes to a spill file). The
    /// rest (FP8's expanded scales) stays in process memory whatever the budget.
    pub fn movable_bytes(&self) -> usize {
        match &self.source {
            Source::Ready(l) => l.weight_bytes() - l.owned_bytes(),
            Source::Awq(a) => a.weight_bytes(),
        }
    }

    /// Finishes the layer in process memory (AWQ is repacked into the heap).
    pub fn finish(self) -> Result<Linear> {
        match self.source {
            Source::Ready(l) => Ok(l),
            Source::Awq(a) => a.repack().map(Linear::Awq),
        }
    }

    /// Finishes the layer for streaming: an AWQ layer is repacked and moved to `spill`, so that
    /// all of it is [`Linear::mapped_tensors`] and none of it [`Linear::owned_bytes`]; other
    /// formats are mapped already and come back as [`LinearSource::finish`] gives them.
    pub fn finish_spilled(self, spill: &mut SpillFile) -> Result<Linear> {
        match self.source {
            Source::Ready(l) => Ok(l),
            Source::Awq(a) => Ok(Linear::Awq(a.repack()?.spill(spill, &self.prefix)?)),
        }
    }

    /// The layer's name (`model.layers.0.self_attn.q_proj`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The AWQ layer to repack, if this is one (what an AWQ cache holds).
    pub fn awq(&self) -> Option<&AwqSource> {
        match &self.source {
            Source::Awq(a) => Some(a),
            Source::Ready(_) => None,
        }
    }

    /// Finishes the layer from `cache` (AWQ layers read their repacked data from the cache's
    /// map); other formats come back as [`LinearSource::finish`] gives them.
    pub fn finish_cached(self, cache: &crate::AwqCache) -> Result<Linear> {
        match self.source {
            Source::Ready(l) => Ok(l),
            Source::Awq(a) => cache.weight(&self.prefix, &a).map(Linear::Awq),
        }
    }

    /// Whether finishing repacks into memory (so [`LinearSource::finish_spilled`] writes a
    /// spill file).
    pub fn needs_spill(&self) -> bool {
        matches!(self.source, Source::Awq(_))
    }
}

/// `x (n_tok, k)` through `layers` (alike: same `in_features` and [`Linear::q8_params`]) on the
/// row kernels, in one team loop: `target` is each layer's `(rows, n_tok)` one after another,
/// in blocks of [`ROWS_PER_TASK`] rows.
fn rows_fused(kernels: Kernels, layers: &[&Linear], x: &[f32], n_tok: usize, target: &mut [f32]) {
    let (lens, n) = segment_lens(layers, n_tok);
    let lens = &lens[..n];
    let run = |target: &mut [f32], xq: Option<&Q8Acts>| {
        let chunk_len = ROWS_PER_TASK * n_tok;
        Team::current().for_each_segment_chunk_mut(target, lens, chunk_len, |j, c, chunk| {
            let r0 = c * ROWS_PER_TASK;
            layers[j].gemm_rows(kernels, r0..r0 + chunk.len() / n_tok, x, xq, chunk);
        })
    };
    match layers[0].q8_params() {
        None => run(target, None),
        // Quantize x once for all the layers, not per row task.
        Some((block, group)) => panel::with_scratch(&Q8_SCRATCH, |xq| {
            kernels.quantize_q8(x, layers[0].in_features(), block, group, xq);
            run(target, Some(&*xq));
        }),
    }
}

/// `src`, each layer's `(rows, n_tok)` one after another, into `out`, each layer's
/// `(n_tok, rows)` one after another.
fn transpose_segments(layers: &[&Linear], n_tok: usize, src: &[f32], out: &mut [f32]) {
    let (mut src, mut dst) = (src, out);
    for layer in layers {
        let len = layer.out_features() * n_tok;
        let (s, s_rest) = src.split_at(len);
        let (d, d_rest) = dst.split_at_mut(len);
        transpose_into(s, n_tok, layer.out_features(), d);
        (src, dst) = (s_rest, d_rest);
    }
}

/// Layers [`Linear::forward_fused`] runs in one loop: q/k/v.
const MAX_FUSED: usize = 3;

/// Each layer's `out_features · n_tok`: the segments of a fused output, and how many there are.
fn segment_lens(layers: &[&Linear], n_tok: usize) -> ([usize; MAX_FUSED], usize) {
    assert!(
        layers.len() <= MAX_FUSED,
        "at most {MAX_FUSED} fused layers"
    );
    let mut lens = [0usize; MAX_FUSED];
    for (len, l) in lens.iter_mut().zip(layers) {
        *len = l.out_features() * n_tok;
    }
    (lens, layers.len())
}

/// Prefill of `layers` (same `in_features`, all with [`Linear::has_panel_path`]): the prompt
/// packed once, one team loop over every layer's row blocks into `scratch` (each layer's
/// `(rows, n_tok)` one after another), then each layer's transpose into its part of `out`.
fn panel_fused(
    kernels: Kernels,
    layers: &[&Linear],
    x: &[f32],
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let k = layers[0].in_features();
    let n_tok = x.len() / k;
    let (lens, n) = segment_lens(layers, n_tok);
    let lens = &lens[..n];
    let total: usize = lens.iter().sum();
    scratch.resize(total, 0.0);
    let target = &mut scratch[..total];
    panel::with_scratch(&PANEL_SCRATCH, |acts| {
        panel::pack(acts, x, k);
        let chunk_len = panel::PANEL_ROWS_PER_TASK * n_tok;
        Team::current().for_each_segment_chunk_mut(target, lens, chunk_len, |j, c, chunk| {
            let r0 = c * panel::PANEL_ROWS_PER_TASK;
            let rows = r0..r0 + chunk.len() / n_tok;
            panel::gemm_by_blocks(kernels, acts, rows.len(), chunk, |k0, k1, block| {
                layers[j].dequantize_block(kernels, rows.clone(), (k0, k1), block)
            })
        });
    });
    transpose_segments(layers, n_tok, &scratch[..total], out);
}

/// `out (n_tok, rows)` = the transpose of the kernels' `src (rows, n_tok)`, 16 tokens per team
/// task, 16 × 16 floats at a time through a local tile: 16 line reads, then 16 line writes.
/// Writing each element straight to `out` put 16 consecutive stores `rows·4` bytes apart, the
/// same L1 set for 1024- and 4096-row outputs, and the transposes took ~9% of an int8 prefill.
fn transpose_into(src: &[f32], n_tok: usize, rows: usize, out: &mut [f32]) {
    const TOKENS_PER_TASK: usize = 16;
    const ROWS_PER_TILE: usize = 16;
    Team::current().for_each_chunk_mut(out, TOKENS_PER_TASK * rows, |i, out| {
        let (t0, nt) = (i * TOKENS_PER_TASK, out.len() / rows);
        let mut tile = [[0f32; TOKENS_PER_TASK]; ROWS_PER_TILE];
        for r0 in (0..rows).step_by(ROWS_PER_TILE) {
            let nr = (rows - r0).min(ROWS_PER_TILE);
            for (r, line) in tile[..nr].iter_mut().enumerate() {
                let at = (r0 + r) * n_tok + t0;
                // A whole line is a fixed-size copy (four vector moves, not a memmove call).
                if nt == TOKENS_PER_TASK {
                    *line = src[at..at + TOKENS_PER_TASK].try_into().expect("16 floats");
                } else {
                    line[..nt].copy_from_slice(&src[at..at + nt]);
                }
            }
            for t in 0..nt {
                let dst = &mut out[t * rows + r0..t * rows + r0 + nr];
                for (d, line) in dst.iter_mut().zip(&tile) {
                    *d = line[t];
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::transpose_into;

    /// Shapes around the 16-token tasks and 16-row tiles, against the index definition.
    #[test]
    fn transpose_matches_definition() {
        for (rows, n_tok) in [(1, 2), (15, 17), (16, 16), (33, 40), (40, 33), (1024, 3)] {
            let src: Vec<f32> = (0..rows * n_tok).map(|i| i as f32).collect();
            let mut out = vec![f32::NAN; rows * n_tok];
            transpose_into(&src, n_tok, rows, &mut out);
            for r in 0..rows {
                for t in 0..n_tok {
                    assert_eq!(
                        out[t * rows + r],
                        src[r * n_tok + t],
                        "{rows}×{n_tok} at ({r}, {t})"
                    );
                }
            }
        }
    }
}

//! Running under a memory budget (`LoadOptions::max_memory`): layers that do not fit are
//! streamed from the files, with identical results.

use nano_infer_offload::mapped_resident_bytes;
use nano_infer_qwen3::{AwqCacheDir, LoadOptions, Model};
use std::path::PathBuf;

mod common;
use common::{argmax, fixture_dir as fixture, ids, reference, TempDir};

fn prompts(name: &str) -> Vec<(Vec<u32>, Vec<u32>)> {
    reference(name)["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (ids(&p["input_ids"]), ids(&p["greedy_ids"])))
        .collect()
}

/// "R of N layers resident" from the report.
fn resident_layers(report: &str) -> (usize, usize) {
    let words: Vec<&str> = report.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "layers").unwrap();
    (
        words[at - 3].parse().unwrap(),
        words[at - 1].parse().unwrap(),
    )
}

/// The largest budget (in 1% steps of the file size, up to 10× it: on these tiny models the
/// reserved activation buffers outweigh the weights) under which some layers stream and some
/// stay resident: layers really move, and the resident path is exercised too.
fn streaming_budget(
    dir: &PathBuf,
    ctx: usize,
    need_resident: bool,
    base: &LoadOptions,
) -> (u64, String) {
    let file = Model::load(dir, base).unwrap().file_bytes() as u64;
    for percent in (1..1000).rev() {
        let budget = file * percent / 100;
        let options = LoadOptions {
            max_memory: Some(budget),
            ctx_size: Some(ctx),
            ..base.clone()
        };
        if let Ok(model) = Model::load(dir, &options) {
            let report = model.offload_report().unwrap().to_owned();
            let (resident, total) = resident_layers(&report);
            if resident < total && (resident > 0 || !need_resident) {
                return (budget, report);
            }
        }
    }
    panic!("no budget streams part of {}", dir.display());
}

/// `need_resident`: some layers must stay resident too (needs more than the two layers the
/// streaming window holds). Returns the budgeted model.
fn check_same_results(name: &str, need_resident: bool) -> Model {
    check_same_results_with(name, need_resident, &LoadOptions::default())
}

/// [`check_same_results`] with other load options than the defaults (`base`).
fn check_same_results_with(name: &str, need_resident: bool, base: &LoadOptions) -> Model {
    let dir = fixture(name);
    let ctx = 256;
    let (budget, report) = streaming_budget(&dir, ctx, need_resident, base);
    let plain = Model::load(
        &dir,
        &LoadOptions {
            ctx_size: Some(ctx),
            ..base.clone()
        },
    )
    .unwrap();
    let budgeted = Model::load(
        &dir,
        &LoadOptions {
            max_memory: Some(budget),
            ctx_size: Some(ctx),
            ..base.clone()
        },
    )
    .unwrap();
    assert!(report.contains("streamed"), "{report}");
    for (prompt, greedy) in prompts(name) {
        let (mut a, mut b) = (plain.session(), budgeted.session());
        let la = a.prefill(&prompt).unwrap().to_vec();
        let lb = b.prefill(&prompt).unwrap().to_vec();
        // Streaming changes where the bytes come from, never the arithmetic: bit-identical.
        assert_eq!(la, lb, "{name}: prefill logits differ under a budget");
        let mut tokens = vec![argmax(&lb)];
        while tokens.len() < greedy.len() {
            let next = *tokens.last().unwrap();
            let la = a.decode(next).unwrap().to_vec();
            let lb = b.decode(next).unwrap();
            assert_eq!(la, lb, "{name}: decode logits differ under a budget");
            tokens.push(argmax(lb));
        }
        assert_eq!(tokens, greedy, "{name}: greedy continuation under a budget");
    }
    budgeted
}

#[test]
fn bf16_streams_with_identical_results() {
    check_same_results("bf16", true);
}

#[test]
fn fp8_streams_with_identical_results() {
    // Two layers: the window holds both, so both stream.
    check_same_results("fp8_block", false);
}

/// Greedy decode of 6 tokens after a 3-token prompt; after each, once the prefetch of the
/// next token's first streamed layer is done, the bytes of `path`'s mapping the process holds
/// (no readings where `/proc/self/smaps` cannot tell).
fn mapped_rss_while_decoding(model: &Model, path: &str) -> Vec<u64> {
    let mut session = model.session();
    let mut next = argmax(session.prefill(&[1, 2, 3]).unwrap());
    (0..6)
        .filter_map(|_| {
            next = argmax(session.decode(next).unwrap());
            model.wait_for_prefetch();
            mapped_resident_bytes(std::path::Path::new(path))
        })
        .collect()
}

/// Without a repack cache, AWQ layers are repacked at load; under a budget the streamed ones
/// move to a spill file and stream from there, with bit-identical results. The plan counts
/// them as streamed layer bytes (before, AWQ was counted as always resident), and the process
/// really holds no more of the spill file than the streaming window.
#[test]
fn awq_streams_from_a_spill_file_with_identical_results() {
    let no_cache = LoadOptions {
        awq_cache: AwqCacheDir::Off,
        ..LoadOptions::default()
    };
    let model = check_same_results_with("awq", true, &no_cache);
    let report = model.offload_report().unwrap().to_owned();
    let plan = model.residency_plan().unwrap();
    let streamed = plan.streamed_layers();
    assert!(!streamed.is_empty() && streamed.len() < 4, "{report}");
    let layers = &plan.inputs().layers;
    // Every layer is movable: the repacked AWQ bytes are layer bytes, not fixed ones.
    assert!(layers.iter().all(|&b| b > 0), "{layers:?}");
    let lm_head = (model.vocab_size() * model.config().hidden_size * 2) as u64; // tied BF16
    assert_eq!(
        layers.iter().sum::<u64>(),
        model.bytes_per_token() as u64 - lm_head,
        "the layers' planned bytes are all of their repacked weights"
    );
    let streamed_bytes: u64 = streamed.iter().map(|&i| layers[i]).sum();
    assert_eq!(
        plan.resident_weight_bytes(),
        plan.inputs().fixed_weights + layers.iter().sum::<u64>() - streamed_bytes,
        "streamed layers do not count as resident"
    );
    let c = model.config();
    let norms = 4 * (c.hidden_size + c.num_hidden_layers * 2 * (c.hidden_size + c.head_dim()));
    assert_eq!(
        plan.inputs().fixed_weights,
        lm_head + norms as u64,
        "fixed weights are the (tied) embedding and the norms only: {report}"
    );

    let path = report
        .split("spill file created as ")
        .nth(1)
        .unwrap_or_else(|| panic!("the report names the spill file: {report}"));
    // Between forward passes every streamed layer has been dropped after use, except the one
    // the prefetch thread is reading in for the next pass: one layer, each of its 21 buffers
    // (3 per projection) rounded up to whole pages. Without the drops all of them would stay.
    let largest = streamed.iter().map(|&i| layers[i]).max().unwrap();
    let bound = largest + 21 * 4096;
    assert!(
        streamed_bytes > bound,
        "the bound is tighter than the spill file ({streamed_bytes} bytes)"
    );
    for rss in mapped_rss_while_decoding(&model, path) {
        assert!(
            rss <= bound,
            "{rss} bytes of the spill file resident, bound {bound}: {report}"
        );
    }
}

#[test]
fn awq_f16_streams_with_identical_results() {
    // Two layers: both stream (from the spill file, there being no cache).
    let no_cache = LoadOptions {
        awq_cache: AwqCacheDir::Off,
        ..LoadOptions::default()
    };
    let model = check_same_results_with("awq_f16", false, &no_cache);
    assert!(
        model.offload_report().unwrap().contains("spill file"),
        "{:?}",
        model.offload_report()
    );
}

/// With the AWQ repack cache, streamed layers read the cache file's map (no spill file), with
/// bit-identical results, and the process holds no more of it than the streaming window plus
/// the resident layers.
#[test]
fn awq_streams_from_the_repack_cache_with_identical_results() {
    let cache = TempDir::new("offload-awq-cache");
    let options = LoadOptions {
        awq_cache: AwqCacheDir::Dir(cache.path().into()),
        ..LoadOptions::default()
    };
    let model = check_same_results_with("awq", true, &options);
    let report = model.offload_report().unwrap().to_owned();
    assert!(!report.contains("spill file"), "{report}");
    let path = report
        .split("read from the AWQ repack cache ")
        .nth(1)
        .unwrap_or_else(|| panic!("the report names the cache file: {report}"));
    let plan = model.residency_plan().unwrap();
    let layers = &plan.inputs().layers;
    let (streamed, resident): (Vec<usize>, Vec<usize>) =
        (0..layers.len()).partition(|&i| plan.streamed_layers().contains(&i));
    let largest = streamed.iter().map(|&i| layers[i]).max().unwrap();
    let resident_bytes: u64 = resident.iter().map(|&i| layers[i]).sum();
    // Buffers are not page-aligned in the cache (the format tiles its data exactly): each of a
    // layer's 21 buffers may share a page at either end with its neighbours.
    let bound = resident_bytes + largest + 2 * 21 * 4096;
    assert!(
        layers.iter().sum::<u64>() > bound,
        "the bound is tighter than the cached layers ({layers:?})"
    );
    for rss in mapped_rss_while_decoding(&model, path) {
        assert!(
            rss <= bound,
            "{rss} bytes of the cache resident, bound {bound}: {report}"
        );
        // The resident layers are read every token: the mapping is the one measured.
        assert!(
            rss >= resident_bytes,
            "{rss} bytes of {path} resident: {report}"
        );
    }
}

#[test]
fn budget_too_small_is_a_clear_error() {
    let err = Model::load(
        fixture("bf16"),
        &LoadOptions {
            max_memory: Some(1000),
            ..LoadOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("memory budget") && err.contains("KV cache"),
        "{err}"
    );
}

#[test]
fn no_budget_no_report_when_the_model_fits() {
    let model = Model::load(fixture("bf16"), &LoadOptions::default()).unwrap();
    assert!(model.offload_report().is_none());
    let generous = LoadOptions {
        max_memory: Some(1 << 40),
        ..LoadOptions::default()
    };
    let report = Model::load(fixture("bf16"), &generous)
        .unwrap()
        .offload_report()
        .unwrap()
        .to_owned();
    let (resident, total) = resident_layers(&report);
    assert_eq!(resident, total, "{report}");
}

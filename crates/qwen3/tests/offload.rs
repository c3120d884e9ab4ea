//! Running under a memory budget (`LoadOptions::max_memory`): layers that do not fit are
//! streamed from the files, with identical results.

use nano_infer_qwen3::{LoadOptions, Model};
use std::path::PathBuf;

mod common;
use common::{argmax, fixture_dir as fixture, ids, reference};

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
fn streaming_budget(dir: &PathBuf, ctx: usize, need_resident: bool) -> (u64, String) {
    let file = Model::load(dir, &LoadOptions::default())
        .unwrap()
        .file_bytes() as u64;
    for percent in (1..1000).rev() {
        let budget = file * percent / 100;
        let options = LoadOptions {
            max_memory: Some(budget),
            ctx_size: Some(ctx),
            ..LoadOptions::default()
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
/// streaming window holds).
fn check_same_results(name: &str, need_resident: bool) {
    let dir = fixture(name);
    let ctx = 256;
    let (budget, report) = streaming_budget(&dir, ctx, need_resident);
    let plain = Model::load(
        &dir,
        &LoadOptions {
            ctx_size: Some(ctx),
            ..LoadOptions::default()
        },
    )
    .unwrap();
    let budgeted = Model::load(
        &dir,
        &LoadOptions {
            max_memory: Some(budget),
            ctx_size: Some(ctx),
            ..LoadOptions::default()
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

//! Streaming layers of a real memory-mapped file: bytes stay right after pages are dropped and
//! read back, and the process's resident memory stays within the plan.

use nano_infer_offload::{mapped_resident_bytes, PlanInputs, ResidencyPlan, Streamer};
use nano_infer_tensor::WeightStore;
use std::collections::HashMap;

const LAYERS: usize = 8;
const LAYER_BYTES: usize = 8 << 20;

/// Resident memory of file-backed pages of this process (`RssFile` in /proc/self/status).
fn rss_file() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("RssFile:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

fn write_model(dir: &std::path::Path) {
    let data: Vec<Vec<u8>> = (0..LAYERS)
        .map(|i| {
            (0..LAYER_BYTES)
                .map(|j| ((i * 31 + j * 7) % 251) as u8)
                .collect()
        })
        .collect();
    let views: HashMap<String, safetensors::tensor::TensorView<'_>> = data
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            let view = safetensors::tensor::TensorView::new(
                safetensors::Dtype::U8,
                vec![LAYER_BYTES],
                bytes,
            )
            .unwrap();
            (format!("layer{i}"), view)
        })
        .collect();
    safetensors::serialize_to_file(&views, None, &dir.join("model.safetensors")).unwrap();
}

#[test]
fn streamed_layers_read_back_identical_and_stay_within_budget() {
    let dir = std::env::temp_dir().join(format!("nano-infer-offload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    write_model(&dir);
    let store = WeightStore::open_dir(&dir).unwrap();
    let layers: Vec<Vec<_>> = (0..LAYERS)
        .map(|i| vec![store.get(&format!("layer{i}")).unwrap()])
        .collect();
    let checksums: Vec<u64> = layers
        .iter()
        .map(|l| l[0].bytes().iter().map(|&b| b as u64).sum())
        .collect();
    for l in &layers {
        l[0].advise(nano_infer_tensor::Paging::DontNeed).unwrap();
    }

    // Room for 2 resident layers plus the 2-layer window: 6 layers stream.
    let budget = 4 * LAYER_BYTES as u64;
    let plan = ResidencyPlan::new(PlanInputs {
        budget,
        fixed_weights: 0,
        layers: vec![LAYER_BYTES as u64; LAYERS],
        kv_cache: 0,
        activations: 0,
    })
    .unwrap();
    assert_eq!(plan.streamed_layers(), (2..LAYERS).collect::<Vec<_>>());
    let streamer = Streamer::new(layers.clone(), plan);

    let before = rss_file();
    let mut peak = 0;
    for _token in 0..3 {
        for (i, layer) in layers.iter().enumerate() {
            streamer.before_layer(i);
            let sum: u64 = layer[0].bytes().iter().map(|&b| b as u64).sum();
            assert_eq!(sum, checksums[i], "layer {i} reads back the same bytes");
            if let (Some(b), Some(now)) = (before, rss_file()) {
                peak = peak.max(now.saturating_sub(b));
            }
            streamer.after_layer(i);
        }
    }
    drop(streamer);
    if before.is_some() {
        // The file-backed resident set grew by at most the budget (2 resident layers, the layer
        // computing and the one prefetching), plus one layer of slack for the page-granular
        // accounting of the file's header and neighbours.
        let bound = budget + LAYER_BYTES as u64;
        assert!(
            peak <= bound,
            "file RSS grew by {peak} bytes, bound {bound}"
        );
        assert!(
            peak >= 2 * LAYER_BYTES as u64,
            "the resident layers really are resident ({peak})"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Layers much smaller than a page-cache folio, in a file written with one `write` (so the
/// kernel may cache it in large folios, which a fault maps whole): between forward passes
/// the process holds the resident layers and the prefetched one, and of the dropped layers
/// only the pages they share with those at their ends, whatever the folio size.
#[test]
fn dropped_layers_stay_dropped_when_they_share_folios_with_loaded_ones() {
    const SMALL: usize = 96 << 10;
    const N: usize = 16;
    let dir = std::env::temp_dir().join(format!("nano-infer-offload-small-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data: Vec<Vec<u8>> = (0..N)
        .map(|i| (0..SMALL).map(|j| ((i * 13 + j) % 253) as u8).collect())
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::U8, vec![SMALL], bytes)
                    .unwrap();
            (format!("layer{i:02}"), view)
        })
        .collect();
    let file = dir.join("model.safetensors");
    std::fs::write(&file, safetensors::serialize(views, None).unwrap()).unwrap();

    let store = WeightStore::open_dir(&dir).unwrap();
    let layers: Vec<Vec<_>> = (0..N)
        .map(|i| vec![store.get(&format!("layer{i:02}")).unwrap()])
        .collect();
    let plan = ResidencyPlan::new(PlanInputs {
        budget: 4 * SMALL as u64,
        fixed_weights: 0,
        layers: vec![SMALL as u64; N],
        kv_cache: 0,
        activations: 0,
    })
    .unwrap();
    assert_eq!(plan.streamed_layers(), (2..N).collect::<Vec<_>>());
    let streamer = Streamer::new(layers.clone(), plan);
    // Two resident layers and the prefetched one; each tensor may share a page at either end
    // with a neighbour, and the header's page.
    let bound = (3 * SMALL + (2 * N + 1) * 4096) as u64;
    let mut readings = Vec::new();
    for _pass in 0..3 {
        for (i, layer) in layers.iter().enumerate() {
            streamer.before_layer(i);
            let sum: u64 = layer[0].bytes().iter().map(|&b| b as u64).sum();
            let expected: u64 = data[i].iter().map(|&b| b as u64).sum();
            assert_eq!(sum, expected, "layer {i} reads back the same bytes");
            streamer.after_layer(i);
        }
        streamer.wait_until_idle();
        readings.extend(mapped_resident_bytes(&file));
    }
    drop(streamer);
    for rss in readings {
        assert!(
            rss <= bound,
            "{rss} bytes of {} resident, bound {bound}",
            file.display()
        );
        assert!(
            rss >= 2 * SMALL as u64,
            "the resident layers are resident ({rss})"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

//! The server's Prometheus metrics, through the `metrics` crate's recorder and exporter (one
//! recorder per server, not the process-global one, so several servers — tests, replicas in one
//! process — keep separate counts). Handles are registered once and updated lock-free.

use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use std::collections::HashMap;
use std::sync::Mutex;

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// Buckets for the latency histograms, in seconds (a 4B model decodes a token in 0.1-1 s on a
/// laptop, a tiny one in a millisecond).
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Every metric the server exports.
pub struct Metrics {
    recorder: PrometheusRecorder,
    requests: Mutex<HashMap<(&'static str, u16), Counter>>,
    pub prompt_tokens: Counter,
    pub completion_tokens: Counter,
    pub cached_prompt_tokens: Counter,
    pub queue_length: Gauge,
    pub running: Gauge,
    pub kv_blocks_used: Gauge,
    pub kv_blocks_total: Gauge,
    pub time_to_first_token: Histogram,
    pub inter_token: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let counter =
            |name: &'static str| recorder.register_counter(&Key::from_name(name), &METADATA);
        let gauge = |name: &'static str| recorder.register_gauge(&Key::from_name(name), &METADATA);
        let histogram =
            |name: &'static str| recorder.register_histogram(&Key::from_name(name), &METADATA);
        let m = Self {
            prompt_tokens: counter("nano_infer_prompt_tokens_total"),
            completion_tokens: counter("nano_infer_completion_tokens_total"),
            cached_prompt_tokens: counter("nano_infer_prefix_cache_hit_tokens_total"),
            queue_length: gauge("nano_infer_queue_length"),
            running: gauge("nano_infer_running_sequences"),
            kv_blocks_used: gauge("nano_infer_kv_blocks_used"),
            kv_blocks_total: gauge("nano_infer_kv_blocks_total"),
            time_to_first_token: histogram("nano_infer_time_to_first_token_seconds"),
            inter_token: histogram("nano_infer_inter_token_latency_seconds"),
            requests: Mutex::new(HashMap::new()),
            recorder,
        };
        m.describe();
        m
    }

    fn describe(&self) {
        let r = &self.recorder;
        for (name, help) in [
            (
                "nano_infer_requests_total",
                "HTTP requests by endpoint and status",
            ),
            (
                "nano_infer_prompt_tokens_total",
                "prompt tokens of finished requests",
            ),
            ("nano_infer_completion_tokens_total", "generated tokens"),
            (
                "nano_infer_prefix_cache_hit_tokens_total",
                "prompt tokens served by the prefix cache",
            ),
        ] {
            r.describe_counter(name.into(), None, help.into());
        }
        for (name, help) in [
            ("nano_infer_queue_length", "requests waiting for a slot"),
            (
                "nano_infer_running_sequences",
                "requests being prefilled or decoded",
            ),
            (
                "nano_infer_kv_blocks_used",
                "KV pool blocks in use (running and cached)",
            ),
            ("nano_infer_kv_blocks_total", "KV pool blocks in all"),
        ] {
            r.describe_gauge(name.into(), None, help.into());
        }
        for (name, help) in [
            (
                "nano_infer_time_to_first_token_seconds",
                "from a request's arrival to its first token",
            ),
            (
                "nano_infer_inter_token_latency_seconds",
                "between consecutive tokens of a stream",
            ),
        ] {
            r.describe_histogram(name.into(), Some(metrics::Unit::Seconds), help.into());
        }
    }

    /// Counts one answered request.
    pub fn request(&self, endpoint: &'static str, status: u16) {
        let mut map = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        map.entry((endpoint, status))
            .or_insert_with(|| {
                let labels = vec![
                    Label::new("endpoint", endpoint),
                    Label::new("status", status.to_string()),
                ];
                self.recorder.register_counter(
                    &Key::from_parts("nano_infer_requests_total", labels),
                    &METADATA,
                )
            })
            .increment(1);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.recorder.handle().render()
    }
}

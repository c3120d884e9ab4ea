//! `qwen3-infer serve`: the flags into a `nano_infer_server::ServerConfig`, then the server runs
//! until SIGINT/SIGTERM. All HTTP lives in the server crate.

use crate::args::{self, ServeArgs};
use crate::{hub, load};
use anyhow::{Context, Result};
use nano_infer_generate::Generator;
use nano_infer_qwen3::EngineOptions;
use nano_infer_server::ServerConfig;
use std::process::ExitCode;

pub fn run(args: &ServeArgs) -> Result<ExitCode> {
    let parallel = args::positive("--parallel", args.parallel)?;
    let prefill_chunk = args::positive("--prefill-chunk", args.prefill_chunk)?;
    let ctx_size = args
        .ctx_size
        .map(|n| args::positive("--ctx-size", n))
        .transpose()?;
    let kv_budget = nano_infer_offload::parse_size(&args.kv_budget)
        .map_err(|e| anyhow::anyhow!("--kv-budget: {e}"))?;
    let dir = hub::resolve(args.model.model.as_deref())?;
    load::init_threads(&args.engine)?;
    let options = load::load_options(&args.engine, ctx_size)?;
    let config = ServerConfig {
        host: args.host.clone(),
        port: args.port,
        api_key: args.api_key.clone(),
        alias: args.alias.clone(),
        engine: EngineOptions {
            max_batch: parallel,
            kv_budget_bytes: usize::try_from(kv_budget).unwrap_or(usize::MAX),
            ..EngineOptions::default()
        },
        prefill_chunk,
        queue_limit: args.queue,
        handle_signals: true,
        verbose: args.engine.verbose > 0,
        ..ServerConfig::default()
    };
    let model_dir = dir.clone();
    let (verbose, budget_given) = (args.engine.verbose > 0, options.max_memory.is_some());
    let handle = nano_infer_server::start(config, move || {
        let generator = Generator::load(&model_dir, &options, &mut |_| {})?;
        load::announce(&generator, verbose, budget_given);
        Ok(generator)
    })?;
    note!(
        "listening on http://{}/ (a chat page there; loading {}; /health says when it is ready; Ctrl-C stops)",
        handle.addr(),
        dir.display()
    );
    handle
        .wait()
        .with_context(|| format!("serving {}", dir.display()))?;
    note!("server stopped");
    Ok(ExitCode::SUCCESS)
}

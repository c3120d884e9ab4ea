#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod api;
mod engine;
mod error;
mod metrics;
mod webui;

pub use error::ApiError;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use engine::Engine;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use nano_infer_generate::{CancelToken, GenerateError, Generator};
use nano_infer_qwen3::EngineOptions;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::watch;
use tower_http::limit::RequestBodyLimitLayer;

/// How a server runs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to bind (`127.0.0.1`: this machine only; `0.0.0.0` to serve a network).
    pub host: String,
    /// Port (0: any free one; [`ServerHandle::addr`] tells which).
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on every endpoint but `/health` and the chat page
    /// (`/` and its assets).
    pub api_key: Option<String>,
    /// The model's name in `/v1/models` and answers (default: the model folder's name).
    pub alias: Option<String>,
    /// The batch engine: `max_batch` requests decode together (`--parallel`), `kv_budget_bytes`
    /// bounds the KV pool, and the prefix cache.
    pub engine: EngineOptions,
    /// Most prompt tokens fed per engine step while other requests decode; the batcher feeds
    /// fewer when that would slow their steps past `generate::PACED_STEP_RATIO` (alone, a
    /// prompt is fed in `engine.prefill_chunk` pieces).
    pub prefill_chunk: usize,
    /// Requests that may wait for a slot beyond the `max_batch` running ones.
    pub queue_limit: usize,
    /// Largest request body in bytes (413 past it).
    pub max_body_bytes: usize,
    /// How long a connection may take to send a request's headers (and may idle between
    /// requests) before it is closed.
    pub header_timeout: Duration,
    /// On shutdown, how long running streams may go on before they are cancelled.
    pub shutdown_grace: Duration,
    /// Stop on SIGINT/SIGTERM (the CLI); off for servers embedded in tests.
    pub handle_signals: bool,
    /// Log each request's prompt on stderr (never otherwise).
    pub verbose: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            api_key: None,
            alias: None,
            engine: EngineOptions::default(),
            prefill_chunk: 8,
            queue_limit: 64,
            max_body_bytes: 8 << 20,
            header_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            handle_signals: false,
            verbose: false,
        }
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The address could not be bound (in use, not local, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// `host:port` as configured.
        addr: String,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The runtime or a thread could not start.
    #[error("starting the server: {0}")]
    Io(#[from] std::io::Error),
    /// The model did not load (the server stops: it would never become ready).
    #[error(transparent)]
    Load(#[from] GenerateError),
}

/// What the handlers share.
pub(crate) struct App {
    config: ServerConfig,
    loaded: OnceLock<Loaded>,
    metrics: Arc<metrics::Metrics>,
    shutting_down: AtomicBool,
    next_id: AtomicU64,
    /// Every request's cancel token, to end what is left when the grace period is over.
    cancels: Mutex<Vec<CancelToken>>,
}

/// The model once loaded, and the engine serving it.
pub(crate) struct Loaded {
    generator: Generator,
    engine: Engine,
    model_name: String,
    created: u64,
}

impl App {
    fn loaded(&self) -> Result<&Loaded, ApiError> {
        self.loaded
            .get()
            .ok_or_else(|| ApiError::unavailable("the model is still loading", Some(1)))
    }

    /// Remembers a request's token for shutdown; finished requests' tokens are dropped as new
    /// ones come (a cancelled token of a finished request is harmless).
    fn track(&self, cancel: &CancelToken) {
        let mut list = self.cancels.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|c| !c.is_cancelled());
        list.push(cancel.clone());
    }

    fn cancel_all(&self) {
        for c in self
            .cancels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            c.cancel();
        }
    }
}

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: std::thread::JoinHandle<Result<(), ServerError>>,
}

impl ServerHandle {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, drains (see [`ServerConfig::shutdown_grace`]) and waits for the end.
    pub fn shutdown(self) -> Result<(), ServerError> {
        let _ = self.stop.send(true);
        self.wait()
    }

    /// Waits until the server stops (a signal, a failed load, [`ServerHandle::shutdown`]).
    pub fn wait(self) -> Result<(), ServerError> {
        self.thread
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the server thread panicked").into()))
    }
}

/// Binds the address, then serves on a thread of its own while `load` loads the model on
/// another; `/health` is 503 until it is done. A failed load stops the server with its error.
pub fn start(
    config: ServerConfig,
    load: impl FnOnce() -> Result<Generator, GenerateError> + Send + 'static,
) -> Result<ServerHandle, ServerError> {
    let addr = format!("{}:{}", config.host, config.port);
    let listener = std::net::TcpListener::bind(&addr).map_err(|source| ServerError::Bind {
        addr: addr.clone(),
        source,
    })?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let (stop, stop_rx) = watch::channel(false);
    let app = Arc::new(App {
        config,
        loaded: OnceLock::new(),
        metrics: Arc::new(metrics::Metrics::new()),
        shutting_down: AtomicBool::new(false),
        next_id: AtomicU64::new(0),
        cancels: Mutex::new(Vec::new()),
    });
    let thread = std::thread::Builder::new()
        .name("nano-infer-http".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(serve(listener, app, load, stop_rx))
        })?;
    Ok(ServerHandle {
        addr: local,
        stop,
        thread,
    })
}

async fn serve(
    listener: std::net::TcpListener,
    app: Arc<App>,
    load: impl FnOnce() -> Result<Generator, GenerateError> + Send + 'static,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    // Load off the runtime; a failure ends the server.
    let (load_failed_tx, mut load_failed) = tokio::sync::oneshot::channel::<GenerateError>();
    let loader_app = Arc::clone(&app);
    std::thread::spawn(move || match load().and_then(|g| loaded(&loader_app, g)) {
        Ok(l) => {
            let _ = loader_app.loaded.set(l);
        }
        Err(e) => {
            let _ = load_failed_tx.send(e);
        }
    });

    let router = router(Arc::clone(&app));
    let mut conn = ConnBuilder::new(TokioExecutor::new());
    conn.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(app.config.header_timeout);
    let graceful = GracefulShutdown::new();
    let signals = shutdown_signal(app.config.handle_signals);
    tokio::pin!(signals);
    let mut failure = None;
    let mut loading = true;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                // Streamed tokens are small writes a step apart: Nagle's algorithm would hold
                // one back until the client acknowledges the previous one.
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(router.clone());
                let connection = conn.serve_connection_with_upgrades(TokioIo::new(stream), service);
                let connection = graceful.watch(connection.into_owned());
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
            _ = stop.changed() => break,
            _ = &mut signals => break,
            // The loader drops its sender when it succeeds: only a sent error stops us.
            e = &mut load_failed, if loading => match e {
                Ok(e) => {
                    failure = Some(e);
                    break;
                }
                Err(_) => loading = false,
            },
        }
    }
    // Draining: no new requests; running streams get the grace period, then are cancelled.
    app.shutting_down.store(true, Ordering::SeqCst);
    drop(listener);
    let drained = graceful.shutdown();
    tokio::pin!(drained);
    tokio::select! {
        _ = &mut drained => {}
        _ = tokio::time::sleep(app.config.shutdown_grace) => {
            app.cancel_all();
            // A cancelled request ends within one engine step.
            let _ = tokio::time::timeout(Duration::from_secs(10), drained).await;
        }
    }
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Starts the engine over a loaded generator.
fn loaded(app: &App, generator: Generator) -> Result<Loaded, GenerateError> {
    let model_name = app.config.alias.clone().unwrap_or_else(|| {
        let dir = generator.model().dir();
        dir.file_name().map_or_else(
            || dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    });
    let engine = Engine::start(
        generator.clone(),
        app.config.engine.clone(),
        app.config.prefill_chunk,
        Arc::clone(&app.metrics),
    )?;
    Ok(Loaded {
        generator,
        engine,
        model_name,
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    })
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(api::chat))
        .route("/v1/completions", post(api::completions))
        .route("/v1/models", get(api::models))
        .route("/health", get(api::health))
        .route("/metrics", get(api::metrics))
        .route("/tokenize", post(api::tokenize))
        .route("/detokenize", post(api::detokenize))
        .route("/", get(webui::index))
        .route("/webui/{name}", get(webui::asset))
        .fallback(api::not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&app), guard))
        .layer(RequestBodyLimitLayer::new(app.config.max_body_bytes))
        .with_state(app)
}

/// Every request: the API key, then the answer's status into the metrics. `/health` and the
/// chat page need no key: a probe must see readiness, and the page (which holds no data) must
/// load to ask the user for the key it then sends with each API call.
async fn guard(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let endpoint = endpoint_label(request.uri().path());
    let public = endpoint == "health" || webui::is_page_path(request.uri().path());
    let response = match &app.config.api_key {
        Some(key) if !public && !authorized(&request, key) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "a valid API key is required: Authorization: Bearer KEY",
            None,
        )
        .into_response(),
        _ => next.run(request).await,
    };
    app.metrics.request(endpoint, response.status().as_u16());
    response
}

fn authorized(request: &Request, key: &str) -> bool {
    let given = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    constant_time_eq(given.as_bytes(), key.as_bytes())
}

/// Equality whose time does not depend on where the inputs differ (only on their lengths), so
/// a key cannot be guessed byte by byte from response times.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A fixed set of labels for the metrics (a path from a client must not create series).
fn endpoint_label(path: &str) -> &'static str {
    match path {
        "/v1/chat/completions" => "chat_completions",
        "/v1/completions" => "completions",
        "/v1/models" => "models",
        "/health" => "health",
        "/metrics" => "metrics",
        "/tokenize" => "tokenize",
        "/detokenize" => "detokenize",
        p if webui::is_page_path(p) => "webui",
        _ => "other",
    }
}

/// SIGINT or SIGTERM, when asked for; otherwise never.
async fn shutdown_signal(enabled: bool) {
    if !enabled {
        return std::future::pending().await;
    }
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}

//! serve: genret over HTTP, with a dynamic batcher.
//!
//! `POST /search` takes `{"query", "k", "mode", "beam", "ngrams_per_step", "explain", "k1",
//! "b"}` (all but `query` optional) and answers with the JSON of `genret search --json`
//! (`--explain`);
//! `GET /health` says the server is up; `GET /stats`
//! reports the index, the model, the modes served, uptime, request counts and latency
//! percentiles. Any mode whose methods the [`Searcher`] has loaded is served.
//!
//! One worker thread owns the searcher. Requests go through a bounded queue; the worker takes
//! the first waiting request, then keeps collecting for at most `max_wait` or until
//! `max_batch` requests are in hand, and decodes requests with equal options in one batched
//! beam search: under load, many queries cost little more than one (see `docs/BENCHMARKS.md`).
//! A request that waits longer than `timeout` gets a 504 and is dropped from the queue
//! unanswered. Slow, idle and excessive clients are bounded by [`conn`]'s timeouts and
//! connection cap; every error is answered with `{"error": "..."}`.
//!
//! ```no_run
//! # async fn demo() -> genret::Result<()> {
//! use genret::index::Index;
//! use genret::serve::{ServeConfig, Server};
//!
//! let searcher = genret::search::Searcher::new(Index::open("cranfield.idx")?)?;
//! let server = Server::start(searcher, ServeConfig::default())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await.unwrap();
//! server.serve(listener, std::future::pending()).await?;
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::future::Future;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod conn;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::retrieve::{Method, Mode, SearchOptions};
use crate::search::{SearchResult, Searcher};

/// Server limits and batching. Every limit is enforced with a 4xx answer that says which.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Most requests decoded together; 1 turns dynamic batching off.
    pub max_batch: usize,
    /// How long the worker waits for more requests once it holds one.
    pub max_wait: Duration,
    /// Requests waiting beyond this many get 503.
    pub queue: usize,
    /// A request not answered within this gets 504.
    pub timeout: Duration,
    /// Longest query in characters (the model reads at most `defaults.max_query_len` tokens).
    pub max_query_chars: usize,
    pub max_k: usize,
    pub max_beam: usize,
    pub max_ngrams_per_step: usize,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Longest wait for a request's head, from when the connection is ready for one: ends
    /// unfinished headers and idle keep-alive connections alike.
    pub header_timeout: Duration,
    /// Longest wait for a request's whole body (408 after it).
    pub body_timeout: Duration,
    /// Most connections open at once; one more is answered 503 and closed. Also kept below
    /// the process's open-file limit.
    pub max_connections: usize,
    /// Largest request head (request line and headers); a larger one is answered 431.
    pub max_header_bytes: usize,
    /// Options used where a request leaves them out.
    pub defaults: SearchOptions,
}

impl Default for ServeConfig {
    fn default() -> ServeConfig {
        ServeConfig {
            max_batch: 16,
            max_wait: Duration::from_millis(5),
            queue: 1024,
            timeout: Duration::from_secs(30),
            max_query_chars: 1000,
            max_k: 1000,
            max_beam: 100,
            max_ngrams_per_step: 1000,
            max_body_bytes: 16 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_connections: 256,
            max_header_bytes: 16 * 1024,
            defaults: SearchOptions::default(),
        }
    }
}

/// The body of `POST /search`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    pub query: String,
    #[serde(default)]
    pub k: Option<usize>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub beam: Option<usize>,
    /// SEAL: n-grams kept per decoding step ([`SearchOptions::ngrams_per_step`]).
    #[serde(default)]
    pub ngrams_per_step: Option<usize>,
    /// SEAL: also answer the query's weighted terms ([`SearchOptions::explain`]).
    #[serde(default)]
    pub explain: bool,
    /// BM25's parameters ([`crate::retrieve::Bm25Params`]); the defaults where absent.
    #[serde(default)]
    pub k1: Option<f32>,
    #[serde(default)]
    pub b: Option<f32>,
}

/// A started server: the worker thread holds the model; [`Server::serve`] answers HTTP.
pub struct Server {
    state: Arc<Shared>,
}

struct Shared {
    config: ServeConfig,
    jobs: SyncSender<Job>,
    started: Instant,
    info: IndexInfo,
    served: Vec<Method>,
    // Shared with the worker, which must not hold `Shared`: its queue sender would keep the
    // worker alive after the server is gone.
    stats: Arc<Mutex<Counters>>,
}

struct Job {
    query: String,
    options: SearchOptions,
    reply: oneshot::Sender<Result<SearchResult, (StatusCode, String)>>,
}

#[derive(Debug, Clone, Serialize)]
struct IndexInfo {
    path: String,
    bytes: u64,
    docs: usize,
    tokens: u64,
    /// SEAL's model, when served.
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<ModelInfo>,
    /// The methods the server answers with, alone or two fused.
    methods: Vec<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
struct ModelInfo {
    parameters: usize,
    d_model: usize,
    layers: usize,
    vocab: usize,
}

/// Latencies kept for percentiles: the most recent ones, so `/stats` reflects current load.
const LATENCY_WINDOW: usize = 10_000;

#[derive(Default)]
struct Counters {
    requests: u64,
    ok: u64,
    client_errors: u64,
    server_errors: u64,
    batches: u64,
    batched_queries: u64,
    latencies_ms: VecDeque<f64>,
}

/// The body of `GET /stats`.
#[derive(Debug, Serialize)]
struct Stats<'a> {
    index: &'a IndexInfo,
    uptime_s: f64,
    requests: u64,
    ok: u64,
    client_errors: u64,
    server_errors: u64,
    batches: u64,
    mean_batch: f64,
    max_batch: usize,
    max_wait_ms: f64,
    latency_ms: Percentiles,
}

#[derive(Debug, Serialize)]
struct Percentiles {
    window: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

impl Server {
    /// Starts the worker thread, which answers with `searcher`'s methods. Fails if the
    /// searcher has none, if the default mode is not among them, or if the configuration is
    /// out of range.
    pub fn start(searcher: Searcher, config: ServeConfig) -> Result<Server> {
        if config.max_batch == 0
            || config.queue == 0
            || config.max_k == 0
            || config.max_beam == 0
            || config.max_ngrams_per_step == 0
        {
            return Err(Error::InvalidInput(
                "max batch, queue, max k, max beam and max n-grams per step must be at least 1"
                    .into(),
            ));
        }
        let served = searcher.methods();
        if served.is_empty() {
            return Err(Error::InvalidInput(
                "the searcher has no retrieval method to serve".into(),
            ));
        }
        check_served(config.defaults.mode, &served).map_err(Error::InvalidInput)?;
        let index = searcher.index();
        let info = IndexInfo {
            // The directory's name only: an absolute path tells clients about the machine.
            path: index
                .dir
                .path()
                .file_name()
                .map_or_else(|| "index".into(), |n| n.to_string_lossy().into_owned()),
            bytes: index.dir.bytes(),
            docs: index.docs.len(),
            tokens: index.stats.tokens,
            model: searcher.seal().map(|seal| {
                let c = &seal.model().config;
                ModelInfo {
                    parameters: c.num_params(),
                    d_model: c.d_model,
                    layers: c.num_layers,
                    vocab: c.vocab_size,
                }
            }),
            methods: served.iter().map(|m| m.name()).collect(),
        };
        let (jobs, queue) = mpsc::sync_channel::<Job>(config.queue);
        let stats = Arc::new(Mutex::new(Counters::default()));
        let (worker_stats, max_batch, max_wait) =
            (Arc::clone(&stats), config.max_batch, config.max_wait);
        let stem = config.defaults.seal.stem;
        let state = Arc::new(Shared {
            config,
            jobs,
            started: Instant::now(),
            info,
            served,
            stats,
        });
        std::thread::Builder::new()
            .name("genret-search".into())
            .spawn(move || {
                // Built now so that the first request does not wait for it; a failure shows
                // in the answers (each search builds it again).
                if stem && let Some(seal) = searcher.seal() {
                    seal.word_forms().ok();
                }
                worker(&searcher, &queue, max_batch, max_wait, &worker_stats);
            })
            .map_err(|e| Error::Internal(format!("cannot start the search thread: {e}")))?;
        Ok(Server { state })
    }

    /// The HTTP routes, for embedding in another axum application.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/search", post(search))
            .route("/health", get(health))
            .route("/stats", get(stats))
            .fallback(not_found)
            .method_not_allowed_fallback(wrong_method)
            .with_state(Arc::clone(&self.state))
    }

    /// Answers HTTP on `listener` until `shutdown` completes; requests in flight finish first.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let config = &self.state.config;
        let limits = conn::Limits {
            header_timeout: config.header_timeout,
            max_connections: config.max_connections.min(open_file_budget()).max(1),
            max_header_bytes: config.max_header_bytes,
        };
        conn::serve(listener, self.router(), limits, shutdown).await;
        Ok(())
    }
}

/// The worker loop: block for one job, gather a batch, answer it; ends when the server is gone.
fn worker(
    searcher: &Searcher,
    queue: &mpsc::Receiver<Job>,
    max_batch: usize,
    max_wait: Duration,
    stats: &Mutex<Counters>,
) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        let deadline = Instant::now() + max_wait;
        while batch.len() < max_batch {
            let left = deadline.saturating_duration_since(Instant::now());
            match queue.recv_timeout(left) {
                Ok(job) => batch.push(job),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        // Clients that gave up (timeout, closed connection) are not worth decoding for.
        batch.retain(|job| !job.reply.is_closed());
        // Requests decode together only with equal options; groups keep arrival order.
        while !batch.is_empty() {
            let options = batch[0].options;
            let (group, rest): (Vec<Job>, Vec<Job>) =
                batch.into_iter().partition(|j| j.options == options);
            batch = rest;
            let queries: Vec<&str> = group.iter().map(|j| j.query.as_str()).collect();
            let options = SearchOptions {
                batch: group.len(),
                ..options
            };
            let answer = searcher.search(&queries, &options);
            {
                let mut stats = stats.lock().unwrap_or_else(|e| e.into_inner());
                stats.batches += 1;
                stats.batched_queries += group.len() as u64;
            }
            match answer {
                Ok(results) => {
                    for (job, result) in group.into_iter().zip(results) {
                        let _ = job.reply.send(Ok(result));
                    }
                }
                Err(e) => {
                    let status = if e.is_user_error() {
                        StatusCode::BAD_REQUEST
                    } else {
                        StatusCode::INTERNAL_SERVER_ERROR
                    };
                    for job in group {
                        let _ = job.reply.send(Err((status, e.to_string())));
                    }
                }
            }
        }
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into() });
    (status, axum::Json(body)).into_response()
}

/// Checks a request against the limits and fills in defaults.
fn validate(
    body: &[u8],
    config: &ServeConfig,
    served: &[Method],
) -> Result<(String, SearchOptions), String> {
    let req: SearchRequest = serde_json::from_slice(body).map_err(|e| {
        format!(
            "invalid request body: {e}; expected JSON like \
             {{\"query\": \"boundary layer\", \"k\": 10, \"mode\": \"seal\", \"beam\": 10}}"
        )
    })?;
    let query = req.query.trim();
    crate::search::check_query(query).map_err(|e| e.to_string())?;
    let chars = query.chars().count();
    if chars > config.max_query_chars {
        return Err(format!(
            "query has {chars} characters; the limit is {}",
            config.max_query_chars
        ));
    }
    // A request's optional number, within 1..=max.
    let bounded = |name: &str, value: Option<usize>, max: usize, default: usize| match value {
        Some(v) if v == 0 || v > max => {
            Err(format!("{name} must be between 1 and {max} (got {v})"))
        }
        Some(v) => Ok(v),
        None => Ok(default),
    };
    let mut options = config.defaults;
    options.k = bounded("k", req.k, config.max_k, options.k)?;
    options.beam = bounded("beam", req.beam, config.max_beam, options.beam)?;
    options.ngrams_per_step = bounded(
        "ngrams_per_step",
        req.ngrams_per_step,
        config.max_ngrams_per_step,
        options.ngrams_per_step,
    )?;
    options.explain = req.explain;
    options.bm25 = crate::retrieve::Bm25Params::new(
        req.k1.unwrap_or(options.bm25.k1),
        req.b.unwrap_or(options.bm25.b),
    )
    .map_err(|e| e.to_string())?;
    if let Some(mode) = &req.mode {
        options.mode = mode.parse::<Mode>().map_err(|e| e.to_string())?;
        check_served(options.mode, served)?;
    }
    Ok((query.to_string(), options))
}

/// Refuses a mode that needs a method the server has not loaded, naming those it has.
fn check_served(mode: Mode, served: &[Method]) -> Result<(), String> {
    match mode.methods().into_iter().find(|m| !served.contains(m)) {
        None => Ok(()),
        Some(missing) => Err(format!(
            "mode {mode} is not served: this server has no {} retriever ({}); it answers with {}",
            missing.name(),
            match missing {
                Method::Seal => "train a model with `genret train INDEX`",
                Method::Dsi => "train one with `genret train INDEX --dsi`",
                Method::Bm25 => "build it with `genret add INDEX bm25` and restart",
                Method::Dense => "start the server with --dense-model",
            },
            served
                .iter()
                .map(|m| m.name())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

async fn search(State(state): State<Arc<Shared>>, body: Body) -> Response {
    let started = Instant::now();
    let response = answer(&state, body).await;
    let status = response.status();
    let mut stats = state.stats.lock().unwrap_or_else(|e| e.into_inner());
    stats.requests += 1;
    if status.is_success() {
        stats.ok += 1;
        if stats.latencies_ms.len() == LATENCY_WINDOW {
            stats.latencies_ms.pop_front();
        }
        stats
            .latencies_ms
            .push_back(started.elapsed().as_secs_f64() * 1e3);
    } else if status.is_client_error() {
        stats.client_errors += 1;
    } else {
        stats.server_errors += 1;
    }
    response
}

async fn answer(state: &Shared, body: Body) -> Response {
    let body = match read_body(body, &state.config).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let (query, options) = match validate(&body, &state.config, &state.served) {
        Ok(v) => v,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let (reply, answer) = oneshot::channel();
    match state.jobs.try_send(Job {
        query,
        options,
        reply,
    }) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "server busy: {} requests are waiting; retry later",
                    state.config.queue
                ),
            );
        }
        Err(TrySendError::Disconnected(_)) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the search thread has stopped",
            );
        }
    }
    match tokio::time::timeout(state.config.timeout, answer).await {
        Ok(Ok(Ok(result))) => axum::Json(result).into_response(),
        Ok(Ok(Err((status, message)))) => error(status, message),
        Ok(Err(_)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the search thread dropped the request",
        ),
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "no answer within {:.1} s; the server is overloaded",
                state.config.timeout.as_secs_f64()
            ),
        ),
    }
}

/// The whole request body within the size and time limits, or the error answer.
async fn read_body(body: Body, config: &ServeConfig) -> Result<Bytes, Response> {
    let limit = config.max_body_bytes;
    match tokio::time::timeout(config.body_timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            Err(if too_large {
                error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body over the limit of {limit} bytes"),
                )
            } else {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("could not read the request body: {e}"),
                )
            })
        }
        Err(_) => {
            let mut response = error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {:.1} s (is Content-Length right?)",
                    config.body_timeout.as_secs_f64()
                ),
            );
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            Err(response)
        }
    }
}

/// Connections the process may hold: its open-file limit less a margin for the index, the
/// model and the runtime (unbounded where the limit cannot be read).
fn open_file_budget() -> usize {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            return (limit.rlim_cur as usize).saturating_sub(64);
        }
    }
    usize::MAX
}

async fn health() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

async fn stats(State(state): State<Arc<Shared>>) -> Response {
    let stats = state.stats.lock().unwrap_or_else(|e| e.into_inner());
    let mut sorted: Vec<f64> = stats.latencies_ms.iter().copied().collect();
    sorted.sort_by(f64::total_cmp);
    let pct = |q| crate::eval::percentile(&sorted, q);
    let body = Stats {
        index: &state.info,
        uptime_s: state.started.elapsed().as_secs_f64(),
        requests: stats.requests,
        ok: stats.ok,
        client_errors: stats.client_errors,
        server_errors: stats.server_errors,
        batches: stats.batches,
        mean_batch: stats.batched_queries as f64 / stats.batches.max(1) as f64,
        max_batch: state.config.max_batch,
        max_wait_ms: state.config.max_wait.as_secs_f64() * 1e3,
        latency_ms: Percentiles {
            window: sorted.len(),
            p50: pct(0.5),
            p90: pct(0.9),
            p99: pct(0.99),
            max: sorted.last().copied().unwrap_or(0.0),
        },
    };
    axum::Json(body).into_response()
}

async fn wrong_method() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "wrong method: use POST /search, GET /health or GET /stats",
    )
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such route: use POST /search, GET /health or GET /stats",
    )
}

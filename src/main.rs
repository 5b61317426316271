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
    let runtime = match runtime() {
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

/// The async runtime. `BURROW_WORKER_THREADS=1` runs everything on one thread (no cross-thread
/// wake-ups); by default one worker per core.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    match std::env::var("BURROW_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        Some(1) => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    }
}

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

/// The async runtime: `BURROW_WORKER_THREADS=N` workers, else one thread on machines with at
/// most two cores and one worker per core above that. On 2 cores a single thread measured
/// +29% single-stream and +22% 8-stream throughput through a tcp tunnel, with less CPU and
/// 19% less memory, than two workers (docs/benchmarks.md, run 8): the relay is bound by
/// wake-ups, and a second worker mostly adds cross-thread ones.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let requested = std::env::var("BURROW_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    match requested.unwrap_or(if cores <= 2 { 1 } else { cores }) {
        0 | 1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
}

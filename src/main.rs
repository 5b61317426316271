//! The `burrow` binary: parse the command line, install the crypto provider, run the role.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use burrow::cli::{self, Cli, Command};

fn main() -> ExitCode {
    let argv = match cli::args_with_config(std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(message) => return fail(wants_json(&std::env::args_os().collect::<Vec<_>>()), 2, &message),
    };
    let matches = Cli::command().try_get_matches_from(&argv);
    // `burrow ROLE config-file` runs without the role's required flags, which the derived
    // structs cannot represent: it is answered from the matches alone.
    if let Some((role, sub)) = matches.as_ref().ok().and_then(|m| m.subcommand()) {
        if sub.subcommand_name() == Some("config-file") {
            let _ = std::io::stdout()
                .lock()
                .write_all(cli::config_template(role).as_bytes());
            return ExitCode::SUCCESS;
        }
    }
    let parsed = matches.and_then(|matches| Ok((Cli::from_arg_matches(&matches)?, matches)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            // Help and --version go to stdout with exit 0; real usage errors exit 2.
            if e.use_stderr() && wants_json(&argv) {
                let rendered = e.render().to_string();
                let first = rendered.lines().next().unwrap_or_default();
                let message = first.strip_prefix("error: ").unwrap_or(first);
                burrow::app::emit(&serde_json::json!({"event": "error", "code": 2, "message": message}).to_string());
            }
            e.exit()
        }
    };
    let (json, busy_poll) = match &cli.command {
        Command::Hub(hub) => (hub.json, hub.runtime.busy_poll),
        Command::Expose(expose) => (expose.agent.json, expose.agent.runtime.busy_poll),
        Command::Reach(reach) => (reach.agent.json, reach.agent.runtime.busy_poll),
        _ => (false, std::time::Duration::ZERO),
    };
    burrow::tls::install_crypto_provider();
    if let Command::Hub(hub) = &cli.command {
        burrow::app::init_logging(&hub.log);
    }
    let runtime = match burrow::runtime::build(busy_poll) {
        Ok(runtime) => runtime,
        Err(e) => return fail(json, 1, &format!("cannot start the async runtime: {e}")),
    };
    let settings = cli::settings(&matches);
    match runtime.block_on(burrow::app::run(cli.command, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => fail(json, failure.code, &failure.message),
    }
}

/// Reports a fatal error: one line on stderr (a closed stderr is ignored, never a panic) and,
/// with `--json`, an `error` event on stdout.
fn fail(json: bool, code: u8, message: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "burrow: {message}");
    if json {
        burrow::app::emit(&serde_json::json!({"event": "error", "code": code, "message": message}).to_string());
    }
    ExitCode::from(code)
}

/// Whether the command line (or `BURROW_JSON`) asks for JSON output, before it is parsed.
fn wants_json(argv: &[OsString]) -> bool {
    argv.iter().any(|a| a == "--json") || std::env::var("BURROW_JSON").is_ok_and(|v| cli::truthy(&v).unwrap_or(false))
}

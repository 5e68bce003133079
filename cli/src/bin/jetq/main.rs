//! `jetq`: the operator's command line for jetq queues, dead letters and schedules.
//!
//! Configured like every jetq binary, from `JETQ_*` environment variables (`JETQ_NATS_URL`,
//! credentials, TLS, `JETQ_PREFIX`). Every listing takes `--json`; exit codes are documented in
//! `docs/CLI.md` and `jetq --help`.
//!
//! The binary is three modules around the `jetq_cli` library: [`args`] (the clap command line),
//! [`dispatch`] (one arm per command, calling the library) and [`output`] (tables, detail views
//! and `--json`). A new subcommand adds a variant in `args`, an arm in `dispatch` and, if it
//! prints, a function in `output`.

mod args;
mod dispatch;
mod history;
mod operator;
mod output;
mod workflows;

use std::{io::IsTerminal, process::ExitCode};

use clap::Parser;
use jetq_cli::{error::exit, AdminError};

use crate::{args::Cli, dispatch::run, output::print_json};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(colour_on_stderr())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("jetq: error: cannot start the async runtime: {err}");
            return ExitCode::from(exit::ERROR);
        }
    };
    let json = cli.json;
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(err) => {
            report_error(&err, json);
            ExitCode::from(err.exit_code())
        }
    }
}

/// ANSI colour in log lines only on a terminal, and never with `NO_COLOR` set (no-color.org).
fn colour_on_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn report_error(err: &AdminError, json: bool) {
    eprintln!("jetq: error: {err}");
    if json {
        let kind = match err.kind() {
            jetq_cli::ErrorKind::Usage => "usage",
            jetq_cli::ErrorKind::NotFound => "not_found",
            jetq_cli::ErrorKind::NotSupported => "not_supported",
            jetq_cli::ErrorKind::Unavailable => "unavailable",
            jetq_cli::ErrorKind::Failed => "error",
        };
        print_json(&serde_json::json!({
            "error": { "kind": kind, "message": err.to_string(), "exit_code": err.exit_code() }
        }));
    }
}

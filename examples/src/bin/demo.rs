//! The quickstart: a local nats-server, an SMTP sink, the web app and the worker, two signups
//! and an export, and a summary of what happened. Run it with `scripts/demo.sh`.
//!
//! Set `JETQ_NATS_URL` to use a running server instead of starting one, `JETQ_NATS_SERVER` to
//! choose the nats-server binary and `JETQ_DEMO_PYTHON` the Python (with aiosmtpd) of the sink.

use std::process::ExitCode;

use jetq_examples::demo::{run, DemoOptions};

#[tokio::main]
async fn main() -> ExitCode {
    jetq_examples::init_tracing("warn");
    let options = match DemoOptions::from_env() {
        Ok(options) => options,
        Err(err) => {
            eprintln!("demo failed: {err}");
            return ExitCode::FAILURE;
        }
    };
    match run(options).await {
        Ok(report) => {
            println!("{report}");
            println!("demo finished: OK");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("demo failed: {err}");
            ExitCode::FAILURE
        }
    }
}

//! The quickstart: a local nats-server, an SMTP sink, the web app, the worker and a scheduler,
//! two signups, an export and a periodic task, and a summary of what happened with where to
//! look next. Run it with `scripts/demo.sh` (`--stay` keeps the stack running until Ctrl-C).
//!
//! Set `JETQ_NATS_URL` to use a running server instead of starting one, `JETQ_NATS_SERVER` to
//! choose the nats-server binary and `JETQ_DEMO_PYTHON` the Python (with aiosmtpd) of the sink.

use std::process::ExitCode;

use jetq_examples::demo::{run, DemoOptions};

#[tokio::main]
async fn main() -> ExitCode {
    jetq_examples::init_tracing("warn");
    let mut options = match DemoOptions::from_env() {
        Ok(options) => options,
        Err(err) => {
            eprintln!("demo failed: {err}");
            return ExitCode::FAILURE;
        }
    };
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--stay" => options.stay = true,
            other => {
                eprintln!("demo: unknown argument {other:?} (the only one is --stay)");
                return ExitCode::from(2);
            }
        }
    }
    let stay = options.stay;
    match run(options).await {
        Ok(report) => {
            if !stay {
                println!("{report}");
            }
            println!("demo finished: OK");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("demo failed: {err}");
            ExitCode::FAILURE
        }
    }
}

//! `jetq-k8s render|check [--values FILE] [--out DIR]`: renders `k8s/generated/` from
//! `k8s/values.yaml`, or checks that it is up to date.

use std::{path::PathBuf, process::ExitCode};

const USAGE: &str = "usage: jetq-k8s render|check [--values FILE] [--out DIR]

  render   write the manifests rendered from the values file into DIR
  check    exit 1 if DIR is not what the values file renders to

  --values FILE   default: k8s/values.yaml of this repository
  --out DIR       default: k8s/generated of this repository";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let command = args.next();
    let mut values = jetq_k8s::k8s_dir().join("values.yaml");
    let mut out = jetq_k8s::k8s_dir().join("generated");
    while let Some(arg) = args.next() {
        let target = match arg.as_str() {
            "--values" => &mut values,
            "--out" => &mut out,
            _ => {
                eprintln!("jetq-k8s: unknown argument {arg:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        };
        match args.next() {
            Some(value) => *target = PathBuf::from(value),
            None => {
                eprintln!("jetq-k8s: {arg} needs a value\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let files = match jetq_k8s::render_file(&values) {
        Ok(files) => files,
        Err(err) => {
            eprintln!("jetq-k8s: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = match command.as_deref() {
        Some("render") => jetq_k8s::write(&files, &out).map(|()| {
            println!(
                "jetq-k8s: wrote {} files into {}",
                files.len(),
                out.display()
            );
            true
        }),
        Some("check") => jetq_k8s::stale(&files, &out).map(|stale| {
            for name in &stale {
                eprintln!(
                    "jetq-k8s: {} is not what {} renders to",
                    out.join(name).display(),
                    values.display()
                );
            }
            if !stale.is_empty() {
                eprintln!("jetq-k8s: run `cargo run -p jetq-k8s -- render`");
            }
            stale.is_empty()
        }),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("jetq-k8s: {err}");
            ExitCode::FAILURE
        }
    }
}

//! `jetq-k8s render|check [--dir DIR] [--values FILE] [--out DIR]`: renders the manifests
//! (`DIR/generated/`) from a values file (`DIR/values.yaml`), or checks that they are up to date.
//! Paths are relative to the current directory.

use std::{path::PathBuf, process::ExitCode};

const USAGE: &str = "usage: jetq-k8s render|check [--dir DIR] [--values FILE] [--out DIR]

  render   write the manifests rendered from the values file into the output directory
  check    exit 1 if the output directory is not what the values file renders to

  --dir DIR       the k8s directory (default: ./k8s if ./k8s/values.yaml exists, else .)
  --values FILE   default: DIR/values.yaml
  --out DIR       default: DIR/generated";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let command = args.next();
    if matches!(command.as_deref(), Some("--help" | "-h" | "help")) {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let mut dir: Option<PathBuf> = None;
    let mut values: Option<PathBuf> = None;
    let mut out: Option<PathBuf> = None;
    while let Some(arg) = args.next() {
        let target = match arg.as_str() {
            "--dir" => &mut dir,
            "--values" => &mut values,
            "--out" => &mut out,
            _ => {
                eprintln!("jetq-k8s: unknown argument {arg:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        };
        match args.next() {
            Some(value) => *target = Some(PathBuf::from(value)),
            None => {
                eprintln!("jetq-k8s: {arg} needs a value\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let dir = dir.unwrap_or_else(|| jetq_k8s::default_dir(std::path::Path::new(".")));
    let values = values.unwrap_or_else(|| dir.join("values.yaml"));
    let out = out.unwrap_or_else(|| dir.join("generated"));
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

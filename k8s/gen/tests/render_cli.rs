//! The `jetq-k8s` binary as a user runs it: paths relative to the current directory (never
//! the repository it was built in), and a values file whose schedules the scheduler would
//! refuse is refused before anything is written.

mod support;

use std::{path::Path, process::Command};

use support::k8s;

fn jetq_k8s(cwd: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_jetq-k8s"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run jetq-k8s")
}

/// A copy of the shipped values file with `edit` applied, in `dir`.
fn values_in(dir: &Path, edit: impl Fn(String) -> String) {
    let text = std::fs::read_to_string(k8s().join("values.yaml")).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("values.yaml"), edit(text)).unwrap();
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn render_refuses_a_schedule_the_scheduler_would_refuse_and_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    values_in(tmp.path(), |text| {
        text.replace(r#"cron: "0 * * * *""#, r#"cron: "0 0 25 * * *""#)
    });
    let output = jetq_k8s(tmp.path(), &["render"]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("hourly-digest"), "names the schedule: {err}");
    assert!(err.contains("0 0 25 * * *"), "names the expression: {err}");
    assert!(
        !tmp.path().join("generated").exists(),
        "nothing is written for a values file the scheduler would refuse"
    );

    // `check` refuses it too (a CI gate on the values file).
    let output = jetq_k8s(tmp.path(), &["check"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));

    // A bad time zone names its schedule as well.
    values_in(tmp.path(), |text| {
        text.replace("timezone: Europe/Berlin", "timezone: Europe/Berln")
    });
    let output = jetq_k8s(tmp.path(), &["render"]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("nightly-export") && err.contains("Europe/Berln"),
        "{err}"
    );
}

#[test]
fn five_field_crontab_lines_render() {
    let tmp = tempfile::tempdir().unwrap();
    values_in(tmp.path(), |text| {
        text.replace(r#"cron: "0 0 3 * * *""#, r#"cron: "30 2 * * 1-5""#)
    });
    let output = jetq_k8s(tmp.path(), &["render"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let schedules =
        std::fs::read_to_string(tmp.path().join("generated/app/schedules.yaml")).unwrap();
    assert!(schedules.contains("30 2 * * 1-5"), "{schedules}");
    jetq_scheduler::Schedules::from_yaml(&schedules, Path::new("schedules.yaml"))
        .unwrap_or_else(|err| panic!("{err}"));
}

#[test]
fn paths_are_relative_to_the_current_directory() {
    // A project with a k8s/ directory: `jetq-k8s render` with no flags uses ./k8s.
    let project = tempfile::tempdir().unwrap();
    values_in(&project.path().join("k8s"), |text| text);
    let output = jetq_k8s(project.path(), &["render"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(project
        .path()
        .join("k8s/generated/app/scheduler.yaml")
        .is_file());
    let output = jetq_k8s(project.path(), &["check"]);
    assert!(output.status.success(), "{}", stderr(&output));

    // Inside the k8s directory itself: ./values.yaml, ./generated.
    let inside = project.path().join("k8s");
    std::fs::remove_dir_all(inside.join("generated")).unwrap();
    let output = jetq_k8s(&inside, &["render"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(inside.join("generated/app/scheduler.yaml").is_file());

    // Elsewhere, with --dir; a directory with no values file is an error naming the file.
    let other = tempfile::tempdir().unwrap();
    let output = jetq_k8s(other.path(), &["check", "--dir", inside.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = jetq_k8s(other.path(), &["render"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("values.yaml"),
        "{}",
        stderr(&output)
    );
    assert!(!other.path().join("generated").exists());
}

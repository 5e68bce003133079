//! Issue #17 item 4: a bad `JETQ_*` value stops the real `jetq-scheduler` binary with status 1
//! and a message naming the variable and the form it accepts — for every variable a scheduler
//! reads. The table's shared rows live with the worker's test in the `jetq-tests` package.

#[path = "../../tests/tests/env_cases/mod.rs"]
mod env_cases;

use env_cases::*;
use jetq_scheduler::{
    contract::{ConnectionConfig, StreamSettings},
    SchedulerSettings,
};

fn scheduler_cases() -> Vec<Case> {
    let mut cases = connection_and_stream_cases();
    cases.extend([
        // Names the file, not the variable (the file reader's message; noted, not changed).
        Case {
            variable: "JETQ_SCHEDULES_FILE",
            value: "/nonexistent/schedules.yaml",
            expected: vec!["cannot read schedules file /nonexistent/schedules.yaml"],
        },
        duration("JETQ_SCHEDULES_POLL"),
        case("JETQ_SCHEDULES_POLL", "1ms", "at least 50ms"),
        duration("JETQ_MISFIRE_GRACE"),
        case("JETQ_MISFIRE_GRACE", "5m", "duplicate window"),
        boolean("JETQ_RELEASE_DELAYED"),
        duration("JETQ_DELAYED_LOOKBACK"),
        number("JETQ_RELEASE_WINDOW"),
        case("JETQ_RELEASE_WINDOW", "0", "at least 1"),
        boolean("JETQ_PROVISION"),
        // Read by the telemetry every binary starts first.
        case("JETQ_LOG_FORMAT", "xml", "human or json"),
        case("JETQ_HEALTH_LISTEN", "nowhere", "0.0.0.0:8459"),
    ]);
    cases
}

#[test]
fn the_table_covers_every_variable_a_scheduler_reads() {
    let cases = scheduler_cases();
    let mut read = variables::<ConnectionConfig>();
    read.extend(variables::<StreamSettings>());
    read.extend(variables::<SchedulerSettings>());
    assert_covered(&read, &cases, CONNECTION_TEXT);
}

#[tokio::test]
async fn every_bad_scheduler_variable_stops_the_scheduler_naming_it_and_the_accepted_form() {
    check_all(env!("CARGO_BIN_EXE_jetq-scheduler"), &scheduler_cases()).await;
}

//! Issue #17 item 4: a bad `JETQ_*` value stops the real worker binary (`test_worker`) with
//! status 1 and a message naming the variable and the form it accepts — for every variable a
//! worker reads. (`scheduler/tests/config_errors.rs` does the same for `jetq-scheduler`.)

mod env_cases;

use env_cases::*;
use jetq_consumer::WorkerSettings;
use jetq_contract::{ConnectionConfig, StreamSettings};

fn worker_cases() -> Vec<Case> {
    let mut cases = connection_and_stream_cases();
    cases.extend([
        number("JETQ_CONCURRENCY"),
        case("JETQ_CONCURRENCY", "-4", "a whole number (0 or more)"),
        case("JETQ_CONCURRENCY", "0", "at least 1"),
        duration("JETQ_ACK_WAIT"),
        case("JETQ_ACK_WAIT", "10ms", "at least 1s"),
        number("JETQ_MAX_DELIVER"),
        case("JETQ_MAX_DELIVER", "1", "at least 2"),
        number("JETQ_MAX_IN_FLIGHT"),
        duration("JETQ_SHUTDOWN_GRACE"),
        duration("JETQ_UNKNOWN_TASK_GRACE"),
        duration("JETQ_FETCH_EXPIRES"),
        case("JETQ_FETCH_EXPIRES", "1h", "shorter than JETQ_ACK_WAIT"),
        number("JETQ_PREFETCH"),
        number("JETQ_PREFETCH_BYTES"),
        boolean("JETQ_PROVISION"),
        boolean("JETQ_SWEEPER"),
        duration("JETQ_METRICS_INTERVAL"),
        duration("JETQ_PRESENCE_INTERVAL"),
        case("JETQ_PRESENCE_INTERVAL", "10ms", "at least 100ms"),
        boolean("JETQ_HISTORY"),
        duration("JETQ_HISTORY_INTERVAL"),
        case("JETQ_HISTORY_INTERVAL", "10ms", "at least 100ms"),
        case("JETQ_QUEUES", "emails,bad queue", "JETQ_QUEUES"),
        boolean("JETQ_JANITOR"),
        duration("JETQ_PURGE_INTERVAL"),
        case("JETQ_PURGE_INTERVAL", "1ms", "at least 10ms"),
    ]);
    cases
}

#[test]
fn the_table_covers_every_variable_a_worker_reads() {
    let cases = worker_cases();
    let mut read = variables::<ConnectionConfig>();
    read.extend(variables::<StreamSettings>());
    read.extend(variables::<WorkerSettings>());
    assert_covered(&read, &cases, CONNECTION_TEXT);
    for case in &cases {
        assert!(
            read.iter().any(|variable| variable == case.variable),
            "{} is not a worker variable",
            case.variable
        );
    }
}

#[tokio::test]
async fn every_bad_worker_variable_stops_the_worker_naming_it_and_the_accepted_form() {
    check_all(env!("CARGO_BIN_EXE_test_worker"), &worker_cases()).await;
}

//! Periodic schedules against a real nats-server: replicas without double fires, catch-up
//! policies after downtime, reloads, and invalid files.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    time::{Duration, SystemTime},
};

use async_nats::jetstream::{self, message::StreamMessage};
use chrono::{DateTime, TimeDelta, Utc};
use jetq_contract::{headers, Subjects};
use jetq_scheduler::{ScheduleFileError, SchedulerError};
use jetq_tests::{
    eventually, init_logs, raw_jetstream, required_header, scheduler, stream_messages, within,
    NatsServer, RunningScheduler, WAIT,
};

fn write(path: &Path, text: &str) {
    // Write then rename, as a ConfigMap update does, so a poll never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write schedules file");
    std::fs::rename(&tmp, path).expect("replace schedules file");
}

async fn tasks(js: &jetstream::Context) -> Vec<StreamMessage> {
    stream_messages(js, &Subjects::default().tasks_stream()).await
}

fn fire_time(message: &StreamMessage) -> DateTime<Utc> {
    required_header(message, headers::FIRE_TIME)
        .parse()
        .expect("Jetq-Fire-Time is RFC 3339")
}

/// Fire times per schedule, with how many tasks each fire produced.
async fn fires(js: &jetstream::Context) -> BTreeMap<String, BTreeMap<DateTime<Utc>, usize>> {
    let mut by_schedule: BTreeMap<String, BTreeMap<DateTime<Utc>, usize>> = BTreeMap::new();
    for message in tasks(js).await {
        let schedule = required_header(&message, headers::SCHEDULE);
        let fire = fire_time(&message);
        assert_eq!(
            required_header(&message, headers::MSG_ID),
            jetq_scheduler::fire_id(&schedule, fire)
        );
        *by_schedule
            .entry(schedule)
            .or_default()
            .entry(fire)
            .or_default() += 1;
    }
    by_schedule
}

async fn fires_of(js: &jetstream::Context, schedule: &str) -> BTreeMap<DateTime<Utc>, usize> {
    fires(js).await.remove(schedule).unwrap_or_default()
}

/// Waits until `schedule` has a fire at or after `at`.
async fn fired_since(js: &jetstream::Context, schedule: &str, at: DateTime<Utc>) {
    eventually(
        WAIT,
        &format!("a fire of {schedule} at or after {at}"),
        || {
            let js = js.clone();
            async move {
                fires_of(&js, schedule)
                    .await
                    .keys()
                    .any(|fire| *fire >= at)
                    .then_some(())
            }
        },
    )
    .await;
}

fn second_floor(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(at.timestamp(), 0).expect("valid time")
}

#[tokio::test]
async fn three_replicas_fire_exactly_once_per_second_while_one_is_killed_and_restarted() {
    init_logs();
    let server = NatsServer::start().await;
    let js = raw_jetstream(&server).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("schedules.yaml");
    write(
        &file,
        "schedules:\n  - name: every-second\n    cron: \"* * * * * *\"\n    queue: sched\n    task: tick\n    args: {n: 1}\n    catch_up: skip\n",
    );
    let replica = || scheduler(&server).schedules_file(&file);
    let a = RunningScheduler::start(replica()).await;
    let b = RunningScheduler::start(replica()).await;
    let c = RunningScheduler::start(replica()).await;

    let start = Utc::now();
    fired_since(&js, "every-second", start + TimeDelta::seconds(2)).await;
    b.kill().await;
    let killed = Utc::now();
    fired_since(&js, "every-second", killed + TimeDelta::seconds(2)).await;
    let b = RunningScheduler::start(replica()).await;
    let restarted = Utc::now();
    fired_since(&js, "every-second", restarted + TimeDelta::seconds(2)).await;
    for replica in [a, b, c] {
        replica.stop().await;
    }

    let fires = fires_of(&js, "every-second").await;
    let times: Vec<_> = fires.keys().copied().collect();
    assert!(times.len() >= 6, "{times:?}");
    for (fire, copies) in &fires {
        assert_eq!(*copies, 1, "fire {fire} published {copies} times");
    }
    for pair in times.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            TimeDelta::seconds(1),
            "a fire is missing: {times:?}"
        );
    }
    let message = tasks(&js).await.remove(0);
    assert_eq!(message.subject.as_str(), "jetq.task.sched.tick");
    assert_eq!(&message.payload[..], br#"{"n":1}"#);
}

/// Sleeps until the wall clock is `offset` past an odd second.
async fn until_odd_second_plus(offset: Duration) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after the epoch");
    let mut target = Duration::from_secs(now.as_secs()) + offset;
    while target <= now || target.as_secs().is_multiple_of(2) {
        target += Duration::from_secs(1);
    }
    tokio::time::sleep(target - now).await;
}

#[tokio::test]
async fn catch_up_policies_after_downtime() {
    init_logs();
    let server = NatsServer::start().await;
    let js = raw_jetstream(&server).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("schedules.yaml");
    // Fires at even seconds; a restart at an odd second + 0.5 s finds the latest missed fire
    // 1.5 s late, beyond the 1 s grace, so the three policies differ.
    let mut text = String::from("schedules:\n");
    for policy in ["skip", "once", "each"] {
        text.push_str(&format!(
            "  - name: {policy}\n    cron: \"*/2 * * * * *\"\n    queue: sched\n    task: {policy}\n    catch_up: {policy}\n    catch_up_window: 30s\n"
        ));
    }
    write(&file, &text);

    let first = RunningScheduler::start(scheduler(&server).schedules_file(&file)).await;
    let started = Utc::now();
    for policy in ["skip", "once", "each"] {
        fired_since(&js, policy, started).await;
    }
    first.stop().await;
    let before: BTreeMap<_, _> = fires(&js).await;
    let last = |policy: &str| -> DateTime<Utc> {
        *before[policy]
            .keys()
            .last()
            .expect("fired before the outage")
    };

    // Down across several fires.
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Connected and provisioned first, so it looks at its schedules right at the chosen time.
    let built = scheduler(&server)
        .schedules_file(&file)
        .build()
        .await
        .expect("scheduler builds");
    until_odd_second_plus(Duration::from_millis(500)).await;
    let restart = Utc::now();
    let second = RunningScheduler::run(built);
    let next_regular = second_floor(restart) + TimeDelta::seconds(1);
    for policy in ["skip", "once", "each"] {
        fired_since(&js, policy, next_regular).await;
    }
    second.stop().await;

    let after = fires(&js).await;
    let missed = |policy: &str| -> Vec<DateTime<Utc>> {
        after[policy]
            .keys()
            .copied()
            .filter(|fire| *fire > last(policy) && *fire < next_regular)
            .collect()
    };
    let expected_each: Vec<_> = {
        let mut fire = last("each") + TimeDelta::seconds(2);
        let mut all = Vec::new();
        while fire < next_regular {
            all.push(fire);
            fire += TimeDelta::seconds(2);
        }
        all
    };
    assert!(
        expected_each.len() >= 2,
        "outage too short: {expected_each:?}"
    );
    assert_eq!(
        missed("skip"),
        Vec::<DateTime<Utc>>::new(),
        "skip runs no missed fire"
    );
    assert_eq!(
        missed("once"),
        vec![*expected_each.last().expect("missed fires")],
        "once runs the latest missed fire only"
    );
    assert_eq!(missed("each"), expected_each, "each runs every missed fire");
    for (policy, fires) in &after {
        assert!(
            fires.values().all(|copies| *copies == 1),
            "{policy}: {fires:?}"
        );
    }
}

#[tokio::test]
async fn reload_applies_changes_and_keeps_the_old_schedules_when_the_new_file_is_invalid() {
    init_logs();
    let server = NatsServer::start().await;
    let js = raw_jetstream(&server).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("schedules.yaml");
    let schedule = |name: &str| {
        format!("schedules:\n  - name: {name}\n    cron: \"* * * * * *\"\n    queue: sched\n    task: {name}\n    catch_up: skip\n")
    };
    write(&file, &schedule("old"));
    let running = RunningScheduler::start(scheduler(&server).schedules_file(&file)).await;
    fired_since(&js, "old", Utc::now()).await;

    // A change is picked up by the file poll.
    write(&file, &schedule("new"));
    let changed = Utc::now();
    fired_since(&js, "new", changed).await;
    let settled = Utc::now() + TimeDelta::seconds(1);
    fired_since(&js, "new", settled + TimeDelta::seconds(1)).await;
    let late_old: Vec<_> = fires_of(&js, "old")
        .await
        .into_keys()
        .filter(|fire| *fire > settled)
        .collect();
    assert!(
        late_old.is_empty(),
        "the removed schedule still fires: {late_old:?}"
    );

    // An invalid file is rejected; the running schedules go on.
    write(
        &file,
        "schedules:\n  - name: broken\n    cron: \"every day\"\n    queue: sched\n    task: t\n",
    );
    running.reload.reload();
    let rejected = Utc::now();
    fired_since(&js, "new", rejected + TimeDelta::seconds(2)).await;
    assert!(fires_of(&js, "broken").await.is_empty());
    running.stop().await;
}

#[tokio::test]
async fn an_invalid_schedules_file_is_refused_at_startup_naming_schedule_and_field() {
    init_logs();
    let server = NatsServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("schedules.yaml");
    write(
        &file,
        "schedules:\n  - name: nightly-report\n    cron: \"0 0 3 * * *\"\n    timezone: Europe/Berln\n    queue: reports\n    task: nightly_report\n",
    );
    let err = scheduler(&server)
        .schedules_file(&file)
        .build()
        .await
        .expect_err("an unknown time zone is refused");
    let text = err.to_string();
    assert!(
        text.contains("schedule nightly-report: field `timezone`") && text.contains("Europe/Berln"),
        "{text}"
    );
    match err {
        SchedulerError::Schedules(ScheduleFileError::Invalid { errors, .. }) => {
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert_eq!(errors[0].item, "nightly-report");
            assert_eq!(errors[0].field, "timezone");
        }
        other => panic!("expected an invalid-schedules error, got {other:?}"),
    }
    let missing = scheduler(&server)
        .schedules_file(dir.path().join("absent.yaml"))
        .build()
        .await
        .expect_err("a missing file is refused");
    assert!(missing.to_string().contains("absent.yaml"), "{missing}");
}

#[tokio::test]
async fn fires_carry_the_schedule_and_its_overrides() {
    init_logs();
    let server = NatsServer::start().await;
    let js = raw_jetstream(&server).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("schedules.yaml");
    write(
        &file,
        "schedules:\n  - name: report\n    cron: \"* * * * * *\"\n    timezone: Asia/Kolkata\n    queue: reports\n    task: build\n    args: {format: csv}\n    max_attempts: 2\n    timeout: 90s\n",
    );
    let running = RunningScheduler::start(scheduler(&server).schedules_file(&file)).await;
    fired_since(&js, "report", Utc::now()).await;
    running.stop().await;
    let message = tasks(&js).await.remove(0);
    assert_eq!(message.subject.as_str(), "jetq.task.reports.build");
    assert_eq!(required_header(&message, headers::MAX_ATTEMPTS), "2");
    assert_eq!(required_header(&message, headers::TIMEOUT_MS), "90000");
    assert!(required_header(&message, headers::FIRE_TIME).ends_with('Z'));
    assert!(jetq_contract::time::parse(&required_header(&message, headers::ENQUEUED_AT)).is_some());
    let ids: BTreeSet<_> = tasks(&js)
        .await
        .iter()
        .map(|m| required_header(m, headers::MSG_ID))
        .collect();
    assert!(ids.iter().all(|id| id.starts_with("report:")), "{ids:?}");
}

/// Set only on the replica processes [`spawn_replica`] starts: [`scheduler_replica_process`]
/// then runs a scheduler instead of returning at once.
const REPLICA_ENV: &str = "JETQ_TEST_SCHEDULER_REPLICA";

/// The body of a scheduler replica *process*: this test binary re-executed with only this test
/// selected, so a replica can be frozen with SIGSTOP (an in-process replica cannot be stopped
/// without stopping the test) and always runs the library code of this build — unlike a
/// `jetq-scheduler` binary, which `cargo test -p jetq-tests` does not rebuild. Configured by
/// `JETQ_*` variables like the binary; runs until SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the body of the replica processes that the SIGSTOP test spawns; a no-op on its own"]
async fn scheduler_replica_process() {
    if std::env::var_os(REPLICA_ENV).is_none() {
        return;
    }
    init_logs();
    let scheduler = jetq_scheduler::Scheduler::from_env()
        .await
        .expect("replica scheduler builds");
    scheduler.run().await;
}

/// A scheduler replica in its own process, logging to `log`.
struct ReplicaProcess {
    child: tokio::process::Child,
    pid: u32,
    log: std::path::PathBuf,
}

impl ReplicaProcess {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn spawn_replica(
    server: &NatsServer,
    file: &Path,
    grace: &str,
    log: std::path::PathBuf,
) -> ReplicaProcess {
    let output = std::fs::File::create(&log).expect("replica log file");
    let errors = output.try_clone().expect("replica log file handle");
    let child = tokio::process::Command::new(std::env::current_exe().expect("test binary path"))
        .args([
            "scheduler_replica_process",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(REPLICA_ENV, "1")
        .env("JETQ_NATS_URL", server.url())
        .env("JETQ_SCHEDULES_FILE", file)
        .env("JETQ_MISFIRE_GRACE", grace)
        .env("JETQ_RELEASE_DELAYED", "false")
        .env("RUST_LOG", "info,async_nats=warn")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(output)
        .stderr(errors)
        // A failing test must not leave replicas behind (SIGKILL ends a stopped process too).
        .kill_on_drop(true)
        .spawn()
        .expect("replica process starts");
    let pid = child.id().expect("a running child has a pid");
    ReplicaProcess { child, pid, log }
}

fn signal_all(replicas: &[ReplicaProcess], signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .args(replicas.iter().map(|replica| replica.pid.to_string()))
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} failed");
}

/// What a window of fires of one schedule holds compared with one fire per second.
#[derive(Debug)]
struct Tally {
    expected: usize,
    published: usize,
    missing: Vec<DateTime<Utc>>,
    doubled: Vec<DateTime<Utc>>,
}

fn tally(fires: &BTreeMap<DateTime<Utc>, usize>, from: DateTime<Utc>, to: DateTime<Utc>) -> Tally {
    let mut missing = Vec::new();
    let mut expected = 0;
    let mut second = from;
    while second <= to {
        expected += 1;
        if !fires.contains_key(&second) {
            missing.push(second);
        }
        second += TimeDelta::seconds(1);
    }
    Tally {
        expected,
        published: fires.range(from..=to).map(|(_, copies)| copies).sum(),
        missing,
        doubled: fires
            .range(from..=to)
            .filter(|(_, copies)| **copies > 1)
            .map(|(fire, _)| *fire)
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fires_due_while_every_replica_is_stopped_within_the_grace_are_each_published_once() {
    init_logs();
    let server = NatsServer::start().await;
    let js = raw_jetstream(&server).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("schedules.yaml");
    // One every-second schedule per policy: fires within the grace are on time whatever the
    // policy, so all three must publish every one of them.
    let policies = ["skip", "once", "each"];
    let mut text = String::from("schedules:\n");
    for policy in policies {
        text.push_str(&format!(
            "  - name: stall-{policy}\n    cron: \"* * * * * *\"\n    queue: sched\n    task: tick\n    catch_up: {policy}\n"
        ));
    }
    write(&file, &text);
    let mut replicas: Vec<_> = (0..3)
        .map(|n| {
            spawn_replica(
                &server,
                &file,
                "10s",
                dir.path().join(format!("replica-{n}.log")),
            )
        })
        .collect();
    // Every replica is running (not merely starting) before all of them are frozen.
    eventually(WAIT, "three replicas running", || {
        let running = replicas
            .iter()
            .all(|replica| replica.log_text().contains("scheduler running"));
        async move { running.then_some(()) }
    })
    .await;
    let started = Utc::now();
    for policy in policies {
        fired_since(
            &js,
            &format!("stall-{policy}"),
            started + TimeDelta::seconds(2),
        )
        .await;
    }

    let stopped = Utc::now();
    signal_all(&replicas, "STOP");
    // Holds the stall; nothing is awaited here.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let resumed = Utc::now();
    signal_all(&replicas, "CONT");
    for policy in policies {
        fired_since(
            &js,
            &format!("stall-{policy}"),
            resumed + TimeDelta::seconds(2),
        )
        .await;
    }
    signal_all(&replicas, "TERM");
    for replica in &mut replicas {
        let status = within(WAIT, "a replica to exit on SIGTERM", replica.child.wait())
            .await
            .expect("replica exit status");
        assert!(
            status.success(),
            "replica exited with {status}:\n{}",
            replica.log_text()
        );
    }

    let messages = tasks(&js).await;
    let stored = |message: &StreamMessage| {
        DateTime::from_timestamp_nanos(
            i64::try_from(message.time.unix_timestamp_nanos()).expect("stored time in range"),
        )
    };
    // Nothing was published while the replicas were frozen (a moment after SIGSTOP, for its
    // delivery): else the stall did not happen and this test would prove nothing.
    let during: Vec<_> = messages
        .iter()
        .filter(|message| {
            let at = stored(message);
            at > stopped + TimeDelta::milliseconds(200) && at < resumed
        })
        .map(|message| (fire_time(message), stored(message)))
        .collect();
    assert!(
        during.is_empty(),
        "published while every replica was stopped: {during:?}"
    );
    let all = fires(&js).await;
    let mut failures = Vec::new();
    for policy in policies {
        let name = format!("stall-{policy}");
        let fires = &all[&name];
        let first = *fires.keys().next().expect("fires before the stall");
        let last = *fires.keys().last().expect("fires after the stall");
        assert!(
            first < stopped && last > resumed,
            "{name}: the window spans the stall: {fires:?}"
        );
        let counts = tally(fires, first, last);
        // The fires due while the replicas were frozen, as published (after SIGCONT).
        let late = messages
            .iter()
            .filter(|message| required_header(message, headers::SCHEDULE) == name)
            .filter(|message| {
                let fire = fire_time(message);
                fire > stopped && fire < resumed
            })
            .count();
        println!(
            "{name}: stall {:.1} s, fires expected {} published {} missing {} doubled {} \
             (of them due during the stall and published after it: {late})",
            (resumed - stopped).as_seconds_f64(),
            counts.expected,
            counts.published,
            counts.missing.len(),
            counts.doubled.len(),
        );
        if !counts.missing.is_empty() || !counts.doubled.is_empty() {
            failures.push(format!("{name}: {counts:?}"));
        }
    }
    if !failures.is_empty() {
        let logs: Vec<_> = replicas.iter().map(ReplicaProcess::log_text).collect();
        panic!(
            "every fire of the window must be published exactly once:\n{}\nreplica logs:\n{}",
            failures.join("\n"),
            logs.join("\n---\n")
        );
    }
}

/// A log capture for this thread: the tests below run on a current-thread runtime, so the
/// scheduler's tasks log here too.
fn capture_warnings() -> (
    jetq_tests::otel::LogBuffer,
    tracing::subscriber::DefaultGuard,
) {
    let logs = jetq_tests::otel::LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

#[tokio::test]
async fn an_empty_schedules_file_is_accepted_with_a_warning_naming_it() {
    let server = NatsServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (logs, _guard) = capture_warnings();
    let empty = dir.path().join("empty.yaml");
    write(&empty, "schedules: []\n");
    let built = scheduler(&server)
        .schedules_file(&empty)
        .build()
        .await
        .expect("an empty file is accepted");
    assert!(built.schedules().is_empty());
    let text = logs.text();
    let line = text
        .lines()
        .find(|line| line.contains("no schedules"))
        .unwrap_or_else(|| panic!("no warning about the empty file in:\n{text}"));
    assert!(
        line.contains("WARN") && line.contains(&empty.display().to_string()),
        "{line}"
    );

    // A file with a schedule says nothing of the kind.
    let full = dir.path().join("full.yaml");
    write(
        &full,
        "schedules:\n  - {name: r, cron: \"0 0 3 * * *\", queue: q, task: t}\n",
    );
    scheduler(&server)
        .schedules_file(&full)
        .build()
        .await
        .expect("scheduler builds");
    let text = logs.text();
    assert!(
        !text.contains(&full.display().to_string()),
        "warned about a file with a schedule:\n{text}"
    );
}

/// The value of `jetq.scheduler.fires.skipped` for a schedule and reason, as exported now.
fn skipped(
    provider: &opentelemetry_sdk::metrics::SdkMeterProvider,
    exporter: &opentelemetry_sdk::metrics::InMemoryMetricExporter,
    schedule: &str,
    reason: &str,
) -> u64 {
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    provider.force_flush().expect("metrics flushed");
    let exported = exporter.get_finished_metrics().expect("exported metrics");
    // Cumulative temporality: the latest export holds the totals.
    let Some(latest) = exported.last() else {
        return 0;
    };
    let mut total = 0;
    for metric in latest
        .scope_metrics()
        .flat_map(|scope| scope.metrics())
        .filter(|metric| metric.name() == jetq_scheduler::FIRES_SKIPPED)
    {
        let AggregatedMetrics::U64(MetricData::Sum(sum)) = metric.data() else {
            panic!("{} is a u64 counter", metric.name());
        };
        for point in sum.data_points() {
            let has = |key: &str, value: &str| {
                point
                    .attributes()
                    .any(|kv| kv.key.as_str() == key && kv.value.as_str() == value)
            };
            if has("jetq.schedule", schedule) && has("reason", reason) {
                total += point.value();
            }
        }
    }
    total
}

#[tokio::test]
async fn skipped_fires_are_logged_and_counted_with_their_reason() {
    use opentelemetry::metrics::MeterProvider;
    let server = NatsServer::start().await;
    let js = raw_jetstream(&server).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("schedules.yaml");
    write(
        &file,
        "schedules:\n  - {name: late, cron: \"* * * * * *\", queue: sched, task: t, catch_up: skip}\n  - {name: off, cron: \"* * * * * *\", queue: sched, task: t, enabled: false}\n",
    );
    let exporter = opentelemetry_sdk::metrics::InMemoryMetricExporter::default();
    let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_reader(opentelemetry_sdk::metrics::PeriodicReader::builder(exporter.clone()).build())
        .build();
    let (logs, _guard) = capture_warnings();
    let built = scheduler(&server)
        .schedules_file(&file)
        .meter(provider.meter("jetq-scheduler"))
        .build()
        .await
        .expect("scheduler builds");
    // `late` was last handled a minute ago: the fires since, up to the 1 s grace, are missed
    // and `catch_up: skip` drops them.
    let mark = second_floor(Utc::now()) - TimeDelta::seconds(60);
    js.get_key_value(Subjects::default().scheduler_bucket())
        .await
        .expect("state bucket")
        .put("schedule.late", mark.to_rfc3339().into())
        .await
        .expect("watermark set");
    let running = RunningScheduler::run(built);
    let started = Utc::now();
    fired_since(&js, "late", started).await;
    eventually(WAIT, "three disabled fires counted", || {
        let count = skipped(&provider, &exporter, "off", "disabled");
        async move { (count >= 3).then_some(()) }
    })
    .await;
    running.stop().await;

    let dropped = skipped(&provider, &exporter, "late", "catch_up_skip");
    assert!(
        (57..=60).contains(&dropped),
        "{dropped} fires of `late` counted as skipped"
    );
    let late = fires_of(&js, "late").await;
    let first = *late.keys().next().expect("a fire of late");
    assert_eq!(
        first,
        mark + TimeDelta::seconds(i64::try_from(dropped).expect("small") + 1),
        "the first fire published follows the last one dropped"
    );
    let text = logs.text();
    let warnings: Vec<_> = text.lines().filter(|line| line.contains("WARN")).collect();
    let about = |schedule: &str| -> Vec<&str> {
        warnings
            .iter()
            .copied()
            .filter(|line| line.contains(&format!("schedule={schedule} ")))
            .collect()
    };
    let late_lines = about("late");
    assert_eq!(late_lines.len(), 1, "{text}");
    for expected in [
        "reason=catch_up_skip",
        &format!("count={dropped}"),
        &format!(
            "first_fire={}",
            (mark + TimeDelta::seconds(1)).format("%Y-%m-%dT%H:%M:%SZ")
        ),
    ] {
        assert!(
            late_lines[0].contains(expected),
            "{expected} in {}",
            late_lines[0]
        );
    }
    // A disabled schedule warns once, then only counts.
    let off_lines = about("off");
    assert_eq!(off_lines.len(), 1, "{text}");
    assert!(off_lines[0].contains("reason=disabled"), "{}", off_lines[0]);
    assert!(fires_of(&js, "off").await.is_empty());
}

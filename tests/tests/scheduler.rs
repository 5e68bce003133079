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
    eventually, init_logs, raw_jetstream, required_header, scheduler, stream_messages, NatsServer,
    RunningScheduler, WAIT,
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

//! The rendered manifests against a real nats-server (the pinned one the suite runs):
//! the dev server's configuration with the generated users is valid, and `jetq-provision` plus
//! each pod's rendered environment give every component what it needs and nothing more.

mod support;

use std::{process::Stdio, time::Duration};

use jetq_contract::{
    async_nats::jetstream::{self, consumer::PullConsumer},
    ConnectionConfig, Subjects,
};
use jetq_harness::NatsServer;
use jetq_k8s::permissions;
use serde_json::Value;
use support::*;

/// A test password per user, as the Secret would hold it.
fn password(variable: &str) -> String {
    format!("pw-{}", variable.to_lowercase())
}

fn user_variables() -> Vec<(String, String)> {
    let deployed = std::fs::read_to_string(k8s().join("generated/nats/permissions.conf")).unwrap();
    permissions::users(&deployed)
}

/// A container's environment as its process gets it in a cluster whose NATS is `url`.
fn pod_env(objects: &[Value], container: &Value, url: &str) -> Vec<(String, String)> {
    environment(objects, container)
        .into_iter()
        .filter_map(|(key, source)| {
            let value = match source {
                Source::Literal(value) => value,
                Source::Secret { key, .. } => password(&key),
                _ => return None,
            };
            let value = if key == "JETQ_NATS_URL" {
                url.to_owned()
            } else {
                value
            };
            Some((key, value))
        })
        .collect()
}

#[tokio::test]
async fn the_dev_server_configuration_is_valid_with_the_rendered_users_and_secret() {
    let objects = rendered("dev");
    let dir = tempfile::tempdir().unwrap();
    for (map, key) in [
        ("nats-config", "nats.conf"),
        ("jetq-nats-users", "permissions.conf"),
    ] {
        let text = config_map(&objects, map)["data"][key].as_str().unwrap();
        std::fs::write(dir.path().join(key), text).unwrap();
    }
    let server = jetq_harness::pinned_server_binary();
    let check = |with_passwords: bool| {
        let mut command = std::process::Command::new(&server);
        command
            .args(["-t", "-c", "nats.conf"])
            .current_dir(dir.path())
            .env_clear()
            .env("POD_NAME", "nats-0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if with_passwords {
            for (_, variable) in user_variables() {
                command.env(&variable, password(&variable));
            }
        }
        command.output().unwrap()
    };
    let ok = check(true);
    assert!(
        ok.status.success(),
        "nats-server -t rejects the dev configuration:\n{}{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );
    // The passwords really come from the environment (the Secret), not from the files.
    let missing = check(false);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("JETQ_ADMIN_PASSWORD"));
}

/// A server with the users every overlay deploys, the Secret's passwords defined in its config.
async fn server() -> NatsServer {
    let deployed = std::fs::read_to_string(k8s().join("generated/nats/permissions.conf")).unwrap();
    let passwords: String = user_variables()
        .iter()
        .map(|(_, variable)| format!("{variable}: \"{}\"\n", password(variable)))
        .collect();
    NatsServer::builder()
        .extra_config(format!("{passwords}\n{deployed}"))
        .start()
        .await
}

async fn js(env: &[(String, String)]) -> jetstream::Context {
    let mut config = ConnectionConfig::from_env_iter(env.to_vec()).unwrap();
    config.request_timeout = Duration::from_millis(700);
    let client = jetq_contract::connect(&config, "k8s-test").await.unwrap();
    jetq_contract::jetstream(client, &config)
}

async fn run_provision(env: &[(String, String)], args: &[&str]) -> std::process::Output {
    provision_command(env, args).output().await.unwrap()
}

/// `jetq-provision` with exactly this environment and these arguments.
fn provision_command<S: AsRef<std::ffi::OsStr>>(
    env: &[(String, String)],
    args: &[S],
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_jetq-provision"));
    command.args(args).env_clear().envs(env.iter().cloned());
    command
}

/// A `jetq-provision` container's arguments (its command without the program).
fn args_of(container: &Value) -> Vec<String> {
    let command = container["command"].as_array().unwrap();
    assert_eq!(command[0], "jetq-provision", "{container}");
    command[1..]
        .iter()
        .map(|arg| arg.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn provisioning_and_each_pods_login_work_against_a_real_server() {
    let server = server().await;
    let url = server.url();
    let subjects = Subjects::default();
    // The dev overlay: one server, streams with one replica, like this test server.
    let objects = rendered("dev");
    let job = of_kind(&objects, "Job")[0];
    let admin = pod_env(&objects, &pod_spec(job)["containers"][0], &url);
    let job_args = args_of(&pod_spec(job)["containers"][0]);

    // Every pod's init container waits with the pod's own login; before the Job ran it gives
    // up after its budget, naming what is missing.
    let mut waits = Vec::new();
    for deployment in of_kind(&objects, "Deployment") {
        for init in pod_spec(deployment)["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
        {
            waits.push((
                name(deployment).to_owned(),
                pod_env(&objects, init, &url),
                args_of(init),
            ));
        }
    }
    assert_eq!(
        waits.len(),
        values().queues.len() + 1,
        "each worker and the scheduler wait"
    );
    for (pod, env, args) in &waits {
        let mut args = args.clone();
        args.extend(["--wait-budget".to_owned(), "1s".to_owned()]);
        let output = provision_command(env, &args).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{pod}: {stderr}");
        assert!(stderr.contains("jetq-provision"), "{pod}: {stderr}");
    }
    // Started before the Job, they finish once it ran.
    let mut waiting = Vec::new();
    for (pod, env, args) in &waits {
        let child = provision_command(env, args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        waiting.push((pod.clone(), child));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    for round in 0..2 {
        // Twice: re-applying runs it again, so it must be idempotent.
        let output = provision_command(&admin, &job_args).output().await.unwrap();
        assert!(
            output.status.success(),
            "jetq-provision (round {round}):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    for (pod, child) in waiting {
        let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{pod}: still waiting 30 s after the Job ran"))
            .unwrap();
        assert!(
            output.status.success(),
            "{pod}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    for queue in &values().queues {
        let env = &admin;
        // The durable has the worker's settings and no inactive_threshold.
        let settings = values().worker_settings(queue);
        let mut consumer: PullConsumer = js(env)
            .await
            .get_stream(subjects.tasks_stream())
            .await
            .unwrap()
            .get_consumer(&subjects.durable(&queue.name))
            .await
            .unwrap();
        let info = consumer.info().await.unwrap().config.clone();
        assert_eq!(
            info.durable_name.as_deref(),
            Some(subjects.durable(&queue.name).as_str())
        );
        assert_eq!(info.filter_subject, subjects.queue_filter(&queue.name));
        assert_eq!(info.ack_wait, settings.ack_wait);
        assert_eq!(info.max_deliver, settings.max_deliver);
        assert_eq!(info.max_ack_pending, settings.max_in_flight);
        assert_eq!(
            info.inactive_threshold,
            Duration::ZERO,
            "a sleeping queue keeps its durable"
        );
    }

    // Each worker pod's login binds its own queue's durable and no other.
    for queue in &values().queues {
        let deployment = find(&objects, "Deployment", &format!("worker-{}", queue.name));
        let env = pod_env(&objects, &pod_spec(deployment)["containers"][0], &url);
        let stream = js(&env)
            .await
            .get_stream(subjects.tasks_stream())
            .await
            .unwrap();
        let own: Result<PullConsumer, _> =
            stream.get_consumer(&subjects.durable(&queue.name)).await;
        assert!(
            own.is_ok(),
            "worker-{} cannot bind its durable: {:?}",
            queue.name,
            own.err()
        );
        for other in values().queues.iter().filter(|q| q.name != queue.name) {
            let theirs: Result<PullConsumer, _> =
                stream.get_consumer(&subjects.durable(&other.name)).await;
            assert!(
                theirs.is_err(),
                "worker-{} must not bind {}'s durable",
                queue.name,
                other.name
            );
        }
        // A worker may not provision.
        let mut env = env.clone();
        env.push(("JETQ_REQUEST_TIMEOUT".into(), "500ms".into()));
        let output = run_provision(&env, &["--queue", &queue.name]).await;
        assert!(
            !output.status.success(),
            "a worker's login must not provision"
        );
    }

    // The web pod (producer) enqueues to every queue without provisioning, and cannot read streams.
    let web = find(&objects, "Deployment", "web");
    let env = pod_env(&objects, &pod_spec(web)["containers"][0], &url);
    let settings: jetq_producer::ProducerSettings =
        jetq_contract::config::from_env_iter(env.clone()).unwrap();
    let producer = jetq_producer::Producer::builder()
        .connection(ConnectionConfig::from_env_iter(env.clone()).unwrap())
        .settings(settings)
        .connect()
        .await
        .expect("the web pod's producer connects with its own user");
    use jetq_examples::tasks::{GenerateCsv, SendEmail};
    producer
        .enqueue(&SendEmail {
            to: "ada@example.com".into(),
            subject: "Hi".into(),
            body: "Welcome".into(),
        })
        .await
        .expect("enqueue an email");
    producer
        .enqueue(&GenerateCsv {
            export_id: "e1".into(),
            rows: 1,
            row_delay_ms: 0,
        })
        .await
        .expect("enqueue an export");
    assert!(
        js(&env)
            .await
            .get_stream(subjects.tasks_stream())
            .await
            .is_err(),
        "a producer must not read streams"
    );
    producer
        .enqueue_in(
            Duration::from_secs(3600),
            &SendEmail {
                to: "later@example.com".into(),
                subject: "Reminder".into(),
                body: "Tomorrow".into(),
            },
        )
        .await
        .expect("the web pod enqueues a delayed task");

    // The scheduler pod starts with its own login on what the provisioning Job created.
    let scheduler = find(&objects, "Deployment", "scheduler");
    let env = pod_env(&objects, &pod_spec(scheduler)["containers"][0], &url);
    let mut settings = jetq_scheduler::SchedulerSettings::from_env_iter(env.clone()).unwrap();
    assert!(!settings.provision, "the scheduler pod does not provision");
    settings.schedules_file = None; // the ConfigMap mount is not here; the schedules are tested elsewhere
    jetq_scheduler::Scheduler::builder()
        .connection(ConnectionConfig::from_env_iter(env.clone()).unwrap())
        .settings(settings)
        .build()
        .await
        .expect("the scheduler pod starts with its own user");

    // The janitor pod starts its sweeper with its own login and no handlers.
    let janitor = find(&objects, "Deployment", "janitor");
    let env = pod_env(&objects, &pod_spec(janitor)["containers"][0], &url);
    let worker = jetq_consumer::Worker::builder()
        .connection(ConnectionConfig::from_env_iter(env.clone()).unwrap())
        .settings(jetq_consumer::WorkerSettings::from_env_iter(env.clone()).unwrap())
        .build()
        .await
        .expect("the janitor pod starts with its own user");
    assert!(worker.queues().is_empty(), "the janitor pulls no queue");

    // KEDA's view: the lag of each durable on the monitoring endpoint is what was enqueued.
    let jsz: Value = reqwest_json(&format!(
        "{}/jsz?consumers=true&accounts=true",
        server.monitor_url()
    ))
    .await;
    let account = jsz["account_details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == values().nats.account.as_str())
        .unwrap_or_else(|| panic!("no account {} in /jsz: {jsz}", values().nats.account));
    let stream = account["stream_detail"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == subjects.tasks_stream().as_str())
        .unwrap();
    for queue in &values().queues {
        let consumer = stream["consumer_detail"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == subjects.durable(&queue.name).as_str())
            .unwrap_or_else(|| panic!("no durable for {} in /jsz: {stream}", queue.name));
        let lag = consumer["num_pending"].as_u64().unwrap()
            + consumer["num_ack_pending"].as_u64().unwrap();
        assert_eq!(
            lag, 1,
            "{}: KEDA's lag is the task just enqueued",
            queue.name
        );
    }
}

/// The status code of a GET over plain HTTP/1.0, or None if nothing answers.
async fn http_status(url: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/')?;
    let mut stream = tokio::net::TcpStream::connect(host).await.ok()?;
    stream
        .write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut head = String::new();
    stream.read_to_string(&mut head).await.ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

/// GET a JSON document over plain HTTP/1.0 (the monitoring port), without an HTTP client crate.
async fn reqwest_json(url: &str) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    stream
        .write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    let (_, json) = body.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(json).unwrap()
}

/// The example worker binary as the tests built it (`target/<profile>/worker`).
fn worker_binary() -> Option<std::path::PathBuf> {
    let deps = std::env::current_exe().ok()?;
    let profile_dir = deps.parent()?.parent()?;
    let binary = profile_dir.join("worker");
    binary.exists().then_some(binary)
}

#[tokio::test]
async fn a_worker_pod_runs_its_queue_with_its_own_login_and_stops_within_its_grace_period() {
    if !serde_fields::<jetq_consumer::WorkerSettings>().contains(&"queues") {
        eprintln!(
            "PENDING: the worker does not read JETQ_QUEUES yet, so a worker-<queue> login cannot \
             start the example worker (it binds every queue it has handlers for); this test runs \
             once it does"
        );
        return;
    }
    let Some(binary) = worker_binary() else {
        panic!(
            "the example worker binary is not built (cargo build -p jetq-examples --bin worker)"
        );
    };
    let server = server().await;
    let url = server.url();
    let subjects = Subjects::default();
    let objects = rendered("dev");
    let job = &pod_spec(of_kind(&objects, "Job")[0])["containers"][0];
    let output = provision_command(&pod_env(&objects, job, &url), &args_of(job))
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let deployment = find(&objects, "Deployment", "worker-emails");
    let container = &pod_spec(deployment)["containers"][0];
    let mut env = pod_env(&objects, container, &url);
    let health = format!("127.0.0.1:{}", jetq_harness::free_port());
    for (key, value) in env.iter_mut() {
        match key.as_str() {
            // Nothing listens there: every send fails and is retried, which is all we need.
            "SMTP_HOST" => *value = "127.0.0.1".into(),
            "SMTP_PORT" => *value = jetq_harness::free_port().to_string(),
            "JETQ_HEALTH_LISTEN" => *value = health.clone(),
            _ => {}
        }
    }
    env.push(("OTEL_SDK_DISABLED".into(), "true".into()));
    let mut worker = tokio::process::Command::new(&binary)
        .env_clear()
        .envs(env.iter().cloned())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // The probes' endpoints answer on JETQ_HEALTH_LISTEN: alive, then ready (bound to its durable).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(container[probe]["httpGet"]["path"], path);
        loop {
            if http_status(&format!("http://{health}{path}")).await == Some(200) {
                break;
            }
            if let Ok(Some(status)) = worker.try_wait() {
                panic!("the worker exited ({status}) before {path} answered");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path} never answered 200"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // The producer's login enqueues an email; the worker (its own login) takes it.
    let web = find(&objects, "Deployment", "web");
    let web_env = pod_env(&objects, &pod_spec(web)["containers"][0], &url);
    let producer = jetq_producer::Producer::builder()
        .connection(ConnectionConfig::from_env_iter(web_env.clone()).unwrap())
        .provision(false)
        .connect()
        .await
        .unwrap();
    use jetq_examples::tasks::SendEmail;
    producer
        .enqueue(&SendEmail {
            to: "ada@example.com".into(),
            subject: "Hi".into(),
            body: "Welcome".into(),
        })
        .await
        .unwrap();
    let admin_env = pod_env(&objects, job, &url);
    let admin = js(&admin_env).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut consumer: PullConsumer = admin
            .get_stream(subjects.tasks_stream())
            .await
            .unwrap()
            .get_consumer(&subjects.durable("emails"))
            .await
            .unwrap();
        if consumer.info().await.unwrap().delivered.consumer_sequence >= 1 {
            break;
        }
        if let Ok(Some(status)) = worker.try_wait() {
            let mut stderr = String::new();
            use tokio::io::AsyncReadExt;
            worker
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .await
                .unwrap();
            panic!("the worker exited ({status}):\n{stderr}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker never took the task"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // SIGTERM, as Kubernetes sends it: the worker is gone before terminationGracePeriodSeconds.
    let grace = Duration::from_secs(
        pod_spec(deployment)["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap(),
    );
    let pid = worker.id().unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = tokio::time::timeout(grace, worker.wait())
        .await
        .expect("the worker outlived terminationGracePeriodSeconds")
        .unwrap();
    assert!(status.success(), "{status}");
}

/// Flow control and priority levels with the rendered users (issue 21): the web pod's producer
/// takes a unique key, gets the holder back for a duplicate, and takes over the key of a holder
/// that left the task stream; the emails worker pod's login opens both buckets, registers its
/// limits, holds and frees a concurrency slot, releases the unique key when the task ends, and
/// writes the notes of waiting tasks, but not another queue's limits or keys; and it pulls
/// and acks from its queue's `~high` and `~low` durables, not another queue's.
#[tokio::test]
async fn flow_control_and_priority_levels_work_with_each_pods_own_login() {
    use futures::StreamExt;
    use jetq_consumer::{ConcurrencyLimit, Limits, RateLimit, TaskContext};
    use jetq_contract::{
        async_nats::jetstream::kv::{Operation, Watch},
        flow::concurrency::Slots,
        Task,
    };
    use jetq_examples::tasks::SendEmail;
    use jetq_producer::{EnqueueOptions, Unique};

    /// Waits (bounded) until the watched key's latest entry satisfies `done`.
    async fn until(
        mut watch: Watch,
        what: &str,
        done: impl Fn(&jetq_contract::async_nats::jetstream::kv::Entry) -> bool,
    ) {
        tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(entry) = watch.next().await {
                if done(&entry.unwrap()) {
                    return;
                }
            }
            panic!("the watch of {what} ended");
        })
        .await
        .unwrap_or_else(|_| panic!("{what}: not within 20 s"));
    }

    let server = server().await;
    let url = server.url();
    let subjects = Subjects::default();
    let objects = rendered("dev");
    let job = &pod_spec(of_kind(&objects, "Job")[0])["containers"][0];
    let admin_env = pod_env(&objects, job, &url);
    let output = provision_command(&admin_env, &args_of(job))
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let admin = js(&admin_env).await;
    let tasks = admin.get_stream(subjects.tasks_stream()).await.unwrap();
    // Each queue's level durables (`worker-<queue>~high`, `~low`): created here when this
    // jetq-provision does not create them yet.
    for queue in &values().queues {
        for level in ["high", "low"] {
            let token = format!("{}~{level}", queue.name);
            let durable = subjects.durable(&token);
            if tasks
                .get_consumer::<jetstream::consumer::pull::Config>(&durable)
                .await
                .is_err()
            {
                tasks
                    .create_consumer(jetstream::consumer::pull::Config {
                        durable_name: Some(durable.clone()),
                        filter_subject: subjects.queue_filter(&token),
                        ack_policy: jetstream::consumer::AckPolicy::Explicit,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
        }
    }

    // The web pod: unique keys.
    let web = find(&objects, "Deployment", "web");
    let web_env = pod_env(&objects, &pod_spec(web)["containers"][0], &url);
    let producer = jetq_producer::Producer::builder()
        .connection(ConnectionConfig::from_env_iter(web_env.clone()).unwrap())
        .provision(false)
        .connect()
        .await
        .unwrap();
    let email = SendEmail {
        to: "ada@example.com".into(),
        subject: "Hi".into(),
        body: "Welcome".into(),
    };
    let options = EnqueueOptions::new()
        .unique(Unique::key("welcome:ada"))
        .limit_key("tenant-1");
    let first = producer
        .enqueue_with(&email, options.clone())
        .await
        .expect("the producer's login takes a unique key");
    assert!(!first.duplicate);
    let again = producer
        .enqueue_with(&email, options.clone())
        .await
        .unwrap();
    assert!(
        again.duplicate && again.id == first.id,
        "the holder is read back"
    );
    // A holder that left the stream without releasing its key: the producer reads the stream
    // at its sequence (STREAM.MSG.GET), finds it gone and takes the key over.
    assert!(tasks.delete_message(first.sequence).await.unwrap());
    let fresh = producer
        .enqueue_with(&email, options.clone())
        .await
        .unwrap();
    assert!(!fresh.duplicate, "a vanished holder's key is taken over");
    let producer_js = js(&web_env).await;
    assert!(
        producer_js.get_key_value("JETQ_LIMITS").await.is_err(),
        "a producer does not open the limits bucket"
    );

    // The emails worker pod: limits and unique keys of its queue.
    let unique_entry =
        jetq_contract::flow::keys::unique_entry("emails", SendEmail::NAME, "welcome:ada");
    let slots_entry = format!("conc.emails.{}.tenant-1", SendEmail::NAME);
    let unique_kv = admin.get_key_value("JETQ_UNIQUE").await.unwrap();
    let limits_kv = admin.get_key_value("JETQ_LIMITS").await.unwrap();
    let released = unique_kv.watch_with_history(&unique_entry).await.unwrap();
    let freed = limits_kv.watch_with_history(&slots_entry).await.unwrap();
    let deployment = find(&objects, "Deployment", "worker-emails");
    let worker_env = pod_env(&objects, &pod_spec(deployment)["containers"][0], &url);
    let (ran_tx, mut ran) = tokio::sync::mpsc::unbounded_channel::<String>();
    let worker = jetq_consumer::Worker::builder()
        .connection(ConnectionConfig::from_env_iter(worker_env.clone()).unwrap())
        .settings(jetq_consumer::WorkerSettings::from_env_iter(worker_env.clone()).unwrap())
        .handler(move |email: SendEmail, _ctx: TaskContext| {
            let ran_tx = ran_tx.clone();
            async move {
                ran_tx.send(email.to).ok();
                Ok::<(), jetq_consumer::TaskError>(())
            }
        })
        .limits::<SendEmail>(
            Limits::new()
                .rate(RateLimit::new(100.0, 10).unwrap())
                .concurrency(ConcurrencyLimit::new(1).unwrap().per_key()),
        )
        .build()
        .await
        .expect("the worker pod's login opens the limits bucket");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));
    let to = tokio::time::timeout(Duration::from_secs(20), ran.recv())
        .await
        .expect("the worker runs the limited, unique task")
        .unwrap();
    assert_eq!(to, "ada@example.com");
    until(released, "the unique key released by the worker", |entry| {
        matches!(entry.operation, Operation::Delete | Operation::Purge)
    })
    .await;
    until(freed, "the slot taken and freed by the worker", |entry| {
        entry.operation == Operation::Put && Slots::from_json(&entry.value).holders.is_empty()
    })
    .await;
    for written in [
        format!("conf.emails.{}", SendEmail::NAME),
        format!("rate.emails.{}", SendEmail::NAME),
    ] {
        assert!(
            limits_kv.get(&written).await.unwrap().is_some(),
            "the worker wrote {written}"
        );
    }
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the worker stops")
        .unwrap();

    // The notes of waiting tasks are keyed by task sequence; another queue's entries are not its.
    let worker_js = js(&worker_env).await;
    let limits = worker_js.get_key_value("JETQ_LIMITS").await.unwrap();
    let note = || r#"{"at":"2026-01-01T00:00:00Z","limit":"rate.emails.send_email"}"#.into();
    limits
        .put("resv.987654", note())
        .await
        .expect("a worker writes a reservation");
    assert!(limits.get("resv.987654").await.unwrap().is_some());
    limits.purge("resv.987654").await.expect("and purges it");
    limits
        .put("wait.987654", note())
        .await
        .expect("a worker writes a waiting note");
    assert!(
        limits
            .put("conc.exports.generate_csv", note())
            .await
            .is_err(),
        "an emails worker must not write the exports limits"
    );
    assert!(
        limits.get("rate.exports.generate_csv").await.is_err(),
        "an emails worker must not read the exports limits"
    );
    let unique = worker_js.get_key_value("JETQ_UNIQUE").await.unwrap();
    assert!(
        unique.put("exports.generate_csv.k", note()).await.is_err(),
        "an emails worker must not write the exports unique keys"
    );

    // The level durables: the worker pulls and acks its own, not another queue's.
    let stream = worker_js.get_stream(subjects.tasks_stream()).await.unwrap();
    for level in ["high", "low"] {
        let subject = format!("jetq.task.emails~{level}.{}", SendEmail::NAME);
        producer_js
            .publish(subject.clone(), "{}".into())
            .await
            .unwrap()
            .await
            .expect("the producer publishes a task of a level");
        let durable = subjects.durable(&format!("emails~{level}"));
        let consumer: PullConsumer = stream
            .get_consumer(&durable)
            .await
            .unwrap_or_else(|err| panic!("worker-emails cannot bind {durable}: {err}"));
        let mut batch = consumer
            .batch()
            .max_messages(1)
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .unwrap_or_else(|err| panic!("worker-emails cannot pull {durable}: {err}"));
        let message = tokio::time::timeout(Duration::from_secs(10), batch.next())
            .await
            .expect("a message within 10 s")
            .expect("a message")
            .unwrap();
        assert_eq!(message.subject.as_str(), subject);
        message
            .double_ack()
            .await
            .unwrap_or_else(|err| panic!("worker-emails cannot ack on {durable}: {err}"));
        let theirs: Result<PullConsumer, _> = stream
            .get_consumer(&subjects.durable(&format!("exports~{level}")))
            .await;
        assert!(
            theirs.is_err(),
            "worker-emails must not bind exports~{level}"
        );
    }
}

/// Batches and chains with the rendered users (issue 22): the web pod's producer enqueues a
/// batch of two emails whose `on_complete` callback is an export, and a chain email → export;
/// the emails worker pod's login records the members in `JETQ_BATCHES` and enqueues the
/// callback and the chain's next link on the **exports** queue, whose worker pod's login runs
/// them; a chord member's result over 16 KiB goes to `JETQ_RESULTS` with the emails login and
/// is read back with the exports login; the producer reads the batch's status (its markers, listed with an ephemeral
/// consumer). A worker still cannot enqueue on a queue that is not deployed.
///
/// Checked by hand once: with `"$KV.JETQ_BATCHES.>"` removed from the worker roles of
/// `k8s/generated/nats/permissions.conf` the callback never comes (the member's marker is
/// refused, the member is redelivered), and so does it without the `"jetq.task.exports.*"`
/// line (the callback's publish is refused).
#[tokio::test]
async fn a_batch_and_a_chain_run_to_their_callback_and_next_link_with_each_pods_own_login() {
    use jetq_consumer::{TaskContext, TaskError};
    use jetq_examples::tasks::{GenerateCsv, SendEmail};
    use jetq_producer::{BatchOptions, Chain};

    let server = server().await;
    let url = server.url();
    let objects = rendered("dev");
    let job = &pod_spec(of_kind(&objects, "Job")[0])["containers"][0];
    let admin_env = pod_env(&objects, job, &url);
    let output = provision_command(&admin_env, &args_of(job))
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let admin = js(&admin_env).await;

    // The two worker pods, each with its own login, in this process.
    let env_of = |name: &str| {
        pod_env(
            &objects,
            &pod_spec(find(&objects, "Deployment", name))["containers"][0],
            &url,
        )
    };
    let (emails_env, exports_env) = (env_of("worker-emails"), env_of("worker-exports"));
    let (sent_tx, mut sent) = tokio::sync::mpsc::unbounded_channel::<String>();
    let emails = jetq_consumer::Worker::builder()
        .connection(ConnectionConfig::from_env_iter(emails_env.clone()).unwrap())
        .settings(jetq_consumer::WorkerSettings::from_env_iter(emails_env.clone()).unwrap())
        .handler(move |email: SendEmail, ctx: TaskContext| {
            let sent = sent_tx.clone();
            async move {
                if email.to == "chord@example.com" {
                    // Over 16 KiB: stored in the results store by this login.
                    ctx.set_result(&serde_json::json!({ "log": "x".repeat(20_000) }))
                        .map_err(TaskError::fatal)?;
                }
                sent.send(email.to).ok();
                Ok::<(), TaskError>(())
            }
        })
        .build()
        .await
        .expect("the emails worker pod's login builds a worker");
    let (export_tx, mut exported) = tokio::sync::mpsc::unbounded_channel::<String>();
    let exports = jetq_consumer::Worker::builder()
        .connection(ConnectionConfig::from_env_iter(exports_env.clone()).unwrap())
        .settings(jetq_consumer::WorkerSettings::from_env_iter(exports_env.clone()).unwrap())
        .handler(move |csv: GenerateCsv, _ctx: TaskContext| {
            let exported = export_tx.clone();
            async move {
                exported.send(csv.export_id).ok();
                Ok::<(), TaskError>(())
            }
        })
        .build()
        .await
        .expect("the exports worker pod's login builds a worker");
    let mut runs = Vec::new();
    for worker in [emails, exports] {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(worker.run_until(async move {
            let _ = stopped.await;
        }));
        runs.push((stop, run));
    }
    // The producer checks a callback's type against the catalog the exports worker writes.
    let catalog = admin.get_key_value("JETQ_CATALOG").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while catalog
        .get("exports.generate_csv")
        .await
        .ok()
        .flatten()
        .is_none()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the exports worker never wrote its catalog entry"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let web_env = pod_env(
        &objects,
        &pod_spec(find(&objects, "Deployment", "web"))["containers"][0],
        &url,
    );
    let producer = jetq_producer::Producer::builder()
        .connection(ConnectionConfig::from_env_iter(web_env.clone()).unwrap())
        .provision(false)
        .connect()
        .await
        .unwrap();
    let email = |to: &str| SendEmail {
        to: to.into(),
        subject: "Hi".into(),
        body: "Welcome".into(),
    };
    let export = |id: &str| GenerateCsv {
        export_id: id.into(),
        rows: 1,
        row_delay_ms: 0,
    };
    producer
        .batch(BatchOptions::new().id("k8s-batch"))
        .add(&email("ada@example.com"))
        .add(&email("grace@example.com"))
        .on_complete(&export("batch-callback"))
        .enqueue()
        .await
        .expect("the producer's login enqueues a batch");
    producer
        .batch(BatchOptions::new().id("k8s-chord").chord())
        .add(&email("chord@example.com"))
        .on_complete(&export("chord-callback"))
        .enqueue()
        .await
        .expect("the producer's login enqueues a chord");
    producer
        .enqueue_chain(
            Chain::new()
                .id("k8s-chain")
                .then(&email("linus@example.com"))
                .then(&export("chain-link")),
        )
        .await
        .expect("the producer's login starts a chain");

    let mut to = Vec::new();
    for _ in 0..4 {
        let next = tokio::time::timeout(Duration::from_secs(20), sent.recv())
            .await
            .expect("the emails worker runs the members and the chain's first link")
            .unwrap();
        to.push(next);
    }
    to.sort();
    assert_eq!(
        to,
        [
            "ada@example.com",
            "chord@example.com",
            "grace@example.com",
            "linus@example.com"
        ]
    );
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = tokio::time::timeout(Duration::from_secs(30), exported.recv())
            .await
            .expect("the emails worker's login enqueued the callback and the next link on exports")
            .unwrap();
        ids.push(id);
    }
    ids.sort();
    assert_eq!(ids, ["batch-callback", "chain-link", "chord-callback"]);
    // The chord member's large result: written to JETQ_RESULTS by the emails worker's login,
    // readable by the exports worker's (the callback's).
    let markers = admin.get_key_value("JETQ_BATCHES").await.unwrap();
    let mut keys = futures::TryStreamExt::try_collect::<Vec<String>>(markers.keys().await.unwrap())
        .await
        .unwrap();
    keys.retain(|key| key.starts_with("m.k8s-chord."));
    assert_eq!(keys.len(), 1, "{keys:?}");
    let marker: jetq_contract::workflow::MemberMarker =
        serde_json::from_slice(&markers.get(&keys[0]).await.unwrap().unwrap()).unwrap();
    let name = marker
        .result_ref
        .expect("a result over 16 KiB is stored by reference");
    let results = jetq_contract::workflow::results::ChordResults::open(
        &js(&exports_env).await,
        &jetq_contract::Subjects::default(),
    )
    .await
    .expect("the exports worker's login opens the results store");
    let value = results
        .get(&name)
        .await
        .expect("the exports worker's login reads a member's result");
    assert_eq!(value["log"].as_str().map(str::len), Some(20_000));
    let status = producer
        .batch_status("k8s-batch")
        .await
        .expect("the producer's login reads the batch's markers")
        .expect("the batch exists");
    assert_eq!((status.total, status.succeeded, status.pending), (2, 2, 0));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let chain = producer.chain_status("k8s-chain").await.unwrap().unwrap();
        if chain.state == jetq_contract::workflow::ChainState::Succeeded {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the chain never succeeded: {chain:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Task subjects of the deployed queues only.
    let worker_js = js(&emails_env).await;
    let acked = match worker_js
        .publish("jetq.task.billing.charge", "{}".into())
        .await
    {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    };
    assert!(
        !acked,
        "a worker must not enqueue on a queue that is not deployed"
    );

    for (stop, run) in runs {
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .expect("the worker stops")
            .unwrap();
    }
}

/// Worker control (PROTOCOL.md §16, issue 24) with the rendered users and the example worker
/// binary: the emails worker pod, logged in as `worker-emails`, runs an untracked email whose
/// SMTP server accepts and never greets; the provisioning Job's login (admin, the user
/// `jetq cancel` and the console run as) finds the worker in its presence record and asks it on
/// `jetq.control.worker.<id>.cancel`; the worker answers `found` to the requester's inbox, and
/// the task is gone for good: killed right after, nothing awaits an ack or is redelivered.
/// Without `jetq.control.worker.*.cancel` in the worker role the request finds no responder;
/// without its `allow_responses` the reply is refused and the request times out.
#[tokio::test]
async fn a_worker_pod_cancels_the_task_it_runs_when_the_operator_asks() {
    use jetq_contract::control::{cancel_subject, CancelReply, CancelRequest};
    let Some(binary) = worker_binary() else {
        panic!(
            "the example worker binary is not built (cargo build -p jetq-examples --bin worker)"
        );
    };
    let server = server().await;
    let url = server.url();
    let subjects = Subjects::default();
    let objects = rendered("dev");
    let job = &pod_spec(of_kind(&objects, "Job")[0])["containers"][0];
    let admin_env = pod_env(&objects, job, &url);
    let output = provision_command(&admin_env, &args_of(job))
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // An SMTP server that accepts and never greets: the email's handler stays running.
    let smtp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let smtp_port = smtp.local_addr().unwrap().port();
    let (connected_tx, mut connected) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = smtp.accept().await {
            held.push(socket);
            let _ = connected_tx.send(());
        }
    });

    let deployment = find(&objects, "Deployment", "worker-emails");
    let container = &pod_spec(deployment)["containers"][0];
    let mut env = pod_env(&objects, container, &url);
    let overrides = [
        ("SMTP_HOST", "127.0.0.1".to_owned()),
        ("SMTP_PORT", smtp_port.to_string()),
        ("SMTP_TIMEOUT", "60s".to_owned()),
        (
            "JETQ_HEALTH_LISTEN",
            format!("127.0.0.1:{}", jetq_harness::free_port()),
        ),
        ("JETQ_PRESENCE_INTERVAL", "300ms".to_owned()),
        ("OTEL_SDK_DISABLED", "true".to_owned()),
    ];
    env.retain(|(key, _)| overrides.iter().all(|(name, _)| key != name));
    env.extend(
        overrides
            .iter()
            .map(|(key, value)| ((*key).to_owned(), value.clone())),
    );
    let mut worker = tokio::process::Command::new(&binary)
        .env_clear()
        .envs(env.iter().cloned())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = worker.id().unwrap();

    // The web pod's login enqueues an untracked email; the worker's handler starts on it.
    let web = find(&objects, "Deployment", "web");
    let web_env = pod_env(&objects, &pod_spec(web)["containers"][0], &url);
    let producer = jetq_producer::Producer::builder()
        .connection(ConnectionConfig::from_env_iter(web_env).unwrap())
        .provision(false)
        .connect()
        .await
        .unwrap();
    use jetq_examples::tasks::SendEmail;
    let task = producer
        .enqueue(&SendEmail {
            to: "ada@example.com".into(),
            subject: "Hi".into(),
            body: "Welcome".into(),
        })
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), connected.recv())
        .await
        .expect("the worker's handler connects to the SMTP server")
        .expect("connected");

    // The operator (admin) finds the worker in the presence records, as `jetq cancel` does.
    let admin = js(&admin_env).await;
    let worker_id = jetq_harness::eventually(
        Duration::from_secs(20),
        "the worker's presence record",
        || {
            let admin = admin.clone();
            let subjects = subjects.clone();
            async move {
                let records = jetq_contract::presence::read_records(&admin, &subjects)
                    .await
                    .ok()?;
                records
                    .into_iter()
                    .find(|record| record.pid == pid)
                    .map(|record| record.id)
            }
        },
    )
    .await;
    let operator = jetq_contract::connect(
        &ConnectionConfig::from_env_iter(admin_env.clone()).unwrap(),
        "operator",
    )
    .await
    .unwrap();
    let body = serde_json::to_vec(&CancelRequest {
        id: task.id.clone(),
        sequence: task.sequence,
        by: Some("ops".into()),
    })
    .unwrap();
    let reply = tokio::time::timeout(
        Duration::from_secs(20),
        operator.request(cancel_subject(subjects.prefix(), &worker_id), body.into()),
    )
    .await
    .expect("the request ends")
    .expect("the worker's login may take cancel requests and reply to them");
    let reply: CancelReply = serde_json::from_slice(&reply.payload).expect("a reply body");
    assert!(reply.found, "{reply:?}");
    assert_eq!(reply.sequence, task.sequence);
    assert_eq!(reply.attempt, 1);
    // Killed right after it answered, its handler still waiting for the SMTP greeting.
    worker.kill().await.unwrap();

    // The task was terminated before the answer: gone, nothing awaiting an ack, no redelivery.
    let stream = admin.get_stream(subjects.tasks_stream()).await.unwrap();
    jetq_harness::eventually(
        Duration::from_secs(20),
        "the cancelled task leaves the task stream",
        || {
            let stream = stream.clone();
            async move {
                stream
                    .get_raw_message(task.sequence)
                    .await
                    .is_err()
                    .then_some(())
            }
        },
    )
    .await;
    let mut consumer: PullConsumer = stream
        .get_consumer(&subjects.durable("emails"))
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!(info.num_ack_pending, 0, "{info:?}");
    assert_eq!(info.num_pending, 0, "{info:?}");
}

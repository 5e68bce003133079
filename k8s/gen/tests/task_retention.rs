//! `taskRetention: limits` (issue 20, docs/DURABLE_DRAIN.md): the manifests rendered with it
//! set `JETQ_TASK_RETENTION=limits` on every process that creates or compares the task stream
//! and grant each queue's worker user the purger's rights, and only those; the default renders
//! exactly what it rendered before the setting existed. Against a real nats-server with the
//! rendered users: the Job provisions a Limits task stream, a worker pod's login purges its
//! queue's finished tasks (and reads the unswept advisories that hold the purge), while the
//! default users refuse the same purge request.

mod support;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use jetq_consumer::{TaskContext, WorkerSettings};
use jetq_contract::{
    async_nats::{self, jetstream, jetstream::stream::RetentionPolicy},
    config::TaskRetention,
    ConnectionConfig, StreamSettings, Subjects,
};
use jetq_examples::tasks::SendEmail;
use jetq_harness::{eventually, NatsServer};
use jetq_k8s::{permissions, Values};
use serde_json::Value;
use support::*;

// ---------------------------------------------------------------------------------------------
// A k8s/ tree rendered from edited values

/// A copy of this repository's `k8s/` (overlays, base, components, NATS files) in a temporary
/// directory, with `values.yaml` edited by `edit` and `generated/` rendered from it.
struct Tree {
    _dir: tempfile::TempDir,
    k8s: PathBuf,
    files: BTreeMap<String, String>,
}

impl Tree {
    fn new(edit: impl Fn(String) -> String) -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("k8s");
        for sub in ["base", "components", "overlays", "nats"] {
            copy_dir(&k8s().join(sub), &root.join(sub));
        }
        let text = edit(std::fs::read_to_string(k8s().join("values.yaml")).unwrap());
        std::fs::write(root.join("values.yaml"), text).unwrap();
        let files = jetq_k8s::render_file(&root.join("values.yaml")).unwrap();
        jetq_k8s::write(&files, &root.join("generated")).unwrap();
        Tree {
            _dir: dir,
            k8s: root,
            files,
        }
    }

    fn limits() -> Tree {
        Tree::new(|text| {
            assert!(text.contains("\ntaskRetention: workqueue\n"), "{text}");
            text.replace("\ntaskRetention: workqueue\n", "\ntaskRetention: limits\n")
        })
    }

    /// `kubectl kustomize` of one of its overlays, as JSON objects.
    fn rendered(&self, overlay: &str) -> Vec<Value> {
        let dir = self.k8s.join("overlays").join(overlay);
        let output = Command::new("kubectl")
            .arg("kustomize")
            .arg(&dir)
            .output()
            .unwrap_or_else(|err| panic!("cannot run kubectl (is it installed?): {err}"));
        assert!(
            output.status.success(),
            "kubectl kustomize {} failed:\n{}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        yaml_documents(&String::from_utf8(output.stdout).unwrap())
    }

    fn permissions(&self) -> &str {
        &self.files["nats/permissions.conf"]
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// The main container of a workload.
fn main_container(workload: &Value) -> &Value {
    &pod_spec(workload)["containers"][0]
}

/// The `NAME_PERMISSIONS = { ... }` blocks of a rendered permissions file, by name.
fn permission_blocks(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut blocks = BTreeMap::new();
    let mut current: Option<(String, Vec<String>)> = None;
    for line in text.lines() {
        if let Some(name) = line.strip_suffix("_PERMISSIONS = {") {
            current = Some((name.to_owned(), Vec::new()));
        } else if line == "}" {
            if let Some((name, lines)) = current.take() {
                blocks.insert(name, lines);
            }
        } else if let Some((_, lines)) = current.as_mut() {
            lines.push(line.trim().to_owned());
        }
    }
    blocks
}

/// The lines of `longer` that are not in `shorter`, which they were inserted into (trimmed).
fn inserted(longer: &str, shorter: &str) -> Vec<String> {
    let mut rest = shorter.lines().peekable();
    let mut added = Vec::new();
    for line in longer.lines() {
        if rest.peek() == Some(&line) {
            rest.next();
        } else {
            added.push(line.trim().to_owned());
        }
    }
    assert_eq!(rest.next(), None, "a line of the shorter text is missing");
    added
}

fn quoted_grants() -> Vec<String> {
    permissions::limits_grants()
        .iter()
        .map(|grant| format!("\"{grant}\","))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The manifests

#[test]
fn limits_sets_the_retention_on_every_stream_user_and_grants_the_purge_to_workers_only() {
    let tree = Tree::limits();
    let queues: Vec<String> = values().queues.iter().map(|q| q.name.clone()).collect();
    for overlay in OVERLAYS {
        let objects = tree.rendered(overlay);
        let job = of_kind(&objects, "Job");
        assert_eq!(job.len(), 1, "{overlay}: one provisioning Job");
        let mut expected: Vec<(String, &Value)> = vec![("Job".into(), job[0])];
        for deployment in ["janitor", "scheduler", "web"]
            .into_iter()
            .map(str::to_owned)
            .chain(queues.iter().map(|q| format!("worker-{q}")))
        {
            expected.push((
                deployment.clone(),
                find(&objects, "Deployment", &deployment),
            ));
        }
        for (what, workload) in &expected {
            let env = environment(&objects, main_container(workload));
            assert_eq!(
                literal(&env, "JETQ_TASK_RETENTION"),
                Some("limits"),
                "{overlay} {what}"
            );
            let streams = StreamSettings::from_env_iter(process_env(&env))
                .unwrap_or_else(|err| panic!("{overlay} {what}: {err}"));
            assert_eq!(
                streams.task_retention,
                TaskRetention::Limits,
                "{overlay} {what}"
            );
        }
        // The users every overlay deploys are the limits ones.
        if *overlay == "dev" {
            let users = config_map(&objects, "jetq-nats-users");
            assert_eq!(users["data"]["permissions.conf"], tree.permissions());
        }
    }
    let chart: Value = serde_norway::from_str(&tree.files["nats/helm-values.yaml"]).unwrap();
    assert_eq!(
        chart["configMap"]["merge"]["data"]["jetq-users.conf"],
        tree.permissions()
    );

    // The purger's rights: in each worker role; every other role is unchanged (the janitor
    // already reads the advisory stream's info for its sweeper), and none of them may purge
    // the task stream or read advisories by subject.
    let grants = quoted_grants();
    let blocks = permission_blocks(tree.permissions());
    let shipped = std::fs::read_to_string(k8s().join("generated/nats/permissions.conf")).unwrap();
    let default_blocks = permission_blocks(&shipped);
    for queue in &queues {
        let block = &blocks[&format!("WORKER_{}", jetq_k8s::values::upper(queue))];
        for grant in &grants {
            assert!(block.contains(grant), "worker-{queue} lacks {grant}");
        }
    }
    assert_eq!(
        blocks.keys().collect::<Vec<_>>(),
        default_blocks.keys().collect::<Vec<_>>()
    );
    assert!(blocks.len() > queues.len(), "{blocks:?}");
    for (name, block) in blocks
        .iter()
        .filter(|(name, _)| !name.starts_with("WORKER_"))
    {
        assert_eq!(block, &default_blocks[name], "{name} changed");
        for grant in [&grants[0], &grants[2]] {
            assert!(!block.contains(grant), "{name} must not get {grant}");
        }
    }
    // Nothing else changes: the rest is the default users; the added lines are the header's
    // note and the grants, once per worker role.
    let added: Vec<String> = inserted(tree.permissions(), &shipped);
    let mut expected: Vec<String> = added
        .iter()
        .filter(|line| line.starts_with('#'))
        .cloned()
        .collect();
    assert_eq!(expected.len(), 2, "{added:?}");
    for _ in &queues {
        expected.extend(grants.iter().cloned());
    }
    assert_eq!(added, expected);
}

#[test]
fn the_default_renders_what_it_rendered_before_the_setting() {
    // The shipped values say `workqueue`; without the key it is the same, byte for byte, and
    // both are k8s/generated as committed.
    let shipped = std::fs::read_to_string(k8s().join("values.yaml")).unwrap();
    assert_eq!(values().task_retention(), TaskRetention::WorkQueue);
    let without_key = Tree::new(|text| text.replace("\ntaskRetention: workqueue\n", "\n"));
    assert_ne!(
        std::fs::read_to_string(without_key.k8s.join("values.yaml")).unwrap(),
        shipped
    );
    let default = jetq_k8s::render_file(&k8s().join("values.yaml")).unwrap();
    assert_eq!(without_key.files, default);
    let stale = jetq_k8s::stale(&default, &k8s().join("generated")).unwrap();
    assert!(stale.is_empty(), "{stale:?}");

    // No pod is told a retention, and no user gets the purger's rights.
    for overlay in OVERLAYS {
        let objects = support::rendered(overlay);
        for workload in workloads(&objects) {
            for container in containers(workload) {
                let env = environment(&objects, container);
                assert!(
                    !env.iter().any(|(key, _)| key == "JETQ_TASK_RETENTION"),
                    "{overlay} {}",
                    name(workload)
                );
            }
        }
    }
    for (name, block) in permission_blocks(&default["nats/permissions.conf"]) {
        for grant in quoted_grants() {
            // The janitor's sweeper reads the advisory stream's info; no worker does by default.
            if name == "JANITOR" && grant.contains(".INFO.") {
                continue;
            }
            assert!(!block.contains(&grant), "{name}: {grant}");
        }
    }
}

#[test]
fn a_bad_task_retention_is_refused_naming_the_key_and_the_allowed_values() {
    let shipped = std::fs::read_to_string(k8s().join("values.yaml")).unwrap();
    for bad in ["interest", "Limits", "\"\""] {
        let text = shipped.replace(
            "\ntaskRetention: workqueue\n",
            &format!("\ntaskRetention: {bad}\n"),
        );
        let err = Values::from_yaml(&text).unwrap_err().to_string();
        for needle in ["taskRetention", "workqueue", "limits"] {
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    // The binary: exit status 1, the message, nothing written.
    let project = tempfile::tempdir().unwrap();
    std::fs::write(
        project.path().join("values.yaml"),
        shipped.replace(
            "\ntaskRetention: workqueue\n",
            "\ntaskRetention: interest\n",
        ),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_jetq-k8s"))
        .arg("render")
        .current_dir(project.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("taskRetention \"interest\"")
            && stderr.contains("`workqueue`")
            && stderr.contains("`limits`"),
        "{stderr}"
    );
    assert!(!project.path().join("generated").exists());
}

// ---------------------------------------------------------------------------------------------
// Against a real nats-server

/// A test password per user, as the Secret would hold it.
fn password(variable: &str) -> String {
    format!("pw-{}", variable.to_lowercase())
}

/// A server with these users, the Secret's passwords defined in its configuration.
async fn server(users: &str) -> NatsServer {
    let passwords: String = permissions::users(users)
        .iter()
        .map(|(_, variable)| format!("{variable}: \"{}\"\n", password(variable)))
        .collect();
    NatsServer::builder()
        .extra_config(format!("{passwords}\n{users}"))
        .start()
        .await
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

/// Runs the provisioning Job's `jetq-provision` (as admin) and returns the admin's environment.
async fn run_job(objects: &[Value], url: &str) -> Vec<(String, String)> {
    let job = main_container(of_kind(objects, "Job")[0]);
    let command: Vec<String> = job["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|arg| arg.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(command[0], "jetq-provision");
    let env = pod_env(objects, job, url);
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_jetq-provision"))
        .args(&command[1..])
        .env_clear()
        .envs(env.iter().cloned())
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "jetq-provision:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    env
}

async fn js(env: &[(String, String)]) -> jetstream::Context {
    let config = ConnectionConfig::from_env_iter(env.to_vec()).unwrap();
    let client = jetq_contract::connect(&config, "k8s-test").await.unwrap();
    jetq_contract::jetstream(client, &config)
}

/// A plain client logged in as a pod's user, and the server's errors it receives
/// (`Permissions Violation for Publish to ...`).
async fn raw_client(
    url: &str,
    env: &[(String, String)],
) -> (
    async_nats::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let get = |key: &str| {
        env.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::with_user_and_password(
        get("JETQ_NATS_USER"),
        get("JETQ_NATS_PASSWORD"),
    )
    .request_timeout(Some(Duration::from_secs(2)))
    .event_callback(move |event| {
        let tx = tx.clone();
        async move {
            if let async_nats::Event::ServerError(err) = event {
                tx.send(err.to_string()).ok();
            }
        }
    })
    .connect(url)
    .await
    .unwrap();
    (client, rx)
}

/// The purger's requests, as a worker sends them: a purge of the queue's tasks below a
/// sequence, and an advisory read by subject.
fn purger_requests(subjects: &Subjects, queue: &str) -> Vec<(String, String)> {
    let advisory = advisory_subject(subjects, &subjects.durable(queue));
    vec![
        (
            format!("$JS.API.STREAM.PURGE.{}", subjects.tasks_stream()),
            serde_json::json!({ "filter": subjects.queue_filter(queue), "seq": 1 }).to_string(),
        ),
        (
            format!("$JS.API.STREAM.MSG.GET.{}", subjects.advisories_stream()),
            serde_json::json!({ "last_by_subj": advisory }).to_string(),
        ),
    ]
}

/// The MAX_DELIVERIES advisory subject of a durable.
fn advisory_subject(subjects: &Subjects, durable: &str) -> String {
    let all = subjects.max_deliveries_advisory();
    format!("{}.{durable}", all.strip_suffix(".*").unwrap())
}

/// Sends `request` and expects the server to refuse it for lack of permission.
async fn assert_refused(
    client: &async_nats::Client,
    errors: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    subject: &str,
    body: &str,
) {
    let answer = client
        .request(subject.to_owned(), body.to_owned().into())
        .await;
    assert!(answer.is_err(), "{subject}: answered {answer:?}");
    let violation = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(error) = errors.recv().await {
            if error.to_lowercase().contains("permissions violation") && error.contains(subject) {
                return error;
            }
        }
        panic!("the event channel closed");
    })
    .await
    .unwrap_or_else(|_| panic!("{subject}: no permissions violation reported"));
    assert!(violation.to_lowercase().contains("publish"), "{violation}");
}

#[tokio::test]
async fn with_limits_a_worker_pods_login_purges_its_queues_finished_tasks() {
    let tree = Tree::limits();
    let server = server(tree.permissions()).await;
    let url = server.url();
    let subjects = Subjects::default();
    let objects = tree.rendered("dev");

    // The Job provisions a Limits task stream.
    let admin_env = run_job(&objects, &url).await;
    let admin = js(&admin_env).await;
    let tasks_info = || async {
        let mut stream = admin.get_stream(subjects.tasks_stream()).await.unwrap();
        stream.info().await.unwrap().clone()
    };
    assert_eq!(tasks_info().await.config.retention, RetentionPolicy::Limits);

    // The emails worker pod's login runs a worker on its queue, purging every 100 ms.
    let deployment = find(&objects, "Deployment", "worker-emails");
    let mut worker_env = pod_env(&objects, main_container(deployment), &url);
    worker_env.push(("JETQ_PURGE_INTERVAL".into(), "100ms".into()));
    let (ran_tx, mut ran) = tokio::sync::mpsc::unbounded_channel::<String>();
    let worker = tokio::time::timeout(
        Duration::from_secs(30),
        jetq_consumer::Worker::builder()
            .connection(ConnectionConfig::from_env_iter(worker_env.clone()).unwrap())
            .settings(WorkerSettings::from_env_iter(worker_env.clone()).unwrap())
            .handler(move |email: SendEmail, _ctx: TaskContext| {
                let ran_tx = ran_tx.clone();
                async move {
                    ran_tx.send(email.to).ok();
                    Ok::<(), jetq_consumer::TaskError>(())
                }
            })
            .build(),
    )
    .await
    .expect("the worker builds within 30 s")
    .expect("the worker pod's login starts a worker on a Limits task stream");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));

    // The web pod's login enqueues; every task runs once and the stream empties by purge.
    let web = find(&objects, "Deployment", "web");
    let web_env = pod_env(&objects, main_container(web), &url);
    let producer = jetq_producer::Producer::builder()
        .connection(ConnectionConfig::from_env_iter(web_env.clone()).unwrap())
        .provision(false)
        .connect()
        .await
        .expect("the web pod's producer connects");
    let enqueue = |n: usize| {
        let producer = &producer;
        async move {
            for i in 0..n {
                producer
                    .enqueue(&SendEmail {
                        to: format!("user{i}@example.com"),
                        subject: "Hi".into(),
                        body: "Welcome".into(),
                    })
                    .await
                    .expect("enqueue");
            }
        }
    };
    enqueue(20).await;
    let mut runs = 0;
    while runs < 20 {
        tokio::time::timeout(Duration::from_secs(20), ran.recv())
            .await
            .expect("the worker runs the tasks")
            .unwrap();
        runs += 1;
    }
    let drained = eventually(
        Duration::from_secs(20),
        "the task stream emptied by the worker's purge",
        || async {
            let info = tasks_info().await;
            (info.state.messages == 0).then_some(info)
        },
    )
    .await;
    assert!(drained.state.last_sequence >= 20, "{:?}", drained.state);

    // An unswept advisory holds the purge below the task it names: the worker's login reads
    // the advisory stream (without that right it would purge past a stranded task).
    let last = drained.state.last_sequence;
    let stranded = last + 3;
    admin
        .publish(
            advisory_subject(&subjects, &subjects.durable("emails")),
            serde_json::json!({ "stream_seq": stranded })
                .to_string()
                .into(),
        )
        .await
        .unwrap()
        .await
        .expect("the advisory stream stores the advisory");
    enqueue(10).await;
    while runs < 30 {
        tokio::time::timeout(Duration::from_secs(20), ran.recv())
            .await
            .expect("the worker runs the second batch")
            .unwrap();
        runs += 1;
    }
    eventually(
        Duration::from_secs(20),
        "the tasks below the stranded one purged",
        || async {
            let info = tasks_info().await;
            (info.state.first_sequence == stranded && info.state.messages == 8).then_some(())
        },
    )
    .await;
    let durable: jetstream::consumer::PullConsumer = admin
        .get_stream(subjects.tasks_stream())
        .await
        .unwrap()
        .get_consumer(&subjects.durable("emails"))
        .await
        .unwrap();
    eventually(Duration::from_secs(20), "every task acked", || {
        let mut durable = durable.clone();
        async move {
            let floor = durable.info().await.ok()?.ack_floor.stream_sequence;
            (floor >= last + 10).then_some(())
        }
    })
    .await;
    // Ten purge intervals with the floor past them: the stranded task and those above it stay.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = tasks_info().await;
    assert_eq!(
        (held.state.first_sequence, held.state.messages),
        (stranded, 8),
        "the purge stays below the unswept advisory"
    );

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the worker stops")
        .unwrap();

    // The same requests the workqueue users refuse (below) are answered for this login; other
    // streams stay out of reach.
    let (client, mut errors) = raw_client(&url, &worker_env).await;
    for (subject, body) in purger_requests(&subjects, "emails") {
        let answer = client
            .request(subject.clone(), body.into())
            .await
            .unwrap_or_else(|err| panic!("{subject}: {err}"));
        let answer: Value = serde_json::from_slice(&answer.payload).unwrap();
        assert!(answer.get("error").is_none(), "{subject}: {answer}");
    }
    assert_refused(
        &client,
        &mut errors,
        &format!("$JS.API.STREAM.PURGE.{}", subjects.dead_stream()),
        "{}",
    )
    .await;
}

#[tokio::test]
async fn with_workqueue_users_the_purgers_requests_are_refused() {
    let users = std::fs::read_to_string(k8s().join("generated/nats/permissions.conf")).unwrap();
    let server = server(&users).await;
    let url = server.url();
    let subjects = Subjects::default();
    let objects = support::rendered("dev");
    run_job(&objects, &url).await;
    let deployment = find(&objects, "Deployment", "worker-emails");
    let worker_env = pod_env(&objects, main_container(deployment), &url);
    let (client, mut errors) = raw_client(&url, &worker_env).await;
    for (subject, body) in purger_requests(&subjects, "emails") {
        assert_refused(&client, &mut errors, &subject, &body).await;
    }
}

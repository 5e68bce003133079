//! The rendered manifests, offline: every overlay renders with `kubectl kustomize`, every
//! object validates against the Kubernetes and KEDA schemas, and the invariants jetq relies on
//! hold — checked against jetq's own code (config structs, subject names, the scheduler's
//! parser, the tested NATS permissions), never against a hand-written list.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use jetq_consumer::WorkerSettings;
use jetq_contract::{ConnectionConfig, StreamSettings, Subjects, Task};
use jetq_k8s::{permissions, provision::Command, render};
use serde_json::Value;
use support::*;

// ---------------------------------------------------------------------------------------------
// Rendering and schemas

#[test]
fn generated_manifests_are_what_the_values_render_to() {
    let files = jetq_k8s::render_file(&k8s().join("values.yaml")).unwrap();
    let stale = jetq_k8s::stale(&files, &k8s().join("generated")).unwrap();
    assert!(
        stale.is_empty(),
        "k8s/generated is out of date ({stale:?}): run `cargo run -p jetq-k8s -- render`"
    );
}

#[test]
fn every_overlay_renders_and_validates_against_the_kubernetes_and_keda_schemas() {
    // One validator run for every overlay's objects (it compiles them all at once).
    let mut all = Vec::new();
    for overlay in OVERLAYS {
        let objects = rendered(overlay);
        for object in &objects {
            assert_eq!(
                object["metadata"]["namespace"].as_str().unwrap_or("jetq"),
                "jetq",
                "{overlay}: {} {} outside the jetq namespace",
                kind(object),
                name(object)
            );
        }
        all.extend(objects);
    }
    // The validator rejects broken objects (so a pass means something): a wrong type, a KEDA
    // metadata value that is not a string, a misspelt field the schemas let through. Checked in
    // the same run (it compiles every object at once).
    let broken = serde_json::json!([{
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "x" },
        "spec": { "replicas": "three", "selector": {}, "template": { "spec": { "containers": [] } } },
    }, {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": { "name": "x" },
        "spec": { "scaleTargetRef": { "name": "x" }, "triggers": [{ "type": "nats-jetstream", "metadata": { "lagThreshold": 5 } }] },
    }, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "typo" },
        "spec": { "selector": {}, "template": { "spec": { "terminationGracePeriodSecond": 40, "containers": [] } } },
    }]);
    let rendered_count = all.len();
    all.extend(broken.as_array().unwrap().iter().cloned());
    let reports = validate_schemas(&all);
    let problems: Vec<&String> = reports[..rendered_count].iter().flatten().collect();
    assert!(problems.is_empty(), "{problems:#?}");
    let caught = &reports[rendered_count..];
    assert!(
        caught[0].iter().any(|p| p.contains("replicas")),
        "{caught:?}"
    );
    assert!(
        caught[1].iter().any(|p| p.contains("lagThreshold")),
        "{caught:?}"
    );
    assert!(
        caught[2]
            .iter()
            .any(|p| p.contains("terminationGracePeriodSecond")),
        "{caught:?}"
    );
}

#[test]
fn each_overlay_has_what_its_environment_needs() {
    let dev = rendered("dev");
    assert!(
        of_kind(&dev, "ScaledObject").is_empty()
            && of_kind(&dev, "HorizontalPodAutoscaler").is_empty()
    );
    assert_eq!(find(&dev, "StatefulSet", "nats")["spec"]["replicas"], 1);
    assert_eq!(find(&dev, "Deployment", "scheduler")["spec"]["replicas"], 1);
    let prod = rendered("prod");
    assert!(
        of_kind(&prod, "StatefulSet").is_empty(),
        "prod NATS comes from the Helm chart"
    );
    assert_eq!(of_kind(&prod, "ScaledObject").len(), values().queues.len());
    assert!(
        find(&prod, "Deployment", "scheduler")["spec"]["replicas"]
            .as_u64()
            .unwrap()
            >= 2
    );
    let hpa = rendered("prod-hpa");
    assert_eq!(
        of_kind(&hpa, "HorizontalPodAutoscaler").len(),
        values().queues.len()
    );
    assert!(of_kind(&hpa, "ScaledObject").is_empty());
    for objects in [&dev, &prod, &hpa] {
        for queue in &values().queues {
            find(objects, "Deployment", &format!("worker-{}", queue.name));
        }
        let env = environment(
            objects,
            main_container(find(objects, "Deployment", "scheduler")),
        );
        let replicas: usize = literal(&env, "JETQ_STREAM_REPLICAS")
            .unwrap()
            .parse()
            .unwrap();
        let nats_servers = if objects == &dev { 1 } else { 3 };
        assert_eq!(
            replicas, nats_servers,
            "stream replicas follow the NATS cluster size"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Autoscaling

#[test]
fn keda_reads_the_headless_service_on_8222_and_names_the_durable_jetq_creates() {
    let chart = helm_values();
    let fullname = chart["fullnameOverride"].as_str().unwrap();
    let namespace = chart["namespaceOverride"].as_str().unwrap();
    assert_eq!(chart["config"]["monitor"]["enabled"], true);
    let monitor_port = chart["config"]["monitor"]["port"].as_u64().unwrap();
    assert_eq!(monitor_port, 8222);
    let subjects = Subjects::default();
    let objects = rendered("prod");
    let scaled = of_kind(&objects, "ScaledObject");
    assert_eq!(scaled.len(), values().queues.len());
    for object in scaled {
        let target = object["spec"]["scaleTargetRef"]["name"].as_str().unwrap();
        let deployment = find(&objects, "Deployment", target);
        let queue = queue_of(&objects, deployment);
        let spec_values = values().queues.iter().find(|q| q.name == queue).unwrap();
        let triggers = object["spec"]["triggers"].as_array().unwrap();
        // One trigger per priority level's durable (PROTOCOL.md §12): KEDA takes the largest.
        let consumers: Vec<&str> = triggers
            .iter()
            .map(|t| t["metadata"]["consumer"].as_str().unwrap())
            .collect();
        let durable = subjects.durable(&queue);
        assert_eq!(
            consumers,
            [
                durable.clone(),
                format!("{durable}~high"),
                format!("{durable}~low")
            ],
            "{target}: the lag of every level counts"
        );
        for trigger in triggers {
            assert_eq!(trigger["type"], "nats-jetstream");
            let meta = &trigger["metadata"];
            assert_eq!(
                meta["natsServerMonitoringEndpoint"],
                format!("{fullname}-headless.{namespace}.svc.cluster.local:{monitor_port}"),
                "KEDA must read the headless service: only the consumer leader reports true lag"
            );
            assert_eq!(meta["stream"], subjects.tasks_stream());
            assert!(
                meta["consumer"].as_str().unwrap().starts_with(&durable),
                "the durables jetq creates for {queue}"
            );
            assert_eq!(meta["account"], "$G");
            let lag: u64 = meta["lagThreshold"].as_str().unwrap().parse().unwrap();
            assert!(lag >= 1);
            let activation: u64 = meta["activationLagThreshold"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(activation, spec_values.autoscaling.activation_lag_threshold);
        }
        let min = object["spec"]["minReplicaCount"].as_u64().unwrap();
        assert_eq!(min, u64::from(spec_values.autoscaling.min_replicas));
        assert!(object["spec"]["maxReplicaCount"].as_u64().unwrap() >= min.max(1));
        assert!(
            deployment["spec"].get("replicas").is_none(),
            "{target}: KEDA owns the replica count; a fixed one would fight it"
        );
    }
    assert!(
        values()
            .queues
            .iter()
            .any(|q| q.autoscaling.min_replicas == 0),
        "the example has a queue that sleeps at zero"
    );
}

#[test]
fn the_hpa_alternative_targets_every_worker_and_never_zero() {
    let objects = rendered("prod-hpa");
    for hpa in of_kind(&objects, "HorizontalPodAutoscaler") {
        let target = hpa["spec"]["scaleTargetRef"]["name"].as_str().unwrap();
        let deployment = find(&objects, "Deployment", target);
        let queue = queue_of(&objects, deployment);
        assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 1);
        let external: Vec<&Value> = hpa["spec"]["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["type"] == "External")
            .collect();
        assert!(!external.is_empty());
        // The Prometheus names of the lag gauges the workers export (jetq_contract::otel).
        let prometheus = |otel: &str| otel.replace('.', "_");
        let lag_metrics = [
            prometheus(jetq_contract::otel::metrics::QUEUE_PENDING),
            prometheus(jetq_contract::otel::metrics::QUEUE_ACK_PENDING),
        ];
        let label = prometheus(jetq_contract::otel::attributes::QUEUE);
        for metric in &external {
            let metric_name = metric["external"]["metric"]["name"].as_str().unwrap();
            assert!(
                lag_metrics.iter().any(|m| m == metric_name),
                "{metric_name}"
            );
            assert!(metric["external"]["metric"]["selector"]["matchLabels"]
                .get(&label)
                .is_some());
        }
        for metric in external {
            assert_eq!(
                metric["external"]["metric"]["selector"]["matchLabels"]["jetq_queue"],
                queue.as_str()
            );
        }
        assert!(deployment["spec"].get("replicas").is_none());
    }
}

#[tokio::test]
async fn no_worker_durable_gets_an_inactive_threshold() {
    // The durable each worker Deployment's settings make jetq create (provisioning uses the
    // same variables): never deleted while the queue sleeps at zero pods.
    let client = jetq_contract::async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect("nats://127.0.0.1:9")
        .await
        .unwrap();
    let topology = jetq_contract::Topology::new(
        jetq_contract::async_nats::jetstream::new(client),
        Subjects::default(),
        StreamSettings::default(),
    );
    for overlay in OVERLAYS {
        let objects = rendered(overlay);
        for deployment in workers(&objects) {
            let queue = queue_of(&objects, deployment);
            for container in containers(deployment) {
                let env = process_env(&environment(&objects, container));
                let settings = WorkerSettings::from_env_iter(env).unwrap();
                let config = topology.queue_consumer_config(&queue, &settings.queue_settings());
                assert_eq!(
                    config.inactive_threshold,
                    Duration::ZERO,
                    "{overlay}: {queue}"
                );
                assert_eq!(
                    config.durable_name.as_deref(),
                    Some(Subjects::default().durable(&queue).as_str())
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pods: grace periods, probes, hardening

#[test]
fn termination_grace_outlasts_the_worker_shutdown() {
    for overlay in OVERLAYS {
        let objects = rendered(overlay);
        for deployment in workers(&objects) {
            let grace_period = pod_spec(deployment)["terminationGracePeriodSeconds"]
                .as_u64()
                .unwrap();
            let worker = main_container(deployment);
            let env = process_env(&environment(&objects, worker));
            let settings = WorkerSettings::from_env_iter(env).unwrap();
            // On SIGTERM the worker lets tasks run for the grace, then takes up to 5 s to hand
            // the rest back; Kubernetes must not SIGKILL it before.
            assert!(
                Duration::from_secs(grace_period) >= settings.shutdown_grace + Duration::from_secs(10),
                "{overlay} {}: terminationGracePeriodSeconds {grace_period} vs JETQ_SHUTDOWN_GRACE {:?}",
                name(deployment),
                settings.shutdown_grace
            );
        }
        let scheduler = find(&objects, "Deployment", "scheduler");
        assert!(
            pod_spec(scheduler)["terminationGracePeriodSeconds"]
                .as_u64()
                .unwrap()
                > 5
        );
        if let Some(nats) = of_kind(&objects, "StatefulSet").first() {
            let conf = nats_conf(&objects);
            let lame_duck = conf_duration(&conf, "lame_duck_duration");
            let grace = Duration::from_secs(
                pod_spec(nats)["terminationGracePeriodSeconds"]
                    .as_u64()
                    .unwrap(),
            );
            assert!(grace > lame_duck + conf_duration(&conf, "lame_duck_grace_period"));
        }
    }
}

#[test]
fn probes_hit_the_health_server_the_binary_serves() {
    for overlay in OVERLAYS {
        let objects = rendered(overlay);
        for deployment in
            workers(&objects)
                .into_iter()
                .chain([find(&objects, "Deployment", "scheduler")])
        {
            let container = main_container(deployment);
            let env = environment(&objects, container);
            let listen = literal(&env, "JETQ_HEALTH_LISTEN")
                .unwrap_or(jetq_telemetry::DEFAULT_HEALTH_LISTEN);
            let port: u64 = listen.rsplit_once(':').unwrap().1.parse().unwrap();
            let ports: BTreeMap<&str, u64> = container["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap(),
                        p["containerPort"].as_u64().unwrap(),
                    )
                })
                .collect();
            for (probe, path) in [
                ("livenessProbe", "/healthz"),
                ("readinessProbe", "/readyz"),
                ("startupProbe", "/healthz"),
            ] {
                let get = &container[probe]["httpGet"];
                assert_eq!(get["path"], path, "{overlay} {} {probe}", name(deployment));
                let target = match &get["port"] {
                    Value::String(named) => ports[named.as_str()],
                    other => other.as_u64().unwrap(),
                };
                assert_eq!(
                    target,
                    port,
                    "{overlay} {} {probe} must hit JETQ_HEALTH_LISTEN",
                    name(deployment)
                );
            }
        }
    }
}

#[test]
fn every_container_is_hardened_and_sized() {
    for overlay in OVERLAYS {
        let objects = rendered(overlay);
        for workload in workloads(&objects) {
            let pod = pod_spec(workload);
            assert_eq!(
                pod["securityContext"]["runAsNonRoot"],
                true,
                "{}",
                name(workload)
            );
            assert_eq!(
                pod["automountServiceAccountToken"],
                false,
                "{}",
                name(workload)
            );
            for container in containers(workload) {
                let what = format!("{overlay} {} {}", name(workload), container["name"]);
                let security = &container["securityContext"];
                assert_eq!(security["allowPrivilegeEscalation"], false, "{what}");
                assert_eq!(security["readOnlyRootFilesystem"], true, "{what}");
                assert_eq!(security["runAsNonRoot"], true, "{what}");
                assert_eq!(
                    security["capabilities"]["drop"],
                    serde_json::json!(["ALL"]),
                    "{what}"
                );
                assert!(security["capabilities"].get("add").is_none(), "{what}");
                for bound in ["requests", "limits"] {
                    for resource in ["cpu", "memory"] {
                        assert!(
                            container["resources"][bound][resource].is_string(),
                            "{what}: {bound}.{resource}"
                        );
                    }
                }
                assert!(
                    !container["image"].as_str().unwrap().ends_with(":latest"),
                    "{what}: pin image tags"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Environment: every variable is one the binary reads

/// Variables the manifests set for features being added elsewhere: accepted, with a warning,
/// while the binary does not read them yet. Remove an entry once its feature has landed.
const PENDING: &[(&str, &str, &str)] = &[];

struct Binary {
    name: &'static str,
    reads: BTreeSet<String>,
    /// The source file whose `main` must call `jetq_telemetry` for OTEL_*, JETQ_LOG_FORMAT,
    /// JETQ_HEALTH_LISTEN (and the probes) to mean anything.
    main: Option<&'static str>,
}

fn jetq_common() -> BTreeSet<String> {
    let mut reads = env_names::<ConnectionConfig>("JETQ_");
    reads.extend(env_names::<StreamSettings>("JETQ_"));
    reads
}

fn binary_of(container: &Value) -> Option<Binary> {
    let images = &values().images;
    let image = container["image"].as_str().unwrap();
    let command = container["command"][0].as_str().unwrap_or_default();
    let mut reads = jetq_common();
    let binary = if image == images.worker {
        reads.extend(env_names::<WorkerSettings>("JETQ_"));
        reads.extend(env_names::<jetq_examples::worker::SmtpConfig>("SMTP_"));
        reads.extend(env_names::<jetq_examples::worker::ExportConfig>("EXPORT_"));
        Binary {
            name: "worker",
            reads,
            main: Some("examples/src/bin/worker.rs"),
        }
    } else if image == images.scheduler {
        reads.extend(env_names::<jetq_scheduler::SchedulerSettings>("JETQ_"));
        Binary {
            name: "scheduler",
            reads,
            main: Some("scheduler/src/main.rs"),
        }
    } else if Some(image) == images.web.as_deref() {
        reads.extend(env_names::<jetq_producer::ProducerSettings>("JETQ_"));
        reads.extend(env_names::<jetq_examples::web::WebConfig>("WEB_"));
        Binary {
            name: "web",
            reads,
            main: Some("examples/src/bin/web.rs"),
        }
    } else if Some(image) == images.relay.as_deref() {
        reads.extend(env_names::<jetq_outbox::relay::RelaySettings>("JETQ_"));
        Binary {
            name: "jetq-relay",
            reads,
            main: Some("outbox/src/bin/jetq-relay.rs"),
        }
    } else if image == images.cli && command == "jetq-provision" {
        reads.extend(env_names::<WorkerSettings>("JETQ_"));
        Binary {
            name: "jetq-provision",
            reads,
            main: None,
        }
    } else if image.starts_with("nats:") {
        return None;
    } else {
        panic!(
            "container {} runs image {image} (command {command:?}): which binary is that?",
            container["name"]
        );
    };
    Some(binary)
}

/// Whether jetq's telemetry reads `variable`: setting it changes the parsed configuration or
/// makes it fail.
fn telemetry_reads(variable: &str) -> bool {
    let parse = |vars: Vec<(String, String)>| {
        jetq_telemetry::TelemetryConfig::from_env_iter("probe", "info", vars)
    };
    let baseline = parse(Vec::new()).unwrap();
    [
        "probe",
        "k=v",
        "true",
        "json",
        "0.0.0.0:1",
        "http://probe:1",
    ]
    .iter()
    .any(
        |value| match parse(vec![(variable.to_owned(), (*value).to_owned())]) {
            Ok(config) => config != baseline,
            Err(_) => true,
        },
    )
}

#[test]
fn every_variable_a_manifest_sets_is_one_its_binary_reads() {
    let mut pending = BTreeSet::new();
    let mut unknown = Vec::new();
    for overlay in OVERLAYS {
        let objects = rendered(overlay);
        for workload in workloads(&objects) {
            for container in containers(workload) {
                let Some(binary) = binary_of(container) else {
                    continue;
                };
                let env = environment(&objects, container);
                let telemetry_wired = binary
                    .main
                    .is_some_and(|main| source_mentions(main, "jetq_telemetry"));
                for (variable, _) in &env {
                    if binary.reads.contains(variable) {
                        continue;
                    }
                    if telemetry_reads(variable) {
                        match binary.main {
                            None => unknown.push(format!(
                                "{overlay} {}/{}: {variable} (no telemetry in {})",
                                name(workload),
                                container["name"],
                                binary.name
                            )),
                            Some(main) if !telemetry_wired => {
                                pending.insert(format!(
                                    "{}: {variable} is read by jetq_telemetry, which {main} does not call yet",
                                    binary.name
                                ));
                            }
                            Some(_) => {}
                        }
                        continue;
                    }
                    if let Some((_, _, what)) = PENDING
                        .iter()
                        .find(|(b, v, _)| *b == binary.name && v == variable)
                    {
                        pending.insert(format!("{}: {variable} ({what})", binary.name));
                        continue;
                    }
                    unknown.push(format!(
                        "{overlay} {}/{}: {variable}",
                        name(workload),
                        container["name"]
                    ));
                }
                check_values_parse(binary.name, &process_env(&env));
            }
        }
    }
    for (binary, variable, _) in PENDING {
        let reads = match *binary {
            "worker" => env_names::<WorkerSettings>("JETQ_"),
            _ => BTreeSet::new(),
        };
        if reads.contains(*variable) {
            eprintln!("note: {variable} is now read by the {binary}: remove it from PENDING");
        }
    }
    for note in &pending {
        eprintln!("PENDING (accepted until it lands): {note}");
    }
    assert!(
        unknown.is_empty(),
        "variables no jetq binary reads (typo, or a setting that was renamed?):\n{unknown:#?}"
    );
    // The check itself sees a typo.
    let worker =
        binary_of(&serde_json::json!({ "image": values().images.worker, "name": "w" })).unwrap();
    assert!(
        worker.reads.contains("JETQ_MAX_IN_FLIGHT") && !worker.reads.contains("JETQ_MAX_INFLIGHT")
    );
    assert!(worker.reads.contains("SMTP_HOST") && worker.reads.contains("JETQ_NATS_PASSWORD"));
    assert!(
        telemetry_reads("OTEL_EXPORTER_OTLP_ENDPOINT") && telemetry_reads("JETQ_HEALTH_LISTEN")
    );
    assert!(!telemetry_reads("OTEL_EXPORTER_OTLP_ENDPIONT"));
}

/// The values parse with the binaries' own parsers (a bad duration or URL would stop the pod).
fn check_values_parse(binary: &str, env: &[(String, String)]) {
    let vars = || env.to_vec();
    ConnectionConfig::from_env_iter(vars()).unwrap_or_else(|err| panic!("{binary}: {err}"));
    StreamSettings::from_env_iter(vars()).unwrap_or_else(|err| panic!("{binary}: {err}"));
    jetq_telemetry::TelemetryConfig::from_env_iter(binary, "info", vars())
        .unwrap_or_else(|err| panic!("{binary}: {err}"));
    match binary {
        "worker" => {
            WorkerSettings::from_env_iter(vars()).unwrap();
            let smtp: jetq_examples::worker::SmtpConfig =
                envy::prefixed("SMTP_").from_iter(vars()).unwrap();
            smtp.validate().unwrap();
            let _: jetq_examples::worker::ExportConfig =
                envy::prefixed("EXPORT_").from_iter(vars()).unwrap();
        }
        "jetq-provision" => {
            WorkerSettings::from_env_iter(vars()).unwrap();
        }
        "scheduler" => {
            jetq_scheduler::SchedulerSettings::from_env_iter(vars()).unwrap();
        }
        "jetq-relay" => {
            // The database URL comes from a Secret: any well-formed one stands in for it.
            let mut env = vars();
            env.retain(|(name, _)| name != "JETQ_DATABASE_URL");
            env.push(("JETQ_DATABASE_URL".into(), "postgres://secret/app".into()));
            jetq_outbox::relay::RelaySettings::from_env_iter(env).unwrap();
        }
        "web" => {
            let _: jetq_producer::ProducerSettings =
                jetq_contract::config::from_env_iter(vars()).unwrap();
            let _: jetq_examples::web::WebConfig =
                envy::prefixed("WEB_").from_iter(vars()).unwrap();
        }
        other => panic!("{other}"),
    }
}

#[test]
fn telemetry_points_at_a_collector_with_a_service_name_per_component() {
    for overlay in OVERLAYS {
        let objects = rendered(overlay);
        let mut names = BTreeSet::new();
        for workload in workloads(&objects) {
            let container = main_container(workload);
            if binary_of(container).is_none_or(|b| b.main.is_none()) {
                continue;
            }
            let env = process_env(&environment(&objects, container));
            let config =
                jetq_telemetry::TelemetryConfig::from_env_iter("unset", "info", env).unwrap();
            if *overlay == "dev" {
                // The dev overlay deploys no collector: it must not point at one (every pod
                // would log export failures), and with none configured nothing is exported.
                assert!(
                    !config.traces && !config.otlp_metrics && config.traces_endpoint.is_none(),
                    "{overlay} {}: exports to a collector the overlay does not deploy",
                    name(workload)
                );
            } else {
                assert!(
                    config.traces && config.otlp_metrics,
                    "{overlay} {}",
                    name(workload)
                );
                let endpoint = config.traces_endpoint.unwrap();
                assert!(endpoint.starts_with("http://otel-collector"), "{endpoint}");
                assert!(endpoint.ends_with(":4318/v1/traces"), "{endpoint}");
            }
            assert_ne!(
                config.service_name,
                "unset",
                "{overlay} {}: OTEL_SERVICE_NAME",
                name(workload)
            );
            assert!(
                names.insert(config.service_name.clone()),
                "{overlay}: {} named twice",
                config.service_name
            );
            assert!(config
                .resource_attributes
                .iter()
                .any(|(k, _)| k == "deployment.environment"));
        }
        assert!(names.len() > values().queues.len(), "{names:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// NATS: users, secrets, servers

/// The lines the server reads: comments and blank lines dropped.
fn meaningful(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_deployed_nats_users_are_the_tested_ones() {
    // tests/tests/permissions.rs proves k8s/nats/permissions.conf against a real server; the
    // users every overlay deploys are that file, for the example's queues.
    let deployed = std::fs::read_to_string(k8s().join("generated/nats/permissions.conf")).unwrap();
    let queues: Vec<&str> = values().queues.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(queues, ["emails", "exports"], "the example's queues");
    assert_eq!(meaningful(&deployed), meaningful(permissions::SHIPPED));
    let dev = rendered("dev");
    let users_map = config_map(&dev, "jetq-nats-users");
    assert_eq!(users_map["data"]["permissions.conf"], deployed.as_str());
    let chart = helm_values();
    let include = chart["config"]["merge"]["$include"].as_str().unwrap();
    assert_eq!(
        chart["configMap"]["merge"]["data"][include],
        deployed.as_str()
    );
}

#[test]
fn every_pod_logs_in_as_its_own_least_privilege_user_with_a_secret_password() {
    let users: BTreeMap<String, String> = permissions::users(permissions::SHIPPED)
        .into_iter()
        .collect();
    let secret = &values().nats.passwords_secret;
    let mut used = BTreeSet::new();
    let mut janitors = 0;
    for overlay in OVERLAYS {
        let objects = rendered(overlay);
        assert!(
            of_kind(&objects, "Secret").is_empty(),
            "{overlay}: Secrets are created by hand, never rendered"
        );
        for workload in workloads(&objects) {
            for container in containers(workload) {
                let env = environment(&objects, container);
                let what = format!("{overlay} {}/{}", name(workload), container["name"]);
                for (variable, source) in &env {
                    let sensitive = ["PASSWORD", "TOKEN", "SEED", "CREDS", "SECRET"]
                        .iter()
                        .any(|word| variable.contains(word));
                    if sensitive {
                        assert!(
                            matches!(source, Source::Secret { name, .. } if name == secret),
                            "{what}: {variable} must come from Secret {secret}, got {source:?}"
                        );
                    }
                }
                let Some(binary) = binary_of(container) else {
                    // The NATS server: takes every password from the Secret.
                    assert!(
                        env.iter().any(|(_, s)| *s
                            == Source::Secret {
                                name: secret.clone(),
                                key: "*".into()
                            }),
                        "{what}"
                    );
                    continue;
                };
                let user = literal(&env, "JETQ_NATS_USER")
                    .unwrap_or_else(|| panic!("{what}: no NATS user"));
                let variable = users
                    .get(user)
                    .unwrap_or_else(|| panic!("{what}: user {user} is not in permissions.conf"));
                let password = env
                    .iter()
                    .find(|(k, _)| k == "JETQ_NATS_PASSWORD")
                    .map(|(_, s)| s);
                assert_eq!(
                    password,
                    Some(&Source::Secret {
                        name: secret.clone(),
                        key: variable.clone()
                    }),
                    "{what}: the password of {user} is the Secret key {variable}"
                );
                let janitor = literal(&env, "JETQ_JANITOR") == Some("true");
                let expected = match binary.name {
                    "worker" if janitor => "janitor".to_owned(),
                    "worker" => permissions::worker_user(&queue_of(&objects, workload)),
                    "web" => "producer".to_owned(),
                    // Only the provisioning Job provisions; the pods' init containers wait
                    // with the pod's own user.
                    "jetq-provision" if !waits(container) => "admin".to_owned(),
                    "jetq-provision"
                        if kind(workload) == "Deployment" && name(workload) == "scheduler" =>
                    {
                        "scheduler".to_owned()
                    }
                    "jetq-provision" => permissions::worker_user(&queue_of(&objects, workload)),
                    "scheduler" => "scheduler".to_owned(),
                    "jetq-relay" => "relay".to_owned(),
                    other => panic!("{other}"),
                };
                assert_eq!(user, expected, "{what}");
                if binary.name == "scheduler" {
                    assert_eq!(
                        literal(&env, "JETQ_PROVISION"),
                        Some("false"),
                        "{what}: the scheduler cannot provision"
                    );
                }
                if janitor {
                    assert_eq!(literal(&env, "JETQ_SWEEPER"), Some("true"), "{what}");
                    assert_eq!(literal(&env, "JETQ_QUEUES"), None, "{what}: pulls no queue");
                    assert_eq!(
                        literal(&env, "JETQ_PROVISION"),
                        Some("false"),
                        "{what}: the janitor cannot provision"
                    );
                    janitors += 1;
                } else if binary.name == "worker" {
                    assert_eq!(
                        literal(&env, "JETQ_PROVISION"),
                        Some("false"),
                        "{what}: workers cannot provision"
                    );
                    assert_eq!(
                        literal(&env, "JETQ_SWEEPER"),
                        Some("false"),
                        "{what}: only the janitor sweeps"
                    );
                }
                if binary.name == "web" {
                    assert_eq!(
                        literal(&env, "JETQ_PROVISION"),
                        Some("false"),
                        "{what}: producers cannot provision"
                    );
                }
                used.insert(user.to_owned());
            }
        }
    }
    for queue in &values().queues {
        assert!(used.contains(&permissions::worker_user(&queue.name)));
    }
    for (user, _) in permissions::FIXED_USERS {
        assert!(used.contains(*user), "no pod logs in as {user}");
    }
    assert_eq!(
        janitors,
        OVERLAYS.len(),
        "exactly one janitor (the only sweeper) per overlay"
    );
}

#[test]
fn production_nats_is_a_three_node_jetstream_cluster_that_fsyncs() {
    let chart = helm_values();
    let config = &chart["config"];
    assert_eq!(config["cluster"]["enabled"], true);
    assert_eq!(config["cluster"]["replicas"], 3);
    assert_eq!(config["jetstream"]["enabled"], true);
    assert_eq!(config["jetstream"]["fileStore"]["enabled"], true);
    assert_eq!(config["jetstream"]["fileStore"]["pvc"]["enabled"], true);
    assert_eq!(config["jetstream"]["memoryStore"]["enabled"], false);
    assert_eq!(config["jetstream"]["merge"]["sync_interval"], "always");
    assert_eq!(
        chart["container"]["merge"]["envFrom"][0]["secretRef"]["name"],
        values().nats.passwords_secret.as_str()
    );
    // jetq's clients reach the chart's client service.
    let fullname = chart["fullnameOverride"].as_str().unwrap();
    let namespace = chart["namespaceOverride"].as_str().unwrap();
    for overlay in ["prod", "prod-hpa"] {
        let objects = rendered(overlay);
        let env = environment(
            &objects,
            main_container(find(&objects, "Deployment", "scheduler")),
        );
        let url = literal(&env, "JETQ_NATS_URL").unwrap();
        assert_eq!(
            url,
            format!("nats://{fullname}.{namespace}.svc.cluster.local:4222")
        );
    }
}

#[test]
fn development_nats_is_one_jetstream_server_that_fsyncs_behind_a_headless_service() {
    let objects = rendered("dev");
    let nats = find(&objects, "StatefulSet", "nats");
    let headless = find(
        &objects,
        "Service",
        nats["spec"]["serviceName"].as_str().unwrap(),
    );
    assert_eq!(headless["spec"]["clusterIP"], "None");
    let pod_labels = &nats["spec"]["template"]["metadata"]["labels"];
    for (key, value) in headless["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&pod_labels[key], value);
    }
    let monitor = headless["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == 8222)
        .expect("8222");
    let container = &containers(nats)[0];
    assert!(container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == monitor["targetPort"] && p["containerPort"] == 8222));
    let conf = nats_conf(&objects);
    assert!(
        meaningful(&conf).contains(&"sync_interval: always".to_owned()),
        "{conf}"
    );
    assert!(
        meaningful(&conf).contains(&"include ./permissions.conf".to_owned()),
        "{conf}"
    );
    assert!(
        meaningful(&conf).contains(&"http: 0.0.0.0:8222".to_owned()),
        "{conf}"
    );
    // nats.conf and the users it includes land in one directory.
    let config_dir = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "config")
        .unwrap();
    assert_eq!(
        container["args"],
        serde_json::json!([
            "--config",
            format!("{}/nats.conf", config_dir["mountPath"].as_str().unwrap())
        ])
    );
    let sources: Vec<&str> = pod_spec(nats)["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "config")
        .unwrap()["projected"]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["configMap"]["name"].as_str().unwrap())
        .collect();
    assert!(sources.contains(&name(config_map(&objects, "nats-config"))));
    assert!(sources.contains(&name(config_map(&objects, "jetq-nats-users"))));
    // The image runs the version the test suite runs.
    let script = std::fs::read_to_string(repo().join("scripts/ensure-nats-server.sh")).unwrap();
    let pinned = script
        .lines()
        .find_map(|l| l.strip_prefix("NATS_SERVER_VERSION="))
        .unwrap()
        .trim_matches('"');
    assert_eq!(container["image"], format!("nats:{pinned}-alpine"));
    // Clients reach the client service.
    let client = find(&objects, "Service", "nats");
    let env = environment(
        &objects,
        main_container(find(&objects, "Deployment", "scheduler")),
    );
    assert_eq!(
        literal(&env, "JETQ_NATS_URL"),
        Some(format!("nats://{}:4222", name(client)).as_str())
    );
    assert!(client["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["port"] == 4222));
}

// ---------------------------------------------------------------------------------------------
// Scheduler

#[test]
fn the_schedules_configmap_parses_with_the_schedulers_own_parser() {
    for overlay in OVERLAYS {
        let objects = rendered(overlay);
        let map = config_map(&objects, "jetq-schedules");
        assert_eq!(
            name(map),
            "jetq-schedules",
            "no hash suffix: the mounted file is updated in place and reloaded"
        );
        let text = map["data"][render::SCHEDULES_KEY].as_str().unwrap();
        let schedules =
            jetq_scheduler::Schedules::from_yaml(text, std::path::Path::new("jetq-schedules"))
                .unwrap_or_else(|err| panic!("{overlay}: {err}"));
        assert_eq!(schedules.len(), values().schedules.len());
        let parsed: Value = serde_norway::from_str(text).unwrap();
        for schedule in parsed["schedules"].as_array().unwrap() {
            let queue = schedule["queue"].as_str().unwrap();
            let task = schedule["task"].as_str().unwrap();
            find(&objects, "Deployment", &format!("worker-{queue}"));
            // The args decode into the example's task type: no fire is dead-lettered as undecodable.
            let args = schedule["args"].clone();
            use jetq_examples::tasks::{GenerateCsv, SendEmail};
            let decoded = match (queue, task) {
                (SendEmail::QUEUE, SendEmail::NAME) => {
                    serde_json::from_value::<SendEmail>(args).map(drop)
                }
                (GenerateCsv::QUEUE, GenerateCsv::NAME) => {
                    serde_json::from_value::<GenerateCsv>(args).map(drop)
                }
                other => panic!(
                    "{overlay}: schedule {} runs {other:?}, which no worker handles",
                    schedule["name"]
                ),
            };
            decoded.unwrap_or_else(|err| panic!("{overlay}: schedule {}: {err}", schedule["name"]));
        }

        let scheduler = find(&objects, "Deployment", "scheduler");
        let container = main_container(scheduler);
        let env = environment(&objects, container);
        let file = std::path::PathBuf::from(literal(&env, "JETQ_SCHEDULES_FILE").unwrap());
        assert_eq!(file.file_name().unwrap(), render::SCHEDULES_KEY);
        let mount = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == file.parent().unwrap().to_str().unwrap())
            .expect("the schedules directory is mounted");
        assert!(
            mount.get("subPath").is_none(),
            "a subPath mount never sees ConfigMap updates"
        );
        let volume = pod_spec(scheduler)["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        assert_eq!(volume["configMap"]["name"], name(map));
    }
}

#[test]
fn the_scheduler_is_highly_available_in_production() {
    let objects = rendered("prod");
    let scheduler = find(&objects, "Deployment", "scheduler");
    assert!(scheduler["spec"]["replicas"].as_u64().unwrap() >= 2);
    let pdb = of_kind(&objects, "PodDisruptionBudget")
        .into_iter()
        .find(|p| {
            p["spec"]["selector"]["matchLabels"] == scheduler["spec"]["selector"]["matchLabels"]
        })
        .expect("a PodDisruptionBudget covers the scheduler");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    let spread = &pod_spec(scheduler)["topologySpreadConstraints"][0];
    assert_eq!(spread["topologyKey"], "kubernetes.io/hostname");
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn helm_values() -> Value {
    let text = std::fs::read_to_string(k8s().join("generated/nats/helm-values.yaml")).unwrap();
    serde_norway::from_str(&text).unwrap()
}

fn workers(objects: &[Value]) -> Vec<&Value> {
    of_kind(objects, "Deployment")
        .into_iter()
        .filter(|d| d["metadata"]["labels"]["app.kubernetes.io/component"] == "worker")
        .collect()
}

fn main_container(workload: &Value) -> &Value {
    &pod_spec(workload)["containers"][0]
}

/// The queue a worker Deployment serves: its label, which must agree with its environment.
fn queue_of(objects: &[Value], deployment: &Value) -> String {
    let label = deployment["metadata"]["labels"]["jetq.dev/queue"]
        .as_str()
        .unwrap()
        .to_owned();
    let env = environment(objects, main_container(deployment));
    assert_eq!(literal(&env, "JETQ_QUEUES"), Some(label.as_str()));
    assert_eq!(name(deployment), format!("worker-{label}"));
    label
}

fn nats_conf(objects: &[Value]) -> String {
    config_map(objects, "nats-config")["data"]["nats.conf"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn conf_duration(conf: &str, key: &str) -> Duration {
    let line = meaningful(conf)
        .into_iter()
        .find(|l| l.starts_with(&format!("{key}:")))
        .unwrap();
    humantime::parse_duration(line.split_once(':').unwrap().1.trim()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Images

/// A stage of the Dockerfile: the binaries it copies from the build stage, its entrypoint.
#[derive(Debug, Default)]
struct Stage {
    binaries: Vec<String>,
    entrypoint: Option<String>,
    user: Option<String>,
    base: String,
}

fn dockerfile_stages() -> BTreeMap<String, Stage> {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let mut stages: BTreeMap<String, Stage> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["FROM", base, "AS", name] => {
                current = (*name).to_owned();
                stages.insert(
                    current.clone(),
                    Stage {
                        base: (*base).to_owned(),
                        ..Default::default()
                    },
                );
            }
            ["COPY", "--from=build", rest @ ..] => {
                let (_, sources) = rest.split_last().unwrap();
                let stage = stages.get_mut(&current).unwrap();
                for source in sources {
                    stage.binaries.push(
                        source
                            .strip_prefix("/out/")
                            .expect("binaries come from /out")
                            .to_owned(),
                    );
                }
            }
            ["ENTRYPOINT", json] => {
                let entry: Vec<String> = serde_json::from_str(json).unwrap();
                stages.get_mut(&current).unwrap().entrypoint = Some(entry[0].clone());
            }
            ["USER", user] => stages.get_mut(&current).unwrap().user = Some((*user).to_owned()),
            _ => {}
        }
    }
    stages
}

/// The binaries `k8s/build-binaries.sh` builds (what the Dockerfile's build stage runs).
fn built_binaries() -> Vec<String> {
    let script = std::fs::read_to_string(k8s().join("build-binaries.sh")).unwrap();
    let line = script
        .lines()
        .find_map(|l| l.strip_prefix("bins="))
        .unwrap();
    let bins: Vec<String> = line
        .trim_matches('"')
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    for bin in &bins {
        assert!(
            script.contains(&format!("--bin {bin}")),
            "build-binaries.sh copies {bin} but does not build it"
        );
    }
    bins
}

#[test]
fn every_image_the_manifests_run_is_a_dockerfile_target_with_that_binary() {
    let stages = dockerfile_stages();
    let built = built_binaries();
    let runtime = &stages["runtime"];
    assert_eq!(
        runtime.user.as_deref(),
        Some(format!("{}:{}", render::RUN_AS, render::RUN_AS).as_str()),
        "the images run as the uid the manifests require"
    );
    assert!(runtime.base.contains("RUNTIME_IMAGE"));
    for (name, stage) in &stages {
        for binary in &stage.binaries {
            assert!(
                built.contains(binary),
                "stage {name} ships {binary}, which build-binaries.sh does not build"
            );
        }
    }
    let mut seen = BTreeSet::new();
    for overlay in OVERLAYS {
        let objects = rendered(overlay);
        for workload in workloads(&objects) {
            for container in containers(workload) {
                let image = container["image"].as_str().unwrap();
                if image.starts_with("nats:") {
                    continue;
                }
                // jetq/example-worker:0.1.0 → target example-worker
                let repository = image.rsplit_once(':').map_or(image, |(r, _)| r);
                let target = repository.rsplit('/').next().unwrap();
                let stage = stages
                    .get(target)
                    .unwrap_or_else(|| panic!("{image}: no Dockerfile target {target}"));
                assert_eq!(
                    stages[target].base, "runtime",
                    "{target} builds on the non-root runtime stage"
                );
                let program = match container["command"][0].as_str() {
                    Some(command) => command.to_owned(),
                    None => stage.entrypoint.clone().unwrap(),
                };
                let program = program.rsplit('/').next().unwrap().to_owned();
                assert!(
                    stage.binaries.contains(&program),
                    "{image} runs {program}, which target {target} does not ship"
                );
                assert_eq!(
                    pod_spec(workload)["securityContext"]["runAsUser"].as_u64(),
                    Some(render::RUN_AS),
                    "{}",
                    name(workload)
                );
                seen.insert(target.to_owned());
            }
        }
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
}

#[test]
fn every_queue_is_provisioned_at_deploy_time_with_its_workers_settings() {
    for overlay in OVERLAYS {
        let objects = rendered(overlay);
        let jobs = of_kind(&objects, "Job");
        assert_eq!(jobs.len(), 1, "{overlay}: one provisioning Job");
        let job = jobs[0];
        let provision = main_container(job);
        let command: Vec<String> = provision["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(command[0], "jetq-provision");
        // What jetq-provision makes of its command line, with the Job's environment.
        let job_env = process_env(&environment(&objects, provision));
        let Command::Provision { queues } =
            jetq_k8s::provision::parse(command[1..].to_vec(), &job_env).unwrap()
        else {
            panic!("{overlay}: the Job provisions")
        };
        assert_eq!(
            literal(&environment(&objects, provision), "JETQ_NATS_USER"),
            Some("admin")
        );
        let workers = workers(&objects);
        assert_eq!(queues.len(), workers.len(), "{overlay}: {queues:?}");
        for deployment in workers {
            let queue = queue_of(&objects, deployment);
            let (_, at_deploy) = queues
                .iter()
                .find(|(q, _)| *q == queue)
                .unwrap_or_else(|| panic!("{overlay}: the Job does not provision {queue}"));
            let worker = WorkerSettings::from_env_iter(process_env(&environment(
                &objects,
                main_container(deployment),
            )))
            .unwrap();
            assert_eq!(&worker.queue_settings(), at_deploy, "{overlay}: {queue}");
            // The worker pod waits for its durable with its own user.
            let init = pod_spec(deployment)["initContainers"].as_array().unwrap();
            assert_eq!(init.len(), 1, "{overlay}: {queue}");
            assert_eq!(
                init[0]["command"],
                serde_json::json!(["jetq-provision", "--wait", "--queue", queue])
            );
        }
        // Its name carries a hash of its spec: changed settings make a new Job that runs again.
        assert_eq!(
            name(job),
            format!(
                "{}{}",
                jetq_k8s::render::PROVISION_JOB_PREFIX,
                jetq_k8s::render::spec_hash(&rendered_job_spec(job))
            ),
            "{overlay}"
        );
        assert_eq!(pod_spec(job)["restartPolicy"], "OnFailure");
        let scheduler = find(&objects, "Deployment", "scheduler");
        assert_eq!(
            pod_spec(scheduler)["initContainers"][0]["command"],
            serde_json::json!(["jetq-provision", "--wait", "--scheduler"])
        );
    }
}

/// The Job's spec as `jetq-k8s render` wrote it (the overlays add labels and a namespace).
fn rendered_job_spec(job: &Value) -> Value {
    let text = std::fs::read_to_string(k8s().join("generated/app/provision.yaml")).unwrap();
    let generated: Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(name(&generated), name(job));
    generated["spec"].clone()
}

#[test]
fn the_job_name_changes_with_the_queue_settings() {
    let mut values = values().clone();
    let before = jetq_k8s::render::render(&values).unwrap()["app/provision.yaml"].clone();
    let again = jetq_k8s::render::render(&values).unwrap()["app/provision.yaml"].clone();
    assert_eq!(before, again, "the same values give the same Job");
    values.queues[0].max_in_flight = Some(7);
    let after = jetq_k8s::render::render(&values).unwrap()["app/provision.yaml"].clone();
    let job_name = |text: &str| -> String {
        let job: Value = serde_norway::from_str(text).unwrap();
        name(&job).to_owned()
    };
    assert_ne!(job_name(&before), job_name(&after));
    assert!(after.contains("- '7'"), "{after}");
}

#[test]
fn a_queues_prefetch_reaches_its_workers_only_when_set() {
    let mut values = values().clone();
    let unset = values.worker_jetq_env(&values.queues[0]);
    assert!(
        !unset
            .iter()
            .any(|(key, _)| key.starts_with("JETQ_PREFETCH")),
        "the worker's defaults stay the worker's: {unset:?}"
    );
    values.queues[0].prefetch = Some(64);
    values.queues[0].prefetch_bytes = Some(1 << 20);
    let settings = values.worker_settings(&values.queues[0]);
    assert_eq!(
        (settings.prefetch(), settings.prefetch_bytes()),
        (64, 1 << 20)
    );
    let rendered = jetq_k8s::render::render(&values).unwrap();
    let worker = &rendered[&format!("app/worker-{}.yaml", values.queues[0].name)];
    assert!(
        worker.contains("JETQ_PREFETCH") && worker.contains("'1048576'"),
        "{worker}"
    );
}

#[test]
fn no_worker_or_scheduler_pod_references_the_admin_password() {
    let admin_key = permissions::password_variable("admin");
    for overlay in OVERLAYS {
        let objects = rendered(overlay);
        for workload in workloads(&objects) {
            let text = pod_spec(workload).to_string();
            let component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
                .as_str()
                .unwrap_or_default();
            if kind(workload) == "Job" {
                assert_eq!(component, "provision", "{overlay}: {}", name(workload));
                assert!(
                    text.contains(&admin_key),
                    "{overlay}: the Job provisions as admin"
                );
                continue;
            }
            if kind(workload) == "StatefulSet" {
                continue; // the dev NATS server reads every password
            }
            assert!(
                !text.contains(&admin_key) && !text.contains("\"admin\""),
                "{overlay}: {} {} references the admin user or its password",
                kind(workload),
                name(workload)
            );
        }
        for component in ["worker", "scheduler"] {
            assert!(
                workloads(&objects)
                    .iter()
                    .any(|w| w["metadata"]["labels"]["app.kubernetes.io/component"] == component),
                "{overlay}: no {component} pod rendered"
            );
        }
    }
}

/// Whether a `jetq-provision` container only waits (`--wait`).
fn waits(container: &Value) -> bool {
    container["command"]
        .as_array()
        .is_some_and(|args| args.iter().any(|a| a == "--wait"))
}

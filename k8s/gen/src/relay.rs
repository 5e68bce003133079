//! The `jetq-relay` Deployment (the transactional outbox, docs/OUTBOX.md): its own NATS user,
//! its database URL from a Secret, two replicas spread over nodes (any number is safe: each
//! claims other rows with `FOR UPDATE SKIP LOCKED`) and a PodDisruptionBudget.

use serde_json::{json, Value};

use super::{
    default_resources, labels, literal, login, pod_security, scrape_annotations, service_container,
    tmp_volume, HEALTH_PORT,
};
use crate::values::{RelayValues, Values};

/// Seconds the relay takes to stop: it finishes its claim (at most `JETQ_RELAY_CLAIM_TIMEOUT`,
/// 30 s) after SIGTERM; a claim cut short is safe (its rows are published again with the same
/// ids), so this only avoids needless re-sends.
const RELAY_TERMINATION_GRACE: u64 = 35;

/// The Deployment and PodDisruptionBudget, when the values deploy a relay.
pub(super) fn relay(values: &Values) -> Option<Vec<Value>> {
    let relay = values.relay.as_ref()?;
    let image = values.images.relay.as_ref()?;
    Some(vec![deployment(values, relay, image), pdb()])
}

fn deployment(values: &Values, relay: &RelayValues, image: &str) -> Value {
    let mut env = login(values, "relay");
    env.push(json!({
        "name": "JETQ_DATABASE_URL",
        "valueFrom": { "secretKeyRef": {
            "name": relay.database_secret.name,
            "key": relay.database_secret.key,
        } },
    }));
    if let Some(table) = &relay.table {
        env.push(literal("JETQ_OUTBOX_TABLE", table.clone()));
    }
    env.push(literal(
        "JETQ_HEALTH_LISTEN",
        format!("0.0.0.0:{HEALTH_PORT}"),
    ));
    env.push(literal("OTEL_SERVICE_NAME", "jetq-relay"));
    let (tmp, tmp_mount) = tmp_volume();
    let container = service_container(
        "relay",
        image,
        env,
        relay.resources.clone().unwrap_or_else(default_resources),
        json!([tmp_mount]),
    );
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "relay", "labels": labels("relay", None) },
        "spec": {
            "replicas": relay.replicas,
            "revisionHistoryLimit": 5,
            "selector": { "matchLabels": labels("relay", None) },
            "template": {
                "metadata": { "labels": labels("relay", None), "annotations": scrape_annotations() },
                "spec": {
                    "serviceAccountName": "jetq",
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "terminationGracePeriodSeconds": RELAY_TERMINATION_GRACE,
                    "securityContext": pod_security(),
                    "topologySpreadConstraints": [{
                        "maxSkew": 1,
                        "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": { "matchLabels": labels("relay", None) },
                    }],
                    "containers": [container],
                    "volumes": [tmp],
                },
            },
        },
    })
}

fn pdb() -> Value {
    json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": { "name": "relay", "labels": labels("relay", None) },
        "spec": {
            "maxUnavailable": 1,
            "selector": { "matchLabels": labels("relay", None) },
        },
    })
}

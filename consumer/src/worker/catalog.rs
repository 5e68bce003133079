//! The task-type catalog a worker writes at start (PROTOCOL.md, "Task-type catalog").

use jetq_contract::Topology;

use crate::handler::Registry;

/// Writes the task types this worker handles on the queues it pulls into the catalog
/// (PROTOCOL.md, "Task-type catalog"), so producers in any language know which are tracked.
/// Best effort: a missing bucket (not provisioned yet, an older deployment) or a user not
/// allowed to write it is logged, and the worker runs as before.
pub(super) async fn publish_catalog(
    topology: &Topology,
    registry: &Registry,
    queues: &[String],
    provision: bool,
) {
    let bucket = jetq_contract::catalog::bucket(topology.subjects());
    let store = if provision {
        jetq_contract::catalog::ensure_bucket(topology)
            .await
            .map_err(|err| err.to_string())
    } else {
        topology
            .jetstream()
            .get_key_value(bucket.clone())
            .await
            .map_err(|err| err.to_string())
    };
    let store = match store {
        Ok(store) => store,
        Err(err) => {
            tracing::warn!(%bucket, error = %err, "task-type catalog unavailable: not published");
            return;
        }
    };
    for registration in registry.registrations() {
        if registration.is_catch_all() || !queues.iter().any(|q| **q == *registration.queue) {
            continue;
        }
        let entry = jetq_contract::catalog::CatalogEntry::new(
            &registration.queue,
            &registration.task,
            &registration.options,
        );
        let written = match serde_json::to_vec(&entry) {
            Ok(value) => store
                .put(entry.key(), value.into())
                .await
                .map_err(|err| err.to_string()),
            Err(err) => Err(err.to_string()),
        };
        if let Err(err) = written {
            tracing::warn!(%bucket, key = %entry.key(), error = %err, "task type not published in the catalog");
        }
    }
}

//! The durable consumers a worker that does not provision binds to, waited for while
//! `jetq-provision` creates them.

use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use jetq_contract::{Priority, Topology};

use crate::WorkerError;

/// The durable consumer of `queue` (its `normal` level), which `jetq-provision` creates for a
/// worker that does not provision: waited for (bounded retries with backoff for `budget`), so
/// that workers started at the same time as the provisioner, or before it, bind once it ran
/// instead of failing.
pub async fn existing_consumer(
    topology: &Topology,
    queue: &str,
    budget: Duration,
) -> Result<PullConsumer, WorkerError> {
    existing_level(topology, queue, Priority::Normal, budget).await
}

/// The durable consumers of every priority level of `queue`, highest first, waited for as
/// [`existing_consumer`] waits.
pub async fn existing_consumers(
    topology: &Topology,
    queue: &str,
    budget: Duration,
) -> Result<Vec<(Priority, PullConsumer)>, WorkerError> {
    let mut levels = Vec::with_capacity(Priority::ALL.len());
    for level in Priority::ALL {
        levels.push((level, existing_level(topology, queue, level, budget).await?));
    }
    Ok(levels)
}

async fn existing_level(
    topology: &Topology,
    queue: &str,
    level: Priority,
    budget: Duration,
) -> Result<PullConsumer, WorkerError> {
    let subjects = topology.subjects();
    let stream_name = subjects.tasks_stream();
    let durable = subjects.durable_at(queue, level);
    let what = format!("durable consumer {durable} of stream {stream_name} (queue {queue})");
    let js = topology.jetstream();
    Ok(
        jetq_contract::wait::until_provisioned(&what, budget, || async {
            let stream = js
                .get_stream(&stream_name)
                .await
                .map_err(|err| -> jetq_contract::topology::BoxError { Box::new(err) })?;
            stream
                .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&durable)
                .await
        })
        .await?,
    )
}

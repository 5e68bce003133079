//! Waiting for what someone else provisions.
//!
//! A process running with `JETQ_PROVISION=false` (a least-privilege NATS user) cannot create
//! its streams, buckets or durable consumer: `jetq-provision`, run as the admin user (in
//! Kubernetes, a Job), does. When both start at once the process may look before the
//! provisioner is done, so it waits: it retries with doubling pauses (and jitter, so pods that
//! started together do not ask in lockstep) for a bounded budget, by default
//! [`DEFAULT_PROVISION_BUDGET`](crate::topology::DEFAULT_PROVISION_BUDGET), the budget
//! provisioning itself has, then fails with [`ProvisionError::Missing`] naming what it waited
//! for, how long, and the last error.

use std::{future::Future, time::Duration};

use crate::topology::{BoxError, ProvisionError};

/// The first pause between looks; doubled each time up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(250);
/// The longest pause between looks.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// Runs `look` until it succeeds or `budget` has passed, then fails with
/// [`ProvisionError::Missing`] naming `what` (e.g. `durable consumer worker-emails of stream
/// JETQ_TASKS`) and the last error. Every error is retried: "not found" is what is expected
/// until the provisioner ran, and a timeout is what a cluster electing its leaders answers.
pub async fn until_provisioned<T, E, F, Fut>(
    what: &str,
    budget: Duration,
    mut look: F,
) -> Result<T, ProvisionError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    let started = tokio::time::Instant::now();
    let deadline = started + budget;
    let mut pause = FIRST_PAUSE;
    let mut attempts: u32 = 0;
    loop {
        attempts += 1;
        let err: BoxError = match look().await {
            Ok(value) => {
                if attempts > 1 {
                    tracing::info!(
                        what,
                        attempts,
                        waited = ?started.elapsed(),
                        "provisioned: found after waiting"
                    );
                }
                return Ok(value);
            }
            Err(err) => err.into(),
        };
        let jittered = pause.mul_f64(rand::random_range(0.5..1.0));
        let now = tokio::time::Instant::now();
        if now >= deadline || now + jittered >= deadline {
            return Err(ProvisionError::Missing {
                name: what.to_owned(),
                source: format!(
                    "still missing after {attempts} looks in {:.1?} of waiting for jetq-provision \
                     (last error: {err})",
                    started.elapsed()
                )
                .into(),
            });
        }
        tracing::info!(
            what,
            attempts,
            error = %err,
            retry_in = ?jittered,
            "waiting for jetq-provision to create it"
        );
        tokio::time::sleep(jittered).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn found_after_a_few_looks() {
        let mut looks = 0;
        let value = until_provisioned("thing", Duration::from_secs(10), || {
            looks += 1;
            let result: Result<u32, std::io::Error> = if looks < 3 {
                Err(std::io::Error::other("not found"))
            } else {
                Ok(7)
            };
            async move { result }
        })
        .await
        .map_err(|err| err.to_string());
        assert_eq!(value, Ok(7));
        assert_eq!(looks, 3);
    }

    #[tokio::test]
    async fn gives_up_after_the_budget_naming_what_and_the_last_error() {
        let started = std::time::Instant::now();
        let err = until_provisioned(
            "durable consumer worker-x",
            Duration::from_millis(600),
            || async { Err::<(), _>(std::io::Error::other("consumer not found")) },
        )
        .await
        .expect_err("never found");
        assert!(started.elapsed() < Duration::from_secs(3));
        let text = err.to_string();
        assert!(text.contains("durable consumer worker-x"), "{text}");
        assert!(text.contains("consumer not found"), "{text}");
        assert!(text.contains("jetq-provision"), "{text}");
        assert!(matches!(err, ProvisionError::Missing { .. }));
    }
}

//! Delayed tasks: [`Producer::enqueue_in`] and [`Producer::enqueue_at`].
//!
//! A delayed task is published, with the same headers and payload as an immediate one plus
//! `Jetq-Not-Before`, to `<prefix>.delayed.<due unix second>.<queue>.<task>` on the delayed-task
//! stream. The scheduler (`jetq-scheduler`) moves it to its task subject when it is due. A delay
//! above the producer's maximum (`JETQ_MAX_DELAY`,
//! [`ProducerBuilder::max_delay`](crate::ProducerBuilder::max_delay) or
//! [`Producer::with_max_delay`], default 30 days) is refused with [`DelayError::TooLong`]
//! before anything is sent; a due time that is already past enqueues the
//! task at once. See `docs/PROTOCOL.md` (delayed tasks) and `docs/SCHEDULER.md`.

use std::{
    borrow::Cow,
    time::{Duration, SystemTime},
};

use async_nats::Subject;

use bytes::Bytes;
use jetq_contract::{delayed as wire, headers, StreamSettings, Task};

use super::{Prepared, Producer, RawTask};
use crate::{EnqueueError, EnqueueOptions, Enqueued};

/// Why a delayed task was not enqueued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DelayError {
    /// The delay is longer than the producer's maximum ([`Producer::max_delay`]); nothing was
    /// sent.
    #[error("task {task} cannot be delayed by {delay:?}: the maximum delay is {max:?}")]
    TooLong {
        /// The task's wire name.
        task: String,
        /// The requested delay (for `enqueue_at`: the time from now to the due time).
        delay: Duration,
        /// The producer's maximum.
        max: Duration,
    },
    /// The enqueue itself failed, as an immediate enqueue would.
    #[error(transparent)]
    Enqueue(#[from] EnqueueError),
}

impl Producer {
    /// Sets the longest delay this producer accepts (default
    /// [`jetq_contract::delayed::DEFAULT_MAX_DELAY`], 30 days).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// let producer = jetq_producer::Producer::from_env()?
    ///     .connect()
    ///     .await?
    ///     .with_max_delay(Duration::from_secs(90 * 24 * 3600));
    /// # Ok(()) }
    /// ```
    pub fn with_max_delay(mut self, max: Duration) -> Self {
        self.max_delay = max;
        self
    }

    /// The longest delay this producer accepts.
    pub fn max_delay(&self) -> Duration {
        self.max_delay
    }

    /// Enqueues a task that becomes runnable after `delay` (within a second of its due time, once
    /// a scheduler runs). A zero delay enqueues at once.
    ///
    /// ```no_run
    /// # use jetq_contract::Task;
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Reminder { user: u64 }
    /// # impl Task for Reminder { const NAME: &'static str = "reminder"; }
    /// # async fn run(producer: jetq_producer::Producer) -> Result<(), jetq_producer::DelayError> {
    /// use std::time::Duration;
    /// producer.enqueue_in(Duration::from_secs(3600), &Reminder { user: 42 }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn enqueue_in<T: Task>(
        &self,
        delay: Duration,
        task: &T,
    ) -> Result<Enqueued, DelayError> {
        self.enqueue_in_with(delay, task, EnqueueOptions::default())
            .await
    }

    /// [`Producer::enqueue_in`] with options (idempotency key, overrides, trace context).
    pub async fn enqueue_in_with<T: Task>(
        &self,
        delay: Duration,
        task: &T,
        options: EnqueueOptions,
    ) -> Result<Enqueued, DelayError> {
        let raw = typed(task, options)?;
        self.publish_delayed(raw, Due::In(delay)).await
    }

    /// Enqueues a task that becomes runnable at `at`. A time already past enqueues at once.
    pub async fn enqueue_at<T: Task>(
        &self,
        at: SystemTime,
        task: &T,
    ) -> Result<Enqueued, DelayError> {
        self.enqueue_at_with(at, task, EnqueueOptions::default())
            .await
    }

    /// [`Producer::enqueue_at`] with options.
    pub async fn enqueue_at_with<T: Task>(
        &self,
        at: SystemTime,
        task: &T,
        options: EnqueueOptions,
    ) -> Result<Enqueued, DelayError> {
        let raw = typed(task, options)?;
        self.publish_delayed(raw, Due::At(at)).await
    }

    /// [`Producer::enqueue_in`] for an untyped task.
    pub async fn enqueue_raw_in(
        &self,
        delay: Duration,
        task: RawTask,
    ) -> Result<Enqueued, DelayError> {
        self.publish_delayed(task, Due::In(delay)).await
    }

    /// [`Producer::enqueue_at`] for an untyped task.
    pub async fn enqueue_raw_at(
        &self,
        at: SystemTime,
        task: RawTask,
    ) -> Result<Enqueued, DelayError> {
        self.publish_delayed(task, Due::At(at)).await
    }

    async fn publish_delayed(&self, raw: RawTask, due: Due) -> Result<Enqueued, DelayError> {
        let now = SystemTime::now();
        let (due, delay) = match due {
            Due::In(delay) => (now + delay, delay),
            Due::At(at) => (at, at.duration_since(now).unwrap_or(Duration::ZERO)),
        };
        if delay > self.max_delay {
            // Names are checked first, so a bad name is reported as such.
            jetq_contract::name::validate(jetq_contract::NameKind::Task, &raw.task)
                .map_err(EnqueueError::from)?;
            return Err(DelayError::TooLong {
                task: raw.task,
                delay,
                max: self.max_delay,
            });
        }
        if delay.is_zero() {
            return Ok(self.enqueue_raw(raw).await?);
        }
        if super::unique::unique_scope(raw.options.flow.as_deref()).is_some() {
            // The hold would name a delayed-stream sequence no worker ever releases.
            return Err(
                EnqueueError::from(jetq_contract::flow::FlowError::Unsupported(
                    "delayed tasks (enqueue_in / enqueue_at)",
                ))
                .into(),
            );
        }
        match self.publish_delayed_once(&raw, due).await {
            // First delayed task of this installation: create the delayed stream (with the task
            // stream's replicas and duplicate window) and send again. A producer that may not
            // create streams gets the original error.
            Err(EnqueueError::NoStream { subject }) => {
                if self.ensure_delayed_stream().await {
                    Ok(self.publish_delayed_once(&raw, due).await?)
                } else {
                    Err(EnqueueError::NoStream { subject }.into())
                }
            }
            other => Ok(other?),
        }
    }

    async fn publish_delayed_once(
        &self,
        raw: &RawTask,
        due: SystemTime,
    ) -> Result<Enqueued, EnqueueError> {
        let options = self
            .with_catalog(&raw.queue, &raw.task, raw.options.clone())
            .await;
        let mut prepared: Prepared = self.prepare(
            Cow::Owned(raw.queue.clone()),
            Cow::Owned(raw.task.clone()),
            Bytes::clone(&raw.payload),
            options,
        )?;
        prepared.subject = Subject::from(self.subjects.delayed(
            wire::bucket_of(due),
            &prepared.priority.queue_token(&raw.queue),
            &raw.task,
        ));
        prepared.extra_headers.insert(
            headers::NOT_BEFORE,
            jetq_contract::time::format(due).as_str(),
        );
        self.publish(prepared).await
    }

    pub(crate) async fn ensure_delayed_stream(&self) -> bool {
        let mut settings = StreamSettings::default();
        if let Ok(mut stream) = self.js.get_stream(self.subjects.tasks_stream()).await {
            if let Ok(info) = stream.info().await {
                settings.stream_replicas = info.config.num_replicas;
                settings.duplicate_window = info.config.duplicate_window;
            }
        }
        match wire::ensure_delayed_stream(&self.js, &self.subjects, &settings).await {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(error = %err, "cannot create the delayed-task stream");
                false
            }
        }
    }
}

fn typed<T: Task>(task: &T, mut options: EnqueueOptions) -> Result<RawTask, EnqueueError> {
    let payload = serde_json::to_vec(task).map_err(|source| EnqueueError::Serialize {
        task: T::NAME.to_owned(),
        source,
    })?;
    // A tracked type's delayed task is tracked from its enqueue (status `queued`).
    options.track_status |= T::options().track_status;
    Ok(RawTask {
        queue: T::QUEUE.to_owned(),
        task: T::NAME.to_owned(),
        payload: Bytes::from(payload),
        options,
    })
}

enum Due {
    In(Duration),
    At(SystemTime),
}

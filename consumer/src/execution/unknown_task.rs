//! A delivered task whose type no handler here is registered for.

use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, AckKind};
use jetq_contract::{otel::attributes as attr, DeadReason};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{Delivery, Executor};
use crate::telemetry;

/// Longest delay between hand-backs of a task whose type no worker knows.
const UNKNOWN_TASK_MAX_DELAY: Duration = Duration::from_secs(30);

impl Executor {
    /// A task type no handler is registered for: during a rolling deploy a newer producer may
    /// be ahead of the workers, so hand it back with a delay until the grace period (or the
    /// deliveries) run out, then dead-letter it.
    pub(super) async fn unknown_task(&self, message: jetstream::Message, delivery: Delivery<'_>) {
        let age = SystemTime::now()
            .duration_since(delivery.enqueued_at)
            .unwrap_or_default();
        let grace = self.settings.unknown_task_grace;
        let last_delivery = delivery.delivered as i64 >= self.settings.max_deliver - 1;
        if age >= grace || last_delivery {
            let error = format!(
                "no worker has a handler for task {} on queue {} (waited {:?}, {} deliveries)",
                delivery.task, delivery.queue, age, delivery.delivered
            );
            let span = tracing::Span::current();
            telemetry::record_failure(&span, DeadReason::UnknownTask.as_str(), &error);
            span.set_attribute(attr::OUTCOME, "dead_lettered");
            return self
                .dead_letter(message, &delivery, DeadReason::UnknownTask, error, None)
                .await;
        }
        // Spread the remaining deliveries over the remaining grace period.
        let deliveries_left =
            (self.settings.max_deliver - 1 - delivery.delivered as i64).max(1) as u32;
        let delay = ((grace - age) / deliveries_left)
            .clamp(Duration::from_millis(200), UNKNOWN_TASK_MAX_DELAY);
        tracing::warn!(retry_in = ?delay, "no handler for this task type here; handing it back");
        tracing::Span::current().set_attribute(attr::OUTCOME, "handed_back");
        // A worker that knows the type later starts at attempt 1.
        self.metrics.handed_back(&delivery.labels);
        Box::pin(
            self.dead_letters
                .attempts()
                .record_hand_back(delivery.sequence),
        )
        .await;
        if let Err(err) = message.ack_with(AckKind::Nak(Some(delay))).await {
            tracing::warn!(error = %err, "could not hand back an unknown task");
        }
    }
}

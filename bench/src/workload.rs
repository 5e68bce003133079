//! The "emails" workload of DESIGN.md §6: ~200-byte JSON arguments, a no-op handler that
//! decodes them.

use std::time::{SystemTime, UNIX_EPOCH};

use jetq_contract::{Subjects, Task};
use serde::{Deserialize, Serialize};

/// The queue every benchmark uses.
pub(crate) const QUEUE: &str = "emails";
/// The task's wire name.
pub(crate) const TASK: &str = "send_email";
/// The durable pull consumer of the raw twin (jetq's own is `worker-emails`).
pub(crate) const RAW_DURABLE: &str = "raw-emails";
/// Tasks with this `user_id` are warm-up traffic: workers count them but record no latency.
pub(crate) const WARMUP_USER: u64 = 0;

/// The arguments of one email task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SendEmail {
    pub to: String,
    pub from: String,
    pub subject: String,
    pub template: String,
    pub locale: String,
    pub user_id: u64,
    /// Wall-clock time taken just before the enqueue call, in µs since the Unix epoch.
    /// Latency runs report handler start minus this.
    pub sent_at_us: u64,
}

impl Task for SendEmail {
    const NAME: &'static str = TASK;
    const QUEUE: &'static str = QUEUE;
}

impl SendEmail {
    /// The `i`-th email, stamped with the current time.
    pub(crate) fn new(user_id: u64) -> Self {
        SendEmail {
            to: format!("user-{user_id:08}@example.com"),
            from: "Example Shop <noreply@example.com>".to_owned(),
            subject: "Welcome! Please confirm your email".to_owned(),
            template: "welcome_v3".to_owned(),
            locale: "en-US".to_owned(),
            user_id,
            sent_at_us: now_us(),
        }
    }

    /// The JSON body, as jetq would publish it.
    pub(crate) fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an email serializes")
    }
}

/// The subject every email task is published on (same for jetq and the raw twin).
pub(crate) fn subject() -> String {
    Subjects::default().task(QUEUE, TASK)
}

/// The task stream's name.
pub(crate) fn stream_name() -> String {
    Subjects::default().tasks_stream()
}

/// Wall-clock microseconds since the Unix epoch.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_about_200_bytes() {
        let len = SendEmail::new(12_345).to_json().len();
        assert!((180..=230).contains(&len), "{len}");
    }

    #[test]
    fn round_trips() {
        let email = SendEmail::new(7);
        let back: SendEmail = serde_json::from_slice(&email.to_json()).unwrap();
        assert_eq!(back.user_id, 7);
        assert_eq!(back.sent_at_us, email.sent_at_us);
    }
}

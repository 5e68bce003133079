//! Flow control in the example (docs/FLOW_CONTROL.md): the email provider allows
//! [`DEFAULT_EMAIL_RATE`] mails per second across every worker pod, and a user who signs up
//! twice while the first welcome mail is still queued or being sent gets that one mail.
//!
//! Both need the flow-control buckets (`JETQ_LIMITS`, `JETQ_UNIQUE`), which a process that may
//! provision creates; in the least-privilege deployment (`JETQ_PROVISION=false`, the Kubernetes
//! manifests of k8s/) `jetq-provision` creates them and the generated NATS users grant them
//! (tested in `k8s/gen/tests/nats.rs`). Both are on by default; `EMAIL_RATE_LIMIT=off` and
//! `SIGNUP_UNIQUE=false` turn them off.

use jetq_consumer::{Limits, RateLimit};

use crate::ConfigError;

/// Mails per second (and burst) across every worker, like an email provider's cap.
pub const DEFAULT_EMAIL_RATE: f64 = 14.0;

/// The limits of [`crate::tasks::SendEmail`] from `EMAIL_RATE_LIMIT` (mails per second, `off`
/// for none); by default [`DEFAULT_EMAIL_RATE`].
pub fn email_limits() -> Result<Limits, ConfigError> {
    let rate = match std::env::var("EMAIL_RATE_LIMIT") {
        Ok(text) if text.trim() == "off" => return Ok(Limits::new()),
        Ok(text) => text
            .trim()
            .parse::<f64>()
            .map_err(|err| ConfigError::Invalid {
                variable: "EMAIL_RATE_LIMIT",
                problem: format!("{text:?} is not a number of mails per second or `off`: {err}"),
            })?,
        Err(_) => DEFAULT_EMAIL_RATE,
    };
    let burst = rate.ceil().clamp(1.0, f64::from(u32::MAX)) as u32;
    let limit = RateLimit::new(rate, burst).map_err(|err| ConfigError::Invalid {
        variable: "EMAIL_RATE_LIMIT",
        problem: err.to_string(),
    })?;
    Ok(Limits::new().rate(limit))
}

/// Whether signups take a unique key per address (`SIGNUP_UNIQUE=true|false`; by default
/// true).
pub fn unique_signups() -> bool {
    match std::env::var("SIGNUP_UNIQUE").as_deref() {
        Ok("true" | "1") => true,
        Ok(_) => false,
        Err(_) => true,
    }
}

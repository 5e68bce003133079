//! The per-task overrides a producer may send in headers (PROTOCOL §3: `Jetq-Max-Attempts`,
//! `Jetq-Timeout-Ms`).

use std::time::Duration;

use async_nats::HeaderMap;
use jetq_contract::headers;

use crate::handler::Registration;

/// Per-task overrides from headers; a malformed override is a producer bug, reported as
/// undecodable rather than silently ignored.
pub(super) fn overrides(
    headers: &HeaderMap,
    registration: &Registration,
) -> Result<(u32, Duration), String> {
    let header = |name| headers.get(name).map(|v| v.as_str());
    let max_attempts = match header(headers::names::MAX_ATTEMPTS) {
        None => registration.options.max_attempts,
        Some(text) => text
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                format!(
                    "header {} is not a positive integer: {text:?}",
                    headers::MAX_ATTEMPTS
                )
            })?,
    };
    let timeout = match header(headers::names::TIMEOUT_MS) {
        None => registration.options.timeout,
        Some(text) => text
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n >= 1)
            .map(Duration::from_millis)
            .ok_or_else(|| {
                format!(
                    "header {} is not a positive integer: {text:?}",
                    headers::TIMEOUT_MS
                )
            })?,
    };
    Ok((max_attempts, timeout))
}

//! Dead letters that must always fit: where the body of a dead letter goes when it does not fit
//! in one message beside its failure record.
//!
//! A dead letter is the task's body and headers plus the failure headers (`Jetq-Failure` and
//! friends, up to a few tens of KB with a full attempt history). A task accepted near the
//! server's `max_payload` therefore cannot be copied into one dead-letter message. Instead of
//! leaving such a task stranded in the task stream, a worker
//!
//! 1. stores the body in the object store `<PREFIX>_DEAD_PAYLOADS` under
//!    [`payload_object_name`], and
//! 2. publishes the dead letter with an **empty body** and the headers
//!    [`PAYLOAD_OBJECT`](crate::headers::PAYLOAD_OBJECT) (the object's name) and
//!    [`PAYLOAD_SIZE`](crate::headers::PAYLOAD_SIZE);
//! 3. if even the headers do not fit, the failure record is cut to its final error (the attempt
//!    history is dropped) before giving up.
//!
//! Readers (the CLI's replay and show, the dashboard) read the body from the object store when
//! the header is present; a purge deletes the object with its dead letter. The store keeps
//! objects as long as the dead-letter stream keeps letters (`JETQ_DEAD_MAX_AGE`).

use async_nats::{
    jetstream::{self, object_store},
    HeaderMap,
};

use crate::topology::{ProvisionError, Topology, DEAD_PAYLOAD_CHECKS};

/// The object name of the body of the dead letter of the task at `sequence` with id `task_id`:
/// `<sequence>-<task id as lower-case hex>` (object names allow only `[-/_=.a-zA-Z0-9]`, task
/// ids may hold any printable character; the sequence keeps names unique per task stream).
///
/// ```
/// assert_eq!(jetq_contract::dead::payload_object_name(42, "a:b"), "42-613a62");
/// ```
pub fn payload_object_name(sequence: u64, task_id: &str) -> String {
    use std::fmt::Write;
    let mut name = format!("{sequence}-");
    for byte in task_id.bytes() {
        let _ = write!(name, "{byte:02x}");
    }
    name
}

/// The size a message's headers take on the wire (`NATS/1.0\r\n`, each `Name: value\r\n`, the
/// closing `\r\n`): what the server's `max_payload` counts besides the body. Zero for no headers.
pub fn headers_wire_len(headers: &HeaderMap) -> usize {
    if headers.is_empty() {
        return 0;
    }
    let mut len = "NATS/1.0\r\n".len() + "\r\n".len();
    for (name, values) in headers.iter() {
        for value in values {
            len +=
                AsRef::<str>::as_ref(name).len() + ": ".len() + value.as_str().len() + "\r\n".len();
        }
    }
    len
}

impl Topology {
    /// The stream configuration behind the dead-letter body store (`OBJ_<bucket>`): kept as long
    /// as dead letters (`JETQ_DEAD_MAX_AGE`), within `JETQ_DEAD_MAX_BYTES`.
    pub fn dead_payloads_stream_config(&self) -> jetstream::stream::Config {
        self.object_store_stream_config(
            &self.subjects().dead_payloads_bucket(),
            "jetq: bodies of dead letters too large to carry them",
            self.settings().dead_max_age,
            self.settings().dead_max_bytes,
        )
    }

    /// Creates the dead-letter body store if it is missing (part of
    /// [`Topology::ensure_streams`]); an existing one is verified or updated as
    /// [`Topology::existing`] says.
    pub async fn ensure_dead_payload_store(&self) -> Result<(), ProvisionError> {
        self.ensure_stream(self.dead_payloads_stream_config(), DEAD_PAYLOAD_CHECKS)
            .await
    }

    /// The dead-letter body store (created by [`Topology::ensure_dead_payload_store`]).
    pub async fn dead_payload_store(&self) -> Result<object_store::ObjectStore, ProvisionError> {
        let bucket = self.subjects().dead_payloads_bucket();
        self.jetstream()
            .get_object_store(&bucket)
            .await
            .map_err(|err| ProvisionError::Missing {
                name: format!("object store {bucket}"),
                source: Box::new(err),
            })
    }
}

/// The chunk size for a body stored in `JETQ_DEAD_PAYLOADS` on a server whose `max_payload` is
/// `max_payload`: half of it, between 1 KiB and the object store's default of 128 KiB. With the
/// default on a server that allows less than 128 KiB per message, every chunk would be refused
/// and the dead letter retried forever.
///
/// ```
/// use jetq_contract::dead::body_chunk_size;
/// assert_eq!(body_chunk_size(1024 * 1024), 128 * 1024);
/// assert_eq!(body_chunk_size(64 * 1024), 32 * 1024);
/// ```
pub fn body_chunk_size(max_payload: usize) -> usize {
    (max_payload / 2).clamp(1024, 128 * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_valid_and_unique_per_task() {
        let name = payload_object_name(7, "replay:01J/é x");
        assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        assert_ne!(name, payload_object_name(8, "replay:01J/é x"));
        assert_ne!(name, payload_object_name(7, "replay:01J/é y"));
    }

    #[test]
    fn header_length_counts_every_line() {
        let mut map = HeaderMap::new();
        assert_eq!(headers_wire_len(&map), 0);
        map.insert("A", "bc");
        // NATS/1.0\r\n + A: bc\r\n + \r\n
        assert_eq!(headers_wire_len(&map), 10 + 7 + 2);
        map.append("A", "d");
        assert_eq!(headers_wire_len(&map), 10 + 7 + 6 + 2);
    }
}

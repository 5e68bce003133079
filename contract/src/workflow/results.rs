//! Chord results too large to inline, and the members' trace contexts (PROTOCOL.md §13).
//!
//! - A member's result whose JSON is over [`MAX_MARKER_RESULT`] bytes is stored as one object
//!   of the object store `<PREFIX>_RESULTS`, named [`object_name`], before its marker is
//!   created; the marker (and the callback's summary) carries its name as `result_ref` instead
//!   of the value. A callback resolves it with [`ChordResults::resolve`]. Objects expire with
//!   the store's `max_age`, 7 days like the workflow records ([`super::MAX_AGE`]).
//! - A member's marker keeps the W3C `traceparent` of the attempt that finished it; the firing
//!   worker puts up to [`MAX_LINKS`] of them in the callback's [`LINKS`] header, and the worker
//!   that runs the callback links its `process` span to each.

use async_nats::jetstream::{self, object_store::ObjectStore};
use tokio::io::AsyncReadExt;

use super::batch::{MemberMarker, MemberResult};
use crate::{
    topology::{ProvisionError, ARTIFACT_CHECKS},
    Subjects, Topology,
};

/// A member's result larger than this (bytes of compact JSON) goes to the results store; a
/// smaller one is kept in its marker and inlined in the callback's summary.
pub const MAX_MARKER_RESULT: usize = 16 * 1024;

/// The largest result a batch member may set (bytes of compact JSON): it travels through the
/// worker's memory and the object store, not through the status record (whose results stop at
/// [`crate::status::MAX_RESULT_BYTES`]).
pub const MAX_MEMBER_RESULT: usize = 64 * 1024 * 1024;

/// Most members a callback's span links to (the first ones by member id).
pub const MAX_LINKS: usize = 128;

/// Header of a callback: the `traceparent`s of its members' attempts, comma-separated, at most
/// [`MAX_LINKS`].
pub const LINKS: &str = "Jetq-Trace-Links";

/// The results store's name: `<PREFIX>_RESULTS` (`JETQ_RESULTS` by default).
pub fn bucket(subjects: &Subjects) -> String {
    subjects
        .attempts_bucket()
        .strip_suffix("_ATTEMPTS")
        .map(|upper| format!("{upper}_RESULTS"))
        .unwrap_or_else(|| "JETQ_RESULTS".to_owned())
}

/// The object holding a member's result: `<batch id>/<member id encoded as a status key>`.
pub fn object_name(batch: &str, member: &str) -> String {
    format!("{batch}/{}", crate::status::key(member))
}

/// The value of the [`LINKS`] header for these markers (ordered by member id): the first
/// [`MAX_LINKS`] members' `traceparent`s; `None` when no marker has one.
pub fn links_header(markers: &[(String, MemberMarker)]) -> Option<String> {
    let links: Vec<&str> = markers
        .iter()
        .filter_map(|(_, marker)| marker.traceparent.as_deref())
        .filter(|parent| !parent.is_empty() && !parent.contains([',', '\r', '\n']))
        .take(MAX_LINKS)
        .collect();
    (!links.is_empty()).then(|| links.join(","))
}

/// The `traceparent`s of a [`LINKS`] header (at most [`MAX_LINKS`]; blanks skipped).
pub fn parse_links(value: &str) -> Vec<&str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|parent| !parent.is_empty())
        .take(MAX_LINKS)
        .collect()
}

/// A result that could not be stored or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResultError {
    /// The results store could not be opened (missing, no permission, unreachable).
    #[error("results store {bucket} unavailable: {source}")]
    Store {
        /// Its name.
        bucket: String,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The object could not be written or read.
    #[error("result object {name}: {source}")]
    Object {
        /// The object's name.
        name: String,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The object is not JSON.
    #[error("result object {name} is not JSON: {source}")]
    Decode {
        /// The object's name.
        name: String,
        /// Why.
        source: serde_json::Error,
    },
}

impl Topology {
    /// The stream behind the results store (`OBJ_<PREFIX>_RESULTS`): objects kept 7 days
    /// ([`super::MAX_AGE`]), no byte limit.
    pub fn results_stream_config(&self) -> jetstream::stream::Config {
        self.object_store_stream_config(
            &bucket(self.subjects()),
            "jetq: chord members' results too large for their markers",
            super::MAX_AGE,
            -1,
        )
    }

    /// Creates the results store if it is missing (idempotent).
    pub async fn ensure_results_store(&self) -> Result<(), ProvisionError> {
        self.ensure_stream(self.results_stream_config(), ARTIFACT_CHECKS)
            .await
    }
}

/// The results store of an installation: where large chord results are written by the worker
/// that finished the member, and read by the callback.
#[derive(Clone)]
pub struct ChordResults {
    store: ObjectStore,
    bucket: String,
}

impl std::fmt::Debug for ChordResults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChordResults")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl ChordResults {
    /// Opens the results store of `subjects`' prefix (it must exist: a worker that stored a
    /// large result created it).
    ///
    /// ```no_run
    /// # async fn callback(js: async_nats::jetstream::Context,
    /// #     summary: jetq_contract::workflow::BatchSummary) -> Result<(), Box<dyn std::error::Error>> {
    /// use jetq_contract::{workflow::results::ChordResults, Subjects};
    /// let results = ChordResults::open(&js, &Subjects::default()).await?;
    /// for member in &summary.results {
    ///     let value = results.resolve(member).await?; // inline or fetched
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn open(js: &jetstream::Context, subjects: &Subjects) -> Result<Self, ResultError> {
        let bucket = bucket(subjects);
        let store = js
            .get_object_store(&bucket)
            .await
            .map_err(|err| ResultError::Store {
                bucket: bucket.clone(),
                source: Box::new(err),
            })?;
        Ok(ChordResults { store, bucket })
    }

    /// Opens the results store, creating it first when `provision` is true.
    pub async fn open_or_create(topology: &Topology, provision: bool) -> Result<Self, ResultError> {
        if provision {
            topology
                .ensure_results_store()
                .await
                .map_err(|err| ResultError::Store {
                    bucket: bucket(topology.subjects()),
                    source: Box::new(err),
                })?;
        }
        Self::open(topology.jetstream(), topology.subjects()).await
    }

    /// Stores `json` (a result's compact JSON) as object `name`, replacing an earlier one.
    pub async fn put(&self, name: &str, json: &[u8]) -> Result<(), ResultError> {
        let mut reader = json;
        self.store
            .put(name, &mut reader)
            .await
            .map_err(|err| ResultError::Object {
                name: name.to_owned(),
                source: Box::new(err),
            })?;
        Ok(())
    }

    /// Reads object `name` as JSON (the store checks its digest).
    pub async fn get(&self, name: &str) -> Result<serde_json::Value, ResultError> {
        let object_error = |err: Box<dyn std::error::Error + Send + Sync>| ResultError::Object {
            name: name.to_owned(),
            source: err,
        };
        let mut object = self
            .store
            .get(name)
            .await
            .map_err(|err| object_error(Box::new(err)))?;
        let mut bytes = Vec::new();
        object
            .read_to_end(&mut bytes)
            .await
            .map_err(|err| object_error(Box::new(err)))?;
        serde_json::from_slice(&bytes).map_err(|source| ResultError::Decode {
            name: name.to_owned(),
            source,
        })
    }

    /// A member's result as the callback's summary gives it: the inline `result`, or the
    /// object its `result_ref` names, read from the store; `None` when it has neither.
    pub async fn resolve(
        &self,
        member: &MemberResult,
    ) -> Result<Option<serde_json::Value>, ResultError> {
        if let Some(value) = &member.result {
            return Ok(Some(value.clone()));
        }
        match &member.result_ref {
            Some(name) => self.get(name).await.map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::MemberOutcome;

    #[test]
    fn names_and_links() {
        assert_eq!(bucket(&Subjects::default()), "JETQ_RESULTS");
        assert_eq!(bucket(&Subjects::new("my-app").unwrap()), "MY_APP_RESULTS");
        assert_eq!(object_name("b1", "signup:a"), "b1/signup=3Aa");
        let markers: Vec<(String, MemberMarker)> = (0..300)
            .map(|i| {
                let mut marker = MemberMarker::new(MemberOutcome::Succeeded, None);
                marker.traceparent = (i % 2 == 0).then(|| format!("00-{i:032x}-{i:016x}-01"));
                (format!("m{i:03}"), marker)
            })
            .collect();
        let header = links_header(&markers).unwrap();
        assert_eq!(parse_links(&header).len(), MAX_LINKS);
        assert!(header.starts_with(&format!("00-{:032x}-", 0)));
        assert_eq!(links_header(&markers[1..2]), None);
    }
}

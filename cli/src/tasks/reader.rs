//! Reading a stream page by page: direct gets by subject (`next_by_subj`, batched on
//! nats-server 2.11+), several subject filters merged in sequence order, up to the last
//! sequence the stream had when the read started. A WorkQueue stream allows no second
//! consumer, so this is how the task listings read it without a full scan.

use std::time::Duration;

use async_nats::{
    jetstream::stream::{DirectGetErrorKind, Stream},
    HeaderMap,
};
use futures::StreamExt;

use crate::{admin::Admin, error::AdminError};

impl Admin {
    /// Starts a read of `stream` from sequence `start` on subjects `filters`, by direct gets
    /// (`next_by_subj`, one per message; a WorkQueue stream allows no second consumer), the
    /// filters merged in sequence order, up to the last sequence the stream has now.
    pub(super) async fn read_from(
        &self,
        stream: &Stream,
        filters: Vec<String>,
        start: u64,
        batch_size: usize,
        what: &'static str,
    ) -> Result<Reader, AdminError> {
        let mut stream = stream.clone();
        let last = stream
            .info()
            .await
            .map_err(|err| AdminError::nats(format!("cannot read {what}"), err))?
            .state
            .last_sequence;
        let batched = self
            .server_version()
            .filter(|version| *version >= jetq_contract::connect::Version::new(2, 11, 0))
            .map(|_| Batched {
                client: self.client().clone(),
                size: batch_size.clamp(1, BATCH),
                subject: format!("$JS.API.DIRECT.GET.{}", stream.cached_info().config.name),
                wait: self.request_timeout(),
            });
        Ok(Reader {
            cursors: filters
                .into_iter()
                .map(|filter| Cursor {
                    filter,
                    from: start.max(1),
                    ahead: std::collections::VecDeque::new(),
                    done: start > last,
                })
                .collect(),
            batched,
            stream,
            last,
            what,
        })
    }
}

/// One message read by a [`Reader`].
pub(super) struct Read {
    pub(super) sequence: u64,
    pub(super) subject: String,
    pub(super) headers: HeaderMap,
}

/// One filter of a [`Reader`]: the messages on it read ahead.
pub(super) struct Cursor {
    pub(super) filter: String,
    pub(super) from: u64,
    pub(super) ahead: std::collections::VecDeque<Read>,
    pub(super) done: bool,
}

/// The most messages one batched direct get asks for (nats-server 2.11+); a page asks for its
/// limit and one more.
pub(super) const BATCH: usize = 1024;

/// Batched direct gets (nats-server 2.11+): the client, the stream's direct-get subject and how
/// long to wait for the next message of a batch.
pub(super) struct Batched {
    pub(super) client: async_nats::Client,
    pub(super) size: usize,
    pub(super) subject: String,
    pub(super) wait: Duration,
}

/// A read of a stream by direct gets (`next_by_subj`; batches of [`BATCH`] on 2.11+), several
/// subject filters merged in sequence order, up to the last sequence the stream had when it
/// started.
pub(super) struct Reader {
    pub(super) stream: Stream,
    pub(super) batched: Option<Batched>,
    pub(super) cursors: Vec<Cursor>,
    pub(super) last: u64,
    pub(super) what: &'static str,
}

impl Reader {
    pub(super) async fn next(&mut self) -> Result<Option<Read>, AdminError> {
        for i in 0..self.cursors.len() {
            if self.cursors[i].done || !self.cursors[i].ahead.is_empty() {
                continue;
            }
            let (filter, from) = (self.cursors[i].filter.clone(), self.cursors[i].from);
            let reads = match &self.batched {
                Some(batched) => batch(batched, &filter, from, self.what).await?,
                None => match self
                    .stream
                    .direct_get_next_for_subject(filter.as_str(), Some(from))
                    .await
                {
                    Ok(message) => vec![Read {
                        sequence: message.sequence,
                        subject: message.subject.to_string(),
                        headers: message.headers,
                    }],
                    Err(err) if err.kind() == DirectGetErrorKind::NotFound => Vec::new(),
                    Err(err) => {
                        return Err(AdminError::nats(format!("cannot read {}", self.what), err))
                    }
                },
            };
            let cursor = &mut self.cursors[i];
            if reads.is_empty() {
                cursor.done = true;
            }
            for read in reads {
                if read.sequence > self.last {
                    cursor.done = true;
                    break;
                }
                cursor.from = read.sequence + 1;
                cursor.ahead.push_back(read);
            }
        }
        let lowest = self
            .cursors
            .iter_mut()
            .filter(|cursor| !cursor.ahead.is_empty())
            .min_by_key(|cursor| cursor.ahead.front().map_or(u64::MAX, |read| read.sequence));
        Ok(lowest.and_then(|cursor| cursor.ahead.pop_front()))
    }
}

/// One batched direct get: up to [`BATCH`] messages on `filter` from sequence `from`, ended by
/// the server's `204 EOB` (none: `404`).
async fn batch(
    batched: &Batched,
    filter: &str,
    from: u64,
    what: &str,
) -> Result<Vec<Read>, AdminError> {
    let failed = |err: String| AdminError::nats(format!("cannot read {what}"), err);
    let inbox = batched.client.new_inbox();
    let mut replies = batched
        .client
        .subscribe(inbox.clone())
        .await
        .map_err(|err| failed(err.to_string()))?;
    let request = serde_json::json!({ "seq": from, "next_by_subj": filter, "batch": batched.size });
    batched
        .client
        .publish_with_reply(batched.subject.clone(), inbox, request.to_string().into())
        .await
        .map_err(|err| failed(err.to_string()))?;
    let mut reads = Vec::new();
    loop {
        let message = match tokio::time::timeout(batched.wait, replies.next()).await {
            Ok(Some(message)) => message,
            Ok(None) => break,
            Err(_) => return Err(failed(format!("no answer within {:?}", batched.wait))),
        };
        match message.status {
            Some(status) if status.as_u16() == 204 => break,
            Some(status) if status == async_nats::StatusCode::NOT_FOUND => break,
            Some(status) => {
                return Err(failed(format!(
                    "direct get answered {status}: {}",
                    message.description.unwrap_or_default()
                )))
            }
            None => {}
        }
        let headers = message.headers.unwrap_or_default();
        let sequence = headers
            .get("Nats-Sequence")
            .and_then(|v| v.as_str().parse::<u64>().ok())
            .ok_or_else(|| failed("a direct get reply without Nats-Sequence".into()))?;
        let subject = headers
            .get("Nats-Subject")
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        reads.push(Read {
            sequence,
            subject,
            headers,
        });
        if reads.len() >= batched.size {
            // The EOB follows; not waiting for it is fine (the subscription ends here).
            break;
        }
    }
    let _ = replies.unsubscribe().await;
    Ok(reads)
}

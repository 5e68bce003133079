//! Artifacts of tracked tasks: the object metadata and the [`ArtifactWriter`] a handler
//! streams one through.

use std::{
    fmt,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use async_nats::jetstream::object_store::{ObjectMetadata, ObjectStore};
use jetq_contract::status::{self as wire, ArtifactInfo};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf},
    task::JoinHandle,
};

use super::{BoxError, StatusError, Tracker};

/// Bytes buffered by an [`ArtifactWriter`] before they go to the object store: one chunk.
pub(crate) const ARTIFACT_CHUNK: usize = 128 * 1024;

pub(crate) fn object_meta(id: &str, name: &str) -> ObjectMetadata {
    ObjectMetadata {
        name: wire::artifact_object(id, name),
        description: Some(format!("jetq artifact {name} of task {id}")),
        ..Default::default()
    }
}

pub(crate) fn artifact_info(
    name: &str,
    info: &async_nats::jetstream::object_store::ObjectInfo,
) -> ArtifactInfo {
    ArtifactInfo {
        name: name.to_owned(),
        size: u64::try_from(info.size).unwrap_or(u64::MAX),
        digest: info.digest.clone(),
    }
}

/// Reads the pipe of an [`ArtifactWriter`]; its end counts as the end of the artifact only if
/// the writer was finished, so a writer dropped half-way fails the upload instead of storing a
/// truncated object.
struct UntilFinished {
    inner: DuplexStream,
    finished: Arc<AtomicBool>,
}

impl AsyncRead for UntilFinished {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() == before && buf.remaining() > 0 => {
                if self.finished.load(Ordering::Acquire) {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the artifact writer was dropped before finish()",
                    )))
                }
            }
            other => other,
        }
    }
}

/// Streams an artifact into the artifact store; from [`TaskContext::artifact_writer`].
///
/// Implements [`AsyncWrite`]: write to it, then call [`ArtifactWriter::finish`].
pub struct ArtifactWriter {
    pipe: Option<tokio::io::BufWriter<DuplexStream>>,
    finished: Arc<AtomicBool>,
    upload: Option<
        JoinHandle<
            Result<
                async_nats::jetstream::object_store::ObjectInfo,
                async_nats::jetstream::object_store::PutError,
            >,
        >,
    >,
    tracker: Arc<Tracker>,
    id: String,
    name: String,
}

impl fmt::Debug for ArtifactWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArtifactWriter")
            .field("task", &self.id)
            .field("name", &self.name)
            .finish()
    }
}

impl ArtifactWriter {
    /// Starts streaming artifact `name` of task `id` into `store`: the upload runs in a task
    /// that reads what is written, [`ARTIFACT_CHUNK`] bytes at a time.
    pub(crate) fn start(store: ObjectStore, tracker: Arc<Tracker>, id: &str, name: &str) -> Self {
        let (writer, reader) = tokio::io::duplex(2 * ARTIFACT_CHUNK);
        let finished = Arc::new(AtomicBool::new(false));
        let mut reader = UntilFinished {
            inner: reader,
            finished: finished.clone(),
        };
        let meta = object_meta(id, name);
        let upload = tokio::spawn(async move { store.put(meta, &mut reader).await });
        ArtifactWriter {
            pipe: Some(tokio::io::BufWriter::with_capacity(ARTIFACT_CHUNK, writer)),
            finished,
            upload: Some(upload),
            tracker,
            id: id.to_owned(),
            name: name.to_owned(),
        }
    }

    /// Flushes the last bytes, waits until the store has every chunk and the object's
    /// metadata, and lists the artifact in the task's record (written on success).
    pub async fn finish(mut self) -> Result<ArtifactInfo, StatusError> {
        let error = |source: BoxError| StatusError::Artifact {
            id: self.id.clone(),
            name: self.name.clone(),
            source,
        };
        if let Some(mut pipe) = self.pipe.take() {
            let flushed = pipe.flush().await;
            self.finished.store(true, Ordering::Release);
            // Shutting the pipe down is the end of the artifact for the upload.
            let _ = pipe.shutdown().await;
            drop(pipe);
            if let Err(err) = flushed {
                if let Some(upload) = self.upload.take() {
                    upload.abort();
                }
                return Err(error(Box::new(err)));
            }
        }
        let upload = self
            .upload
            .take()
            .ok_or_else(|| error("finish was already called".into()))?;
        let info = upload
            .await
            .map_err(|err| error(Box::new(err)))?
            .map_err(|err| error(Box::new(err)))?;
        let artifact = artifact_info(&self.name, &info);
        let mut pending = self.tracker.pending();
        pending.artifacts.retain(|a| a.name != self.name);
        pending.artifacts.push(artifact.clone());
        Ok(artifact)
    }

    fn pipe(&mut self) -> std::io::Result<Pin<&mut tokio::io::BufWriter<DuplexStream>>> {
        match self.pipe.as_mut() {
            Some(pipe) => Ok(Pin::new(pipe)),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the artifact writer is finished",
            )),
        }
    }
}

impl AsyncWrite for ArtifactWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.pipe() {
            Ok(pipe) => pipe.poll_write(cx, buf),
            Err(err) => Poll::Ready(Err(err)),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.pipe() {
            Ok(pipe) => pipe.poll_flush(cx),
            Err(err) => Poll::Ready(Err(err)),
        }
    }

    /// Flushes only: the artifact ends with [`ArtifactWriter::finish`], not with a shutdown.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.pipe() {
            Ok(pipe) => pipe.poll_flush(cx),
            Err(err) => Poll::Ready(Err(err)),
        }
    }
}

//! The chunked export: one large CSV export split into [`ExportChunk`] tasks that run in
//! parallel as a **chord** (docs/WORKFLOWS.md), whose callback [`AssembleExport`] assembles the
//! file in chunk order into the artifact store and then enqueues the mail with its link.
//!
//! - `POST /chunked-exports` `{"rows": N, "chunk_rows": M, "email": "..."}` enqueues the chord
//!   (id = the export id, members keyed `<export id>-<chunk>`) and answers `202`
//!   [`ChunkedExportResponse`];
//! - `GET /chunked-exports/{id}` answers [`ChunkedExportStatus`]: the chord's counts and, once
//!   assembled, the size and a `csv_url`;
//! - `GET /chunked-exports/{id}/csv` streams the assembled CSV from the artifact store.
//!
//! Each chunk returns its CSV text as its result: over 16 KiB (a few hundred rows), the worker
//! stores it in the results store and the callback gets a reference, which
//! [`jetq_producer::Producer::chord_result`] reads.

use axum::{
    body::Body,
    extract::{rejection::JsonRejection, Path, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use jetq_consumer::{TaskContext, TaskError};
use jetq_contract::{
    status::TaskState,
    workflow::{batch, BatchState},
};
use jetq_producer::{BatchOptions, EnqueueOptions, Producer};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::{
    tasks::{AssembleExport, ExportChunk, SendEmail},
    web::{normalize_email, ApiError, MAX_ROWS},
    worker::{csv_line, validate_export_id, CSV_ARTIFACT, CSV_HEADER},
};

/// The subject of the mail that carries an assembled export's link.
pub const EXPORT_MAIL_SUBJECT: &str = "Your export is ready";
/// Rows per chunk unless the request says otherwise.
pub const DEFAULT_CHUNK_ROWS: u32 = 1_000;
/// Most chunks one export may have.
pub const MAX_CHUNKS: u32 = 1_000;

/// Body of `POST /chunked-exports`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkedExportRequest {
    /// Data rows (1 to [`MAX_ROWS`]).
    pub rows: u32,
    /// Rows per chunk (default [`DEFAULT_CHUNK_ROWS`]; at most [`MAX_CHUNKS`] chunks).
    #[serde(default)]
    pub chunk_rows: Option<u32>,
    /// Who gets the link when the file is assembled.
    pub email: String,
}

/// Answer of `POST /chunked-exports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkedExportResponse {
    /// The export's id, also the chord's batch id.
    pub export_id: String,
    /// Its chunks (the chord's members).
    pub chunks: u32,
    /// The assembler's task id (the chord's `on_success` callback).
    pub assembler_task_id: String,
    /// `/chunked-exports/<export_id>`.
    pub status_url: String,
}

/// What a chunk returns (its task result).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkResult {
    /// The chunk's index.
    pub chunk: u32,
    /// Its first row.
    pub first_row: u32,
    /// Its rows.
    pub rows: u32,
    /// Its data lines.
    pub csv: String,
}

/// What the assembler keeps as its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssembledExport {
    /// Data rows in the file.
    pub rows: u32,
    /// Its size in bytes.
    pub bytes: u64,
    /// Chunks assembled.
    pub chunks: u32,
    /// Chunks whose result came by object-store reference (over 16 KiB).
    pub by_reference: u32,
}

/// Answer of `GET /chunked-exports/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkedExportStatus {
    /// The export's id.
    pub export_id: String,
    /// Chunks in all.
    pub chunks: u64,
    /// Chunks done.
    pub succeeded: u64,
    /// Chunks dead-lettered.
    pub dead: u64,
    /// The assembler's state, once it was enqueued.
    pub assembler: Option<TaskState>,
    /// The assembled file, once done.
    pub assembled: Option<AssembledExport>,
    /// Where to download it, once assembled.
    pub csv_url: Option<String>,
}

/// The assembler's task id: the chord's `on_success` callback id, `batch:<id>:on_success`.
pub fn assembler_id(export_id: &str) -> String {
    batch::callback_id(export_id, batch::Which::OnSuccess)
}

/// The chunks of an export of `rows` rows, `chunk_rows` each (the last may be shorter).
pub fn chunks(export_id: &str, rows: u32, chunk_rows: u32) -> Vec<ExportChunk> {
    let chunk_rows = chunk_rows.max(1);
    (0..rows.div_ceil(chunk_rows))
        .map(|chunk| {
            let first_row = chunk * chunk_rows + 1;
            ExportChunk {
                export_id: export_id.to_owned(),
                chunk,
                first_row,
                rows: chunk_rows.min(rows - (first_row - 1)),
            }
        })
        .collect()
}

/// Runs one chunk: its data lines become its result.
pub fn run_chunk(context: &TaskContext, chunk: &ExportChunk) -> Result<ChunkResult, TaskError> {
    validate_export_id(&chunk.export_id).map_err(TaskError::fatal)?;
    let csv: String = (chunk.first_row..chunk.first_row.saturating_add(chunk.rows))
        .map(csv_line)
        .collect();
    let result = ChunkResult {
        chunk: chunk.chunk,
        first_row: chunk.first_row,
        rows: chunk.rows,
        csv,
    };
    context.set_result(&result)?;
    Ok(result)
}

/// Runs the assembler: reads every chunk's result (inline or by reference) through
/// `producer`, writes the header and the chunks in order as the artifact [`CSV_ARTIFACT`],
/// keeps an [`AssembledExport`] as its result, then enqueues the mail with the link (keyed
/// `export-mail:<id>`: a re-run of the assembler stores it once).
pub async fn assemble(
    context: &TaskContext,
    task: &AssembleExport,
    producer: Option<&Producer>,
) -> Result<AssembledExport, TaskError> {
    let producer = producer.ok_or_else(|| {
        TaskError::fatal("this worker has no producer: it cannot read chunks or enqueue the mail")
    })?;
    validate_export_id(&task.export_id).map_err(TaskError::fatal)?;
    let summary = &task.batch;
    if summary.dead > 0 || summary.results_truncated {
        return Err(TaskError::fatal(format!(
            "export {}: {} chunk(s) dead, results truncated: {}",
            task.export_id, summary.dead, summary.results_truncated
        )));
    }
    let mut parts = Vec::with_capacity(summary.results.len());
    let mut by_reference = 0;
    for member in &summary.results {
        by_reference += u32::from(member.result_ref.is_some());
        let value = producer
            .chord_result(member)
            .await?
            .ok_or_else(|| TaskError::fatal(format!("chunk {} has no result", member.id)))?;
        let part: ChunkResult = serde_json::from_value(value)
            .map_err(|err| TaskError::fatal(format!("chunk {}: {err}", member.id)))?;
        parts.push(part);
    }
    parts.sort_by_key(|part| part.chunk);
    let mut next_row = 1;
    for part in &parts {
        if part.first_row != next_row {
            return Err(TaskError::fatal(format!(
                "chunk {} starts at row {}, expected {next_row}",
                part.chunk, part.first_row
            )));
        }
        next_row += part.rows;
    }
    let mut csv = context.artifact_writer(CSV_ARTIFACT)?;
    csv.write_all(format!("{CSV_HEADER}\n").as_bytes()).await?;
    for part in &parts {
        csv.write_all(part.csv.as_bytes()).await?;
    }
    let stored = csv.finish().await?;
    let assembled = AssembledExport {
        rows: next_row - 1,
        bytes: stored.size,
        chunks: u32::try_from(parts.len()).unwrap_or(u32::MAX),
        by_reference,
    };
    context.set_result(&assembled)?;
    let mail = SendEmail {
        to: task.email.clone(),
        subject: EXPORT_MAIL_SUBJECT.into(),
        body: format!(
            "Your export {} is ready: {} rows in {} chunks.\nDownload it at \
             /chunked-exports/{}/csv\n",
            task.export_id, assembled.rows, assembled.chunks, task.export_id
        ),
    };
    let key = format!("export-mail:{}", task.export_id);
    producer
        .enqueue_with(&mail, EnqueueOptions::new().key(key))
        .await
        .map_err(|err| TaskError::retry(format!("cannot enqueue the mail: {err}")))?;
    Ok(assembled)
}

/// The chunked export's routes (state: the web app's producer).
pub fn routes() -> Router<Producer> {
    Router::new()
        .route("/chunked-exports", post(create))
        .route("/chunked-exports/{id}", get(status))
        .route("/chunked-exports/{id}/csv", get(download))
}

async fn create(
    State(producer): State<Producer>,
    body: Result<Json<ChunkedExportRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<ChunkedExportResponse>), ApiError> {
    let Json(request) = body?;
    if request.rows == 0 || request.rows > MAX_ROWS {
        return Err(ApiError::invalid(format!(
            "rows must be between 1 and {MAX_ROWS}"
        )));
    }
    let chunk_rows = request.chunk_rows.unwrap_or(DEFAULT_CHUNK_ROWS);
    if chunk_rows == 0 || request.rows.div_ceil(chunk_rows) > MAX_CHUNKS {
        return Err(ApiError::invalid(format!(
            "chunk_rows must be at least 1 and give at most {MAX_CHUNKS} chunks"
        )));
    }
    let email = normalize_email(&request.email).map_err(ApiError::invalid)?;
    let export_id = ulid::Ulid::new().to_string();
    let parts = chunks(&export_id, request.rows, chunk_rows);
    let mut chord = producer.batch(BatchOptions::new().id(export_id.clone()).chord());
    for part in &parts {
        // Keys: a retried request's chunks are deduplicated, not run twice.
        let key = format!("{export_id}-{:04}", part.chunk);
        chord = chord.add_with(part, EnqueueOptions::new().key(key));
    }
    let handle = chord
        .on_success(&AssembleExport {
            export_id: export_id.clone(),
            email,
            batch: Default::default(),
        })
        .enqueue()
        .await?;
    tracing::info!(export_id = %handle.id, chunks = parts.len(), "chunked export queued");
    Ok((
        StatusCode::ACCEPTED,
        Json(ChunkedExportResponse {
            chunks: u32::try_from(parts.len()).unwrap_or(u32::MAX),
            assembler_task_id: assembler_id(&export_id),
            status_url: format!("/chunked-exports/{export_id}"),
            export_id,
        }),
    ))
}

async fn status(
    State(producer): State<Producer>,
    Path(id): Path<String>,
) -> Result<Json<ChunkedExportStatus>, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, format!("no chunked export {id:?}"));
    validate_export_id(&id).map_err(|_| not_found())?;
    let batch = producer
        .batch_status(&id)
        .await?
        .filter(|batch| batch.state != BatchState::Enqueuing)
        .ok_or_else(not_found)?;
    let record = producer.status(&assembler_id(&id)).await?;
    let assembled = record
        .as_ref()
        .filter(|record| record.state == TaskState::Succeeded)
        .and_then(|record| record.result.clone())
        .and_then(|value| serde_json::from_value::<AssembledExport>(value).ok());
    Ok(Json(ChunkedExportStatus {
        export_id: id.clone(),
        chunks: batch.total,
        succeeded: batch.succeeded,
        dead: batch.dead,
        assembler: record.map(|record| record.state),
        csv_url: assembled.map(|_| format!("/chunked-exports/{id}/csv")),
        assembled,
    }))
}

async fn download(
    State(producer): State<Producer>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, format!("no chunked export {id:?}"));
    validate_export_id(&id).map_err(|_| not_found())?;
    let assembler = assembler_id(&id);
    let record = producer.status(&assembler).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            format!("export {id} is not assembled yet"),
        )
    })?;
    if record.state != TaskState::Succeeded {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("export {id}'s assembler is {}, not finished", record.state),
        ));
    }
    let artifact = producer.artifact(&assembler, CSV_ARTIFACT).await?;
    let size = artifact.size();
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(artifact));
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_LENGTH, size.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}.csv\""),
            ),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_row_once() {
        let parts = chunks("e", 2_500, 1_000);
        let rows: Vec<(u32, u32)> = parts.iter().map(|p| (p.first_row, p.rows)).collect();
        assert_eq!(rows, [(1, 1000), (1001, 1000), (2001, 500)]);
        assert_eq!(chunks("e", 3, 5).len(), 1);
        assert_eq!(assembler_id("e"), "batch:e:on_success");
    }
}

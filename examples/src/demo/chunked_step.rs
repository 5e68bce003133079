//! The demo's chunked export: `POST /chunked-exports` (a chord of chunks, assembled by its
//! callback, which then enqueues the mail with the link), waits for the mail, downloads the
//! file and checks it has every row exactly once, in order.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Instant};

use super::{accepted, fail, get, say, send, DemoError, DemoOptions, RequestRecord, POLL};
use crate::{
    chunked::{
        ChunkedExportRequest, ChunkedExportResponse, ChunkedExportStatus, EXPORT_MAIL_SUBJECT,
    },
    smtp_sink::SmtpSink,
    worker::{csv_line, CSV_HEADER},
};

/// Rows of the demo's chunked export.
pub(super) const CHUNKED_ROWS: u32 = 10_000;
/// Rows per chunk: 10 chunks of about 30 KiB, each over the 16 KiB a result may keep inline, so
/// every chunk reaches the assembler by object-store reference.
pub(super) const CHUNK_ROWS: u32 = 1_000;

/// What the chunked export did.
#[derive(Debug, Clone)]
pub struct ChunkedReport {
    /// The answer of `POST /chunked-exports`.
    pub export: ChunkedExportResponse,
    /// Its final status, from `GET /chunked-exports/{id}`.
    pub status: ChunkedExportStatus,
    /// Who got the mail with the link.
    pub mailed_to: String,
    /// Where the downloaded file was written.
    pub csv_path: PathBuf,
    /// Its lines (header included).
    pub csv_lines: usize,
}

impl ChunkedReport {
    pub(super) fn write(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f)?;
        writeln!(f, "Chunked export (a chord, docs/WORKFLOWS.md):")?;
        let assembled = self
            .status
            .assembled
            .unwrap_or(crate::chunked::AssembledExport {
                rows: 0,
                bytes: 0,
                chunks: 0,
                by_reference: 0,
            });
        writeln!(
            f,
            "  export {}: {} rows in {} chunk tasks run in parallel; the chord's callback {} \
             got {} chunk result(s) by object-store reference (over 16 KiB) and assembled {} \
             bytes in order",
            self.export.export_id,
            assembled.rows,
            self.status.chunks,
            self.export.assembler_task_id,
            assembled.by_reference,
            assembled.bytes
        )?;
        writeln!(
            f,
            "  then enqueued the mail \"{EXPORT_MAIL_SUBJECT}\" to {} with the link; downloaded \
             to {} ({} lines: header + every row once, in order)",
            self.mailed_to,
            self.csv_path.display(),
            self.csv_lines
        )
    }
}

/// Runs the chunked export and checks its outcome.
pub(super) async fn run(
    options: &DemoOptions,
    web: SocketAddr,
    sink: &SmtpSink,
    email: &str,
    requests: &mut Vec<RequestRecord>,
) -> Result<ChunkedReport, DemoError> {
    let (answer, record) = send(
        web,
        "/chunked-exports",
        &ChunkedExportRequest {
            rows: CHUNKED_ROWS,
            chunk_rows: Some(CHUNK_ROWS),
            email: email.to_owned(),
        },
    )
    .await?;
    say(
        options,
        &format!(
            "POST /chunked-exports -> {} {}",
            record.status, record.answer
        ),
    );
    requests.push(record);
    let export: ChunkedExportResponse = accepted(&answer, "POST /chunked-exports")?;
    let deadline = Instant::now() + options.timeout;
    let mailed =
        |mail: &crate::smtp_sink::ReceivedMail| mail.header("Subject") == Some(EXPORT_MAIL_SUBJECT);
    while !sink.messages_to(email).iter().any(mailed) {
        if Instant::now() >= deadline {
            return Err(fail(format!(
                "timed out after {:?} waiting for the chunked export's mail to {email}\n\
                 SMTP sink:\n{}",
                options.timeout,
                sink.logs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
    let (answer, record) = get(web, &export.status_url).await?;
    requests.push(record);
    let status: ChunkedExportStatus = answer
        .json()
        .map_err(|err| fail(format!("GET {}: {err}: {}", export.status_url, answer.body)))?;
    let csv_url = status
        .csv_url
        .clone()
        .ok_or_else(|| fail(format!("the chunked export is not assembled: {status:?}")))?;
    let (download, record) = get(web, &csv_url).await?;
    requests.push(RequestRecord {
        answer: format!("{} bytes of text/csv", download.body.len()),
        ..record
    });
    let mut expected = format!("{CSV_HEADER}\n");
    expected.extend((1..=CHUNKED_ROWS).map(csv_line));
    if download.status != 200 || download.body != expected {
        return Err(fail(format!(
            "GET {csv_url} answered {} with {} bytes: not every row once in order ({} bytes \
             expected)",
            download.status,
            download.body.len(),
            expected.len()
        )));
    }
    let csv_path = options
        .export_dir
        .join(format!("{}-chunked.csv", export.export_id));
    tokio::fs::write(&csv_path, download.body.as_bytes())
        .await
        .map_err(|err| fail(format!("cannot write {}: {err}", csv_path.display())))?;
    Ok(ChunkedReport {
        csv_lines: download.body.lines().count(),
        export,
        status,
        mailed_to: email.to_owned(),
        csv_path,
    })
}

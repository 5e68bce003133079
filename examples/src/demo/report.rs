//! How the demo's report reads (its `Display`).

use std::fmt;

use jetq_contract::Task;

use super::DemoReport;
use crate::worker::AttemptStatus;

impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f)?;
        writeln!(f, "== jetq demo: what happened ==")?;
        writeln!(f, "NATS:      {}", self.nats)?;
        writeln!(f, "SMTP sink: {} (aiosmtpd)", self.smtp)?;
        writeln!(f, "web app:   http://{}", self.web)?;
        writeln!(
            f,
            "worker:    in this process, ack_wait {:?} (heartbeat every {} ms)",
            self.ack_wait,
            (self.ack_wait / 3).as_millis()
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "Requests (each answered once JetStream stored the task; none waits for SMTP):"
        )?;
        for request in &self.requests {
            writeln!(
                f,
                "  {:<14} {:<40} -> {} in {:>7.1} ms  {}",
                request.request,
                request.body,
                request.status,
                request.latency.as_secs_f64() * 1000.0,
                request.answer
            )?;
        }
        if let (Some(first), Some(repeat)) = (self.signups.first(), self.signups.get(2)) {
            writeln!(
                f,
                "  The repeated signup got duplicate={} and the same task id ({}): the server \
                 dropped it, so one welcome mail is sent, not two.",
                repeat.duplicate, first.task_id
            )?;
        }
        writeln!(f)?;
        writeln!(f, "Emails received by the SMTP sink:")?;
        for (index, mail) in self.emails.iter().enumerate() {
            writeln!(f, "  #{}", index + 1)?;
            for (name, value) in &mail.headers {
                writeln!(f, "    {name}: {value}")?;
            }
        }
        for record in self
            .attempts
            .iter()
            .filter(|record| record.task == crate::tasks::SendEmail::NAME)
        {
            writeln!(
                f,
                "  task {}: attempt {} {}",
                record.task_id,
                record.attempt,
                status_text(&record.status)
            )?;
        }
        writeln!(f)?;
        writeln!(f, "Export:")?;
        let attempts = self.export_attempts();
        let took = attempts
            .iter()
            .map(|record| record.duration)
            .max()
            .unwrap_or_default();
        writeln!(
            f,
            "  task {} (export {}): {} rows x {:?}, ran {:.1} s > ack_wait {:?}, in {} attempt(s){}",
            self.export.task_id,
            self.export.export_id,
            self.export_rows,
            self.row_delay,
            took.as_secs_f64(),
            self.ack_wait,
            attempts.len(),
            if attempts.len() == 1 {
                ": heartbeats kept it from being redelivered"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "  status: {} after attempt {}, {}% ({}), {} bytes in the jetq artifact store",
            self.export_status.state,
            self.export_status.attempt,
            self.export_status.percent.unwrap_or_default(),
            self.export_status.message.as_deref().unwrap_or(""),
            self.export_status.bytes.unwrap_or_default()
        )?;
        writeln!(
            f,
            "  downloaded through the web app (GET /exports/{}/csv, streamed from the object \
             store: no shared disk) to {} ({} lines: header + {} rows)",
            self.export.export_id,
            self.csv_path.display(),
            self.csv_lines,
            self.csv_lines.saturating_sub(1)
        )?;
        self.chunked.write(f)?;
        writeln!(f)?;
        writeln!(
            f,
            "Periodic task (the crontab replacement): schedule demo-digest in {} fires \
             send_digest every 5 s; jetq-scheduler enqueued it, the worker mailed it:",
            self.schedules_file.display()
        )?;
        for record in &self.digests {
            writeln!(
                f,
                "  task {}: attempt {} {}",
                record.task_id,
                record.attempt,
                status_text(&record.status)
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "Where to look (`jetq` is `cargo run -q -p jetq-cli --`, or `cargo install jetq-cli`):"
        )?;
        writeln!(f, "  export JETQ_NATS_URL={}", self.nats_url)?;
        writeln!(
            f,
            "  jetq queues                     # pending, in flight, dead, rate per queue"
        )?;
        writeln!(
            f,
            "  jetq schedules --file {}   # next fires",
            self.schedules_file.display()
        )?;
        writeln!(
            f,
            "  jetq dead list                  # dead letters, if any"
        )?;
        writeln!(
            f,
            "  jetq dashboard                  # then open http://127.0.0.1:8080/"
        )?;
        writeln!(
            f,
            "  (the demo stops its stack when it ends: `bash scripts/demo.sh --stay` keeps it \
             running until Ctrl-C)"
        )?;
        Ok(())
    }
}

pub(super) fn status_text(status: &AttemptStatus) -> String {
    match status {
        AttemptStatus::Running => "running".into(),
        AttemptStatus::Succeeded => "succeeded".into(),
        AttemptStatus::Failed { error, fatal } => {
            format!(
                "failed ({}): {error}",
                if *fatal { "fatal" } else { "will retry" }
            )
        }
        AttemptStatus::Cancelled => "cancelled".into(),
    }
}

//! [`Outbox`]: writes tasks into the outbox table inside the caller's transaction.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use jetq_contract::{ConnectionConfig, Subjects, Task};
use jetq_producer::{message::TaskMessage, EnqueueOptions, RawTask};
use serde::Deserialize;
use sqlx::PgConnection;

use crate::{OutboxError, TableName};

/// The writer's settings from the environment: `JETQ_OUTBOX_TABLE` (default `jetq_outbox`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
struct WriterSettings {
    outbox_table: String,
}

impl Default for WriterSettings {
    fn default() -> Self {
        WriterSettings {
            outbox_table: crate::table::DEFAULT_TABLE.to_owned(),
        }
    }
}

/// Enqueues tasks transactionally: each call INSERTs one row (the task's wire message) on the
/// connection it is given, normally an open transaction. The task exists for jetq exactly when
/// that transaction commits; `jetq-relay` then publishes it to JetStream with its id as
/// `Nats-Msg-Id`. A rolled-back transaction enqueues nothing.
///
/// Cheap to clone; holds no connection.
///
/// ```no_run
/// use jetq_contract::Task;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct SendWelcome { user_id: i64 }
/// impl Task for SendWelcome {
///     const NAME: &'static str = "send_welcome";
///     const QUEUE: &'static str = "emails";
/// }
///
/// # async fn signup(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// let outbox = jetq_outbox::Outbox::new();
/// let mut tx = pool.begin().await?;
/// let user_id: i64 = sqlx::query_scalar("INSERT INTO users (email) VALUES ($1) RETURNING id")
///     .bind("ada@example.com")
///     .fetch_one(&mut *tx)
///     .await?;
/// let task_id = outbox.enqueue(&mut tx, &SendWelcome { user_id }).await?;
/// tx.commit().await?; // the user and the task, or neither
/// # let _ = task_id; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Outbox {
    subjects: Subjects,
    table: TableName,
    max_delay: Duration,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox::new()
    }
}

impl Outbox {
    /// Prefix `jetq`, table `jetq_outbox`, maximum delay 30 days.
    pub fn new() -> Outbox {
        Outbox {
            subjects: Subjects::default(),
            table: TableName::default(),
            max_delay: jetq_contract::delayed::DEFAULT_MAX_DELAY,
        }
    }

    /// Reads `JETQ_PREFIX` and `JETQ_OUTBOX_TABLE` (and checks the other `JETQ_*` connection
    /// variables, as a producer would).
    pub fn from_env() -> Result<Outbox, OutboxError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Outbox::from_env_iter(vars)
    }

    /// [`Outbox::from_env`] from the given variables.
    pub fn from_env_iter<I>(vars: I) -> Result<Outbox, OutboxError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let connection = ConnectionConfig::from_env_iter(vars.clone())?;
        let settings: WriterSettings = jetq_contract::config::from_env_iter(vars)?;
        Ok(Outbox {
            subjects: connection.subjects()?,
            table: TableName::new(&settings.outbox_table)?,
            max_delay: jetq_contract::delayed::DEFAULT_MAX_DELAY,
        })
    }

    /// Uses another subject prefix (must match the workers').
    pub fn with_subjects(mut self, subjects: Subjects) -> Outbox {
        self.subjects = subjects;
        self
    }

    /// Uses another table.
    pub fn with_table(mut self, table: TableName) -> Outbox {
        self.table = table;
        self
    }

    /// Sets the longest delay accepted (default 30 days, as the producer).
    pub fn with_max_delay(mut self, max: Duration) -> Outbox {
        self.max_delay = max;
        self
    }

    /// The table written to.
    pub fn table(&self) -> &TableName {
        &self.table
    }

    /// Writes a task with a fresh id; returns the task id.
    pub async fn enqueue<T: Task>(
        &self,
        conn: &mut PgConnection,
        task: &T,
    ) -> Result<String, OutboxError> {
        self.enqueue_with(conn, task, EnqueueOptions::default())
            .await
    }

    /// Writes a task with options (idempotency key, overrides, trace context); returns the
    /// task id (the key, if one was given).
    pub async fn enqueue_with<T: Task>(
        &self,
        conn: &mut PgConnection,
        task: &T,
        options: EnqueueOptions,
    ) -> Result<String, OutboxError> {
        let message = TaskMessage::typed(&self.subjects, task, options, None)?;
        self.insert(conn, message).await
    }

    /// Writes a task that becomes runnable after `delay` (released by `jetq-scheduler`).
    pub async fn enqueue_in<T: Task>(
        &self,
        conn: &mut PgConnection,
        delay: Duration,
        task: &T,
        options: EnqueueOptions,
    ) -> Result<String, OutboxError> {
        self.check_delay(T::NAME, delay)?;
        let due = SystemTime::now() + delay;
        let message = TaskMessage::typed(&self.subjects, task, options, Some(due))?;
        self.insert(conn, message).await
    }

    /// Writes a task that becomes runnable at `at` (a time already past: at once).
    pub async fn enqueue_at<T: Task>(
        &self,
        conn: &mut PgConnection,
        at: SystemTime,
        task: &T,
        options: EnqueueOptions,
    ) -> Result<String, OutboxError> {
        let delay = at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        self.check_delay(T::NAME, delay)?;
        let message = TaskMessage::typed(&self.subjects, task, options, Some(at))?;
        self.insert(conn, message).await
    }

    /// Writes an untyped task (JSON arguments for a queue and task name); returns its id.
    pub async fn enqueue_raw(
        &self,
        conn: &mut PgConnection,
        task: RawTask,
    ) -> Result<String, OutboxError> {
        let message = TaskMessage::raw(
            &self.subjects,
            &task.queue,
            &task.task,
            Bytes::clone(&task.payload),
            task.options,
            None,
        )?;
        self.insert(conn, message).await
    }

    fn check_delay(&self, task: &str, delay: Duration) -> Result<(), OutboxError> {
        if delay > self.max_delay {
            return Err(OutboxError::DelayTooLong {
                task: task.to_owned(),
                delay,
                max: self.max_delay,
            });
        }
        Ok(())
    }

    async fn insert(
        &self,
        conn: &mut PgConnection,
        message: TaskMessage,
    ) -> Result<String, OutboxError> {
        let headers: serde_json::Map<String, serde_json::Value> = message
            .headers
            .into_iter()
            .map(|(name, value)| (name, serde_json::Value::String(value)))
            .collect();
        sqlx::query(&self.table.insert_sql())
            .bind(&message.id)
            .bind(&message.subject)
            .bind(sqlx::types::Json(headers))
            .bind(message.payload.as_ref())
            .execute(conn)
            .await
            .map_err(|err| OutboxError::from_db(self.table.as_str(), err))?;
        Ok(message.id)
    }
}

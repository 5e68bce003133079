//! Handlers: typed functions registered per task type, and raw ones registered by name for a
//! task type or a whole queue, erased so the worker can hold them in one table keyed by queue
//! and task name.

use std::{
    collections::{hash_map::Entry, HashMap},
    future::Future,
    pin::Pin,
    sync::Arc,
};

use bytes::Bytes;
use jetq_contract::{Task, TaskOptions};

use crate::{context::TaskContext, error::TaskError, telemetry::TaskLabels};

/// What an erased handler call can end in, before timeouts and panics are considered.
pub(crate) enum CallError {
    /// The payload is not valid JSON for the task type.
    Undecodable(serde_json::Error),
    /// The handler returned an error.
    Failed(TaskError),
}

pub(crate) type CallFuture = Pin<Box<dyn Future<Output = Result<(), CallError>> + Send>>;

/// A handler with its task type erased.
pub(crate) trait ErasedHandler: Send + Sync {
    fn call(&self, payload: &Bytes, context: TaskContext) -> CallFuture;
}

struct TypedHandler<T, F> {
    function: F,
    _task: std::marker::PhantomData<fn() -> T>,
}

impl<T, F, Fut> ErasedHandler for TypedHandler<T, F>
where
    T: Task,
    F: Fn(T, TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
{
    fn call(&self, payload: &Bytes, context: TaskContext) -> CallFuture {
        match serde_json::from_slice::<T>(payload) {
            Ok(task) => {
                let future = (self.function)(task, context);
                Box::pin(async move { future.await.map_err(CallError::Failed) })
            }
            Err(err) => Box::pin(std::future::ready(Err(CallError::Undecodable(err)))),
        }
    }
}

/// A handler that takes the payload as it is, undecoded.
struct RawHandler<F> {
    function: F,
}

impl<F, Fut> ErasedHandler for RawHandler<F>
where
    F: Fn(Bytes, TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
{
    fn call(&self, payload: &Bytes, context: TaskContext) -> CallFuture {
        let future = (self.function)(payload.clone(), context);
        Box::pin(async move { future.await.map_err(CallError::Failed) })
    }
}

/// The task name of a raw registration that takes every task type of its queue.
pub const ANY_TASK: &str = "*";

/// A registered task type (or, with task [`ANY_TASK`], a whole queue): names, defaults and the
/// erased handler.
///
/// The names are shared strings and the metric labels are built here once: every delivery of
/// the type borrows them instead of allocating its own.
#[derive(Clone)]
pub(crate) struct Registration {
    pub(crate) queue: Arc<str>,
    pub(crate) task: Arc<str>,
    pub(crate) options: TaskOptions,
    pub(crate) handler: Arc<dyn ErasedHandler>,
    pub(crate) labels: TaskLabels,
}

impl Registration {
    pub(crate) fn new<T, F, Fut>(function: F) -> Self
    where
        T: Task,
        F: Fn(T, TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
    {
        Registration::with_handler(
            T::QUEUE,
            T::NAME,
            T::options(),
            Arc::new(TypedHandler {
                function,
                _task: std::marker::PhantomData,
            }),
        )
    }

    pub(crate) fn raw<F, Fut>(
        queue: String,
        task: String,
        options: TaskOptions,
        function: F,
    ) -> Self
    where
        F: Fn(Bytes, TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
    {
        Registration::with_handler(&queue, &task, options, Arc::new(RawHandler { function }))
    }

    fn with_handler(
        queue: &str,
        task: &str,
        options: TaskOptions,
        handler: Arc<dyn ErasedHandler>,
    ) -> Self {
        let (queue, task): (Arc<str>, Arc<str>) = (Arc::from(queue), Arc::from(task));
        Registration {
            labels: TaskLabels::new(queue.clone(), task.clone()),
            queue,
            task,
            options,
            handler,
        }
    }

    /// True for a queue's catch-all ([`ANY_TASK`]), which runs tasks of any name.
    pub(crate) fn is_catch_all(&self) -> bool {
        &*self.task == ANY_TASK
    }
}

/// The registered handlers by queue, then task name (task [`ANY_TASK`]: the queue's catch-all).
/// Nested so that a delivery's `&str` names find their handler without building an owned key.
#[derive(Clone, Default)]
pub(crate) struct Registry(HashMap<String, HashMap<String, Registration>>);

impl Registry {
    /// Adds a registration; `false` (and nothing added) if its queue and task are taken.
    pub(crate) fn insert(&mut self, registration: Registration) -> bool {
        let tasks = self.0.entry(registration.queue.to_string()).or_default();
        match tasks.entry(registration.task.to_string()) {
            Entry::Occupied(_) => false,
            Entry::Vacant(slot) => {
                slot.insert(registration);
                true
            }
        }
    }

    /// The handler of a task: its own registration, else its queue's catch-all.
    pub(crate) fn lookup(&self, queue: &str, task: &str) -> Option<&Registration> {
        let tasks = self.0.get(queue)?;
        tasks.get(task).or_else(|| tasks.get(ANY_TASK))
    }

    /// The queues with at least one handler.
    pub(crate) fn queues(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Every registration.
    pub(crate) fn registrations(&self) -> impl Iterator<Item = &Registration> {
        self.0.values().flat_map(HashMap::values)
    }
}

//! Handlers: typed functions registered per task type, and raw ones registered by name for a
//! task type or a whole queue, erased so the worker can hold them in one table keyed by queue
//! and task name.

use std::{future::Future, pin::Pin, sync::Arc};

use bytes::Bytes;
use jetq_contract::{Task, TaskOptions};

use crate::{context::TaskContext, error::TaskError};

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
#[derive(Clone)]
pub(crate) struct Registration {
    pub(crate) queue: String,
    pub(crate) task: String,
    pub(crate) options: TaskOptions,
    pub(crate) handler: Arc<dyn ErasedHandler>,
}

impl Registration {
    pub(crate) fn new<T, F, Fut>(function: F) -> Self
    where
        T: Task,
        F: Fn(T, TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
    {
        Registration {
            queue: T::QUEUE.to_owned(),
            task: T::NAME.to_owned(),
            options: T::options(),
            handler: Arc::new(TypedHandler {
                function,
                _task: std::marker::PhantomData,
            }),
        }
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
        Registration {
            queue,
            task,
            options,
            handler: Arc::new(RawHandler { function }),
        }
    }
}

//! Handlers: typed functions registered per task type, erased so the worker can hold them in
//! one table keyed by queue and task name.

use std::{future::Future, pin::Pin, sync::Arc};

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
    fn call(&self, payload: &[u8], context: TaskContext) -> CallFuture;
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
    fn call(&self, payload: &[u8], context: TaskContext) -> CallFuture {
        match serde_json::from_slice::<T>(payload) {
            Ok(task) => {
                let future = (self.function)(task, context);
                Box::pin(async move { future.await.map_err(CallError::Failed) })
            }
            Err(err) => Box::pin(std::future::ready(Err(CallError::Undecodable(err)))),
        }
    }
}

/// A registered task type: names, defaults and the erased handler.
#[derive(Clone)]
pub(crate) struct Registration {
    pub(crate) queue: &'static str,
    pub(crate) task: &'static str,
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
            queue: T::QUEUE,
            task: T::NAME,
            options: T::options(),
            handler: Arc::new(TypedHandler {
                function,
                _task: std::marker::PhantomData,
            }),
        }
    }
}

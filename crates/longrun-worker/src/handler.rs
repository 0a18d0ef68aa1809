//! Handlers and the [`Registry`] that maps task names to them.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use longrun_core::Resource;
use serde::Serialize;
use serde_json::Value;

use crate::{TaskContext, TaskError, TaskInput};

/// What a successful attempt produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskOutput {
    /// The result (`None` when there is none).
    pub result: Option<Value>,
    /// Where the result lives, when not in `result`.
    pub result_url: Option<String>,
    /// Resources created or changed.
    pub resources: Vec<Resource>,
}

impl From<Value> for TaskOutput {
    /// `null` is no result.
    fn from(value: Value) -> Self {
        Self {
            result: (!value.is_null()).then_some(value),
            ..Self::default()
        }
    }
}

/// Runs one kind of task. Closures become handlers through [`Registry::handler`]; implement
/// this for handlers with state or that report `resultUrl`/`resources`.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Runs one attempt. Should return soon after `ctx.cancelled()` resolves.
    async fn run(&self, ctx: TaskContext, input: TaskInput) -> Result<TaskOutput, TaskError>;
}

/// A closure `|ctx, input| async { Ok(json) }` as a [`Handler`].
struct FnHandler<F>(F);

#[async_trait]
impl<F, Fut, T> Handler for FnHandler<F>
where
    F: Fn(TaskContext, TaskInput) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, TaskError>> + Send + 'static,
    T: Serialize,
{
    async fn run(&self, ctx: TaskContext, input: TaskInput) -> Result<TaskOutput, TaskError> {
        let output = (self.0)(ctx, input).await?;
        Ok(serde_json::to_value(output)?.into())
    }
}

/// Task names and their handlers.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: BTreeMap<String, Arc<dyn Handler>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a closure handler for `name`; its output is serialised to JSON as the result
    /// (`()` and `null` mean no result). Replaces an earlier handler of that name.
    pub fn handler<F, Fut, T>(self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(TaskContext, TaskInput) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, TaskError>> + Send + 'static,
        T: Serialize + 'static,
    {
        self.register(name, FnHandler(f))
    }

    /// Adds a [`Handler`] for `name`. Replaces an earlier handler of that name.
    pub fn register(mut self, name: impl Into<String>, handler: impl Handler) -> Self {
        self.handlers.insert(name.into(), Arc::new(handler));
        self
    }

    /// The registered task names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.handlers.keys().cloned().collect()
    }

    /// The handler for `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.get(name).cloned()
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("names", &self.names())
            .finish()
    }
}

//! [`TaskInput`]: what the submitter gave the operation, with typed accessors.

use longrun_core::Operation;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::TaskError;

/// An operation's input: `args`, `kwargs` and `content` as submitted.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskInput {
    /// Positional arguments (a JSON array).
    pub args: Value,
    /// Keyword arguments (a JSON object).
    pub kwargs: Value,
    /// Free JSON (`null` when none was given).
    pub content: Value,
}

impl TaskInput {
    /// The input of `op`.
    pub fn of(op: &Operation) -> Self {
        Self {
            args: op.args.clone(),
            kwargs: op.kwargs.clone(),
            content: op.content.clone().unwrap_or(Value::Null),
        }
    }

    /// `args` as `T` (e.g. a tuple); a mismatch is a fatal `ValueError`.
    pub fn args_as<T: DeserializeOwned>(&self) -> Result<T, TaskError> {
        parse("args", &self.args)
    }

    /// `kwargs` as `T` (e.g. a struct); a mismatch is a fatal `ValueError`.
    pub fn kwargs_as<T: DeserializeOwned>(&self) -> Result<T, TaskError> {
        parse("kwargs", &self.kwargs)
    }

    /// `content` as `T`; a mismatch is a fatal `ValueError`.
    pub fn content_as<T: DeserializeOwned>(&self) -> Result<T, TaskError> {
        parse("content", &self.content)
    }
}

fn parse<T: DeserializeOwned>(what: &str, value: &Value) -> Result<T, TaskError> {
    T::deserialize(value).map_err(|e| {
        TaskError::fatal("ValueError", format!("invalid {what}: {e}")).with_code("invalid_input")
    })
}

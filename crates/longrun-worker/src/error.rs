//! [`TaskError`]: how a handler says an attempt failed, and whether another may succeed.

use longrun_core::wire::ReportedError;

/// A failed attempt: an error class, a message, an optional stable code, and whether the
/// operation should be retried (while its retry policy allows) or fail at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    error_type: String,
    message: String,
    code: Option<String>,
    retryable: bool,
}

impl TaskError {
    /// A failure another attempt may not have (a timeout, an unavailable dependency).
    pub fn retryable(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error_type: error_type.into(),
            message: message.into(),
            code: None,
            retryable: true,
        }
    }

    /// A failure no retry can fix (bad input, a missing resource): the operation fails at once.
    pub fn fatal(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error_type: error_type.into(),
            message: message.into(),
            code: None,
            retryable: false,
        }
    }

    /// The error a handler returns when it stops because [`crate::TaskContext::cancelled`]
    /// fired (the operation then ends `cancelled`, or goes back to the queue at shutdown).
    pub fn cancelled() -> Self {
        Self::fatal("Cancelled", "the task stopped on cancellation").with_code("cancelled")
    }

    /// Sets the stable machine-readable code (the server defaults it to `error`).
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// The error class, e.g. `ValueError`.
    pub fn error_type(&self) -> &str {
        &self.error_type
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The stable code, if one was set.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// Whether the operation may be retried.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The error as the worker protocol reports it.
    pub fn to_reported(&self) -> ReportedError {
        ReportedError {
            error_type: self.error_type.clone(),
            message: self.message.clone(),
            code: self.code.clone(),
        }
    }
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.retryable { "retryable" } else { "fatal" };
        write!(f, "{} ({kind}): {}", self.error_type, self.message)
    }
}

impl std::error::Error for TaskError {}

/// I/O errors are usually transient: retryable, type `IoError`.
impl From<std::io::Error> for TaskError {
    fn from(e: std::io::Error) -> Self {
        Self::retryable("IoError", e.to_string())
    }
}

/// JSON that does not fit is a bug in the input or the handler: fatal, type `ValueError`.
impl From<serde_json::Error> for TaskError {
    fn from(e: serde_json::Error) -> Self {
        Self::fatal("ValueError", e.to_string())
    }
}

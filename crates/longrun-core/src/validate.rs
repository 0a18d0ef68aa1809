//! Rules on input that a JSON schema alone cannot express. Every rule names the field it
//! rejects, so callers can answer with a precise message.

use std::fmt::Display;

/// Input that breaks a rule; the message names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

/// Longest task, queue and worker name.
pub const MAX_NAME_CHARS: usize = 200;

/// Longest `statusDetail`.
pub const MAX_DETAIL_CHARS: usize = 1000;

/// Longest retry backoff (base or cap) a submit may ask for: one day.
pub const MAX_BACKOFF_SECS: f64 = 86_400.0;

/// A task, queue or worker name: 1–200 characters from `A-Z a-z 0-9 . _ : -`.
pub fn name(field: &str, value: &str) -> Result<(), InvalidInput> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
    if value.is_empty() || value.len() > MAX_NAME_CHARS || !value.chars().all(valid_char) {
        return Err(InvalidInput(format!(
            "`{field}` must be 1 to {MAX_NAME_CHARS} characters from A-Z, a-z, 0-9, '.', '_', ':' and '-' (got {value:?})"
        )));
    }
    Ok(())
}

/// Free text: at most `max` characters, no control characters; empty allowed unless `required`.
pub fn text(field: &str, value: &str, max: usize, required: bool) -> Result<(), InvalidInput> {
    if required && value.trim().is_empty() {
        return Err(InvalidInput(format!("`{field}` must not be empty")));
    }
    if value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(InvalidInput(format!(
            "`{field}` must be at most {max} characters without control characters"
        )));
    }
    Ok(())
}

/// A number within `min..=max` (NaN never is).
pub fn range<T: PartialOrd + Display>(
    field: &str,
    value: T,
    min: T,
    max: T,
) -> Result<(), InvalidInput> {
    if !(min <= value && value <= max) {
        return Err(InvalidInput(format!(
            "`{field}` must be between {min} and {max} (got {value})"
        )));
    }
    Ok(())
}

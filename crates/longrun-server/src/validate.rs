//! Rules on request fields that the JSON schema alone cannot express; each failure is a `422`
//! naming the field.

use std::fmt::Display;

use crate::error::ApiError;

/// Longest task, queue and worker name.
pub const MAX_NAME_CHARS: usize = 200;

/// Longest `statusDetail`.
pub const MAX_DETAIL_CHARS: usize = 1000;

/// A task or queue name: 1–200 characters from `A-Z a-z 0-9 . _ : -`.
pub fn name(field: &str, value: &str) -> Result<(), ApiError> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
    if value.is_empty() || value.len() > MAX_NAME_CHARS || !value.chars().all(valid_char) {
        return Err(ApiError::invalid(format!(
            "`{field}` must be 1 to {MAX_NAME_CHARS} characters from A-Z, a-z, 0-9, '.', '_', ':' and '-' (got {value:?})"
        )));
    }
    Ok(())
}

/// Free text: at most `max` characters, no control characters; empty allowed unless `required`.
pub fn text(field: &str, value: &str, max: usize, required: bool) -> Result<(), ApiError> {
    if required && value.trim().is_empty() {
        return Err(ApiError::invalid(format!("`{field}` must not be empty")));
    }
    if value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
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
) -> Result<(), ApiError> {
    if !(min <= value && value <= max) {
        return Err(ApiError::invalid(format!(
            "`{field}` must be between {min} and {max} (got {value})"
        )));
    }
    Ok(())
}
